"""Benchmark per-sample gradient dot products on a U-Net.

For M images and a fixed direction G (one tensor per parameter), every variant
computes the same ``(M,)`` vector ``d_m = <grad l_m, G>``:

* ``fastmed``       – ``fastmed.kernels.per_sample_grad_dot`` (hooks, one forward + one
                      backward, one contraction per layer; Triton-fused on CUDA);
* ``torch.func``    – ``vmap(grad)`` materializing the M per-sample gradients (the anchor);
* ``opacus``        – Opacus ``GradSampleModule`` per-sample gradients (``p.grad_sample``),
                      then the dot product (materialized, Opacus-style);
* ``fwd+bwd``       – one plain forward + backward of the batch (the cost floor, for scale).

Time: median of ``--repeats`` calls, all variants in this process, interleaved.
Peak memory: on CUDA ``torch.cuda.max_memory_allocated``; on the CPU the growth of the
peak RSS (VmHWM, reset first) during one call in a fresh subprocess (Linux).

    .venv/bin/python benchmarks/bench_grad_dot.py [--ms 8,16,32,64,128,256] [--size 64]

Writes ``benchmarks/results/<name>.json`` and ``<name>.md`` (``--name``, default ``grad_dot``).
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
import torch.nn.functional as F

from fastmed.kernels import per_sample_grad_dot
from fastmed.nets.unet import UNet
from machine_note import machine_note  # benchmarks/machine_note.py (this folder is on sys.path)

RESULTS = Path(__file__).resolve().parent / "results"
VARIANTS = ("fastmed", "torch.func", "opacus", "fwd+bwd")


def per_sample_loss(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Pixel BCE averaged per image: ``(M, 1, H, W)`` logits -> ``(M,)``."""
    return F.binary_cross_entropy_with_logits(out, y, reduction="none").flatten(1).mean(1)


def make_problem(m: int, size: int, width: int, device: str, seed: int = 0):
    """(model, x (M, 3, S, S), y (M, 1, S, S), direction) on ``device``."""
    torch.manual_seed(seed)
    model = UNet(base_width=width, depth=3).to(device)
    for mod in model.modules():  # Opacus' backward hooks cannot follow in-place ops; same numbers
        if isinstance(mod, torch.nn.ReLU):
            mod.inplace = False
    x = torch.randn(m, 3, size, size, device=device)
    y = (torch.rand(m, 1, size, size, device=device) > 0.7).float()
    direction = {k: torch.randn_like(v) for k, v in model.named_parameters()}
    return model, x, y, direction


def run_fastmed(model, x, y, g):
    return per_sample_grad_dot(model, per_sample_loss, x, y, g)


def run_torch_func(model, x, y, g):
    params = {k: v.detach() for k, v in model.named_parameters()}

    def one(p, xi, yi):
        return per_sample_loss(torch.func.functional_call(model, p, (xi[None],)), yi[None])[0]

    grads = torch.func.vmap(torch.func.grad(one), in_dims=(None, 0, 0))(params, x, y)
    return sum((grads[k] * g[k]).flatten(1).sum(1) for k in g)


def run_opacus(model, x, y, g):
    from opacus import GradSampleModule

    gsm = GradSampleModule(model, loss_reduction="sum")  # per-sample losses are summed
    try:
        per_sample_loss(gsm(x), y).sum().backward()
        out = sum((p.grad_sample * g[k]).flatten(1).sum(1) for k, p in model.named_parameters())
    finally:
        for p in model.parameters():
            p.grad = None
            p.grad_sample = None
        gsm._close()
    return out


def run_fwd_bwd(model, x, y, g):
    loss = per_sample_loss(model(x), y).sum()
    grads = torch.autograd.grad(loss, list(model.parameters()))
    return grads[0].sum().reshape(1)


RUNNERS = {"fastmed": run_fastmed, "torch.func": run_torch_func, "opacus": run_opacus, "fwd+bwd": run_fwd_bwd}


