"""``wsi train`` on hand-made feature files: the shared split, and every offered option has an effect."""
from __future__ import annotations

import pytest

from fastmed.cfg.wsi import WsiTrainConfig
from fastmed.data.split import stratified_split
from fastmed.wsi.train import prepare


def test_slides_are_split_with_the_shared_helper(tmp_path, feature_files):
    _, write_dataset = feature_files
    labels = write_dataset(tmp_path / "features", n_slides=10)
    cfg = WsiTrainConfig(features=str(tmp_path / "features"), labels=str(labels), val_fraction=0.4, seed=3)
    train, val, meta = prepare(cfg)
    ids = sorted(f"s{i}" for i in range(10))  # files are read in name order
    want_train, want_val = stratified_split([int(s[1:]) % 2 for s in ids], 0.4, 3)
    assert [b.slide_id for b in val] == [ids[i] for i in want_val] and len(val) == 4
    assert [b.slide_id for b in train] == [ids[i] for i in want_train]
    assert meta["val_slides"] == [ids[i] for i in want_val]


def test_train_summary_counts_the_slides_it_skipped(tmp_path, feature_files):
    from fastmed.wsi.train import run_train

    write_features, write_dataset = feature_files
    labels = write_dataset(tmp_path / "features", n_slides=6)
    write_features(tmp_path / "features", "unlabelled", 1, seed=9)  # not in labels.csv
    cfg = WsiTrainConfig(features=str(tmp_path / "features"), labels=str(labels), epochs=1, out=str(tmp_path / "run"),
                         progress=False)
    summary = run_train(cfg)
    assert summary.skipped == 1
    assert (tmp_path / "run" / "summary.json").read_text().count('"skipped": 1') == 1


def _bags(n: int, dim: int = 4) -> list:
    import numpy as np
    import torch

    from fastmed.wsi.bags import SlideBag

    g = torch.Generator().manual_seed(0)
    return [SlideBag(f"s{i}", torch.randn(5 + i, dim, generator=g) + i % 2, np.zeros((5 + i, 2), np.int64),
                     torch.full((5 + i,), i % 2), i % 2, {}) for i in range(n)]


def _task(**over):
    import torch

    from fastmed.wsi.train import WsiTrainTask

    cfg = WsiTrainConfig(features="f", labels="l.csv", dropout=0.0, **over)
    torch.manual_seed(0)  # the model's init
    return WsiTrainTask(cfg, _bags(7), [], torch.device("cpu"), {"class_names": ["normal", "tumor"]})


def test_batch_size_is_the_number_of_slides_per_step():
    for bs, sizes in ((3, [3, 3, 1]), (7, [7]), (1, [1] * 7)):
        batches = list(_task(batch_size=bs).train_batches(1))
        assert [len(b.offsets) - 1 for b in batches] == sizes
        assert sorted(sid for b in batches for sid in b.slide_ids) == sorted(f"s{i}" for i in range(7))


def test_weight_decay_shrinks_the_weights_as_adamw_prescribes():
    """One step from the same start and batch: the weights differ by exactly ``lr * wd * w0`` (decoupled decay)."""
    import torch

    lr, wd = 0.01, 0.5
    plain, decayed = _task(lr=lr, weight_decay=0.0), _task(lr=lr, weight_decay=wd)
    w0 = [p.detach().clone() for p in plain.model.parameters()]
    for task in (plain, decayed):
        task.train_step(next(iter(task.train_batches(1))))
    for a, b, p0 in zip(plain.model.parameters(), decayed.model.parameters(), w0):
        expected = lr * wd * p0
        torch.testing.assert_close(a.detach() - b.detach(), expected, rtol=1e-3, atol=1e-3 * float(expected.abs().max()) + 1e-12)
    assert any(float(p.abs().max()) > 0 for p in w0)


def test_amp_switches_autocast_for_the_training_step(monkeypatch):
    """``--amp`` reaches the autocast of every step (bf16 on CUDA; autocast itself is a no-op on the CPU)."""
    import contextlib

    import fastmed.wsi.train as wsi_train

    calls = []
    monkeypatch.setattr(wsi_train, "autocast", lambda device, enabled=True: calls.append(enabled) or contextlib.nullcontext())
    for amp in (False, True):
        task = _task(amp=amp)
        task.train_step(next(iter(task.train_batches(1))))
    assert calls == [False, True]


