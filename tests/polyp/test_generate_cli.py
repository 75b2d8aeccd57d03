"""``fastmed polyp generate`` end to end: class folders, manifest, sample grid, skipped sources."""
from __future__ import annotations

import csv
import shutil

import pytest

from fastmed.cli import main


@pytest.fixture(scope="module")
def generator(synth_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("gen_model")
    assert main(["polyp", "augment", "--data", str(synth_root / "polyp"), "--epochs", "1", "--steps-per-epoch", "1",
                 "--per-class", "2", "--image-size", "32", "--base", "8", "--out", str(out), "--progress", "false"]) == 0
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
    assert all(r["class"] in r["source"] and (out / r["file"]).exists() for r in rows)  # provenance keeps the class
    assert (out / "samples.png").exists() and "broken.png" in (out / "skipped.txt").read_text()
    assert "broken.png" in capsys.readouterr().out


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