def relative_errors(model, x, y, g) -> dict[str, float]:
    """max |d - d64| / max |d64| of each float32 variant, against torch.func in float64."""
    ref = run_torch_func(model.double(), x.double(), y.double(), {k: v.double() for k, v in g.items()})
    model.float()
    return {n: float(((RUNNERS[n](model, x, y, g).double() - ref).abs().max() / ref.abs().max()))
            for n in ("fastmed", "torch.func", "opacus")}


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _vm_kib(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{key} not in /proc/self/status")


def measure_rss(spec: str) -> None:
    """Subprocess entry: print the peak-RSS growth (MiB) of one call of a variant."""
    name, m, size, width = spec.split(":")
    model, x, y, g = make_problem(int(m), int(size), int(width), "cpu")
    Path("/proc/self/clear_refs").write_text("5")
    before = _vm_kib("VmRSS")
    RUNNERS[name](model, x, y, g)
    print((_vm_kib("VmHWM") - before) / 1024)


def peak_memory_mb(name: str, m: int, size: int, width: int, device: str, threads: int) -> float:
    if device.startswith("cuda"):
        model, x, y, g = make_problem(m, size, width, device)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        RUNNERS[name](model, x, y, g)
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - base) / 2**20
    cmd = [sys.executable, __file__, "--measure-rss", f"{name}:{m}:{size}:{width}", "--threads", str(threads)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ms", default="8,16,32,64,128,256")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--width", type=int, default=8, help="U-Net base width (depth 3)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    ap.add_argument("--no-memory", action="store_true")
    ap.add_argument("--name", default="grad_dot", help="results file stem under benchmarks/results/")
    ap.add_argument("--measure-rss", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.measure_rss:
        measure_rss(args.measure_rss)
        return
    rows = []
    for m in [int(v) for v in args.ms.split(",")]:
        model, x, y, g = make_problem(m, args.size, args.width, args.device)
        check = relative_errors(model, x, y, g)
        times = {n: [] for n in VARIANTS}
        for _ in range(args.repeats):
            for n in VARIANTS:
                _sync(args.device)
                t0 = time.perf_counter()
                RUNNERS[n](model, x, y, g)
                _sync(args.device)
                times[n].append(time.perf_counter() - t0)
        med = {n: statistics.median(v) for n, v in times.items()}
        mem = {} if args.no_memory else {n: round(peak_memory_mb(n, m, args.size, args.width, args.device, args.threads), 1) for n in VARIANTS}
        row = {"M": m, "median_s": {n: round(v, 4) for n, v in med.items()}, "peak_mem_mb": mem,
               "speedup_vs_torch_func": round(med["torch.func"] / med["fastmed"], 2),
               "speedup_vs_opacus": round(med["opacus"] / med["fastmed"], 2),
               "cost_vs_fwd_bwd": round(med["fastmed"] / med["fwd+bwd"], 2),
               "max_rel_err_vs_float64": check}
        rows.append(row)
        print(json.dumps(row), flush=True)
    try:
        import opacus
        opacus_version = opacus.__version__
    except ImportError:
        opacus_version = None
    result = {
        "op": "per_sample_grad_dot",
        "model": f"UNet(base_width={args.width}, depth=3, GroupNorm, bilinear up), {sum(p.numel() for p in model.parameters())} parameters",
        "input": f"(M, 3, {args.size}, {args.size}), per-image pixel BCE",
        "device": args.device,
        "machine": {"platform": platform.platform(), "processor": platform.processor(), "threads": args.threads,
                    "note": machine_note()},
        "versions": {"torch": torch.__version__, "opacus": opacus_version, "python": platform.python_version()},
        "repeats": args.repeats,
        "rows": rows,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.name}.json").write_text(json.dumps(result, indent=2))
    lines = [
        "# per_sample_grad_dot benchmark",
        "",
        f"{result['model']}; input {result['input']}; device {args.device}, {args.threads} thread(s); "
        f"median of {args.repeats}. {result['machine']['note']}.",
        "",
        "| M | fastmed (s) | torch.func (s) | opacus (s) | fwd+bwd (s) | x torch.func | x opacus | cost / fwd+bwd | peak MiB fastmed / torch.func / opacus |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        t, mem = r["median_s"], r["peak_mem_mb"]
        mem_s = " / ".join(str(mem.get(n, "–")) for n in ("fastmed", "torch.func", "opacus")) if mem else "–"
        lines.append(f"| {r['M']} | {t['fastmed']:.3f} | {t['torch.func']:.3f} | {t['opacus']:.3f} | {t['fwd+bwd']:.3f} | "
                     f"{r['speedup_vs_torch_func']} | {r['speedup_vs_opacus']} | {r['cost_vs_fwd_bwd']} | {mem_s} |")
    lines += ["", f"torch {torch.__version__}, opacus {opacus_version}; max relative error of each float32 variant against torch.func in float64 in the JSON (`max_rel_err_vs_float64`).", ""]
    (RESULTS / f"{args.name}.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
