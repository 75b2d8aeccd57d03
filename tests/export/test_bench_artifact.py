"""`fastmed bench` on an exported file alone (no checkpoint), and with --reference for parity and agreement."""
import json

import pytest

from fastmed.cli import main
from fastmed.errors import FastmedError
from fastmed.export.bench import VALIDATED, VALIDATION_FAILED, bench
from fastmed.export.bench_artifact import MEASURED
from fastmed.export.predictor import Predictor

FAST = dict(batch=2, warmup=1, iters=3, threads=1)


def test_bare_onnx_gives_latency_size_and_accuracy(mobilenet_onnx, polyp_dir, tmp_path):
    from fastmed.export.evaluate import evaluate_folder

    data = str(polyp_dir / "val")
    res = bench(mobilenet_onnx, tmp_path, data=data, **FAST)
    (row,) = res.rows
    assert row.status == MEASURED and row.format == "onnx" and row.name == "ONNX Runtime fp32"
    assert row.size_mb == pytest.approx(mobilenet_onnx.stat().st_size / 1e6)
    assert 0 < row.p50_ms <= row.p95_ms <= row.p99_ms and row.throughput_ips > 0 and row.throughput_batch == 2
    assert row.accuracy == pytest.approx(evaluate_folder(Predictor(mobilenet_onnx), data).accuracy)
    assert row.max_abs_prob_diff is None and row.top1_agreement is None, "no parity without a reference"


def test_reference_adds_parity_and_checks_it_is_the_source(mobilenet_onnx, mobilenet_ckpt, resnet_ckpt, tmp_path):
    (row,) = bench(mobilenet_onnx, tmp_path, reference=str(mobilenet_ckpt), **FAST).rows
    assert row.status == VALIDATED and row.max_abs_prob_diff < 1e-4 and row.top1_agreement == 1.0
    with pytest.raises(FastmedError, match="not the model it was exported from"):
        bench(mobilenet_onnx, tmp_path, reference=str(resnet_ckpt), **FAST)  # other input size
    with pytest.raises(FastmedError, match="its own reference"):
        bench(mobilenet_ckpt, tmp_path, reference=str(mobilenet_ckpt), **FAST)


def test_bare_int8_is_judged_on_agreement(mobilenet_int8, mobilenet_ckpt, tmp_path):
    (row,) = bench(mobilenet_int8.path, tmp_path, reference=str(mobilenet_ckpt), min_agreement=0.0, **FAST).rows
    assert row.format == "onnx-int8" and row.status == VALIDATED and "agreement" in row.note
    strict = min(1.0, row.top1_agreement + 0.01)  # just above what it measured: must fail
    (row,) = bench(mobilenet_int8.path, tmp_path, reference=str(mobilenet_ckpt), min_agreement=strict, **FAST).rows
    assert row.status == VALIDATION_FAILED if row.top1_agreement < strict else VALIDATED


def test_bench_cli_on_a_bare_artifact(mobilenet_onnx, polyp_dir, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["bench", "--weights", str(mobilenet_onnx), "--iters", "3", "--warmup", "1", "--batch", "2",
                 "--threads", "1", "--out", str(run)]) == 0
    rows = json.loads((run / "bench.json").read_text())["rows"]
    assert [r["format"] for r in rows] == ["onnx"] and "ONNX Runtime fp32" in (run / "bench.md").read_text()
    assert main(["bench", "--weights", str(mobilenet_onnx), "--calib", str(polyp_dir / "train"),
                 "--out", str(tmp_path / "r2")]) == 2
    assert "--calib" in capsys.readouterr().err
