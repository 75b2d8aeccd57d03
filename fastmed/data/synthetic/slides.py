"""Synthetic whole-slide images: pyramidal tiled TIFF files that OpenSlide opens.

``OUT/<slide_id>.tiff`` (levels with downsamples 1, 4, 16; 256² tiles; zlib;
microns-per-pixel recorded in the TIFF resolution tags), ``OUT/labels.csv``
(``slide_id,label`` with label ``normal`` or ``tumor``) and
``OUT/annotations/<slide_id>.geojson`` (tumour polygons in level-0 pixel
coordinates, QuPath-style, classification "Tumor"; an empty collection for
normal slides). Tissue is pink H&E-like texture on a bright background;
tumour regions have denser, larger, darker nuclei.

``render_slide`` also makes the hard cases of tissue detection, each with its
ground-truth tissue mask (``SlideImage.tissue``) and the artefact pixels on glass
that must stay out (``SlideImage.artefact``): ``stain="pale"`` (faded H&E),
``stain="ihc"`` (DAB-brown nests in pale-hematoxylin stroma with blue nuclei) and
``artefacts`` ``pen`` (blue, green and black marker strokes on the glass),
``dust`` (grey specks and fibres), ``bubbles`` (grey rims, over glass and tissue) and
``shading`` (uneven illumination, 6 % darker from one side to the other), and
``debris`` (dark clumps of specks lying on the tissue itself: confounders for a
tumour classifier, since both classes get them; ``make_slides(artefacts=...)``
writes their ground truth as ``OUT/artefacts/<slide_id>.png``).
Stains and artefacts are made in optical density (Beer-Lambert: OD adds, the
light transmitted multiplies), as on a real slide.
"""
from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import tifffile
from PIL import Image
from scipy import ndimage

from fastmed.data.synthetic.endoscopy import Lesion
from fastmed.data.synthetic.seg import rasterize_polygon

DOWNSAMPLES = (1, 4, 16)
BACKGROUND = np.array([242, 240, 244], dtype=np.float64) / 255
STAINS = ("he", "pale", "ihc")
ARTEFACTS = ("pen", "dust", "bubbles", "shading", "debris")
HEMATOXYLIN = np.array([0.65, 0.70, 0.29])  # OD direction of the stains (Ruifrok & Johnston 2001)
DAB = np.array([0.27, 0.57, 0.78])
INKS = {"blue": np.array([0.18, 0.30, 0.80]), "green": np.array([0.22, 0.62, 0.36]),
        "black": np.array([0.14, 0.14, 0.16])}  # marker transmittance per channel
PALE_FADE = 0.45  # the pale stain keeps this fraction of the H&E optical density


@dataclass
class SlideImage:
    """One rendered slide at level 0."""

    rgb: np.ndarray               # (H, W, 3) uint8
    polygons: list[np.ndarray]    # tumour polygons (n, 2) as (x, y)
    tissue: np.ndarray            # (H, W) bool: ground-truth tissue
    artefact: np.ndarray          # (H, W) bool: pen / dust / bubble pixels on glass, debris pixels (on tissue)


