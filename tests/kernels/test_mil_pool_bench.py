"""benchmarks/bench_mil_pool.py runs end to end in ``--quick`` mode and records what the README quotes."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_mil_pool.py"
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "FASTMED_PROGRESS": "0"}


@pytest.mark.slow
def test_bench_mil_pool_quick(tmp_path):
    done = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--device", "cpu", "--out", str(tmp_path)],
                          env=ENV, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    res = json.loads((tmp_path / "mil_pool.json").read_text())
    assert (tmp_path / "mil_pool.md").stat().st_size > 0
    assert len(res["sizes"]) == 3
    for size in res["sizes"]:
        assert size["bound_ms"] > 0 and size["bound_and_first_touch_ms"] >= size["bound_ms"]
        assert all(r["time_vs_paired_bound"] > 0 for r in size["rows"])  # each call against a copy timed beside it
        assert "first_touch_huge_pages_ms" in size  # the CPU run measures the fresh grad_h both ways
        rows = {r["variant"]: r for r in size["rows"]}
        assert rows["reference (index_add)"]["time_vs_reference"] == 1.0 and rows["fastmed"]["median_ms"] > 0
    assert "peak_extra_mib" in res["sizes"][-1]["rows"][0]  # peak memory at the main (last) size
