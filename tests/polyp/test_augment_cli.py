"""``fastmed polyp augment`` end to end on the tiny synthetic set (one generator for this module)."""
from __future__ import annotations

import json

import pytest
import torch

from fastmed.cli import main
from fastmed.engine.checkpoint import load_checkpoint, load_model

ARGS = ["--per-class", "2", "--steps-per-epoch", "2", "--image-size", "32", "--base", "8", "--progress", "false", "--device", "cpu",
        "--judge-steps", "5", "--class-warmup", "5"]
MEASURES = ("pixel_change", "noise_diversity", "spread_generated", "spread_real", "sinkhorn_to_real", "judge_agreement",
            "judge_real_accuracy", "judge_agreement_ratio")


@pytest.fixture(scope="module")
def generator_run(synth_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("augment")
    assert main(["polyp", "augment", "--data", str(synth_root / "polyp"), "--epochs", "1", "--out", str(out), *ARGS]) == 0
    return out


def test_augment_writes_a_generator_run(generator_run):
    for name in ("config.yaml", "metrics.jsonl", "curves.png", "samples.png", "weights/best.pt", "weights/last.pt"):
        assert (generator_run / name).exists(), name
    rec = json.loads((generator_run / "metrics.jsonl").read_text().splitlines()[-1])
    for key in ("train/target", "train/gen", "train/pred", "train/adv", "train/dist1", "train/dist2", "train/div", "train/loss_d",
                *(f"val/{k}" for k in MEASURES)):
        assert key in rec and rec[key] == rec[key], key  # present and not NaN
    G, ckpt = load_model(generator_run / "weights" / "best.pt")
    assert ckpt["kind"] == "generator" and ckpt["class_names"] == ["adenoma", "hyperplastic", "normal"]
    assert ckpt["arch"]["kwargs"]["identity_start"] is False and len(G.noise_in) == 3
    # the judge trained here (--judge-steps 5) travels with the generator
    assert ckpt["judge"]["kind"] == "classifier" and ckpt["judge"]["meta"]["steps"] == 5
    assert G(torch.zeros(1, 3, 32, 32), torch.tensor([1]), torch.zeros(1, 1, 32, 32)).shape == (1, 3, 32, 32)


def test_resume_and_update_condition(generator_run, synth_root, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(generator_run, run)
    # a threshold above any loss: the first resumed epoch updates, then updates stop
    assert main(["polyp", "augment", "--data", str(synth_root / "polyp"), "--epochs", "3", "--out", str(run), "--resume",
                 "--loss-threshold", "1e9", *ARGS]) == 0
    recs = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in recs] == [1, 2, 3]
    assert [r["val/updates"] for r in recs] == [2.0, 4.0, 4.0]
    assert load_checkpoint(run / "weights" / "last.pt")["meta"]["updates"] == 4


def test_without_distribution_losses_no_sinkhorn_is_called(synth_root, tmp_path, monkeypatch):
    import fastmed.polyp.gan_losses as L

    def fail(*a, **k):
        raise AssertionError("sinkhorn called with the distribution losses off")

    monkeypatch.setattr(L, "sinkhorn_divergence", fail)
    assert main(["polyp", "augment", "--data", str(synth_root / "polyp"), "--epochs", "1", "--out", str(tmp_path / "r"),
                 "--w-dist1", "0", "--w-dist2", "0", "--w-div", "0", "--steps-per-epoch", "1", *ARGS[2:]]) == 0
    rec = json.loads((tmp_path / "r" / "metrics.jsonl").read_text())
    assert "train/dist1" not in rec and "train/div" not in rec  # --w-div 0: no second noise draw either


def test_identity_start_reproduces_the_baseline_generator(generator_run, synth_root, tmp_path):
    """--identity-start: zero output convolution and input-plane noise only; after 2 updates its images are
    still near-copies (seeds 0-2: pixel change < 0.002), the default start's are not (0.01-0.03)."""
    assert main(["polyp", "augment", "--data", str(synth_root / "polyp"), "--epochs", "1", "--out", str(tmp_path / "r"),
                 "--identity-start", "true", *ARGS]) == 0
    G, ckpt = load_model(tmp_path / "r" / "weights" / "best.pt")
    assert ckpt["arch"]["kwargs"]["identity_start"] is True and len(G.noise_in) == 0
    losses = ckpt["meta"]["losses"]  # the baseline's defaults (ARGS sets --class-warmup 5)
    assert (losses["w_dist1"], losses["margin"], losses["w_pred"], losses["w_gen"]) == (1.0, 0.1, 1.0, 10.0)
    default = load_checkpoint(generator_run / "weights" / "best.pt")["meta"]["losses"]
    assert (default["w_dist1"], default["margin"], default["w_pred"], default["w_gen"]) == (3.0, 0.2, 5.0, 5.0)
    assert (losses["d_augment"], default["d_augment"]) == ("off", "color,cutout")
    base = json.loads((tmp_path / "r" / "metrics.jsonl").read_text())["val/pixel_change"]
    new = json.loads((generator_run / "metrics.jsonl").read_text())["val/pixel_change"]
    assert base < 0.005 < new


def test_discriminator_schedule_and_diversity_target_options(synth_root, tmp_path):
    assert main(["polyp", "augment", "--data", str(synth_root / "polyp"), "--epochs", "1", "--out", str(tmp_path / "r"),
                 "--d-steps", "3", "--lr-d", "1e-3", "--lr", "1e-4", "--div-target", "5", *ARGS]) == 0
    state = load_checkpoint(tmp_path / "r" / "weights" / "last.pt")["train_state"]["task"]
    # 5 class warm-up updates (--class-warmup 5), then 3 D updates per G update, 2 G updates
    assert [s["step"] for s in state["opt_d"]["state"].values()][0] == 11
    assert [s["step"] for s in state["opt_g"]["state"].values()][0] == 2
    assert state["opt_d"]["param_groups"][0]["lr"] == 1e-3 and state["opt_g"]["param_groups"][0]["lr"] == 1e-4
    rec = json.loads((tmp_path / "r" / "metrics.jsonl").read_text())
    assert rec["train/div"] > 4.5  # max(0, 5 - diversity), diversity being well below 0.5


def test_judge_option_uses_the_given_classifier(synth_root, tmp_path, capsys):
    from fastmed.engine.checkpoint import make_checkpoint, save_checkpoint
    from fastmed.nets.registry import create_model

    judge = save_checkpoint(tmp_path / "judge.pt", make_checkpoint(
        create_model("judge_cnn", num_classes=3, base=4), task="polyp", kind="classifier", arch="judge_cnn",
        arch_kwargs={"num_classes": 3, "base": 4}, class_names=["adenoma", "hyperplastic", "normal"], input_size=[16, 16]))
    assert main(["polyp", "augment", "--data", str(synth_root / "polyp"), "--epochs", "1", "--out", str(tmp_path / "r"),
                 "--judge", str(judge), *ARGS]) == 0
    ckpt = load_checkpoint(tmp_path / "r" / "weights" / "best.pt")
    assert "judge" not in ckpt and ckpt["meta"]["judge"] == str(judge)
    assert main(["polyp", "augment", "--data", str(synth_root / "polyp"), "--epochs", "1", "--out", str(tmp_path / "r2"),
                 "--judge", str(tmp_path / "r" / "weights" / "best.pt"), *ARGS]) == 2
    assert "is a 'generator' checkpoint; a classifier checkpoint is needed" in capsys.readouterr().err


def test_bad_options_are_reported(synth_root, capsys):
    assert main(["polyp", "augment", "--data", str(synth_root / "polyp"), "--image-size", "30"]) == 2
    assert "--image-size must be divisible by 4" in capsys.readouterr().err


def test_both_players_learn_on_a_fixed_batch(synth_root, tmp_path, one_thread):
    """40 steps on one batch (about 5 s): D's class head learns the real images' classes, D's loss and G's target
    loss fall. A GAN's class agreement on generated images needs hundreds of steps and still swings between epochs
    (0.17-0.75 over 160 steps of the tiny set), so this fixed-batch check stands in for "the method learns"."""
    import statistics

    from fastmed.cfg.polyp import PolypAugmentConfig
    from fastmed.engine.run_dir import RunDir
    from fastmed.polyp.augment import GeneratorTask
    from fastmed.polyp.image_sets import load_class_folders

    cfg = PolypAugmentConfig(data=str(synth_root / "polyp"), per_class=2, image_size=32, base=8, lr=1e-3, judge_steps=5, device="cpu")
    task = GeneratorTask(cfg, load_class_folders(cfg.data, cfg.image_size), torch.device("cpu"), RunDir(tmp_path / "r"))
    x01, y = task._batch()
    steps = [task.train_step((x01, y)) for _ in range(40)]
    task.D.eval()
    with torch.no_grad():
        _, cls = task.D(x01 * 2 - 1)
    # chance 1/3 (3 classes); seeds 0-5 gave 0.92, 1.0, 1.0, 1.0, 1.0, 1.0
    assert (cls.argmax(1) == y).float().mean() >= 0.75
    ratio = {k: statistics.mean(s[k] for s in steps[-5:]) / statistics.mean(s[k] for s in steps[:5]) for k in ("loss_d", "target")}
    # last 5 / first 5 steps, seeds 0-5: loss_d 0.91-0.96, target 0.72-0.88
    assert ratio["loss_d"] < 0.98 and ratio["target"] < 0.95, ratio


def test_class_warmup_teaches_the_class_head_before_the_game(synth_root, tmp_path, one_thread):
    """D's class head after ``class_warmup`` real-image updates: on the tiny set the default 200 take its
    cross-entropy on a real batch below chance level (log 3 = 1.10); without it, it is at chance."""
    import math

    from fastmed.cfg.polyp import PolypAugmentConfig
    from fastmed.engine.run_dir import RunDir
    from fastmed.polyp import gan_losses as L
    from fastmed.polyp.augment import GeneratorTask
    from fastmed.polyp.image_sets import load_class_folders

    ce = {}
    for n in (0, 200):
        torch.manual_seed(0)
        cfg = PolypAugmentConfig(data=str(synth_root / "polyp"), per_class=2, image_size=32, base=8, judge_steps=5, class_warmup=n,
                                 device="cpu")
        task = GeneratorTask(cfg, load_class_folders(cfg.data, cfg.image_size), torch.device("cpu"), RunDir(tmp_path / f"r{n}"))
        task.train_batches(1)  # the warm-up runs here, before the first generator update
        x01, y = task._batch()
        with torch.no_grad():
            ce[n] = float(L.prediction_loss(task.D(x01 * 2 - 1)[1], y))
    assert ce[0] > 0.95 * math.log(3) and ce[200] < 0.9 * math.log(3), ce  # seeds 0-2: 1.10-1.11 and 0.84-0.89


def test_d_augment_feeds_the_adversarial_head_augmented_images(synth_root, tmp_path, monkeypatch, capsys):
    """--d-augment: per generator update the adversarial head sees three augmented batches (real and generated for
    D's update, generated for G's), each with the named policy; off (the --identity-start value) augments nothing."""
    import fastmed.polyp.augment as A

    calls = []
    real = A.diff_augment
    monkeypatch.setattr(A, "diff_augment", lambda x, policy, gen: calls.append(policy) or real(x, policy, gen))
    for policy, expected in (("translation,cutout", [["translation", "cutout"]] * 6), ("off", [])):
        calls.clear()
        assert main(["polyp", "augment", "--data", str(synth_root / "polyp"), "--epochs", "1", "--out", str(tmp_path / policy),
                     "--d-augment", policy, *ARGS]) == 0
        assert calls == expected  # 2 updates x 3 batches
        assert load_checkpoint(tmp_path / policy / "weights" / "best.pt")["meta"]["losses"]["d_augment"] == policy
    assert main(["polyp", "augment", "--data", str(synth_root / "polyp"), "--d-augment", "color,blur", "--out", str(tmp_path / "bad")]) == 2
    assert "--d-augment: unknown augmentation(s) ['blur']" in capsys.readouterr().err and not (tmp_path / "bad").exists()