def _field(rng: np.random.Generator, h: int, w: int, cells: int) -> np.ndarray:
    grid = rng.uniform(-1, 1, (cells, max(2, cells * w // h)))
    return ndimage.zoom(grid, (h / grid.shape[0], w / grid.shape[1]), order=3)[:h, :w]


def _nuclei(rng: np.random.Generator, shape: tuple[int, int], density: float, sigma: float) -> np.ndarray:
    """Soft nucleus map in [0, 1]: random seeds blurred into blobs."""
    seeds = (rng.random(shape) < density).astype(np.float32)
    blobs = ndimage.gaussian_filter(seeds, sigma)
    return np.clip(blobs / (blobs.max() + 1e-9) * 2.5, 0, 1)


def render_slide(rng: np.random.Generator, height: int, width: int, tumor: bool,
                 tumor_radius: tuple[float, float] = (0.06, 0.11), contrast: float = 1.0,
                 stain: str = "he", artefacts: Sequence[str] = ()) -> SlideImage:
    """Level-0 RGB ``(H, W, 3)`` uint8 with its tumour polygons, tissue and artefact masks.

    ``tumor_radius``: range of tumour radii as fractions of the shorter side;
    ``contrast`` in (0, 1]: 1 = tumour nuclei dense and dark, smaller = closer
    to normal tissue (harder to find). ``stain``: one of ``STAINS`` (``pale`` and
    ``ihc`` repaint the tissue, tumour texture included); ``artefacts``: any of
    ``ARTEFACTS``. The defaults give the same pixels as before these options.
    """
    if stain not in STAINS or any(a not in ARTEFACTS for a in artefacts):
        raise ValueError(f"stain must be one of {STAINS} and artefacts among {ARTEFACTS}, got {stain!r}, {list(artefacts)}")
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
            tissue = tissue | region
    if stain == "pale":
        img[tissue] = BACKGROUND * (img[tissue] / BACKGROUND) ** PALE_FADE  # OD scaled by PALE_FADE
    elif stain == "ihc":
        img[tissue] = _ihc(rng, height, width)[tissue]
    artefact = np.zeros((height, width), bool)
    for kind in artefacts:
        artefact |= _ARTEFACT_PAINTERS[kind](rng, img, tissue)
    img = img + rng.normal(0, 0.01, img.shape)
    return SlideImage((np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8), polygons, tissue, artefact)


def _ihc(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """IHC-like tissue ``(H, W, 3)`` in [0, 1]: DAB-brown nests, pale hematoxylin stroma, blue nuclei."""
    nests = _field(rng, h, w, 6) > 0.25
    stroma = 0.06 * (1 + 0.3 * _field(rng, h, w, 16))   # summed OD ~ 0.1: the pale population
    dab = nests * 0.45 * (1 + 0.3 * _field(rng, h, w, 10))
    nuc = _nuclei(rng, (h, w), 0.004, 1.6)
    od = (stroma + 0.5 * nuc)[..., None] * HEMATOXYLIN / HEMATOXYLIN.sum() * 1.64 + dab[..., None] * DAB
    return BACKGROUND * 10.0 ** -od


def _absorb(img: np.ndarray, alpha: np.ndarray, transmittance: np.ndarray) -> None:
    """Put an absorber of coverage ``alpha`` (H, W) in [0, 1] over ``img`` in place (OD adds)."""
    img *= transmittance ** alpha[..., None]


def _on_glass(alpha: np.ndarray, tissue: np.ndarray) -> np.ndarray:
    return (alpha > 0.1) & ~tissue


def _pen(rng: np.random.Generator, img: np.ndarray, tissue: np.ndarray) -> np.ndarray:
    """One marker stroke per ink, on the glass beside the tissue; returns the stroke pixels."""
    h, w = tissue.shape
    side = min(h, w)
    keep_out = ndimage.binary_dilation(tissue, iterations=max(2, side // 100))
    far = np.argwhere(ndimage.distance_transform_edt(~tissue) > side / 20)  # strokes start well inside the glass
    drawn = np.zeros((h, w), bool)
    for ink in INKS.values():
        t = np.linspace(0, 1, 400)
        y0, x0 = far[rng.integers(len(far))] if len(far) else (rng.uniform(0, h), rng.uniform(0, w))
        ang = rng.uniform(0, 2 * np.pi)
        length = rng.uniform(0.2, 0.4) * side
        wobble = 0.08 * side * np.sin(2 * np.pi * rng.uniform(0.5, 1.5) * t + rng.uniform(0, 6.3))
        xs = x0 + length * t * np.cos(ang) - wobble * np.sin(ang)
        ys = y0 + length * t * np.sin(ang) + wobble * np.cos(ang)
        core = np.zeros((h, w), np.float32)
        ok = (xs >= 0) & (xs < w) & (ys >= 0) & (ys < h)
        core[ys[ok].astype(int), xs[ok].astype(int)] = 1
        core = ndimage.binary_dilation(core > 0, iterations=max(2, side // 60)).astype(np.float32)
        alpha = np.clip(ndimage.gaussian_filter(core, max(1.0, side / 400)) * 1.2, 0, 1) * 0.9
        alpha[keep_out] = 0
        _absorb(img, alpha, ink)
        drawn |= alpha > 0.1
    return drawn


def _dust(rng: np.random.Generator, img: np.ndarray, tissue: np.ndarray) -> np.ndarray:
    """Grey-brown specks (up to ~1.5 % of the short side) and thin fibres anywhere; returns those on glass."""
    h, w = tissue.shape
    side = min(h, w)
    alpha = np.zeros((h, w), np.float32)
    n = max(8, int(60 * h * w / 512**2))
    ys, xs = rng.integers(0, h, n), rng.integers(0, w, n)
    alpha[ys, xs] = 1
    alpha = ndimage.binary_dilation(alpha > 0, iterations=max(1, side // 200)).astype(np.float32)
    for _ in range(max(2, n // 10)):  # fibres: 1-2 px lines
        t = np.linspace(0, 1, 200)
        x0, y0, ang, ln = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(0, np.pi), rng.uniform(0.03, 0.08) * side
        fx, fy = (x0 + ln * t * np.cos(ang)).astype(int), (y0 + ln * t * np.sin(ang)).astype(int)
        ok = (fx >= 0) & (fx < w) & (fy >= 0) & (fy < h)
        alpha[fy[ok], fx[ok]] = 1
    alpha = np.clip(ndimage.gaussian_filter(alpha, 0.7) * 1.5, 0, 1)
    _absorb(img, alpha, np.array([0.45, 0.43, 0.40]))
    return _on_glass(alpha, tissue)


def _bubbles(rng: np.random.Generator, img: np.ndarray, tissue: np.ndarray) -> np.ndarray:
    """Air bubbles under the coverslip: dark grey rings over glass and tissue; returns the rims on glass."""
    h, w = tissue.shape
    side = min(h, w)
    yy, xx = np.mgrid[0:h, 0:w]
    alpha = np.zeros((h, w), np.float32)
    for _ in range(6):
        cy, cx, r = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(0.03, 0.1) * side
        d = np.hypot(yy - cy, xx - cx)
        alpha = np.maximum(alpha, np.clip(1 - np.abs(d - r) / max(1.5, side / 160), 0, 1))
    _absorb(img, alpha, np.array([0.55, 0.55, 0.56]))
    return _on_glass(alpha, tissue)


def _shading(rng: np.random.Generator, img: np.ndarray, tissue: np.ndarray) -> np.ndarray:
    """Uneven illumination: light falls off linearly by 6 % across the slide in a random direction; no artefact pixels."""
    h, w = tissue.shape
    ang = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:h, 0:w]
    ramp = np.cos(ang) * xx / w + np.sin(ang) * yy / h
    img *= (1 - 0.06 * (ramp - ramp.min()) / (ramp.max() - ramp.min()))[..., None]
    return np.zeros((h, w), bool)


def _debris(rng: np.random.Generator, img: np.ndarray, tissue: np.ndarray) -> np.ndarray:
    """Dark brown-black clumps of specks on the tissue (radius 1.5-4 % of the short side, one per ~130k px,
    at least 3); returns the clump pixels."""
    h, w = tissue.shape
    side = min(h, w)
    ys, xs = np.nonzero(ndimage.binary_erosion(tissue, iterations=max(2, side // 40)))
    alpha = np.zeros((h, w), np.float32)
    yy, xx = np.mgrid[0:h, 0:w]
    for _ in range(max(3, round(h * w / 131072)) if len(xs) else 0):
        j = int(rng.integers(len(xs)))
        r = rng.uniform(0.015, 0.04) * side
        clump = np.hypot(yy - ys[j], xx - xs[j]) < r * (1 + 0.3 * _field(rng, h, w, 8))
        alpha = np.maximum(alpha, clump * _nuclei(rng, (h, w), 0.05, 1.2) + 0.6 * clump)
    alpha = np.clip(ndimage.gaussian_filter(alpha, 1.0), 0, 1)
    _absorb(img, alpha, np.array([0.22, 0.18, 0.16]))
    return alpha > 0.1


_ARTEFACT_PAINTERS = {"pen": _pen, "dust": _dust, "bubbles": _bubbles, "shading": _shading, "debris": _debris}


@dataclass
class TissueCase:
    """A tissue-detection case at mask scale: the image and where the answer is known."""

    rgb: np.ndarray       # (h, w, 3) uint8
    tissue: np.ndarray    # (h, w) bool: must be found
    glass: np.ndarray     # (h, w) bool: must stay out (glass >= GLASS_MARGIN px from tissue, artefacts on it included)
    artefact: np.ndarray  # (h, w) bool: the pen / dust / bubble part of ``glass``


TISSUE_CASES = {"ihc_real": None, "he": ("he", ()), "pale": ("pale", ()), "ihc": ("ihc", ()),
                "pen": ("he", ("pen",)), "dust_bubbles": ("he", ("dust", "bubbles")), "shading": ("pale", ("shading",))}
GLASS_MARGIN = 2  # mask pixels next to tissue are ambiguous at this scale (partial blocks, blur)
CASE_GLASS = np.array([238.0, 238.0, 240.0])  # glass under the real IHC section


def _block_mean(a: np.ndarray, f: int) -> np.ndarray:
    h, w = a.shape[0] // f * f, a.shape[1] // f * f
    return a[:h, :w].reshape(h // f, f, w // f, f, *a.shape[2:]).mean(axis=(1, 3))


def tissue_case(name: str, seed: int = 0, downsample: int = 4, height: int = 512, width: int = 768) -> TissueCase:
    """One case of ``TISSUE_CASES``, downsampled ``downsample`` x like a slide's mask level.

    ``ihc_real``: scikit-image's ``ihc.png`` (a real DAB + hematoxylin section,
    512 x 512) on glass of colour ``CASE_GLASS`` with noise and a gentle shading; its
    tissue = pixels with summed optical density >= 0.1 above that glass (clearly
    darker than glass), after a 3 x 3 opening (no single-pixel specks). Needs
    scikit-image (the ``dev`` extra). The synthetic cases render a
    ``height`` x ``width`` slide (``render_slide``) and use its ground truth.
    """
    if name not in TISSUE_CASES:
        raise ValueError(f"tissue case must be one of {', '.join(TISSUE_CASES)}, got {name!r}")
    rng = np.random.default_rng([11, seed, list(TISSUE_CASES).index(name)])
    if name == "ihc_real":
        section = _block_mean(read_ihc_section().astype(np.float64), downsample)
        h, w = section.shape[:2]
        y0, x0 = h // 2, w // 2
        yy, xx = np.mgrid[0:2 * h, 0:2 * w]
        img = CASE_GLASS + rng.normal(0, 1.0, (2 * h, 2 * w, 3)) + 1.5 * np.sin(xx / w + yy / h)[..., None]
        img[y0:y0 + h, x0:x0 + w] = section
        od = np.maximum(np.log10((CASE_GLASS + 1) / (section + 1)), 0).sum(axis=2)
        tissue = np.zeros(img.shape[:2], bool)
        tissue[y0:y0 + h, x0:x0 + w] = ndimage.binary_opening(od >= 0.1, np.ones((3, 3), bool))
        region = np.zeros_like(tissue)
        region[y0:y0 + h, x0:x0 + w] = True
        glass = ~ndimage.binary_dilation(region, iterations=GLASS_MARGIN)
        return TissueCase(np.clip(np.round(img), 0, 255).astype(np.uint8), tissue, glass, np.zeros_like(glass))
    stain, artefacts = TISSUE_CASES[name]
    slide = render_slide(rng, height, width, False, stain=stain, artefacts=artefacts)
    frac = _block_mean(slide.tissue.astype(np.float64), downsample)
    glass = ~ndimage.binary_dilation(frac > 0, iterations=GLASS_MARGIN)
    artefact = glass & (_block_mean(slide.artefact.astype(np.float64), downsample) > 0)
    rgb = np.round(_block_mean(slide.rgb.astype(np.float64), downsample)).astype(np.uint8)
    return TissueCase(rgb, frac >= 0.5, glass, artefact)


def read_ihc_section() -> np.ndarray:
    """scikit-image's bundled ``ihc.png`` as ``(512, 512, 3)`` uint8."""
    try:
        import skimage
    except ImportError as exc:
        raise ImportError("the ihc_real case needs scikit-image (pip install 'fastmed[dev]')") from exc
    from PIL import Image

    with Image.open(Path(skimage.__file__).parent / "data" / "ihc.png") as im:
        return np.asarray(im.convert("RGB"))


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
                tumor_radius: tuple[float, float] = (0.06, 0.11), contrast: float = 1.0, artefacts: Sequence[str] = ()) -> Path:
    """Write ``n_slides`` slides (every other one tumour-positive), labels and annotations.

    ``tumor_radius`` and ``contrast`` (see ``render_slide``) make tumours smaller/fainter for harder data sets.
    ``artefacts`` (any of ``ARTEFACTS``, painted on every slide of both classes) also writes their ground
    truth, ``OUT/artefacts/<slide_id>.png``: level-0 mask, 255 where an artefact lies.
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
        rendered = render_slide(rng, height, width, tumor, tumor_radius, contrast, artefacts=artefacts)
        polys = rendered.polygons
        write_pyramid_tiff(out / f"{sid}.tiff", rendered.rgb, mpp)
        if artefacts:
            (out / "artefacts").mkdir(exist_ok=True)
            Image.fromarray(rendered.artefact.astype(np.uint8) * 255).save(out / "artefacts" / f"{sid}.png")
        (out / "annotations" / f"{sid}.geojson").write_text(json.dumps(_geojson(polys)), encoding="utf-8")
        rows.append({"slide_id": sid, "label": "tumor" if polys else "normal"})
    with open(out / "labels.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=["slide_id", "label"])
        w.writeheader()
        w.writerows(rows)
    return out
