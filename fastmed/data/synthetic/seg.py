"""Synthetic segmentation set in the Kvasir-SEG layout, with rough masks and contours.

For each split ``OUT/{train,val,test}/``::

    images/<id>.png        RGB endoscopy-like image, 1-3 lesions
    masks/<id>.png         exact mask, uint8 0/255 (union of objects)
    instances/<id>.png     uint8 object ids 1..K (0 background)
    rough_masks/<id>.png   rough mask 0/255: an ellipse or a box around each object;
                           for a ``wrong_fraction`` of images deliberately wrong
                           (displaced, shrunk or missing an object)
    contours/<id>.geojson  one Polygon per object, pixel coordinates [x, y]
    meta.csv               id, n_objects, rough_kind, rough_wrong (1 = wrong)

Exact masks are rasterized from the same polygons the GeoJSON holds, so
masks and contours agree.
"""
from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from fastmed.data.images import write_png
from fastmed.data.synthetic.endoscopy import Lesion, finish, mucosa, paint_lesion, random_lesion


def rasterize_polygon(poly: np.ndarray, size: int) -> np.ndarray:
    """``(size, size)`` bool mask of an ``(n, 2)`` polygon in pixel (x, y) coordinates.

    Pixel (i, j) covers [j, j+1) × [i, i+1); PIL fills pixels whose centre is
    inside, so vertices are shifted by -0.5 to match that convention.
    """
    canvas = Image.new("L", (size, size), 0)
    ImageDraw.Draw(canvas).polygon([(float(x) - 0.5, float(y) - 0.5) for x, y in poly], fill=1, outline=1)
    return np.asarray(canvas, dtype=bool)


def _rough(rng: np.random.Generator, masks: list[np.ndarray], wrong: bool) -> tuple[np.ndarray, str]:
    """A rough mask from exact object masks: ellipse (moments) or bounding box each."""
    size = masks[0].shape[0]
    kind = "ellipse" if rng.random() < 0.5 else "box"
    canvas = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(canvas)
    drop = int(rng.integers(len(masks))) if wrong and len(masks) > 1 and rng.random() < 0.5 else -1
    for k, m in enumerate(masks):
        if k == drop:
            continue
        ys, xs = np.nonzero(m)
        cy, cx = ys.mean(), xs.mean()
        hy, hx = (ys.max() - ys.min() + 1) / 2, (xs.max() - xs.min() + 1) / 2
        if wrong and drop < 0:
            # displaced by about one object size and rescaled: overlaps little
            ang = rng.uniform(0, 2 * np.pi)
            cx = float(np.clip(cx + np.cos(ang) * 2.2 * hx, hx, size - hx))
            cy = float(np.clip(cy + np.sin(ang) * 2.2 * hy, hy, size - hy))
            s = rng.uniform(0.5, 0.8)
            hx, hy = hx * s, hy * s
        box = [cx - hx, cy - hy, cx + hx, cy + hy]
        (draw.ellipse if kind == "ellipse" else draw.rectangle)(box, fill=255)
    return np.asarray(canvas, dtype=np.uint8), kind


def _geojson(lesions: list[Lesion], polys: list[np.ndarray]) -> dict:
    feats = []
    for k, poly in enumerate(polys, start=1):
        ring = [[round(float(x), 3), round(float(y), 3)] for x, y in poly]
        ring.append(ring[0])
        feats.append({
            "type": "Feature",
            "geometry": {"type": "Polygon", "coordinates": [ring]},
            "properties": {"object_id": k, "objectType": "annotation", "classification": {"name": "polyp"}},
        })
    return {"type": "FeatureCollection", "features": feats}


def make_seg_dataset(out: str | os.PathLike, counts: dict[str, int], seed: int = 0, size: int = 64, wrong_fraction: float = 0.3, max_objects: int = 3) -> Path:
    """Write the splits; ``counts`` maps split name → number of images."""
    out = Path(out)
    for s_idx, (split, n) in enumerate(sorted(counts.items())):
        rng = np.random.default_rng([seed, 2, s_idx])
        d = out / split
        rows = []
        for i in range(n):
            sid = f"img_{i:04d}"
            img = mucosa(rng, size)
            n_obj = int(rng.integers(1, max_objects + 1)) if rng.random() < 0.4 else 1
            lesions: list[Lesion] = []
            for _ in range(50):  # place non-overlapping lesions
                if len(lesions) == n_obj:
                    break
                les = random_lesion(rng, size, str(rng.choice(["hyperplastic", "adenoma"])), margin=0.1)
                les.radius *= 1.0 if n_obj == 1 else 0.7
                if all(np.hypot(les.cx - o.cx, les.cy - o.cy) > 1.5 * (les.radius + o.radius) for o in lesions):
                    lesions.append(les)
            polys = [les.polygon(64) for les in lesions]
            obj_masks = [rasterize_polygon(p, size) for p in polys]
            inst = np.zeros((size, size), np.uint8)
            for k, (les, m) in enumerate(zip(lesions, obj_masks), start=1):
                paint_lesion(rng, img, les)
                inst[m] = k
            wrong = bool(rng.random() < wrong_fraction)
            rough, kind = _rough(rng, obj_masks, wrong)
            write_png(d / "images" / f"{sid}.png", finish(rng, img))
            write_png(d / "masks" / f"{sid}.png", (inst > 0).astype(np.uint8) * 255)
            write_png(d / "instances" / f"{sid}.png", inst)
            write_png(d / "rough_masks" / f"{sid}.png", rough)
            (d / "contours").mkdir(parents=True, exist_ok=True)
            (d / "contours" / f"{sid}.geojson").write_text(json.dumps(_geojson(lesions, polys)), encoding="utf-8")
            rows.append({"id": sid, "n_objects": len(lesions), "rough_kind": kind, "rough_wrong": int(wrong)})
        d.mkdir(parents=True, exist_ok=True)
        with open(d / "meta.csv", "w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=["id", "n_objects", "rough_kind", "rough_wrong"])
            w.writeheader()
            w.writerows(rows)
    return out
