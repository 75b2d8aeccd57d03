"""ONNX Runtime static int8 quantization (QDQ), with a measured fallback.

One int8 artifact for ONNX Runtime and TensorRT: QDQ format, symmetric int8
activations and weights (zero point 0, what TensorRT's explicit quantization
accepts), per-channel weights, MinMax calibration on real images.

Per-channel static quantization is reported to break MobileNetV3 in ONNX
Runtime (onnxruntime issue 11415: the depthwise conv blocks). So the accuracy
drop against fp32 is measured and, when it exceeds ``max_drop`` points, the
next plan is tried (see :func:`plans`): percentile calibration (clips the rare
activation outliers that MinMax turns into a coarse int8 step; on our
MobileNetV3-small student MinMax lost 11 points, percentile none), then the
depthwise convolutions left in float, then per-tensor weights. The first plan
within the bound wins; when none is, the best one is kept and the result says so.
"""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from fastmed.errors import FastmedError
from fastmed.export.metadata import ModelMetadata, set_onnx_metadata
from fastmed.export.preprocess import prepare_batch


def _calibration_reader(images: Sequence[np.ndarray], meta: ModelMetadata, batch_size: int):
    from onnxruntime.quantization import CalibrationDataReader

    class ImageCalibrationReader(CalibrationDataReader):
        """Feeds prepared batches of the calibration images to the calibrator."""

        def __init__(self):
            self.batches = [prepare_batch(images[i:i + batch_size], meta) for i in range(0, len(images), batch_size)]
            self.pos = 0

        def get_next(self) -> dict | None:
            if self.pos >= len(self.batches):
                return None
            self.pos += 1
            return {meta.input_name: self.batches[self.pos - 1]}

        def __len__(self) -> int:
            return len(self.batches)

    return ImageCalibrationReader()


def depthwise_conv_nodes(onnx_path: str | os.PathLike) -> list[str]:
    """Names of the depthwise ``Conv`` nodes (``group`` == input channels > 1)."""
    import onnx

    model = onnx.load(str(onnx_path))
    shapes = {init.name: list(init.dims) for init in model.graph.initializer}
    names = []
    for node in model.graph.node:
        if node.op_type != "Conv":
            continue
        group = next((a.i for a in node.attribute if a.name == "group"), 1)
        w = shapes.get(node.input[1])
        if group > 1 and w is not None and w[1] == 1:  # weight (C_out, C_in / group = 1, kh, kw)
            names.append(node.name)
    return names


def quantize_qdq(
    fp32_path: str | os.PathLike,
    out: str | os.PathLike,
    calib_images: Sequence[np.ndarray],
    meta: ModelMetadata,
    *,
    per_channel: bool = True,
    exclude_nodes: Sequence[str] = (),
    calibration: str = "minmax",
    batch_size: int = 8,
) -> Path:
    """Quantize an fp32 ONNX classifier to QDQ int8 at ``out`` (metadata kept, precision ``int8``).

    The graph is first pre-processed (shape inference, BatchNorm folding) as
    ONNX Runtime recommends. ``calib_images`` are ``(H, W, 3)`` uint8 RGB.
    ``calibration``: ``"minmax"`` or ``"percentile"`` (99.999th percentile of |activation|).
    """
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if len(calib_images) == 0:
        raise FastmedError("int8 calibration needs images (--calib DIR)")
    methods = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile}
    if calibration not in methods:
        raise FastmedError(f"calibration must be one of {', '.join(methods)}, got {calibration!r}")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        pre = Path(tmp) / "preprocessed.onnx"
        quant_pre_process(str(fp32_path), str(pre), skip_symbolic_shape=True)
        quantize_static(
            str(pre), str(out), _calibration_reader(calib_images, meta, batch_size),
            quant_format=QuantFormat.QDQ, per_channel=per_channel, activation_type=QuantType.QInt8,
            weight_type=QuantType.QInt8, calibrate_method=methods[calibration],
            nodes_to_exclude=list(exclude_nodes) or None,
            extra_options={"ActivationSymmetric": True, "WeightSymmetric": True},
        )
    model = onnx.load(str(out))
    set_onnx_metadata(model, meta.replace(precision="int8"))
    onnx.checker.check_model(model)
    onnx.save(model, str(out))
    return out


@dataclass
class Int8Attempt:
    """One quantization plan and its measured accuracy change."""

    plan: str
    drop_points: float        # fp32 minus int8, in percentage points (accuracy or top-1 agreement)
    agreement: float          # top-1 agreement with fp32 on the evaluation images
    accuracy: float | None    # int8 accuracy on the labelled folder, when given
    within_bound: bool


@dataclass
class Int8Result:
    path: Path
    chosen: Int8Attempt
    attempts: list[Int8Attempt] = field(default_factory=list)
    fp32_accuracy: float | None = None
    measure: str = ""  # what drop_points measures
    fp32_path: Path | None = None  # the fp32 ONNX it was quantized from


def plans(fp32_path: str | os.PathLike, per_channel: bool) -> list[tuple[str, bool, list[str], str]]:
    """The quantization plans to try, in order: ``(label, per_channel, nodes left in float, calibration)``."""
    if not per_channel:
        return [("per-tensor", False, [], "minmax"), ("per-tensor, percentile", False, [], "percentile")]
    out = [("per-channel", True, [], "minmax"), ("per-channel, percentile", True, [], "percentile")]
    dw = depthwise_conv_nodes(fp32_path)
    if dw:
        out.append((f"per-channel, percentile, {len(dw)} depthwise convs in float", True, dw, "percentile"))
    out.append(("per-tensor, percentile", False, [], "percentile"))
    return out


def quantize_with_fallback(
    fp32_path: str | os.PathLike,
    out: str | os.PathLike,
    calib_images: Sequence[np.ndarray],
    meta: ModelMetadata,
    score: Callable[[Path], tuple[float, float, float | None]],
    *,
    max_drop: float = 1.0,
    per_channel: bool = True,
) -> Int8Result:
    """Try :func:`plans` until the measured drop is within ``max_drop`` points.

    ``score(int8_path) -> (drop_points, agreement, accuracy or None)``
    measures one candidate against fp32. The chosen model ends at ``out``.
    """
    out = Path(out)
    attempts: list[tuple[Int8Attempt, Path]] = []
    for i, (label, pc, exclude, calibration) in enumerate(plans(fp32_path, per_channel)):
        cand = out.with_name(f".{out.stem}.try{i}{out.suffix}")
        quantize_qdq(fp32_path, cand, calib_images, meta, per_channel=pc, exclude_nodes=exclude, calibration=calibration)
        drop, agree, acc = score(cand)
        attempt = Int8Attempt(label, drop, agree, acc, drop <= max_drop)
        attempts.append((attempt, cand))
        print(f"[export] int8 {label}: drop {drop:+.2f} points vs fp32 (negative: int8 did better), agreement {agree:.3f}"
              + ("" if attempt.within_bound else f"  (> {max_drop} bound)"))
        if attempt.within_bound:
            break
    best, best_path = min(attempts, key=lambda a: a[0].drop_points) if not attempts[-1][0].within_bound else attempts[-1]
    if not best.within_bound:
        print(f"[export] WARNING: no int8 plan stays within {max_drop} points; keeping '{best.plan}' "
              f"({best.drop_points:+.2f} points)")
    os.replace(best_path, out)
    for _, p in attempts:
        p.unlink(missing_ok=True)
    return Int8Result(out, best, [a for a, _ in attempts])
