"""Classification metrics on integer labels, and the one ROC AUC of the package (NumPy; no scikit-learn needed)."""
from __future__ import annotations

import numpy as np


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """``(C, C)`` counts; rows are true classes, columns predicted classes."""
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (np.asarray(y_true, int), np.asarray(y_pred, int)), 1)
    return cm


def macro_f1(cm: np.ndarray) -> float:
    """Unweighted mean of per-class F1 over classes that occur in truth or prediction."""
    tp = np.diag(cm).astype(float)
    support = cm.sum(1) + cm.sum(0)
    f1 = np.divide(2 * tp, support, out=np.zeros_like(tp), where=support > 0)
    present = support > 0
    return float(f1[present].mean()) if present.any() else 0.0


def accuracy(cm: np.ndarray) -> float:
    """Fraction of correct predictions (0 when there are none)."""
    total = cm.sum()
    return float(np.trace(cm) / total) if total else 0.0


def roc_auc(y: np.ndarray, score: np.ndarray) -> float:
    """Area under the ROC curve of ``score (n,)`` for the binary labels ``y (n,)`` (nonzero = positive).

    Mann-Whitney U: the probability that a random positive scores above a
    random negative, ties counting one half (mid-ranks). NaN when ``y`` has
    only one class (the AUC is undefined then).
    """
    y = np.asarray(y).astype(bool).ravel()
    score = np.asarray(score, dtype=np.float64).ravel()
    if len(y) != len(score):
        raise ValueError(f"roc_auc: {len(y)} labels but {len(score)} scores")
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    _, inverse, counts = np.unique(score, return_inverse=True, return_counts=True)
    ranks = (np.cumsum(counts) - (counts - 1) / 2)[inverse]  # 1-based mid-ranks (ties share the mean rank)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))
