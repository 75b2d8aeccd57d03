"""Tissue detection on a low-resolution image of the slide (the mask level of ``wsi tile``).

Default method ``od``: optical density above the slide's own glass.

1. Median blur of each channel (``median``), so single noisy pixels do not count.
2. Glass colour = the per-channel median of the brightest luminance mode of the
   near-neutral pixels that holds at least 1 % of the pixels (pure white 255
   padding, which OpenSlide returns outside the scanned area, is ignored; no such
   mode means tissue fills the view, and white is used). The spread of its
   bright side gives the glass noise.
3. Optical density per channel relative to glass,
   ``OD_c = log10((glass_c + 1) / (I_c + 1))`` (clipped at 0), and its sum over
   the channels: the distance to glass. Every stain absorbs light, pale
   hematoxylin and faded eosin too; only the glass is at 0.
4. Threshold: ``--tissue-threshold`` (summed OD) if given, else
   ``max(OD_FLOOR, 4 glass-noise standard deviations in summed OD)``.
   ``OD_FLOOR = 0.04`` is 3 % darker than glass in each channel: under the pale
   hematoxylin stroma of a real IHC section (summed OD about 0.1 at this scale)
   and above the flat-field drift of a clean scan.
5. Uneven illumination (vignetting, scan stripes): a first mask, without the
   faint neutral pixels that are shading rather than stain, leaves the glass
   pixels; the glass colour is fitted over them as a quadratic surface in
   (x, y) and steps 3-4 are redone relative to that local glass (its residuals
   give the noise). Skipped when under 5 % of the thumbnail is glass.
6. Artefacts out: pen ink by its OD signature (no H&E or DAB stain has it):
   blue ink absorbs red far more than blue (``OD_B < 0.3 OD_R``, ``OD_G < 0.8 OD_R``),
   green ink absorbs green least (``OD_G < 0.75 min(OD_R, OD_B)``), black ink is
   dark and neutral (summed OD > 1.2, chroma < 0.12). Strict pixels are grown into
   looser look-alike neighbours (hysteresis, like Canny's), so the blurred rim of
   a stroke goes with it, then dilated by one pixel. Then whole components whose
   mean OD is neutral grey (chroma < ``GREY_CHROMA``: dust, bubble rims, print,
   coverslip edges) are dropped; stained tissue is coloured.
7. Morphological closing, tissue pieces under ``min_area`` dropped (dust specks),
   holes under ``max_hole_area`` filled.

Why not Otsu: on a section with three populations (glass, pale stroma, strong
DAB) Otsu's two-class split separates strong from weak stain, not tissue from
glass (scikit-image's ``ihc.png`` on glass: the saturation-Otsu mask missed
about a quarter of the stained area). Glass is one narrow, known class, so the
threshold is put relative to it. The OD representation follows the
Beer-Lambert convention of stain deconvolution (Ruifrok & Johnston 2001;
Macenko et al. 2009 also drop pixels of low OD as background, at 0.15 per
channel, too high to keep pale stroma). Other tools: CLAM's ``segmentTissue``
thresholds the median-blurred HSV saturation at a fixed ``sthresh`` (default 8,
optionally Otsu) then closes (default 4) and filters contours by area;
HistoLab's ``TissueMask`` runs Otsu on grayscale, dilation, small-hole and
small-object removal; HistomicsTK's ``get_tissue_mask`` thresholds grayscale
(optionally after colour deconvolution). Pen filters by colour are also in
HistoLab (blue/green/red pen filters on RGB ranges); here they are ratios of OD,
so they do not depend on the ink's darkness.

Method ``saturation`` is the previous default (CLAM-style): HSV saturation →
median blur → Otsu (never below 8) or ``--tissue-threshold`` in 0..255 → the same
step 7, no artefact rejection. Kept for comparison and for old runs.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

METHODS = ("od", "saturation")
OD_FLOOR = 0.04          # lowest automatic threshold, summed OD above glass
NOISE_SIGMAS = 4.0       # automatic threshold >= this many glass-noise standard deviations
GREY_CHROMA = 0.08       # components whose mean OD is more neutral than this are artefacts
NONGLASS_OD = 0.1        # "clearly darker than glass" for the low-tissue warning (summed OD)
LOW_TISSUE_RATIO = 0.75  # warn when the mask covers less than this fraction of the clearly non-glass area
SATURATION_FLOOR = 8     # saturation method: Otsu is never allowed below this (blank slides)
GLASS_MIN_FRACTION = 0.01  # a luminance mode must hold this fraction of the pixels to be glass
GLASS_MAX_TINT = 20      # glass is near neutral: its channels differ by at most this (0..255)
SHADING_OD, SHADING_CHROMA = 0.15, 0.05  # faint and neutral: shading of the glass (for the glass fit only)
GLASS_TINT_TOL = 6       # glass pixels for the fit keep the glass mode's tint within this (0..255)
SURFACE_MIN_FRACTION = 0.05  # fit the glass surface only when at least this much of the image is glass


@dataclass(frozen=True)
class TissueParams:
    """Tissue-detection parameters; areas are in pixels of the image passed in."""

    method: str = "od"            # "od" (default) or "saturation" (the previous default)
    threshold: float | None = None  # od: summed OD above glass (e.g. 0.1); saturation: 0..255; None = automatic
    median: int = 7               # median blur window (odd; 0/1 = none)
    close: int = 4                # closing structuring-element side (0 = none)
    min_area: float = 64.0        # tissue components smaller than this are dropped
    max_hole_area: float = 64.0   # holes smaller than this are filled


@dataclass(frozen=True)
class TissueResult:
    """A tissue mask and what it was computed with (the per-slide tissue report)."""

    mask: np.ndarray              # (H, W) bool
    threshold: float              # the threshold used, in the method's unit
    glass: tuple[float, float, float]  # estimated glass RGB (0..255)
    nonglass_fraction: float      # fraction of pixels with summed OD >= NONGLASS_OD (before any filtering)

    @property
    def tissue_fraction(self) -> float:
        return float(self.mask.mean()) if self.mask.size else 0.0


def saturation(rgb: np.ndarray) -> np.ndarray:
    """HSV saturation ``(H, W)`` uint8 (0..255) of an ``(H, W, 3)`` uint8 image."""
    x = rgb.astype(np.float32)
    mx, mn = x.max(axis=2), x.min(axis=2)
    s = np.where(mx > 0, (mx - mn) / np.maximum(mx, 1e-6), 0.0)
    return np.round(s * 255).astype(np.uint8)


def otsu_threshold(values: np.ndarray) -> int:
    """Otsu's threshold of uint8 ``values``: maximises the between-class variance."""
    hist = np.bincount(values.ravel(), minlength=256).astype(np.float64)
    p = hist / max(hist.sum(), 1)
    omega = np.cumsum(p)
    mu = np.cumsum(p * np.arange(256))
    between = (mu[-1] * omega - mu) ** 2 / np.maximum(omega * (1 - omega), 1e-12)
    return int(np.argmax(between)) + 1  # pixels > argmax are foreground; ">= t" below


