"""Accuracy on a labelled class folder (Dice for segmenters), agreement and parity between two models."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fastmed.errors import FastmedError


@dataclass
class FolderEval:
    """Predictions on ``DIR/<class>/<image>``: accuracy (0-1) and the ``(N, C)`` probabilities."""

    accuracy: float
    n: int
    labels: np.ndarray
    probs: np.ndarray
    skipped: list[tuple[Path, str]] = field(default_factory=list)


def evaluate_folder(predictor, folder: str | os.PathLike, batch_size: int = 32) -> FolderEval:
    """Top-1 accuracy of ``predictor`` on a class-folder tree whose classes are the model's.

    Unreadable images are skipped and listed in ``skipped``.
    """
    from fastmed.data.folders import scan_class_folders
    from fastmed.export.preprocess import read_images

    scan = scan_class_folders(folder, class_names=predictor.class_names)
    images, bad = read_images([p for p, _ in scan.samples], predictor.meta.input_size)
    labels = np.asarray([y for p, y in scan.samples if p not in {b for b, _ in bad}])
    if not images:
        raise FastmedError(f"no readable labelled images under {folder}")
    probs = predictor.predict(images, batch_size=batch_size)
    return FolderEval(float((probs.argmax(1) == labels).mean()), len(labels), labels, probs, scan.skipped + bad)


def quality(predictor, data: str | os.PathLike) -> float:
    """Accuracy (0-1) on a class folder for a classifier; mean Dice on a split with ``images/`` + ``masks/`` for a segmenter."""
    if predictor.meta.kind == "segmenter":
        from fastmed.export.segmenter import evaluate_masks

        return evaluate_masks(predictor, data).dice
    return evaluate_folder(predictor, data).accuracy


@dataclass
class Parity:
    """How closely two models' probabilities agree on the same images."""

    max_abs_prob_diff: float
    top1_agreement: float  # fraction of images with the same arg-max
    n: int

    def as_dict(self) -> dict[str, float]:
        return {"max_abs_prob_diff": self.max_abs_prob_diff, "top1_agreement": self.top1_agreement, "n": self.n}


def compare_probs(reference: np.ndarray, other: np.ndarray) -> Parity:
    """Parity of two ``(N, C)`` class or ``(N, K, H, W)`` mask probability arrays.

    For masks, ``top1_agreement`` is the fraction of pixels given the same label (``segmenter.mask_labels``).
    """
    if reference.shape != other.shape:
        raise FastmedError(f"probability shapes differ: {reference.shape} vs {other.shape}")
    if reference.ndim == 4:
        from fastmed.export.segmenter import mask_labels

        agree = float((mask_labels(reference) == mask_labels(other)).mean())
    else:
        agree = float((reference.argmax(1) == other.argmax(1)).mean())
    return Parity(float(np.abs(reference - other).max()), agree, len(reference))
