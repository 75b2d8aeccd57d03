"""Synthetic whole-slide images: pyramidal tiled TIFF files that OpenSlide opens.

``OUT/<slide_id>.tiff`` (levels with downsamples 1, 4, 16; 256² tiles; zlib;
microns-per-pixel recorded in the TIFF resolution tags), ``OUT/labels.csv``
(``slide_id,label`` with label ``normal`` or ``tumor``) and
``OUT/annotations/<slide_id>.geojson`` (tumour polygons in level-0 pixel
coordinates, QuPath-style, classification "Tumor"; an empty collection for
normal slides). Tissue is pink H&E-like texture on a bright background;
tumour regions have denser, larger, darker nuclei.
"""
from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
import tifffile
from scipy import ndimage

from fastmed.data.synthetic.endoscopy import Lesion
from fastmed.data.synthetic.seg import rasterize_polygon

DOWNSAMPLES = (1, 4, 16)
BACKGROUND = np.array([242, 240, 244], dtype=np.float64) / 255


def _field(rng: np.random.Generator, h: int, w: int, cells: int) -> np.ndarray:
    grid = rng.uniform(-1, 1, (cells, max(2, cells * w // h)))
    return ndimage.zoom(grid, (h / grid.shape[0], w / grid.shape[1]), order=3)[:h, :w]


def _nuclei(rng: np.random.Generator, shape: tuple[int, int], density: float, sigma: float) -> np.ndarray:
    """Soft nucleus map in [0, 1]: random seeds blurred into blobs."""
    seeds = (rng.random(shape) < density).astype(np.float32)
    blobs = ndimage.gaussian_filter(seeds, sigma)
    return np.clip(blobs / (blobs.max() + 1e-9) * 2.5, 0, 1)


def render_slide(rng: np.random.Generator, height: int, width: int, tumor: bool,
                 tumor_radius: tuple[float, float] = (0.06, 0.11), contrast: float = 1.0) -> tuple[np.ndarray, list[np.ndarray]]:
    """Level-0 RGB ``(H, W, 3)`` uint8 and the tumour polygons ``(n, 2)`` (x, y).

    ``tumor_radius``: range of tumour radii as fractions of the shorter side;
    ``contrast`` in (0, 1]: 1 = tumour nuclei dense and dark, smaller = closer
    to normal tissue (harder to find).
    """
    tissue = _field(rng, height, width, 4) + 0.35 > 0.0
    tissue = ndimage.binary_opening(tissue, iterations=3)
    img = np.broadcast_to(BACKGROUND, (height, width, 3)).copy()
    stroma = np.array([0.93, 0.70, 0.82]) * (1 + 0.05 * _field(rng, height, width, 12))[..., None]
    nuc = _nuclei(rng, (height, width), 0.004, 1.6)
    hema = np.array([0.45, 0.25, 0.60])
    tis = stroma * (1 - nuc[..., None]) + hema * nuc[..., None]
    img[tissue] = tis[tissue]
    polygons: list[np.ndarray] = []
    if tumor:
        ys, xs = np.nonzero(ndimage.binary_erosion(tissue, iterations=max(8, min(height, width) // 12)))
        for _ in range(int(rng.integers(1, 3))):
            if len(xs) == 0:
                break
            j = int(rng.integers(len(xs)))
            radius = rng.uniform(*tumor_radius) * min(height, width)
            les = Lesion(float(xs[j]), float(ys[j]), float(radius),
                         [(int(k), rng.uniform(0.08, 0.2), rng.uniform(0, 6.28)) for k in (3, 5)], (0, 0, 0), 0.0)
            poly = les.polygon(48)
            poly[:, 0] = np.clip(poly[:, 0], 0, width - 1)
            poly[:, 1] = np.clip(poly[:, 1], 0, height - 1)
            polygons.append(poly)
        if polygons:
            region = np.zeros((height, width), bool)
            canvas_side = max(height, width)
            for poly in polygons:
                region |= rasterize_polygon(poly, canvas_side)[:height, :width]
            dense = _nuclei(rng, (height, width), 0.004 + 0.016 * contrast, 1.6 + 0.6 * contrast)
            base = np.array([0.93, 0.70, 0.82]) + contrast * (np.array([0.80, 0.55, 0.75]) - np.array([0.93, 0.70, 0.82]))
            dark = hema + contrast * (np.array([0.30, 0.12, 0.45]) - hema)
            tumour_tis = base * (1 - dense[..., None]) + dark * dense[..., None]
            img[region] = tumour_tis[region]
    img = img + rng.normal(0, 0.01, img.shape)
    return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8), polygons


def write_pyramid_tiff(path: str | os.PathLike, level0: np.ndarray, mpp: float, downsamples: tuple[int, ...] = DOWNSAMPLES, tile: int = 256) -> Path:
    """Write ``level0`` ``(H, W, 3)`` uint8 and its block-mean downsamples as a tiled TIFF pyramid."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = level0.shape[:2]
    with tifffile.TiffWriter(path) as tif:
        for i, ds in enumerate(downsamples):
            hh, ww = h // ds, w // ds
            lvl = level0[: hh * ds, : ww * ds].reshape(hh, ds, ww, ds, 3).mean(axis=(1, 3)).round().astype(np.uint8) if ds > 1 else level0
            t = min(tile, max(16, 16 * (min(hh, ww) // 16)))
            px_per_cm = 1e4 / (mpp * ds)
            tif.write(lvl, tile=(t, t), photometric="rgb", compression="zlib", resolution=(px_per_cm, px_per_cm),
                      resolutionunit="CENTIMETER", subfiletype=0 if i == 0 else 1, metadata=None)
    return path


def _geojson(polygons: list[np.ndarray]) -> dict:
    feats = []
    for poly in polygons:
        ring = [[round(float(x), 2), round(float(y), 2)] for x, y in poly]
        ring.append(ring[0])
        feats.append({"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [ring]},
                      "properties": {"objectType": "annotation", "classification": {"name": "Tumor"}}})
    return {"type": "FeatureCollection", "features": feats}


def make_slides(out: str | os.PathLike, n_slides: int, seed: int = 0, height: int = 1024, width: int = 1536, mpp: float = 0.5,
                tumor_radius: tuple[float, float] = (0.06, 0.11), contrast: float = 1.0) -> Path:
    """Write ``n_slides`` slides (every other one tumour-positive), labels and annotations.

    ``tumor_radius`` and ``contrast`` (see ``render_slide``) make tumours smaller/fainter for harder data sets.
    """
    if not 0 < contrast <= 1:
        raise ValueError(f"contrast must be in (0, 1], got {contrast}")
    if height % 64 or width % 64:
        raise ValueError(f"slide height and width must be multiples of 64, got {height}x{width}")
    out = Path(out)
    (out / "annotations").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n_slides):
        rng = np.random.default_rng([seed, 3, i])
        sid = f"slide_{i:03d}"
        tumor = i % 2 == 0
        level0, polys = render_slide(rng, height, width, tumor, tumor_radius, contrast)
        write_pyramid_tiff(out / f"{sid}.tiff", level0, mpp)
        (out / "annotations" / f"{sid}.geojson").write_text(json.dumps(_geojson(polys)), encoding="utf-8")
        rows.append({"slide_id": sid, "label": "tumor" if polys else "normal"})
    with open(out / "labels.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=["slide_id", "label"])
        w.writeheader()
        w.writerows(rows)
    return out
