"""Synthetic polyp classification set in the class-folder layout.

``OUT/{train,val,test,test_shift}/{adenoma,hyperplastic,normal}/<i>.png``.
The class is decided by visual structure: *normal* has no lesion,
*hyperplastic* a small smooth pale lesion, *adenoma* a larger lobulated, red,
pit-patterned one. ``test_shift`` draws new images under an illumination and
colour shift of strength ``shift`` to measure generalization.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from fastmed.data.images import write_png
from fastmed.data.synthetic.endoscopy import finish, mucosa, paint_lesion, random_lesion

CLASSES = ("adenoma", "hyperplastic", "normal")


def render_polyp_image(rng: np.random.Generator, cls: str, size: int, shift: float = 0.0) -> np.ndarray:
    """One ``(size, size, 3)`` uint8 image of class ``cls``."""
    img = mucosa(rng, size)
    if cls != "normal":
        paint_lesion(rng, img, random_lesion(rng, size, cls))
    return finish(rng, img, shift)


def make_polyp_dataset(out: str | os.PathLike, per_class: dict[str, int], seed: int = 0, size: int = 64, shift: float = 1.0) -> Path:
    """Write the splits; ``per_class`` maps split name → images per class.

    Every split has its own seed stream, so changing one split's size does
    not change the others.
    """
    out = Path(out)
    for s_idx, (split, n) in enumerate(sorted(per_class.items())):
        rng = np.random.default_rng([seed, 1, s_idx])
        split_shift = shift if split == "test_shift" else 0.0
        for cls in CLASSES:
            for i in range(n):
                write_png(out / split / cls / f"{cls}_{i:04d}.png", render_polyp_image(rng, cls, size, split_shift))
    return out
