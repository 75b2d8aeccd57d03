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
    with pytest.raises(FastmedError, match="no fastmed metadata"):
        ModelMetadata.from_props({"producer": "x"}, "foreign.onnx")


def test_sidecar_round_trip(tmp_path):
    art = tmp_path / "m.engine"
    art.write_bytes(b"x")
    write_sidecar(art, _meta(precision="fp16"), {"tensorrt_version": "11.0"})
    assert sidecar_path(art).name == "m.engine.json"
    assert read_sidecar(art) == _meta(precision="fp16")
    with pytest.raises(FastmedError, match="sidecar"):
        read_sidecar(tmp_path / "other.engine")


def test_checkpoint_metadata_hash_and_kind(tmp_path, make_ckpt):
    path = make_ckpt(tmp_path / "r.pt", "resnet18", (32, 32))
    ckpt = torch.load(path, weights_only=True)
    meta = metadata_from_checkpoint(ckpt, path)
    assert meta.source_sha256 == file_sha256(path) and len(meta.source_sha256) == 64
    assert meta.input_size == [32, 32] and meta.class_names[0] == "adenoma"
    with pytest.raises(FastmedError, match="kind='segmenter'"):
        metadata_from_checkpoint({**ckpt, "kind": "segmenter"})
