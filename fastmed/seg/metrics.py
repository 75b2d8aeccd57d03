"""Segmentation metrics on binary masks: Dice, IoU, HD95.

Each takes a prediction and a target of the same shape ``(H, W)`` (or
``(B, H, W)`` / ``(B, 1, H, W)`` for the batched helpers), any dtype where
non-zero means foreground, and returns one float per image.

Conventions for empty masks: both empty -> Dice = IoU = 1 and HD95 = 0;
exactly one empty -> Dice = IoU = 0 and HD95 = NaN (undefined; averages skip it).
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
from scipy import ndimage


def _binary(x: np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x) > 0


def dice_score(pred: np.ndarray | torch.Tensor, target: np.ndarray | torch.Tensor) -> float:
    """``2|P ∩ T| / (|P| + |T|)``; 1.0 when both are empty."""
    p, t = _binary(pred), _binary(target)
    if p.shape != t.shape:
        raise ValueError(f"pred and target must have the same shape, got {p.shape} and {t.shape}")
    denom = p.sum() + t.sum()
    return 1.0 if denom == 0 else float(2 * np.logical_and(p, t).sum() / denom)


def iou_score(pred: np.ndarray | torch.Tensor, target: np.ndarray | torch.Tensor) -> float:
    """``|P ∩ T| / |P ∪ T|``; 1.0 when both are empty."""
    p, t = _binary(pred), _binary(target)
    if p.shape != t.shape:
        raise ValueError(f"pred and target must have the same shape, got {p.shape} and {t.shape}")
    union = np.logical_or(p, t).sum()
    return 1.0 if union == 0 else float(np.logical_and(p, t).sum() / union)


def _surface(m: np.ndarray) -> np.ndarray:
    """Foreground pixels with a background 4-neighbour (or on the image edge)."""
    return m & ~ndimage.binary_erosion(m, border_value=0)


def hd95(pred: np.ndarray | torch.Tensor, target: np.ndarray | torch.Tensor, spacing: float | Sequence[float] = 1.0) -> float:
    """95th percentile of the symmetric surface distances (in units of ``spacing``).

    Distances from every surface pixel of one mask to the nearest surface pixel
    of the other (exact Euclidean distance transform), both directions pooled.
    """
    p, t = _binary(pred), _binary(target)
    if p.shape != t.shape:
        raise ValueError(f"pred and target must have the same shape, got {p.shape} and {t.shape}")
    if not p.any() and not t.any():
        return 0.0
    if not p.any() or not t.any():
        return math.nan
    sp, st = _surface(p), _surface(t)
    to_t = ndimage.distance_transform_edt(~st, sampling=spacing)
    to_p = ndimage.distance_transform_edt(~sp, sampling=spacing)
    dists = np.concatenate([to_t[sp], to_p[st]])
    return float(np.percentile(dists, 95))


def _per_image(pred, target) -> tuple[np.ndarray, np.ndarray]:
    p, t = _binary(pred), _binary(target)
    if p.shape != t.shape:
        raise ValueError(f"pred and target must have the same shape, got {p.shape} and {t.shape}")
    if p.ndim == 4:
        if p.shape[1] != 1:
            raise ValueError(f"batched masks must be (B, H, W) or (B, 1, H, W), got {p.shape}")
        p, t = p[:, 0], t[:, 0]
    if p.ndim == 2:
        p, t = p[None], t[None]
    return p, t


def segmentation_metrics(pred, target, with_hd95: bool = True) -> dict[str, float]:
    """Mean Dice, IoU (and HD95, NaN-skipping) over a batch ``(B, [1,] H, W)``."""
    p, t = _per_image(pred, target)
    out = {
        "dice": float(np.mean([dice_score(a, b) for a, b in zip(p, t)])),
        "iou": float(np.mean([iou_score(a, b) for a, b in zip(p, t)])),
    }
    if with_hd95:
        vals = [hd95(a, b) for a, b in zip(p, t)]
        finite = [v for v in vals if not math.isnan(v)]
        out["hd95"] = float(np.mean(finite)) if finite else math.nan
    return out
