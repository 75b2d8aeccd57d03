"""Segmenters on the deployment path: one mask tensor out, probabilities, Dice, mask files.

A fastmed segmenter checkpoint (``kind="segmenter"``, the ``seg`` U-Nets) is
exported through :class:`~fastmed.export.mask_head.MaskHead`, so every artifact has one output, the mask
logits ``(N, K, H, W)`` at the model's input size (the contour method's
two-head U-Net ships its mask head; the correlation head is a training aid).
:func:`mask_probs` turns them into what :class:`~fastmed.export.predictor.Predictor`
returns: ``(N, K, H, W)`` probabilities, a sigmoid for ``K = 1`` (the binary
U-Nets), a softmax over ``K`` otherwise.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fastmed.errors import DataError, FastmedError

THRESHOLD = 0.5  # a pixel is object when its probability exceeds this (binary masks)


def output_probs(logits: np.ndarray, kind: str) -> np.ndarray:
    """An artifact's logits → probabilities: ``(N, C)`` softmax (classifier) or :func:`mask_probs` (segmenter)."""
    from fastmed.export.preprocess import softmax

    return mask_probs(logits) if kind == "segmenter" else softmax(logits)


def mask_probs(logits: np.ndarray) -> np.ndarray:
    """``(N, K, H, W)`` mask logits → float32 probabilities: sigmoid when ``K = 1``, softmax over ``K`` otherwise."""
    z = logits.astype(np.float64)
    if z.shape[1] == 1:
        return (1.0 / (1.0 + np.exp(-z))).astype(np.float32)
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


def mask_labels(probs: np.ndarray) -> np.ndarray:
    """``(N, K, H, W)`` probabilities → ``(N, H, W)`` uint8 masks (``> THRESHOLD`` for K = 1, else the argmax class)."""
    if probs.shape[1] == 1:
        return (probs[:, 0] > THRESHOLD).astype(np.uint8)
    return probs.argmax(1).astype(np.uint8)


@dataclass
class MaskEval:
    """Mean Dice of a segmenter on ``n`` images of a split folder with masks, and its ``(N, K, H, W)`` probabilities."""

    dice: float
    n: int
    probs: np.ndarray


def evaluate_masks(predictor, folder: str | os.PathLike, batch_size: int = 16) -> MaskEval:
    """Mean Dice against ``folder/masks`` of a split in the Kvasir-SEG layout (``images/`` + ``masks/``).

    Images without a mask are left out; unreadable ones are skipped by the scan.
    """
    from fastmed.seg.data import load_binary_mask, load_rgb, scan_seg_split
    from fastmed.seg.metrics import segmentation_metrics

    h, w = predictor.meta.input_size
    if h != w:
        raise FastmedError(f"{predictor.path}: Dice evaluation needs a square input size, got {h}x{w}")
    items = [it for it in scan_seg_split(folder).items if it.mask is not None]
    if not items:
        raise DataError(f"--data {folder}: no image has a mask in {Path(folder) / 'masks'}")
    images = [load_rgb(it.image, h) for it in items]
    masks = np.stack([load_binary_mask(it.mask, h) for it in items])
    probs = predictor.predict(images, batch_size=batch_size)
    return MaskEval(segmentation_metrics(mask_labels(probs), masks, with_hd95=False)["dice"], len(items), probs)


def write_mask_predictions(predictor, files: list[Path], run: Path, batch_size: int = 16
                           ) -> tuple[list[dict], list[tuple[Path, str]]]:
    """Masks and overlays of a segmenter for image ``files``, written under ``run``.

    ``run/masks/<stem>.png``: 0/255 (class indices when K > 1) at the image's
    own size (probabilities resized bilinearly, then thresholded);
    ``run/overlays/<stem>.png``: the image with the mask tinted and outlined.
    Returns ``(rows {path, foreground_fraction}, skipped (path, reason))``;
    an unreadable image is skipped, never fatal.
    """
    from PIL import Image

    from fastmed.data.images import read_image, write_png
    from fastmed.seg.predict import overlay_mask

    rows, skipped, taken = [], [], set()
    for start in range(0, len(files), batch_size):
        originals = []
        for p in files[start:start + batch_size]:
            try:
                originals.append((Path(p), read_image(p)))
            except FastmedError as exc:
                skipped.append((Path(p), str(exc)))
        if not originals:
            continue
        probs = predictor.predict([img for _, img in originals])
        for (path, img), prob in zip(originals, probs):
            h, w = img.shape[:2]
            full = np.stack([np.asarray(Image.fromarray(c).resize((w, h), Image.BILINEAR)) for c in prob])
            mask = mask_labels(full[None])[0]
            stem = _unique_stem(path.stem, taken)
            write_png(run / "masks" / f"{stem}.png", mask * 255 if prob.shape[0] == 1 else mask)
            write_png(run / "overlays" / f"{stem}.png", overlay_mask(img, mask))
            rows.append({"path": str(path), "foreground_fraction": round(float((mask > 0).mean()), 5)})
    return rows, skipped


def _unique_stem(stem: str, taken: set[str]) -> str:
    """``stem``, or ``stem_2``, ``stem_3``... when two images of the source share a file stem."""
    name, i = stem, 1
    while name in taken:
        i += 1
        name = f"{stem}_{i}"
    taken.add(name)
    return name
