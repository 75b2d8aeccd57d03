"""Tissue detection on a low-resolution image of the slide.

Steps (the classic recipe; CLAM's ``segmentTissue`` uses the same ones):
HSV saturation → median blur → threshold (Otsu, or a fixed value) →
morphological closing → drop small tissue pieces → fill small holes.
Stained tissue is saturated; glass background is white or grey (unsaturated).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage


@dataclass(frozen=True)
class TissueParams:
    """Tissue-detection parameters; areas are in pixels of the image passed in."""

    threshold: int | None = None  # saturation threshold 0..255; None = Otsu
    median: int = 7               # median blur window (odd; 0/1 = none)
    close: int = 4                # closing structuring-element side (0 = none)
    min_area: float = 64.0        # tissue components smaller than this are dropped
    max_hole_area: float = 64.0   # holes smaller than this are filled
    min_threshold: int = 8        # Otsu is never allowed below this (blank slides)


def saturation(rgb: np.ndarray) -> np.ndarray:
    """HSV saturation ``(H, W)`` uint8 (0..255) of an ``(H, W, 3)`` uint8 image."""
    x = rgb.astype(np.float32)
    mx, mn = x.max(axis=2), x.min(axis=2)
    s = np.where(mx > 0, (mx - mn) / np.maximum(mx, 1e-6), 0.0)
    return np.round(s * 255).astype(np.uint8)


def otsu_threshold(values: np.ndarray) -> int:
    """Otsu's threshold of uint8 ``values``: maximises the between-class variance."""
    hist = np.bincount(values.ravel(), minlength=256).astype(np.float64)
    p = hist / max(hist.sum(), 1)
    omega = np.cumsum(p)
    mu = np.cumsum(p * np.arange(256))
    between = (mu[-1] * omega - mu) ** 2 / np.maximum(omega * (1 - omega), 1e-12)
    return int(np.argmax(between)) + 1  # pixels > argmax are foreground; ">= t" below


def tissue_mask(rgb: np.ndarray, params: TissueParams = TissueParams()) -> np.ndarray:
    """Boolean tissue mask ``(H, W)`` of an ``(H, W, 3)`` uint8 RGB image."""
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"rgb must be (H, W, 3), got shape {rgb.shape}")
    sat = saturation(rgb)
    if params.median > 1:
        sat = ndimage.median_filter(sat, size=params.median)
    thr = params.threshold if params.threshold is not None else max(otsu_threshold(sat), params.min_threshold)
    mask = sat >= thr
    if params.close > 0:
        k = params.close
        padded = np.pad(mask, k, mode="edge")  # tissue running off the slide edge is not eroded
        mask = ndimage.binary_closing(padded, structure=np.ones((k, k), bool))[k:-k, k:-k]
    mask = _drop_small(mask, params.min_area)
    holes = ~mask & ~_touching_border(~mask)
    return mask | (holes & ~_drop_small(holes, params.max_hole_area))


def _drop_small(mask: np.ndarray, min_area: float) -> np.ndarray:
    """Keep the 8-connected components of ``mask`` with at least ``min_area`` pixels."""
    labels, n = ndimage.label(mask, structure=np.ones((3, 3), bool))
    if n == 0:
        return mask
    areas = np.bincount(labels.ravel(), minlength=n + 1)
    keep = areas >= min_area
    keep[0] = False
    return keep[labels]


def _touching_border(mask: np.ndarray) -> np.ndarray:
    """Components of ``mask`` that touch the image border."""
    labels, n = ndimage.label(mask)
    border = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    touch = np.zeros(n + 1, bool)
    touch[border] = True
    touch[0] = False
    return touch[labels]
