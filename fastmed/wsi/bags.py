"""Slides as bags of patch features, and ragged batches of several bags.

A batch of ``B`` slides is one ``(N, F)`` feature matrix with ``offsets
(B+1,)`` — no padding, no batch-size-1 loop. Training reads its slides through
``BagDataset``: bags held in memory, or ``BagRef``s whose features are read
from their files on each access (``wsi train --stream``: memory is a few
batches, not the cohort).
"""
from __future__ import annotations

import csv
import ctypes
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from fastmed.errors import DataError
from fastmed.kernels.mil_pool import bag_offsets
from fastmed.wsi.encoders import describe_encoder, encoder_identity
from fastmed.wsi.patch_file import list_patch_files, read_patch_file


@dataclass
class SlideBag:
    """One slide: ``features (n, F)`` float32, ``coords (n, 2)``, ``patch_labels (n,)`` (0/1, -1 unknown)."""

    slide_id: str
    features: torch.Tensor
    coords: np.ndarray
    patch_labels: torch.Tensor
    label: int  # 0/1; -1 when unknown (prediction)
    attrs: dict


def without_features(bag: SlideBag) -> SlideBag:
    """``bag`` with a ``(0, F)`` feature matrix of its own (a ``[:0]`` view would keep the whole matrix alive)."""
    return SlideBag(bag.slide_id, bag.features.new_zeros((0, bag.features.shape[1])), bag.coords, bag.patch_labels,
                    bag.label, bag.attrs)


@dataclass(frozen=True)
class BagRef:
    """A slide's feature file, known without reading its features: ``n`` patches of ``dim`` features;
    ``annotated``: the file holds patch labels (``label_fraction``)."""

    path: Path
    slide_id: str
    label: int
    n: int
    dim: int
    attrs: dict
    annotated: bool


@dataclass
class BagBatch:
    """Ragged batch: ``x (N, F)``, ``offsets (B+1,)``, ``labels (B,)``, ``patch_labels (N,)``."""

    x: torch.Tensor
    offsets: torch.Tensor
    labels: torch.Tensor
    patch_labels: torch.Tensor
    slide_ids: list[str]

    def to(self, device: torch.device) -> "BagBatch":
        return BagBatch(self.x.to(device), self.offsets.to(device), self.labels.to(device), self.patch_labels.to(device), self.slide_ids)


