"""Segmentation data in the Kvasir-SEG layout, with rough masks and contours as extra folders.

A split folder ``SPLIT`` holds::

    SPLIT/images/<id>.<ext>        RGB images (any format PIL reads)
    SPLIT/masks/<id>.png           exact masks, 0 background / >0 object (optional per image)
    SPLIT/rough_masks/<id>.png     rough (weak) masks, same convention (optional)
    SPLIT/instances/<id>.png       instance ids 0..K (optional)
    SPLIT/contours/<id>.geojson    object outlines, pixel coordinates (optional)
    SPLIT/meta.csv                 optional per-image columns, first column ``id``

A dataset folder ``DATA`` is either such a split or holds ``train/`` and
``val/`` (and ``test/``) splits. ``scan_seg_split`` pairs the files by stem
and reports (never raises on) unreadable images or masks; ``SegDataset``
serves them as tensors.
"""
from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image

from fastmed.data.images import is_image_file, read_image, read_mask
from fastmed.engine.checkpoint import IMAGENET_MEAN, IMAGENET_STD
from fastmed.errors import DataError

MASK_FOLDERS = {"mask": "masks", "rough": "rough_masks", "instances": "instances"}


@dataclass
class SegItem:
    """One image and the annotation files found for it (``None`` where absent)."""

    id: str
    image: Path
    mask: Path | None = None
    rough: Path | None = None
    instances: Path | None = None
    contours: Path | None = None
    meta: dict[str, str] = field(default_factory=dict)


@dataclass
class SegScan:
    """The readable items of a split and what was skipped ``(path, reason)``."""

    root: Path
    items: list[SegItem]
    skipped: list[tuple[Path, str]] = field(default_factory=list)

    def report(self) -> str:
        """A short human summary (printed by the trainers)."""
        lines = [f"{self.root}: {len(self.items)} images"]
        lines += [f"  skipped {p}: {why}" for p, why in self.skipped]
        return "\n".join(lines)


def _by_stem(folder: Path, suffixes: Sequence[str] | None = None) -> dict[str, Path]:
    if not folder.is_dir():
        return {}
    out = {}
    for p in sorted(folder.iterdir()):
        if p.is_file() and not p.name.startswith(".") and (suffixes is None and is_image_file(p) or suffixes and p.suffix.lower() in suffixes):
            out.setdefault(p.stem, p)
    return out


def read_meta(path: Path) -> dict[str, dict[str, str]]:
    """``meta.csv`` as ``{id: {column: value}}`` (empty when the file is absent)."""
    if not path.is_file():
        return {}
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    if rows and "id" not in rows[0]:
        raise DataError(f"{path} needs an 'id' column, got columns {list(rows[0])}")
    return {row["id"]: row for row in rows}


def _check_readable(item: SegItem) -> str | None:
    """None when the image and every mask decode and share a size, else the reason."""
    try:
        h, w = read_image(item.image).shape[:2]
        for kind in MASK_FOLDERS:
            path = getattr(item, kind)
            if path is not None and read_mask(path).shape != (h, w):
                return f"{kind} {path.name} has shape {read_mask(path).shape}, image is {(h, w)}"
    except DataError as exc:
        return str(exc)
    return None


def scan_seg_split(root: str | os.PathLike, verify: bool = True) -> SegScan:
    """Pair ``root/images/*`` with masks, rough masks, instances, contours and meta rows by file stem."""
    root = Path(root)
    images = _by_stem(root / "images")
    if not images:
        raise DataError(f"no images found in {root / 'images'} (expected the Kvasir-SEG layout images/ + masks/)")
    found = {kind: _by_stem(root / folder) for kind, folder in MASK_FOLDERS.items()}
    contours = _by_stem(root / "contours", (".geojson", ".json"))
    meta = read_meta(root / "meta.csv")
    items, skipped = [], []
    for stem, path in images.items():
        item = SegItem(stem, path, contours=contours.get(stem), meta=meta.get(stem, {}),
                       **{kind: found[kind].get(stem) for kind in MASK_FOLDERS})
        reason = _check_readable(item) if verify else None
        if reason:
            skipped.append((path, reason))
        else:
            items.append(item)
    return SegScan(root, items, skipped)


