"""Validation scores of a student: per-class recall, balanced accuracy, and the Hungarian class matching
that scores a student trained without labels (its output indices are clusters, not classes)."""
from __future__ import annotations

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment


def confusion(pred: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``(C, C)`` int64 counts, ``[i, j]`` = images of true class ``j`` predicted as ``i``."""
    return torch.bincount(pred.long() * num_classes + labels.long(), minlength=num_classes**2).view(num_classes, num_classes)


def class_recalls(pred: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``(C,)`` float64 recall of every class (NaN for a class with no image in ``labels``)."""
    counts = confusion(pred, labels, num_classes).double()
    return counts.diagonal() / counts.sum(0)


def hungarian_matching(pred: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``(C,)`` int64 ``class_of[output]``: the one-to-one output → class map with the most correct images.

    Solved with ``scipy.optimize.linear_sum_assignment`` on the confusion
    matrix; ``class_of[pred]`` are then class predictions.
    """
    counts = confusion(pred, labels, num_classes).numpy()
    rows, cols = linear_sum_assignment(counts, maximize=True)
    class_of = np.empty(num_classes, dtype=np.int64)
    class_of[rows] = cols
    return torch.from_numpy(class_of)
