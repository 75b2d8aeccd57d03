"""Endoscopy-like rendering shared by the synthetic polyp and segmentation sets.

Everything is NumPy, float images in [0, 1], ``(S, S, 3)``; ``rng`` is a
``numpy.random.Generator``. A lesion is a star-shaped region whose boundary is
``r(θ) = R · (1 + Σ_k a_k cos(kθ + φ_k))`` around a centre, so its exact
polygon (for GeoJSON contours) and its mask come from the same formula.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage


@dataclass
class Lesion:
    """A star-shaped lesion: centre (x, y) in pixels, mean radius, boundary harmonics, look."""

    cx: float
    cy: float
    radius: float
    harmonics: list[tuple[int, float, float]]  # (k, amplitude, phase)
    color: tuple[float, float, float]
    texture: float  # 0 smooth .. 1 strong pit pattern

    def boundary(self, theta: np.ndarray) -> np.ndarray:
        """Radius in pixels at angles ``theta``."""
        r = np.ones_like(theta)
        for k, a, p in self.harmonics:
            r = r + a * np.cos(k * theta + p)
        return self.radius * r

    def polygon(self, n: int = 64) -> np.ndarray:
        """``(n, 2)`` boundary vertices (x, y) in pixel coordinates, counter-clockwise."""
        theta = np.linspace(0, 2 * np.pi, n, endpoint=False)
        r = self.boundary(theta)
        return np.stack([self.cx + r * np.cos(theta), self.cy + r * np.sin(theta)], axis=1)

    def alpha(self, size: int) -> np.ndarray:
        """``(S, S)`` soft coverage in [0, 1] (anti-aliased edge ~1.5 px)."""
        yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) + 0.5
        dx, dy = xx - self.cx, yy - self.cy
        d = np.hypot(dx, dy)
        r = self.boundary(np.arctan2(dy, dx))
        return np.clip((r - d) / 1.5 + 0.5, 0.0, 1.0)


def smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """``(S, S)`` smooth noise in about [-1, 1]: a ``cells``² grid, upsampled."""
    grid = rng.uniform(-1, 1, (cells, cells))
    return ndimage.zoom(grid, size / cells, order=3, mode="reflect")[:size, :size]


def mucosa(rng: np.random.Generator, size: int) -> np.ndarray:
    """A mucosa-like background: pink-red base, folds, vessels, vignetted light."""
    yy, xx = np.mgrid[0:size, 0:size] / size
    base = np.array([rng.uniform(0.72, 0.86), rng.uniform(0.36, 0.46), rng.uniform(0.30, 0.40)])
    img = np.broadcast_to(base, (size, size, 3)).copy()
    theta, freq, phase = rng.uniform(0, np.pi), rng.uniform(1.5, 3.5), rng.uniform(0, 2 * np.pi)
    folds = 0.5 + 0.5 * np.sin(2 * np.pi * freq * (xx * np.cos(theta) + yy * np.sin(theta)) + phase + 2 * smooth_noise(rng, size, 4))
    img *= (1 - 0.12 * folds)[..., None]
    vessels = np.abs(np.sin(9 * xx + 7 * smooth_noise(rng, size, 5) + rng.uniform(0, 6))) < 0.05
    img[vessels] *= np.array([0.85, 0.7, 0.8])
    img *= (1 + 0.06 * smooth_noise(rng, size, 8))[..., None]
    cx, cy = rng.uniform(0.3, 0.7, 2)
    vignette = 1 - 0.55 * ((xx - cx) ** 2 + (yy - cy) ** 2)
    return np.clip(img * vignette[..., None], 0, 1)


def random_lesion(rng: np.random.Generator, size: int, kind: str, margin: float = 0.2) -> Lesion:
    """A lesion of ``kind`` ``"hyperplastic"`` (small, smooth, pale) or ``"adenoma"``
    (larger, lobulated, red, pit-patterned), placed inside the image."""
    # The two kinds overlap in size, outline and texture, so that telling them
    # apart needs the combination of cues (as in real polyp subtyping).
    if kind == "hyperplastic":
        radius = rng.uniform(0.08, 0.16) * size
        harmonics = [(2, rng.uniform(0.0, 0.10), rng.uniform(0, 2 * np.pi)), (3, rng.uniform(0.0, 0.06), rng.uniform(0, 2 * np.pi))]
        color = (rng.uniform(0.80, 0.92), rng.uniform(0.48, 0.62), rng.uniform(0.42, 0.56))
        texture = rng.uniform(0.0, 0.35)
    elif kind == "adenoma":
        radius = rng.uniform(0.11, 0.21) * size
        harmonics = [(int(k), rng.uniform(0.04, 0.15), rng.uniform(0, 2 * np.pi)) for k in rng.choice([3, 4, 5, 6], 2, replace=False)]
        color = (rng.uniform(0.70, 0.84), rng.uniform(0.26, 0.40), rng.uniform(0.24, 0.36))
        texture = rng.uniform(0.25, 0.9)
    else:
        raise ValueError(f"unknown lesion kind {kind!r}")
    lo, hi = margin * size + radius, (1 - margin) * size - radius
    cx, cy = rng.uniform(min(lo, hi), max(lo, hi), 2)
    return Lesion(float(cx), float(cy), float(radius), harmonics, color, float(texture))


def paint_lesion(rng: np.random.Generator, img: np.ndarray, lesion: Lesion) -> np.ndarray:
    """Blend ``lesion`` into ``img`` (in place and returned): dome shading, highlight, texture."""
    size = img.shape[0]
    a = lesion.alpha(size)
    yy, xx = np.mgrid[0:size, 0:size] + 0.5
    d = np.hypot(xx - lesion.cx, yy - lesion.cy) / max(lesion.radius, 1)
    dome = np.clip(1.15 - 0.35 * d**2, 0.6, 1.2)
    col = np.array(lesion.color)[None, None, :] * dome[..., None]
    if lesion.texture > 0:
        pits = ndimage.gaussian_filter((rng.random((size, size)) < 0.12).astype(float), 0.6)
        col = col * (1 - lesion.texture * 0.9 * pits / max(pits.max(), 1e-6))[..., None]
    hx, hy = lesion.cx - 0.3 * lesion.radius, lesion.cy - 0.3 * lesion.radius
    spec = np.exp(-((xx - hx) ** 2 + (yy - hy) ** 2) / (2 * (0.12 * lesion.radius + 0.5) ** 2))
    col = col + 0.5 * spec[..., None]
    img[:] = img * (1 - a[..., None]) + np.clip(col, 0, 1) * a[..., None]
    return img


def finish(rng: np.random.Generator, img: np.ndarray, shift: float = 0.0) -> np.ndarray:
    """Sensor noise, an optional illumination/colour ``shift`` (0 = none), then uint8."""
    img = img + rng.normal(0, 0.015, img.shape)
    if shift > 0:
        gain = 1 + shift * rng.uniform(-0.3, 0.3, 3)            # colour cast
        gamma = np.exp(shift * rng.uniform(-0.6, 0.6))           # exposure
        img = np.clip(img, 0, 1) ** gamma * gain
    return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)
