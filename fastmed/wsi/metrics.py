"""Binary metrics for slides and patches (NumPy; no scikit-learn needed)."""
from __future__ import annotations

import numpy as np


def roc_auc(y: np.ndarray, score: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U with mid-ranks for ties); NaN when one class is absent."""
    y = np.asarray(y).astype(bool).ravel()
    score = np.asarray(score, dtype=np.float64).ravel()
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    _, inverse, counts = np.unique(score, return_inverse=True, return_counts=True)
    ranks = (np.cumsum(counts) - (counts - 1) / 2)[inverse]  # 1-based mid-ranks (ties share the mean rank)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def binary_metrics(y: np.ndarray, prob: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
    """``auc``, ``acc`` and ``f1`` (of the positive class) at ``threshold``."""
    y = np.asarray(y).astype(bool).ravel()
    pred = np.asarray(prob).ravel() >= threshold
    tp = int((pred & y).sum())
    denom = int(pred.sum() + y.sum())
    return {
        "auc": roc_auc(y, prob),
        "acc": float((pred == y).mean()) if len(y) else float("nan"),
        "f1": 2 * tp / denom if denom else 0.0,
    }
