"""``fastmed polyp pretrain`` end to end and its checkpoint contract with ``polyp train --pretrained``."""
from __future__ import annotations

import json

import torch

from fastmed.cli import main
from fastmed.engine.checkpoint import load_checkpoint
from fastmed.engine.init_weights import load_matching_weights
from fastmed.nets.registry import create_model


def test_pretrain_writes_an_encoder_checkpoint_train_can_load(synth_root, tmp_path):
    out = tmp_path / "pre"
    assert main(["polyp", "pretrain", "--data", str(synth_root / "polyp"), "--arch", "mobilenet_v3_small", "--epochs", "4",
                 "--batch-size", "8", "--image-size", "32", "--paint-prob", "0.5", "--out", str(out), "--progress", "false",
                 "--seed", "3"]) == 0
    assert (out / "restoration.png").exists() and (out / "curves.png").exists()
    recs = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    # the restoration learns: an untrained net (lr 1e-12) scores val/mse ~0.6x the corrupted input's, and after
    # 4 epochs seeds 0-2 scored 0.05-0.16x of it and 0.25-0.30x of their first epoch's
    assert recs[-1]["val/mse"] < 0.3 * recs[-1]["val/mse_identity"]
    assert recs[-1]["val/mse"] < 0.5 * recs[0]["val/mse"]
    ckpt = load_checkpoint(out / "weights" / "best.pt")
    assert ckpt["kind"] == "pretrained-encoder"
    assert ckpt["arch"] == {"name": "mobilenet_v3_small", "kwargs": {"num_classes": 3}}
    torch.manual_seed(3)
    fresh = create_model("mobilenet_v3_small", num_classes=5)  # another head size: the head is skipped
    before = fresh.state_dict()["features.0.0.weight"].clone()
    loaded, skipped = load_matching_weights(fresh, ckpt["model"])
    assert any(k.startswith("classifier.3") for k in skipped) and all(k.startswith(("features.", "classifier.0")) for k in loaded)
    assert not torch.equal(fresh.state_dict()["features.0.0.weight"], before)  # the trained encoder arrived


def test_pretrain_extra_data_joins_the_training_images(synth_root, tmp_path, capsys):
    """--extra-data (e.g. `polyp generate` output) adds its images to pre-training; held-out images stay DATA's."""
    common = ["--arch", "mobilenet_v3_small", "--epochs", "1", "--batch-size", "8", "--image-size", "16", "--progress", "false"]
    n_train = len(list((synth_root / "polyp" / "train").rglob("*.png")))
    extra = synth_root / "polyp" / "val"
    n_extra = len(list(extra.rglob("*.png")))
    assert main(["polyp", "pretrain", "--data", str(synth_root / "polyp"), "--extra-data", str(extra), "--out", str(tmp_path / "p"),
                 *common]) == 0
    out = capsys.readouterr().out
    n_val = round(n_train * 0.1)
    assert f"extra data {extra}: {n_extra} images" in out
    assert f"on {n_train - n_val + n_extra} images ({n_val} held out)" in out
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["polyp", "pretrain", "--data", str(synth_root / "polyp"), "--extra-data", str(empty), "--out", str(tmp_path / "q"),
                 *common]) == 2
    assert f"error: no images found in {empty}" in capsys.readouterr().err
