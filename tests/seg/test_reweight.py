"""seg-reweight: the weight update, mixing, losses (known values) and the CLI end to end."""
from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import torch

from fastmed.cfg.seg import SegReweightConfig
from fastmed.cli import main
from fastmed.engine.checkpoint import load_checkpoint
from fastmed.seg.losses import seg_loss, soft_dice_loss
from fastmed.seg.reweight.dot_log import dot_quantiles
from fastmed.seg.reweight.losses import region_bce
from fastmed.seg.reweight.mixing import mix, sample_pairs
from fastmed.seg.reweight.train import ReweightTask, load_splits
from fastmed.seg.reweight.weights import GammaTable, mean_gradient, separation_auc


def test_gamma_update_rules_known_values():
    t = GammaTable(4, init=0.5)
    idx = torch.tensor([0, 1, 2, 3])
    dots = torch.tensor([2.0, -2.0, 1.0, 3.0])
    t.step(idx, dots, beta=0.1, rule="raw", step=1)
    torch.testing.assert_close(t.gamma, torch.tensor([0.7, 0.3, 0.6, 0.8]))
    t = GammaTable(4, init=0.5)
    t.step(idx, dots, beta=0.1, rule="scaled", step=1)  # mean |d| = 2
    torch.testing.assert_close(t.gamma, torch.tensor([0.6, 0.4, 0.55, 0.65]))
    t = GammaTable(4, init=1.0)
    t.step(idx, dots, beta=0.5, rule="centered", step=1)  # d - 1 = [1, -3, 0, 2], mean |.| = 1.5
    torch.testing.assert_close(t.gamma, torch.tensor([1.0, 0.0, 1.0, 1.0]))
    assert [s for s, _ in t.history] == [0, 1]
    with pytest.raises(ValueError, match="rule"):
        t.step(idx, dots, 0.1, "other", 2)
    with pytest.raises(ValueError, match="init"):
        GammaTable(2, init=1.5)


def test_ratio_rule_known_values():
    # median 2: step = clip(d / 2 - 1/2, -1, 1) = [-0.5, -1 (clipped from -2), 0.5, 0.5, 1 (clipped from 1.5)]
    t = GammaTable(5, init=0.5)
    t.step(torch.arange(5), torch.tensor([0.0, -3.0, 2.0, 2.0, 4.0]), beta=0.2, rule="ratio", step=1)
    torch.testing.assert_close(t.gamma, torch.tensor([0.4, 0.3, 0.6, 0.6, 0.7]))
    # a negative median: every image at the median falls, (d - m/2) / |m| = -1/2
    t = GammaTable(3, init=0.5)
    t.step(torch.arange(3), torch.tensor([-2.0, -2.0, -2.0]), beta=0.2, rule="ratio", step=1)
    torch.testing.assert_close(t.gamma, torch.full((3,), 0.4))


def test_clean_pool_centered_lowers_half_ratio_keeps_all():
    """In a pool of agreeing images (all d_k > 0, spread like right rough masks) ``centered`` lowers the
    below-mean half of the weights each update, ``ratio`` none (all d_k above half the median)."""
    d = torch.linspace(0.6, 1.4, 20)
    for rule, lowered in (("centered", 10), ("ratio", 0)):
        t = GammaTable(20, init=1.0)
        for step in range(5):
            t.step(torch.arange(20), d, beta=0.2, rule=rule, step=step)
        assert int((t.gamma < 1).sum()) == lowered, rule


def test_dot_quantiles_and_history():
    q = dot_quantiles(np.array([-1.0, 0.0, 1.0, 2.0, 3.0]))
    assert q["dot_q0"] == -1 and q["dot_q50"] == 1 and q["dot_q100"] == 3 and q["dot_q25"] == 0
    assert math.isclose(q["dot_q10"], -0.6, rel_tol=1e-9) and q["dot_mean"] == 1 and q["dot_pos"] == 0.6
    t = GammaTable(4)
    t.step(torch.tensor([0, 2]), torch.tensor([0.5, -0.5]), 0.1, "raw", 3)
    [(step, index, d)] = t.dot_history
    assert step == 3 and index.tolist() == [0, 2] and d.tolist() == [0.5, -0.5]


