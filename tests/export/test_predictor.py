"""One Predictor for .pt, .onnx, .ort; the same probabilities for paths, arrays and PIL images."""
import numpy as np
import pytest
from PIL import Image

from fastmed.errors import FastmedError
from fastmed.export import Predictor
from fastmed.data.images import list_images
from fastmed.export.preprocess import read_images


@pytest.fixture(scope="module")
def val_files(polyp_dir):
    return list_images(polyp_dir / "val")[:6]


def test_pt_and_onnx_agree_on_paths(mobilenet_ckpt, mobilenet_onnx, val_files):
    pt, ox = Predictor(mobilenet_ckpt), Predictor(mobilenet_onnx)
    a, b = pt.predict(val_files), ox.predict(val_files, batch_size=4)
    assert a.shape == (6, 3) and np.allclose(a.sum(1), 1, atol=1e-5)
    assert np.abs(a - b).max() < 1e-4
    assert a.std() > 1e-3, "test model outputs are degenerate"
    assert pt.runtime == "pytorch" and ox.runtime == "onnxruntime" and ox.class_names == pt.class_names


def test_input_kinds_give_the_same_answer(mobilenet_onnx, val_files):
    p = Predictor(mobilenet_onnx)
    images, _ = read_images(val_files[:2])
    ref = p.predict(val_files[:2])
    np.testing.assert_allclose(p.predict(images), ref, atol=1e-6)
    np.testing.assert_allclose(p.predict(np.stack(images)), ref, atol=1e-6)
    np.testing.assert_allclose(p.predict([Image.fromarray(im) for im in images]), ref, atol=1e-6)
    np.testing.assert_allclose(p.predict(str(val_files[0])), ref[:1], atol=1e-6)


def test_ort_format_artifact(mobilenet_ckpt, export_dir, val_files):
    from fastmed.export import export

    res = export(mobilenet_ckpt, "ort", export_dir / "m.ort", exporter="torchscript")
    names = {f.name for f in res.files}
    assert {"m.ort", "m.required_operators.config", "m.ort.json"} <= names
    config = (export_dir / "m.required_operators.config").read_text()
    assert "Conv" in config and str(export_dir) not in config.split("\n", 2)[1]
    assert res.parity["max_abs_prob_diff"] <= 1e-4
    np.testing.assert_allclose(Predictor(res.path).predict(val_files), Predictor(mobilenet_ckpt).predict(val_files), atol=1e-4)


def test_clear_errors(tmp_path, mobilenet_onnx):
    with pytest.raises(FastmedError, match="not found"):
        Predictor(tmp_path / "nope.onnx")
    (tmp_path / "m.tflite").write_bytes(b"x")
    with pytest.raises(FastmedError, match="unknown model file type"):
        Predictor(tmp_path / "m.tflite")
    p = Predictor(mobilenet_onnx)
    with pytest.raises(FastmedError, match="uint8"):
        p.predict(np.zeros((8, 8, 3), np.float32))
    with pytest.raises(FastmedError, match="no images"):
        p.predict([])


def _with_props(src, dst, **props):
    """A copy of the ONNX file ``src`` at ``dst`` whose fastmed metadata has ``props`` changed (None: removed)."""
    import onnx

    proto = onnx.load(str(src))
    kept = {p.key: p.value for p in proto.metadata_props}
    kept.update({k: v for k, v in props.items() if v is not None})
    del proto.metadata_props[:]
    for key, value in kept.items():
        if props.get(key, "") is not None:
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, value
    onnx.save(proto, str(dst))
    return dst


def test_onnx_metadata_is_checked_against_the_model(mobilenet_onnx, tmp_path):
    wrong = _with_props(mobilenet_onnx, tmp_path / "two.onnx", class_names='["a", "b"]')  # the model outputs 3
    with pytest.raises(FastmedError, match=r"two\.onnx: .*\(.*3\).*'class_names' lists 2 classes"):
        Predictor(wrong)
    zero = _with_props(mobilenet_onnx, tmp_path / "zero.onnx", std="[0.2, 0.0, 0.2]")
    with pytest.raises(FastmedError, match=r"zero\.onnx: fastmed metadata field 'std'"):
        Predictor(zero)
    bare = _with_props(mobilenet_onnx, tmp_path / "bare.onnx", task=None, kind=None, class_names=None, input_size=None)
    with pytest.raises(FastmedError, match=r"bare\.onnx has no fastmed metadata") as info:
        Predictor(bare)
    assert "sidecar" not in str(info.value) and "fastmed export" in str(info.value)


def test_image_files_reach_the_model_at_model_size(mobilenet_onnx, val_files, tmp_path, monkeypatch):
    """A 2000x1600 file is read and downscaled on its own: no full-size array is ever passed on as a batch item."""
    big = tmp_path / "big.png"
    Image.fromarray(np.tile(np.linspace(0, 255, 2000, dtype=np.uint8)[None, :, None], (1600, 1, 3))).save(big)
    p = Predictor(mobilenet_onnx)
    seen = []
    preprocess = p.preprocess
    monkeypatch.setattr(p, "preprocess", lambda images: seen.extend(im.shape for im in images) or preprocess(images))
    done, probs, skipped = p.predict_files([big, *val_files[:2]])
    assert len(done) == 3 and not skipped and probs.shape == (3, 3)
    p.predict([big, val_files[0]])
    assert seen and set(seen) == {(48, 48, 3)}
