"""Commands offer only the options they use, per method, and refuse impossible values in one line."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from fastmed.cfg.base import all_commands
from fastmed.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: see tests/conftest.py


def _help(capsys, *argv: str) -> set[str]:
    assert main([*argv, "--help"]) == 0
    return {line.split()[0] for line in capsys.readouterr().out.splitlines() if line.startswith("  --")}


# --- no option a command ignores ---------------------------------------------------------------

def test_help_lists_only_the_options_each_trainer_reads(capsys):
    augment = _help(capsys, "polyp", "augment")
    assert {"--batch-size", "--workers", "--amp"}.isdisjoint(augment) and {"--weight-decay", "--per-class"} <= augment
    reweight = _help(capsys, "seg", "train", "--method", "reweight")
    assert "--workers" not in reweight and {"--amp", "--tau"} <= reweight
    assert {"--workers", "--amp"} <= _help(capsys, "polyp", "pretrain")
    for name in ("polyp predict", "seg predict", "predict"):
        assert "--seed" not in _help(capsys, *name.split()), name  # prediction is deterministic
    assert {"--device", "--progress"}.isdisjoint(_help(capsys, "bench"))


def test_augment_applies_weight_decay(synth_root):
    from fastmed.cfg.polyp import PolypAugmentConfig
    from fastmed.polyp.augment import GeneratorTask
    from fastmed.polyp.image_sets import load_class_folders

    data = load_class_folders(str(synth_root / "polyp"), 16)
    cfg = PolypAugmentConfig(data="unused", image_size=16, base=4, weight_decay=0.25, device="cpu")
    task = GeneratorTask(cfg, data, torch.device("cpu"), run=None)
    for opt in (task.opt_g, task.opt_d):
        assert isinstance(opt, torch.optim.AdamW) and opt.param_groups[0]["weight_decay"] == 0.25
    assert PolypAugmentConfig(data="x").weight_decay == 0.0  # the default stays plain Adam


def test_pretrain_batches_use_the_workers_and_do_not_depend_on_them(synth_root):
    from fastmed.cfg.polyp import PolypPretrainConfig
    from fastmed.polyp.image_sets import load_image_set
    from fastmed.data.images import list_images
    from fastmed.polyp.pretrain import PretrainTask

    paths = list_images(synth_root / "polyp" / "train")[:12]
    images = load_image_set([(p, 0) for p in paths], ["image"], 16).images
    batches = {}
    for workers in (0, 1):
        cfg = PolypPretrainConfig(data="unused", arch="mobilenet_v3_small", image_size=16, batch_size=4, workers=workers)
        task = PretrainTask(cfg, images, images[:0], torch.device("cpu"), run=None)
        assert task.loader.num_workers == workers
        batches[workers] = [b for b in task.train_batches(2)]
    assert len(batches[0]) == 3
    for (c0, x0), (c1, x1) in zip(batches[0], batches[1]):
        torch.testing.assert_close(c0, c1, rtol=0, atol=0)
        torch.testing.assert_close(x0, x1, rtol=0, atol=0)
    assert not torch.equal(batches[0][0][0], batches[0][0][1])  # the inputs are corrupted


@pytest.mark.parametrize("amp", [True, False])
def test_reweight_training_forwards_follow_amp(synth_root, monkeypatch, amp):
    import fastmed.seg.reweight.train as rw
    from fastmed.cfg.seg import SegReweightConfig

    seen = []
    real = rw.autocast
    monkeypatch.setattr(rw, "autocast", lambda device, enabled=True: seen.append(enabled) or real(device, enabled))
    cfg = SegReweightConfig(data=str(synth_root / "seg"), image_size=16, base_width=4, depth=2, n_exact=4, batch_size=4,
                            amp=amp, device="cpu")
    exact, rough, val = rw.load_splits(cfg)
    task = rw.ReweightTask(cfg, exact, rough, val, torch.device("cpu"))
    task.train_step(next(iter(task.train_batches(1))))
    assert seen and set(seen) == {amp}


# --- one method's options are not another method's ---------------------------------------------

def test_seg_methods_list_only_their_own_options(capsys):
    reweight = _help(capsys, "seg", "train")  # the default method
    contour = _help(capsys, "seg", "train", "--method", "contour")
    assert {"--tau", "--mixing", "--n-exact"} <= reweight and {"--tau", "--mixing", "--n-exact"}.isdisjoint(contour)
    assert {"--sigma-dist", "--n-train", "--workers"} <= contour and {"--sigma-dist", "--n-train"}.isdisjoint(reweight)
    assert {"--data", "--image-size", "--epochs", "--amp"} <= reweight & contour
    main(["seg", "train", "--help"])
    assert "fastmed seg train --method contour --help" in capsys.readouterr().out


@pytest.mark.parametrize("argv,named", [
    (["--method", "contour", "--tau", "3", "--mixing", "false"], "--tau, --mixing are not options of --method contour"),
    (["--sigma-dist", "2"], "--sigma-dist is not an option of --method reweight"),
    (["--method=reweight", "n_train=4"], "--n-train is not an option of --method reweight"),
])
def test_seg_method_refuses_the_other_methods_options(capsys, tmp_path, argv, named):
    assert main(["seg", "train", "--data", str(tmp_path), *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {named}") and err.count("\n") == 1


def test_seg_method_needs_a_known_value(capsys):
    assert main(["seg", "train", "--data", "d", "--method", "--epochs", "2"]) == 2
    assert capsys.readouterr().err == "error: option --method needs a value: reweight, contour\n"
    assert main(["seg", "train", "--data", "d", "--method", "magic"]) == 2
    assert capsys.readouterr().err == "error: option --method: 'magic' is not one of reweight, contour\n"


def test_seg_method_from_a_config_file(tmp_path):
    from fastmed.cfg.seg import COMMANDS, SegContourConfig

    yml = tmp_path / "c.yaml"
    yml.write_text("method: contour\nsigma_dist: 2.5\n")
    cfg = COMMANDS[0].parse(["--data", "d", "--config", str(yml)])
    assert isinstance(cfg, SegContourConfig) and cfg.sigma_dist == 2.5
    yml.write_text("method: contour\n")
    assert COMMANDS[0].parse(["--data", "d", "--config", str(yml), "--method", "reweight"]).tau == 5  # command line wins


def test_every_variant_config_is_a_dataclass_of_its_command():
    for cmd in all_commands():
        for value, cls in cmd.variants:
            method = next(f for f in dataclasses.fields(cls) if f.name == cmd.selector)
            assert method.default == value, (cmd.name, value)


# --- impossible values are one-line errors ------------------------------------------------------

BAD = [
    ("polyp train --data d --image-size 0", "--image-size must be >= 8"),
    ("polyp train --data d --image-size -32", "--image-size must be >= 8"),
    ("polyp train --data d --val-fraction 1", "--val-fraction must be in [0.0, 1.0)"),
    ("polyp predict --weights w --source s --batch-size 0", "--batch-size must be >= 1"),
    ("polyp augment --data d --image-size 0", "--image-size must be divisible by 4 and >= 8"),
    ("polyp augment --data d --base 0", "--base must be >= 1"),
    ("polyp augment --data d --w-gen -1", "--w-gen must be >= 0"),
    ("polyp augment --data d --margin nan", "--margin and --blur must be > 0"),
    ("polyp pretrain --data d --image-size 0", "--image-size must be >= 8"),
    ("polyp pretrain --data d --image-size 32 --shuffle-window 64", "--shuffle-window must be in [2, --image-size 32]"),
    ("polyp pretrain --data d --num-classes 0", "--num-classes must be >= 1"),
    ("polyp pretrain --data d --val-fraction 1", "--val-fraction must be in [0.0, 1.0)"),
    ("seg train --data d --image-size 0", "--image-size must be a positive multiple of 2**depth = 8"),
    ("seg train --method contour --data d --image-size -16", "--image-size must be a positive multiple of 2**depth = 8"),
    ("seg train --data d --depth 0", "--depth must be >= 1"),
    ("seg train --data d --overlays -1", "--overlays must be >= 0"),
    ("seg train --data d --val-fraction 1.5", "--val-fraction must be in [0.0, 1.0)"),
    ("seg train --data d --n-exact -2", "--n-exact must be >= -1"),
    ("seg train --data d --tau 0", "--tau must be >= 1"),
    ("seg train --method contour --data d --n-train -3", "--n-train must be >= -1"),
    ("seg train --method contour --data d --sigma-dist nan", "--sigma-dist and --sigma-int must be > 0"),
    ("seg predict --weights w --source s --threshold 2", "--threshold must be in [0.0, 1.0]"),
    ("seg predict --weights w --source s --batch-size 0", "--batch-size must be >= 1"),
    ("distill train --data d --kd-weight 0 --mi-weight 0 --val-fraction -0.1", "--val-fraction must be in [0.0, 1.0)"),
    ("synth --image-size 0", "--image-size must be >= 8"),
    ("synth --shift -1", "--shift must be >= 0"),
    ("synth --seed -1", "--seed must be >= 0"),
    ("seg train --data d --seed -1", "--seed must be >= 0"),
    ("polyp generate --weights w --data d --out o --seed -2", "--seed must be >= 0"),
    ("demo --seed -1", "--seed must be >= 0"),
    ("export --weights w --opset 0", "--opset must be >= 7"),
    ("export --weights w --calib-images 0", "--calib-images must be >= 1"),
    ("export --weights w --workspace-gb 0", "--workspace-gb must be > 0"),
    ("predict --weights w --source s --max-frames 0", "--max-frames must be >= 1"),
    ("bench --weights w --threads -1", "--threads must be >= 0"),
]


@pytest.mark.parametrize("argv,msg", BAD)
def test_impossible_values_are_one_line_errors(capsys, argv, msg):
    assert main(argv.split()) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: option") and msg in err and err.count("\n") == 1, err
