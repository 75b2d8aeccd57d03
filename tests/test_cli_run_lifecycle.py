"""Every trainer's run lifecycle from the command line: refusing a run folder in use, resume checks, Ctrl-C, bad numbers."""
from __future__ import annotations

import shutil

import pytest

from fastmed.cfg.base import Command
from fastmed.cli import main
from fastmed.errors import RunInterrupted

# every trainer, with its required options (the refusal comes before any of them is read)
TRAINERS = [
    ["polyp", "train", "--data", "d"],
    ["polyp", "augment", "--data", "d"],
    ["polyp", "pretrain", "--data", "d"],
    ["seg", "train", "--method", "reweight", "--data", "d"],
    ["seg", "train", "--method", "contour", "--data", "d"],
    ["distill", "train", "--data", "digits", "--kd-weight", "0", "--mi-weight", "0"],
    ["wsi", "train", "--features", "f", "--labels", "l.csv"],
]


@pytest.mark.parametrize("command", TRAINERS, ids=lambda c: " ".join(c[:2] + c[3:4]))
def test_every_trainer_refuses_an_out_that_holds_a_run(tmp_path, capsys, command):
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text('{"epoch": 1}\n')
    assert main(command + ["--out", str(run), "--progress", "false"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "already holds a run" in err and "--overwrite" in err
    assert (run / "metrics.jsonl").read_text() == '{"epoch": 1}\n' and not (run / "config.yaml").exists()


POLYP = ["polyp", "train", "--arch", "mobilenet_v3_small", "--batch-size", "16", "--image-size", "32", "--progress", "false"]


@pytest.fixture(scope="module")
def one_epoch(synth_root, tmp_path_factory):
    """A 1-epoch polyp run (about 2 s); tests copy it before changing it."""
    out = tmp_path_factory.mktemp("lifecycle") / "run"
    assert main(POLYP + ["--data", str(synth_root / "polyp"), "--epochs", "1", "--out", str(out)]) == 0
    return out


def test_config_is_written_only_once_the_inputs_are_read(synth_root, tmp_path, capsys):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    out = tmp_path / "run"
    assert main(POLYP + ["--data", str(synth_root / "polyp"), "--epochs", "1", "--out", str(out), "--weights-init", str(bad)]) == 2
    assert "bad.pt" in capsys.readouterr().err
    assert not (out / "config.yaml").exists()


def test_resume_with_renamed_class_folders_is_refused(one_epoch, synth_root, tmp_path, capsys):
    run, data = tmp_path / "run", tmp_path / "data"
    shutil.copytree(one_epoch, run)
    shutil.copytree(synth_root / "polyp", data)
    for split in ("train", "val"):
        (data / split / "normal").rename(data / split / "aaa_normal")  # sorts first: the labels would shift
    config = (run / "config.yaml").read_text()
    assert main(POLYP + ["--data", str(data), "--epochs", "2", "--out", str(run), "--resume"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "class names" in err and "aaa_normal" in err
    assert (run / "config.yaml").read_text() == config
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 1


def test_resume_with_another_arch_is_one_line_not_a_traceback(one_epoch, synth_root, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(one_epoch, run)
    args = [a if a != "mobilenet_v3_small" else "resnet18" for a in POLYP]
    assert main(args + ["--data", str(synth_root / "polyp"), "--epochs", "2", "--out", str(run), "--resume"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "architecture" in err and "resnet18" in err and "mobilenet_v3_small" in err


def test_ctrl_c_prints_the_command_that_resumes(monkeypatch, capsys):
    def interrupted(cfg):
        raise RunInterrupted("runs/polyp/train3", resumable=True)

    monkeypatch.setattr(Command, "load_runner", lambda self: interrupted)
    assert main(["polyp", "train", "--data", "my data", "--epochs", "30", "--lr", "0.01"]) == 130
    err = capsys.readouterr().err
    assert err == ("interrupted; resume with: fastmed polyp train --epochs 30 --lr 0.01 --data 'my data' "
                   "--out runs/polyp/train3 --resume\n")


def test_ctrl_c_resume_command_keeps_the_seg_method(monkeypatch, capsys):
    """--method contour equals the contour config's own default, yet resuming without it would run reweight."""
    def interrupted(cfg):
        raise RunInterrupted("runs/seg/train", resumable=True)

    monkeypatch.setattr(Command, "load_runner", lambda self: interrupted)
    assert main(["seg", "train", "--method", "contour", "--data", "d"]) == 130
    assert capsys.readouterr().err == ("interrupted; resume with: fastmed seg train --data d --method contour "
                                       "--out runs/seg/train --resume\n")


def test_ctrl_c_before_the_first_epoch_says_there_is_nothing_to_resume(monkeypatch, capsys):
    def interrupted(cfg):
        raise RunInterrupted("runs/polyp/train3", resumable=False)

    monkeypatch.setattr(Command, "load_runner", lambda self: interrupted)
    assert main(["polyp", "train", "--data", "d"]) == 130
    assert "nothing to resume" in capsys.readouterr().err


def test_ctrl_c_in_a_command_without_resume_offers_none(monkeypatch, capsys):
    def interrupted(cfg):  # `fastmed demo` runs trainers but has no --resume
        raise RunInterrupted("demo/polyp/train", resumable=True)

    monkeypatch.setattr(Command, "load_runner", lambda self: interrupted)
    assert main(["demo", "--out", "demo"]) == 130
    assert capsys.readouterr().err == "interrupted (run demo/polyp/train)\n"


@pytest.mark.parametrize("option,value", [
    ("--lr", "nan"), ("--lr", "inf"), ("--lr", "0"), ("--weight-decay", "-0.1"), ("--weight-decay", "nan"),
    ("--epochs", "0"), ("--batch-size", "0"), ("--workers", "-1"),
])
def test_shared_numeric_options_are_checked(capsys, option, value):
    assert main(["polyp", "train", "--data", "d", option, value]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: option {option} must be") and err.count("\n") == 1


def test_resume_and_overwrite_exclude_each_other(capsys):
    assert main(["polyp", "train", "--data", "d", "--resume", "--overwrite"]) == 2
    assert "exclude each other" in capsys.readouterr().err
