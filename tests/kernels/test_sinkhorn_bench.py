"""benchmarks/bench_sinkhorn.py runs end to end in ``--quick`` mode and records what the README quotes."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_sinkhorn.py"
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "FASTMED_PROGRESS": "0"}


def test_quick_needs_out():
    done = subprocess.run([sys.executable, str(SCRIPT), "--quick"], env=ENV, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and "--quick needs --out" in done.stderr


@pytest.mark.slow
def test_bench_sinkhorn_quick(tmp_path):
    pytest.importorskip("geomloss")
    done = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--threads", "1", "--out", str(tmp_path)],
                          env=ENV, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    res = json.loads((tmp_path / "sinkhorn.json").read_text())
    assert (tmp_path / "sinkhorn.md").stat().st_size > 0
    assert len(res["sizes"]) == 3 and res["throughputs"]["exp_ns_per_element_1_thread"] > 0
    for size in res["sizes"]:
        rows = {r["variant"]: r for r in size["rows"]}
        # the same numbers as GeomLoss (quick run: value 1e-7, gradient <= 2e-4 relative)
        assert size["agreement_vs_geomloss"]["value_rel_diff"] < 1e-4
        assert size["agreement_vs_geomloss"]["grad_rel_diff"] < 1e-3
        # speed is the benchmark's to report, not a test's to assert: only that it was measured
        assert rows["fastmed numba"]["cpu_speedup_vs_geomloss"] > 0, rows
        assert size["bound"]["bound_ms"] > 0 and rows["fastmed numba"]["time_vs_bound"] > 0
