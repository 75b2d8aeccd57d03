"""The fit loop shared by every task.

A task supplies a ``TrainTask`` (its model glue, losses and optimizers); the
loop owns epochs, progress bars, metric logging, checkpoints, curves and
resume::

    task = MyTask(cfg)                      # implements TrainTask
    loop = FitLoop(RunDir(path), epochs=10, monitor="val/acc", mode="max")
    history = loop.fit(task, resume=cfg.resume)

Per epoch: ``train_step`` on every batch of ``train_batches()`` (losses are
averaged into ``train/<name>``), then ``evaluate()`` (``val/<name>``), one line
in ``metrics.jsonl``, ``weights/last.pt`` (checkpoint + ``train_state`` for
resume) and ``weights/best.pt`` when ``monitor`` improves, and ``curves.png`` (after the
last epoch, and at most every ``PLOT_EVERY_S`` seconds before). A run started
without ``resume`` in a folder that already has a ``metrics.jsonl`` replaces it.
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
from fastmed.errors import FastmedError


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

    def __init__(self, run: RunDir, epochs: int, monitor: str | None = None, mode: str = "max", show_progress: bool = True, title: str = ""):
        if epochs < 1:
            raise FastmedError(f"epochs must be >= 1, got {epochs}")
        if mode not in ("max", "min"):
            raise ValueError(f"mode must be 'max' or 'min', got {mode!r}")
        self.run, self.epochs, self.monitor, self.mode = run, epochs, monitor, mode
        self.show_progress, self.title = show_progress, title

    def _better(self, value: float, best: float | None) -> bool:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return False
        if best is None:
            return True
        return value > best if self.mode == "max" else value < best

    def fit(self, task: TrainTask, resume: bool = False) -> list[dict[str, Any]]:
        """Train; return the metric records of all epochs (resumed ones included)."""
        start, best = 1, None
        if resume:
            if not self.run.last.exists():
                raise FastmedError(f"resume requested but {self.run.last} does not exist")
            ckpt = load_checkpoint(self.run.last)
            state = ckpt.get("train_state") or {}
            task.load_state_dict({"model": ckpt["model"], **state.get("task", {})})
            start = int(state.get("epoch", 0)) + 1
            best = state.get("best")
            self.run.truncate_metrics(start - 1)
            if start > self.epochs:
                return self.run.read_metrics()
        else:
            self.run.truncate_metrics(0)  # a fresh run in a reused folder starts a fresh log
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
            improved = self.monitor is None or self._better(value, best)
            if improved and value is not None:
                best = value
            ckpt["meta"] = {**ckpt.get("meta", {}), "epoch": epoch, "metrics": {k: v for k, v in record.items() if k != "time"}}
            if improved:
                save_checkpoint(self.run.best, ckpt)
            ckpt["train_state"] = {"epoch": epoch, "best": best, "task": task.state_dict()}
            save_checkpoint(self.run.last, ckpt)
            if epoch == self.epochs or time.perf_counter() - last_plot > self.PLOT_EVERY_S:
                plot_curves(self.run.read_metrics(), self.run.path / "curves.png", title=self.title)
                last_plot = time.perf_counter()
        return self.run.read_metrics()
