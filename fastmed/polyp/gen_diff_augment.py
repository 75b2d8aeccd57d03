"""Differentiable augmentation of the discriminator's inputs (DiffAugment, Zhao et al. 2020).

With 60 training images per class the adversarial head can learn the real set itself, so every
departure from a training image reads as "generated" and its gradient pulls G back to the identity.
Augmenting real AND generated images the same random way, differentiably, before the adversarial head
hides that shortcut (the head must judge augmented images, whose exact pixels it has never seen) while
G still gets a gradient through the augmentation. Policies follow the paper's code for images in
[-1, 1]: ``color`` (brightness ±0.5, saturation ×[0, 2], contrast ×[0.5, 1.5]), ``translation`` (up to
1/8 of the side, zero padded) and ``cutout`` (one square of half the side set to 0).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def _rand(b: int, gen: torch.Generator, like: torch.Tensor) -> torch.Tensor:
    return torch.rand(b, 1, 1, 1, generator=gen).to(like)


def color(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Per image: brightness shift, saturation scale (around the pixel's channel mean), contrast scale (around the image mean)."""
    b = x.shape[0]
    x = x + (_rand(b, gen, x) - 0.5)
    m = x.mean(dim=1, keepdim=True)
    x = (x - m) * (_rand(b, gen, x) * 2) + m
    m = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - m) * (_rand(b, gen, x) + 0.5) + m


def translation(x: torch.Tensor, gen: torch.Generator, ratio: float = 0.125) -> torch.Tensor:
    """Per image a shift of up to ``ratio`` × the side in each direction; uncovered pixels are 0."""
    b, _, h, w = x.shape
    sh, sw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    dy = torch.randint(-sh, sh + 1, (b,), generator=gen).tolist()
    dx = torch.randint(-sw, sw + 1, (b,), generator=gen).tolist()
    padded = F.pad(x, (sw, sw, sh, sh))
    return torch.stack([padded[i, :, sh - dy[i]: sh - dy[i] + h, sw - dx[i]: sw - dx[i] + w] for i in range(b)])


def cutout(x: torch.Tensor, gen: torch.Generator, ratio: float = 0.5) -> torch.Tensor:
    """Per image one square of ``ratio`` × the side, at a random centre (clipped at the border), set to 0."""
    b, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    cy = torch.randint(0, h + (1 - ch % 2), (b,), generator=gen)
    cx = torch.randint(0, w + (1 - cw % 2), (b,), generator=gen)
    rows = torch.arange(h).view(1, h, 1)
    cols = torch.arange(w).view(1, 1, w)
    top, left = (cy - ch // 2).view(b, 1, 1), (cx - cw // 2).view(b, 1, 1)
    hole = (rows >= top) & (rows < top + ch) & (cols >= left) & (cols < left + cw)
    return x * (~hole).unsqueeze(1).to(x)


POLICIES = {"color": color, "translation": translation, "cutout": cutout}


def parse_policy(text: str) -> list[str]:
    """``"color,translation"`` → ``["color", "translation"]``; ``"off"`` → ``[]``; unknown names raise ValueError."""
    names = [] if text.strip().lower() in ("", "off") else [n.strip() for n in text.split(",")]
    unknown = [n for n in names if n not in POLICIES]
    if unknown:
        raise ValueError(f"unknown augmentation(s) {unknown}; choose from {', '.join(POLICIES)} or off")
    return names


def diff_augment(x: torch.Tensor, policy: list[str], gen: torch.Generator) -> torch.Tensor:
    """Apply each named augmentation of ``policy`` in order to ``(B, 3, H, W)`` images in [-1, 1] (differentiable in x)."""
    for name in policy:
        x = POLICIES[name](x, gen)
    return x
