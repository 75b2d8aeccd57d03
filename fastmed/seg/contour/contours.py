"""Object outlines from GeoJSON (as QuPath exports them), rasterized at any image size.

Accepted files: a ``FeatureCollection``, a bare list of ``Feature``s, or one
``Feature``/geometry. Every ``Polygon``/``MultiPolygon`` feature is one object;
coordinates are pixel ``[x, y]`` of the original image (pixel ``(i, j)`` covers
``[j, j+1) x [i, i+1)``). Other geometries (points, lines) are skipped and
counted. An object is a list of polygons, each a list of rings (outer ring
first, holes after), each ring an ``(n, 2)`` float array of ``(x, y)``.

``rasterize_object`` gives an object's *contour* (every ring drawn as a
one-pixel 8-connected line) and its *filled* mask (outer rings filled, holes
cleared) on an ``(H, W)`` grid, scaling the coordinates from the original
image size.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from fastmed.errors import DataError

Ring = np.ndarray  # (n, 2) float64 x, y
Polygon = list[Ring]  # outer ring, then holes
ContourObject = list[Polygon]


@dataclass
class ContourFile:
    """The objects of one GeoJSON file and how many features were not polygons."""

    objects: list[ContourObject]
    skipped: int = 0
    names: list[str] = field(default_factory=list)  # classification name per object ('' if none)


def _ring(coords: object, where: str) -> Ring:
    ring = np.asarray(coords, dtype=np.float64)
    if ring.ndim != 2 or ring.shape[1] < 2 or len(ring) < 3:
        raise DataError(f"{where}: a polygon ring needs at least 3 [x, y] points, got shape {ring.shape}")
    return ring[:, :2]


def _polygons(geometry: dict, where: str) -> list[Polygon] | None:
    """The polygons of a geometry, or None for a non-polygon geometry."""
    kind, coords = geometry.get("type"), geometry.get("coordinates")
    if kind == "Polygon":
        return [[_ring(r, where) for r in coords]]
    if kind == "MultiPolygon":
        return [[_ring(r, where) for r in poly] for poly in coords]
    return None


def parse_contours(data: object, where: str = "GeoJSON") -> ContourFile:
    """Objects of parsed GeoJSON ``data`` (see the module docstring)."""
    if isinstance(data, dict) and data.get("type") == "FeatureCollection":
        features = data.get("features") or []
    elif isinstance(data, list):
        features = data
    elif isinstance(data, dict) and data.get("type") == "Feature":
        features = [data]
    elif isinstance(data, dict) and "coordinates" in data:
        features = [{"type": "Feature", "geometry": data, "properties": {}}]
    else:
        raise DataError(f"{where}: expected a GeoJSON FeatureCollection, Feature list, Feature or geometry")
    out = ContourFile([])
    for k, feat in enumerate(features):
        geometry = feat.get("geometry") if isinstance(feat, dict) else None
        polys = _polygons(geometry, f"{where} feature {k}") if isinstance(geometry, dict) else None
        if not polys:
            out.skipped += 1
            continue
        props = feat.get("properties") or {}
        cls = props.get("classification") or {}
        out.objects.append(polys)
        out.names.append(str(cls.get("name", "")) if isinstance(cls, dict) else str(cls))
    return out


def read_contours(path: str | os.PathLike) -> ContourFile:
    """Read a GeoJSON file; raises ``DataError`` on unreadable JSON or malformed polygons."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"cannot read contours {path}: {exc}") from None
    return parse_contours(data, str(path))


def _scaled(ring: Ring, scale: tuple[float, float]) -> list[tuple[float, float]]:
    """Ring in PIL's convention (pixel centres at integers) after scaling (sx, sy)."""
    return [(float(x) * scale[0] - 0.5, float(y) * scale[1] - 0.5) for x, y in ring]


def rasterize_object(obj: ContourObject, shape: tuple[int, int], original: tuple[int, int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(contour, filled)`` bool masks ``(H, W)`` of one object.

    Args:
        obj: the object's polygons (see the module docstring).
        shape: ``(H, W)`` of the output grid.
        original: ``(H0, W0)`` of the image the coordinates refer to (default ``shape``);
            coordinates are scaled by ``W/W0`` in x and ``H/H0`` in y.
    """
    h, w = shape
    h0, w0 = original or shape
    scale = (w / w0, h / h0)
    line = Image.new("L", (w, h), 0)
    fill = Image.new("L", (w, h), 0)
    draw_line, draw_fill = ImageDraw.Draw(line), ImageDraw.Draw(fill)
    for poly in obj:
        for r, ring in enumerate(poly):
            pts = _scaled(ring, scale)
            draw_line.line(pts + pts[:1], fill=1, width=1)
            draw_fill.polygon(pts, fill=1 if r == 0 else 0, outline=1 if r == 0 else 0)
    return np.asarray(line, dtype=bool), np.asarray(fill, dtype=bool)


def rasterize_objects(objects: list[ContourObject], shape: tuple[int, int], original: tuple[int, int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(contours, filled)`` bool ``(K, H, W)`` for K objects (``(0, H, W)`` when none)."""
    if not objects:
        empty = np.zeros((0, *shape), dtype=bool)
        return empty, empty.copy()
    pairs = [rasterize_object(obj, shape, original) for obj in objects]
    return np.stack([c for c, _ in pairs]), np.stack([f for _, f in pairs])
