"""The distribution of the gradient agreements d_k = g_S . g_k of every weight update.

Each update gives one ``d (P,)`` over its pool; ``dot_quantiles`` reduces it to the
numbers logged as ``train/dot_*`` (epoch means of the per-update values) and written
per update to ``gamma_dots.csv``. With the ``rough_wrong`` column known, the CSV
also has the mean d of the wrong and of the right rough masks.
"""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

QUANTILES = (0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0)


def dot_quantiles(d: np.ndarray) -> dict[str, float]:
    """``{"dot_q0": min, "dot_q10": ..., "dot_q100": max, "dot_mean", "dot_pos"}`` of ``d (P,)``;
    ``dot_pos`` is the fraction of d_k > 0 (images whose gradient agrees with the exact batch)."""
    d = np.asarray(d, np.float64)
    out = {f"dot_q{round(q * 100)}": float(np.quantile(d, q)) for q in QUANTILES}
    out["dot_mean"] = float(d.mean())
    out["dot_pos"] = float((d > 0).mean())
    return out


def write_dot_history(path: Path, dot_history: list[tuple[int, np.ndarray, np.ndarray]], wrong: np.ndarray | None) -> Path:
    """One row per update: ``step, n`` (pool size), the ``dot_quantiles`` and, when ``wrong`` (per rough image)
    is known, ``mean_wrong, mean_right`` (empty when the pool holds none of that kind)."""
    names = list(dot_quantiles(np.zeros(1)))
    extra = ["mean_wrong", "mean_right"] if wrong is not None else []
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["step", "n", *names, *extra])
        for step, index, d in dot_history:
            q = dot_quantiles(d)
            row = [step, len(d), *(f"{q[k]:.6g}" for k in names)]
            if wrong is not None:
                bad = wrong[index]
                row += [f"{d[bad].mean():.6g}" if bad.any() else "", f"{d[~bad].mean():.6g}" if (~bad).any() else ""]
            w.writerow(row)
    return path
