"""Latency and throughput of several backends, timed in interleaved rounds (warm-up, then medians).

On a shared machine the load changes from second to second; timing every
backend in turn, ``rounds`` times, spreads those changes over all of them so
their ratios stay meaningful.
"""
from __future__ import annotations

import time
from typing import Callable

import numpy as np

Runner = Callable[[np.ndarray], object]


def time_calls(fn: Callable[[], object], warmup: int, iters: int) -> np.ndarray:
    """Seconds per call of ``fn`` over ``iters`` timed calls after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    out = np.empty(iters)
    for i in range(iters):
        t0 = time.perf_counter()
        fn()
        out[i] = time.perf_counter() - t0
    return out


def interleaved_timings(cases: dict[str, tuple[Runner, np.ndarray, np.ndarray]], warmup: int = 5, iters: int = 50,
                        rounds: int = 5) -> dict[str, dict[str, float]]:
    """Per case ``name -> (run, x1, xb)``: p50/p95/p99 latency (ms) at batch ``len(x1)``, images/s at ``len(xb)``.

    Each case gets ``warmup`` untimed calls, then ``rounds`` rounds in which
    every case runs ``iters / rounds`` timed batch-1 calls and one timed
    large-batch call.
    """
    per_round = max(1, iters // rounds)
    lat: dict[str, list[np.ndarray]] = {n: [] for n in cases}
    big: dict[str, list[np.ndarray]] = {n: [] for n in cases}
    for run, x1, xb in cases.values():
        time_calls(lambda: run(x1), warmup, 0)
        time_calls(lambda: run(xb), 1, 0)
    for _ in range(rounds):
        for name, (run, x1, xb) in cases.items():
            lat[name].append(time_calls(lambda: run(x1), 0, per_round))
            big[name].append(time_calls(lambda: run(xb), 0, 1))
    out = {}
    for name, (_, _, xb) in cases.items():
        ms = np.concatenate(lat[name]) * 1e3
        out[name] = {"p50_ms": float(np.percentile(ms, 50)), "p95_ms": float(np.percentile(ms, 95)),
                     "p99_ms": float(np.percentile(ms, 99)),
                     "throughput_ips": float(len(xb) / np.median(np.concatenate(big[name]))),
                     "throughput_batch": int(len(xb))}
    return out
