"""Tile grids in level-0 coordinates and per-tile coverage of a low-resolution mask.

Three tiling modes (``TILING_MODES``):

* ``pad``  – a grid over the whole slide from (0, 0); tiles crossing the right
  or bottom border are kept and padded with background when read;
* ``drop`` – the same grid, but tiles that do not fit entirely inside the slide
  are dropped;
* ``bbox`` – a grid anchored at the bounding box of the detected tissue,
  covering only that box (edge tiles padded).

In every mode a tile is kept only when its tissue fraction is at least
``min_tissue`` (tiles without tissue are "empty" and dropped).
"""
from __future__ import annotations

import math

import numpy as np

TILING_MODES = ("pad", "drop", "bbox")


def grid_coords(width: int, height: int, size0: int, step0: int, mode: str, tissue: np.ndarray | None = None, mask_downsample: float = 1.0) -> np.ndarray:
    """``(T, 2)`` int64 top-left ``(x, y)`` level-0 corners of the candidate tiles.

    ``width, height``: level-0 slide size; ``size0``/``step0``: tile side and
    stride in level-0 pixels; ``tissue``: the mask (needed by ``bbox``) whose
    pixels are ``mask_downsample`` level-0 pixels wide.
    """
    if mode not in TILING_MODES:
        raise ValueError(f"mode must be one of {TILING_MODES}, got {mode!r}")
    if size0 < 1 or step0 < 1:
        raise ValueError(f"tile size and step must be >= 1 level-0 pixel, got size0={size0}, step0={step0}")
    x0, y0, x1, y1 = 0, 0, width, height
    if mode == "bbox":
        if tissue is None:
            raise ValueError("mode='bbox' needs the tissue mask")
        ys, xs = np.nonzero(tissue)
        if len(xs) == 0:
            return np.zeros((0, 2), np.int64)
        x0, y0 = int(xs.min() * mask_downsample), int(ys.min() * mask_downsample)
        x1 = min(width, int(math.ceil((xs.max() + 1) * mask_downsample)))
        y1 = min(height, int(math.ceil((ys.max() + 1) * mask_downsample)))
    if mode == "drop":
        xs_ = np.arange(x0, x1 - size0 + 1, step0)
        ys_ = np.arange(y0, y1 - size0 + 1, step0)
    else:  # pad, bbox: the last tile starts before the end and may cross it
        xs_ = np.arange(x0, x1, step0)
        ys_ = np.arange(y0, y1, step0)
    gx, gy = np.meshgrid(xs_, ys_)
    return np.stack([gx.ravel(), gy.ravel()], axis=1).astype(np.int64)


def coverage(mask: np.ndarray, coords: np.ndarray, size0: int, mask_downsample: float) -> np.ndarray:
    """Fraction ``(T,)`` float32 of each tile covered by ``mask``.

    ``mask``: ``(h, w)`` bool/float raster whose pixels span ``mask_downsample``
    level-0 pixels; area outside the raster counts as uncovered. Uses a
    summed-area table, so the cost is O(mask) + O(tiles).
    """
    if len(coords) == 0:
        return np.zeros(0, np.float32)
    m = mask.astype(np.float64)
    sat = np.zeros((m.shape[0] + 1, m.shape[1] + 1))
    sat[1:, 1:] = m.cumsum(0).cumsum(1)
    scale = 1.0 / mask_downsample
    c0 = np.round(coords[:, 0] * scale).astype(np.int64)
    r0 = np.round(coords[:, 1] * scale).astype(np.int64)
    c1 = np.maximum(np.round((coords[:, 0] + size0) * scale).astype(np.int64), c0 + 1)  # >= 1 cell wide
    r1 = np.maximum(np.round((coords[:, 1] + size0) * scale).astype(np.int64), r0 + 1)
    cells = ((c1 - c0) * (r1 - r0)).astype(np.float64)
    c0, c1 = np.clip(c0, 0, m.shape[1]), np.clip(c1, 0, m.shape[1])
    r0, r1 = np.clip(r0, 0, m.shape[0]), np.clip(r1, 0, m.shape[0])
    total = sat[r1, c1] - sat[r0, c1] - sat[r1, c0] + sat[r0, c0]
    return np.clip(total / cells, 0.0, 1.0).astype(np.float32)
