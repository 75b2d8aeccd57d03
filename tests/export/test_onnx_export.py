"""ONNX export: dynamic batch at 1 and at a larger batch for both exporters, checker, metadata, parity."""
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from fastmed.engine.checkpoint import load_model
from fastmed.errors import FastmedError
from fastmed.export.exporter import ParityError, _load_source, check_parity
from fastmed.export.metadata import file_sha256, metadata_from_checkpoint, read_onnx_metadata
from fastmed.export.onnx_export import export_onnx, onnx_batch_dim, onnx_opset


def _session(path):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _torch_logits(model, x):
    with torch.no_grad():
        return model(torch.from_numpy(x)).numpy()


def assert_logits_close(got, ref, rtol):
    """Relative comparison: float32 kernels differ between CPUs by ~1e-5 of the logits' scale (30-80 here)."""
    np.testing.assert_allclose(got, ref, rtol=rtol, atol=rtol * float(np.abs(ref).max()))


def test_logit_comparisons_are_relative():
    """Another CPU's float32 kernels move logits of 30-80 by ~1e-5 relative (1.5e-4 absolute seen): that passes, a real error does not."""
    ref = np.array([[48.0, -31.0, 75.0], [0.01, 2.0, -60.0]], np.float32)
    assert_logits_close(ref * (1 + 2e-5) + 1e-6, ref, rtol=1e-4)
    with pytest.raises(AssertionError):
        assert_logits_close(ref + np.array([[0, 0, 0], [0, 0.05, 0]], np.float32), ref, rtol=1e-4)


@pytest.fixture(scope="module")
def resnet_dynamo(resnet_ckpt, export_dir):
    """The default (dynamo) exporter on resnet18."""
    model, ckpt = load_model(resnet_ckpt)
    return export_onnx(model, metadata_from_checkpoint(ckpt, resnet_ckpt), export_dir / "resnet_dynamo.onnx"), model


@pytest.mark.parametrize("batch", [1, 5])
def test_dynamo_export_runs_at_batch_1_and_larger(resnet_dynamo, batch):
    path, model = resnet_dynamo
    assert isinstance(onnx_batch_dim(path), str), "batch axis was specialized"
    x = np.random.default_rng(batch).standard_normal((batch, 3, 64, 64), dtype=np.float32)
    got = _session(path).run(None, {"images": x})[0]
    assert got.shape == (batch, 3)
    assert_logits_close(got, _torch_logits(model, x), rtol=1e-4)


def test_dynamo_export_is_checker_clean_current_opset_and_self_describing(resnet_dynamo, resnet_ckpt):
    path, _ = resnet_dynamo
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)
    assert onnx_opset(path) >= 18
    meta = read_onnx_metadata(path)
    assert meta.class_names == ["adenoma", "hyperplastic", "normal"]
    assert meta.input_size == [64, 64] and meta.channel_order == "RGB" and len(meta.mean) == 3
    assert meta.source_sha256 == file_sha256(resnet_ckpt)
    assert meta.fastmed_version and meta.task == "polyp"


@pytest.mark.parametrize("batch", [1, 4])
def test_torchscript_exporter_dynamic_batch(mobilenet_onnx, mobilenet_ckpt, batch):
    model, _ = load_model(mobilenet_ckpt)
    x = np.random.default_rng(0).standard_normal((batch, 3, 48, 48), dtype=np.float32)
    assert_logits_close(_session(mobilenet_onnx).run(None, {"images": x})[0], _torch_logits(model, x), rtol=1e-4)


def test_fixed_batch_is_fixed(resnet_ckpt, tmp_path):
    model, ckpt = load_model(resnet_ckpt)
    path = export_onnx(model, metadata_from_checkpoint(ckpt), tmp_path / "fixed.onnx", fixed_batch=2, exporter="torchscript")
    assert onnx_batch_dim(path) == 2
    with pytest.raises(Exception):
        _session(path).run(None, {"images": np.zeros((3, 3, 64, 64), np.float32)})


def test_uint8_input_bakes_normalization(mobilenet_ckpt, tmp_path):
    from fastmed.export.preprocess import prepare_batch

    model, ckpt = load_model(mobilenet_ckpt)
    meta = metadata_from_checkpoint(ckpt)
    path = export_onnx(model, meta, tmp_path / "u8.onnx", uint8_input=True, exporter="torchscript")
    assert read_onnx_metadata(path).input_format == "uint8-nhwc"
    images = np.random.default_rng(1).integers(0, 256, (3, 48, 48, 3), dtype=np.uint8)
    got = _session(path).run(None, {"images": images})[0]
    assert_logits_close(got, _torch_logits(model, prepare_batch(list(images), meta)), rtol=1e-4)


def test_fp16_graph_for_tensorrt_runs_in_onnxruntime(mobilenet_ckpt, tmp_path):
    from fastmed.export.tensorrt_build import prepare_tensorrt_onnx

    model, ckpt = load_model(mobilenet_ckpt)
    path = prepare_tensorrt_onnx(model, metadata_from_checkpoint(ckpt), tmp_path / "m.fp16.onnx", "fp16", exporter="torchscript")
    proto = onnx.load(str(path))
    dtypes = {init.data_type for init in proto.graph.initializer if len(init.dims) == 4}
    assert dtypes == {onnx.TensorProto.FLOAT16}, "conv weights must be fp16"
    assert proto.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert read_onnx_metadata(path).precision == "fp16"
    x = np.random.default_rng(2).standard_normal((2, 3, 48, 48), dtype=np.float32)
    assert_logits_close(_session(path).run(None, {"images": x})[0], _torch_logits(model, x), rtol=5e-2)  # fp16: ~1e-2 of the scale


def test_parity_failure_is_loud(mobilenet_ckpt, mobilenet_onnx, polyp_dir, tmp_path):
    proto = onnx.load(str(mobilenet_onnx))
    from onnx import numpy_helper

    for i, init in enumerate(proto.graph.initializer):  # corrupt the classifier head
        arr = numpy_helper.to_array(init)
        if arr.ndim == 2:
            proto.graph.initializer[i].CopyFrom(numpy_helper.from_array(arr * 50 + 1, init.name))
    bad = tmp_path / "bad.onnx"
    onnx.save(proto, str(bad))
    src = _load_source(mobilenet_ckpt, str(polyp_dir / "val"), None, n_check=8, seed=0)
    assert check_parity(src, mobilenet_onnx, tol=1e-4).max_abs_prob_diff <= 1e-4
    with pytest.raises(ParityError, match="exceeds tolerance"):
        check_parity(src, bad, tol=1e-4)


def test_export_argument_errors(mobilenet_ckpt, tmp_path):
    from fastmed.export import export

    model, ckpt = load_model(mobilenet_ckpt)
    meta = metadata_from_checkpoint(ckpt)
    with pytest.raises(FastmedError, match="exporter"):
        export_onnx(model, meta, tmp_path / "x.onnx", exporter="jit")
    with pytest.raises(FastmedError, match="fixed_batch"):
        export_onnx(model, meta, tmp_path / "x.onnx", fixed_batch=0)
    with pytest.raises(FastmedError, match="format"):
        export(mobilenet_ckpt, "tflite")
    with pytest.raises(FastmedError, match="--calib"):
        export(mobilenet_ckpt, "onnx-int8")
