"""The design document lives in the repo and names only files that exist."""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TEXT_SUFFIXES = {".py", ".md", ".toml", ".cfg", ".txt", ".yaml", ".yml"}


def _tracked_text_files() -> list[Path]:
    out = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return [ROOT / p for p in out.splitlines() if Path(p).suffix in TEXT_SUFFIXES or Path(p).name == "Makefile"]


def test_no_file_points_outside_the_clone():
    """A clone has no ../shared: README, docs and code must not send readers there."""
    offenders = []
    for path in _tracked_text_files():
        if path == Path(__file__).resolve():
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        if "../shared" in text or re.search(r"DESIGN\.md|DESIGN §", text):
            offenders.append(str(path.relative_to(ROOT)))
    assert offenders == []


def _named_paths(doc: str) -> set[str]:
    """Paths the page writes in backticks (``engine/fit.py::FitLoop`` -> ``engine/fit.py``), placeholders left out."""
    return {p for p in re.findall(r"`([\w/.<>-]+\.(?:py|md))", doc) if "<" not in p}


def test_architecture_names_only_existing_files():
    """Every path the architecture page names exists, from the repo root or inside ``fastmed/``."""
    doc = (ROOT / "docs" / "ARCHITECTURE.md").read_text(encoding="utf-8")
    with_folder = {p for p in _named_paths(doc) if "/" in p}
    assert len(with_folder) >= 15, with_folder  # the page really maps the code
    missing = sorted(p for p in with_folder if not ((ROOT / p).exists() or (ROOT / "fastmed" / p).exists()))
    assert missing == []


def test_architecture_short_names_resolve():
    """Bare file names used inside a task paragraph (``train.py``, ``mixing.py``) exist in the package."""
    doc = (ROOT / "docs" / "ARCHITECTURE.md").read_text(encoding="utf-8")
    short = {p for p in _named_paths(doc) if "/" not in p}
    files = {p.name for folder in ("fastmed", "kernels", "export") for p in (ROOT / folder).rglob("*.py")} | {"setup.py", "REPORT.md"}
    assert sorted(short - files) == []