def estimate_glass(rgb: np.ndarray) -> tuple[np.ndarray, float]:
    """Glass colour ``(3,)`` float and its luminance noise std of an ``(H, W, 3)`` image.

    The brightest luminance mode of the near-neutral pixels (channels at most
    ``GLASS_MAX_TINT`` apart: glass is not pink, brown or blue) that holds >=
    ``GLASS_MIN_FRACTION`` of the (non-padding) pixels; white (255) with noise 1
    when there is none (tissue fills the view).
    """
    x = rgb.reshape(-1, 3).astype(np.float32)
    x = x[x.min(axis=1) < 254]  # pure-white padding is not glass
    n = len(x)
    x = x[x.max(axis=1) - x.min(axis=1) <= GLASS_MAX_TINT]
    if len(x) == 0:
        return np.full(3, 255.0), 1.0
    lum = x.mean(axis=1)
    hist = np.bincount(np.round(lum).astype(np.int64), minlength=256).astype(np.float64)
    smooth = ndimage.gaussian_filter1d(hist, 1.0)
    mass = np.convolve(hist, np.ones(9), mode="same")  # pixels within +-4 levels
    is_peak = (smooth >= np.roll(smooth, 1)) & (smooth >= np.roll(smooth, -1)) & (mass >= GLASS_MIN_FRACTION * n)
    peaks = np.nonzero(is_peak)[0]
    if len(peaks) == 0:
        return np.full(3, 255.0), 1.0
    top = int(peaks[-1])
    bright = lum[(lum >= top - 0.5) & (lum <= top + 20)] - top  # the mode's bright side, which tissue does not reach
    sigma = max(float(np.sqrt(np.mean(bright ** 2))), 0.5)
    return np.median(x[np.abs(lum - top) <= max(1.5, 2 * sigma)], axis=0), sigma


