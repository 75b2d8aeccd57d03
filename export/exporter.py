"""``fastmed export``: one checkpoint → onnx | onnx-int8 | ort | tensorrt | aoti, each checked.

>>> from fastmed.export import export
>>> r = export("runs/polyp/train/weights/best.pt", "onnx-int8", calib="data/polyp/train", data="data/polyp/val")
>>> r.path, r.parity, r.int8.chosen.plan

Every format is validated at export time through a runtime that runs here
(ONNX Runtime; PyTorch's AOTInductor runtime for ``aoti``), on real images when a folder is given: probabilities are
compared with the PyTorch checkpoint and an fp32/fp16 export beyond
``parity_tol`` raises :class:`ParityError`. The int8 export is judged by its
accuracy change instead (see :mod:`fastmed.export.quantize`).
"""
from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fastmed.errors import ConfigError, FastmedError
from fastmed.export.evaluate import Parity, compare_probs, evaluate_folder
from fastmed.export.metadata import ModelMetadata, metadata_from_checkpoint
from fastmed.export.outputs import check_output_suffix, check_outputs
from fastmed.data.folders import format_skipped
from fastmed.data.images import list_images
from fastmed.export.preprocess import prepare_batch, random_images, read_images
from fastmed.export.quantize import MIN_AGREEMENT

FORMATS = ("onnx", "onnx-int8", "ort", "tensorrt", "aoti")
SUFFIXES = {"onnx": ".onnx", "onnx-int8": ".int8.onnx", "ort": ".ort", "tensorrt": ".engine", "aoti": ".pt2"}
PARITY_TOL = {"fp32": 1e-4, "fp16": 1e-2}  # max abs difference of probabilities


class ParityError(FastmedError):
    """An export whose outputs differ from PyTorch beyond the tolerance."""


@dataclass
class ExportResult:
    """What ``export`` wrote and how it checked."""

    format: str
    path: Path
    size_bytes: int
    seconds: float
    parity: dict[str, float] = field(default_factory=dict)  # vs PyTorch, see evaluate.Parity
    parity_images: str = ""                                  # where the parity images came from
    int8: Any = None                                         # quantize.Int8Result for onnx-int8
    files: list[Path] = field(default_factory=list)         # every file written (sidecars, configs)

    def as_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in d.items()} | {"files": [str(p) for p in self.files]}


@dataclass
class _Source:
    """The loaded checkpoint, its metadata and the images used for checks."""

    model: Any
    meta: ModelMetadata
    check_images: list[np.ndarray]
    check_from: str


def default_output(weights: str | os.PathLike, fmt: str) -> Path:
    """``best.pt`` → ``best.onnx`` / ``best.int8.onnx`` / ``best.ort`` / ``best.engine`` / ``best.pt2``."""
    w = Path(weights)
    return w.with_name(w.stem + SUFFIXES[fmt])


def _fp32_path(int8_onnx: Path) -> Path:
    """``m.int8.onnx`` → ``m.fp32.onnx``: the graph an int8 export quantizes."""
    return int8_onnx.with_name(int8_onnx.name.removesuffix(".onnx").removesuffix(".int8") + ".fp32.onnx")


@dataclass
class _Plan:
    """Every file exporting one format to ``out`` writes (checked by ``outputs.check_outputs`` first)."""

    out: Path
    graph: Path | None = None      # the ONNX graph a non-onnx format is built from (ort, tensorrt)
    fp32: Path | None = None       # the fp32 graph an int8 export quantizes (None with --from-onnx)
    companions: list[Path] = field(default_factory=list)  # sidecar, operator config, timing cache

    @property
    def models(self) -> list[Path]:
        return [p for p in (self.out, self.graph, self.fp32) if p is not None]


