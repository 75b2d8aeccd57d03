"""``wsi train`` on hand-made feature files: the shared split, and every offered option has an effect."""
from __future__ import annotations

from fastmed.cfg.wsi import WsiTrainConfig
from fastmed.data.split import stratified_split
from fastmed.wsi.train import prepare


def test_slides_are_split_with_the_shared_helper(tmp_path, feature_files):
    _, write_dataset = feature_files
    labels = write_dataset(tmp_path / "features", n_slides=10)
    cfg = WsiTrainConfig(features=str(tmp_path / "features"), labels=str(labels), val_fraction=0.4, seed=3)
    train, val, meta = prepare(cfg)
    ids = sorted(f"s{i}" for i in range(10))  # files are read in name order
    want_train, want_val = stratified_split([int(s[1:]) % 2 for s in ids], 0.4, 3)
    assert [b.slide_id for b in val] == [ids[i] for i in want_val] and len(val) == 4
    assert [b.slide_id for b in train] == [ids[i] for i in want_train]
    assert meta["val_slides"] == [ids[i] for i in want_val]
