"""Class-folder datasets (HyperKvasir / ImageNet style): ``ROOT/<class>/<image>``.

Accepted layouts for a dataset folder ``DATA``:

* ``DATA/train/<class>/*`` and ``DATA/val/<class>/*`` (``test/`` is left alone);
* ``DATA/<class>/*`` — a validation split is drawn per class (stratified).

Unreadable images are skipped and reported, never fatal; a class folder with
no readable image, or a dataset with fewer than two classes, is an error.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image

from fastmed.data.images import is_image_file, read_image
from fastmed.data.split import stratified_split
from fastmed.errors import DataError

Sample = tuple[Path, int]  # (image path, class index)


@dataclass
class ClassFolderScan:
    """The readable samples of a class-folder tree, its class names, and what was skipped."""

    samples: list[Sample]
    class_names: list[str]
    skipped: list[tuple[Path, str]] = field(default_factory=list)  # (path, reason)


def _verify(path: Path) -> str | None:
    """None when PIL can decode the file header and data, else the reason."""
    try:
        with Image.open(path) as im:
            im.verify()
        return None
    except Exception as exc:  # PIL raises many types for bad files
        return f"{type(exc).__name__}: {exc}"


def scan_class_folders(root: str | os.PathLike, class_names: Sequence[str] | None = None, verify: bool = True) -> ClassFolderScan:
    """Find ``root/<class>/**/<image>``; classes are the sorted sub-folder names.

    ``class_names`` fixes the class list and order (e.g. those of a training
    set, for a validation or extra-data folder); a class folder not in it is an
    error, a missing one is allowed. With ``verify`` every image's data is
    checked and unreadable files land in ``skipped``.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"dataset folder not found: {root}")
    found = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if class_names is None:
        class_names = found
    else:
        extra = sorted(set(found) - set(class_names))
        if extra:
            raise DataError(f"{root} has class folder(s) {extra} not among the classes {list(class_names)}")
    if not class_names:
        raise DataError(f"{root} has no class sub-folders (expected {root}/<class>/<image>.png)")
    samples: list[Sample] = []
    skipped: list[tuple[Path, str]] = []
    for idx, name in enumerate(class_names):
        folder = root / name
        if not folder.is_dir():
            continue
        files = sorted(p for p in folder.rglob("*") if p.is_file() and is_image_file(p))
        good = 0
        for p in files:
            reason = _verify(p) if verify else None
            if reason is None:
                samples.append((p, idx))
                good += 1
            else:
                skipped.append((p, reason))
        if good == 0:
            raise DataError(f"class folder {folder} has no readable image ({len(files)} file(s) found)")
    return ClassFolderScan(samples, list(class_names), skipped)


@dataclass
class ClassificationSplits:
    """Train/validation samples of a classification dataset."""

    train: list[Sample]
    val: list[Sample]
    class_names: list[str]
    skipped: list[tuple[Path, str]]


def load_classification_splits(data: str | os.PathLike, val_fraction: float = 0.2, seed: int = 0) -> ClassificationSplits:
    """Train/val samples from ``DATA/{train,val}/<class>`` or ``DATA/<class>`` (see module doc)."""
    data = Path(data)
    if not data.is_dir():
        raise DataError(f"dataset folder not found: {data}")
    if (data / "train").is_dir():
        tr = scan_class_folders(data / "train")
        if (data / "val").is_dir():
            va = scan_class_folders(data / "val", tr.class_names)
            splits = ClassificationSplits(tr.samples, va.samples, tr.class_names, tr.skipped + va.skipped)
        else:
            splits = ClassificationSplits(*_split_samples(tr.samples, val_fraction, seed), tr.class_names, tr.skipped)
    else:
        scan = scan_class_folders(data)
        splits = ClassificationSplits(*_split_samples(scan.samples, val_fraction, seed), scan.class_names, scan.skipped)
    if len(splits.class_names) < 2:
        raise DataError(f"{data}: a classifier needs at least 2 classes, found {splits.class_names}")
    return splits


def _split_samples(samples: Sequence[Sample], val_fraction: float, seed: int) -> tuple[list[Sample], list[Sample]]:
    """``fastmed.data.split.stratified_split`` of the samples by class (a flat layout needs a validation part)."""
    if not 0.0 < val_fraction < 1.0:
        raise DataError(f"val_fraction must be in (0, 1), got {val_fraction}")
    train, val = stratified_split([y for _, y in samples], val_fraction, seed)
    return [samples[i] for i in train], [samples[i] for i in val]


class ClassFolderDataset(torch.utils.data.Dataset):
    """``(image tensor, class index)`` pairs; ``transform`` maps ``(H, W, 3)`` uint8 to a tensor."""

    def __init__(self, samples: Sequence[Sample], transform: Callable[[np.ndarray], torch.Tensor]):
        self.samples = list(samples)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        path, label = self.samples[i]
        return self.transform(read_image(path)), label


def format_skipped(skipped: Sequence[tuple[Path, str]], limit: int = 10) -> str:
    """A short multi-line report of skipped files."""
    lines = [f"skipped {len(skipped)} unreadable file(s):"]
    lines += [f"  {p}: {why}" for p, why in skipped[:limit]]
    if len(skipped) > limit:
        lines.append(f"  ... and {len(skipped) - limit} more")
    return "\n".join(lines)