def _plan(fmt: str, out: Path, precision: str, from_onnx, timing_cache) -> _Plan:
    from fastmed.export.metadata import sidecar_path
    from fastmed.export.ort_format import OPS_CONFIG

    if fmt in ("onnx", "aoti"):
        return _Plan(out)
    if fmt == "ort":
        return _Plan(out, out.with_suffix(".onnx"), None, [sidecar_path(out), out.with_name(f"{out.stem}.{OPS_CONFIG}")])
    int8 = fmt == "onnx-int8" or precision == "int8"
    graph = None if fmt == "onnx-int8" else out.with_suffix(f".{precision}.onnx")
    fp32 = _fp32_path(graph or out) if int8 and not from_onnx else None
    if fmt == "onnx-int8":
        return _Plan(out, None, fp32)
    cache = Path(timing_cache) if timing_cache else out.with_name(out.name + ".timing.cache")
    return _Plan(out, graph, fp32, [sidecar_path(out), cache])


def _load_source(weights: str | os.PathLike, data: str | None, calib: str | None, n_check: int, seed: int) -> _Source:
    from fastmed.engine.checkpoint import load_model

    from fastmed.export.mask_head import deployable

    model, ckpt = load_model(weights)
    meta = metadata_from_checkpoint(ckpt, weights)
    model = deployable(model, meta.kind)  # a segmenter exports its mask logits only
    for folder in (data, calib):
        if folder:
            images, skipped = read_images(_spread(list_images(folder), n_check), meta.input_size)
            if skipped:
                print("[export] parity images: " + format_skipped(skipped))
            if images:
                return _Source(model, meta, images, f"{len(images)} images from {folder}")
    return _Source(model, meta, random_images(n_check, meta.input_size, seed), f"{n_check} random images (no --data/--calib)")


def _spread(files: list[Path], n: int) -> list[Path]:
    """``n`` files spread evenly over a sorted list (so every class folder contributes)."""
    if len(files) <= n:
        return files
    return [files[i] for i in np.linspace(0, len(files) - 1, n).round().astype(int)]


def torch_probs(model, meta: ModelMetadata, images: list[np.ndarray]) -> np.ndarray:
    """Reference probabilities of the PyTorch model (CPU, fp32): ``(N, C)``, or ``(N, C, H, W)`` for a segmenter."""
    import torch

    from fastmed.export.segmenter import output_probs

    with torch.inference_mode():
        return output_probs(model(torch.from_numpy(prepare_batch(images, meta))).numpy(), meta.kind)


def check_parity(src: _Source, artifact: str | os.PathLike, tol: float | None) -> Parity:
    """Compare ``artifact`` (run by ONNX Runtime) with PyTorch; raise ``ParityError`` beyond ``tol``."""
    from fastmed.export.predictor import Predictor

    ref = torch_probs(src.model, src.meta, src.check_images)
    parity = compare_probs(ref, Predictor(artifact, device="cpu").predict(src.check_images))
    print(f"[export] parity {Path(artifact).name} vs PyTorch on {src.check_from}: max |Δprob| = "
          f"{parity.max_abs_prob_diff:.2e}, top-1 agreement {parity.top1_agreement:.3f}")
    if tol is not None and not parity.max_abs_prob_diff <= tol:
        raise ParityError(f"{artifact}: max |Δprob| {parity.max_abs_prob_diff:.3e} vs PyTorch exceeds tolerance {tol:g}; "
                          "the export is wrong (try --exporter torchscript, another --opset, or report a bug)")
    return parity


