"""Slides as bags of patch features, and ragged batches of several bags.

A batch of ``B`` slides is one ``(N, F)`` feature matrix with ``offsets
(B+1,)`` — no padding, no batch-size-1 loop.
"""
from __future__ import annotations

import csv
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
        if ps.patch_labels is not None:
            patch = torch.from_numpy(ps.patch_labels)
        else:
            patch = torch.full((len(ps.coords),), 0 if label == 0 else -1, dtype=torch.int64)
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
        xs.append(bag.features if idx is None else bag.features[idx])
        pls.append(bag.patch_labels if idx is None else bag.patch_labels[idx])
        lengths.append(len(xs[-1]))
    return BagBatch(torch.cat(xs), bag_offsets(lengths), torch.tensor([b.label for b in bags]), torch.cat(pls), [b.slide_id for b in bags])
