"""Benchmark the batched Sinkhorn divergence (forward + backward) against GeomLoss.

Variants, all on the same problems ``x: (B, N, D)``, ``y: (B, M, D)`` with
uniform weights, ``p = 2`` and, per size, the same ``blur``, ``scaling`` and
``diameter`` (hence the same eps schedule):

* ``fastmed numba`` – ``sinkhorn_divergence(backend="auto")``, which is the
  Numba kernel on the CPU (``fastmed triton`` on CUDA: the Triton kernel);
* ``fastmed numba, 1 thread`` – the same with ``torch.set_num_threads(1)`` (CPU);
* ``fastmed torch`` – the readable PyTorch reference (``backend="torch"``);
* ``geomloss tensorized`` – ``geomloss.SamplesLoss("sinkhorn", backend="tensorized")``,
  the anchor (agreement with fastmed is checked and recorded);
* ``POT sinkhorn_log`` – ``ot.sinkhorn2`` per problem and term, as many
  iterations at the final eps as the schedule has steps (a different
  algorithm: a timing reference only, smallest size only).

Sizes: one step of ``polyp augment`` (3 classes, 2 x 4 images each: 12
problems of 4 vs 4 L2-normalised 576-d MobileNet features, blur 0.05,
diameter 2), issue 17's B16 N=M=128 D256, and fewer, larger problems (CUDA:
larger sizes).

Time: median of interleaved forward+backward repetitions (the CPU is shared:
compare the ratios, taken in one process; the load average is recorded);
with ``--threads 1`` also the calling thread's CPU time, which the waits for
a shared core do not inflate.
Peak memory: growth of the peak RSS (VmHWM, reset first) during one
forward+backward in a fresh subprocess (Linux; set-up on a tiny problem
first); on CUDA ``max_memory_allocated`` above the inputs.

Bound of the Numba path, from throughputs measured here: its exponentials
(one per cost entry, term and eps step, plus the backward's) at the measured
rate of its vectorised float32 ``exp`` per thread, plus the GEMMs of the costs
and of the gradient at the measured ``torch.bmm`` rate; the memory bound (costs
written and read once, gradient blocks written and read once, at the measured
copy bandwidth) is far below that. The fixed cost of a call (the same
forward+backward with one point per set) is listed beside it.

    .venv/bin/python benchmarks/bench_sinkhorn.py [--quick] [--threads 2] [--out DIR]

Writes ``sinkhorn.json`` and ``sinkhorn.md`` into ``--out`` (default
``benchmarks/results``; ``--quick`` writes only where ``--out`` says).
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
AUGMENT = dict(blur=0.05, scaling=0.5, diameter=2.0)   # fastmed.polyp.augment / gan_losses settings
GAUSS = dict(blur=0.1, scaling=0.5, diameter=20.0)     # Gaussian clouds: the earlier bench's schedule
# (B, N, M, D, parameters, L2-normalised points?)
SIZES = [((12, 4, 4, 576), AUGMENT, True), ((16, 128, 128, 256), GAUSS, False), ((4, 512, 512, 64), GAUSS, False)]
CUDA_SIZES = [((12, 4, 4, 576), AUGMENT, True), ((8, 256, 256, 64), GAUSS, False), ((64, 256, 256, 512), GAUSS, False)]
QUICK_SIZES = [((12, 4, 4, 576), AUGMENT, True), ((4, 32, 32, 16), GAUSS, False), ((2, 64, 64, 32), GAUSS, False)]
ANCHOR = "geomloss tensorized"


def fast_name(device: str) -> str:
    """The name of fastmed's ``backend="auto"`` row on ``device``."""
    return "fastmed numba" if device == "cpu" else "fastmed triton"


