"""Class-folder reading: layouts, skips with a report, clear errors."""
from __future__ import annotations

import numpy as np
import pytest

from fastmed.data.folders import load_classification_splits, scan_class_folders
from fastmed.data.split import stratified_split
from fastmed.data.images import read_image, write_png
from fastmed.errors import DataError


def _make(root, counts):
    for cls, n in counts.items():
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            write_png(root / cls / f"{i}.png", np.full((8, 8, 3), i * 10, np.uint8))


def test_corrupt_and_truncated_images_are_skipped_and_reported(tmp_path):
    _make(tmp_path, {"a": 3, "b": 3})
    (tmp_path / "a" / "bad.png").write_bytes(b"not a png")
    good = (tmp_path / "b" / "0.png").read_bytes()
    (tmp_path / "b" / "trunc.png").write_bytes(good[: len(good) // 2])
    scan = scan_class_folders(tmp_path)
    assert scan.class_names == ["a", "b"] and len(scan.samples) == 6
    assert sorted(p.name for p, _ in scan.skipped) == ["bad.png", "trunc.png"]


def test_errors_name_the_problem(tmp_path):
    with pytest.raises(DataError, match="not found"):
        scan_class_folders(tmp_path / "missing")
    with pytest.raises(DataError, match="no class sub-folders"):
        scan_class_folders(tmp_path)
    _make(tmp_path, {"a": 2})
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="empty has no readable image"):
        scan_class_folders(tmp_path)
    with pytest.raises(DataError, match="image not found"):
        read_image(tmp_path / "a" / "nope.png")
    (tmp_path / "a" / "bad.png").write_bytes(b"xx")
    with pytest.raises(DataError, match="cannot read image"):
        read_image(tmp_path / "a" / "bad.png")


def test_single_class_is_rejected(tmp_path):
    _make(tmp_path, {"a": 4})
    with pytest.raises(DataError, match="at least 2 classes"):
        load_classification_splits(tmp_path)


def test_flat_layout_gets_a_stratified_split(tmp_path):
    _make(tmp_path, {"a": 10, "b": 5})
    splits = load_classification_splits(tmp_path, val_fraction=0.2, seed=0)
    assert len(splits.train) + len(splits.val) == 15
    assert {y for _, y in splits.val} == {0, 1}
    assert not {p for p, _ in splits.train} & {p for p, _ in splits.val}


def test_val_classes_must_be_known(tmp_path):
    _make(tmp_path / "train", {"a": 2, "b": 2})
    _make(tmp_path / "val", {"a": 1, "c": 1})
    with pytest.raises(DataError, match=r"\['c'\] not among the classes"):
        load_classification_splits(tmp_path)


def test_split_keeps_one_of_each_class_in_train():
    labels = [0, 0, 1]
    train, val = stratified_split(labels, 0.5, 0)
    assert {labels[i] for i in train} == {0, 1} and len(val) == 1


def test_eval_transform_matches_export_preprocessing():
    """A checkpoint and its ONNX export must see identical pixels."""
    from fastmed.data.transforms import classification_transform
    from fastmed.export.metadata import ModelMetadata
    from fastmed.export.preprocess import prepare_batch

    image = (np.random.default_rng(0).random((90, 70, 3)) * 255).astype(np.uint8)
    ours = classification_transform(64, train=False)(image).numpy()
    meta = ModelMetadata(task="t", kind="classifier", arch="x", class_names=["a"], input_size=[64, 64])
    np.testing.assert_allclose(ours, prepare_batch([image], meta)[0], rtol=1e-5, atol=1e-5)  # values ~[-2, 3]: ~40 ulp
