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

Under torchrun (``engine.distributed``) every rank runs the loop: the train
loader's sampler gets ``set_epoch(epoch)``, the train averages are taken over
every rank's steps, and rank 0's validation record (each rank evaluates the
whole validation set with the same weights) is the one every rank uses, so
the best-epoch decision is the same everywhere. Rank 0 alone writes; a resume
reads rank 0's ``weights/last.pt`` and sends it to the others.
"""
from __future__ import annotations

import math
import time
from collections import defaultdict
from typing import Any, Iterable, Protocol

from fastmed.engine import distributed
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
        main = distributed.is_main()
        if resume:
            ckpt = distributed.broadcast_object(load_checkpoint(self.run.last) if main and self.run.last.exists() else None)
            if ckpt is None:
                raise FastmedError(f"resume requested but {self.run.last} does not exist")
            _check_same_model(ckpt, task.checkpoint(), self.run.last)
            state = ckpt.get("train_state") or {}
            done = int(state.get("epoch", 0))
            if done >= self.epochs:
                raise FastmedError(f"--epochs {self.epochs} is not above the {done} epoch(s) already finished in {self.run.path}; "
                                   "give a larger --epochs to continue")
            if main:
                self.run.truncate_metrics(done)  # also drops a line torn by a kill during its append
            task.load_state_dict({"model": ckpt["model"], **state.get("task", {})})
            start, best = done + 1, state.get("best")
            print(f"resuming from epoch {start} of {self.epochs} ({done} finished); run {self.run.path}")
        elif main:
            self.run.clear_results()
        if self.config is not None and main:
            self.run.save_config(self.config)
        try:
            self._epochs(task, start, best)
        except KeyboardInterrupt as exc:
            raise RunInterrupted(str(self.run.path), resumable=self.run.last.exists()) from exc
        return distributed.broadcast_object(self.run.read_metrics() if main else None)

    def _epochs(self, task: TrainTask, start: int, best: float | None) -> None:
        last_plot = time.perf_counter()
        main = distributed.is_main()
        for epoch in range(start, self.epochs + 1):
            t0 = time.perf_counter()
            sums: dict[str, float] = defaultdict(float)
            counts: dict[str, int] = defaultdict(int)
            batches = task.train_batches(epoch)
            distributed.set_epoch(batches, epoch)
            bar = progress(batches, desc=f"epoch {epoch}/{self.epochs}", enabled=self.show_progress)
            for batch in bar:
                out = task.train_step(batch)
                for k, v in out.items():
                    sums[k] += float(v)
                    counts[k] += 1
                if hasattr(bar, "set_postfix") and out:
                    bar.set_postfix({k: f"{float(v):.3g}" for k, v in list(out.items())[:4]})
            sums, counts = _sum_over_ranks(sums, counts)
            record: dict[str, Any] = {"epoch": epoch}
            record.update({f"train/{k}": sums[k] / counts[k] for k in sums})
            record.update({f"val/{k}": float(v) for k, v in task.evaluate().items()})
            record["epoch_time_s"] = round(time.perf_counter() - t0, 3)
            record = distributed.broadcast_object(record)
            value = record.get(self.monitor) if self.monitor else None
            improved = self.monitor is None or improves(value, best, self.mode)
            if improved and value is not None:
                best = value
            if not main:
                continue
            self.run.log_metrics(record)
            ckpt = task.checkpoint()
            ckpt["meta"] = {**ckpt.get("meta", {}), "epoch": epoch, "metrics": record}
            if improved:
                save_checkpoint(self.run.best, ckpt)
            ckpt["train_state"] = {"epoch": epoch, "best": best, "task": task.state_dict()}
            save_checkpoint(self.run.last, ckpt)
            if epoch == self.epochs or time.perf_counter() - last_plot > self.PLOT_EVERY_S:
                plot_curves(self.run.read_metrics(), self.run.path / "curves.png", title=self.title)
                last_plot = time.perf_counter()


def _sum_over_ranks(sums: dict[str, float], counts: dict[str, int]) -> tuple[dict[str, float], dict[str, int]]:
    """``sums`` and ``counts`` added up over every rank (unchanged without torchrun)."""
    if distributed.world_size() == 1:
        return sums, counts
    total_s: dict[str, float] = defaultdict(float)
    total_c: dict[str, int] = defaultdict(int)
    for rank_sums, rank_counts in distributed.gather((dict(sums), dict(counts))):
        for k, v in rank_sums.items():
            total_s[k] += v
            total_c[k] += rank_counts[k]
    return total_s, total_c


def _encoder_name(encoder: dict[str, Any] | None) -> str:
    """Short name of a wsi feature encoder record: its name and the first 12 hex digits of its weights' SHA-256."""
    encoder = encoder or {}
    return f"{encoder.get('encoder')} {str(encoder.get('encoder_sha256'))[:12]}"


def _check_same_model(old: dict[str, Any], new: dict[str, Any], path: Any) -> None:
    """Refuse to resume ``old`` (weights/last.pt) with a task whose checkpoint ``new`` describes another model."""
    diffs = []
    if old.get("class_names") != new.get("class_names"):
        diffs.append(f"class names {old.get('class_names')} there, {new.get('class_names')} now")
    for key, what in (("arch", "architecture"), ("input_size", "input size")):
        if old.get(key) != new.get(key):
            diffs.append(f"{what} {old.get(key)} there, {new.get(key)} now")
    old_enc, new_enc = (c.get("meta", {}).get("encoder") for c in (old, new))  # wsi: features of another encoder
    if old_enc and new_enc and old_enc != new_enc:
        diffs.append(f"features of encoder {_encoder_name(old_enc)} there, {_encoder_name(new_enc)} now")
    if diffs:
        raise FastmedError(f"cannot resume from {path}: " + "; ".join(diffs) + " (use the run's settings and data, or start a new run)")