def variants(params: dict, threads: int, device: str) -> dict:
    """name -> ``fn(x, y) -> (B,)`` for the installed libraries."""
    def one_thread(x, y):
        torch.set_num_threads(1)  # restored by time_variants after the timed call
        return sinkhorn_divergence(x, y, **params)

    out = {fast_name(device): lambda x, y: sinkhorn_divergence(x, y, **params)}
    if threads > 1 and device == "cpu":
        out["fastmed numba, 1 thread"] = one_thread
    out["fastmed torch"] = lambda x, y: sinkhorn_divergence(x, y, backend="torch", **params)
    try:
        import geomloss

        loss = geomloss.SamplesLoss("sinkhorn", p=2, backend="tensorized", **params)
        out[ANCHOR] = lambda x, y: loss(x, y)
    except ImportError:
        pass
    try:
        import ot  # noqa: F401

        out["POT sinkhorn_log"] = lambda x, y: _pot(x, y, params)
    except ImportError:
        pass
    return out


def _pot(x: torch.Tensor, y: torch.Tensor, params: dict) -> torch.Tensor:
    import ot

    n_iter = len(epsilon_schedule(2, params["diameter"], params["blur"], params["scaling"])) + 1
    eps = params["blur"] ** 2

    def ot_eps(u, v):
        wu = torch.full((u.shape[0],), 1.0 / u.shape[0], dtype=u.dtype)
        wv = torch.full((v.shape[0],), 1.0 / v.shape[0], dtype=v.dtype)
        return ot.sinkhorn2(wu, wv, torch.cdist(u, v) ** 2 / 2, eps, method="sinkhorn_log", numItermax=n_iter, stopThr=0.0)

    return torch.stack([ot_eps(u, v) - 0.5 * ot_eps(u, u) - 0.5 * ot_eps(v, v) for u, v in zip(x, y)])


def make_inputs(shape: tuple, normalized: bool, device: str = "cpu", seed: int = 0):
    B, N, M, D = shape
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(B, N, D, generator=g), torch.randn(B, M, D, generator=g) + 0.5
    if normalized:
        x, y = torch.nn.functional.normalize(x, dim=-1), torch.nn.functional.normalize(y, dim=-1)
    return x.to(device).requires_grad_(), y.to(device).requires_grad_()


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def run_once(fn, x, y):
    x.grad = y.grad = None
    v = fn(x, y)
    v.sum().backward()
    return v.detach(), x.grad.detach()


def time_variants(fns: dict, x, y, device: str, reps: int, threads: int) -> dict[str, tuple[float, float]]:
    """Median forward+backward (wall, calling-thread CPU) seconds per variant, repetitions interleaved.

    With one thread every variant runs on the calling thread, so its CPU time is what the call costs
    without the waits for a shared core (the load-robust number; with more threads it undercounts).
    """
    times: dict[str, list[tuple[float, float]]] = {k: [] for k in fns}
    for _ in range(reps + 1):  # the first round warms up (compilation, allocator)
        for name, fn in fns.items():
            _sync(device)
            t0, c0 = time.perf_counter(), time.thread_time()
            run_once(fn, x, y)
            _sync(device)
            times[name].append((time.perf_counter() - t0, time.thread_time() - c0))
            torch.set_num_threads(threads)
    return {k: (statistics.median(w for w, _ in v[1:]), statistics.median(c for _, c in v[1:])) for k, v in times.items()}


def agreement(fns: dict, x, y, device: str) -> dict:
    """Relative max differences of fastmed's value and x-gradient from GeomLoss's."""
    if ANCHOR not in fns:
        return {}
    (v0, g0), (v1, g1) = run_once(fns[ANCHOR], x, y), run_once(fns[fast_name(device)], x, y)
    return {"value_rel_diff": float((v1 - v0).abs().max() / v0.abs().max()),
            "grad_rel_diff": float((g1 - g0).abs().max() / g0.abs().max())}


# ---- bounds ------------------------------------------------------------------------------------------------
def _median_time(fn, reps: int = 7) -> float:
    ts = []
    for _ in range(reps + 1):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts[1:])


