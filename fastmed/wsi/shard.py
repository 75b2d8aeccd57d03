"""Slides across jobs: ``--shard k/n`` (a fixed share of the slides) and ``--claim`` (a lock file per slide).

* **Shards.** Slide ids are sorted and dealt round-robin: shard ``k`` of ``n``
  takes ids ``k, k+n, k+2n, ...``. Every job computes the same split, so ``n``
  jobs started at once (a Slurm array, one process per GPU) never share a
  slide. ``--shard`` defaults to the Slurm array task
  (``SLURM_ARRAY_TASK_ID``/``SLURM_ARRAY_TASK_COUNT``), else to the torchrun
  rank (``RANK``/``WORLD_SIZE``), else ``0/1`` (every slide).
* **Claims.** With ``--claim`` a job takes a slide only after creating
  ``<out>/.locks/<slide_id>.lock`` with ``O_CREAT | O_EXCL`` (atomic, also on
  NFS v3+), holding ``{"host", "pid", "time"}``. A finished slide's lock is
  removed (its ``.h5`` marks it done); a failed slide's lock is kept with the
  error, so no other job retries it in the same round. Locks of jobs that died
  are cleared with ``--stale-lock-hours H`` (locks older than ``H`` hours;
  ``0`` clears all).
* **Reports.** Each job writes its own ``<name>.<tag>.json`` and
  ``errors.<tag>.csv`` (``report_tag``), so reports never overwrite each
  other; ``fastmed.wsi.status`` reads them all.
"""
from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from fastmed.errors import ConfigError
from fastmed.wsi.batch_report import error_text

LOCK_DIR = ".locks"


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` of ``count`` (``0 <= index < count``)."""

    index: int = 0
    count: int = 1

    def select(self, keys: list[str]) -> set[str]:
        """The keys of this shard: sorted unique ``keys`` dealt round-robin."""
        return set(sorted(set(keys))[self.index::self.count])

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def parse_shard(text: str | None, env: Mapping[str, str] = os.environ) -> Shard:
    """``"k/n"`` as a ``Shard``; ``None`` = from the Slurm array or torchrun environment, else ``0/1``."""
    if text is None:
        if "SLURM_ARRAY_TASK_ID" in env and "SLURM_ARRAY_TASK_COUNT" in env:
            task, lo = int(env["SLURM_ARRAY_TASK_ID"]), int(env.get("SLURM_ARRAY_TASK_MIN", 0))
            step = int(env.get("SLURM_ARRAY_TASK_STEP", 1))  # --array=1-10 or 0-18:2: the task's position
            return _checked((task - lo) // step, int(env["SLURM_ARRAY_TASK_COUNT"]), "SLURM_ARRAY_TASK_ID/COUNT")
        if "RANK" in env and "WORLD_SIZE" in env:
            return _checked(int(env["RANK"]), int(env["WORLD_SIZE"]), "RANK/WORLD_SIZE")
        return Shard()
    k, sep, n = text.partition("/")
    if not sep or not k.strip().isdigit() or not n.strip().isdigit():
        raise ConfigError(f"option --shard must be K/N (e.g. 0/4), got {text!r}")
    return _checked(int(k), int(n), "option --shard")


def _checked(index: int, count: int, source: str) -> Shard:
    if count < 1 or not 0 <= index < count:
        raise ConfigError(f"{source}: shard {index}/{count} is not one of 0/{max(count, 1)} .. {max(count, 1) - 1}/{max(count, 1)}")
    return Shard(index, count)


def report_tag(shard: Shard, claim: bool) -> str:
    """The suffix of this job's report files: ``""`` alone, ``shard-K-of-N``, plus ``host-pid`` when claiming."""
    parts = [f"shard-{shard.index}-of-{shard.count}"] if shard.count > 1 else []
    if claim:
        parts.append(f"{socket.gethostname()}-{os.getpid()}")
    return ".".join(parts)


class SlideLocks:
    """Per-slide lock files in ``<folder>/.locks`` (see the module docstring)."""

    def __init__(self, folder: str | os.PathLike):
        self.dir = Path(folder) / LOCK_DIR

    def path(self, sid: str) -> Path:
        return self.dir / f"{sid}.lock"

    def claim(self, sid: str) -> bool:
        """Create the slide's lock atomically; False when another job holds it."""
        self.dir.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(self.path(sid), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump({"host": socket.gethostname(), "pid": os.getpid(), "time": time.time()}, f)
        return True

    def release(self, sid: str) -> None:
        """Remove the lock of a finished slide."""
        self.path(sid).unlink(missing_ok=True)

    def mark_failed(self, sid: str, error: str) -> None:
        """Keep the lock, adding the error: no other job retries the slide until the lock is cleared."""
        info = self.read(self.path(sid)) or {}
        self.path(sid).write_text(json.dumps({**info, "error": error}), encoding="utf-8")

    @staticmethod
    def read(path: Path) -> dict | None:
        """A lock's content (None when it vanished or is being written)."""
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None

    def held(self) -> dict[str, dict]:
        """``slide id -> lock content`` of every lock."""
        if not self.dir.is_dir():
            return {}
        return {p.stem: self.read(p) or {} for p in sorted(self.dir.glob("*.lock"))}

    def clear_stale(self, hours: float) -> list[str]:
        """Remove locks older than ``hours`` (by their recorded time, else file age); returns the slide ids."""
        cleared = []
        now = time.time()
        for sid, info in self.held().items():
            since = info.get("time")
            if since is None:
                try:
                    since = self.path(sid).stat().st_mtime
                except OSError:  # removed meanwhile
                    continue
            if now - float(since) >= hours * 3600:
                self.release(sid)
                cleared.append(sid)
        return cleared


def run_slide(sid: str, out_file: Path, work: Callable[[], dict[str, Any]],
              locks: SlideLocks | None = None) -> tuple[dict[str, Any] | None, str | None]:
    """Run one slide's ``work``: ``(row, None)``, ``(None, error)``, or ``(None, None)`` when another job holds or did it.

    Without ``locks`` the slide is simply run (its failure reported, never raised).
    With them it runs only once its lock is taken and its output is still missing.
    """
    if locks is not None:
        if not locks.claim(sid):
            return None, None
        if out_file.exists():  # finished by another job between our listing and our claim
            locks.release(sid)
            return None, None
    try:
        row = work()
    except Exception as exc:  # noqa: BLE001 - one bad slide is reported, the rest go on
        err = error_text(exc)
        if locks is not None:
            locks.mark_failed(sid, err)
        return None, err
    if locks is not None:
        locks.release(sid)
    return row, None


def start_job(cfg) -> Shard:
    """The shard of a ``wsi tile`` / ``wsi features`` job (``cfg.shard``), after clearing stale locks if asked."""
    shard = parse_shard(cfg.shard)
    if cfg.stale_lock_hours is not None:
        cleared = SlideLocks(cfg.out).clear_stale(cfg.stale_lock_hours)
        print(f"cleared {len(cleared)} stale lock(s) in {Path(cfg.out) / LOCK_DIR}" + (f": {', '.join(cleared[:10])}" if cleared else ""))
    return shard


def job_note(res: dict[str, Any]) -> str:
    """``"; shard 0/2, 3 taken by other jobs"`` for a sharded or claiming job's summary line, else ``""``."""
    parts = [f"shard {res['shard']}"] if res["shard"] != "0/1" else []
    if res["claim"]:
        parts.append(f"{res['taken_by_other_jobs']} taken by other jobs")
    return "; " + ", ".join(parts) if parts else ""
