"""One predictor for every artifact fastmed writes.

>>> from fastmed.export import Predictor
>>> p = Predictor("runs/export/student.onnx")      # or best.pt, or student.engine
>>> probs = p.predict(["a.png", "b.png"])          # (2, C) numpy float32
>>> p.class_names[probs.argmax(1)[0]]

A segmenter (``kind="segmenter"``, the ``seg`` U-Nets) gives mask
probabilities ``(N, K, H, W)`` at the model's input size instead (see
:mod:`fastmed.export.segmenter`). Preprocessing (resize, channel order,
normalization, layout) comes from the artifact's metadata, so a ``.pt`` checkpoint and its exports give the same
probabilities for the same images up to numerical precision.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from fastmed.errors import FastmedError
from fastmed.export.metadata import EXPORTABLE_KINDS, ModelMetadata
from fastmed.export.preprocess import ImageLike, prepare_batch, to_rgb_uint8
from fastmed.export.runtimes import check_output_classes, open_backend


class Predictor:
    """Class probabilities from a ``.pt`` checkpoint, an ``.onnx``/``.ort`` file, a ``.pt2`` (AOTInductor) package or a TensorRT engine.

    ``device``: ``auto | cpu | cuda`` (TensorRT always runs on CUDA);
    ``threads``: ONNX Runtime intra-op threads (0 = its default).
    """

    def __init__(self, path: str | os.PathLike, device: str = "auto", threads: int = 0):
        self.path = str(path)
        self.backend = open_backend(path, device=device, threads=threads)
        self.meta: ModelMetadata = self.backend.meta
        if self.meta.kind not in EXPORTABLE_KINDS:
            raise FastmedError(f"{path}: Predictor handles classifiers and segmenters; "
                               f"this model is kind={self.meta.kind!r}")

    @property
    def class_names(self) -> list[str]:
        return self.meta.class_names

    @property
    def runtime(self) -> str:
        return self.backend.name

    def preprocess(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """``(H, W, 3)`` uint8 RGB images → the model's input batch."""
        return prepare_batch(images, self.meta)

    def infer(self, batch: np.ndarray) -> np.ndarray:
        """Prepared batch → ``(N, C)`` probabilities, or ``(N, C, H, W)`` for a segmenter (the compute-only step)."""
        from fastmed.export.segmenter import output_probs

        logits = self.backend.run(batch)
        if logits.ndim != (4 if self.meta.kind == "segmenter" else 2) or logits.shape[1] != len(self.class_names):
            check_output_classes(self.path, logits.shape, self.meta)
        return output_probs(logits, self.meta.kind)

    def predict(self, images: ImageLike | Iterable[ImageLike], batch_size: int = 32) -> np.ndarray:
        """Probabilities ``(N, C)`` (segmenters: ``(N, C, H, W)``) for images given as paths, ``(H, W, 3)`` / ``(N, H, W, 3)`` uint8 arrays or PIL images."""
        if batch_size < 1:
            raise FastmedError(f"batch_size must be >= 1, got {batch_size}")
        items = _as_list(images)
        if not items:
            raise FastmedError("predict() got no images")
        out = []
        for start in range(0, len(items), batch_size):
            chunk = [to_rgb_uint8(x, self.meta.input_size) for x in items[start:start + batch_size]]  # model size, one at a time
            out.append(self.infer(self.preprocess(chunk)))
        return np.concatenate(out)

    def predict_files(self, paths: Sequence[str | os.PathLike], batch_size: int = 32, chunk: int = 512
                      ) -> tuple[list[Path], np.ndarray, list[tuple[Path, str]]]:
        """Probabilities for image files, read ``chunk`` at a time at model size (bounded memory).

        Returns ``(paths read, (N, C) probabilities, skipped (path, reason))``:
        an unreadable image is skipped and reported, never fatal.
        """
        from fastmed.export.preprocess import read_images

        done: list[Path] = []
        probs: list[np.ndarray] = []
        skipped: list[tuple[Path, str]] = []
        for start in range(0, len(paths), chunk):
            part = [Path(p) for p in paths[start:start + chunk]]
            images, bad = read_images(part, self.meta.input_size)
            skipped += bad
            if images:
                bad_paths = {p for p, _ in bad}
                done += [p for p in part if p not in bad_paths]
                probs.append(self.predict(images, batch_size=batch_size))
        empty = (0, len(self.class_names), *(self.meta.input_size if self.meta.kind == "segmenter" else ()))
        return done, (np.concatenate(probs) if probs else np.zeros(empty, np.float32)), skipped


def _as_list(images) -> list:
    if isinstance(images, (str, os.PathLike)):
        return [images]
    if isinstance(images, np.ndarray):
        if images.ndim == 4:
            return list(images)
        return [images]
    if hasattr(images, "convert"):  # a single PIL image
        return [images]
    return list(images)
