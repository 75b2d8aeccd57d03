"""``benchmarks/gpu_check.py`` (``make gpu-check``) on a machine without a GPU: its CPU dry run and its refusals.

The dry run exercises the script's logic with the GPU parts skipped: the gpu
tests are collected, not run; the Triton kernels run through the interpreter at
tiny sizes against their references; the benchmarks are listed; the DDP smoke
test runs on two CPU processes over gloo. What it measures on a GPU is not
checked here (no GPU in CI).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "FASTMED_PROGRESS": "0"}


@pytest.mark.skipif(torch.cuda.is_available(), reason="on a GPU machine the script runs for real")
def test_without_a_gpu_it_asks_for_the_dry_run_and_never_writes_it_into_results():
    done = subprocess.run([sys.executable, str(SCRIPT)], env=ENV, capture_output=True, text=True, timeout=300)
    assert done.returncode != 0 and "--cpu-dry-run" in done.stderr
    done = subprocess.run([sys.executable, str(SCRIPT), "--cpu-dry-run", "--out", str(SCRIPT.parent / "results")], env=ENV,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode != 0 and "does not write into" in done.stderr


@pytest.mark.slow
def test_cpu_dry_run_checks_every_kernel_and_runs_ddp_over_gloo(tmp_path):
    done = subprocess.run([sys.executable, str(SCRIPT), "--cpu-dry-run", "--out", str(tmp_path)], env=ENV,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    res = json.loads((tmp_path / "gpu_check.json").read_text())
    assert res["dry_run"] and res["ok"] and "dry run" in res["environment"]["device_name"]
    assert res["environment"]["torch"] == torch.__version__
    assert "collected" in res["tests"]["summary"] and res["tests"]["rc"] == 0
    kernels = {(r["kernel"].split(" ")[0], r["dtype"]) for r in res["kernels"]}
    assert kernels == {(k, d) for k in ("mil_attention_pool", "sinkhorn_divergence", "conv_output_dot")
                       for d in ("float32", "bfloat16")}
    assert all(r["forward_rel_err"] <= r["tol"] and r["grad_rel_err"] <= r["tol"] for r in res["kernels"])
    names = [r["benchmark"] for r in res["benchmarks"]]
    assert names[:4] == ["bench_sinkhorn", "bench_mil_pool", "bench_grad_dot", "bench_edt"]
    opacus = next(r for r in res["benchmarks"] if r["benchmark"].startswith("opacus"))
    assert opacus.get("rc", "").startswith("skipped") or opacus["rel_err"] < 1e-3  # per-sample dots agree with Opacus
    assert res["ddp"]["backend"] == "gloo" and res["ddp"]["ok"] and "ddp ok: gloo, world 2" in res["ddp"]["tail"]
    assert "# GPU check: CPU" in (tmp_path / "gpu_check.md").read_text()
