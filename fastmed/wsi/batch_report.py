"""Skip-and-report for batch jobs over slides: ``errors.csv`` + a JSON summary, per job (``tag``).

A job of a sharded or claiming run (``fastmed.wsi.shard``) writes
``errors.<tag>.csv`` and ``<name>.<tag>.json``; a plain run ``errors.csv`` and
``<name>.json``. ``read_reports`` gathers every job's report of a folder.
"""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from fastmed.engine.atomic import atomic_write_json, atomic_write_text


def write_report(out: Path, name: str, done: list[dict[str, Any]], failed: list[tuple[str, str]], summary: dict[str, Any],
                 tag: str = "") -> Path:
    """Write ``out/errors[.tag].csv`` (slide, error) and ``out/<name>[.tag].json`` (summary + per-slide rows); return the csv."""
    suffix = f".{tag}" if tag else ""
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["slide", "error"])
    w.writerows(failed)
    atomic_write_text(out / f"errors{suffix}.csv", buf.getvalue())
    atomic_write_json(out / f"{name}{suffix}.json", {**summary, "n_ok": len(done), "n_failed": len(failed),
                                                       "slides": done, "errors": [{"slide": s, "error": e} for s, e in failed]})
    return out / f"errors{suffix}.csv"


def read_reports(folder: Path, name: str) -> list[dict[str, Any]]:
    """Every job's ``<name>[.tag].json`` in ``folder`` (sorted by file name; unreadable ones are left out)."""
    reports = []
    for path in sorted(Path(folder).glob(f"{name}*.json")):
        if path.name != f"{name}.json" and not path.name.startswith(f"{name}."):
            continue
        try:
            reports.append(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError):
            continue
    return reports


def error_text(exc: Exception) -> str:
    """One line for a failed slide: a ``FastmedError``'s message, else the exception type and message."""
    from fastmed.errors import FastmedError

    msg = str(exc) if isinstance(exc, FastmedError) else f"{type(exc).__name__}: {exc}"
    return msg.replace("\n", " ")


def print_failures(failed: list[tuple[str, str]], errors_csv: Path) -> None:
    """One line per skipped slide, then where the report is."""
    for name, err in failed:
        print(f"  skipped {name}: {err}")
    if failed:
        print(f"  {len(failed)} slide(s) skipped; see {errors_csv}")


def batch_exit_status(res: dict[str, Any]) -> int:
    """Print the failures of a batch summary (``res["errors_csv"]``); 1 when every slide it tried failed, else 0."""
    print_failures(res["failed"], res["errors_csv"])
    if res["n_failed"] and res["n_ok"] == 0 and res["skipped_existing"] == 0:
        print("error: every slide failed")
        return 1
    return 0
