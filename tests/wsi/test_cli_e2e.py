"""End to end on synthetic slides: tile → features → train (+resume) → predict → heatmap, and broken slides."""
from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest

from fastmed.cli import main
from fastmed.wsi.patch_file import read_patch_file

TILE = ["--patch-size", "64", "--mask-downsample", "16", "--progress", "false"]


@pytest.fixture(scope="module")
def pipeline(synth_root, tmp_path_factory):
    """Tile and encode the tiny synthetic slides once for this module."""
    root = tmp_path_factory.mktemp("wsi")
    slides = synth_root / "slides"
    assert main(["wsi", "tile", "--slides", str(slides), "--out", str(root / "tiles"), "--workers", "2", *TILE]) == 0
    assert main(["wsi", "features", "--tiles", str(root / "tiles"), "--out", str(root / "features"), "--encoder", "tiny",
                 "--device", "cpu", "--progress", "false"]) == 0
    return root, slides


def test_tile_writes_coords_labels_masks_and_resumes(pipeline, capsys):
    root, slides = pipeline
    labels = {r["slide_id"]: r["label"] for r in csv.DictReader(open(slides / "labels.csv"))}
    for sid, label in labels.items():
        ps = read_patch_file(root / "tiles" / f"{sid}.h5")
        assert len(ps.coords) > 20 and ps.attrs["size0"] == 64 and ps.attrs["mpp"] == 0.5
        assert (ps.tissue >= 0.25).all()
        assert (root / "tiles" / "masks" / f"{sid}.png").stat().st_size > 0
        assert (ps.label_fraction > 0).any() == (label == "tumor")
    assert main(["wsi", "tile", "--slides", str(slides), "--out", str(root / "tiles"), *TILE]) == 0
    assert "4 already done" in capsys.readouterr().out


def test_features_cached_per_slide(pipeline):
    root, _ = pipeline
    ps = read_patch_file(root / "features" / "slide_000.h5")
    assert ps.features.shape == (len(ps.coords), 64) and np.isfinite(ps.features).all()
    assert ps.attrs["encoder"] == "tiny" and ps.features.std() > 0


def test_train_resume_predict_heatmap(pipeline):
    root, slides = pipeline
    run = root / "run"
    args = ["wsi", "train", "--features", str(root / "features"), "--labels", str(slides / "labels.csv"), "--out", str(run),
            "--batch-size", "2", "--max-patches", "128", "--device", "cpu", "--progress", "false", "--seed", "1"]
    assert main([*args, "--epochs", "1"]) == 0
    assert main([*args, "--epochs", "2", "--resume"]) == 0
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2]
    assert {"train/loss_bag", "train/loss_patch", "train/loss_topk", "train/loss_attn", "val/auc", "val/f1"} <= set(records[-1])
    assert (run / "weights" / "best.pt").exists()

    pred = root / "pred"
    assert main(["wsi", "predict", "--weights", str(run / "weights" / "best.pt"), "--features", str(root / "features"),
                 "--labels", str(slides / "labels.csv"), "--out", str(pred)]) == 0
    rows = list(csv.DictReader(open(pred / "predictions.csv")))
    assert len(rows) == 4 and all(0 <= float(r["probability"]) <= 1 for r in rows)
    assert "auc" in json.loads((pred / "metrics.json").read_text())

    heat = root / "heat"
    assert main(["wsi", "heatmap", "--weights", str(run / "weights" / "best.pt"), "--features", str(root / "features"),
                 "--out", str(heat), "--patch-threshold", "0.0", "--max-side", "256", "--progress", "false"]) == 0
    for kind in ("attention", "patch", "combined", "overview"):
        assert (heat / f"slide_000_{kind}.png").stat().st_size > 0
    gj = json.loads((heat / "slide_000_positive.geojson").read_text())
    n = len(read_patch_file(root / "features" / "slide_000.h5", features=False).coords)
    assert gj["type"] == "FeatureCollection" and len(gj["features"]) == n  # threshold 0: every patch
    assert gj["features"][0]["properties"]["classification"]["name"] == "Tumor"


def test_folder_with_broken_slides_is_reported_and_exits_0(synth_root, tmp_path, capsys):
    src = synth_root / "slides" / "slide_000.tiff"
    folder = tmp_path / "mixed"
    folder.mkdir()
    shutil.copy(src, folder / "good.tiff")
    shutil.copy(src, folder / "Schnitt_ü_玻片.tiff")                      # unicode name
    data = src.read_bytes()
    (folder / "truncated.tiff").write_bytes(data[: len(data) // 2])      # truncated file
    (folder / "notes.svs").write_text("this is not a slide")            # not a slide
    bad = bytearray(data)
    bad[len(data) // 10: len(data) // 2] = np.random.default_rng(0).integers(0, 256, len(data) // 2 - len(data) // 10, dtype=np.uint8).tobytes()
    (folder / "corrupt_tiles.tiff").write_bytes(bytes(bad))              # opens, tiles do not decode
    out = tmp_path / "tiles"
    assert main(["wsi", "tile", "--slides", str(folder), "--out", str(out), "--verify", "--workers", "1", *TILE]) == 0
    errors = {r["slide"]: r["error"] for r in csv.DictReader(open(out / "errors.csv", encoding="utf-8"))}
    assert set(errors) == {"truncated.tiff", "notes.svs", "corrupt_tiles.tiff"}
    assert "cannot open slide" in errors["notes.svs"]
    assert sorted(p.name for p in out.glob("*.h5")) == sorted(["good.h5", "Schnitt_ü_玻片.h5"])
    assert "3 slide(s) skipped" in capsys.readouterr().out
    summary = json.loads((out / "tiling.json").read_text(encoding="utf-8"))
    assert summary["n_ok"] == 2 and summary["n_failed"] == 3

    only_bad = tmp_path / "bad"
    only_bad.mkdir()
    shutil.copy(folder / "notes.svs", only_bad / "notes.svs")
    assert main(["wsi", "tile", "--slides", str(only_bad), "--out", str(tmp_path / "t2"), *TILE]) == 1


def test_features_skip_a_slide_whose_tiles_fail(pipeline, tmp_path):
    root, slides = pipeline
    tiles = tmp_path / "tiles"
    shutil.copytree(root / "tiles", tiles)
    moved = tmp_path / "slides"
    moved.mkdir()
    for p in slides.glob("*.tiff"):
        shutil.copy(p, moved / p.name)
    (moved / "slide_001.tiff").write_text("gone bad")
    out = tmp_path / "features"
    assert main(["wsi", "features", "--tiles", str(tiles), "--out", str(out), "--slides", str(moved), "--encoder", "tiny",
                 "--device", "cpu", "--progress", "false"]) == 0
    errors = list(csv.DictReader(open(out / "errors.csv")))
    assert [r["slide"] for r in errors] == ["slide_001"] and len(list(out.glob("*.h5"))) == 3