def test_gamma_state_roundtrip_and_pool_only():
    t = GammaTable(5, init=1.0)
    t.step(torch.tensor([1, 3]), torch.tensor([-1.0, 1.0]), 0.5, "centered", 7)
    assert t.gamma[0] == 1 and t.gamma[1] == 0.5 and t.gamma[3] == 1
    u = GammaTable(5)
    u.load_state_dict(t.state_dict())
    torch.testing.assert_close(u.gamma, t.gamma)
    assert [s for s, _ in u.history] == [0, 7]
    assert [(s, i.tolist(), d.tolist()) for s, i, d in u.dot_history] == [(7, [1, 3], [-1.0, 1.0])]


def _task(synth_root, tmp_path, **options) -> ReweightTask:
    cfg = SegReweightConfig(data=str(synth_root / "seg"), out=str(tmp_path / "r"), device="cpu", base_width=4, depth=2,
                            image_size=32, n_exact=4, batch_size=4, **options)
    cfg.validate()
    return ReweightTask(cfg, *load_splits(cfg), torch.device("cpu"))


def test_mixed_loss_claim8_wiring(synth_root, tmp_path):
    """``split``: the labels of region i reach only the main model's loss, those of region j only the
    auxiliary's (claim 8); ``both``: each model's loss sees both. The pseudo-labels do not use the labels."""
    task = _task(synth_root, tmp_path, mix_regions="split")
    m = task.mixed_batch()
    assert 0 < float(m["region"].mean()) < 1
    flip = lambda part: {**m, "y": m["y"] + part * (1 - 2 * m["y"])}  # noqa: E731  labels inverted inside part
    in_i, in_j = flip(m["region"]), flip(1 - m["region"])
    loss = lambda mm, k: float(task.mixed_loss(task.models[k], task.models[1 - k], mm, k).detach())  # noqa: E731
    main_loss, aux_loss = loss(m, 0), loss(m, 1)
    assert loss(in_j, 0) == main_loss and loss(in_i, 1) == aux_loss
    assert loss(in_i, 0) != main_loss and loss(in_j, 1) != aux_loss
    task.cfg.mix_regions = "both"
    assert loss(in_j, 0) != loss(m, 0) and loss(in_i, 1) != loss(m, 1)


def test_oracle_gamma_from_meta(synth_root, tmp_path):
    task = _task(synth_root, tmp_path, oracle_gamma=True, tau=1, mixing=False)
    wrong = np.array([it.meta["rough_wrong"] == "1" for it in task.rough.items])
    assert wrong.any() and (~wrong).any()
    assert task.gammas.gamma.tolist() == (~wrong).astype(float).tolist()
    task.train_step(next(iter(task.train_batches(1))))
    assert task.gammas.gamma.tolist() == (~wrong).astype(float).tolist() and not task.gammas.dot_history


def test_separation_auc():
    assert separation_auc(np.array([0.1, 0.2, 0.9, 0.8]), np.array([1, 1, 0, 0])) == 1.0
    assert separation_auc(np.array([0.9, 0.1]), np.array([1, 0])) == 0.0
    assert separation_auc(np.array([0.5, 0.5]), np.array([1, 0])) == 0.5
    assert math.isnan(separation_auc(np.array([0.5, 0.5]), np.array([0, 0])))


def test_sample_pairs_follow_weights():
    g = torch.Generator().manual_seed(0)
    i, j = sample_pairs(torch.tensor([0.0, 0.0, 1.0, 0.0]), 50, g)
    assert (i == 2).all() and len(set(j.tolist())) > 1
    i, _ = sample_pairs(torch.zeros(3), 30, g)  # all zero -> uniform
    assert len(set(i.tolist())) > 1


