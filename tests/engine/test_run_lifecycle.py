"""The run lifecycle every trainer shares: start, resume, interruption, summary (engine.fit, run_dir, training_run)."""
from __future__ import annotations

import json
import math
from dataclasses import dataclass

import pytest
import torch

from fastmed.engine.checkpoint import load_checkpoint, save_checkpoint
from fastmed.engine.fit import FitLoop
from fastmed.engine.run_dir import RunDir
from fastmed.engine.training_run import RunSummary, start_run, summarize
from fastmed.errors import FastmedError, RunInterrupted


def _fit(run, epochs, task, resume=False, config=None):
    return FitLoop(run, epochs, monitor="val/loss", mode="min", show_progress=False, config=config).fit(task, resume=resume)


@dataclass
class _Cfg:
    """The FitOptions fields ``start_run`` reads."""

    out: str
    seed: int = 0
    device: str = "cpu"
    resume: bool = False
    overwrite: bool = False
    epochs: int = 1
    progress: bool = False


def _cfg(tmp_path, **kw):
    return _Cfg(**{"out": str(tmp_path / "run"), **kw})


# --- resume -------------------------------------------------------------------------------------

def test_resume_says_where_it_continues(tmp_path, capsys, linear_task):
    run = RunDir(tmp_path / "run")
    _fit(run, 2, linear_task())
    capsys.readouterr()
    assert [r["epoch"] for r in _fit(run, 3, linear_task(), resume=True)] == [1, 2, 3]
    assert "resuming from epoch 3 of 3 (2 finished)" in capsys.readouterr().out


def test_resume_to_no_more_epochs_is_an_error_not_a_silent_no_op(tmp_path, linear_task):
    run = RunDir(tmp_path / "run")
    _fit(run, 2, linear_task())
    with pytest.raises(FastmedError, match=r"--epochs 2 is not above the 2 epoch\(s\) already finished"):
        _fit(run, 2, linear_task(), resume=True)


@pytest.mark.parametrize("changed,what", [
    ({"class_names": ("a", "c")}, "class names"),
    ({"in_features": 2}, "architecture"),
])
def test_resume_refuses_another_model_before_rewriting_the_config(tmp_path, changed, what, linear_task):
    run = RunDir(tmp_path / "run")
    _fit(run, 1, linear_task(), config={"lr": 1})
    with pytest.raises(FastmedError, match=what) as err:
        _fit(run, 2, task=linear_task(**changed), resume=True, config={"lr": 2})
    assert "\n" not in str(err.value) and str(run.last) in str(err.value)
    assert "lr: 1" in (run.path / "config.yaml").read_text()  # untouched
    assert [r["epoch"] for r in run.read_metrics()] == [1]


def test_resume_refuses_another_input_size(tmp_path, linear_task):
    run = RunDir(tmp_path / "run")
    _fit(run, 1, linear_task())
    task = linear_task()
    make = task.checkpoint
    task.checkpoint = lambda: {**make(), "input_size": [2, 2]}
    with pytest.raises(FastmedError, match=r"input size \[1, 1\] there, \[2, 2\] now"):
        _fit(run, 2, task=task, resume=True)


def test_a_torn_last_metrics_line_is_skipped_on_resume(tmp_path, capsys, linear_task):
    run = RunDir(tmp_path / "run")
    _fit(run, 2, linear_task())
    with open(run.metrics_file, "a") as f:
        f.write('{"epoch": 3, "train/lo')  # SIGKILL during the append of epoch 3
    assert [r["epoch"] for r in _fit(run, 3, linear_task(), resume=True)] == [1, 2, 3]
    assert "line 3 is incomplete" in capsys.readouterr().err
    assert [json.loads(x)["epoch"] for x in run.metrics_file.read_text().splitlines()] == [1, 2, 3]


def test_a_corrupt_middle_metrics_line_is_an_error_naming_file_and_line(tmp_path, linear_task):
    run = RunDir(tmp_path / "run")
    _fit(run, 2, linear_task())
    lines = run.metrics_file.read_text().splitlines()
    run.metrics_file.write_text("\n".join([lines[0], "garbage", lines[1]]) + "\n")
    with pytest.raises(FastmedError, match=r"metrics.jsonl line 2 is not a JSON record"):
        run.read_metrics()


def test_opening_a_run_folder_removes_only_stale_atomic_temp_files(tmp_path):
    root = tmp_path / "run"
    (root / "weights").mkdir(parents=True)
    stale = [root / "weights" / ".last.pt.k2j4_x9q.tmp", root / ".metrics.jsonl.abcdefgh.tmp"]
    kept = [root / "notes.tmp", root / ".cache.tmp", root / "weights" / "best.pt"]
    for p in stale + kept:
        p.write_bytes(b"x")
    RunDir(root)
    assert [p.exists() for p in stale] == [False, False]
    assert all(p.exists() for p in kept)


# --- interruption -------------------------------------------------------------------------------

