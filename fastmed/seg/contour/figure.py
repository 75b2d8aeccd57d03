"""PNG figures of the contour method: labels (image, contour, distance, correlation) and predictions."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np

from fastmed.seg.contour.dataset import ContourLabels

# title, (H, W) or (H, W, 3) array, colormap (None for RGB), optional (vmin, vmax)
Panel = tuple  # (str, np.ndarray, str | None) or (str, np.ndarray, str | None, (float, float))


def _to_rgb(arr: np.ndarray, cmap: str | None, limits: tuple | None) -> tuple[np.ndarray, str]:
    """A panel as ``(H, W, 3)`` uint8 and the value range shown (for the title)."""
    if cmap is None:
        return np.asarray(arr, np.uint8), ""
    from matplotlib import colormaps

    a = np.asarray(arr, np.float64)
    finite = a[np.isfinite(a)]
    lo, hi = limits if limits else ((float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0))
    scaled = np.clip((a - lo) / (hi - lo if hi > lo else 1.0), 0, 1)
    rgb = (colormaps[cmap](np.nan_to_num(scaled, nan=0.0))[..., :3] * 255).astype(np.uint8)
    rgb[~np.isfinite(a)] = 0
    return rgb, f" [{lo:.3g}, {hi:.3g}]"


def save_panels(path: str | os.PathLike, rows: Sequence[Sequence[Panel]], title: str = "", panel_px: int = 160) -> Path:
    """A grid PNG: one row of panels per entry of ``rows`` (shorter rows leave blanks).

    Each panel is scaled up (nearest) to about ``panel_px`` pixels and titled with its
    name and, for colour-mapped panels, the value range ``[min, max]`` shown.
    Drawn with PIL (milliseconds, where matplotlib took seconds on a busy CPU).
    """
    from PIL import Image, ImageDraw

    from fastmed.data.images import write_png

    n_cols = max(len(r) for r in rows)
    first = np.asarray(rows[0][0][1])
    scale = max(1, panel_px // max(first.shape[:2]))
    ph, pw = first.shape[0] * scale, first.shape[1] * scale
    head, pad, top = 14, 4, 16 if title else 0
    canvas = Image.new("RGB", (n_cols * (pw + pad) + pad, top + len(rows) * (ph + head + pad) + pad), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    if title:
        draw.text((pad, 2), title, fill=(0, 0, 0))
    for r, row in enumerate(rows):
        for c, (name, arr, cmap, *limits) in enumerate(row):
            rgb, shown = _to_rgb(arr, cmap, limits[0] if limits else None)
            x, y = pad + c * (pw + pad), top + pad + r * (ph + head + pad)
            draw.text((x, y), f"{name}{shown}"[: pw // 6], fill=(0, 0, 0))
            canvas.paste(Image.fromarray(rgb).resize((pw, ph), Image.NEAREST), (x, y + head))
    return write_png(path, np.asarray(canvas))


def contour_overlay(image: np.ndarray, contours: np.ndarray) -> np.ndarray:
    """``image (H, W, 3)`` uint8 with every object's contour ``(K, H, W)`` drawn in its own colour."""
    colors = np.array([[255, 255, 0], [0, 255, 255], [255, 0, 255], [0, 255, 0], [255, 128, 0]], np.uint8)
    out = image.copy()
    for k, c in enumerate(contours):
        out[c] = colors[k % len(colors)]
    return out


def label_panels(lab: ContourLabels) -> list[Panel]:
    """Image | contours | distance to the nearest contour | per-object and fused correlation | filled mask."""
    panels: list[Panel] = [("image", lab.image, None), (f"contours (K={len(lab.contours)})", contour_overlay(lab.image, lab.contours), None),
                           ("distance px", lab.maps.distance_min, "magma")]
    panels += [(f"corr. object {k + 1}", m, "viridis", (0, 1)) for k, m in enumerate(lab.maps.per_object)]
    panels += [("corr. fused", lab.maps.fused, "viridis", (0, 1)), ("filled mask", lab.filled.any(0), "gray", (0, 1))]
    return panels


def save_label_figure(path: str | os.PathLike, labels: Sequence[ContourLabels], title: str = "") -> Path:
    """One row per image of ``label_panels``."""
    return save_panels(path, [label_panels(lab) for lab in labels], title)
