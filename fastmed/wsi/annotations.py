"""Region annotations of a slide: GeoJSON (QuPath export) and ASAP XML (Camelyon).

Both are read into ``Region`` objects (level-0 pixel coordinates) and
rasterised at a chosen downsample; ``tiling.coverage`` then gives each patch
the fraction of its area inside a region (the pixel-level label) and
``fraction > 0`` the patch label ("positive when a patch overlaps a region").
"""
from __future__ import annotations

import json
import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fastmed.errors import DataError

ANNOTATION_SUFFIXES = (".geojson", ".json", ".xml")
# region classes that never count as positive (Camelyon's ASAP group "_2" marks exclusions)
DEFAULT_EXCLUDE = ("_2", "exclusion", "exclude", "ignore", "normal", "other")


@dataclass
class Region:
    """One polygon: ``exterior (n, 2)`` float (x, y) level-0 px, optional holes, class name."""

    exterior: np.ndarray
    holes: list[np.ndarray] = field(default_factory=list)
    name: str = ""


def find_annotation(folder: str | os.PathLike | None, sid: str) -> Path | None:
    """``folder/<sid>.geojson|.json|.xml`` if present."""
    if folder is None:
        return None
    for suffix in ANNOTATION_SUFFIXES:
        p = Path(folder) / f"{sid}{suffix}"
        if p.is_file():
            return p
    return None


def read_annotations(path: str | os.PathLike) -> list[Region]:
    """Regions of a GeoJSON or ASAP XML file (``DataError`` when unreadable)."""
    path = Path(path)
    try:
        if path.suffix.lower() == ".xml":
            return _read_asap(path)
        return _read_geojson(path)
    except (OSError, ValueError, KeyError, TypeError, IndexError, ET.ParseError) as exc:
        raise DataError(f"cannot read annotations {path}: {type(exc).__name__}: {exc}") from exc


def _class_name(props: dict) -> str:
    cls = props.get("classification") or {}
    if isinstance(cls, dict):
        return str(cls.get("name", "") or props.get("name", "") or "")
    return str(cls)


def _read_geojson(path: Path) -> list[Region]:
    data = json.loads(path.read_text(encoding="utf-8"))
    feats = data.get("features", []) if isinstance(data, dict) and data.get("type") == "FeatureCollection" else (
        data if isinstance(data, list) else [data])
    regions: list[Region] = []
    for feat in feats:
        geom = feat.get("geometry") or {}
        name = _class_name(feat.get("properties") or {})
        if geom.get("type") == "Polygon":
            polys = [geom["coordinates"]]
        elif geom.get("type") == "MultiPolygon":
            polys = geom["coordinates"]
        else:
            continue  # points, lines: no area
        for rings in polys:
            rings = [np.asarray(r, dtype=np.float64)[:, :2] for r in rings]
            regions.append(Region(rings[0], rings[1:], name))
    return regions


def _read_asap(path: Path) -> list[Region]:
    root = ET.parse(path).getroot()
    regions = []
    for ann in root.iter("Annotation"):
        if ann.get("Type", "Polygon") not in ("Polygon", "Spline", "Rectangle"):
            continue
        coords = sorted(ann.iter("Coordinate"), key=lambda c: float(c.get("Order", 0)))
        pts = np.array([[float(c.get("X")), float(c.get("Y"))] for c in coords], dtype=np.float64)
        if len(pts) >= 3:
            regions.append(Region(pts, [], ann.get("PartOfGroup") or ann.get("Name") or ""))
    return regions


def positive_regions(regions: list[Region], exclude: tuple[str, ...] = DEFAULT_EXCLUDE) -> list[Region]:
    """Regions whose class is not in ``exclude`` (case-insensitive)."""
    ex = {e.lower() for e in exclude}
    return [r for r in regions if r.name.lower() not in ex]


def outside_slide_warning(path: str | os.PathLike, regions: list[Region], width: int, height: int, limit: int = 3) -> str | None:
    """A one-line warning naming ``path`` and the regions lying entirely outside the slide, or None.

    ``width, height``: level-0 slide size. A region is outside when its
    bounding box does not meet ``[0, width] x [0, height]`` (such a region
    labels no patch; usually a wrong unit or the annotation of another slide).
    """
    out = []
    for i, r in enumerate(regions, 1):
        (x0, y0), (x1, y1) = r.exterior.min(0), r.exterior.max(0)
        if x1 <= 0 or y1 <= 0 or x0 >= width or y0 >= height:
            out.append(f"region {i} ({r.name or 'no class'}, x {x0:.0f}..{x1:.0f}, y {y0:.0f}..{y1:.0f})")
    if not out:
        return None
    shown = "; ".join(out[:limit]) + (f"; and {len(out) - limit} more" if len(out) > limit else "")
    return (f"annotations {path}: {len(out)} of {len(regions)} region(s) lie entirely outside the slide "
            f"({width}x{height} px at level 0) and label no patch: {shown}")


def rasterize(regions: list[Region], width: int, height: int, downsample: float) -> np.ndarray:
    """Boolean ``(ceil(H/ds), ceil(W/ds))`` raster of the regions (holes cut out)."""
    from PIL import Image, ImageDraw

    w, h = int(np.ceil(width / downsample)), int(np.ceil(height / downsample))
    img = Image.new("1", (w, h), 0)
    draw = ImageDraw.Draw(img)
    for region in regions:
        draw.polygon([tuple(p) for p in (region.exterior / downsample)], fill=1)
        for hole in region.holes:
            draw.polygon([tuple(p) for p in (hole / downsample)], fill=0)
    return np.asarray(img, dtype=bool)