def test_mix_and_losses_known_values():
    region = torch.tensor([[[[1.0, 0.0]]]])
    out = mix(region, torch.full((1, 3, 1, 2), 2.0), torch.full((1, 3, 1, 2), 5.0))
    assert out[0, :, 0].tolist() == [[2.0, 5.0]] * 3
    logits = torch.zeros(2, 1, 2, 2)
    target = torch.tensor([[1.0, 1.0], [0.0, 0.0]]).view(1, 1, 2, 2).repeat(2, 1, 1, 1)
    # p = 0.5 everywhere: BCE = ln 2; Dice = (2*1 + 1) / (2 + 2 + 1) = 0.6
    torch.testing.assert_close(seg_loss(logits, target), torch.full((2,), math.log(2) + 0.4))
    torch.testing.assert_close(soft_dice_loss(logits, target), torch.full((2,), 0.4))
    assert region_bce(logits, target, torch.zeros_like(target)).tolist() == [0.0, 0.0]
    r = torch.tensor([[1.0, 0.0], [0.0, 0.0]]).view(1, 1, 2, 2).repeat(2, 1, 1, 1)
    torch.testing.assert_close(region_bce(logits, target, r), torch.full((2,), math.log(2) / 4))
    torch.testing.assert_close(region_bce(logits, target, r) + region_bce(logits, target, 1 - r), torch.full((2,), math.log(2)))
    with pytest.raises(ValueError, match="same shape"):
        seg_loss(logits, target[:, :, :1])


def test_gamma_update_lowers_a_contradicting_image():
    """An image whose mask is the inverse of the exact ones gets a smaller dot product than agreeing ones."""
    from fastmed.kernels import per_sample_grad_dot
    from fastmed.nets.unet import UNet

    torch.manual_seed(0)
    model = UNet(base_width=4, depth=1)
    x = torch.randn(5, 3, 8, 8)
    y = (torch.rand(1, 1, 8, 8) > 0.5).float().repeat(5, 1, 1, 1)
    g_s = mean_gradient(model, soft_dice_loss, x[:2], y[:2])
    rough_y = y[2:].clone()
    rough_y[0] = 1 - rough_y[0]
    d = per_sample_grad_dot(model, soft_dice_loss, x[2:], rough_y, g_s)
    assert d[0] < d[1:].min()
    assert all(p.grad is None for p in model.parameters())


