"""Synthetic segmentation set in the Kvasir-SEG layout, with rough masks and contours.

For each split ``OUT/{train,val,test}/``::

    images/<id>.png        RGB endoscopy-like image, 1-3 lesions
    masks/<id>.png         exact mask, uint8 0/255 (union of objects)
    instances/<id>.png     uint8 object ids 1..K (0 background)
    rough_masks/<id>.png   rough mask 0/255: an ellipse or a box around each object;
                           for a ``wrong_fraction`` of images deliberately wrong
                           (displaced, shrunk or missing an object)
    contours/<id>.geojson  one Polygon per object, pixel coordinates [x, y]
    meta.csv               id, n_objects, rough_kind, rough_wrong (1 = wrong),
                           touching (1 = objects 1 and 2 touch), contour_error_px

By default the exact masks are rasterized from the same polygons the GeoJSON
holds, so masks and contours agree. Two options make the contours imprecise
the way a hurried annotator's are, while masks/ and instances/ stay exact:

* ``contour_vertices = n`` keeps every (64 / n)-th of the 64 boundary vertices
  (a simplified polygon, as drawn with a few clicks);
* ``contour_jitter = j`` moves every kept vertex along the ray from the
  lesion centre by ``N(0, j^2)`` pixels (clipped to ``±2.5 j``).

``contour_error_px`` is the measured result: the symmetric mean surface
distance (pixels) between the filled GeoJSON polygons and the exact mask.
``touching = f`` makes a fraction ``f`` of the images hold two lesions (radii
scaled by 0.85) that touch (the second placed against the first along a random direction, 5 %
overlap of the radii; pixels in both belong to object 2 in instances/).
The touching and the jitter draws come from their own random streams, so the
images and exact masks do not depend on the jitter, and the defaults write the
same images, masks and contours as a generator without these options.
"""
from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage

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


def imprecise_polygon(rng: np.random.Generator, lesion: Lesion, vertices: int, jitter: float) -> np.ndarray:
    """``(n, 2)`` polygon of ``lesion``: ``vertices`` of its 64 (0 = all), each moved radially by N(0, jitter^2) px."""
    poly = lesion.polygon(64)
    if vertices:
        poly = poly[:: max(1, 64 // vertices)]
    if jitter > 0:
        ray = poly - np.array([lesion.cx, lesion.cy])
        ray /= np.maximum(np.linalg.norm(ray, axis=1, keepdims=True), 1e-9)
        poly = poly + ray * np.clip(rng.normal(0.0, jitter, (len(poly), 1)), -2.5 * jitter, 2.5 * jitter)
    return poly


def surface_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Symmetric mean surface distance (pixels) between bool masks ``a`` and ``b`` ``(S, S)``; 0 if both empty."""
    surf = [m & ~ndimage.binary_erosion(m) for m in (a, b)]
    if not surf[0].any() or not surf[1].any():
        return 0.0 if surf[0].any() == surf[1].any() else float(a.shape[0])
    d_to = [ndimage.distance_transform_edt(~s) for s in surf]
    return float((d_to[1][surf[0]].sum() + d_to[0][surf[1]].sum()) / (surf[0].sum() + surf[1].sum()))


def _touching_partner(rng: np.random.Generator, first: Lesion, size: int) -> Lesion | None:
    """A lesion placed against ``first`` (boundaries meet, 5 % overlap), inside the image; None after 50 tries."""
    for _ in range(50):
        les = random_lesion(rng, size, str(rng.choice(["hyperplastic", "adenoma"])), margin=0.1)
        les.radius *= 0.85
        ang = rng.uniform(0, 2 * np.pi)
        reach = 0.95 * (float(first.boundary(np.array([ang]))[0]) + float(les.boundary(np.array([ang + np.pi]))[0]))
        les.cx, les.cy = first.cx + reach * np.cos(ang), first.cy + reach * np.sin(ang)
        r = les.radius * 1.3
        if r <= les.cx <= size - r and r <= les.cy <= size - r:
            return les
    return None


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


def make_seg_dataset(out: str | os.PathLike, counts: dict[str, int], seed: int = 0, size: int = 64, wrong_fraction: float = 0.3,
                     max_objects: int = 3, contour_vertices: int = 0, contour_jitter: float = 0.0, touching: float = 0.0) -> Path:
    """Write the splits; ``counts`` maps split name → number of images (imprecision options: module docstring)."""
    out = Path(out)
    for s_idx, (split, n) in enumerate(sorted(counts.items())):
        rng = np.random.default_rng([seed, 2, s_idx])
        rng_touch, rng_jitter = np.random.default_rng([seed, 3, s_idx]), np.random.default_rng([seed, 4, s_idx])
        d = out / split
        rows = []
        for i in range(n):
            sid = f"img_{i:04d}"
            img = mucosa(rng, size)
            n_obj = int(rng.integers(1, max_objects + 1)) if rng.random() < 0.4 else 1
            lesions: list[Lesion] = []
            touch = touching > 0 and bool(rng_touch.random() < touching)
            if touch:
                first = random_lesion(rng_touch, size, str(rng_touch.choice(["hyperplastic", "adenoma"])), margin=0.25)
                first.radius *= 0.85
                partner = _touching_partner(rng_touch, first, size)
                lesions, n_obj, touch = ([first, partner], 2, True) if partner else ([], n_obj, False)
            for _ in range(50):  # place non-overlapping lesions
                if len(lesions) == n_obj:
                    break
                les = random_lesion(rng, size, str(rng.choice(["hyperplastic", "adenoma"])), margin=0.1)
                les.radius *= 1.0 if n_obj == 1 else 0.7
                if all(np.hypot(les.cx - o.cx, les.cy - o.cy) > 1.5 * (les.radius + o.radius) for o in lesions):
                    lesions.append(les)
            polys = [les.polygon(64) for les in lesions]
            obj_masks = [rasterize_polygon(p, size) for p in polys]
            drawn = [imprecise_polygon(rng_jitter, les, contour_vertices, contour_jitter) for les in lesions] \
                if contour_vertices or contour_jitter > 0 else polys
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
            (d / "contours" / f"{sid}.geojson").write_text(json.dumps(_geojson(lesions, drawn)), encoding="utf-8")
            error = surface_distance(np.any([rasterize_polygon(p, size) for p in drawn], 0), inst > 0) if drawn is not polys else 0.0
            rows.append({"id": sid, "n_objects": len(lesions), "rough_kind": kind, "rough_wrong": int(wrong),
                         "touching": int(touch), "contour_error_px": round(error, 3)})
        d.mkdir(parents=True, exist_ok=True)
        with open(d / "meta.csv", "w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=["id", "n_objects", "rough_kind", "rough_wrong", "touching", "contour_error_px"])
            w.writeheader()
            w.writerows(rows)
    return out
