"""Image transforms: ``(H, W, 3)`` uint8 RGB → normalized ``(3, S, S)`` float tensor."""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch
import torchvision.transforms.v2 as T

from fastmed.engine.checkpoint import IMAGENET_MEAN, IMAGENET_STD


def classification_transform(
    image_size: int,
    train: bool,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    strength: float = 1.0,
) -> Callable[[np.ndarray], torch.Tensor]:
    """Resize to ``image_size``²; when ``train``, random flips, 90° rotations,
    a small affine and colour jitter scaled by ``strength`` (0 = none)."""
    ops: list = [T.ToImage(), T.Resize((image_size, image_size), antialias=True)]
    if train and strength > 0:
        ops += [
            T.RandomHorizontalFlip(),
            T.RandomVerticalFlip(),
            T.RandomApply([T.RandomRotation(degrees=(90, 90))], p=0.5),
            T.RandomAffine(degrees=15 * strength, translate=(0.05 * strength, 0.05 * strength), scale=(1 - 0.1 * strength, 1 + 0.1 * strength)),
            T.ColorJitter(brightness=0.2 * strength, contrast=0.2 * strength, saturation=0.2 * strength, hue=0.02 * strength),
        ]
    ops += [T.ToDtype(torch.float32, scale=True), T.Normalize(list(mean), list(std))]
    return T.Compose(ops)


def denormalize(x: torch.Tensor, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD) -> torch.Tensor:
    """Undo ``Normalize`` on ``(B, 3, H, W)`` or ``(3, H, W)``; returns values in [0, 1]."""
    m = torch.tensor(mean, dtype=x.dtype, device=x.device).view(-1, 1, 1)
    s = torch.tensor(std, dtype=x.dtype, device=x.device).view(-1, 1, 1)
    return (x * s + m).clamp(0, 1)
