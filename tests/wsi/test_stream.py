"""``wsi train --stream``: the same training as in memory, from float16 or float32 files; a 200,000-patch bag end to end."""
from __future__ import annotations

import csv
import json

import numpy as np
import torch

from fastmed.cli import main
from fastmed.wsi.bags import BagRef
from fastmed.wsi.patch_file import PatchSet, read_patch_file, write_patch_file

ENCODER = {"encoder": "tiny", "encoder_weights": "", "encoder_seed": 0, "encoder_sha256": "b" * 64}


def write_cohort(folder, n_slides: int, n: int, dim: int, dtype=np.float32, seed: int = 0):
    """``n_slides`` slides of ``n`` patches alternating normal/tumor (+ labels csv); tumor slides shift some features."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n_slides):
        label = i % 2
        feats = rng.normal(0, 1, (n, dim)) + label * (rng.random((n, 1)) < 0.3)
        coords = np.stack([np.arange(n) * 64, np.zeros(n)], 1).astype(np.int64)
        attrs = {"slide_id": f"s{i}", "slide_path": f"/nowhere/s{i}.tiff", "size0": 64, "patch_size": 64, "mpp": 0.5,
                 "mode": "bbox", "feature_dim": dim, **ENCODER}
        write_patch_file(folder / f"s{i}.h5", PatchSet(coords, attrs, np.ones(n, np.float32),
                                                       np.full(n, float(label), np.float32), feats.astype(dtype)))
        rows.append({"slide_id": f"s{i}", "label": "tumor" if label else "normal"})
    labels = folder.parent / "labels.csv"
    with open(labels, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=["slide_id", "label"])
        w.writeheader()
        w.writerows(rows)
    return labels


def train_args(features, labels, out, *extra):
    return ["wsi", "train", "--features", str(features), "--labels", str(labels), "--out", str(out), "--epochs", "2",
            "--batch-size", "3", "--max-patches", "24", "--val-fraction", "0.25", "--device", "cpu", "--progress", "false",
            "--seed", "2", *extra]


def weights(run):
    return torch.load(run / "weights" / "last.pt", map_location="cpu", weights_only=True)["model"]


def test_streamed_training_equals_in_memory_training(tmp_path, monkeypatch):
    """Same batches (patch subsets drawn per slide and epoch, not per worker), same weights; the streamed task holds no features."""
    import fastmed.wsi.train as train_mod

    labels = write_cohort(tmp_path / "f", n_slides=12, n=40, dim=8)  # 40 > --max-patches 24: subsets are drawn
    assert main(train_args(tmp_path / "f", labels, tmp_path / "mem")) == 0
    tasks = []
    monkeypatch.setattr(train_mod, "WsiTrainTask", lambda *a, _cls=train_mod.WsiTrainTask: tasks.append(_cls(*a)) or tasks[-1])
    assert main(train_args(tmp_path / "f", labels, tmp_path / "stream", "--stream", "--workers", "2")) == 0
    assert all(isinstance(item, BagRef) for item in tasks[0].train.items)  # features are read at each step
    mem, streamed = weights(tmp_path / "mem"), weights(tmp_path / "stream")
    for name, value in mem.items():
        torch.testing.assert_close(streamed[name], value, rtol=1e-6, atol=1e-7)
    last = [json.loads(line) for line in (tmp_path / "stream" / "metrics.jsonl").read_text().splitlines()][-1]
    assert "val/auc" in last and last["epoch"] == 2

    assert main(train_args(tmp_path / "f", labels, tmp_path / "seed3", "--seed", "3")) == 0  # the check can fail:
    assert any(not torch.allclose(weights(tmp_path / "seed3")[k], v) for k, v in mem.items())  # another seed differs


def test_float16_features_from_wsi_features_stream_into_training(synth_root, tmp_path):
    tiles = tmp_path / "tiles"
    assert main(["wsi", "tile", "--slides", str(synth_root / "slides"), "--out", str(tiles), "--patch-size", "64",
                 "--mask-downsample", "16", "--workers", "1", "--progress", "false"]) == 0
    for dtype in ("float32", "float16"):
        assert main(["wsi", "features", "--tiles", str(tiles), "--out", str(tmp_path / dtype), "--encoder", "tiny",
                     "--device", "cpu", "--progress", "false", "--dtype", dtype]) == 0
    full, half = (read_patch_file(tmp_path / d / "slide_000.h5").features for d in ("float32", "float16"))
    assert full.dtype == np.float32 and half.dtype == np.float16
    np.testing.assert_allclose(half.astype(np.float32), full, rtol=1e-3, atol=1e-3 * np.abs(full).max())
    assert (tmp_path / "float16" / "slide_000.h5").stat().st_size < 0.7 * (tmp_path / "float32" / "slide_000.h5").stat().st_size
    assert main(["wsi", "train", "--features", str(tmp_path / "float16"), "--labels", str(synth_root / "slides" / "labels.csv"),
                 "--out", str(tmp_path / "run"), "--epochs", "1", "--stream", "--workers", "1", "--device", "cpu",
                 "--progress", "false"]) == 0
    assert torch.isfinite(weights(tmp_path / "run")["feature_mean"]).all()


def test_a_200k_patch_bag_through_training_predict_and_heatmap(synth_root, tmp_path, monkeypatch):
    """One slide of 200,000 patches (plus three small ones) on the CPU: a training step sees every patch, maps paint them all."""
    import fastmed.wsi.train as train_mod

    n, dim, side = 200_000, 16, 2  # 2-pixel patches tile the 1024 x 768 synthetic slide 512 across
    folder = tmp_path / "features"
    labels = write_cohort(folder, n_slides=4, n=50, dim=dim)
    rng = np.random.default_rng(1)
    grid = np.arange(n)
    coords = np.stack([grid % 512 * side, grid // 512 * side], 1).astype(np.int64)
    attrs = {"slide_id": "big", "slide_path": str(synth_root / "slides" / "slide_001.tiff"), "size0": side, "patch_size": side,
             "mpp": 0.5, "mode": "bbox", "feature_dim": dim, **ENCODER}
    tumor = rng.random(n) < 0.05
    feats = (rng.normal(0, 1, (n, dim)) + tumor[:, None]).astype(np.float16)
    write_patch_file(folder / "big.h5", PatchSet(coords, attrs, np.ones(n, np.float32), tumor.astype(np.float32), feats))
    with open(labels, "a", encoding="utf-8") as f:
        f.write("big,tumor\n")
    sizes = []
    orig = train_mod.mil_losses
    monkeypatch.setattr(train_mod, "mil_losses", lambda out, batch, *a: sizes.extend(np.diff(batch.offsets.tolist())) or orig(out, batch, *a))
    run = tmp_path / "run"
    assert main(["wsi", "train", "--features", str(folder), "--labels", str(labels), "--out", str(run), "--epochs", "1",
                 "--val-fraction", "0", "--max-patches", str(n), "--stream", "--device", "cpu", "--progress", "false"]) == 0
    assert n in sizes  # the whole bag in one step
    pred = tmp_path / "pred"
    assert main(["wsi", "predict", "--weights", str(run / "weights" / "last.pt"), "--features", str(folder),
                 "--out", str(pred), "--device", "cpu", "--progress", "false"]) == 0
    rows = {r["slide_id"]: r for r in csv.DictReader(open(pred / "predictions.csv"))}
    assert rows["big"]["n_patches"] == str(n) and 0 <= float(rows["big"]["probability"]) <= 1
    heat = tmp_path / "heat"
    assert main(["wsi", "heatmap", "--weights", str(run / "weights" / "last.pt"), "--features", str(folder), "--out", str(heat),
                 "--max-side", "512", "--patch-threshold", "0.0", "--device", "cpu", "--progress", "false"]) == 0
    gj = json.loads((heat / "big_positive.geojson").read_text())
    assert len(gj["features"]) == n  # threshold 0: every patch
    from PIL import Image

    attention = np.asarray(Image.open(heat / "big_attention.png").convert("RGB")).astype(int)
    background = np.asarray(Image.open(heat / "big_overview.png").convert("RGB"))[:, :attention.shape[1]].astype(int)
    covered = np.abs(attention - background).sum(-1) > 0  # pixels the overlay changed
    assert covered.mean() > 0.9  # 391 rows of 512 two-pixel patches cover the whole 1024 x 768 slide


def test_progress_iterates_once_so_a_dataloader_starts_its_workers_once():
    """tqdm.auto's bar called ``iter()`` in its constructor and again when iterated: two sets of DataLoader workers."""
    from fastmed.engine.progress import progress

    calls = []

    class Loader:
        def __iter__(self):
            calls.append(1)
            return iter([1, 2])

        def __len__(self):
            return 2

    assert list(progress(Loader(), enabled=False)) == [1, 2] and list(progress(Loader(), enabled=True)) == [1, 2]
    assert len(calls) == 2  # once per bar


def test_bags_kept_after_prediction_hold_no_features():
    """Validation and ``wsi predict`` keep each slide's ids and labels after predicting it; a ``features[:0]`` view kept
    the whole matrix (measured: the 200 validation slides of the 2,000-slide benchmark, 0.8 GB, stayed in memory)."""
    from fastmed.wsi.bags import SlideBag, without_features

    bag = SlideBag("s", torch.ones(1000, 64, dtype=torch.float16), np.zeros((1000, 2), np.int64), torch.zeros(1000), 1, {})
    kept = without_features(bag)
    assert kept.features.shape == (0, 64) and kept.features.dtype == torch.float16
    assert kept.features.untyped_storage().nbytes() == 0 < bag.features[:0].untyped_storage().nbytes()
    assert kept.patch_labels is bag.patch_labels and kept.slide_id == "s"
