"""Per-sample segmentation losses on binary mask logits ``(B, 1, H, W)``; each returns ``(B,)``.

Shared by both segmentation methods (``reweight`` and ``contour``).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """``1 - (2 sum p t + eps) / (sum p + sum t + eps)`` per sample, ``p = sigmoid(logits)``."""
    p = torch.sigmoid(logits).flatten(1)
    t = target.flatten(1).to(p.dtype)
    return 1 - (2 * (p * t).sum(1) + eps) / (p.sum(1) + t.sum(1) + eps)


def seg_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean pixel BCE + soft Dice, per sample ``(B,)``."""
    if logits.shape != target.shape:
        raise ValueError(f"logits and target must have the same shape, got {tuple(logits.shape)} and {tuple(target.shape)}")
    bce = F.binary_cross_entropy_with_logits(logits, target.to(logits.dtype), reduction="none").flatten(1).mean(1)
    return bce + soft_dice_loss(logits, target)
