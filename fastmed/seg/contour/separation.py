"""Do predicted instances separate touching objects? (the object-separation error of the contour evidence)

A touching pair ``(a, b)`` of exact instances is *separated* when two
different predicted instances each cover one of them with IoU >= ``min_iou``
(0.5: one instance covering both equal halves has IoU 0.5 with each, and is
not two instances). The separation error of a set of images is the fraction
of their touching pairs that are not separated. Predicted instances come from
the object slots (``objects.slot_instances``) or, for a model with only a
union mask, from its connected components (``mask_components``), or from the
mask cut along the ridges of the predicted fused correlation map
(``ridge_split``: the most a single fused map can give).
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

from fastmed.kernels import distance_transform_edt_batch


def mask_components(mask: np.ndarray) -> np.ndarray:
    """``(H, W)`` int labels of the 4-connected components of a bool mask (0 = background)."""
    labels, _ = ndimage.label(np.asarray(mask, dtype=bool))
    return labels


def ridge_split(mask: np.ndarray, corr: np.ndarray, threshold: float = 0.7) -> np.ndarray:
    """``(H, W)`` int instances of a bool ``mask`` cut along the ridges of a fused correlation map ``corr (H, W)``.

    Seeds are the 4-connected components of ``mask & (corr < threshold)`` (object interiors, away from
    every contour); every other mask pixel joins its nearest seed (exact Euclidean feature transform).
    Without a seed: the components of the mask.
    """
    mask = np.asarray(mask, dtype=bool)
    seeds = mask_components(mask & (np.asarray(corr) < threshold))
    if not seeds.any():
        return mask_components(mask)
    _, nearest = distance_transform_edt_batch((seeds == 0)[None], return_indices=True)
    return np.where(mask, seeds[nearest[0, 0], nearest[0, 1]], 0)


def best_iou(pred: np.ndarray, obj: np.ndarray) -> tuple[int, float]:
    """The predicted label (> 0) of highest IoU with bool ``obj`` and that IoU (``(0, 0.0)`` if none overlaps)."""
    labels, counts = np.unique(pred[obj], return_counts=True)
    best, best_iou_value = 0, 0.0
    for lab, inter in zip(labels, counts):
        if lab == 0:
            continue
        iou = inter / float(np.sum(obj) + np.sum(pred == lab) - inter)
        if iou > best_iou_value:
            best, best_iou_value = int(lab), float(iou)
    return best, best_iou_value


def pair_separated(pred: np.ndarray, instances: np.ndarray, a: int, b: int, min_iou: float = 0.5) -> bool:
    """Whether predicted labels ``pred (H, W)`` separate objects ``a`` and ``b`` of ``instances (H, W)``."""
    (la, ia), (lb, ib) = best_iou(pred, instances == a), best_iou(pred, instances == b)
    return ia >= min_iou and ib >= min_iou and la != lb


def separation_error(preds: list[np.ndarray], instances: list[np.ndarray], pairs: list[tuple[int, int]], min_iou: float = 0.5) -> float:
    """Fraction of the touching ``pairs`` (one per image, object ids in ``instances``) that ``preds`` do not separate."""
    if not pairs:
        return float("nan")
    ok = [pair_separated(p, inst, a, b, min_iou) for p, inst, (a, b) in zip(preds, instances, pairs)]
    return 1.0 - float(np.mean(ok))
