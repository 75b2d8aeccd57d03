"""wsi test fixtures: tiny hand-made feature files (``<slide_id>.h5``, as ``wsi features`` writes them)."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from fastmed.wsi.patch_file import PatchSet, write_patch_file

ENCODER = {"encoder": "tiny", "encoder_weights": "", "feature_dim": 4, "encoder_seed": 0, "encoder_sha256": "a" * 64}


def write_features(folder: Path, slide_id: str, label: int, n: int = 6, seed: int = 0, file_stem: str | None = None,
                   **attrs) -> Path:
    """One slide of ``n`` patches whose 4 features separate the classes; extra ``attrs`` override the defaults."""
    rng = np.random.default_rng(seed)
    feats = rng.normal(label * 2.0, 1.0, (n, 4)).astype(np.float32)
    coords = np.stack([np.arange(n) * 64, np.zeros(n)], 1).astype(np.int64)
    base = {"slide_id": slide_id, "slide_path": f"/nowhere/{slide_id}.tiff", "size0": 64, "patch_size": 64,
            "mpp": 0.5, "mode": "bbox", "width": 64 * n, "height": 64, **ENCODER}
    ps = PatchSet(coords, {**base, **attrs}, np.ones(n, np.float32), np.full(n, float(label), np.float32), feats)
    return write_patch_file(folder / f"{file_stem or slide_id}.h5", ps)


def write_dataset(folder: Path, n_slides: int = 8) -> Path:
    """``n_slides`` slides alternating normal/tumor and their ``labels.csv`` (returned)."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n_slides):
        write_features(folder, f"s{i}", i % 2, seed=i)
        rows.append({"slide_id": f"s{i}", "label": "tumor" if i % 2 else "normal"})
    labels = folder.parent / f"{folder.name}_labels.csv"
    with open(labels, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=["slide_id", "label"])
        w.writeheader()
        w.writerows(rows)
    return labels


@pytest.fixture
def feature_files():
    """``(write_features, write_dataset)``: write one slide's feature file / a labelled folder of them."""
    return write_features, write_dataset
