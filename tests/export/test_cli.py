"""`fastmed export | predict | bench` end to end on synthetic data."""
import csv
import json


from fastmed.cli import main


def test_export_cli_onnx(mobilenet_ckpt, polyp_dir, tmp_path, capsys):
    out = tmp_path / "m.onnx"
    assert main(["export", "--weights", str(mobilenet_ckpt), "--format", "onnx", "--out", str(out),
                 "--data", str(polyp_dir / "val"), "--exporter", "torchscript"]) == 0
    assert out.is_file() and "max |Δprob|" in capsys.readouterr().out


def test_export_cli_reports_user_errors(mobilenet_ckpt, capsys):
    assert main(["export", "--weights", str(mobilenet_ckpt), "--format", "onnx-int8"]) == 2
    assert "--calib" in capsys.readouterr().err
    assert main(["export", "--weights", "missing.pt"]) == 2


def test_predict_cli_folder_skips_bad_image(mobilenet_onnx, polyp_dir, tmp_path, capsys):
    import shutil

    src = tmp_path / "imgs"
    shutil.copytree(polyp_dir / "val" / "normal", src)
    (src / "broken.png").write_bytes(b"\x89PNG broken")
    run = tmp_path / "run"
    assert main(["predict", "--weights", str(mobilenet_onnx), "--source", str(src), "--out", str(run)]) == 0
    rows = list(csv.DictReader(open(run / "predictions.csv")))
    assert len(rows) == len(list(src.iterdir())) - 1
    assert list(rows[0]) == ["path", "class", "prob_adenoma", "prob_hyperplastic", "prob_normal"]
    assert "skipped" in capsys.readouterr().out


def test_predict_cli_stream_folder(mobilenet_ckpt, polyp_dir, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["predict", "--weights", str(mobilenet_ckpt), "--source", str(polyp_dir / "val" / "adenoma"),
                 "--stream", "--out", str(run)]) == 0
    stats = json.loads((run / "stream.json").read_text())
    assert stats["frames"] == 6 and "p99.9" in stats["compute_ms"]
    assert "fps sustained" in capsys.readouterr().out


def test_bench_cli_table_json_and_floor(mobilenet_ckpt, polyp_dir, tmp_path, capsys):
    run = tmp_path / "bench"
    args = ["bench", "--weights", str(mobilenet_ckpt), "--data", str(polyp_dir / "val"), "--calib", str(polyp_dir / "train"),
            "--batch", "4", "--iters", "3", "--warmup", "1", "--exporter", "torchscript", "--out", str(run),
            "--min-agreement", "0.5"]  # a random-init MobileNet agrees with its int8 self on ~80 % (test_int8_gate.py)
    assert main(args + ["--min-metric", "1.01"]) == 1  # no row can reach 101 % accuracy: exit non-zero
    result = json.loads((run / "bench.json").read_text())
    rows = {r["format"]: r for r in result["rows"]}
    assert rows["pytorch"]["status"] == rows["onnx"]["status"] == "exported, validated"
    assert rows["onnx"]["max_abs_prob_diff"] <= 1e-4 and rows["onnx"]["p50_ms"] > 0 and rows["onnx"]["throughput_ips"] > 0
    assert rows["onnx-int8"]["size_mb"] < 0.4 * rows["onnx"]["size_mb"]
    assert rows["tensorrt-fp16"]["status"] == "skipped" and "gpu" in rows["tensorrt-fp16"]["note"]
    assert result["versions"]["onnxruntime"] and result["failures"]
    table = (run / "bench.md").read_text()
    assert "| ONNX Runtime int8 |" in table and "speed-up" in table
    assert "FAILED the floor" in capsys.readouterr().out


def test_polyp_predict_takes_an_onnx_export(mobilenet_onnx, mobilenet_ckpt, polyp_dir, tmp_path):
    """`fastmed polyp predict` runs on the shared Predictor: an export gives the checkpoint's answers."""
    import numpy as np

    outs = []
    for weights in (mobilenet_ckpt, mobilenet_onnx):
        out = tmp_path / f"{weights.suffix[1:]}.csv"
        assert main(["polyp", "predict", "--weights", str(weights), "--source", str(polyp_dir / "val"), "--save", str(out)]) == 0
        outs.append(list(csv.DictReader(open(out))))
    assert [r["path"] for r in outs[0]] == [r["path"] for r in outs[1]] and len(outs[0]) == 18
    probs = [np.array([[float(v) for k, v in r.items() if k.startswith("prob_")] for r in rows]) for rows in outs]
    assert np.abs(probs[0] - probs[1]).max() <= 1e-4  # the exporter's own parity bound on probabilities
    top2 = np.sort(probs[0], axis=1)[:, -2:]
    clear = top2[:, 1] - top2[:, 0] > 1e-3  # the arg-max can only flip on a near-tie
    assert clear.sum() >= 12 and (probs[0].argmax(1) == probs[1].argmax(1))[clear].all()


