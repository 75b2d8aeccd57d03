"""Where an evidence script writes its results, and the ``--quick`` / ``--out`` options every one of them has.

A full run writes into ``benchmarks/results`` (the numbers the README quotes).
A ``--quick`` run (1 seed, tiny data, few epochs: a smoke test of the whole
script, run by ``make test-all``) writes into a fresh temporary folder unless
``--out`` names one, and never into ``benchmarks/results``.
"""
from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def add_quick_options(parser: argparse.ArgumentParser, what: str) -> None:
    """Add ``--quick`` (described by ``what``) and ``--out``."""
    parser.add_argument("--quick", action="store_true", help=f"smoke run: {what}; results go to a temporary folder")
    parser.add_argument("--out", help="results folder (default: benchmarks/results; with --quick a new temporary folder)")


def results_folder(args: argparse.Namespace, name: str) -> Path:
    """The results folder of this run (created); ``name`` prefixes a temporary one."""
    if args.out:
        path = Path(args.out)
    elif args.quick:
        path = Path(tempfile.mkdtemp(prefix=f"{name}_quick_"))
        print(f"--quick: results go to {path}", flush=True)
    else:
        path = RESULTS
    if args.quick and path.resolve() == RESULTS:
        raise SystemExit(f"--quick does not write into {RESULTS} (its numbers are smoke-test sized); give another --out")
    path.mkdir(parents=True, exist_ok=True)
    return path


def write_results(folder: Path, stem: str, res: dict, markdown: str, work: Path, keep: bool) -> None:
    """Write ``stem.json`` and ``stem.md`` into ``folder``, say where, and remove ``work`` unless ``keep``."""
    (folder / f"{stem}.json").write_text(json.dumps(res, indent=2) + "\n")
    (folder / f"{stem}.md").write_text(markdown)
    print(f"wrote {folder / stem}.json and .md; work folder {work}" + ("" if keep else " (removed)"))
    if not keep:
        shutil.rmtree(work, ignore_errors=True)
