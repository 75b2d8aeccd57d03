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
    assert main([*args, "--epochs", "15", "--resume"]) == 0
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == list(range(1, 16))
    # the model learns: epoch 15 / epoch 1 training loss = 0.88, 0.89, 0.89 for seeds 1, 2, 3; with --lr 1e-9 (no
    # learning) the loss wanders 0.97-1.03 of epoch 1's. Two training slides are too few for a slide-level
    # threshold; wsi_evidence.py --quick (a slow test) checks slide and patch AUC.
    assert records[-1]["train/loss"] < 0.95 * records[0]["train/loss"]
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


def test_slides_sharing_an_id_are_reported_not_overwritten(synth_root, tmp_path, capsys):
    """``s.tif`` and ``s.TIFF`` would both write ``s.h5``: both are refused, each naming the other; the rest is tiled."""
    src = synth_root / "slides"
    folder = tmp_path / "slides"
    folder.mkdir()
    shutil.copy(src / "slide_000.tiff", folder / "s.tif")
    shutil.copy(src / "slide_001.tiff", folder / "S.TIFF")  # same id ignoring case (one file on macOS / Windows)
    shutil.copy(src / "slide_002.tiff", folder / "good.tiff")
    shutil.copy(src / "slide_003.tiff", folder / "...tiff")  # id ".." is no file name
    out = tmp_path / "tiles"
    assert main(["wsi", "tile", "--slides", str(folder), "--out", str(out), "--workers", "1", *TILE]) == 0
    errors = {r["slide"]: r["error"] for r in csv.DictReader(open(out / "errors.csv", encoding="utf-8"))}
    assert set(errors) == {"s.tif", "S.TIFF", "...tiff"}
    assert str(folder / "S.TIFF") in errors["s.tif"] and str(folder / "s.tif") in errors["S.TIFF"]
    assert "cannot be used as a file name" in errors["...tiff"]
    assert sorted(p.name for p in out.glob("*.h5")) == ["good.h5"]
    assert "3 slide(s) skipped" in capsys.readouterr().out


