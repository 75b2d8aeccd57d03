"""Mixed images: the first image's object region pasted onto the second.

The first image i of each pair is drawn with probability proportional to its
weight (exact images weigh 1, rough ones gamma), the second j uniformly; with
``m_i`` the class mask of i, ``x_mix = m_i x_i + (1 - m_i) x_j`` and likewise
for labels and pseudo-labels.
"""
from __future__ import annotations

import torch


def sample_pairs(weights: torch.Tensor, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` pairs ``(i, j)``: ``i ~ weights`` (uniform when all are 0), ``j`` uniform over the same images."""
    w = weights.float().clamp_min(0)
    if float(w.sum()) <= 0:
        w = torch.ones_like(w)
    i = torch.multinomial(w, n, replacement=True, generator=generator)
    j = torch.randint(len(w), (n,), generator=generator)
    return i, j


def mix(region: torch.Tensor, first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """``region * first + (1 - region) * second``; ``region (B, 1, H, W)`` broadcasts over channels."""
    return region * first + (1 - region) * second
