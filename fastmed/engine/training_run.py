"""The prologue and the summary every trainer shares.

A trainer's run function has this shape::

    def run_train(cfg) -> RunSummary:              # cfg: a cfg.common.FitOptions subclass
        session = start_run(cfg, "polyp", "train")  # seed, device, run folder (nothing written yet)
        data = load_my_data(cfg)                    # validate every input first ...
        task = MyTask(cfg, data, session.device)    # ... (a TrainTask of engine.fit)
        summary = session.fit(task, monitor="val/acc", mode="max", title="polyp", skipped=len(data.skipped))
        write_task_outputs(session.run.path)        # confusion matrices, overlays, ...
        return session.finish(summary, my_metric=value)  # optional: extra metrics into summary.json

``start_run`` seeds Python/NumPy/torch, resolves the device and picks the run
folder. An explicit ``--out`` that already holds a run (``metrics.jsonl`` or
a checkpoint in ``weights/``) is refused unless ``--resume`` (continue it) or
``--overwrite`` (replace it) is given; ``--resume`` needs its
``weights/last.pt``. The folder is created when ``session.run`` is first used,
and ``config.yaml`` is written by the fit loop once the run can start, so a
run refused for bad inputs leaves no config behind.

``session.fit`` runs ``engine.fit.FitLoop`` and returns a ``RunSummary``,
also written as ``summary.json``; callers (the demo stages, the benchmarks)
use the returned summary instead of reading the run folder back.

Under torchrun (``engine.distributed``) ``start_run`` joins the process group,
seeds each rank with ``seed + rank`` (augmentation differs per rank; DDP
copies rank 0's initial weights to all), and rank 0 alone picks and checks
the run folder and sends it (or the refusal) to every rank. ``session.run``
of the other ranks is a scratch folder, deleted at exit, so what a trainer
writes there during training goes nowhere; ``session.fit`` ends those ranks
after the fit loop (``distributed.end_worker``).
"""
from __future__ import annotations

import atexit
import dataclasses
import shutil
import tempfile
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import torch

from fastmed.engine import distributed
from fastmed.engine.atomic import atomic_write_json
from fastmed.engine.device import select_device
from fastmed.engine.fit import FitLoop, TrainTask, improves
from fastmed.engine.run_dir import RunDir, holds_run, pick_run_dir
from fastmed.engine.seed import seed_everything
from fastmed.errors import FastmedError


