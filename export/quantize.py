"""ONNX Runtime static int8 quantization (QDQ), with a measured fallback.

One int8 artifact for ONNX Runtime and TensorRT: QDQ format, symmetric int8
activations and weights (zero point 0, what TensorRT's explicit quantization
accepts), per-channel weights, MinMax calibration on real images.

The gate an int8 model must pass (a phone trusts it, not only the average):
top-1 agreement with fp32 on images held out from calibration >= ``min_agreement``
(default 0.99) and an accuracy drop (or, without labels, disagreement) of at most
``max_drop`` points. Accuracy alone is not enough: on 72 images the demo's
MobileNetV3 student gained 2.8 points in int8 while disagreeing with fp32 on 9 % of them.

Per-channel static quantization is reported to break MobileNetV3 in ONNX
Runtime (onnxruntime issue 11415: the depthwise conv blocks). So when a plan
fails the gate the next is tried (see :func:`plans`): percentile calibration
(clips the rare activation outliers that MinMax turns into a coarse int8 step),
then the depthwise convolutions left in float, then per-tensor weights, then
mixed precision: the most sensitive activations (ranked by ONNX Runtime's QDQ
debugger, :mod:`fastmed.export.int8_sensitivity`) left in float. The first plan
that passes wins; when none does, :class:`Int8GateError` names the closest one
and nothing is written at the output.
"""
from __future__ import annotations

import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from fastmed.errors import FastmedError
from fastmed.export.metadata import ModelMetadata, set_onnx_metadata
from fastmed.export.preprocess import prepare_batch

MIN_AGREEMENT = 0.99            # default gate: top-1 agreement of int8 with fp32 on held-out images
MIXED_FRACTIONS = (0.1, 0.25)  # mixed-precision fallback: share of the quantized activations left in float


def _calibration_reader(images: Sequence[np.ndarray], meta: ModelMetadata, batch_size: int):
    from onnxruntime.quantization import CalibrationDataReader

    # equal batches: the percentile (histogram) calibrator cannot stack a shorter last batch
    batch_size = max(d for d in range(1, batch_size + 1) if len(images) % d == 0)

    class ImageCalibrationReader(CalibrationDataReader):
        """Feeds equal prepared batches of the calibration images to the calibrator."""

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
    """One quantization plan and how it measured against fp32."""

    plan: str
    drop_points: float        # fp32 minus int8, in percentage points (accuracy or top-1 agreement)
    agreement: float          # top-1 agreement with fp32 on images held out from calibration
    accuracy: float | None    # int8 accuracy on the labelled folder, when given
    within_bound: bool        # passes the gate: drop <= max_drop and agreement >= min_agreement


@dataclass
class Int8Result:
    path: Path
    chosen: Int8Attempt
    attempts: list[Int8Attempt] = field(default_factory=list)
    fp32_accuracy: float | None = None
    measure: str = ""  # what drop_points and agreement are measured on
    fp32_path: Path | None = None  # the fp32 ONNX it was quantized from
    min_agreement: float = MIN_AGREEMENT


class Int8GateError(FastmedError):
    """No quantization plan passes the int8 gate; ``attempts`` lists what each measured."""

    def __init__(self, message: str, attempts: list[Int8Attempt]):
        super().__init__(message)
        self.attempts = attempts


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
    min_agreement: float = MIN_AGREEMENT,
    per_channel: bool = True,
    measure: str = "",
) -> Int8Result:
    """Walk the fallback chain until a plan passes the gate; raise :class:`Int8GateError` when none does.

    ``score(int8_path) -> (drop_points, agreement, accuracy or None)``
    measures one candidate against fp32 (``measure`` says on what). The gate:
    ``drop_points <= max_drop`` and ``agreement >= min_agreement``. The chain
    is :func:`plans`, then mixed precision: the best plan so far with its most
    sensitive activations (:mod:`fastmed.export.int8_sensitivity`, ranked on
    up to 32 calibration images) left in float, ``MIXED_FRACTIONS`` of them.
    The first passing model ends at ``out``; no candidate file is left behind.
    """
    from fastmed.export.int8_sensitivity import nodes_around, rank_activations

    out = Path(out)
    tried: list[tuple[Int8Attempt, Path, tuple[str, bool, list[str], str]]] = []

    def attempt(label: str, pc: bool, exclude: list[str], calibration: str) -> bool:
        cand = out.with_name(f".{out.stem}.try{len(tried)}{out.suffix}")
        quantize_qdq(fp32_path, cand, calib_images, meta, per_channel=pc, exclude_nodes=exclude, calibration=calibration)
        drop, agree, acc = score(cand)
        a = Int8Attempt(label, drop, agree, acc, drop <= max_drop and agree >= min_agreement)
        tried.append((a, cand, (label, pc, exclude, calibration)))
        print(f"[export] int8 {label}: drop {drop:+.2f} points vs fp32 (negative: int8 did better), agreement {agree:.3f}"
              + ("" if a.within_bound else f"  (gate: drop <= {max_drop}, agreement >= {min_agreement})"))
        return a.within_bound

    try:
        passed = any(attempt(*step) for step in plans(fp32_path, per_channel))
        if not passed:
            base, base_path, (label, pc, exclude, calibration) = max(tried, key=lambda t: (t[0].agreement, -t[0].drop_points))
            ranked = [name for name, _ in rank_activations(base_path, list(calib_images)[:32], meta)]
            for fraction in MIXED_FRACTIONS:
                k = max(1, math.ceil(fraction * len(ranked)))
                more = sorted(set(exclude) | set(nodes_around(base_path, ranked[:k])))
                if attempt(f"{label}, {k} most sensitive activations in float", pc, more, calibration):
                    passed = True
                    break
        if not passed:
            closest = max((t[0] for t in tried), key=lambda a: (a.agreement, -a.drop_points))
            raise Int8GateError(
                f"no int8 plan passes the gate (top-1 agreement with fp32 >= {min_agreement:g} and drop <= {max_drop:g} "
                f"points{', ' + measure if measure else ''}) after {len(tried)} plans; closest: '{closest.plan}' with "
                f"agreement {closest.agreement:.3f}, drop {closest.drop_points:+.2f} points. Ship fp32, calibrate on "
                "more images (--calib), or lower --min-agreement", [t[0] for t in tried])
        chosen, chosen_path, _ = tried[-1]
        os.replace(chosen_path, out)
    finally:
        for _, p, _ in tried:
            p.unlink(missing_ok=True)
    return Int8Result(out, chosen, [t[0] for t in tried], measure=measure, min_agreement=min_agreement)
