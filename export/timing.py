"""Latency and throughput of a backend on a fixed input (warm-up, then medians)."""
from __future__ import annotations

import time
from typing import Callable

import numpy as np


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


def latency_and_throughput(run: Callable[[np.ndarray], object], x1: np.ndarray, xb: np.ndarray,
                           warmup: int = 5, iters: int = 50) -> dict[str, float]:
    """p50/p95/p99 latency (ms) at batch ``len(x1)`` and images/s at batch ``len(xb)``."""
    lat = time_calls(lambda: run(x1), warmup, iters) * 1e3
    big = time_calls(lambda: run(xb), max(1, warmup // 2), max(3, iters // 5))
    return {"p50_ms": float(np.percentile(lat, 50)), "p95_ms": float(np.percentile(lat, 95)),
            "p99_ms": float(np.percentile(lat, 99)), "throughput_ips": float(len(xb) / np.median(big)),
            "throughput_batch": int(len(xb))}
