"""Checkpoints round-trip and the fit loop resumes where it stopped."""
from __future__ import annotations

import json

import pytest
import torch

from fastmed.engine.checkpoint import load_checkpoint, load_model, make_checkpoint, save_checkpoint
from fastmed.engine.fit import FitLoop
from fastmed.engine.run_dir import RunDir, new_run_dir
from fastmed.errors import FastmedError


def test_checkpoint_round_trip_rebuilds_the_model(tmp_path):
    from fastmed.nets.registry import create_model

    model = create_model("mobilenet_v3_small", num_classes=4).eval()
    ckpt = make_checkpoint(model, task="polyp", kind="classifier", arch="mobilenet_v3_small", arch_kwargs={"num_classes": 4},
                           class_names=list("abcd"), input_size=[64, 64])
    path = save_checkpoint(tmp_path / "w.pt", ckpt)
    assert not list(tmp_path.glob(".*tmp")), "atomic write leaves no temp file"
    again, meta = load_model(path)
    x = torch.randn(2, 3, 64, 64)
    torch.testing.assert_close(again(x), model(x))
    assert meta["class_names"] == list("abcd") and meta["fastmed_version"]


def test_load_rejects_foreign_and_corrupt_files(tmp_path):
    torch.save({"w": torch.zeros(1)}, tmp_path / "plain.pt")
    with pytest.raises(FastmedError, match="not a fastmed checkpoint"):
        load_checkpoint(tmp_path / "plain.pt")
    (tmp_path / "junk.pt").write_bytes(b"\x00" * 10)
    with pytest.raises(FastmedError, match="cannot read checkpoint"):
        load_checkpoint(tmp_path / "junk.pt")
    with pytest.raises(FastmedError, match="not found"):
        load_checkpoint(tmp_path / "none.pt")


def test_fit_writes_run_folder_and_resumes(tmp_path, linear_task):
    run = RunDir(tmp_path / "run")
    torch.manual_seed(0)
    hist = FitLoop(run, epochs=2, monitor="val/loss", mode="min", show_progress=False).fit(linear_task())
    assert [r["epoch"] for r in hist] == [1, 2] and hist[1]["val/loss"] < hist[0]["val/loss"]
    assert run.best.exists() and run.last.exists() and (run.path / "curves.png").exists()
    assert load_checkpoint(run.last)["train_state"]["epoch"] == 2
    hist = FitLoop(run, epochs=4, monitor="val/loss", mode="min", show_progress=False).fit(linear_task(), resume=True)
    assert [r["epoch"] for r in hist] == [1, 2, 3, 4]
    lines = [json.loads(x) for x in run.metrics_file.read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [1, 2, 3, 4]
    assert hist[3]["val/loss"] < hist[1]["val/loss"]


def test_resume_without_last_is_an_error(tmp_path, linear_task):
    with pytest.raises(FastmedError, match="resume requested"):
        FitLoop(RunDir(tmp_path), epochs=1).fit(linear_task(), resume=True)


def test_run_dir_numbering(tmp_path):
    a = new_run_dir("polyp", "train", root=str(tmp_path))
    b = new_run_dir("polyp", "train", root=str(tmp_path))
    assert (a.name, b.name) == ("train", "train2")
    assert new_run_dir("polyp", "train", root=str(tmp_path), resume=True) == b


def test_fresh_run_in_a_reused_folder_starts_a_fresh_log(tmp_path, linear_task):
    run = RunDir(tmp_path / "run")
    FitLoop(run, epochs=2, show_progress=False).fit(linear_task())
    hist = FitLoop(run, epochs=1, show_progress=False).fit(linear_task())
    assert [r["epoch"] for r in hist] == [1]


def test_atomic_write_gives_the_usual_file_mode(tmp_path):
    import os
    import stat

    from fastmed.engine.atomic import atomic_write_text

    path = atomic_write_text(tmp_path / "a.txt", "x")
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~mask


def test_classifiers_use_a_batchnorm_momentum_that_settles_in_short_trainings():
    from fastmed.nets.registry import create_model

    # after n training steps the running statistics keep a weight (1 - momentum)^n of their initial values; a
    # small dataset trains for a few hundred steps, so after 100 steps that weight must be under 1%.
    # torchvision's MobileNetV3 momentum 0.01 leaves 0.99^100 = 37%; PyTorch's default 0.1 leaves 0.003%.
    bns = [m for m in create_model("mobilenet_v3_small", num_classes=3).modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and all((1 - m.momentum) ** 100 < 0.01 for m in bns)