def exp_seconds_per_element() -> float:
    """Seconds per element of the Numba kernel's vectorised float32 ``exp`` on one thread (L1-resident rows)."""
    import numpy as np
    from numba import njit

    from fastmed.kernels.sinkhorn_numba import exp_inplace

    @njit(nogil=True)
    def many_exps(src, v, bits, reps):
        n = v.shape[0]
        for _ in range(reps):
            v[:] = src  # a copy of 128 floats in L1: negligible beside the exps
            exp_inplace(v, n, bits)

    src = -np.linspace(0.0, 30.0, 128).astype(np.float32)
    v, bits, reps = np.empty(128, np.float32), np.empty(128, np.int32), 20000
    many_exps(src, v, bits, 1)
    return _median_time(lambda: many_exps(src, v, bits, reps), 5) / (reps * v.shape[0])


def throughputs(threads: int) -> dict:
    """Measured here: exp rate (1 thread), float32 bmm GFLOP/s (``threads``), copy bandwidth GB/s."""
    a, b = torch.randn(16, 128, 256), torch.randn(16, 256, 128)
    gflops = 2 * 16 * 128 * 128 * 256 / _median_time(lambda: torch.bmm(a, b)) / 1e9
    src, dst = torch.rand(1 << 24), torch.empty(1 << 24)
    copy_gb_s = 2 * 4 * src.numel() / _median_time(lambda: dst.copy_(src), 5) / 1e9
    return {"exp_ns_per_element_1_thread": round(exp_seconds_per_element() * 1e9, 3),
            "bmm_gflop_s": round(gflops, 1), "copy_gb_s": round(copy_gb_s, 1), "threads": threads}


def numba_bound(shape: tuple, n_eps: int, rates: dict) -> dict:
    """Compute- and memory-bound estimate (ms) of the Numba path's forward+backward."""
    from fastmed.kernels.sinkhorn_numba import PARALLEL_MIN_WORK

    B, N, M, D = shape
    entries = B * (2 * N * M + N * N + M * M)         # cost entries over the 4 terms (x-y and y-x share C_xy)
    exps = entries * (n_eps + 3)                       # initial step, n_eps steps, last extrapolation, backward
    threads = min(rates["threads"], B) if entries * (n_eps + 2) >= PARALLEL_MIN_WORK else 1
    exp_ms = exps * rates["exp_ns_per_element_1_thread"] * 1e-6 / threads
    gemm_flop = 2 * B * D * (N * M + N * N + M * M) + 2 * B * D * (2 * N * M + N * N + M * M)
    gemm_ms = gemm_flop / (rates["bmm_gflop_s"] * 1e9) * 1e3
    # float32 bytes: the 3 cost blocks and the 4 gradient blocks each written and read once; points read, gradients written
    moved = 8 * B * (N * M + N * N + M * M) + 8 * B * (2 * N * M + N * N + M * M) + 12 * B * (N + M) * D
    memory_ms = moved / (rates["copy_gb_s"] * 1e9) * 1e3
    return {"exps": exps, "exp_ms": round(exp_ms, 3), "gemm_gflop": round(gemm_flop / 1e9, 3), "gemm_ms": round(gemm_ms, 3),
            "bytes_moved": moved, "memory_ms": round(memory_ms, 3), "bound_ms": round(max(exp_ms + gemm_ms, memory_ms), 3),
            "exp_threads": threads}


