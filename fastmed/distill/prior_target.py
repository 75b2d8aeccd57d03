"""The target distribution ``π`` a user gives the prior (``--prior-target``; see ``fastmed.distill.mi_loss``)."""
from __future__ import annotations

from typing import Sequence

import torch

from fastmed.errors import ConfigError

TARGETS = ("none", "balanced", "weak")


def target_distribution(kind: str, num_classes: int, weak: Sequence[int], weak_boost: float) -> torch.Tensor | None:
    """``π`` as a ``(C,)`` float32 distribution, or ``None`` for ``kind="none"``.

    ``"balanced"``: ``π_i = 1/C``. ``"weak"``: the classes ``weak`` get
    ``weak_boost`` times the mass of every other class,
    ``π_i ∝ weak_boost if i ∈ weak else 1``.
    """
    if kind not in TARGETS:
        raise ConfigError(f"option --prior-target must be one of {', '.join(TARGETS)}, got {kind!r}")
    if kind == "none":
        return None
    weights = torch.ones(num_classes)
    if kind == "weak":
        if not weak:
            raise ConfigError("--prior-target weak needs --weak-classes (the classes the prior should favour)")
        if weak_boost <= 0:
            raise ConfigError(f"option --weak-boost must be > 0, got {weak_boost}")
        weights[list(weak)] = float(weak_boost)
    return weights / weights.sum()
