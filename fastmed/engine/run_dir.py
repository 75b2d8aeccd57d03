"""Run folders: ``runs/<task>/<name>/`` with config, weights, metrics and plots.

Layout::

    runs/polyp/train/            (train2, train3, ... when the name is taken)
      config.yaml                resolved configuration (written once the run can start)
      metrics.jsonl              one JSON object per epoch
      summary.json               the trainer's ``RunSummary`` (engine.training_run)
      weights/last.pt  best.pt   self-describing checkpoints
      *.png                      curves, confusion matrices, sample grids
"""
from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from fastmed.engine.atomic import atomic_write_text, remove_stale_temp_files
from fastmed.errors import FastmedError


def pick_run_dir(task: str, name: str, out: str | os.PathLike | None = None, *, resume: bool = False, root: str = "runs") -> Path:
    """The run folder's path (nothing is created).

    ``out`` given: that path. Otherwise ``root/task/name``, adding 2, 3, ...
    to ``name`` when it already exists, unless ``resume`` (then the newest
    existing one).
    """
    if out:
        return Path(out)
    base = Path(root) / task
    path = base / name
    if path.exists():
        candidates = [path] + sorted(base.glob(f"{name}[0-9]*"), key=lambda p: p.stat().st_mtime)
        if resume:
            return candidates[-1]
        i = 2
        while (base / f"{name}{i}").exists():
            i += 1
        path = base / f"{name}{i}"
    return path


def new_run_dir(task: str, name: str, out: str | os.PathLike | None = None, *, resume: bool = False, root: str = "runs") -> Path:
    """``pick_run_dir``, created."""
    path = pick_run_dir(task, name, out, resume=resume, root=root)
    path.mkdir(parents=True, exist_ok=True)
    return path


def holds_run(path: str | os.PathLike) -> bool:
    """Whether ``path`` has the results of a run: ``metrics.jsonl`` or a checkpoint in ``weights/``."""
    path = Path(path)
    return (path / "metrics.jsonl").is_file() or any((path / "weights").glob("*.pt"))


class RunDir:
    """A run folder and its writers (config, metrics.jsonl, weights paths).

    Opening one creates it and removes the temporary files that a killed
    atomic save left in it and in ``weights/`` (``engine.atomic.TEMP_NAME``).
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        (self.path / "weights").mkdir(exist_ok=True)
        for folder in (self.path, self.path / "weights"):
            remove_stale_temp_files(folder)

    @property
    def last(self) -> Path:
        return self.path / "weights" / "last.pt"

    @property
    def best(self) -> Path:
        return self.path / "weights" / "best.pt"

    @property
    def metrics_file(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def summary_file(self) -> Path:
        return self.path / "summary.json"

    def save_config(self, config: Any) -> Path:
        """Write the resolved config (a dataclass or dict) as ``config.yaml``."""
        data = dataclasses.asdict(config) if dataclasses.is_dataclass(config) else dict(config)
        data = json.loads(json.dumps(data, default=str))  # Paths etc. to plain text
        return atomic_write_text(self.path / "config.yaml", yaml.safe_dump(data, sort_keys=False))

    def log_metrics(self, record: dict[str, Any]) -> None:
        """Append one JSON line (a ``time`` stamp is added) to ``metrics.jsonl``."""
        record = {**record, "time": round(time.time(), 3)}
        with open(self.metrics_file, "a", encoding="utf-8") as f:
            f.write(json.dumps(record, default=float) + "\n")

    def read_metrics(self) -> list[dict[str, Any]]:
        """All records of ``metrics.jsonl`` (empty when there is none).

        An unparseable LAST line is what a process killed during an append
        leaves: it is skipped with a warning. One elsewhere is an error.
        """
        if not self.metrics_file.exists():
            return []
        lines = self.metrics_file.read_text(encoding="utf-8").splitlines()
        numbered = [(i, line) for i, line in enumerate(lines, 1) if line.strip()]
        records = []
        for k, (i, line) in enumerate(numbered):
            try:
                record = json.loads(line)
                if not isinstance(record, dict):
                    raise ValueError("not a JSON object")
            except ValueError as exc:
                if k == len(numbered) - 1:
                    print(f"warning: {self.metrics_file} line {i} is incomplete (an interrupted write); skipped", file=sys.stderr)
                    break
                raise FastmedError(f"{self.metrics_file} line {i} is not a JSON record ({exc}); fix or remove that line") from exc
            records.append(record)
        return records

    def truncate_metrics(self, max_epoch: int) -> None:
        """Keep only records with ``epoch <= max_epoch`` (used on resume)."""
        kept = [r for r in self.read_metrics() if r.get("epoch", 0) <= max_epoch]
        atomic_write_text(self.metrics_file, "".join(json.dumps(r) + "\n" for r in kept))

    def clear_results(self) -> None:
        """Remove the previous run's metrics, summary and checkpoints (a fresh run in this folder)."""
        for path in (self.metrics_file, self.summary_file, self.last, self.best):
            path.unlink(missing_ok=True)