# ---- peak memory ---------------------------------------------------------------------------------------------
def peak_memory_mib(name: str, size_index: int, quick: bool, device: str) -> float | None:
    """Peak memory growth (MiB) of one forward+backward of ``name``, in a fresh process on the CPU."""
    shape, params, normalized = sizes_for(device, quick)[size_index]
    if device.startswith("cuda"):
        x, y = make_inputs(shape, normalized, device)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        run_once(variants(params, 1, device)[name], x, y)
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - base) / 2**20
    if not Path("/proc/self/clear_refs").exists():
        return None
    cmd = [sys.executable, __file__, "--memory-child", name, "--size-index", str(size_index)] + (["--quick"] if quick else [])
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    try:
        return float(res.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        return None


def _vm_kib(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{key} not in /proc/self/status")


def memory_child(name: str, size_index: int, quick: bool) -> None:
    torch.set_num_threads(1)
    shape, params, normalized = sizes_for("cpu", quick)[size_index]
    fn = variants(params, 1, "cpu")[name]
    run_once(fn, *make_inputs((1, 4, 4, shape[3]), normalized))  # imports and one-time set-up, on a tiny problem
    x, y = make_inputs(shape, normalized)
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    base = _vm_kib("VmRSS")
    run_once(fn, x, y)
    print((_vm_kib("VmHWM") - base) / 1024)


# ---- main ----------------------------------------------------------------------------------------------------
def sizes_for(device: str, quick: bool) -> list:
    return QUICK_SIZES if quick else (SIZES if device == "cpu" else CUDA_SIZES)


def bench_size(i: int, shape: tuple, params: dict, normalized: bool, args, rates: dict) -> dict:
    fns = variants(params, args.threads, args.device)
    if shape[0] * shape[1] * shape[2] > 16 * 16:  # POT solves one problem per call in Python: smallest size only
        fns.pop("POT sinkhorn_log", None)
    x, y = make_inputs(shape, normalized, args.device)
    small = shape[1] * shape[2] <= 64
    reps = (5 if small else 3) if args.quick else (31 if small else 7)
    t = time_variants(fns, x, y, args.device, reps, args.threads)
    n_eps = len(epsilon_schedule(2, params["diameter"], params["blur"], params["scaling"]))
    bound = numba_bound(shape, n_eps, rates) if args.device == "cpu" else None
    if bound:
        one = make_inputs((shape[0], 1, 1, shape[3]), normalized)
        fixed = time_variants({"fixed": fns[fast_name("cpu")]}, *one, "cpu", reps, args.threads)["fixed"][0]
        bound["call_fixed_ms"] = round(fixed * 1e3, 3)
    anchor, cpu_anchor = t.get(ANCHOR, (None, None))
    rows = []
    for name, (secs, cpu) in t.items():
        mem = peak_memory_mib(name, i, args.quick, args.device) if "1 thread" not in name else None
        rows.append({
            "variant": name, "median_ms": round(secs * 1e3, 3),
            "speedup_vs_geomloss": round(anchor / secs, 3) if anchor else None,
            "cpu_ms": round(cpu * 1e3, 3) if args.threads == 1 else None,
            "cpu_speedup_vs_geomloss": round(cpu_anchor / cpu, 3) if anchor and args.threads == 1 else None,
            "peak_mem_mib": round(mem, 2) if mem is not None else None,
            "time_vs_bound": round(secs * 1e3 / bound["bound_ms"], 2) if bound and name.startswith("fastmed numba") else None,
            "time_vs_bound_plus_fixed": (round(secs * 1e3 / (bound["bound_ms"] + bound["call_fixed_ms"]), 2)
                                         if bound and name.startswith("fastmed numba") else None),
        })
        print(shape, rows[-1], flush=True)
    return {"shape_BNMD": list(shape), **params, "normalized": normalized, "eps_steps": n_eps, "repeats": reps,
            "agreement_vs_geomloss": agreement(fns, x, y, args.device), "bound": bound, "rows": rows}


def markdown(res: dict) -> str:
    r0 = res["throughputs"]
    lines = [f"# Sinkhorn divergence, forward + backward ({res['device']}, {res['threads']} threads)", "",
             f"{res['machine']}; after: {res['machine_after']}. Medians of interleaved repetitions, p=2.", ""]
    if r0:
        lines += [f"Measured here: Numba float32 exp {r0['exp_ns_per_element_1_thread']} ns/element on one thread, "
                  f"torch.bmm {r0['bmm_gflop_s']} GFLOP/s, copy {r0['copy_gb_s']} GB/s. Bound of the Numba path = the larger of "
                  "exps x exp time / threads + GEMM FLOPs / bmm rate, and bytes moved / copy bandwidth.", ""]
    for s in res["sizes"]:
        b, agr = s["bound"], s["agreement_vs_geomloss"]
        head = f"## B, N, M, D = {s['shape_BNMD']}{' (L2-normalised, one polyp augment step)' if s['normalized'] else ''}"
        lines += [head, "", f"blur {s['blur']}, scaling {s['scaling']}, diameter {s['diameter']} ({s['eps_steps']} eps steps), "
                  f"{s['repeats']} repetitions."]
        if agr:
            lines[-1] += f" fastmed vs GeomLoss: value rel. diff {agr['value_rel_diff']:.1e}, grad x rel. diff {agr['grad_rel_diff']:.1e}."
        if b:
            lines[-1] += (f" Numba bound {b['bound_ms']} ms = exp {b['exp_ms']} ms ({b['exps']:.3g} exps, {b['exp_threads']} thread(s))"
                          f" + GEMM {b['gemm_ms']} ms ({b['gemm_gflop']} GFLOP); memory {b['memory_ms']} ms;"
                          f" fixed cost of a call (1 point per set) {b['call_fixed_ms']} ms.")
        lines += ["", "| variant | median ms | speedup vs GeomLoss tensorized | CPU ms (1 thread) | CPU-time speedup "
                  "| peak mem MiB | x bound | x (bound + fixed cost) |", "|---|---|---|---|---|---|---|---|"]
        for r in s["rows"]:
            cells = [r["variant"], r["median_ms"], r["speedup_vs_geomloss"], r["cpu_ms"], r["cpu_speedup_vs_geomloss"],
                     r["peak_mem_mib"], r["time_vs_bound"], r["time_vs_bound_plus_fixed"]]
            lines.append("| " + " | ".join("" if c is None else str(c) for c in cells) + " |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--quick", action="store_true", help="small shapes, few repetitions")
    ap.add_argument("--threads", type=int, default=2, help="torch threads (fastmed's Numba path uses as many)")
    ap.add_argument("--out", type=Path, default=None, help="folder for sinkhorn.{json,md} (default benchmarks/results)")
    ap.add_argument("--memory-child", help=argparse.SUPPRESS)
    ap.add_argument("--size-index", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.memory_child:
        return memory_child(args.memory_child, args.size_index, args.quick)
    if args.quick and args.out is None:
        ap.error("--quick needs --out (quick numbers never replace benchmarks/results)")
    if args.threads < 1:
        ap.error(f"--threads must be >= 1, got {args.threads}")
    out = args.out or RESULTS
    torch.set_num_threads(args.threads)
    machine = machine_note()  # load read before anything runs
    rates = throughputs(args.threads) if args.device == "cpu" else {}
    sizes = [bench_size(i, *s, args, rates) for i, s in enumerate(sizes_for(args.device, args.quick))]
    res = {"device": args.device if args.device == "cpu" else torch.cuda.get_device_name(),
           "cpu": platform.processor() or platform.machine(), "threads": args.threads, "quick": args.quick,
           "machine": machine, "machine_after": machine_note(), "throughputs": rates,
           "versions": {"torch": torch.__version__, "python": platform.python_version()}, "sizes": sizes}
    for mod in ("numba", "geomloss", "ot"):
        try:
            res["versions"][mod] = __import__(mod).__version__
        except ImportError:
            pass
    out.mkdir(parents=True, exist_ok=True)
    (out / "sinkhorn.json").write_text(json.dumps(res, indent=1) + "\n")
    (out / "sinkhorn.md").write_text(markdown(res))
    print(f"wrote {out / 'sinkhorn.json'} and .md")


if __name__ == "__main__":
    main()