@pytest.mark.gpu
def test_amp_runs_the_forward_pass_in_bf16_on_cuda():
    import torch

    from fastmed.wsi.train import WsiTrainTask

    dtypes = {}
    for amp in (False, True):
        cfg = WsiTrainConfig(features="f", labels="l.csv", amp=amp)
        task = WsiTrainTask(cfg, _bags(4), [], torch.device("cuda"), {"class_names": ["normal", "tumor"]})
        linear = next(m for m in task.model.modules() if isinstance(m, torch.nn.Linear))
        linear.register_forward_hook(lambda mod, inp, out, amp=amp: dtypes.setdefault(amp, out.dtype))
        task.train_step(next(iter(task.train_batches(1))))
    assert dtypes == {False: torch.float32, True: torch.bfloat16}


def test_inference_seed_is_not_offered():
    from fastmed.cfg.base import all_commands, format_help

    cmd = next(c for c in all_commands() if c.name == "wsi train")
    text = format_help(cmd)
    assert all(f"--{o}" in text for o in ("amp", "batch-size", "weight-decay", "lr", "epochs", "workers", "stream"))
    for name in ("wsi predict", "wsi heatmap"):  # deterministic inference: no --seed; a bar over the slides
        text = format_help(next(c for c in all_commands() if c.name == name))
        assert "--seed" not in text and "--progress" in text


def test_predict_shows_progress_only_when_asked(tmp_path, feature_files, capsys, monkeypatch):
    from fastmed.cli import main

    _, write_dataset = feature_files
    labels = write_dataset(tmp_path / "features", n_slides=4)
    args = ["--device", "cpu", "--progress", "false"]
    assert main(["wsi", "train", "--features", str(tmp_path / "features"), "--labels", str(labels), "--out", str(tmp_path / "run"),
                 "--epochs", "1", "--val-fraction", "0", *args]) == 0
    monkeypatch.setenv("FASTMED_PROGRESS", "1")
    for i, shown in enumerate(("true", "false")):
        capsys.readouterr()
        assert main(["wsi", "predict", "--weights", str(tmp_path / "run" / "weights" / "last.pt"), "--features",
                     str(tmp_path / "features"), "--out", str(tmp_path / f"p{i}"), "--device", "cpu", "--progress", shown]) == 0
        assert ("predict" in capsys.readouterr().err) == (shown == "true")


def test_patch_label_fraction_keeps_patch_labels_on_the_chosen_positive_slides_only(monkeypatch):
    import fastmed.wsi.train as train_mod
    from fastmed.wsi.bags import collate

    seen = []
    orig = train_mod.patch_loss
    monkeypatch.setattr(train_mod, "patch_loss", lambda logits, y: seen.append(y.clone()) or orig(logits, y))
    assert _task().meta["patch_label_slides"] == ["s1", "s3", "s5"]  # positives (all patches 1); s0, s2, s4, s6 negative
    for fraction, n_kept in ((0.0, 0), (0.34, 1), (0.67, 2), (1.0, 3)):
        task = _task(patch_label_fraction=fraction, seed=4)
        kept = task.meta["patch_label_slides"]
        assert len(kept) == n_kept and set(kept) <= {"s1", "s3", "s5"}
        for bag in task.train:
            known = int((bag.patch_labels >= 0).sum())
            assert known == (len(bag.patch_labels) if bag.label == 0 or bag.slide_id in kept else 0), bag.slide_id
        batch = collate(task.train)  # loss 1 sees the positive patches of the kept slides only
        seen.clear()
        train_mod.mil_losses(task.model(batch.x, batch.offsets), batch,
                             {"patch": 1.0, "bag": 0.0, "topk": 0.0, "attn": 0.0}, 8, 10_000)
        assert int(seen[0].sum()) == sum(len(b.patch_labels) for b in task.train if b.slide_id in kept)
    draws = {tuple(_task(patch_label_fraction=0.34, seed=s).meta["patch_label_slides"]) for s in range(6)}
    assert len(draws) > 1 and draws == {tuple(_task(patch_label_fraction=0.34, seed=s).meta["patch_label_slides"])
                                        for s in range(6)}  # the seed chooses, the same way each time


def test_a_bad_patch_label_fraction_is_one_error_line(capsys):
    from fastmed.cli import main

    assert main(["wsi", "train", "--features", "f", "--labels", "l.csv", "--patch-label-fraction", "1.5"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "error: option --patch-label-fraction must be in [0, 1], got 1.5"