def test_features_resume_refuses_another_encoder_or_seed(pipeline, tmp_path, capsys):
    """Each feature file records encoder, weights hash and seed; resuming with another seed must not mix them."""
    root, _ = pipeline
    out = tmp_path / "features"
    shutil.copytree(root / "features", out)
    args = ["wsi", "features", "--tiles", str(root / "tiles"), "--out", str(out), "--encoder", "tiny", "--device", "cpu",
            "--progress", "false"]
    first = read_patch_file(out / "slide_000.h5", features=False).attrs
    assert first["encoder_seed"] == 0 and len(first["encoder_sha256"]) == 64
    assert main([*args, "--seed", "0"]) == 0 and "4 already done" in capsys.readouterr().out  # same encoder: resumed
    assert main([*args, "--seed", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "seed 0" in err and "seed 1" in err and "--overwrite" in err
    assert read_patch_file(out / "slide_000.h5", features=False).attrs["encoder_sha256"] == first["encoder_sha256"]
    assert main([*args, "--seed", "1", "--overwrite"]) == 0
    redone = read_patch_file(out / "slide_000.h5", features=False).attrs
    assert redone["encoder_seed"] == 1 and redone["encoder_sha256"] != first["encoder_sha256"]


def test_heatmap_refuses_a_slide_id_that_is_a_path(pipeline, tmp_path, capsys):
    """A slide id read from a feature file names the heatmap files: ``../../escaped`` is skipped and reported."""
    from fastmed.wsi.patch_file import write_patch_file

    root, slides = pipeline
    feats = tmp_path / "features"
    shutil.copytree(root / "features", feats)
    ps = read_patch_file(feats / "slide_001.h5")
    ps.attrs["slide_id"] = "../../escaped"
    write_patch_file(feats / "slide_001.h5", ps)
    run = tmp_path / "run"
    assert main(["wsi", "train", "--features", str(root / "features"), "--labels", str(slides / "labels.csv"), "--out", str(run),
                 "--epochs", "1", "--max-patches", "64", "--device", "cpu", "--progress", "false"]) == 0
    heat = tmp_path / "a" / "b" / "heat"
    assert main(["wsi", "heatmap", "--weights", str(run / "weights" / "last.pt"), "--features", str(feats), "--out", str(heat),
                 "--max-side", "128", "--progress", "false"]) == 0
    assert not list(tmp_path.rglob("escaped*"))  # nothing written beside --out
    errors = {r["slide"]: r["error"] for r in csv.DictReader(open(heat / "errors.csv", encoding="utf-8"))}
    assert list(errors) == ["../../escaped"] and "cannot be used as a file name" in errors["../../escaped"]
    assert len(list(heat.glob("*_overview.png"))) == 3  # the other slides are kept
    assert "skipped ../../escaped" in capsys.readouterr().out


def test_tile_warns_about_an_annotation_outside_its_slide(synth_root, tmp_path, capsys):
    src = synth_root / "slides"
    folder = tmp_path / "slides"
    (folder / "annotations").mkdir(parents=True)
    shutil.copy(src / "slide_001.tiff", folder / "s.tiff")
    gj = json.loads((src / "annotations" / "slide_001.geojson").read_text())
    n = len(gj["features"])
    far = [[9000, 9000], [9100, 9000], [9100, 9100], [9000, 9000]]  # the slide is far smaller
    gj["features"].append({"type": "Feature", "properties": {"classification": {"name": "Tumor"}},
                           "geometry": {"type": "Polygon", "coordinates": [far]}})
    ann = folder / "annotations" / "s.geojson"
    ann.write_text(json.dumps(gj))
    out = tmp_path / "tiles"
    assert main(["wsi", "tile", "--slides", str(folder), "--out", str(out), "--workers", "1", *TILE]) == 0
    lines = [ln for ln in capsys.readouterr().out.splitlines() if "outside the slide" in ln]
    assert len(lines) == 1 and lines[0].startswith(f"  warning: s: annotations {ann}: 1 of {n + 1} region(s)")
    assert f"region {n + 1} (Tumor, x 9000..9100, y 9000..9100)" in lines[0]
    row = json.loads((out / "tiling.json").read_text())["slides"][0]
    assert row["annotation_warning"] in lines[0]


def test_train_records_which_positive_slides_kept_their_patch_labels(pipeline, tmp_path):
    import torch

    root, slides = pipeline
    kept = {}
    for fraction in ("0", "1"):
        run = tmp_path / f"run{fraction}"
        assert main(["wsi", "train", "--features", str(root / "features"), "--labels", str(slides / "labels.csv"),
                     "--out", str(run), "--epochs", "1", "--val-fraction", "0", "--patch-label-fraction", fraction,
                     "--device", "cpu", "--progress", "false"]) == 0
        kept[fraction] = torch.load(run / "weights" / "last.pt", weights_only=True)["meta"]["patch_label_slides"]
    labels = {r["slide_id"]: r["label"] for r in csv.DictReader(open(slides / "labels.csv"))}
    assert kept["0"] == [] and kept["1"] == sorted(s for s, v in labels.items() if v == "tumor")


def test_train_resume_refuses_features_of_another_encoder(pipeline, tmp_path, capsys):
    """Resuming a wsi run on features of another encoder (same width, other weights) must not mix the two."""
    root, slides = pipeline
    other = tmp_path / "features_seed1"
    assert main(["wsi", "features", "--tiles", str(root / "tiles"), "--out", str(other), "--encoder", "tiny",
                 "--device", "cpu", "--progress", "false", "--seed", "1"]) == 0
    run = tmp_path / "run"
    args = ["--labels", str(slides / "labels.csv"), "--out", str(run), "--max-patches", "64", "--device", "cpu",
            "--progress", "false"]
    assert main(["wsi", "train", "--features", str(root / "features"), *args, "--epochs", "1"]) == 0
    capsys.readouterr()
    assert main(["wsi", "train", "--features", str(other), *args, "--epochs", "2", "--resume"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "features of encoder tiny" in err and "last.pt" in err
    assert [json.loads(x)["epoch"] for x in (run / "metrics.jsonl").read_text().splitlines()] == [1]


def test_train_warns_when_patch_losses_see_only_negative_slides(pipeline, tmp_path, capsys):
    """No annotated positive slide: losses 1 and 4 would only pull the maps to 0 (inverted maps in the evidence)."""
    root, slides = pipeline
    args = ["wsi", "train", "--features", str(root / "features"), "--labels", str(slides / "labels.csv"),
            "--epochs", "1", "--max-patches", "64", "--device", "cpu", "--progress", "false"]
    assert main([*args, "--out", str(tmp_path / "a"), "--patch-label-fraction", "0"]) == 0
    out = capsys.readouterr().out
    assert "warning: no positive training slide has patch labels" in out and "--w-patch 0 --w-attn 0" in out
    assert main([*args, "--out", str(tmp_path / "b"), "--patch-label-fraction", "0", "--w-patch", "0", "--w-attn", "0"]) == 0
    assert main([*args, "--out", str(tmp_path / "c"), "--stream"]) == 0  # annotations found in the files
    assert "warning" not in capsys.readouterr().out
