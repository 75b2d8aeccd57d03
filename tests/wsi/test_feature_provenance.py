"""Feature files of different encoders never mix: ``wsi train`` refuses a mixed folder, ``wsi predict`` a foreign one."""
from __future__ import annotations

import csv

from fastmed.cli import main

ARGS = ["--device", "cpu", "--progress", "false"]


def _train(features, labels, out):
    return main(["wsi", "train", "--features", str(features), "--labels", str(labels), "--out", str(out), "--epochs", "1",
                 "--val-fraction", "0", *ARGS])


def test_train_refuses_features_of_two_encoders_naming_two_slides(tmp_path, feature_files, capsys):
    write_features, write_dataset = feature_files
    labels = write_dataset(tmp_path / "features", n_slides=6)
    write_features(tmp_path / "features", "s4", 0, encoder_seed=1, encoder_sha256="b" * 64)  # same name, other weights
    assert _train(tmp_path / "features", labels, tmp_path / "run") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "different encoders" in err
    assert "slide s0 has tiny (weights sha256 aaaaaaaaaaaa..., seed 0)" in err
    assert "slide s4 has tiny (weights sha256 bbbbbbbbbbbb..., seed 1)" in err


def test_train_refuses_two_files_with_one_slide_id(tmp_path, feature_files, capsys):
    write_features, write_dataset = feature_files
    labels = write_dataset(tmp_path / "features", n_slides=4)
    write_features(tmp_path / "features", "s1", 1, file_stem="copy_of_s1")
    assert _train(tmp_path / "features", labels, tmp_path / "run") == 2
    assert "slide id 's1' is in two feature files" in capsys.readouterr().err


def test_predict_refuses_features_of_another_encoder_than_training(tmp_path, feature_files, capsys):
    write_features, write_dataset = feature_files
    labels = write_dataset(tmp_path / "train_features", n_slides=6)
    assert _train(tmp_path / "train_features", labels, tmp_path / "run") == 0
    weights = tmp_path / "run" / "weights" / "last.pt"
    other = tmp_path / "other_features"
    other.mkdir()
    write_features(other, "x0", 1, encoder="resnet18", encoder_sha256="c" * 64)  # same width (4), another encoder
    capsys.readouterr()
    assert main(["wsi", "predict", "--weights", str(weights), "--features", str(other), "--out", str(tmp_path / "p1"), *ARGS[:2]]) == 2
    err = capsys.readouterr().err
    assert "slide x0: features of encoder resnet18" in err and "trained on tiny" in err
    assert main(["wsi", "predict", "--weights", str(weights), "--features", str(tmp_path / "train_features"),
                 "--out", str(tmp_path / "p2"), *ARGS[:2]]) == 0
    assert len(list(csv.DictReader(open(tmp_path / "p2" / "predictions.csv")))) == 6