def glass_surface(rgb: np.ndarray, glass_px: np.ndarray) -> tuple[np.ndarray, float] | None:
    """Glass colour ``(H, W, 3)`` fitted as a quadratic in (x, y) to the pixels ``glass_px`` (H, W) bool, and its noise.

    Least squares per channel on at most ~20k of them, refitted once without
    residuals beyond 3 robust standard deviations. The noise is the robust std
    of the luminance residuals. None when under
    ``SURFACE_MIN_FRACTION`` of the image is glass (too little to fit).
    """
    h, w = glass_px.shape
    ys, xs = np.nonzero(glass_px)
    if len(ys) < max(50, SURFACE_MIN_FRACTION * h * w):
        return None
    step = max(1, len(ys) // 20000)
    ys, xs = ys[::step], xs[::step]
    a = np.stack(_quadratic_terms(*_unit_coords(ys, xs, h, w)), axis=-1)
    values = rgb[ys, xs].astype(np.float64)
    coef = np.linalg.lstsq(a, values, rcond=None)[0]
    res = np.abs(values - a @ coef).max(axis=1)
    inlier = res <= 3 * 1.4826 * max(float(np.median(res)), 0.5)
    coef = np.linalg.lstsq(a[inlier], values[inlier], rcond=None)[0]
    lum_res = (values[inlier] - a[inlier] @ coef).mean(axis=1)
    noise = max(1.4826 * float(np.median(np.abs(lum_res - np.median(lum_res)))), 0.5)
    v, u = _unit_coords(np.arange(h, dtype=np.float32)[:, None, None], np.arange(w, dtype=np.float32)[None, :, None], h, w)
    surface = sum(t * c.astype(np.float32) for t, c in zip(_quadratic_terms(v, u), coef))  # (H, W, 3), no (H, W, 6) temporary
    return np.clip(surface, 0, 255), noise


def _unit_coords(y, x, h: int, w: int):
    """Pixel coordinates mapped to [-1, 1] (rows v, columns u)."""
    return 2 * y / max(h - 1, 1) - 1, 2 * x / max(w - 1, 1) - 1


def _quadratic_terms(v, u):
    """1, u, v, u², uv, v² (broadcast together)."""
    return (np.ones_like(u * v), u, v, u * u, u * v, v * v)


def optical_density(rgb: np.ndarray, glass: np.ndarray) -> np.ndarray:
    """``(H, W, 3)`` float32 OD per channel relative to ``glass`` ((3,) or (H, W, 3); 0 for glass or brighter)."""
    x = rgb.astype(np.float32)
    g = np.asarray(glass, np.float32)
    return np.maximum(np.log10((g + 1) / (x + 1)), 0.0)


def pen_marks(od: np.ndarray) -> np.ndarray:
    """``(H, W)`` bool: blue, green and black ink (see the module docstring), rims included."""
    r, g, b = od[..., 0], od[..., 1], od[..., 2]
    total = r + g + b
    chroma = _chroma(od, total)
    strict = ((b < 0.3 * r) & (g < 0.8 * r) & (total > 0.3)) \
        | ((g < 0.75 * np.minimum(r, b)) & (total > 0.2)) \
        | ((total > 1.2) & (chroma < 0.12))
    loose = ((b < 0.45 * r) & (g < 0.95 * r)) | (g < np.minimum(r, b)) | (chroma < 0.15)
    ink = ndimage.binary_propagation(strict, mask=strict | (loose & (total > 0.02)))
    return ndimage.binary_dilation(ink, iterations=1)


def _chroma(od: np.ndarray, total: np.ndarray) -> np.ndarray:
    """``(H, W)`` spread of the OD channels relative to their sum: 0 = neutral grey."""
    r, g, b = od[..., 0], od[..., 1], od[..., 2]
    return (np.maximum(np.maximum(r, g), b) - np.minimum(np.minimum(r, g), b)) / np.maximum(total, 1e-6)


def _drop_grey(mask: np.ndarray, od: np.ndarray) -> np.ndarray:
    """Drop components of ``mask`` whose summed OD vector is neutral grey (chroma < GREY_CHROMA)."""
    labels, n = ndimage.label(mask, structure=np.ones((3, 3), bool))
    if n == 0:
        return mask
    sums = np.stack([np.bincount(labels.ravel(), weights=od[..., c].ravel(), minlength=n + 1) for c in range(3)], 1)
    chroma = (sums.max(axis=1) - sums.min(axis=1)) / np.maximum(sums.sum(axis=1), 1e-9)
    keep = chroma >= GREY_CHROMA
    keep[0] = False
    return keep[labels]


def detect_tissue(rgb: np.ndarray, params: TissueParams = TissueParams()) -> TissueResult:
    """Tissue mask of an ``(H, W, 3)`` uint8 RGB image, with the threshold and glass colour used."""
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"rgb must be (H, W, 3), got shape {rgb.shape}")
    if params.method not in METHODS:
        raise ValueError(f"tissue method must be one of {', '.join(METHODS)}, got {params.method!r}")
    smooth = ndimage.median_filter(rgb, size=(params.median, params.median, 1)) if params.median > 1 else rgb
    glass, noise = estimate_glass(smooth)
    od = optical_density(smooth, glass)
    dist = od.sum(axis=2)
    if params.method == "od":
        thr = _od_threshold(params, noise, glass)
        chroma = _chroma(od, dist)
        rough = _clean((dist >= thr) & ~((dist < SHADING_OD) & (chroma < SHADING_CHROMA)), params)
        x = smooth.astype(np.float32)
        tint = x - x.mean(axis=2, keepdims=True) - (glass - glass.mean()).astype(np.float32)
        same_tint = np.abs(tint).max(axis=2) <= GLASS_TINT_TOL  # glass pixels for the fit: not pink, brown or blue
        not_padding = smooth.min(axis=2) < 254
        fitted = glass_surface(smooth, same_tint & not_padding & ~ndimage.binary_dilation(rough, iterations=2))
        if fitted is not None:  # OD relative to the local glass: uneven illumination is not tissue
            surface, noise = fitted
            od = optical_density(smooth, surface)
            dist = od.sum(axis=2)
            thr = _od_threshold(params, noise, glass)
        mask = _drop_grey((dist >= thr) & ~pen_marks(od), od)
    else:
        sat = saturation(rgb)
        if params.median > 1:
            sat = ndimage.median_filter(sat, size=params.median)
        thr = float(params.threshold) if params.threshold is not None else float(max(otsu_threshold(sat), SATURATION_FLOOR))
        mask = sat >= thr
    return TissueResult(_clean(mask, params), thr, tuple(float(v) for v in glass), float((dist >= NONGLASS_OD).mean()))


