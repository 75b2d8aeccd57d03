"""int8 QDQ export: size, symmetric per-channel QDQ nodes, metadata, the measured fallback."""
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from fastmed.export.predictor import Predictor
from fastmed.export.quantize import depthwise_conv_nodes, plans, quantize_with_fallback


def test_int8_is_small_symmetric_per_channel_qdq(mobilenet_int8, mobilenet_onnx):
    res = mobilenet_int8
    assert res.path.stat().st_size <= 0.4 * Path(mobilenet_onnx).stat().st_size
    proto = onnx.load(str(res.path))
    ops = {n.op_type for n in proto.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    inits = {i.name: numpy_helper.to_array(i) for i in proto.graph.initializer}
    zero_points = [inits[n.input[2]] for n in proto.graph.node if n.op_type == "DequantizeLinear" and len(n.input) > 2]
    assert zero_points and not any(zp.any() for zp in zero_points), "TensorRT needs symmetric int8 (zero points 0)"
    if res.chosen.plan.startswith("per-channel"):
        scales = [inits[n.input[1]] for n in proto.graph.node if n.op_type == "DequantizeLinear"]
        assert any(s.ndim == 1 and s.size > 1 for s in scales), "no per-channel weight scales"
    assert Predictor(res.path).meta.precision == "int8"


def test_int8_result_reports_accuracy_change(mobilenet_int8):
    res = mobilenet_int8
    assert res.attempts and res.chosen in res.attempts
    assert res.fp32_accuracy is not None and res.chosen.accuracy is not None
    assert res.chosen.drop_points == pytest.approx(100 * (res.fp32_accuracy - res.chosen.accuracy))
    assert "accuracy and agreement on" in res.measure


@pytest.mark.parametrize("batch", [1, 3])
def test_int8_predictor_batches_agree_with_fp32(mobilenet_int8, mobilenet_onnx, polyp_dir, batch):
    from fastmed.data.images import list_images

    files = list_images(polyp_dir / "val")[:batch]
    p8, p32 = Predictor(mobilenet_int8.path).predict(files), Predictor(mobilenet_onnx).predict(files)
    assert p8.shape == (batch, 3)
    assert np.abs(p8 - p32).max() < 0.2


def test_depthwise_nodes_found_only_in_mobilenet(mobilenet_onnx, resnet_ckpt, tmp_path):
    assert len(depthwise_conv_nodes(mobilenet_onnx)) >= 5
    steps = plans(mobilenet_onnx, per_channel=True)
    assert [(p[1], p[3]) for p in steps] == [(True, "minmax"), (True, "percentile"), (True, "percentile"), (False, "percentile")]
    assert "depthwise" in steps[2][0] and len(steps[2][2]) >= 5 and steps[-1][0].startswith("per-tensor")
    assert all(not p[1] for p in plans(mobilenet_onnx, per_channel=False))


def test_fallback_moves_on_until_within_bound(mobilenet_onnx, polyp_dir, tmp_path):
    from fastmed.export.metadata import read_onnx_metadata
    from fastmed.data.images import list_images
    from fastmed.export.preprocess import read_images

    images, _ = read_images(list_images(polyp_dir / "train")[:8])
    drops = iter([5.0, 4.0, 3.0, 0.5])  # the first three plans "break", per-tensor is fine
    res = quantize_with_fallback(mobilenet_onnx, tmp_path / "q.onnx", images, read_onnx_metadata(mobilenet_onnx),
                                 lambda p: (next(drops), 0.995, None), max_drop=1.0)
    assert res.attempts[-1].plan.startswith("per-tensor") and len(res.attempts) == 4
    assert res.chosen.within_bound and res.path.is_file()
    assert not list(tmp_path.glob(".q.try*")), "candidate files must be cleaned up"
