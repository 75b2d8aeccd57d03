"""Labelled images for distillation: class folders, or scikit-learn's bundled digits (``data="digits"``).

Splits never depend on the training seed (``SPLIT_SEED``), so a teacher and
the students distilled from it see the same validation images.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from fastmed.data.folders import ClassFolderDataset, Sample, load_classification_splits
from fastmed.errors import ConfigError

SPLIT_SEED = 0
UNLABELLED = -1  # label of a training image whose label the student does not see
DIGITS = "digits"


class ArrayDataset(torch.utils.data.Dataset):
    """``(transform(images[i]), labels[i])`` for in-memory ``(N, H, W, 3)`` uint8 images."""

    def __init__(self, images: np.ndarray, labels: Sequence[int], transform: Callable[[np.ndarray], object]):
        if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
            raise ValueError(f"images must be (N, H, W, 3) uint8, got {images.shape} {images.dtype}")
        if len(labels) != len(images):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        self.images, self.labels, self.transform = images, list(labels), transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        return self.transform(self.images[i]), self.labels[i]


@dataclass
class LabelledImages:
    """Train and validation images with their class names.

    A split is either a list of ``(path, label)`` samples (class folders) or an
    ``(images (N, H, W, 3) uint8, labels (N,))`` pair (digits).
    """

    class_names: list[str]
    train: list[Sample] | tuple[np.ndarray, np.ndarray]
    val: list[Sample] | tuple[np.ndarray, np.ndarray]
    skipped: list[tuple[Path, str]] = field(default_factory=list)

    def dataset(self, split: str, transform: Callable[[np.ndarray], object]) -> torch.utils.data.Dataset:
        """The ``"train"`` or ``"val"`` split as a dataset of ``(transform(image), label)``."""
        if split not in ("train", "val"):
            raise ValueError(f"split must be 'train' or 'val', got {split!r}")
        part = self.train if split == "train" else self.val
        if isinstance(part, tuple):
            return ArrayDataset(part[0], part[1].tolist(), transform)
        return ClassFolderDataset(part, transform)

    def labels(self, split: str) -> list[int]:
        """The class indices of the ``"train"`` or ``"val"`` split, in dataset order."""
        part = self.train if split == "train" else self.val
        return part[1].tolist() if isinstance(part, tuple) else [y for _, y in part]

    def with_train_labels(self, labels: Sequence[int]) -> "LabelledImages":
        """A copy whose training labels are ``labels`` (e.g. with some set to ``UNLABELLED``)."""
        if isinstance(self.train, tuple):
            train = (self.train[0], np.asarray(labels, dtype=np.int64))
        else:
            train = [(p, int(y)) for (p, _), y in zip(self.train, labels)]
        return LabelledImages(self.class_names, train, self.val, self.skipped)

    def with_train_subset(self, indices: Sequence[int]) -> "LabelledImages":
        """A copy whose training split keeps only the images at ``indices`` (in that order)."""
        if isinstance(self.train, tuple):
            idx = np.asarray(indices, dtype=np.int64)
            train = (self.train[0][idx], self.train[1][idx])
        else:
            train = [self.train[i] for i in indices]
        return LabelledImages(self.class_names, train, self.val, self.skipped)


def class_indices(option: str, names: str | None, class_names: Sequence[str]) -> list[int]:
    """The indices of the comma-separated class ``names`` (``None``/empty: none); one-line error for an unknown one."""
    out = []
    for name in (n.strip() for n in (names or "").split(",")):
        if not name:
            continue
        if name not in class_names:
            raise ConfigError(f"option --{option}: no class {name!r}; the classes are {', '.join(class_names)}")
        out.append(list(class_names).index(name))
    return sorted(set(out))


def cut_classes(labels: Sequence[int], classes: Sequence[int], fraction: float) -> list[int]:
    """Indices of the training images kept when each class in ``classes`` is cut to ``fraction`` (≥ 1 image each).

    The kept images are a random draw with ``SPLIT_SEED`` (the same for every
    training seed, so a teacher and its students see the same imbalanced set);
    other classes keep all their images. Order is preserved.
    """
    if not 0.0 < fraction <= 1.0:
        raise ConfigError(f"option --weak-train-fraction must be in (0, 1], got {fraction}")
    rng = random.Random(SPLIT_SEED)
    drop: set[int] = set()
    for c in classes:
        idx = [i for i, y in enumerate(labels) if int(y) == c]
        keep = max(1, round(fraction * len(idx))) if idx else 0
        drop.update(set(idx) - set(rng.sample(idx, keep)))
    return [i for i in range(len(labels)) if i not in drop]


def load_digits_images(val_fraction: float = 0.2) -> LabelledImages:
    """scikit-learn's bundled 8×8 digits (1797 images, no download) as grey RGB uint8, stratified split."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    grey = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)  # (N, 8, 8), values 0..16 -> 0..255
    rgb = np.repeat(grey[..., None], 3, axis=-1)
    labels = digits.target.astype(np.int64)
    idx_train, idx_val = train_test_split(np.arange(len(labels)), test_size=val_fraction, stratify=labels,
                                          random_state=SPLIT_SEED)
    return LabelledImages([str(c) for c in range(10)], (rgb[idx_train], labels[idx_train]), (rgb[idx_val], labels[idx_val]))


def load_labelled_images(data: str, val_fraction: float = 0.2) -> LabelledImages:
    """``data="digits"`` or a class-folder dataset (``DATA/{train,val}/<class>`` or ``DATA/<class>``)."""
    if not 0.0 < val_fraction < 1.0:
        raise ConfigError(f"option --val-fraction must be in (0, 1), got {val_fraction}")
    if data == DIGITS:
        return load_digits_images(val_fraction)
    splits = load_classification_splits(data, val_fraction, seed=SPLIT_SEED)
    return LabelledImages(splits.class_names, splits.train, splits.val, splits.skipped)


def hide_labels(labels: Sequence[int], fraction: float, seed: int) -> list[int]:
    """Keep the labels of ``ceil(fraction · n_c)`` random images of every class c; the rest become ``UNLABELLED``."""
    if not 0.0 <= fraction <= 1.0:
        raise ConfigError(f"option --label-fraction must be in [0, 1], got {fraction}")
    rng = random.Random(seed)
    out = [UNLABELLED] * len(labels)
    by_class: dict[int, list[int]] = {}
    for i, y in enumerate(labels):
        by_class.setdefault(int(y), []).append(i)
    for y, idx in by_class.items():
        for i in rng.sample(idx, math.ceil(fraction * len(idx))):
            out[i] = y
    return out
