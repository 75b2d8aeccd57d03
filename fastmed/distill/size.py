"""How big and how fast a classifier is: parameters, weight megabytes, CPU latency at batch 1."""
from __future__ import annotations

import statistics
import time

import torch


def model_size(model: torch.nn.Module) -> dict[str, float]:
    """``{"params": count, "mb": bytes of all parameters and buffers / 2**20}``."""
    tensors = list(model.parameters()) + list(model.buffers())
    return {"params": int(sum(p.numel() for p in model.parameters())),
            "mb": sum(t.numel() * t.element_size() for t in tensors) / 2**20}


@torch.inference_mode()
def cpu_latency_ms(model: torch.nn.Module, image_size: int, runs: int = 30, warmup: int = 5) -> float:
    """Median wall time (ms) of one forward pass of a ``(1, 3, S, S)`` image on the CPU (eval mode)."""
    if runs < 1:
        raise ValueError(f"runs must be >= 1, got {runs}")
    model = model.cpu().eval()
    x = torch.randn(1, 3, image_size, image_size)
    for _ in range(warmup):
        model(x)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        model(x)
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)
