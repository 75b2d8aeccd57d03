"""Skip-and-report for batch jobs over slides: ``errors.csv`` + a JSON summary."""
from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from fastmed.engine.atomic import atomic_write_json, atomic_write_text


def write_report(out: Path, name: str, done: list[dict[str, Any]], failed: list[tuple[str, str]], summary: dict[str, Any]) -> None:
    """Write ``out/errors.csv`` (slide, error) and ``out/<name>.json`` (summary + per-slide rows)."""
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["slide", "error"])
    w.writerows(failed)
    atomic_write_text(out / "errors.csv", buf.getvalue())
    atomic_write_json(out / f"{name}.json", {**summary, "n_ok": len(done), "n_failed": len(failed),
                                              "slides": done, "errors": [{"slide": s, "error": e} for s, e in failed]})


def print_failures(failed: list[tuple[str, str]], out: Path) -> None:
    """One line per skipped slide, then where the report is."""
    for name, err in failed:
        print(f"  skipped {name}: {err}")
    if failed:
        print(f"  {len(failed)} slide(s) skipped; see {out / 'errors.csv'}")


def batch_exit_status(res: dict[str, Any], out: Path) -> int:
    """Print the failures of a batch summary; 1 when every slide it tried failed, else 0."""
    print_failures(res["failed"], out)
    if res["n_failed"] and res["n_ok"] == 0 and res["skipped_existing"] == 0:
        print("error: every slide failed")
        return 1
    return 0