def export(
    weights: str | os.PathLike,
    format: str = "onnx",
    out: str | os.PathLike | None = None,
    *,
    calib: str | None = None,
    data: str | None = None,
    opset: int | None = None,
    fixed_batch: int | None = None,
    max_batch: int = 64,
    uint8_input: bool = False,
    exporter: str = "dynamo",
    parity_tol: float | None = None,
    per_channel: bool = True,
    max_drop: float = 1.0,
    min_agreement: float = MIN_AGREEMENT,
    calib_images: int = 128,
    precision: str = "fp16",
    workspace_gb: float = 2.0,
    timing_cache: str | None = None,
    from_onnx: str | os.PathLike | None = None,
    device: str = "auto",
    seed: int = 0,
) -> ExportResult:
    """Export a fastmed classifier or segmenter checkpoint (see ``fastmed export --help`` for every argument).

    ``data``: a labelled class folder for parity images and (int8) the
    accuracy change; ``calib``: images for int8 calibration (required for
    ``onnx-int8`` and TensorRT int8); ``from_onnx``: an fp32 ONNX file already
    exported from these weights, quantized instead of exporting again (int8). ``parity_tol`` defaults to 1e-4 (fp32)
    / 1e-2 (fp16) in probability. ``device`` (``aoti`` only): what AOTInductor compiles for (``auto``: CUDA when present).
    int8 must pass the gate of :mod:`fastmed.export.quantize` (``max_drop`` points, top-1 agreement with
    fp32 >= ``min_agreement``) or the export raises ``Int8GateError``.
    """
    if format not in FORMATS:
        raise ConfigError(f"format must be one of {', '.join(FORMATS)}, got {format!r}")
    if format == "tensorrt":
        from fastmed.export.tensorrt_build import check_build_args, require_tensorrt

        check_build_args(precision, fixed_batch or 1, max_batch, workspace_gb)
        require_tensorrt()
    int8 = format == "onnx-int8" or (format == "tensorrt" and precision == "int8")
    if int8 and not calib:
        raise ConfigError(f"format {format} (int8) needs --calib DIR: images to calibrate activation ranges on")
    out = Path(out) if out else default_output(weights, format)
    check_output_suffix(format, out)
    plan = _plan(format, out, precision, from_onnx, timing_cache)
    check_outputs([Path(weights), Path(from_onnx) if from_onnx else None], plan.models, plan.companions)
    t0 = time.perf_counter()
    src = _load_source(weights, data, calib, n_check=32, seed=seed)
    if int8 and src.meta.kind != "classifier":
        raise ConfigError(f"{weights}: int8 export is gated on class agreement and supports classifiers; "
                          f"export this {src.meta.kind} as onnx, ort, aoti or a TensorRT fp16/fp32 engine")
    onnx_kw = dict(opset=opset, fixed_batch=fixed_batch, max_batch=max_batch, exporter=exporter)
    files: list[Path] = []
    result_int8 = None
    if format == "onnx":
        from fastmed.export.onnx_export import export_onnx

        export_onnx(src.model, src.meta, out, uint8_input=uint8_input, **onnx_kw)
        parity = check_parity(src, out, PARITY_TOL["fp32"] if parity_tol is None else parity_tol)
    elif format == "aoti":
        from fastmed.engine.device import select_device
        from fastmed.export.aoti_export import export_aoti

        export_aoti(src.model, src.meta, out, max_batch=max_batch, device=str(select_device(device)))
        parity = check_parity(src, out, PARITY_TOL["fp32"] if parity_tol is None else parity_tol)
    elif int8:
        onnx_out = plan.graph or out
        result_int8, parity = _export_int8(src, onnx_out, calib, data, calib_images, per_channel, max_drop,
                                           min_agreement, uint8_input, onnx_kw, from_onnx)
        files += [result_int8.fp32_path] + ([onnx_out] if format == "tensorrt" else [])
    elif format == "ort":
        from fastmed.export.onnx_export import export_onnx
        from fastmed.export.ort_format import convert_to_ort

        fp32 = export_onnx(src.model, src.meta, plan.graph, uint8_input=uint8_input, **onnx_kw)
        files += [fp32, *convert_to_ort(fp32, out, src.meta)[1:]]
        parity = check_parity(src, out, PARITY_TOL["fp32"] if parity_tol is None else parity_tol)
    else:
        from fastmed.export.tensorrt_build import prepare_tensorrt_onnx

        onnx_in = prepare_tensorrt_onnx(src.model, src.meta, plan.graph, precision, **onnx_kw)
        parity = check_parity(src, onnx_in, PARITY_TOL.get(precision) if parity_tol is None else parity_tol)
        files.append(onnx_in)
    if format == "tensorrt":
        from fastmed.export.tensorrt_build import build_engine

        from fastmed.export.metadata import read_onnx_metadata

        src_onnx = files[-1]
        files += build_engine(src_onnx, out, read_onnx_metadata(src_onnx), min_batch=fixed_batch or 1, opt_batch=fixed_batch or 1,
                              max_batch=fixed_batch or max_batch, workspace_gb=workspace_gb, timing_cache=timing_cache)
    secs = time.perf_counter() - t0
    res = ExportResult(format, out, out.stat().st_size, secs, parity.as_dict(), src.check_from, result_int8, [out, *files])
    print(f"[export] {format}: {out} ({out.stat().st_size / 1e6:.2f} MB) in {secs:.1f} s")
    return res


