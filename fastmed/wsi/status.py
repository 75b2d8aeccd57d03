"""``fastmed wsi status``: done / failed / running / pending slides of a ``wsi tile`` or ``wsi features`` folder.

Reads every job's report (``tiling*.json`` / ``features*.json``, one per shard
or claiming job), the lock files (``fastmed.wsi.shard``) and the ``.h5``
outputs. A slide is *done* when its ``.h5`` exists, *failed* when a report or
a kept lock records an error and it has no ``.h5``, *running* when a job holds
its lock, else *pending*. The expected slides are those of the source folder
(the slides for tiling, the tiles for features), read from the reports or
given with ``--source``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from fastmed.errors import DataError
from fastmed.wsi.batch_report import read_reports
from fastmed.wsi.patch_file import list_patch_files
from fastmed.wsi.shard import SlideLocks
from fastmed.wsi.slide_io import find_slides, slide_id

STAGES = ("tiling", "features")


def folder_status(folder: str | Path, source: str | Path | None = None) -> dict[str, Any]:
    """``{"stage", "source", "done", "failed": {id: error}, "running": {id: lock}, "pending"}`` (lists of slide ids)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"folder not found: {folder}")
    stage = next((s for s in reversed(STAGES) if read_reports(folder, s)), None)
    reports = read_reports(folder, stage) if stage else []
    src = Path(source) if source else next((Path(r["source"]) for r in reversed(reports) if r.get("source")), None)
    if src is None:
        raise DataError(f"{folder} holds no tiling or features report; name the slides or tiles folder with --source")
    if stage is None:
        stage = "features" if any(src.glob("*.h5")) else "tiling"
    if stage == "tiling":
        expected = {slide_id(p) for p in find_slides(src)}
    else:
        expected = {p.stem for p in list_patch_files(src)}
    done = {sid for sid in expected if (folder / f"{sid}.h5").exists()}
    failed = reported_failures(folder, stage)
    running = {}
    for sid, lock in SlideLocks(folder).held().items():
        if "error" in lock:
            failed[sid] = lock["error"]
        else:
            running[sid] = lock
    failed = {sid: err for sid, err in failed.items() if sid not in done}
    running = {sid: lock for sid, lock in running.items() if sid not in done and sid not in failed}
    pending = sorted(expected - done - set(failed) - set(running))
    return {"stage": stage, "source": str(src), "expected": len(expected), "done": sorted(done), "failed": failed,
            "running": running, "pending": pending}


def reported_failures(folder: Path, stage: str) -> dict[str, str]:
    """``slide id -> error`` from every ``stage`` report of ``folder``, for slides still without an ``.h5``."""
    failed: dict[str, str] = {}
    for report in read_reports(folder, stage):  # by file name; a later job's error replaces an earlier one
        for e in report.get("errors", []):
            failed[slide_id(e["slide"]) if stage == "tiling" else e["slide"]] = e["error"]  # tiling reports name files
    return {sid: err for sid, err in failed.items() if not (folder / f"{sid}.h5").exists()}


def run_status(cfg) -> int:
    """CLI runner of ``fastmed wsi status``; 0, or 1 when some slide failed."""
    st = folder_status(cfg.folder, cfg.source)
    print(f"{st['stage']} of {st['source']} into {cfg.folder}: {st['expected']} slide(s): {len(st['done'])} done, "
          f"{len(st['failed'])} failed, {len(st['running'])} running, {len(st['pending'])} pending")
    for sid, err in sorted(st["failed"].items()):
        print(f"  failed {sid}: {err}")
    for sid, lock in sorted(st["running"].items()):
        print(f"  running {sid}: host {lock.get('host', '?')}, pid {lock.get('pid', '?')}")
    if cfg.list_pending:
        for sid in st["pending"]:
            print(f"  pending {sid}")
    return 1 if st["failed"] else 0
