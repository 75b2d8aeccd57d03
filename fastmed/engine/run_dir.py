"""Run folders: ``runs/<task>/<name>/`` with config, weights, metrics and plots.

Layout::

    runs/polyp/train/            (train2, train3, ... when the name is taken)
      config.yaml                resolved configuration
      metrics.jsonl              one JSON object per epoch
      weights/last.pt  best.pt   self-describing checkpoints
      *.png                      curves, confusion matrices, sample grids
"""
from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path
from typing import Any

import yaml

from fastmed.engine.atomic import atomic_write_text


def new_run_dir(task: str, name: str, out: str | os.PathLike | None = None, *, resume: bool = False, root: str = "runs") -> Path:
    """Pick the run folder.

    ``out`` given: use it as is (created; reused on resume). Otherwise
    ``root/task/name``, adding 2, 3, ... to ``name`` when it already exists,
    unless ``resume`` (then the newest existing one is reused).
    """
    if out:
        path = Path(out)
    else:
        base = Path(root) / task
        path = base / name
        if path.exists():
            candidates = [path] + sorted(base.glob(f"{name}[0-9]*"), key=lambda p: p.stat().st_mtime)
            if resume:
                path = candidates[-1]
            else:
                i = 2
                while (base / f"{name}{i}").exists():
                    i += 1
                path = base / f"{name}{i}"
    path.mkdir(parents=True, exist_ok=True)
    return path


class RunDir:
    """A run folder and its writers (config, metrics.jsonl, weights paths)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        (self.path / "weights").mkdir(exist_ok=True)

    @property
    def last(self) -> Path:
        return self.path / "weights" / "last.pt"

    @property
    def best(self) -> Path:
        return self.path / "weights" / "best.pt"

    @property
    def metrics_file(self) -> Path:
        return self.path / "metrics.jsonl"

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
        """All records of ``metrics.jsonl`` (empty when there is none)."""
        if not self.metrics_file.exists():
            return []
        lines = self.metrics_file.read_text(encoding="utf-8").splitlines()
        return [json.loads(line) for line in lines if line.strip()]

    def truncate_metrics(self, max_epoch: int) -> None:
        """Keep only records with ``epoch <= max_epoch`` (used on resume)."""
        kept = [r for r in self.read_metrics() if r.get("epoch", 0) <= max_epoch]
        atomic_write_text(self.metrics_file, "".join(json.dumps(r) + "\n" for r in kept))
