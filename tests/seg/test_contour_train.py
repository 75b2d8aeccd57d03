"""Contour method: losses (known values) and ``fastmed seg train --method contour`` end to end."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from fastmed.cli import main
from fastmed.data.images import read_image
from fastmed.engine.checkpoint import load_model
from fastmed.seg.contour.objects import slot_instances
from fastmed.seg.data import to_tensor_image
from fastmed.seg.contour.losses import contour_loss, correlation_loss


@pytest.fixture
def one_torch_thread():
    """One intra-op thread: on the shared 2-core CI box two threads were several times slower."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_correlation_loss_known_values():
    logits = torch.zeros(2, 1, 3, 3)  # sigmoid = 0.5
    target = torch.full((2, 1, 3, 3), 0.5)
    assert float(correlation_loss(logits, target)) == 0.0
    target[0, 0, 0, 0] = 1.0
    assert math.isclose(float(correlation_loss(logits, target, "mse")), 0.25 / 18, rel_tol=1e-6)
    assert math.isclose(float(correlation_loss(logits, target, "l1")), 0.5 / 18, rel_tol=1e-6)
    with pytest.raises(ValueError, match="kind"):
        correlation_loss(logits, target, "huber")
    with pytest.raises(ValueError, match="same shape"):
        correlation_loss(logits, target[:1])


def test_contour_loss_weights_and_gradients():
    torch.manual_seed(0)
    out = {"mask": torch.randn(2, 1, 4, 4, requires_grad=True), "corr": torch.randn(2, 1, 4, 4, requires_grad=True)}
    mask, corr = (torch.rand(2, 1, 4, 4) > 0.5).float(), torch.rand(2, 1, 4, 4)
    full = contour_loss(out, mask, corr, mask_weight=2.0, corr_weight=3.0)
    assert torch.allclose(full["loss"], 2.0 * full["mask"] + 3.0 * full["corr"])
    only_mask = contour_loss(out, mask, corr, corr_weight=0.0)
    only_mask["loss"].backward()
    assert out["corr"].grad is None or float(out["corr"].grad.abs().sum()) == 0.0
    assert float(out["mask"].grad.abs().sum()) > 0


def test_seg_train_contour_cli_end_to_end(synth_root, tmp_path, one_torch_thread):
    out = tmp_path / "run"
    args = ["seg", "train", "--method", "contour", "--data", str(synth_root / "seg"), "--out", str(out),
            "--batch-size", "4", "--image-size", "32", "--base-width", "4", "--depth", "2",
            "--device", "cpu", "--overlays", "2", "--sigma-dist", "2", "--corr-fusion", "nearest"]
    assert main(args + ["--epochs", "1"]) == 0
    for name in ("config.yaml", "metrics.jsonl", "curves.png", "correlation_maps.png", "predictions.png",
                 "summary.json", "weights/best.pt", "weights/last.pt"):
        assert (out / name).is_file(), name
    record = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    for key in ("train/loss", "train/mask", "train/corr", "val/dice", "val/iou", "val/hd95", "val/corr_mae"):
        assert key in record
    model, ckpt = load_model(out / "weights" / "best.pt")
    assert ckpt["kind"] == "segmenter" and ckpt["meta"]["method"] == "contour"
    assert ckpt["meta"]["correlation"]["fusion"] == "nearest"
    y = model(torch.zeros(1, 3, 32, 32))
    assert set(y) == {"mask", "corr"} and y["corr"].shape == (1, 1, 32, 32)
    # the shared predictor reads the checkpoint
    pred = tmp_path / "pred"
    assert main(["seg", "predict", "--weights", str(out / "weights" / "best.pt"),
                 "--source", str(synth_root / "seg" / "test" / "images"), "--out", str(pred), "--device", "cpu"]) == 0
    assert len(list((pred / "masks").glob("*.png"))) == 6
    # resume continues to epoch 3, and the training loss falls: seeds 0, 1, 2 gave epoch 3 / epoch 1 = 0.940,
    # 0.952, 0.948; with --lr 1e-9 (no learning) epoch 2 / epoch 1 was 1.009. 4 steps per epoch of a width-4
    # U-Net; its Dice is checked by the contour evidence's quick run (a slow test).
    assert main(args + ["--epochs", "3", "--resume"]) == 0
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2, 3]
    assert records[-1]["train/loss"] < 0.98 * records[0]["train/loss"]


def test_seg_train_contour_bad_options(synth_root, tmp_path):
    base = ["seg", "train", "--method", "contour", "--data", str(synth_root / "seg"), "--out", str(tmp_path / "r"), "--device", "cpu"]
    assert main(base + ["--sigma-dist", "0"]) == 2
    assert main(base + ["--corr-weight", "0", "--mask-weight", "0"]) == 2
    assert main(base + ["--n-train", "999"]) == 2


@pytest.fixture(scope="module")
def touching_seg(tmp_path_factory):
    """12 + 6 images at 32 px, half with two touching lesions, outlines simplified and jittered by 1.5 px."""
    from fastmed.data.synthetic.seg import make_seg_dataset

    return make_seg_dataset(tmp_path_factory.mktemp("touching") / "seg", {"train": 12, "val": 6}, seed=2, size=32,
                            max_objects=1, contour_vertices=16, contour_jitter=1.5, touching=0.5)


def test_seg_train_contour_object_slots_cli_learns(touching_seg, tmp_path, one_torch_thread):
    out = tmp_path / "run"
    args = ["seg", "train", "--method", "contour", "--data", str(touching_seg), "--out", str(out), "--batch-size", "4",
            "--image-size", "32", "--base-width", "4", "--depth", "2", "--device", "cpu", "--overlays", "2",
            "--object-slots", "2", "--epochs", "6", "--lr", "3e-3"]
    assert main(args) == 0
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    for key in ("train/obj_mask", "train/obj_corr", "val/sep_error", "val/dice"):
        assert key in records[-1], key
    assert "val/sep_error_ridge" not in records[-1]  # the slots give the instances
    # the per-object losses fall: epoch 6 / epoch 1 of obj_mask was 0.923, 0.949, 0.918 and of obj_corr
    # 0.829, 0.819, 0.913 for seeds 0, 1, 2; with --lr 1e-9 (no learning) 1.003 and 1.004
    assert records[-1]["train/obj_mask"] < 0.975 * records[0]["train/obj_mask"]
    assert records[-1]["train/obj_corr"] < 0.96 * records[0]["train/obj_corr"]
    model, ckpt = load_model(out / "weights" / "best.pt")
    assert ckpt["meta"]["object_slots"] == 2
    assert model(torch.zeros(1, 3, 32, 32))["objects"].shape == (1, 4, 32, 32)
    assert (out / "predictions.png").is_file()
    # seg predict writes each image's slot labels beside the fused mask: those of the model's objects head
    pred, images = tmp_path / "pred", sorted((touching_seg / "val" / "images").glob("*.png"))
    assert main(["seg", "predict", "--weights", str(out / "weights" / "best.pt"), "--source", str(images[0].parent),
                 "--out", str(pred), "--device", "cpu"]) == 0
    assert len(list((pred / "objects").glob("*.png"))) == len(images) == 6
    norm = ckpt["normalization"]
    with torch.no_grad():
        expected = slot_instances(model(to_tensor_image(read_image(images[0]), norm["mean"], norm["std"])[None])["objects"])
    assert np.array_equal(np.asarray(Image.open(pred / "objects" / images[0].name)), expected[0].numpy())
    assert main(args[:-6] + ["--object-slots", "-1"]) == 2
