"""Benchmark ragged attention-MIL pooling (forward + backward).

Variants, all computing the same ``(B, D)`` pooled features and gradients:

* ``fastmed`` – ``fastmed.kernels.mil_attention_pool`` with ``backend="auto"``
  (Triton on CUDA; on the CPU the Numba kernel at these sizes);
* ``fastmed, 1 thread`` – the same with ``torch.set_num_threads(1)``;
* ``reference (index_add)`` – the PyTorch segment implementation (anchor);
* ``padded batch`` – bags padded to ``(B, L_max, D)`` with a mask, the usual
  way to batch ragged bags without a segment op (main size only: slow);
* ``one bag per call`` – a Python loop over bags (what one-slide-per-step
  training does; main size only).

At three sizes (the main one: 16 bags, N=57104, D=1024). Time: median of
repeated forward+backward passes. Memory-bound estimate: the bytes a fused
pass must move (read ``h`` in the forward; read ``h`` and write ``grad_h`` in
the backward: ``3 N D`` elements) divided by the copy bandwidth measured here
(``torch`` copy between two filled ``(N, D)`` tensors), once per size and, for
the paired ratio, again before every timed call (``time_variant``). A ``grad_h`` in fresh
memory also costs first-touch page faults (the OS zero-fills every new page;
torch's CPU allocator caches nothing): measured here as an allocate-and-fill
of ``(N, D)`` minus a fill of an existing buffer, with 4 KiB pages (plain
``torch.empty``) and with huge pages asked for first
(``mil_pool_numba.ask_for_huge_pages``). The estimate excludes it; "estimate +
first touch" adds the huge-page one. The Numba backward hands out its last
gradient buffer again once nothing holds it (``mil_pool_numba.gradient_buffer``):
in this loop, which drops ``h.grad`` every round, it pays the first touch on
its first call only. Peak memory (main size):
on CUDA ``torch.cuda.max_memory_allocated`` above the inputs; on the CPU the
growth of the peak RSS (VmHWM, reset first) during one forward+backward in a
fresh subprocess (Linux).

    .venv/bin/python benchmarks/bench_mil_pool.py [--quick] [--out DIR]

Writes ``benchmarks/results/mil_pool.json`` and ``mil_pool.md`` (``--quick``: a temporary folder).
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
from fastmed.kernels.mil_pool import NUMBA_MIN_ELEMENTS, bag_offsets
from fastmed.kernels.mil_pool_numba import ask_for_huge_pages
from fastmed.kernels.mil_pool_reference import mil_attention_pool_reference
from machine_note import machine_note  # benchmarks/machine_note.py (this folder is on sys.path)
from quick import add_quick_options, results_folder

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


THREADS = 2  # torch threads of every variant (fastmed's Numba path runs on as many Python threads)


def one_thread_pool(h: torch.Tensor, scores: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """fastmed on one thread; the forward and the backward both run before time_variant restores THREADS."""
    torch.set_num_threads(1)
    return mil_attention_pool(h, scores, offsets)


VARIANTS = {
    "fastmed": lambda h, s, o: mil_attention_pool(h, s, o),
    "fastmed, 1 thread": one_thread_pool,
    "reference (index_add)": lambda h, s, o: mil_attention_pool_reference(h, s, o),
    "padded batch": padded_pool,
    "one bag per call": loop_pool,
}

FAST_VARIANTS = ("fastmed", "fastmed, 1 thread", "reference (index_add)")  # run at every size


def make_inputs(lengths: list[int], D: int, device: str, dtype: torch.dtype, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    N = sum(lengths)
    h = torch.randn(N, D, generator=g).to(device, dtype).requires_grad_()
    s = torch.randn(N, generator=g).to(device, dtype).requires_grad_()
    return h, s, bag_offsets(lengths).to(device)


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


SETTLE_S = 0.02  # untimed calls for this long after each paired copy (see time_variant)


def time_variant(fn, h, s, o, device: str, repeats: int) -> tuple[float, float]:
    """Median seconds of ``fn``'s forward+backward, and the median of each timed call's ratio to the memory-bound
    estimate from a copy timed just before it.

    The pairing follows this shared machine's bandwidth, which drifts 1.4-3.6x between runs. Each round: the torch
    copy (``THREADS`` threads), untimed calls for ``SETTLE_S`` (at least one), the timed call. After a copy torch's
    OpenMP threads spin on and take a core from the Numba kernel's threads: at 16 x 16k x 512 the first call after
    it took 7.3-8.3 ms, the second 5.4-6.3, the third on 4.7-5.4.
    """
    grad = torch.ones(o.numel() - 1, h.shape[1], device=device, dtype=h.dtype)
    src, dst = torch.rand_like(h, dtype=torch.float32), torch.empty_like(h, dtype=torch.float32)

    def call() -> float:
        h.grad = s.grad = None
        t = _timed(lambda: fn(h, s, o).backward(grad), device)
        torch.set_num_threads(THREADS)  # undo one_thread_pool (outside the timed part)
        return t

    times, ratios = [], []
    for _ in range(repeats):
        t_copy = _timed(lambda: dst.copy_(src), device)
        settled = time.perf_counter() + SETTLE_S
        call()
        while time.perf_counter() < settled:
            call()
        times.append(call())
        ratios.append(times[-1] / (1.5 * t_copy))  # 3 N D elements moved / the copy's 2 N D at the copy's rate
    return statistics.median(times), statistics.median(ratios)


def _timed(fn, device: str) -> float:
    _sync(device)
    t0 = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - t0


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
    warm_d = max(a["D"], NUMBA_MIN_ELEMENTS // 5)  # 5 rows, enough elements that auto picks the same backend
    VARIANTS[a["name"]](*make_inputs([3, 2], warm_d, "cpu", h.dtype)).sum().backward()  # load code paths
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


def _median_time(fn, repeats: int, device: str) -> float:
    """Median of ``repeats`` timed calls after one untimed call."""
    fn()
    return statistics.median(_timed(fn, device) for _ in range(repeats))


def memory_costs(N: int, D: int, device: str, repeats: int) -> dict:
    """Copy bandwidth (GB/s, read + write) over two filled ``(N, D)`` fp32 tensors; first-touch cost (ms) of a fresh one."""
    x = torch.rand(N, D, device=device)
    y = torch.rand(N, D, device=device)
    t_copy = _median_time(lambda: y.copy_(x), repeats, device)
    if device == "cpu":  # the faster of THREADS and one thread (under load, torch's thread team can stall)
        torch.set_num_threads(1)
        t_copy = min(t_copy, _median_time(lambda: y.copy_(x), repeats, device))
        torch.set_num_threads(THREADS)
    t_fill = _median_time(lambda: y.fill_(1.0), repeats, device)
    t_fresh = _median_time(lambda: torch.empty(N, D, device=device).fill_(1.0), repeats, device)
    costs = {"copy_gb_s": round(2 * x.numel() * 4 / t_copy / 1e9, 2),
             "first_touch_ms": round(max(t_fresh - t_fill, 0.0) * 1e3, 3)}
    if device == "cpu":  # the fresh grad_h the Numba backward allocates: huge pages asked for before the first touch
        t_hinted = _median_time(lambda: _hinted_empty(N, D).fill_(1.0), repeats, device)
        costs["first_touch_huge_pages_ms"] = round(max(t_hinted - t_fill, 0.0) * 1e3, 3)
    return costs


def _hinted_empty(N: int, D: int) -> torch.Tensor:
    t = torch.empty(N, D)
    ask_for_huge_pages(t)
    return t


def bench_size(n_bags: int, max_len: int, D: int, device: str, repeats: int, variants: list[str], memory: bool) -> dict:
    g = torch.Generator().manual_seed(0)
    lengths = torch.randint(50, max_len, (n_bags,), generator=g).tolist()  # ragged, like slides
    N, dtype = sum(lengths), torch.float32
    h, s, o = make_inputs(lengths, D, device, dtype)
    mem = memory_costs(N, D, device, repeats)
    bound_ms = 3 * N * D * 4 / (mem["copy_gb_s"] * 1e9) * 1e3
    fresh_ms = mem.get("first_touch_huge_pages_ms", mem["first_touch_ms"])  # the cheapest fresh grad_h measured
    rows = []
    for name in variants:
        reps = repeats if name in FAST_VARIANTS else max(2, repeats // 3)
        t, paired = time_variant(VARIANTS[name], h, s, o, device, reps)
        row = {"variant": name, "median_ms": round(t * 1e3, 3), "repeats": reps, "time_vs_paired_bound": round(paired, 2)}
        if memory:
            row["peak_extra_mib"] = round(peak_memory_mb(name, lengths, D, device, dtype), 1)
        rows.append(row)
        print(f"B={n_bags} N={N} D={D} {name:24s} {t * 1e3:9.2f} ms", flush=True)
    anchor = next(r for r in rows if r["variant"] == "reference (index_add)")["median_ms"]
    for r in rows:
        r["time_vs_reference"] = round(r["median_ms"] / anchor, 3)
        r["time_vs_bound"] = round(r["median_ms"] / bound_ms, 2)
        r["time_vs_bound_and_first_touch"] = round(r["median_ms"] / (bound_ms + fresh_ms), 2)
    return {"bags": n_bags, "D": D, "N": N, "lengths": lengths, **mem,
            "bytes_moved": 3 * N * D * 4, "bound_ms": round(bound_ms, 3), "bound_and_first_touch_ms": round(bound_ms + fresh_ms, 3),
            "rows": rows}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_quick_options(p, "smaller problems, fewer repeats")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--measure-rss", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.measure_rss:
        return _measure_rss(args.measure_rss)
    folder = results_folder(args, "mil_pool")
    torch.set_num_threads(THREADS)
    machine = f"{machine_note()}; {torch.get_num_threads()} torch threads"  # load read before anything runs
    # (bags, max bag length, D); the last is the main size (issue 17)
    sizes = [(8, 500, 128), (8, 2000, 256), (16, 2000, 512)] if args.quick else [(64, 500, 128), (16, 2000, 512), (16, 8000, 1024)]
    repeats = 5 if args.quick else 9
    results = [bench_size(b, L, D, args.device, repeats, list(FAST_VARIANTS) if i < len(sizes) - 1 else list(VARIANTS), i == len(sizes) - 1)
               for i, (b, L, D) in enumerate(sizes)]
    backend = "triton" if args.device.startswith("cuda") else f"numba from {NUMBA_MIN_ELEMENTS} elements of h (all sizes here)"
    result = {
        "op": "mil_attention_pool (sigmoid), forward + backward, float32",
        "device": args.device,
        "fastmed_backend": backend,
        "repeats": repeats,
        "machine": machine,
        "machine_after": machine_note(),
        "versions": {"torch": torch.__version__, "numba": _numba_version(), "python": platform.python_version()},
        "sizes": results,
    }
    (folder / "mil_pool.json").write_text(json.dumps(result, indent=2) + "\n")
    md = [
        f"# mil_attention_pool — {result['op']}",
        "",
        f"Device: {args.device} (fastmed backend: {backend}); median of {repeats} runs (padded / loop: fewer). "
        f"{machine}; after: {result['machine_after']}.",
        "",
        "Memory-bound estimate = 3·N·D·4 bytes (read h forward; read h, write grad_h backward) ÷ measured copy "
        "bandwidth. Paired: the median over timed calls of each call's time ÷ the estimate from a copy timed just "
        f"before it, with untimed calls for {SETTLE_S * 1e3:.0f} ms between (this machine's bandwidth drifts between runs and within one; "
        "torch's OpenMP threads spin on after the copy). The unpaired columns use the copy bandwidth measured once per "
        "size, in the heading. First touch = page-fault cost of a fresh (N, D) grad_h (4 KiB pages / huge pages asked for, as the "
        "Numba backward does for a new buffer), not in the estimate; the last column adds the huge-page one: the "
        "bound of a kernel whose grad_h lands in fresh memory. The Numba backward reuses its last buffer once nothing "
        "holds it (this loop drops h.grad each round), so it pays no first touch here after its first call.",
    ]
    for r in results:
        md += [
            "",
            f"## {r['bags']} bags, N={r['N']}, D={r['D']}: estimate {r['bound_ms']:.1f} ms "
            f"({r['bytes_moved'] / 1e6:.0f} MB at {r['copy_gb_s']:.1f} GB/s); first touch of grad_h {r['first_touch_ms']:.1f} ms"
            + (f" (huge pages: {r['first_touch_huge_pages_ms']:.1f} ms)" if "first_touch_huge_pages_ms" in r else ""),
            "",
            "| variant | median ms | x reference | x memory-bound estimate, paired | x memory-bound estimate | "
            "x (estimate + first touch) |" + (" peak extra MiB |" if "peak_extra_mib" in r["rows"][0] else ""),
            "|---|---|---|---|---|---|" + ("---|" if "peak_extra_mib" in r["rows"][0] else ""),
        ] + [f"| {x['variant']} | {x['median_ms']:.2f} | {x['time_vs_reference']:.3f} | {x['time_vs_paired_bound']:.2f} | "
             f"{x['time_vs_bound']:.2f} | "
             f"{x['time_vs_bound_and_first_touch']:.2f} |"
             + (f" {x['peak_extra_mib']:.1f} |" if "peak_extra_mib" in x else "") for x in r["rows"]]
    (folder / "mil_pool.md").write_text("\n".join(md) + "\n")
    print(f"wrote {folder / 'mil_pool.json'} and .md")


def _numba_version() -> str:
    import numba

    return numba.__version__


if __name__ == "__main__":
    main()
