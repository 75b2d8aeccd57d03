"""Image transforms: ``(H, W, 3)`` uint8 RGB → normalized ``(3, S, S)`` float tensor.

Augmentations are cheap tensor operations (flips, 90° rotations, a small
translation, brightness/contrast/colour gains): at the small image sizes used
for endoscopy frames a generic affine warp costs more than the network step.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torchvision.transforms.v2.functional import resize

from fastmed.engine.checkpoint import IMAGENET_MEAN, IMAGENET_STD


class ClassificationTransform:
    """Callable ``(H, W, 3) uint8 → (3, S, S) float32``: resize, optional augmentation, normalize.

    ``strength`` scales the augmentation (0 = none); ``train=False`` gives the
    deterministic evaluation transform.
    """

    def __init__(self, image_size: int, train: bool, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD, strength: float = 1.0):
        self.size, self.train, self.strength = int(image_size), bool(train), float(strength)
        self.mean = torch.tensor(list(mean), dtype=torch.float32).view(3, 1, 1)
        self.std = torch.tensor(list(std), dtype=torch.float32).view(3, 1, 1)

    def __call__(self, image: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)
        if x.shape[1:] != (self.size, self.size):
            # resized as uint8, exactly as fastmed.export's preprocessing does
            x = resize(x, [self.size, self.size], antialias=True)
        x = x.float().div_(255)
        if self.train and self.strength > 0:
            x = self._augment(x)
        return (x - self.mean) / self.std

    def _augment(self, x: torch.Tensor) -> torch.Tensor:
        s = self.strength
        if torch.rand(()) < 0.5:
            x = x.flip(2)
        if torch.rand(()) < 0.5:
            x = x.flip(1)
        x = torch.rot90(x, int(torch.randint(0, 4, ())), dims=(1, 2))
        shift = int(round(0.06 * s * self.size))
        if shift > 0:
            dy, dx = (int(v) for v in torch.randint(-shift, shift + 1, (2,)))
            x = torch.roll(x, shifts=(dy, dx), dims=(1, 2))
        colour = 1 + 0.1 * s * (2 * torch.rand(3, 1, 1) - 1)       # per-channel gain, ±10 %
        brightness = 1 + 0.2 * s * (2 * torch.rand(()) - 1)        # ±20 %
        contrast = 1 + 0.2 * s * (2 * torch.rand(()) - 1)          # ±20 %
        mean = x.mean()
        return ((x - mean) * contrast + mean).mul_(colour * brightness).clamp_(0, 1)


def classification_transform(image_size: int, train: bool, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD, strength: float = 1.0) -> ClassificationTransform:
    """The transform for classifier training (``train=True``) or evaluation."""
    return ClassificationTransform(image_size, train, mean, std, strength)


def denormalize(x: torch.Tensor, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD) -> torch.Tensor:
    """Undo the normalization on ``(B, 3, H, W)`` or ``(3, H, W)``; values in [0, 1]."""
    m = torch.tensor(list(mean), dtype=x.dtype, device=x.device).view(-1, 1, 1)
    s = torch.tensor(list(std), dtype=x.dtype, device=x.device).view(-1, 1, 1)
    return (x * s + m).clamp(0, 1)
