"""Binary metrics for slides and patches (NumPy; no scikit-learn needed)."""
from __future__ import annotations

import numpy as np

from fastmed.engine.metrics import roc_auc


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
