"""``fastmed polyp generate`` end to end: class folders, manifest, sample grid, skipped sources."""
from __future__ import annotations

import csv
import json
import shutil

import pytest
import torch

from fastmed.cli import main


@pytest.fixture(scope="module")
def generator(synth_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("gen_model")
    assert main(["polyp", "augment", "--data", str(synth_root / "polyp"), "--epochs", "1", "--steps-per-epoch", "1",
                 "--per-class", "2", "--image-size", "32", "--base", "8", "--judge-steps", "5", "--out", str(out),
                 "--progress", "false"]) == 0
    return out / "weights" / "best.pt"


def test_generate_writes_a_labelled_dataset(generator, synth_root, tmp_path, capsys):
    src = tmp_path / "src"
    shutil.copytree(synth_root / "polyp" / "train", src)
    (src / "normal" / "broken.png").write_bytes(b"\x89PNG not really")
    out = tmp_path / "gen"
    assert main(["polyp", "generate", "--weights", str(generator), "--data", str(src), "--out", str(out),
                 "--per-image", "2", "--batch-size", "7", "--progress", "false"]) == 0
    n_src = {c: len([p for p in (src / c).glob("*.png") if p.name != "broken.png"]) for c in ("adenoma", "hyperplastic", "normal")}
    for c, n in n_src.items():
        assert len(list((out / c).glob("*.png"))) == 2 * n
    rows = list(csv.DictReader(open(out / "manifest.csv")))
    assert len(rows) == 2 * sum(n_src.values())
    assert {"file", "class", "source", "noise_index"} <= set(rows[0]) and {r["noise_index"] for r in rows} == {"0", "1"}
    assert all(r["class"] in r["source"] and (out / r["file"]).exists() for r in rows)  # provenance keeps the class
    assert (out / "samples.png").exists() and "broken.png" in (out / "skipped.txt").read_text()
    assert "broken.png" in capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    m = summary["metrics"]
    # the default start changes images and two noises differ (a 1-update generator: pixel change ~0.02, diversity ~0.01)
    assert m["pixel_change"] > 1e-3 and m["noise_diversity"] > 1e-4
    assert 0 <= m["judge_agreement"] <= 1 and summary["judge"] == "the generator's judge" and summary["judge_real_split"] == "sources"
    assert m["spread_generated"] > 0 and m["spread_real"] > 0 and m["sinkhorn_to_real"] >= -1e-6


def test_generate_judge_option_and_real_test_split(generator, synth_root, tmp_path):
    """--judge replaces the generator's judge; DATA/test gives the judge's real accuracy."""
    from fastmed.engine.checkpoint import make_checkpoint, save_checkpoint
    from fastmed.nets.registry import create_model
    from fastmed.polyp.gen_metrics import Judge
    from fastmed.polyp.image_sets import load_class_folders

    model = create_model("judge_cnn", num_classes=3, base=4)
    judge = save_checkpoint(tmp_path / "judge.pt", make_checkpoint(
        model, task="polyp", kind="classifier", arch="judge_cnn", arch_kwargs={"num_classes": 3, "base": 4},
        class_names=["adenoma", "hyperplastic", "normal"], input_size=[32, 32]))
    out = tmp_path / "gen"
    assert main(["polyp", "generate", "--weights", str(generator), "--data", str(synth_root / "polyp"), "--out", str(out),
                 "--judge", str(judge), "--progress", "false"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["judge"] == str(judge) and summary["judge_real_split"] == "test"
    test = load_class_folders(synth_root / "polyp" / "test", 32)
    expected = float((Judge.from_checkpoint(judge, torch.device("cpu")).predict(test.images) == test.labels).float().mean())
    assert summary["metrics"]["judge_real_accuracy"] == pytest.approx(expected)
    assert summary["metrics"]["noise_diversity"] > 0  # --per-image 1: a second draw is made for the measure
    assert len(list((out / "adenoma").glob("*_g1.png"))) == 0  # ... and not written


def test_generated_folder_is_accepted_as_extra_training_data(generator, synth_root, tmp_path):
    out = tmp_path / "gen"
    assert main(["polyp", "generate", "--weights", str(generator), "--data", str(synth_root / "polyp"), "--out", str(out),
                 "--progress", "false"]) == 0
    from fastmed.data.folders import scan_class_folders

    scan = scan_class_folders(out, ["adenoma", "hyperplastic", "normal"])
    assert len(scan.samples) == len(list((synth_root / "polyp" / "train").rglob("*.png")))


def test_generate_rejects_a_classifier_checkpoint(tmp_path, synth_root, capsys):
    from fastmed.engine.checkpoint import make_checkpoint, save_checkpoint
    from fastmed.nets.registry import create_model

    path = tmp_path / "clf.pt"
    save_checkpoint(path, make_checkpoint(create_model("mobilenet_v3_small", num_classes=3), task="polyp", kind="classifier",
                                          arch="mobilenet_v3_small", arch_kwargs={"num_classes": 3}))
    assert main(["polyp", "generate", "--weights", str(path), "--data", str(synth_root / "polyp"), "--out", str(tmp_path / "o")]) == 2
    assert "not a generator" in capsys.readouterr().err


def test_a_class_name_that_is_a_path_is_refused(generator, synth_root, tmp_path, capsys):
    """Class names come from the checkpoint and name folders of OUT: ``../escaped`` must not write beside OUT."""
    from fastmed.engine.checkpoint import load_checkpoint, save_checkpoint

    ckpt = load_checkpoint(generator)
    ckpt["class_names"] = ["../escaped", "hyperplastic", "normal"]
    bad = save_checkpoint(tmp_path / "bad.pt", ckpt)
    data = tmp_path / "data"
    data.mkdir()
    shutil.copytree(synth_root / "polyp" / "train" / "adenoma", tmp_path / "escaped")  # DATA/../escaped holds images
    before = sorted(p.name for p in (tmp_path / "escaped").iterdir())
    assert main(["polyp", "generate", "--weights", str(bad), "--data", str(data), "--out", str(tmp_path / "out"),
                 "--progress", "false"]) == 2
    assert "class name '../escaped' cannot be used as a file name" in capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "escaped").iterdir()) == before  # nothing written outside --out
