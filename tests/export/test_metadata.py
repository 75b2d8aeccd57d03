import json

import pytest
import torch

from fastmed.errors import FastmedError
from fastmed.export.metadata import (ModelMetadata, file_sha256, metadata_from_checkpoint, read_sidecar,
                                     sidecar_path, write_sidecar)


def _meta(**kw):
    return ModelMetadata(task="polyp", kind="classifier", arch="resnet18", class_names=["a", "b"], input_size=[32, 40], **kw)


def test_props_round_trip_keeps_types():
    meta = _meta(mean=[0.5, 0.5, 0.5], std=[0.25, 0.25, 0.25], source_sha256="ab")
    props = meta.to_props()
    assert all(isinstance(v, str) for v in props.values())
    assert json.loads(props["class_names"]) == ["a", "b"]
    assert ModelMetadata.from_props(props) == meta


def test_missing_fastmed_keys_are_a_clear_error():
    with pytest.raises(FastmedError, match="foreign.onnx has no fastmed metadata.*not a fastmed export.*fastmed export") as info:
        ModelMetadata.from_props({"producer": "x"}, "foreign.onnx")
    assert "sidecar" not in str(info.value)


def test_sidecar_round_trip(tmp_path):
    art = tmp_path / "m.engine"
    art.write_bytes(b"x")
    write_sidecar(art, _meta(precision="fp16"), {"tensorrt_version": "11.0"})
    assert sidecar_path(art).name == "m.engine.json"
    assert read_sidecar(art) == _meta(precision="fp16")
    with pytest.raises(FastmedError, match=r"other\.engine has no fastmed metadata.*other\.engine\.json.*missing"):
        read_sidecar(tmp_path / "other.engine")
    sidecar_path(art).write_text("{not json")
    with pytest.raises(FastmedError, match=r"m\.engine\.json: cannot read"):
        read_sidecar(art)


@pytest.mark.parametrize("field, value, why", [
    ("class_names", "[\"a\", ", "not valid JSON"),
    ("class_names", "[]", "non-empty list"),
    ("class_names", "[\"a\", \"a\"]", "duplicates"),
    ("input_size", "[32]", "height, width"),
    ("input_size", "[0, 32]", "positive integers"),
    ("mean", "[0.5, 0.5]", "3 finite numbers"),
    ("mean", "[0.5, NaN, 0.5]", "3 finite numbers"),
    ("std", "[0.2, 0, 0.2]", "positive"),
    ("channel_order", "RGBA", "RGB, BGR"),
    ("input_format", "float16-nchw", "must be one of"),
])
def test_bad_metadata_fields_name_the_file_and_the_field(field, value, why):
    props = {**_meta().to_props(), field: value}
    with pytest.raises(FastmedError, match=rf"^bad\.onnx: fastmed metadata field '{field}' .*{why}") as info:
        ModelMetadata.from_props(props, "bad.onnx")
    assert "\n" not in str(info.value)


def test_checkpoint_metadata_hash_and_kind(tmp_path, make_ckpt):
    path = make_ckpt(tmp_path / "r.pt", "resnet18", (32, 32))
    ckpt = torch.load(path, weights_only=True)
    meta = metadata_from_checkpoint(ckpt, path)
    assert meta.source_sha256 == file_sha256(path) and len(meta.source_sha256) == 64
    assert meta.input_size == [32, 32] and meta.class_names[0] == "adenoma"
    assert metadata_from_checkpoint({**ckpt, "kind": "segmenter"}).kind == "segmenter"  # exported since issue 15
    with pytest.raises(FastmedError, match="kind='generator'"):
        metadata_from_checkpoint({**ckpt, "kind": "generator"})