@dataclass(frozen=True)
class RunSummary:
    """What every trainer returns; ``as_dict()`` is its ``summary.json``."""

    run: Path                    # the run folder
    weights: Path                # weights/best.pt (with no monitor: the last epoch's weights)
    epochs: int                  # epochs finished (resumed ones included)
    best_epoch: int | None       # the epoch saved as best.pt; None when the monitor never had a value
    monitor: str | None          # the metric that picks best.pt, e.g. "val/acc"; None: every epoch replaces it
    best: float | None           # the monitor's value at best_epoch
    skipped: int = 0             # unreadable or unusable inputs that were skipped
    metrics: dict[str, Any] = field(default_factory=dict)  # best epoch's train/ and val/ values + the trainer's extras
    history: list[dict[str, Any]] = field(default_factory=list, repr=False, compare=False)  # metrics.jsonl records

    @property
    def last_weights(self) -> Path:
        """weights/last.pt (the last epoch, with the state to resume)."""
        return self.run / "weights" / "last.pt"

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready fields (paths as text; the per-epoch history stays in metrics.jsonl)."""
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "history"}
        return {**data, "run": str(self.run), "weights": str(self.weights)}


def summarize(run: Path, history: list[dict[str, Any]], monitor: str | None, mode: str = "max", skipped: int = 0) -> RunSummary:
    """The ``RunSummary`` of metric ``history``; the best epoch is picked as the fit loop picks best.pt.

    That is the first epoch with the highest (``mode="max"``) or lowest value of
    ``monitor``, ignoring missing and NaN values; the last epoch when ``monitor`` is None.
    """
    best_rec: dict[str, Any] | None = history[-1] if history and monitor is None else None
    for rec in history if monitor else []:
        if improves(rec.get(monitor), best_rec[monitor] if best_rec else None, mode):
            best_rec = rec
    shown = best_rec or (history[-1] if history else {})
    return RunSummary(
        run=Path(run), weights=Path(run) / "weights" / "best.pt", epochs=len(history),
        best_epoch=best_rec["epoch"] if best_rec else None, monitor=monitor,
        best=best_rec.get(monitor) if best_rec and monitor else None, skipped=skipped,
        metrics={k: v for k, v in shown.items() if k.startswith(("train/", "val/"))}, history=list(history),
    )


class TrainingRun:
    """One training run of a command: its config, device and run folder (see the module doc)."""

    def __init__(self, cfg: Any, path: Path, device: torch.device):
        self.cfg, self.path, self.device = cfg, Path(path), device

    @cached_property
    def run(self) -> RunDir:
        """The run folder, created (and cleared of stale temporary files) on first use; on a torchrun rank
        other than 0 a scratch folder removed at exit."""
        if distributed.is_main():
            return RunDir(self.path)
        scratch = tempfile.mkdtemp(prefix=f"fastmed-rank{distributed.rank()}-")
        atexit.register(shutil.rmtree, scratch, ignore_errors=True)
        return RunDir(scratch)

    def fit(self, task: TrainTask, *, monitor: str | None = None, mode: str = "max", title: str = "", skipped: int = 0) -> RunSummary:
        """Write config.yaml, run the fit loop (resuming when asked), write and return the summary.

        Under torchrun only rank 0 returns: the other ranks exit after the loop.
        """
        cfg = self.cfg
        loop = FitLoop(self.run, cfg.epochs, monitor=monitor, mode=mode, show_progress=cfg.progress, title=title, config=cfg)
        summary = summarize(self.path, loop.fit(task, resume=cfg.resume), monitor, mode, skipped)
        distributed.end_worker()
        atomic_write_json(self.run.summary_file, summary.as_dict())
        chosen = f"best epoch {summary.best_epoch} ({monitor} {summary.best:.4g})" if summary.best is not None else \
            f"{summary.epochs} epoch(s)"
        print(f"{chosen}; weights {summary.weights}; run {self.path}")
        return summary

    def finish(self, summary: RunSummary, **metrics: Any) -> RunSummary:
        """``summary`` with ``metrics`` added to its ``metrics``; rewrites summary.json."""
        summary = dataclasses.replace(summary, metrics={**summary.metrics, **metrics})
        atomic_write_json(self.run.summary_file, summary.as_dict())
        return summary


def start_run(cfg: Any, task: str, mode: str) -> TrainingRun:
    """Seed, pick the device and the run folder ``runs/<task>/<mode>`` (or ``cfg.out``) of a trainer.

    ``cfg`` has the fields of ``cfg.common.FitOptions`` (seed, device, out,
    resume, overwrite, epochs, progress). Raises ``FastmedError`` for an
    ``--out`` that holds a run without ``--resume``/``--overwrite``, and for a
    ``--resume`` without ``weights/last.pt``.
    """
    device = distributed.init_from_env(select_device(cfg.device))
    seed_everything(cfg.seed + distributed.rank())
    path, refusal = distributed.broadcast_object(_pick_run_folder(cfg, task, mode) if distributed.is_main() else None)
    if refusal:
        raise FastmedError(refusal)
    return TrainingRun(cfg, path, device)


def _pick_run_folder(cfg: Any, task: str, mode: str) -> tuple[Path, str | None]:
    """The run folder of ``start_run``, and why it is refused (None: accepted)."""
    path = pick_run_dir(task, mode, cfg.out, resume=cfg.resume)
    if path.exists() and not path.is_dir():
        return path, f"--out {path} is a file, not a run folder"
    if cfg.resume and not (path / "weights" / "last.pt").is_file():
        return path, f"--resume: {path} has no weights/last.pt to continue from"
    if not cfg.resume and not cfg.overwrite and holds_run(path):
        return path, (f"{path} already holds a run (metrics.jsonl or weights/); "
                      "add --resume to continue it or --overwrite to replace it")
    return path, None