def test_ctrl_c_names_the_run_and_whether_it_can_resume(tmp_path, linear_task):
    run = RunDir(tmp_path / "run")
    with pytest.raises(KeyboardInterrupt) as err:  # not RunInterrupted: a plain one would stop the whole test session
        _fit(run, 3, task=linear_task(interrupt_at=2))
    assert isinstance(err.value, RunInterrupted) and (err.value.run, err.value.resumable) == (str(run.path), True)
    with pytest.raises(KeyboardInterrupt) as err:
        _fit(RunDir(tmp_path / "other"), 3, task=linear_task(interrupt_at=1))
    assert isinstance(err.value, RunInterrupted) and err.value.resumable is False


# --- start and summary --------------------------------------------------------------------------

def test_start_run_refuses_an_existing_run_unless_resume_or_overwrite(tmp_path, linear_task):
    run = RunDir(tmp_path / "run")
    _fit(run, 1, linear_task())
    with pytest.raises(FastmedError, match="already holds a run.*--resume.*--overwrite"):
        start_run(_cfg(tmp_path), "test", "train")
    assert start_run(_cfg(tmp_path, resume=True), "test", "train").path == run.path
    assert start_run(_cfg(tmp_path, overwrite=True), "test", "train").path == run.path
    with pytest.raises(FastmedError, match="no weights/last.pt"):
        start_run(_cfg(tmp_path, out=str(tmp_path / "empty"), resume=True), "test", "train")
    (tmp_path / "file").write_text("x")
    with pytest.raises(FastmedError, match="is a file, not a run folder"):
        start_run(_cfg(tmp_path, out=str(tmp_path / "file")), "test", "train")


def test_overwrite_replaces_the_old_runs_results(tmp_path, linear_task):
    run = RunDir(tmp_path / "run")
    _fit(run, 3, linear_task())
    session = start_run(_cfg(tmp_path, overwrite=True, epochs=1), "test", "train")
    summary = session.fit(linear_task(), monitor="val/loss", mode="min")
    assert [r["epoch"] for r in run.read_metrics()] == [1] and summary.epochs == 1
    assert load_checkpoint(run.best)["meta"]["epoch"] == 1 and load_checkpoint(run.last)["meta"]["epoch"] == 1


def test_a_refused_start_writes_nothing(tmp_path):
    session = start_run(_cfg(tmp_path), "test", "train")
    assert not session.path.exists()  # created on first use, by the trainer, once its inputs are read


def test_fit_returns_the_summary_it_writes(tmp_path, linear_task):
    session = start_run(_cfg(tmp_path, epochs=2), "test", "train")
    summary = session.fit(linear_task(), monitor="val/loss", mode="min", skipped=3)
    summary = session.finish(summary, extra=1.5)
    assert isinstance(summary, RunSummary) and summary.run == session.path and summary.epochs == 2
    assert summary.weights == session.path / "weights" / "best.pt" and summary.weights.is_file()
    best = min(summary.history, key=lambda r: r["val/loss"])
    assert (summary.best_epoch, summary.best, summary.skipped) == (best["epoch"], best["val/loss"], 3)
    assert summary.metrics["extra"] == 1.5 and summary.metrics["val/loss"] == best["val/loss"]
    on_disk = json.loads((session.path / "summary.json").read_text())
    assert on_disk == json.loads(json.dumps(summary.as_dict())) and on_disk["run"] == str(session.path)
    assert "config.yaml" in {p.name for p in session.path.iterdir()}


def test_summarize_picks_the_epoch_the_fit_loop_saves():
    hist = [{"epoch": 1, "val/acc": 0.5}, {"epoch": 2, "val/acc": math.nan}, {"epoch": 3, "val/acc": 0.7},
            {"epoch": 4, "val/acc": 0.7}, {"epoch": 5}]
    s = summarize("r", hist, "val/acc", "max")
    assert (s.best_epoch, s.best, s.metrics) == (3, 0.7, {"val/acc": 0.7})  # first of equal values; NaN, missing ignored
    assert summarize("r", hist[:2], "val/acc", "min").best_epoch == 1
    assert (summarize("r", hist, None).best_epoch, summarize("r", hist, None).best) == (5, None)
    assert summarize("r", [{"epoch": 1, "val/acc": math.nan}], "val/acc").best_epoch is None


# --- checkpoints --------------------------------------------------------------------------------

@pytest.mark.parametrize("kind,reason", [
    ("truncated", "truncated"),
    ("objects", "not plain tensors"),
    ("junk", "not a torch file"),
    ("empty", "file is empty"),
])
def test_checkpoint_load_errors_are_one_safe_line(tmp_path, kind, reason, linear_task):
    import argparse

    path = tmp_path / "w.pt"
    if kind == "truncated":
        save_checkpoint(path, linear_task().checkpoint())
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif kind == "objects":
        torch.save({"cfg": argparse.Namespace(lr=1)}, path)
    else:
        path.write_bytes(b"" if kind == "empty" else b"\x00not a checkpoint")
    with pytest.raises(FastmedError) as err:
        load_checkpoint(path)
    msg = str(err.value)
    assert reason in msg and str(path) in msg and "\n" not in msg
    assert "weights_only" not in msg.lower()
