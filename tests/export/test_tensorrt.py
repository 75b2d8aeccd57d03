"""TensorRT: what runs here (argument checks, the missing-TensorRT error); builds only where TensorRT is."""
import sys

import numpy as np
import pytest

from fastmed.errors import ConfigError, FastmedError
from fastmed.export.tensorrt_build import check_build_args, require_tensorrt


@pytest.fixture
def no_tensorrt(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # import tensorrt -> ImportError


def test_missing_tensorrt_names_the_gpu_extra(no_tensorrt, mobilenet_ckpt, tmp_path):
    from fastmed.export import Predictor, export

    with pytest.raises(FastmedError, match=r"fastmed\[gpu\]"):
        require_tensorrt()
    with pytest.raises(FastmedError, match=r"fastmed\[gpu\]"):
        export(mobilenet_ckpt, "tensorrt", tmp_path / "m.engine")
    (tmp_path / "m.engine").write_bytes(b"\0")
    with pytest.raises(FastmedError, match=r"fastmed\[gpu\]"):
        Predictor(tmp_path / "m.engine")


@pytest.mark.parametrize("args, match", [
    (("fp8", 1, 8, 1.0), "precision"),
    (("fp16", 0, 8, 1.0), "min <= opt <= max"),
    (("fp16", 4, 2, 1.0), "min <= opt <= max"),
    (("int8", 1, 8, 0.0), "workspace"),
])
def test_build_argument_checks(args, match):
    with pytest.raises(ConfigError, match=match):
        check_build_args(*args)
    check_build_args("fp16", 1, 64, 2.0, opt_batch=8)


@pytest.mark.tensorrt
@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_engine_matches_pytorch(mobilenet_ckpt, polyp_dir, tmp_path, precision):
    from fastmed.export import Predictor, export

    res = export(mobilenet_ckpt, "tensorrt", tmp_path / f"m.{precision}.engine", precision=precision,
                 calib=str(polyp_dir / "train"), data=str(polyp_dir / "val"), max_batch=8)
    assert (tmp_path / f"m.{precision}.engine.json").is_file()
    assert any(f.name.endswith(".timing.cache") for f in res.files)
    engine, ref = Predictor(res.path), Predictor(mobilenet_ckpt)
    from fastmed.data.images import list_images

    files = list_images(polyp_dir / "val")[:8]
    for batch in (1, 8):
        diff = np.abs(engine.predict(files[:batch]) - ref.predict(files[:batch])).max()
        assert diff < (1e-2 if precision == "fp16" else 0.1)
