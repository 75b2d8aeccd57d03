"""The fit loop shared by every task.

A task supplies a ``TrainTask`` (its model glue, losses and optimizers); the
loop owns epochs, progress bars, metric logging, checkpoints, curves and
resume::

    task = MyTask(cfg)                      # implements TrainTask
    loop = FitLoop(RunDir(path), epochs=10, monitor="val/acc", mode="max", config=cfg)
    history = loop.fit(task, resume=cfg.resume)

(Trainers do not call it directly: ``engine.training_run`` wraps it with the
seed, device, run folder and summary every trainer shares.)

Per epoch: ``train_step`` on every batch of ``train_batches()`` (losses are
averaged into ``train/<name>``), then ``evaluate()`` (``val/<name>``), one line
in ``metrics.jsonl``, ``weights/last.pt`` (checkpoint + ``train_state`` for
resume) and ``weights/best.pt`` when ``monitor`` improves, and ``curves.png`` (after the
last epoch, and at most every ``PLOT_EVERY_S`` seconds before).

Start: ``config.yaml`` is written only once the run can start. A run started
without ``resume`` removes the folder's previous metrics, summary and
checkpoints (refusing to replace a run unasked is ``training_run``'s job).
``resume`` continues after the epoch recorded in ``weights/last.pt``, once its
class names, architecture and input size match the task's; ``epochs`` must be
above the finished count. Ctrl-C raises ``errors.RunInterrupted`` naming the folder.
"""
from __future__ import annotations

import math
import time
from collections import defaultdict
from typing import Any, Iterable, Protocol

from fastmed.engine.checkpoint import load_checkpoint, save_checkpoint
from fastmed.engine.plots import plot_curves
from fastmed.engine.progress import progress
from fastmed.engine.run_dir import RunDir
from fastmed.errors import FastmedError, RunInterrupted


def improves(value: float | None, best: float | None, mode: str) -> bool:
    """Whether a monitored ``value`` replaces ``best`` (strictly higher for ``"max"``, lower for ``"min"``;
    a missing or NaN value never does). The one rule that picks best.pt and the summary's best epoch."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return False
    return best is None or (value > best if mode == "max" else value < best)


class TrainTask(Protocol):
    """What a task gives the fit loop."""

    def train_batches(self, epoch: int) -> Iterable[Any]:
        """The batches of one epoch (a DataLoader, usually)."""

    def train_step(self, batch: Any) -> dict[str, float]:
        """One optimisation step; returns scalar losses/metrics as floats."""

    def evaluate(self) -> dict[str, float]:
        """Validation metrics after an epoch (may be empty)."""

    def checkpoint(self) -> dict[str, Any]:
        """The self-describing model checkpoint (``engine.checkpoint.make_checkpoint``)."""

    def state_dict(self) -> dict[str, Any]:
        """Optimizer/scheduler/extra state needed to resume."""

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore model weights and what ``state_dict`` saved."""


class FitLoop:
    """Run ``epochs`` epochs of a ``TrainTask`` in a run folder."""

    #: curves.png is redrawn at most this often (and after the last epoch): plotting costs seconds
    PLOT_EVERY_S = 30.0

    def __init__(self, run: RunDir, epochs: int, monitor: str | None = None, mode: str = "max", show_progress: bool = True,
                 title: str = "", config: Any = None):
        if epochs < 1:
            raise FastmedError(f"epochs must be >= 1, got {epochs}")
        if mode not in ("max", "min"):
            raise ValueError(f"mode must be 'max' or 'min', got {mode!r}")
        self.run, self.epochs, self.monitor, self.mode = run, epochs, monitor, mode
        self.show_progress, self.title, self.config = show_progress, title, config

    def fit(self, task: TrainTask, resume: bool = False) -> list[dict[str, Any]]:
        """Train; return the metric records of all epochs (resumed ones included)."""
        start, best = 1, None
        if resume:
            if not self.run.last.exists():
                raise FastmedError(f"resume requested but {self.run.last} does not exist")
            ckpt = load_checkpoint(self.run.last)
            _check_same_model(ckpt, task.checkpoint(), self.run.last)
            state = ckpt.get("train_state") or {}
            done = int(state.get("epoch", 0))
            if done >= self.epochs:
                raise FastmedError(f"--epochs {self.epochs} is not above the {done} epoch(s) already finished in {self.run.path}; "
                                   "give a larger --epochs to continue")
            self.run.truncate_metrics(done)  # also drops a line torn by a kill during its append
            task.load_state_dict({"model": ckpt["model"], **state.get("task", {})})
            start, best = done + 1, state.get("best")
            print(f"resuming from epoch {start} of {self.epochs} ({done} finished); run {self.run.path}")
        else:
            self.run.clear_results()
        if self.config is not None:
            self.run.save_config(self.config)
        try:
            self._epochs(task, start, best)
        except KeyboardInterrupt as exc:
            raise RunInterrupted(str(self.run.path), resumable=self.run.last.exists()) from exc
        return self.run.read_metrics()

    def _epochs(self, task: TrainTask, start: int, best: float | None) -> None:
        last_plot = time.perf_counter()
        for epoch in range(start, self.epochs + 1):
            t0 = time.perf_counter()
            sums: dict[str, float] = defaultdict(float)
            counts: dict[str, int] = defaultdict(int)
            bar = progress(task.train_batches(epoch), desc=f"epoch {epoch}/{self.epochs}", enabled=self.show_progress)
            for batch in bar:
                out = task.train_step(batch)
                for k, v in out.items():
                    sums[k] += float(v)
                    counts[k] += 1
                if hasattr(bar, "set_postfix") and out:
                    bar.set_postfix({k: f"{float(v):.3g}" for k, v in list(out.items())[:4]})
            record: dict[str, Any] = {"epoch": epoch}
            record.update({f"train/{k}": sums[k] / counts[k] for k in sums})
            record.update({f"val/{k}": float(v) for k, v in task.evaluate().items()})
            record["epoch_time_s"] = round(time.perf_counter() - t0, 3)
            self.run.log_metrics(record)
            ckpt = task.checkpoint()
            value = record.get(self.monitor) if self.monitor else None
            improved = self.monitor is None or improves(value, best, self.mode)
            if improved and value is not None:
                best = value
            ckpt["meta"] = {**ckpt.get("meta", {}), "epoch": epoch, "metrics": record}
            if improved:
                save_checkpoint(self.run.best, ckpt)
            ckpt["train_state"] = {"epoch": epoch, "best": best, "task": task.state_dict()}
            save_checkpoint(self.run.last, ckpt)
            if epoch == self.epochs or time.perf_counter() - last_plot > self.PLOT_EVERY_S:
                plot_curves(self.run.read_metrics(), self.run.path / "curves.png", title=self.title)
                last_plot = time.perf_counter()


def _check_same_model(old: dict[str, Any], new: dict[str, Any], path: Any) -> None:
    """Refuse to resume ``old`` (weights/last.pt) with a task whose checkpoint ``new`` describes another model."""
    diffs = []
    if old.get("class_names") != new.get("class_names"):
        diffs.append(f"class names {old.get('class_names')} there, {new.get('class_names')} now")
    for key, what in (("arch", "architecture"), ("input_size", "input size")):
        if old.get(key) != new.get(key):
            diffs.append(f"{what} {old.get(key)} there, {new.get(key)} now")
    if diffs:
        raise FastmedError(f"cannot resume from {path}: " + "; ".join(diffs) + " (use the run's settings and data, or start a new run)")