def test_bench_min_metric_fails_when_no_row_was_measured(mobilenet_ckpt, polyp_dir, tmp_path, capsys):
    """Every row skipped (int8 without --calib, TensorRT without a GPU): a floor nothing was held to fails."""
    run = tmp_path / "bench"
    assert main(["bench", "--weights", str(mobilenet_ckpt), "--data", str(polyp_dir / "val"), "--formats", "onnx-int8,tensorrt-fp16",
                 "--min-metric", "0.0", "--out", str(run)]) == 1
    result = json.loads((run / "bench.json").read_text())
    assert {r["status"] for r in result["rows"]} == {"skipped"}
    assert any("no row measured" in f for f in result["failures"])
    assert "no row measured an accuracy" in capsys.readouterr().out


def test_export_refuses_to_write_over_its_input(mobilenet_ckpt, tmp_path, capsys):
    ckpt = tmp_path / "X.pt"
    ckpt.write_bytes(mobilenet_ckpt.read_bytes())
    before = ckpt.read_bytes()
    assert main(["export", "--weights", str(ckpt), "--out", str(ckpt), "--exporter", "torchscript"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "\n" not in err and ".onnx" in err
    link = tmp_path / "link.onnx"  # a symlink to the checkpoint has the right suffix but is the input
    link.symlink_to(ckpt)
    assert main(["export", "--weights", str(ckpt), "--out", str(link), "--exporter", "torchscript"]) == 2
    assert "over its input" in capsys.readouterr().err
    assert ckpt.read_bytes() == before


def test_export_replaces_only_its_own_previous_exports(mobilenet_ckpt, mobilenet_onnx, tmp_path, capsys):
    from fastmed.export.metadata import read_onnx_metadata

    foreign = tmp_path / "foreign.onnx"
    foreign.write_bytes(b"someone else's model")
    assert main(["export", "--weights", str(mobilenet_ckpt), "--out", str(foreign), "--exporter", "torchscript"]) == 2
    assert "not a fastmed export" in capsys.readouterr().err and foreign.read_bytes() == b"someone else's model"
    previous = tmp_path / "previous.onnx"
    previous.write_bytes(mobilenet_onnx.read_bytes())
    assert main(["export", "--weights", str(mobilenet_ckpt), "--out", str(previous), "--exporter", "torchscript"]) == 0
    assert read_onnx_metadata(previous).class_names


def test_decompression_bomb_is_skipped_and_listed_by_every_image_command(mobilenet_ckpt, mobilenet_onnx, polyp_dir,
                                                                         tmp_path, capsys, bomb_png):
    import shutil

    src = tmp_path / "imgs"
    shutil.copytree(polyp_dir / "val" / "normal", src)
    bomb_png(src / "bomb.png")
    n_good = len(list(src.iterdir())) - 1
    assert main(["predict", "--weights", str(mobilenet_onnx), "--source", str(src), "--out", str(tmp_path / "p")]) == 0
    assert len(list(csv.DictReader(open(tmp_path / "p" / "predictions.csv")))) == n_good
    assert "bomb.png" in capsys.readouterr().out
    assert main(["polyp", "predict", "--weights", str(mobilenet_ckpt), "--source", str(src), "--save", str(tmp_path / "q.csv")]) == 0
    assert len(list(csv.DictReader(open(tmp_path / "q.csv")))) == n_good
    assert "bomb.png" in capsys.readouterr().out
    assert main(["export", "--weights", str(mobilenet_ckpt), "--out", str(tmp_path / "m.onnx"), "--calib", str(src),
                 "--exporter", "torchscript"]) == 0
    assert "bomb.png" in capsys.readouterr().out


def test_every_image_prediction_command_writes_one_layout(mobilenet_ckpt, polyp_dir, tmp_path):
    """`fastmed predict` and `fastmed polyp predict` (which `distill predict` also runs): same header, same rows."""
    src = polyp_dir / "val" / "adenoma"
    assert main(["predict", "--weights", str(mobilenet_ckpt), "--source", str(src), "--out", str(tmp_path / "a")]) == 0
    assert main(["polyp", "predict", "--weights", str(mobilenet_ckpt), "--source", str(src), "--save", str(tmp_path / "b.csv")]) == 0
    a = (tmp_path / "a" / "predictions.csv").read_text().splitlines()
    b = (tmp_path / "b.csv").read_text().splitlines()
    assert a[0] == b[0] == "path,class,prob_adenoma,prob_hyperplastic,prob_normal"
    assert a == b and len(a) == 1 + len(list(src.iterdir()))