def read_labels(path: str | os.PathLike) -> dict[str, str]:
    """``slide_id -> label`` from a CSV with columns ``slide_id,label``."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    except OSError as exc:
        raise DataError(f"cannot read labels file {path}: {exc}") from exc
    if not rows or not {"slide_id", "label"} <= set(rows[0]):
        raise DataError(f"labels file {path} needs a header with columns slide_id,label")
    return {r["slide_id"].strip(): r["label"].strip() for r in rows}


def index_bags(folder: str | os.PathLike, labels: dict[str, str], positive: str = "tumor",
               skipped: list[str] | None = None) -> list[BagRef]:
    """The labelled slides of ``folder`` with patches, as ``BagRef``s (reads attributes and shapes only).

    Slides missing from ``labels`` or without patches are skipped (their ids
    appended to ``skipped``); the files must come from one encoder.
    """
    import h5py

    skipped = skipped if skipped is not None else []
    files = list_patch_files(folder)
    check_one_encoder(files)
    refs = []
    for path in files:
        attrs = read_patch_file(path, features=False).attrs
        with h5py.File(path, "r") as f:
            if "features" not in f:
                raise DataError(f"{path} has no features; run `fastmed wsi features` on the tiles first")
            n, dim = f["features"].shape
            annotated = "label_fraction" in f
        sid = str(attrs["slide_id"])
        if sid not in labels or n == 0:
            skipped.append(sid)
            continue
        refs.append(BagRef(path, sid, int(labels[sid] == positive), int(n), int(dim), attrs, annotated))
    return refs


def read_bag(ref: BagRef, rows: np.ndarray | None = None) -> SlideBag:
    """The slide of ``ref`` with all its patches, or the sorted ``rows`` only (read from the file; features as stored)."""
    import h5py

    sel = slice(None) if rows is None else rows
    with h5py.File(ref.path, "r") as f:
        features = f["features"][sel]
        coords = f["coords"][sel]
        fraction = f["label_fraction"][sel] if "label_fraction" in f else None
    return SlideBag(ref.slide_id, torch.from_numpy(features), coords, _patch_labels(fraction, ref.label, len(coords)),
                    ref.label, ref.attrs)


def _patch_labels(label_fraction: np.ndarray | None, label: int, n: int) -> torch.Tensor:
    """0/1 where annotations overlap; without annotations all 0 on a negative slide (by definition), else -1 (unknown)."""
    if label_fraction is not None:
        return torch.from_numpy((label_fraction > 0).astype(np.int64))
    return torch.full((n,), 0 if label == 0 else -1, dtype=torch.int64)


class BagDataset(torch.utils.data.Dataset):
    """Training slides as ``SlideBag`` items, from bags in memory or from ``BagRef``s read on each access.

    Item ``i`` of epoch ``e`` (``set_epoch``) keeps at most ``max_patches``
    patches: a subset drawn from ``(seed, e, i)``, so it does not depend on the
    worker that reads it, nor on whether the bag was in memory or streamed.
    Slides in ``hidden`` have their patch labels replaced by ``-1`` (unknown).
    """

    def __init__(self, items: list[SlideBag] | list[BagRef], max_patches: int | None = None, seed: int = 0,
                 hidden: frozenset[str] = frozenset()):
        self.items, self.max_patches, self.seed, self.hidden = list(items), max_patches, seed, hidden
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.items)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def labels(self) -> list[int]:
        return [item.label for item in self.items]

    def __getitem__(self, i: int) -> SlideBag:
        item = self.items[i]
        n = item.n if isinstance(item, BagRef) else len(item.features)
        rows = None
        if self.max_patches is not None and n > self.max_patches:
            rows = np.sort(np.random.default_rng((self.seed, self.epoch, i)).choice(n, self.max_patches, replace=False))
        if isinstance(item, BagRef):
            bag = read_bag(item, rows)
        elif rows is not None:
            idx = torch.from_numpy(rows)
            bag = SlideBag(item.slide_id, item.features[idx], item.coords[rows], item.patch_labels[idx], item.label, item.attrs)
        else:
            bag = item
        if bag.slide_id in self.hidden:
            bag = SlideBag(bag.slide_id, bag.features, bag.coords, torch.full_like(bag.patch_labels, -1), bag.label, bag.attrs)
        return bag

    def feature_stats(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-feature mean and standard deviation ``(F,)`` over every patch (float64 sums, one slide at a time)."""
        total, sq, count = 0.0, 0.0, 0
        for item in self.items:
            x = (read_bag(item) if isinstance(item, BagRef) else item).features.double()
            total, sq, count = total + x.sum(0), sq + (x * x).sum(0), count + len(x)
        mean = total / count
        var = (sq - count * mean * mean) / max(count - 1, 1)
        return mean.float(), var.clamp_min(0).sqrt().float()


def bag_loader(dataset: BagDataset, batches: list[list[int]], workers: int) -> torch.utils.data.DataLoader:
    """Ragged batches of the slides listed in ``batches`` (indices into ``dataset``), read by ``workers`` processes."""
    return torch.utils.data.DataLoader(dataset, batch_sampler=batches, collate_fn=collate, num_workers=workers,
                                       prefetch_factor=2 if workers else None, worker_init_fn=release_large_buffers,
                                       generator=torch.Generator())  # its seed draw leaves the global RNG (dropout) alone


M_MMAP_THRESHOLD = -3  # glibc mallopt parameter


