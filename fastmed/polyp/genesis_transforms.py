"""Models-Genesis image corruptions for self-supervised pre-training.

All functions take one image ``(3, H, W)`` float tensor in [0, 1] and a NumPy
``Generator`` and return a new tensor (the input is not modified):

* ``bezier_intensity`` – a smooth monotone intensity mapping: a cubic Bézier
  curve from (0, 0) to (1, 1) whose control points have sorted coordinates
  (so both ``x(t)`` and ``y(t)`` are non-decreasing), optionally inverted
  (``1 - y``); the network must learn absolute intensities back;
* ``local_pixel_shuffle`` – pixels permuted inside small windows (all channels
  together); windows must stay smaller than the encoder's receptive field so
  that the network can restore texture from context;
* ``paint`` – in-painting (random boxes replaced by noise) or out-painting
  (everything but one box replaced by noise).

``corrupt`` applies them with the given probabilities.
"""
from __future__ import annotations

import numpy as np
import torch


def bezier_curve(control: np.ndarray, n: int = 1000) -> tuple[np.ndarray, np.ndarray]:
    """Points ``(x(t), y(t))`` of the cubic Bézier curve with ``control: (4, 2)`` at ``n`` values of t."""
    t = np.linspace(0.0, 1.0, n)[:, None]
    basis = np.concatenate([(1 - t) ** 3, 3 * (1 - t) ** 2 * t, 3 * (1 - t) * t**2, t**3], axis=1)  # (n, 4)
    xy = basis @ control
    return xy[:, 0], xy[:, 1]


def bezier_mapping(rng: np.random.Generator, inverted: bool = False, n: int = 1000) -> tuple[np.ndarray, np.ndarray]:
    """A random monotone intensity map as ``(x, y)`` samples, ``x`` increasing from 0 to 1.

    Control points (0,0), (x1,y1), (x2,y2), (1,1) with ``x1 <= x2`` and
    ``y1 <= y2`` in [0, 1] make ``x(t)`` and ``y(t)`` non-decreasing, hence a
    non-decreasing ``y(x)``; ``inverted`` returns ``1 - y`` (non-increasing).
    """
    xs = np.sort(rng.random(2))
    ys = np.sort(rng.random(2))
    control = np.array([[0.0, 0.0], [xs[0], ys[0]], [xs[1], ys[1]], [1.0, 1.0]])
    x, y = bezier_curve(control, n)
    return x, (1.0 - y) if inverted else y


def bezier_intensity(img: torch.Tensor, rng: np.random.Generator, inverted: bool | None = None) -> torch.Tensor:
    """Apply a random (monotone or, when ``inverted``, inverted) Bézier map to every pixel of ``img``."""
    if inverted is None:
        inverted = bool(rng.random() < 0.5)
    x, y = bezier_mapping(rng, inverted)
    out = np.interp(img.cpu().numpy(), x, y)
    return torch.from_numpy(out.astype(np.float32)).to(img.device)


def random_windows(rng: np.random.Generator, height: int, width: int, max_window: int, count: int) -> list[tuple[int, int, int, int]]:
    """``count`` windows ``(top, left, h, w)`` with sides in ``[2, max_window]`` inside the image."""
    out = []
    for _ in range(count):
        h = int(rng.integers(2, min(max_window, height) + 1))
        w = int(rng.integers(2, min(max_window, width) + 1))
        out.append((int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1)), h, w))
    return out


def local_pixel_shuffle(img: torch.Tensor, rng: np.random.Generator, max_window: int = 8, count: int | None = None,
                        windows: list[tuple[int, int, int, int]] | None = None) -> torch.Tensor:
    """Permute the pixels (all channels together) inside each window, one window after the other.

    ``windows`` defaults to ``count`` random windows (default: enough to
    cover about the image area once). Each shuffle is a permutation of the
    window's current pixels, so every window keeps its multiset of pixels.
    """
    _, H, W = img.shape
    if windows is None:
        count = count if count is not None else max(1, (H * W) // max(1, (max_window // 2 + 1) ** 2))
        windows = random_windows(rng, H, W, max_window, count)
    out = img.clone()
    for top, left, h, w in windows:
        patch = out[:, top:top + h, left:left + w].reshape(out.shape[0], -1)
        perm = torch.from_numpy(rng.permutation(h * w)).to(img.device)
        out[:, top:top + h, left:left + w] = patch[:, perm].reshape(out.shape[0], h, w)
    return out


def paint(img: torch.Tensor, rng: np.random.Generator, outpaint: bool, boxes: int = 3) -> torch.Tensor:
    """In-painting (``boxes`` random boxes → uniform noise) or out-painting (all but one box → noise)."""
    C, H, W = img.shape
    noise = torch.from_numpy(rng.random((C, H, W)).astype(np.float32)).to(img.device)
    if outpaint:
        out = noise
        top, left, h, w = random_windows(rng, H, W, max(2, 3 * min(H, W) // 4), 1)[0]
        h, w = max(h, H // 4), max(w, W // 4)
        top, left = min(top, H - h), min(left, W - w)
        out[:, top:top + h, left:left + w] = img[:, top:top + h, left:left + w]
        return out
    out = img.clone()
    for top, left, h, w in random_windows(rng, H, W, max(2, min(H, W) // 3), boxes):
        out[:, top:top + h, left:left + w] = noise[:, top:top + h, left:left + w]
    return out


def corrupt(img: torch.Tensor, rng: np.random.Generator, *, bezier_prob: float = 0.9, shuffle_prob: float = 0.5,
            shuffle_window: int = 8, paint_prob: float = 0.0, outpaint_share: float = 0.8) -> torch.Tensor:
    """Models-Genesis corruption of one image ``(3, H, W)`` in [0, 1] (order: shuffle, Bézier, painting)."""
    out = img
    if rng.random() < shuffle_prob:
        out = local_pixel_shuffle(out, rng, shuffle_window)
    if rng.random() < bezier_prob:
        out = bezier_intensity(out, rng)
    if rng.random() < paint_prob:
        out = paint(out, rng, outpaint=bool(rng.random() < outpaint_share))
    return out
