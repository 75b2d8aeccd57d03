"""Benchmark the batched Sinkhorn divergence (forward + backward) against GeomLoss and POT.

Variants, all on the same problems ``x: (B, N, D)``, ``y: (B, M, D)`` with
uniform weights, ``p = 2``, the same ``blur``, ``scaling`` and ``diameter``
(hence the same eps schedule):

* ``fastmed`` – ``fastmed.kernels.sinkhorn_divergence(backend="auto")``
  (the PyTorch reference on the CPU, the Triton kernel on CUDA);
* ``geomloss tensorized`` – ``geomloss.SamplesLoss("sinkhorn", backend="tensorized")``,
  the anchor (same numbers, checked below);
* ``geomloss online`` – only when KeOps is installed;
* ``POT sinkhorn_log`` – ``ot.sinkhorn2(method="sinkhorn_log")`` per problem
  and per term (x-y, x-x, y-y), as many iterations at the final eps as
  GeomLoss's schedule has steps: a different algorithm (no eps-scaling), so a
  timing reference only; run on the smaller shapes only (one problem per call).

Time: median of interleaved repeated forward+backward passes (a shared,
throttled CPU is noisy: report medians and ratios measured in one process).
Peak memory: on CUDA ``torch.cuda.max_memory_allocated`` above the inputs; on
the CPU the growth of the peak RSS (VmHWM, reset first) during the first
forward+backward of the problem in a fresh subprocess (Linux; set-up done on a
tiny problem first). Small CPU values (< 1 MiB) are within allocator noise.

    .venv/bin/python benchmarks/bench_sinkhorn.py [--quick] [--device cuda]

Writes ``benchmarks/results/sinkhorn.json`` and ``sinkhorn.md``.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from fastmed.kernels import sinkhorn_divergence
from fastmed.kernels.sinkhorn_reference import epsilon_schedule
from machine_note import machine_note  # benchmarks/machine_note.py (this folder is on sys.path)

RESULTS = Path(__file__).resolve().parent / "results"
BLUR, SCALING, DIAMETER = 0.1, 0.5, 20.0


def _geomloss(backend: str):
    import geomloss

    loss = geomloss.SamplesLoss("sinkhorn", p=2, blur=BLUR, scaling=SCALING, diameter=DIAMETER, backend=backend)
    return lambda x, y: loss(x, y)


def _pot(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    import ot

    n_iter = len(epsilon_schedule(2, DIAMETER, BLUR, SCALING)) + 1
    eps = BLUR**2
    out = []
    for xb, yb in zip(x, y):
        a = torch.full((xb.shape[0],), 1.0 / xb.shape[0], dtype=x.dtype, device=x.device)
        b = torch.full((yb.shape[0],), 1.0 / yb.shape[0], dtype=x.dtype, device=x.device)

        def ot_eps(u, v, wu, wv):
            cost = torch.cdist(u, v) ** 2 / 2
            return ot.sinkhorn2(wu, wv, cost, eps, method="sinkhorn_log", numItermax=n_iter, stopThr=0.0)

        out.append(ot_eps(xb, yb, a, b) - 0.5 * ot_eps(xb, xb, a, a) - 0.5 * ot_eps(yb, yb, b, b))
    return torch.stack(out)


def variants() -> dict:
    out = {"fastmed": lambda x, y: sinkhorn_divergence(x, y, blur=BLUR, scaling=SCALING, diameter=DIAMETER)}
    try:
        out["geomloss tensorized"] = _geomloss("tensorized")
    except ImportError:
        pass
    try:
        import pykeops  # noqa: F401

        out["geomloss online"] = _geomloss("online")
    except ImportError:
        pass
    try:
        import ot  # noqa: F401

        out["POT sinkhorn_log"] = _pot
    except ImportError:
        pass
    return out


def make_inputs(B: int, N: int, M: int, D: int, device: str, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, N, D, generator=g).to(device).requires_grad_()
    y = (torch.randn(B, M, D, generator=g) + 0.5).to(device).requires_grad_()
    return x, y


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def run_once(fn, x, y) -> torch.Tensor:
    x.grad = y.grad = None
    v = fn(x, y)
    v.sum().backward()
    return v.detach()


def time_variants(fns: dict, shape: tuple, device: str, reps: int) -> dict[str, float]:
    """Median forward+backward seconds per variant, repetitions interleaved."""
    x, y = make_inputs(*shape, device)
    times: dict[str, list[float]] = {k: [] for k in fns}
    for fn in fns.values():  # warm-up (Triton compile, allocator)
        run_once(fn, x, y)
    for _ in range(reps):
        for name, fn in fns.items():
            _sync(device)
            t0 = time.perf_counter()
            run_once(fn, x, y)
            _sync(device)
            times[name].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def check_agreement(fns: dict, shape: tuple, device: str) -> float | None:
    """Max |fastmed - geomloss| over the batch (None without GeomLoss)."""
    if "geomloss tensorized" not in fns:
        return None
    x, y = make_inputs(*shape, device)
    return float((run_once(fns["fastmed"], x, y) - run_once(fns["geomloss tensorized"], x, y)).abs().max())


def peak_memory_mib(name: str, shape: tuple, device: str) -> float | None:
    """Peak memory growth (MiB) of one forward+backward of ``name``, in a fresh process on the CPU."""
    if device.startswith("cuda"):
        fn = variants()[name]
        x, y = make_inputs(*shape, device)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        run_once(fn, x, y)
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - base) / 2**20
    if not Path("/proc/self/clear_refs").exists():
        return None
    cmd = [sys.executable, __file__, "--memory-child", name, "--shape", ",".join(map(str, shape))]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    try:
        return float(res.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        return None


def _vm_hwm_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def memory_child(name: str, shape: tuple) -> None:
    torch.set_num_threads(1)
    fn = variants()[name]
    run_once(fn, *make_inputs(1, 4, 4, shape[3], "cpu"))  # imports and one-time set-up, on a tiny problem
    x, y = make_inputs(*shape, "cpu")
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    base = _vm_hwm_kib()
    run_once(fn, x, y)
    print((_vm_hwm_kib() - base) / 1024)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--quick", action="store_true", help="small shapes, few repetitions")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--memory-child", help=argparse.SUPPRESS)
    ap.add_argument("--shape", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.memory_child:
        memory_child(args.memory_child, tuple(int(s) for s in args.shape.split(",")))
        return
    torch.set_num_threads(args.threads)
    if args.device.startswith("cuda"):
        shapes = [(8, 256, 256, 64), (64, 256, 256, 512), (16, 1024, 1024, 32)]
    elif args.quick:
        shapes = [(4, 64, 64, 16)]
    else:
        # (12, 8, 8, 576): one step of `polyp augment` (12 problems, 2 x 4 images per class, MobileNet features)
        shapes = [(12, 8, 8, 576), (8, 128, 128, 32), (4, 256, 256, 128)]
    reps = 3 if args.quick else 7
    fns = variants()
    rows = []
    for shape in shapes:
        B, N, M, _ = shape
        # POT solves one problem per call in a Python loop: only on the smaller shapes
        shape_fns = {k: f for k, f in fns.items() if not (k.startswith("POT") and B * N * M > 8 * 128 * 128)}
        t = time_variants(shape_fns, shape, args.device, reps)
        diff = check_agreement(shape_fns, shape, args.device)
        anchor = t.get("geomloss tensorized")
        for name, secs in t.items():
            rows.append({
                "shape_BNMD": list(shape), "variant": name, "median_ms": round(secs * 1e3, 2),
                "speedup_vs_geomloss_tensorized": round(anchor / secs, 3) if anchor else None,
                "peak_mem_mib": (round(m, 1) if (m := peak_memory_mib(name, shape, args.device)) is not None else None),
                "max_abs_diff_vs_geomloss": diff if name == "fastmed" else None,
            })
            print(rows[-1], flush=True)
    meta = {
        "device": args.device if args.device == "cpu" else torch.cuda.get_device_name(),
        "cpu": platform.processor() or platform.machine(), "threads": args.threads, "reps": reps,
        "torch": torch.__version__, "python": platform.python_version(),
        "blur": BLUR, "scaling": SCALING, "diameter": DIAMETER, "p": 2,
        "eps_steps": len(epsilon_schedule(2, DIAMETER, BLUR, SCALING)),
        "note": machine_note() + "; medians of interleaved repetitions",
    }
    for mod in ("geomloss", "ot", "triton"):
        try:
            meta[mod] = __import__(mod).__version__
        except ImportError:
            pass
    RESULTS.mkdir(exist_ok=True)
    stem = "sinkhorn_quick" if args.quick else "sinkhorn"
    (RESULTS / f"{stem}.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    lines = [
        f"# Sinkhorn divergence, forward + backward ({meta['device']}, {args.threads} threads)", "",
        f"p=2, blur={BLUR}, scaling={SCALING}, diameter={DIAMETER} ({meta['eps_steps']} eps steps); {meta['note']}.", "",
        "| B, N, M, D | variant | median ms | speedup vs GeomLoss tensorized | peak mem MiB | max abs diff vs GeomLoss |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['shape_BNMD']} | {r['variant']} | {r['median_ms']} | {r['speedup_vs_geomloss_tensorized']} "
                     f"| {r['peak_mem_mib']} | {r['max_abs_diff_vs_geomloss'] if r['max_abs_diff_vs_geomloss'] is not None else ''} |")
    (RESULTS / f"{stem}.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {RESULTS / stem}.json and .md")


if __name__ == "__main__":
    main()
