"""``fastmed bench`` on a deployed artifact alone: the file a user actually has, no checkpoint needed.

``fastmed bench --weights m.onnx`` (or ``.int8.onnx``, ``.ort``, ``.pt2``,
``.engine``) gives one row: file size, latency p50/p95/p99 at batch 1,
throughput at ``--batch``, and with ``--data`` accuracy (classifiers, a class
folder) or mean Dice (segmenters, a split with ``images/`` + ``masks/``).
``--reference best.pt`` adds parity (max |Δprob|) and top-1 (segmenters: pixel)
agreement with that checkpoint on the same images, and a status: validated
when the parity is within tolerance (int8: when the agreement reaches
``--min-agreement``).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from fastmed.errors import FastmedError
from fastmed.export.bench import VALIDATED, VALIDATION_FAILED, BenchResult, BenchRow, _time_rows, runtime_versions
from fastmed.export.evaluate import quality
from fastmed.export.runtimes import TENSORRT_SUFFIXES

MEASURED = "measured"  # status of a row with no reference to validate against
PARITY_TOL = {"fp32": 1e-4, "fp16": 1e-2}
_RUNTIMES = {"onnxruntime": "ONNX Runtime", "aoti": "AOTInductor", "tensorrt": "TensorRT"}


def bench_artifact(artifact: Path, *, reference: str | None, data: str | None, batch: int, warmup: int, iters: int,
                   min_agreement: float, threads: int, seed: int) -> BenchResult:
    """Time and check one exported model file (see the module docstring); ``threads``: CPU threads (0 = default)."""
    from fastmed.export.predictor import Predictor

    if not artifact.is_file():
        raise FastmedError(f"model file not found: {artifact}")
    device = "cuda" if artifact.suffix.lower() in TENSORRT_SUFFIXES else "cpu"
    pred = Predictor(artifact, device=device, threads=threads)
    meta = pred.meta
    row = BenchRow(name=f"{_RUNTIMES.get(pred.runtime, pred.runtime)} {meta.precision}", format=_format(artifact, meta),
                   status=MEASURED, file=str(artifact), size_mb=artifact.stat().st_size / 1e6)
    images, source = _images(meta, data, seed)
    if data:
        row.accuracy = quality(pred, data)
    if reference:
        _check_reference(row, pred, Predictor(reference, device="cpu"), images, min_agreement)
    _time_rows({row.name: (row, pred)}, images, batch, warmup, iters)
    settings = {"batch": batch, "warmup": warmup, "iters": iters, "threads": threads, "reference": reference,
                "min_agreement": min_agreement, "parity_images": source}
    return BenchResult(str(artifact), [row], runtime_versions(), settings, data)


def _format(artifact: Path, meta) -> str:
    """The row's format tag: ``onnx`` / ``onnx-int8`` / ``ort`` / ``aoti`` / ``tensorrt-<precision>``."""
    suffix = artifact.suffix.lower()
    if suffix in TENSORRT_SUFFIXES:
        return f"tensorrt-{meta.precision}"
    base = {".onnx": "onnx", ".ort": "ort", ".pt2": "aoti"}.get(suffix, suffix.lstrip("."))
    return f"{base}-int8" if meta.precision == "int8" else base


def _images(meta, data: str | None, seed: int, n: int = 32) -> tuple[list[np.ndarray], str]:
    """``n`` images at the model's size for parity and timing: from ``data`` when given, else random."""
    from fastmed.data.images import list_images
    from fastmed.export.exporter import _spread
    from fastmed.export.preprocess import random_images, read_images

    if data:
        folder = Path(data) / "images" if meta.kind == "segmenter" else Path(data)
        images, _ = read_images(_spread(list_images(folder), n), meta.input_size)
        if images:
            return images, f"{len(images)} images from {folder}"
    return random_images(n, meta.input_size, seed), f"{n} random images (no --data)"


def _check_reference(row: BenchRow, pred, ref, images: list[np.ndarray], min_agreement: float) -> None:
    """Parity and agreement of ``pred`` with the checkpoint ``ref``; sets the row's status."""
    from fastmed.export.evaluate import compare_probs

    if (ref.meta.kind, ref.class_names, ref.meta.input_size) != (pred.meta.kind, pred.class_names, pred.meta.input_size):
        raise FastmedError(f"--reference {ref.path} is a {ref.meta.kind} with classes {ref.class_names} at "
                           f"{ref.meta.input_size}, but {row.file} is a {pred.meta.kind} with classes "
                           f"{pred.class_names} at {pred.meta.input_size}: not the model it was exported from")
    parity = compare_probs(ref.predict(images), pred.predict(images))
    row.max_abs_prob_diff, row.top1_agreement = parity.max_abs_prob_diff, parity.top1_agreement
    if pred.meta.precision == "int8":
        ok, rule = parity.top1_agreement >= min_agreement, f"top-1 agreement >= {min_agreement:g}"
    else:
        tol = PARITY_TOL.get(pred.meta.precision, PARITY_TOL["fp16"])
        ok, rule = parity.max_abs_prob_diff <= tol, f"max |Δprob| <= {tol:g}"
    row.status = VALIDATED if ok else VALIDATION_FAILED
    notes = [f"vs {ref.path}: {'passes' if ok else 'fails'} {rule}"]
    if pred.meta.source_sha256 and pred.meta.source_sha256 != ref.meta.source_sha256:
        notes.append("its metadata names another source checkpoint (sha256 differs)")
    row.note = "; ".join(notes)


def reference_only_options(weights: str | os.PathLike, given: dict[str, object]) -> None:
    """Raise when options that only a ``.pt`` bench uses (export rows) are given with a bare artifact."""
    if Path(weights).suffix.lower() in (".pt", ".pth"):
        return
    used = [f"--{k.replace('_', '-')}" for k, v in given.items() if v]
    if used:
        raise FastmedError(f"{', '.join(used)} choose(s) the export rows of a .pt checkpoint; {weights} is benched "
                           "as it is (give --reference best.pt for parity)")