def _od_threshold(params: TissueParams, noise: float, glass: np.ndarray) -> float:
    """``params.threshold``, else max(OD_FLOOR, NOISE_SIGMAS glass-noise std in summed OD)."""
    if params.threshold is not None:
        return float(params.threshold)
    return max(OD_FLOOR, 3 * NOISE_SIGMAS * noise / (np.log(10) * (float(np.mean(glass)) + 1)))


def tissue_mask(rgb: np.ndarray, params: TissueParams = TissueParams()) -> np.ndarray:
    """Boolean tissue mask ``(H, W)`` of an ``(H, W, 3)`` uint8 RGB image (``detect_tissue(...).mask``)."""
    return detect_tissue(rgb, params).mask


def low_tissue_warning(result: TissueResult) -> str | None:
    """A warning when a thumbnail is mostly clearly non-glass but the mask keeps under ``LOW_TISSUE_RATIO`` of that."""
    if result.nonglass_fraction >= 0.5 and result.tissue_fraction < LOW_TISSUE_RATIO * result.nonglass_fraction:
        return (f"tissue mask covers {result.tissue_fraction:.0%} of the thumbnail but {result.nonglass_fraction:.0%} "
                f"is clearly darker than glass; check masks/ and --tissue-method/--tissue-threshold")
    return None


def _clean(mask: np.ndarray, params: TissueParams) -> np.ndarray:
    """Closing (edges not eroded), small pieces dropped, small holes filled."""
    if params.close > 0:
        k = params.close
        padded = np.pad(mask, k, mode="edge")  # tissue running off the slide edge is not eroded
        mask = ndimage.binary_closing(padded, structure=np.ones((k, k), bool))[k:-k, k:-k]
    mask = _drop_small(mask, params.min_area)
    holes = ~mask & ~_touching_border(~mask)
    return mask | (holes & ~_drop_small(holes, params.max_hole_area))


def _drop_small(mask: np.ndarray, min_area: float) -> np.ndarray:
    """Keep the 8-connected components of ``mask`` with at least ``min_area`` pixels."""
    labels, n = ndimage.label(mask, structure=np.ones((3, 3), bool))
    if n == 0:
        return mask
    areas = np.bincount(labels.ravel(), minlength=n + 1)
    keep = areas >= min_area
    keep[0] = False
    return keep[labels]


def _touching_border(mask: np.ndarray) -> np.ndarray:
    """Components of ``mask`` that touch the image border."""
    labels, n = ndimage.label(mask)
    border = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    touch = np.zeros(n + 1, bool)
    touch[border] = True
    touch[0] = False
    return touch[labels]
