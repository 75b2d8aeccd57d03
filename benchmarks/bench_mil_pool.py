"""Benchmark ragged attention-MIL pooling (forward + backward).

Variants, all computing the same ``(B, D)`` pooled features and gradients:

* ``fastmed`` – ``fastmed.kernels.mil_attention_pool`` with ``backend="auto"``
  (Triton on CUDA; on the CPU this *is* the reference, so it is listed once);
* ``reference (index_add)`` – the PyTorch segment implementation (anchor);
* ``padded batch`` – bags padded to ``(B, L_max, D)`` with a mask, the usual
  way to batch ragged bags without a segment op;
* ``one bag per call`` – a Python loop over bags (what one-slide-per-step
  training does).

Time: median of repeated forward+backward passes. Peak memory: on CUDA
``torch.cuda.max_memory_allocated`` above the inputs; on the CPU the growth of
the peak RSS (VmHWM, reset first) during one forward+backward in a fresh
subprocess (Linux).

    .venv/bin/python benchmarks/bench_mil_pool.py [--quick]

Writes ``benchmarks/results/mil_pool.json`` and ``mil_pool.md``.
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

from fastmed.kernels import mil_attention_pool
from fastmed.kernels.mil_pool import bag_offsets
from fastmed.kernels.mil_pool_reference import mil_attention_pool_reference
from machine_note import machine_note  # benchmarks/machine_note.py (this folder is on sys.path)

RESULTS = Path(__file__).resolve().parent / "results"


def padded_pool(h: torch.Tensor, scores: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """Sigmoid-normalised pooling on a zero-padded ``(B, L_max, D)`` batch."""
    lengths = (offsets[1:] - offsets[:-1]).tolist()
    hp = torch.nn.utils.rnn.pad_sequence(list(h.split(lengths)), batch_first=True)  # (B, L, D)
    sp = torch.nn.utils.rnn.pad_sequence(list(scores.split(lengths)), batch_first=True)  # (B, L)
    mask = torch.arange(hp.shape[1], device=h.device)[None, :] < torch.tensor(lengths, device=h.device)[:, None]
    w = torch.sigmoid(sp.float()) * mask
    return (torch.bmm(w[:, None, :], hp.float())[:, 0] / w.sum(1, keepdim=True)).to(h.dtype)


def loop_pool(h: torch.Tensor, scores: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """One bag at a time (a Python loop), as one-slide-per-step training does."""
    outs = []
    for b in range(offsets.numel() - 1):
        lo, hi = int(offsets[b]), int(offsets[b + 1])
        w = torch.sigmoid(scores[lo:hi].float())
        outs.append((w @ h[lo:hi].float()) / w.sum())
    return torch.stack(outs).to(h.dtype)


VARIANTS = {
    "fastmed": lambda h, s, o: mil_attention_pool(h, s, o),
    "reference (index_add)": lambda h, s, o: mil_attention_pool_reference(h, s, o),
    "padded batch": padded_pool,
    "one bag per call": loop_pool,
}


def make_inputs(lengths: list[int], D: int, device: str, dtype: torch.dtype, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    N = sum(lengths)
    h = torch.randn(N, D, generator=g).to(device, dtype).requires_grad_()
    s = torch.randn(N, generator=g).to(device, dtype).requires_grad_()
    return h, s, bag_offsets(lengths).to(device)


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_variant(fn, h, s, o, device: str, repeats: int) -> float:
    grad = torch.ones(o.numel() - 1, h.shape[1], device=device, dtype=h.dtype)
    times = []
    for i in range(repeats + 1):
        h.grad = s.grad = None
        _sync(device)
        t0 = time.perf_counter()
        fn(h, s, o).backward(grad)
        _sync(device)
        if i:  # first call warms up (Triton compile, allocator)
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def peak_memory_mb(name: str, lengths: list[int], D: int, device: str, dtype: torch.dtype) -> float:
    """Extra peak memory (MiB) of one forward+backward above the inputs."""
    if device.startswith("cuda"):
        h, s, o = make_inputs(lengths, D, device, dtype)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        VARIANTS[name](h, s, o).sum().backward()
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - base) / 2**20
    args = json.dumps({"name": name, "lengths": lengths, "D": D, "dtype": str(dtype).replace("torch.", "")})
    out = subprocess.run([sys.executable, __file__, "--measure-rss", args], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def _measure_rss(args: str) -> None:
    """Child process: print the peak-RSS growth (MiB) of one forward+backward."""
    a = json.loads(args)
    torch.set_num_threads(1)
    h, s, o = make_inputs(a["lengths"], a["D"], "cpu", getattr(torch, a["dtype"]))
    VARIANTS[a["name"]](*make_inputs([3, 2], a["D"], "cpu", h.dtype)).sum().backward()  # load code paths
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak RSS (VmHWM) to the current RSS
    before = _vm_kib("VmRSS")
    VARIANTS[a["name"]](h, s, o).sum().backward()
    print((_vm_kib("VmHWM") - before) / 1024)


def _vm_kib(key: str) -> int:
    """A ``/proc/self/status`` memory field in KiB (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{key} not in /proc/self/status")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="smaller problem, fewer repeats")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--measure-rss", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.measure_rss:
        return _measure_rss(args.measure_rss)
    torch.set_num_threads(2)
    g = torch.Generator().manual_seed(0)
    n_bags, D = (8, 256) if args.quick else (16, 1024)
    max_len = 2000 if args.quick else 8000
    lengths = torch.randint(50, max_len, (n_bags,), generator=g).tolist()  # ragged, like slides
    repeats = 5 if args.quick else 9
    dtype = torch.float32
    rows = []
    h, s, o = make_inputs(lengths, D, args.device, dtype)
    for name in VARIANTS:
        t = time_variant(VARIANTS[name], h, s, o, args.device, repeats)
        mem = peak_memory_mb(name, lengths, D, args.device, dtype)
        rows.append({"variant": name, "median_ms": round(t * 1e3, 3), "peak_extra_mib": round(mem, 1)})
        print(f"{name:24s} {t * 1e3:9.2f} ms  {mem:8.1f} MiB", flush=True)
    anchor = next(r for r in rows if r["variant"] == "reference (index_add)")
    for r in rows:
        r["time_vs_reference"] = round(r["median_ms"] / anchor["median_ms"], 3)
    backend = "triton" if args.device.startswith("cuda") else "torch reference (no GPU: auto falls back)"
    result = {
        "op": "mil_attention_pool (sigmoid), forward + backward",
        "device": args.device,
        "fastmed_backend": backend,
        "shape": {"bags": n_bags, "D": D, "N": sum(lengths), "lengths": lengths, "dtype": str(dtype)},
        "repeats": repeats,
        "machine": f"{machine_note()}; {torch.get_num_threads()} torch threads",
        "versions": {"torch": torch.__version__, "python": platform.python_version()},
        "rows": rows,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "mil_pool.json").write_text(json.dumps(result, indent=2) + "\n")
    md = [
        f"# mil_attention_pool — {result['op']}",
        "",
        f"Device: {args.device} (fastmed backend: {backend}); bags={n_bags}, D={D}, N={sum(lengths)}, float32; "
        f"median of {repeats} runs. {result['machine']}.",
        "",
        "| variant | median ms | x reference | peak extra MiB |",
        "|---|---|---|---|",
    ] + [f"| {r['variant']} | {r['median_ms']:.2f} | {r['time_vs_reference']:.2f} | {r['peak_extra_mib']:.1f} |" for r in rows]
    (RESULTS / "mil_pool.md").write_text("\n".join(md) + "\n")
    print(f"wrote {RESULTS / 'mil_pool.json'} and .md")


if __name__ == "__main__":
    main()
