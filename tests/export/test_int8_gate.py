"""The int8 gate: top-1 agreement with fp32 on held-out images as well as accuracy; the fallback chain stops at the first pass."""
from pathlib import Path

import onnx
import pytest

from fastmed.export.quantize import Int8GateError, plans, quantize_qdq, quantize_with_fallback


@pytest.fixture(scope="module")
def calib(polyp_dir, mobilenet_onnx):
    from fastmed.data.images import list_images
    from fastmed.export.metadata import read_onnx_metadata
    from fastmed.export.preprocess import read_images

    images, _ = read_images(list_images(polyp_dir / "train")[:8], (48, 48))
    return images, read_onnx_metadata(mobilenet_onnx)


def _scores(values):
    """A ``score`` callable returning ``(drop, agreement, None)`` from ``values`` in turn, counting its calls."""
    it = iter(values)
    calls = []

    def score(path: Path):
        calls.append(path)
        drop, agree = next(it)
        return drop, agree, None

    return score, calls


def test_gate_rejects_low_agreement_even_when_accuracy_rises(mobilenet_onnx, calib, tmp_path):
    images, meta = calib
    n = len(plans(mobilenet_onnx, per_channel=True)) + 2  # the fixed plans, then two mixed-precision steps
    # the student: accuracy up 4 points (drop -4), agreement 0.938 with fp32 — every plan alike
    score, calls = _scores([(-4.0, 0.938)] * (n - 1) + [(-4.0, 0.95)])
    with pytest.raises(Int8GateError) as err:
        quantize_with_fallback(mobilenet_onnx, tmp_path / "q.onnx", images, meta, score, min_agreement=0.99)
    assert len(calls) == n and len(err.value.attempts) == n
    msg = str(err.value)
    assert "closest" in msg and "agreement 0.950" in msg and "most sensitive activations in float" in msg
    assert not (tmp_path / "q.onnx").exists(), "a failing int8 model must never be shipped"
    assert not list(tmp_path.glob(".q.try*")), "candidate files must be cleaned up"


def test_chain_stops_at_first_passing_step(mobilenet_onnx, calib, tmp_path):
    images, meta = calib
    score, calls = _scores([(0.0, 0.95), (0.0, 0.995), (0.0, 1.0)])
    res = quantize_with_fallback(mobilenet_onnx, tmp_path / "q.onnx", images, meta, score, min_agreement=0.99)
    assert len(calls) == 2 and res.chosen.plan == "per-channel, percentile" and res.chosen.within_bound
    assert [a.within_bound for a in res.attempts] == [False, True]
    assert res.path.is_file() and not list(tmp_path.glob(".q.try*"))


def test_mixed_precision_step_leaves_sensitive_layers_in_float(mobilenet_onnx, calib, tmp_path):
    images, meta = calib
    n_fixed = len(plans(mobilenet_onnx, per_channel=True))
    # the depthwise plan (index 2) agrees best, so mixed precision builds on it; its first step passes
    score, _ = _scores([(0.0, 0.90)] * 2 + [(0.0, 0.97)] + [(0.0, 0.90)] * (n_fixed - 3) + [(0.0, 0.999)])
    res = quantize_with_fallback(mobilenet_onnx, tmp_path / "q.onnx", images, meta, score, min_agreement=0.99)
    assert len(res.attempts) == n_fixed + 1
    assert "depthwise" in res.chosen.plan and "most sensitive activations in float" in res.chosen.plan
    base = quantize_qdq(mobilenet_onnx, tmp_path / "base.onnx", images, meta, calibration="percentile",
                        exclude_nodes=plans(mobilenet_onnx, True)[2][2])

    def quantized_inputs(path):
        return sum(n.op_type == "QuantizeLinear" for n in onnx.load(str(path)).graph.node)

    assert quantized_inputs(res.path) < quantized_inputs(base), "mixed precision must quantize fewer tensors"


def test_calibration_and_gate_images_are_disjoint(tmp_path):
    from fastmed.export.exporter import _calib_split

    files = [tmp_path / f"{i:03d}.png" for i in range(300)]
    calib, held = _calib_split(files, 128)
    assert len(calib) == 128 and 0 < len(held) <= 128 and not set(calib) & set(held)
    calib, held = _calib_split(files[:20], 128)  # a small folder: every fourth image is held out
    assert len(held) == 5 and not set(calib) & set(held) and len(calib) + len(held) == 20


def test_percentile_calibration_takes_a_count_that_is_no_multiple_of_the_batch(mobilenet_onnx, calib, tmp_path):
    images, meta = calib
    odd = (images * 2)[:11]  # 11 images, calibration batches of 8: the histogram calibrator needs equal batches
    out = quantize_qdq(mobilenet_onnx, tmp_path / "p.onnx", odd, meta, calibration="percentile")
    assert any(n.op_type == "QuantizeLinear" for n in onnx.load(str(out)).graph.node)
