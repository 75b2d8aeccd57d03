"""Two augmented views of one image: a weak one for the teacher, a stronger one of the same kind for the student."""
from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from fastmed.data.transforms import ClassificationTransform

Transform = Callable[[np.ndarray], torch.Tensor]


class UprightTransform(ClassificationTransform):
    """``ClassificationTransform`` whose augmentation keeps the orientation.

    For images whose class changes under a flip or a quarter turn (digits: 6
    and 9): a small random rotation (±12°·strength), scale (±10 %·strength)
    and shift (±6 %·strength) by one bilinear warp, then brightness and
    contrast gains (±20 %·strength).
    """

    def _augment(self, x: torch.Tensor) -> torch.Tensor:
        s = self.strength
        angle = math.radians(12 * s) * (2 * float(torch.rand(())) - 1)
        scale = 1 + 0.1 * s * (2 * float(torch.rand(())) - 1)
        tx, ty = (0.12 * s * (2 * torch.rand(2) - 1)).tolist()  # grid units: the image spans [-1, 1]
        cos, sin = math.cos(angle) / scale, math.sin(angle) / scale
        theta = torch.tensor([[[cos, -sin, tx], [sin, cos, ty]]], dtype=x.dtype)
        grid = F.affine_grid(theta, [1, *x.shape], align_corners=False)
        x = F.grid_sample(x[None], grid, mode="bilinear", padding_mode="border", align_corners=False)[0]
        brightness = 1 + 0.2 * s * (2 * torch.rand(()) - 1)
        contrast = 1 + 0.2 * s * (2 * torch.rand(()) - 1)
        mean = x.mean()
        return ((x - mean) * contrast + mean).mul_(brightness).clamp_(0, 1)


def view_transform(image_size: int, strength: float, mean: Sequence[float], std: Sequence[float], flips: bool) -> Transform:
    """``(H, W, 3)`` uint8 → normalized ``(3, S, S)`` float, augmented with ``strength`` (0 = resize only).

    With ``flips``, the classifier augmentation of ``fastmed.data.transforms``
    (flips, 90° turns, shift, colour gains); without, ``UprightTransform``.
    """
    if strength < 0:
        raise ValueError(f"strength must be >= 0, got {strength}")
    cls = ClassificationTransform if flips else UprightTransform
    return cls(image_size, train=strength > 0, mean=mean, std=std, strength=strength)


class TwoViews:
    """Callable ``image -> (teacher view, student view)``, two independent draws of the two transforms."""

    def __init__(self, teacher: Transform, student: Transform):
        self.teacher, self.student = teacher, student

    def __call__(self, image: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        return self.teacher(image), self.student(image)
