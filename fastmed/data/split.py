"""The one train/validation split of the package: stratified by class, seeded."""
from __future__ import annotations

import random
from typing import Sequence


def stratified_split(labels: Sequence[int], val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """``(train indices, val indices)`` into ``labels (n,)``, drawn per class.

    Each class (in sorted order) is shuffled with ``random.Random(seed)`` and
    ``round(n_c * val_fraction)`` of its ``n_c`` items go to validation, but at
    least one when ``val_fraction > 0`` and never all: a class with two or more
    items has some in both parts; a class with one item stays in train.
    ``val_fraction = 0`` gives an empty validation part.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    rng = random.Random(seed)
    by_class: dict[int, list[int]] = {}
    for i, y in enumerate(labels):
        by_class.setdefault(y, []).append(i)
    train: list[int] = []
    val: list[int] = []
    for cls in sorted(by_class):
        items = by_class[cls]
        rng.shuffle(items)
        n = len(items)
        n_val = 0 if val_fraction == 0 or n < 2 else min(n - 1, max(1, round(n * val_fraction)))
        val += items[:n_val]
        train += items[n_val:]
    return train, val