def seg_splits(data: str | os.PathLike) -> dict[str, Path]:
    """``{"train": ..., "val": ..., "test": ...}`` split folders present under ``data``.

    ``data`` itself counts as ``train`` when it has an ``images/`` folder.
    """
    data = Path(data)
    if not data.is_dir():
        raise DataError(f"segmentation data folder not found: {data}")
    if (data / "images").is_dir():
        return {"train": data}
    splits = {s: data / s for s in ("train", "val", "test") if (data / s / "images").is_dir()}
    if "train" not in splits:
        raise DataError(f"{data} has neither images/ nor train/images/ (Kvasir-SEG layout expected)")
    return splits


def load_rgb(path: Path, size: int | None) -> np.ndarray:
    """``(size, size, 3)`` uint8 (bilinear resize when ``size`` differs)."""
    img = read_image(path)
    if size is not None and img.shape[:2] != (size, size):
        img = np.asarray(Image.fromarray(img).resize((size, size), Image.BILINEAR))
    return img


def load_binary_mask(path: Path, size: int | None) -> np.ndarray:
    """``(size, size)`` uint8 in {0, 1} (nearest resize when ``size`` differs)."""
    m = (read_mask(path) > 0).astype(np.uint8)
    if size is not None and m.shape != (size, size):
        m = np.asarray(Image.fromarray(m * 255).resize((size, size), Image.NEAREST)) > 127
    return m.astype(np.uint8)


def to_tensor_image(img: np.ndarray, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD) -> torch.Tensor:
    """``(H, W, 3)`` uint8 -> normalized ``(3, H, W)`` float32."""
    x = torch.from_numpy(np.array(img, dtype=np.uint8, copy=True)).permute(2, 0, 1).float() / 255.0
    return (x - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)


class SegDataset(torch.utils.data.Dataset):
    """Images with one kind of mask, held in memory (the datasets are small).

    ``label`` chooses the mask: ``"mask"`` (exact), ``"rough"``, or ``"none"``.
    ``__getitem__`` returns ``{"image": (3, S, S) float32 normalized,
    "mask": (1, S, S) float32 in {0, 1}, "index": int}`` (``index`` is the
    position in ``items``; ``"mask"`` is absent for ``label="none"``). With
    ``augment`` random flips and 90-degree rotations are applied to both.
    """

    def __init__(self, items: Sequence[SegItem], image_size: int | None = 64, label: str = "mask", augment: bool = False, seed: int = 0):
        if label not in ("mask", "rough", "none"):
            raise ValueError(f"label must be 'mask', 'rough' or 'none', got {label!r}")
        missing = [it.id for it in items if label != "none" and getattr(it, label) is None]
        if missing:
            raise DataError(f"{len(missing)} image(s) have no {MASK_FOLDERS[label]}/ file, e.g. {missing[:3]}")
        self.items = list(items)
        self.augment = augment
        self.rng = np.random.default_rng(seed)
        self.images = torch.stack([to_tensor_image(load_rgb(it.image, image_size)) for it in self.items]) if self.items else torch.empty(0)
        self.masks = (
            torch.stack([torch.from_numpy(load_binary_mask(getattr(it, label), image_size)).float()[None] for it in self.items])
            if label != "none" and self.items else None
        )

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor | int]:
        out: dict[str, torch.Tensor | int] = {"image": self.images[i], "index": i}
        if self.masks is not None:
            out["mask"] = self.masks[i]
        if self.augment:
            square = out["image"].shape[-1] == out["image"].shape[-2]
            k, flip = int(self.rng.integers(4)) if square else 0, bool(self.rng.integers(2))
            for key in ("image", "mask"):
                if key in out:
                    t = torch.rot90(out[key], k, (1, 2))
                    out[key] = t.flip(2) if flip else t
        return out
