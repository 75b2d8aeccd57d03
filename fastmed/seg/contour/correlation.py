"""Correlation maps: how strongly every pixel belongs to an object's contour.

For object ``k`` with contour pixels ``C_k`` (a rasterized outline), every pixel
``p`` gets its nearest contour pixel ``c_k(p)`` through the exact Euclidean
feature transform (``fastmed.kernels.distance_transform_edt_batch``), the
distance ``d_k(p) = |p - c_k(p)|`` (pixels) and the intensity difference
``i_k(p) = |I(p) - I(c_k(p))|_2 / sqrt(3)`` (RGB in [0, 1], so ``i`` is in [0, 1]).
The correlation is a product of Gaussians::

    mode "both":      corr_k(p) = exp(-d^2 / (2 sigma_dist^2)) * exp(-i^2 / (2 sigma_int^2))
    mode "distance":  corr_k(p) = exp(-d^2 / (2 sigma_dist^2))
    mode "intensity": corr_k(p) = exp(-i^2 / (2 sigma_int^2))   (no locality: use with care)

so ``corr = 1`` on the contour, falling with distance and with a change of
intensity (a pixel across an edge from its contour point correlates less than
one of the same tissue). Fusion of the K per-object maps into one:

* ``"max"`` (default): ``fused(p) = max_k corr_k(p)`` — the contour ``p``
  correlates with most;
* ``"nearest"``: ``fused(p) = corr_{k*}(p)`` with ``k* = argmin_k d_k(p)`` —
  the object whose contour is nearest (the same as one map of the union of
  all contours).

An image without objects has all-zero maps and infinite distances.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fastmed.kernels import distance_transform_edt_batch

MODES = ("both", "distance", "intensity")
FUSIONS = ("max", "nearest")


@dataclass(frozen=True)
class CorrelationParams:
    """Parameters of the correlation (see the module docstring).

    sigma_dist: width of the distance Gaussian, pixels of the grid the maps are made on.
    sigma_int: width of the intensity Gaussian, in units of the normalized RGB distance.
    """

    mode: str = "both"
    sigma_dist: float = 3.0
    sigma_int: float = 0.2
    fusion: str = "max"

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.fusion not in FUSIONS:
            raise ValueError(f"fusion must be one of {FUSIONS}, got {self.fusion!r}")
        for name in ("sigma_dist", "sigma_int"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")


@dataclass
class CorrelationMaps:
    """Everything computed for one image with K objects on an ``(H, W)`` grid."""

    distance: np.ndarray   # (K, H, W) float32, pixels to object k's nearest contour pixel
    nearest: np.ndarray    # (K, 2, H, W) int32, (row, col) of that pixel
    per_object: np.ndarray  # (K, H, W) float32 in [0, 1]
    fused: np.ndarray      # (H, W) float32 in [0, 1]
    distance_min: np.ndarray  # (H, W) float32, distance to the nearest contour of any object (inf if none)


def correlation_maps(image: np.ndarray, contours: np.ndarray, params: CorrelationParams = CorrelationParams()) -> CorrelationMaps:
    """Correlation maps of one image.

    Args:
        image: ``(H, W, 3)`` RGB, uint8 or float in [0, 1].
        contours: ``(K, H, W)`` bool, True on object k's contour pixels (K may be 0;
            an object without contour pixels gets an all-zero map).
        params: correlation parameters.
    """
    contours = np.asarray(contours, dtype=bool)
    if contours.ndim != 3:
        raise ValueError(f"contours must be (K, H, W), got shape {contours.shape}")
    k, h, w = contours.shape
    if image.shape[:2] != (h, w) or image.ndim != 3:
        raise ValueError(f"image must be (H, W, C) with (H, W) = {(h, w)}, got shape {image.shape}")
    img = image.astype(np.float32) / 255.0 if image.dtype == np.uint8 else image.astype(np.float32)
    if k == 0:
        zeros = np.zeros((h, w), np.float32)
        return CorrelationMaps(np.zeros((0, h, w), np.float32), np.zeros((0, 2, h, w), np.int32),
                               np.zeros((0, h, w), np.float32), zeros, np.full((h, w), np.inf, np.float32))
    dist64, nearest = distance_transform_edt_batch(~contours, return_indices=True)
    dist = dist64.astype(np.float32)
    empty = ~contours.reshape(k, -1).any(1)
    dist[empty] = np.inf  # SciPy's convention would give a distance to a virtual point
    log_corr = np.zeros((k, h, w), np.float32)
    if params.mode in ("both", "distance"):
        log_corr -= dist * dist / np.float32(2 * params.sigma_dist**2)
    if params.mode in ("both", "intensity"):
        at_contour = img[nearest[:, 0], nearest[:, 1]]  # (K, H, W, C)
        diff2 = ((img[None] - at_contour) ** 2).sum(-1) / np.float32(img.shape[-1])  # |dI|^2 / C
        log_corr -= diff2 / np.float32(2 * params.sigma_int**2)
    corr = np.exp(log_corr)
    corr[empty] = 0.0
    if params.fusion == "max":
        fused = corr.max(0)
    else:
        fused = np.take_along_axis(corr, dist.argmin(0)[None], 0)[0]
    return CorrelationMaps(dist, nearest, corr, fused, dist.min(0))
