"""``fastmed export --format aoti``: the .pt2 package, its metadata, ``Predictor`` and ``fastmed predict`` on it."""
from __future__ import annotations

import shutil
import zipfile

import numpy as np
import pytest

from fastmed.errors import FastmedError


@pytest.mark.parametrize("batch_size", [1, 7])
def test_pt2_predictor_matches_the_checkpoint(tiny_recognizer, tiny_pt2, probe, batch_size):
    from fastmed.export import Predictor

    files = probe.at_size + probe.larger
    ref = Predictor(tiny_recognizer).predict(files)
    pt2 = Predictor(tiny_pt2)
    assert pt2.runtime == "aoti"
    got = pt2.predict(files, batch_size=batch_size)
    assert np.abs(got - ref).max() <= 1e-5  # probabilities in [0, 1]: the exporter's parity measure
    assert (got.argmax(1) == ref.argmax(1)).all()


def test_pt2_carries_the_checkpoint_metadata(tiny_recognizer, tiny_pt2):
    from fastmed.engine.checkpoint import load_model
    from fastmed.export.aoti_export import read_aoti_metadata
    from fastmed.export.metadata import metadata_from_checkpoint
    from fastmed.export import Predictor

    expected = metadata_from_checkpoint(load_model(tiny_recognizer)[1], tiny_recognizer)
    assert read_aoti_metadata(tiny_pt2) == expected == Predictor(tiny_pt2).meta
    assert expected.input_size == [32, 32] and expected.source_sha256


def test_batch_over_the_package_maximum_runs_in_chunks(tiny_pt2):
    from fastmed.export.aoti_runtime import AotiBackend

    backend = AotiBackend(tiny_pt2)
    backend.max_batch = 3  # a package compiled for batches <= 3
    x = np.random.default_rng(0).standard_normal((7, 3, 32, 32)).astype(np.float32)
    full, chunked = AotiBackend(tiny_pt2).run(x), backend.run(x)
    assert chunked.shape == (7, 3)
    np.testing.assert_allclose(chunked, full, rtol=1e-4, atol=1e-5)


def test_export_refuses_to_write_the_pt2_over_its_input(tiny_recognizer, tmp_path):
    from fastmed.export import export

    weights = tmp_path / "model.pt2"  # a checkpoint that happens to end in .pt2: the default output is itself
    shutil.copy(tiny_recognizer, weights)
    before = weights.read_bytes()
    with pytest.raises(FastmedError, match="over its input"):
        export(weights, "aoti", device="cpu")
    assert weights.read_bytes() == before


def test_export_refuses_a_foreign_pt2_and_a_wrong_suffix(tiny_recognizer, tiny_pt2, tmp_path):
    from fastmed.errors import ConfigError
    from fastmed.export import export
    from fastmed.export.outputs import check_outputs

    foreign = tmp_path / "other.pt2"
    with zipfile.ZipFile(foreign, "w") as zf:
        zf.writestr("other/data/aotinductor/model/x_metadata.json", "{}")
    with pytest.raises(FastmedError, match="not a fastmed export"):
        export(tiny_recognizer, "aoti", foreign, device="cpu")
    check_outputs([tiny_recognizer], [tiny_pt2])  # a previous fastmed .pt2 may be replaced
    with pytest.raises(ConfigError, match=r"\.pt2"):
        export(tiny_recognizer, "aoti", tmp_path / "m.onnx", device="cpu")


def test_cli_export_aoti_refuses_a_wrong_suffix_in_one_line(tiny_recognizer, tmp_path, capsys):
    from fastmed.cli import main

    assert main(["export", "--weights", str(tiny_recognizer), "--format", "aoti", "--out", str(tmp_path / "m.onnx")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "must end in .pt2" in err and err.count("\n") == 1


def test_a_bad_pt2_is_a_one_line_error(tmp_path):
    from fastmed.export import Predictor

    bad = tmp_path / "bad.pt2"
    bad.write_bytes(b"not a zip")
    with pytest.raises(FastmedError, match="cannot load AOTInductor package") as info:
        Predictor(bad)
    assert "\n" not in str(info.value)


def test_cli_predict_reads_a_pt2(tiny_recognizer, tiny_pt2, probe, tmp_path):
    from fastmed.cli import main
    from fastmed.export import Predictor
    from fastmed.export.native_runner import read_prediction_csv

    src = tmp_path / "images"
    src.mkdir()
    for f in probe.at_size:
        shutil.copy(f, src / f.name)
    assert main(["predict", "--weights", str(tiny_pt2), "--source", str(src), "--out", str(tmp_path / "run")]) == 0
    paths, _, names, probs = read_prediction_csv(tmp_path / "run" / "predictions.csv")
    assert names == Predictor(tiny_pt2).class_names
    assert np.abs(probs - Predictor(tiny_recognizer).predict(paths)).max() <= 1e-5
