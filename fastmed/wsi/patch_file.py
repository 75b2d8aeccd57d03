"""Per-slide HDF5 files (``<slide_id>.h5``) written by ``tile`` and ``features``.

Datasets: ``coords (T, 2)`` int64 level-0 top-left (x, y); ``tissue (T,)``
float32 tissue fraction; ``label_fraction (T,)`` float32 fraction of the patch
inside annotated regions (only when the slide has annotations); ``features
(T, D)`` float32 or float16 (feature files only; ``wsi features --dtype``). Attributes: ``slide_id``,
``slide_path``, ``level``, ``downsample``, ``read_size``, ``patch_size``,
``size0``, ``mpp``, ``mode``, ``width``, ``height`` (+ ``encoder`` ... in
feature files). Files are written to a temporary name and renamed, so an
existing file is always complete (this is what ``resume`` relies on).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fastmed.engine.atomic import atomic_write
from fastmed.errors import DataError


@dataclass
class PatchSet:
    """The contents of one per-slide file."""

    coords: np.ndarray
    attrs: dict[str, Any]
    tissue: np.ndarray | None = None
    label_fraction: np.ndarray | None = None
    features: np.ndarray | None = None
    extra: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def slide_id(self) -> str:
        return str(self.attrs["slide_id"])

    @property
    def patch_labels(self) -> np.ndarray | None:
        """``(T,)`` int64 0/1 patch labels (overlap > 0), or None without annotations."""
        return None if self.label_fraction is None else (self.label_fraction > 0).astype(np.int64)


def write_patch_file(path: str | os.PathLike, ps: PatchSet) -> Path:
    """Write ``ps`` atomically to ``path``."""
    import h5py

    def write(tmp: str) -> None:
        with h5py.File(tmp, "w") as f:
            f.create_dataset("coords", data=np.asarray(ps.coords, np.int64))
            for name in ("tissue", "label_fraction", "features"):
                value = getattr(ps, name)
                if value is not None:
                    keep_half = name == "features" and np.asarray(value).dtype == np.float16
                    f.create_dataset(name, data=np.asarray(value, np.float16 if keep_half else np.float32))
            for name, value in ps.extra.items():
                f.create_dataset(name, data=value)
            for k, v in ps.attrs.items():
                f.attrs[k] = "" if v is None else v

    return atomic_write(path, write)


def read_patch_file(path: str | os.PathLike, features: bool = True) -> PatchSet:
    """Read a per-slide file (``features=False`` skips the feature matrix)."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            get = lambda name: f[name][()] if name in f else None  # noqa: E731
            return PatchSet(
                coords=f["coords"][()],
                attrs={k: (v.item() if hasattr(v, "item") else v) for k, v in f.attrs.items()},
                tissue=get("tissue"),
                label_fraction=get("label_fraction"),
                features=get("features") if features else None,
            )
    except (OSError, KeyError) as exc:
        raise DataError(f"cannot read patch file {path}: {exc}") from exc


def list_patch_files(folder: str | os.PathLike) -> list[Path]:
    """``*.h5`` files in ``folder`` (sorted); ``DataError`` when there are none."""
    folder = Path(folder)
    files = sorted(folder.glob("*.h5")) if folder.is_dir() else []
    if not files:
        raise DataError(f"no per-slide .h5 files in {folder}")
    return files