@pytest.fixture
def one_thread():
    """A tiny U-Net trains faster on one thread than on two contended ones."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_seg_train_reweight_cli_end_to_end(synth_root, tmp_path, one_thread):
    out = tmp_path / "run"
    args = ["seg", "train", "--method", "reweight", "--data", str(synth_root / "seg"), "--out", str(out), "--epochs", "1",
            "--base-width", "4", "--depth", "2", "--image-size", "32", "--n-exact", "4", "--tau", "1", "--batch-size", "4",
            "--device", "cpu", "--overlays", "2"]
    assert main(args) == 0
    for name in ("config.yaml", "metrics.jsonl", "curves.png", "gamma.png", "gamma_history.csv", "gamma_dots.csv",
                 "gamma_dots.png", "summary.json", "weights/best.pt"):
        assert (out / name).exists(), name
    assert len(list((out / "overlays").glob("*.png"))) == 2
    rows = list(csv.reader(open(out / "gamma_history.csv")))
    assert len(rows[0]) == 1 + 12 and len(rows) >= 3  # 12 rough images; initial row + one per step
    assert {float(v) for v in rows[-1][1:]} != {1.0}  # the update moved some weights
    assert "test/dice" in json.loads((out / "summary.json").read_text())["metrics"]
    ckpt = load_checkpoint(out / "weights" / "best.pt")
    assert ckpt["kind"] == "segmenter" and ckpt["input_size"] == [32, 32]
    # resume to a second epoch keeps the weights' history
    assert main(args[:-2] + ["--epochs", "2", "--resume", "--overlays", "0"]) == 0
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2]
    assert all(r["train/dot_q10"] <= r["train/dot_q50"] <= r["train/dot_q90"] for r in records)
    dots = list(csv.DictReader(open(out / "gamma_dots.csv")))
    assert len(dots) == len(rows) - 1 + 3 and dots[0]["mean_wrong"] and dots[0]["mean_right"]  # + epoch 2's 3 updates
    # the reweighting learns: gamma ranks the deliberately wrong rough masks below the right ones (AUC 0.5 = chance,
    # what --beta 0 gives; after 2 epochs seeds 1-3 gave 1.0, 1.0, 0.889, seed 0 1.0 after 1 and 4 epochs).
    # The gamma-weighted training loss falls (epoch 2 / epoch 1 = 0.88, 0.93, 0.88, 0.85 for seeds 0-3), but it
    # also falls (0.92) with the U-Net frozen by --lr 1e-9, as gamma drops the wrong masks: it checks the
    # objective, not the U-Net. The U-Net's Dice after 2-4 epochs is too seed-dependent here (0.14-0.68; seed 2
    # stays on its starting plateau even at lr 3e-3), so the reweight evidence's quick run (a slow test) checks it.
    assert json.loads((out / "summary.json").read_text())["metrics"]["gamma_auc"] >= 0.8
    assert records[1]["train/loss"] < 0.97 * records[0]["train/loss"]
    assert main(["seg", "predict", "--weights", str(out / "weights" / "best.pt"), "--source",
                 str(synth_root / "seg" / "test" / "images"), "--out", str(tmp_path / "pred"), "--device", "cpu"]) == 0
    assert len(list((tmp_path / "pred" / "masks").glob("*.png"))) == 6


def test_cli_literal_rule_and_old_wiring(synth_root, tmp_path, one_thread):
    """``--update-rule raw --gamma-init 0.5 --mix-regions both`` from the CLI: the first update moves gamma by beta * d_k."""
    out = tmp_path / "run"
    assert main(["seg", "train", "--method", "reweight", "--data", str(synth_root / "seg"), "--out", str(out), "--epochs", "1",
                 "--base-width", "4", "--depth", "2", "--image-size", "32", "--n-exact", "4", "--tau", "2", "--batch-size", "4",
                 "--device", "cpu", "--overlays", "0", "--update-rule", "raw", "--gamma-init", "0.5", "--beta", "3",
                 "--mix-regions", "both"]) == 0
    cfg = (out / "config.yaml").read_text()
    assert "update_rule: raw" in cfg and "mix_regions: both" in cfg
    rows = list(csv.reader(open(out / "gamma_history.csv")))
    change = np.array(rows[2][1:], float) - np.array(rows[1][1:], float)
    first = next(csv.DictReader(open(out / "gamma_dots.csv")))
    assert {float(v) for v in rows[1][1:]} == {0.5} and int(first["step"]) == 2
    np.testing.assert_allclose([change.min(), change.max()], [3 * float(first["dot_q0"]), 3 * float(first["dot_q100"])], rtol=1e-3)
    assert "mixed_aux" in " ".join((out / "metrics.jsonl").read_text().split())


def test_cli_oracle_gamma(synth_root, tmp_path, one_thread):
    args = ["seg", "train", "--method", "reweight", "--epochs", "1", "--base-width", "4", "--depth", "2", "--image-size", "32",
            "--n-exact", "4", "--batch-size", "4", "--device", "cpu", "--overlays", "0", "--mixing", "false", "--oracle-gamma", "true"]
    out = tmp_path / "run"
    assert main(args + ["--data", str(synth_root / "seg"), "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())["metrics"]
    assert summary["gamma_auc"] == 1.0 and summary["gamma_mean_wrong"] == 0.0 and summary["gamma_mean_right"] == 1.0
    assert not (out / "gamma_dots.csv").exists()  # no updates
    # without the rough_wrong column: a one-line error, exit 2
    import shutil

    data = tmp_path / "seg"
    shutil.copytree(synth_root / "seg", data)
    for meta in data.glob("*/meta.csv"):
        meta.unlink()
    assert main(args + ["--data", str(data), "--out", str(tmp_path / "r2")]) == 2


def test_config_errors(synth_root, tmp_path):
    from fastmed.errors import FastmedError

    base = ["seg", "train", "--data", str(synth_root / "seg"), "--out", str(tmp_path / "r"), "--device", "cpu"]
    with pytest.raises(FastmedError, match="image-size"):
        _parse(base[2:] + ["--image-size", "30"])
    with pytest.raises(FastmedError, match="method"):
        _parse(base[2:] + ["--method", "magic"])
    assert main(base + ["--n-exact", "99", "--epochs", "1"]) == 2  # the CLI prints the error and exits 2


def _parse(args):
    from fastmed.cfg.seg import COMMANDS

    return COMMANDS[0].parse(args)
