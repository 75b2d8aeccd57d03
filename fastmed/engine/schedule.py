"""Learning-rate schedules as pure functions of the step (trivially resumable)."""
from __future__ import annotations

import math

import torch


def warmup_cosine(step: int, total: int, warmup_fraction: float = 0.1, floor: float = 0.01) -> float:
    """LR multiplier at ``step`` of ``total``: linear warm-up, then cosine down to ``floor``."""
    total = max(1, total)
    warm = max(1, int(round(warmup_fraction * total)))
    if step < warm:
        return (step + 1) / warm
    t = min(1.0, (step - warm) / max(1, total - warm))
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * t))


def set_lr(optimizer: torch.optim.Optimizer, base_lr: float, step: int, total: int) -> float:
    """Set every param group's LR for ``step``; return it."""
    lr = base_lr * warmup_cosine(step, total)
    for group in optimizer.param_groups:
        group["lr"] = lr
    return lr
