"""In-memory image sets for the generator and pre-training (small endoscopy frames).

Images are read once with ``fastmed.data.images.read_image``, resized to
``size x size`` and kept as float tensors in [0, 1]; unreadable files are
skipped and reported, never fatal.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from fastmed.data.folders import scan_class_folders
from fastmed.data.images import read_image
from fastmed.engine.checkpoint import IMAGENET_MEAN, IMAGENET_STD
from fastmed.errors import DataError


@dataclass
class ImageSet:
    """``images (N, 3, S, S)`` in [0, 1], ``labels (N,)``, their ``paths``, class names and skipped files."""

    images: torch.Tensor
    labels: torch.Tensor
    paths: list[Path]
    class_names: list[str]
    skipped: list[tuple[Path, str]] = field(default_factory=list)


def to_tensor(image: np.ndarray, size: int) -> torch.Tensor:
    """``(H, W, 3)`` uint8 → ``(3, size, size)`` float in [0, 1] (bilinear, antialiased)."""
    x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float().div_(255)
    if x.shape[1:] != (size, size):
        x = F.interpolate(x[None], size=(size, size), mode="bilinear", antialias=True, align_corners=False)[0]
    return x


def load_image_set(samples: Sequence[tuple[Path, int]], class_names: Sequence[str], size: int) -> ImageSet:
    """Read ``(path, label)`` samples into an ``ImageSet`` (bad files skipped)."""
    images, labels, paths, skipped = [], [], [], []
    for path, label in samples:
        try:
            images.append(to_tensor(read_image(path), size))
        except DataError as exc:
            skipped.append((Path(path), str(exc)))
            continue
        labels.append(int(label))
        paths.append(Path(path))
    if not images:
        raise DataError(f"no readable image among {len(samples)} file(s)")
    return ImageSet(torch.stack(images), torch.tensor(labels), paths, list(class_names), skipped)


def class_folder_root(data: str | os.PathLike) -> Path:
    """``DATA/train`` when it exists, else ``DATA`` (a folder of class folders)."""
    data = Path(data)
    if not data.is_dir():
        raise DataError(f"dataset folder not found: {data}")
    return data / "train" if (data / "train").is_dir() else data


def load_class_folders(data: str | os.PathLike, size: int, class_names: Sequence[str] | None = None) -> ImageSet:
    """The labelled training images of ``DATA/train/<class>/`` or ``DATA/<class>/``."""
    scan = scan_class_folders(class_folder_root(data), class_names)
    out = load_image_set(scan.samples, scan.class_names, size)
    out.skipped = scan.skipped + out.skipped
    return out


def imagenet_normalize(x01: torch.Tensor) -> torch.Tensor:
    """``(B, 3, H, W)`` in [0, 1] → ImageNet-normalized (what fastmed classifiers take)."""
    mean = torch.tensor(IMAGENET_MEAN, device=x01.device, dtype=x01.dtype).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x01.device, dtype=x01.dtype).view(1, 3, 1, 1)
    return (x01 - mean) / std
