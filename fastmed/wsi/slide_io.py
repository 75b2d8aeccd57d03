"""Opening slides with OpenSlide: file discovery, resolution, level choice, reading.

OpenSlide conventions used throughout: ``level_dimensions[k] = (width, height)``;
``read_region((x, y), level, (w, h))`` takes the top-left corner in *level-0*
pixel coordinates and a size in pixels *of the requested level*; regions
past the slide border come back transparent (alpha 0) and are composited onto
white here (that is how edge tiles are padded with background).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fastmed.engine.safe_names import safe_component
from fastmed.errors import DataError

# extensions OpenSlide reads (DICOM folders are given as their .dcm files)
SLIDE_EXTENSIONS = (".svs", ".tif", ".tiff", ".ndpi", ".vms", ".vmu", ".scn", ".mrxs", ".svslide", ".bif", ".czi", ".dcm")


def find_slides(folder: str | os.PathLike) -> list[Path]:
    """Slide files directly inside ``folder`` with a known extension, sorted by name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"slides folder not found: {folder}")
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in SLIDE_EXTENSIONS)


def slide_id(path: str | os.PathLike) -> str:
    """The slide's id: its file name without the extension."""
    return Path(path).stem


def unique_slides(paths: list[Path]) -> tuple[list[Path], list[tuple[str, str]]]:
    """``(usable slides, [(file name, reason), ...] refused)``: every output is named by the slide id.

    Refused: ids that are no plain file name (``safe_component``) and ids
    shared by several files (``s.tif`` and ``s.tiff``; compared ignoring case,
    as on macOS and Windows file systems) — every file of a clash is refused
    and names the others, so no slide's output replaces another's.
    """
    by_id: dict[str, list[Path]] = {}
    refused: list[tuple[str, str]] = []
    for p in paths:
        try:
            by_id.setdefault(safe_component(slide_id(p), "slide id").casefold(), []).append(p)
        except DataError as exc:
            refused.append((p.name, str(exc)))
    ok = []
    for group in by_id.values():
        if len(group) == 1:
            ok.append(group[0])
            continue
        for p in group:
            others = ", ".join(str(q) for q in group if q != p)
            refused.append((p.name, f"slide id {slide_id(p)!r} of {p} is also the id of {others}; rename one (outputs are named by the id)"))
    return sorted(ok), refused


def open_slide(path: str | os.PathLike):
    """``openslide.OpenSlide(path)``, raising ``DataError`` naming the file when it cannot be opened."""
    import openslide

    try:
        return openslide.OpenSlide(str(path))
    except (openslide.OpenSlideError, OSError, ValueError) as exc:  # unsupported/truncated/corrupt
        raise DataError(f"cannot open slide {path}: {type(exc).__name__}: {exc}") from exc


def level0_mpp(slide, assume_mpp: float | None = None) -> tuple[float | None, str]:
    """Microns per level-0 pixel and where it came from.

    Order: ``openslide.mpp-x``; ``10 / openslide.objective-power`` (10 µm/px at 1x);
    ``assume_mpp``; else ``(None, "unknown")`` — the caller then tiles level 0 as is.
    """
    props = slide.properties
    mpp = props.get("openslide.mpp-x")
    if mpp not in (None, "") and float(mpp) > 0:
        return float(mpp), "openslide.mpp-x"
    power = props.get("openslide.objective-power")
    if power not in (None, "") and float(power) > 0:
        return 10.0 / float(power), "objective-power"
    if assume_mpp:
        return float(assume_mpp), "assumed"
    return None, "unknown"


@dataclass(frozen=True)
class PatchGeometry:
    """Where and how large patches are read.

    ``level``: pyramid level read; ``read_size``: patch side in pixels at that
    level; ``patch_size``: side after resizing (what the encoder sees);
    ``size0``: patch side in level-0 pixels; ``mpp``: microns per output pixel
    (None when the slide has no resolution).
    """

    level: int
    downsample: float
    read_size: int
    patch_size: int
    size0: int
    mpp: float | None
    mpp_source: str


def patch_geometry(slide, patch_size: int, target_mpp: float | None, assume_mpp: float | None = None) -> PatchGeometry:
    """Choose the level and read size for patches of ``patch_size`` px at ``target_mpp`` µm/px.

    ``target_mpp=None`` or a slide without resolution: level 0, no rescaling.
    Otherwise the level closest below the needed downsample is read and the
    region resized, as ``get_best_level_for_downsample`` prescribes.
    """
    mpp0, source = level0_mpp(slide, assume_mpp)
    if target_mpp is None or mpp0 is None:
        return PatchGeometry(0, 1.0, patch_size, patch_size, patch_size, mpp0, source)
    want = target_mpp / mpp0
    level = slide.get_best_level_for_downsample(want * 1.01)  # tolerate rounding in level_downsamples
    ds = float(slide.level_downsamples[level])
    read = max(1, int(round(patch_size * want / ds)))
    return PatchGeometry(level, ds, read, patch_size, int(round(read * ds)), target_mpp, source)


def read_patch(slide, x: int, y: int, geom: PatchGeometry) -> np.ndarray:
    """``(patch_size, patch_size, 3)`` uint8 RGB patch with level-0 top-left ``(x, y)``.

    Transparent pixels (outside the slide) become white background.
    """
    from PIL import Image

    rgb = _on_white(slide.read_region((int(x), int(y)), geom.level, (geom.read_size, geom.read_size)))
    if geom.read_size != geom.patch_size:
        rgb = rgb.resize((geom.patch_size, geom.patch_size), Image.BILINEAR)
    return np.asarray(rgb)


def read_level(slide, level: int) -> np.ndarray:
    """Whole level ``level`` as ``(H, W, 3)`` uint8 RGB (use on low-resolution levels only)."""
    return np.asarray(_on_white(slide.read_region((0, 0), level, slide.level_dimensions[level])))


def _on_white(rgba):
    """Composite an RGBA PIL image (OpenSlide's output) onto white; returns RGB."""
    from PIL import Image

    rgb = Image.new("RGB", rgba.size, (255, 255, 255))
    rgb.paste(rgba, mask=rgba.getchannel("A"))
    return rgb


def level_for_downsample(slide, downsample: float) -> int:
    """``get_best_level_for_downsample`` clamped to valid levels."""
    return int(min(max(slide.get_best_level_for_downsample(downsample), 0), slide.level_count - 1))