def release_large_buffers(_worker_id: int = 0) -> None:
    """Make glibc return freed buffers of 1 MiB or more to the system at once (a DataLoader ``worker_init_fn``).

    glibc raises its mmap threshold to the largest buffer freed so far (up to
    32 MiB), after which batch-sized buffers come from the heap, which it
    rarely shrinks: each worker reading 2,000 x 1,024 float16 slides, 4 per
    batch, grew to 1.1 GB (measured) instead of 0.15 GB with this fixed
    threshold. No-op where the C library has no ``mallopt`` (not glibc).
    """
    try:
        ctypes.CDLL(None).mallopt(M_MMAP_THRESHOLD, 1 << 20)
    except (OSError, AttributeError):
        pass


def iter_bags(folder: str | os.PathLike, labels: dict[str, str] | None = None, positive: str = "tumor",
              skipped: list[str] | None = None) -> Iterator[SlideBag]:
    """Feature files of ``folder`` as bags, one file in memory at a time.

    With ``labels``, slides missing from it are skipped (their ids appended to
    ``skipped``), as are slides without patches. Patch labels come from
    annotation overlaps; a negative slide without annotations has all patches
    negative (by definition of a negative slide); otherwise unknown (-1).
    Every file of ``folder`` must come from one encoder (``check_one_encoder``).
    """
    skipped = skipped if skipped is not None else []
    files = list_patch_files(folder)
    check_one_encoder(files)
    for path in files:
        ps = read_patch_file(path)
        if ps.features is None:
            raise DataError(f"{path} has no features; run `fastmed wsi features` on the tiles first")
        if (labels is not None and ps.slide_id not in labels) or len(ps.coords) == 0:
            skipped.append(ps.slide_id)
            continue
        label = -1 if labels is None else int(labels[ps.slide_id] == positive)
        patch = _patch_labels(ps.label_fraction, label, len(ps.coords))
        yield SlideBag(ps.slide_id, torch.from_numpy(ps.features).float(), ps.coords, patch, label, ps.attrs)


def check_one_encoder(files: list[Path]) -> None:
    """``DataError`` naming two slides when the feature files come from different encoders (or share a slide id)."""
    first: tuple[str, dict] | None = None
    seen: dict[str, Path] = {}
    for path in files:
        attrs = read_patch_file(path, features=False).attrs
        sid = str(attrs.get("slide_id", path.stem))
        if sid in seen:
            raise DataError(f"slide id {sid!r} is in two feature files, {seen[sid]} and {path}; keep one")
        seen[sid] = path
        if first is None:
            first = (sid, attrs)
        elif encoder_identity(attrs) != encoder_identity(first[1]):
            raise DataError(f"feature files from different encoders: slide {first[0]} has {describe_encoder(first[1])}, "
                            f"slide {sid} has {describe_encoder(attrs)}; encode every slide with one encoder (fastmed wsi features)")


def load_bags(folder: str | os.PathLike, labels: dict[str, str] | None = None, positive: str = "tumor") -> tuple[list[SlideBag], list[str]]:
    """All bags of ``folder`` in memory (training); returns ``(bags, skipped slide ids)``."""
    skipped: list[str] = []
    return list(iter_bags(folder, labels, positive, skipped)), skipped


def collate(bags: list[SlideBag], max_patches: int | None = None, generator: torch.Generator | None = None) -> BagBatch:
    """Stack bags into a ragged batch; a bag larger than ``max_patches`` keeps a random subset."""
    xs, pls, lengths = [], [], []
    for bag in bags:
        idx = None
        if max_patches is not None and len(bag.features) > max_patches:
            idx = torch.randperm(len(bag.features), generator=generator)[:max_patches]
        xs.append((bag.features if idx is None else bag.features[idx]).float())  # float16 files: float32 per batch
        pls.append(bag.patch_labels if idx is None else bag.patch_labels[idx])
        lengths.append(len(xs[-1]))
    return BagBatch(torch.cat(xs), bag_offsets(lengths), torch.tensor([b.label for b in bags]), torch.cat(pls), [b.slide_id for b in bags])