def _export_int8(src: _Source, out: Path, calib: str, data: str | None, n_calib: int, per_channel: bool,
                 max_drop: float, min_agreement: float, uint8_input: bool, onnx_kw: dict,
                 from_onnx: str | os.PathLike | None) -> tuple[Any, Parity]:
    """fp32 ONNX → QDQ int8 through the gated fallback chain; returns (Int8Result, parity vs PyTorch).

    The gate is judged on images calibration never saw: ``data`` when given,
    else the ``calib`` images left out of calibration (see :func:`_calib_split`).
    """
    from fastmed.export.onnx_export import export_onnx
    from fastmed.export.predictor import Predictor
    from fastmed.export.quantize import quantize_with_fallback

    if from_onnx:  # exported (and parity-checked) by the caller
        fp32 = Path(from_onnx)
    else:
        fp32 = export_onnx(src.model, src.meta, _fp32_path(out), uint8_input=uint8_input, **onnx_kw)
        check_parity(src, fp32, PARITY_TOL["fp32"])
    calib_files, held_files = _calib_split(list_images(calib), n_calib)
    calib_imgs, skipped = read_images(calib_files, src.meta.input_size)
    if skipped:
        print("[export] --calib: " + format_skipped(skipped))
    if not calib_imgs:
        raise FastmedError(f"--calib {calib}: no readable images")
    print(f"[export] calibrating int8 on {len(calib_imgs)} images from {calib}")
    fp32_pred = Predictor(fp32, device="cpu")
    if data:
        ref = evaluate_folder(fp32_pred, data)
        measure = f"accuracy and agreement on {data} ({ref.n} images)"

        def score(path: Path) -> tuple[float, float, float | None]:
            ev = evaluate_folder(Predictor(path, device="cpu"), data)
            return 100 * (ref.accuracy - ev.accuracy), compare_probs(ref.probs, ev.probs).top1_agreement, ev.accuracy
    else:
        held, _ = read_images(held_files, src.meta.input_size)
        if not held:
            raise FastmedError(f"--calib {calib}: too few readable images to hold some out for the int8 agreement "
                               "check; give a labelled --data folder")
        ref_probs = fp32_pred.predict(held)
        ref = None
        measure = f"top-1 agreement with fp32 on {len(held)} --calib images held out from calibration (no --data)"

        def score(path: Path) -> tuple[float, float, float | None]:
            agree = compare_probs(ref_probs, Predictor(path, device="cpu").predict(held)).top1_agreement
            return 100 * (1 - agree), agree, None
    result = quantize_with_fallback(fp32, out, calib_imgs, fp32_pred.meta, score, max_drop=max_drop,
                                    min_agreement=min_agreement, per_channel=per_channel, measure=measure)
    result.fp32_accuracy = ref.accuracy if ref else None
    result.fp32_path = fp32
    parity = check_parity(src, out, tol=None)
    return result, parity


def _calib_split(files: list[Path], n_calib: int, n_held: int = 128) -> tuple[list[Path], list[Path]]:
    """``(calibration files, held-out files)`` from one folder's sorted images.

    ``n_calib`` files spread over the folder calibrate; up to ``n_held`` of the
    rest are held out for the agreement gate. A folder of at most ``n_calib``
    files gives every fourth file to the held-out set instead.
    """
    if len(files) <= n_calib:
        return [f for i, f in enumerate(files) if i % 4 != 3], files[3::4]
    chosen = _spread(files, n_calib)
    taken = set(chosen)
    return chosen, _spread([f for f in files if f not in taken], n_held)
