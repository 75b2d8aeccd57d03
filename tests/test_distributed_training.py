"""Training under ``torchrun --standalone --nproc_per_node=2`` (gloo) equals one process with the same global batch.

The reference is the same command in this process as a one-rank torchrun
group (``single_rank``): then both draw their samples from
``DistributedSampler``'s order, which two ranks interleave, so every step
sees the same global batch. Augmentation and dropout are off, and the
learning rate is small enough that the AdamW trajectory is stable: at lr
1e-3 a 1e-6 relative change of the inputs alone moved resnet18's weights by
1e-2 after six steps (the first Adam steps are nearly sign(gradient)), at
1e-4 by 7e-7. How much float32 rounding (per-rank batches of 6 against one of
12) grows over the six steps depends on the CPU: at lr 1e-4 two ranks differed
from one by 3e-6 (weights) and 6e-6 (BatchNorm statistics after precise BN) on
one machine, by 4e-5 and 2e-3 on an AVX-512/AMX Xeon (2026-12-02), so the test
runs at lr 3e-5. Measured there at lr 3e-5: two ranks differ from one by 8e-7
and 2e-6; without synchronised BatchNorm by 1.2e-3 and 0.2, without DDP by
1.2e-3 and 0.2, so the tolerance ``RTOL`` = 1e-4 separates them.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist

from fastmed.cli import main
from fastmed.engine.checkpoint import load_model
from fastmed.wsi.patch_file import PatchSet, write_patch_file

RTOL = 1e-4


def torchrun(args: list[str], cwd: Path, nproc: int = 2) -> subprocess.CompletedProcess:
    """``torchrun --standalone --nproc_per_node=nproc -m fastmed.cli ARGS`` in ``cwd`` (one CPU thread per rank)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "FASTMED_PROGRESS": "0"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", "-m", "fastmed.cli", *args]
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return proc


def single_rank(args: list[str], monkeypatch) -> None:
    """``main(args)`` in this process as rank 0 of a one-process torchrun group (left again afterwards)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with monkeypatch.context() as m:
        for k, v in {"WORLD_SIZE": "1", "RANK": "0", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}.items():
            m.setenv(k, v)
        try:
            assert main(args) == 0
        finally:
            if dist.is_initialized():
                dist.destroy_process_group()


def relative_differences(a: Path, b: Path) -> tuple[float, float]:
    """``(‖Δw‖/‖w‖ over the parameters, the same over the BatchNorm running statistics)`` of two checkpoints."""
    sa, sb = (torch.load(p, weights_only=True)["model"] for p in (a, b))
    out = []
    for running in (False, True):
        keys = [k for k in sa if sa[k].is_floating_point() and ("running_" in k) == running]
        if not keys:
            out.append(0.0)
            continue
        va, vb = (torch.cat([s[k].flatten().double() for k in keys]) for s in (sa, sb))
        out.append(float((va - vb).norm() / va.norm()))
    return out[0], out[1]


def metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def assert_one_run_folder(cwd: Path, run: Path) -> None:
    """Rank 0 wrote one complete run; no rank made a folder of its own (e.g. runs/…/train2)."""
    assert sorted(p.name for p in cwd.iterdir()) == [run.name]
    for name in ("config.yaml", "metrics.jsonl", "summary.json", "weights/best.pt", "weights/last.pt"):
        assert (run / name).is_file(), name


# ------------------------------------------------------------------ polyp train


@pytest.fixture(scope="module")
def polyp_data(tmp_path_factory):
    """36 training images (3 steps of 12 an epoch), 18 validation images."""
    from fastmed.data.synthetic import make_synthetic

    return make_synthetic(tmp_path_factory.mktemp("synth"), seed=0, size="tiny", parts=["polyp"]) / "polyp"


def polyp_args(data: Path, out: Path, epochs: int) -> list[str]:
    return ["polyp", "train", "--data", str(data), "--arch", "resnet18", "--epochs", str(epochs), "--batch-size", "12",
            "--image-size", "16", "--augment", "false", "--lr", "3e-5", "--device", "cpu", "--progress", "false",
            "--out", str(out)]


def test_polyp_train_on_two_ranks_equals_one_process_and_resumes_on_one(polyp_data, tmp_path, monkeypatch):
    cwd = tmp_path / "two"
    cwd.mkdir()
    torchrun(polyp_args(polyp_data, Path("run"), 2), cwd)
    two = cwd / "run"
    single_rank(polyp_args(polyp_data, tmp_path / "one", 2), monkeypatch)
    one = tmp_path / "one"

    assert_one_run_folder(cwd, two)
    assert [r["epoch"] for r in metrics(two)] == [1, 2]
    w, bn = relative_differences(one / "weights" / "last.pt", two / "weights" / "last.pt")
    assert w < RTOL and bn < RTOL, (w, bn)
    for a, b in zip(metrics(one), metrics(two)):  # train averages over both ranks' steps; the full validation set
        for k in ("train/loss", "val/loss"):
            assert b[k] == pytest.approx(a[k], rel=RTOL), k
    model, ckpt = load_model(two / "weights" / "best.pt")  # a plain process: no DDP, no process group
    assert not dist.is_initialized() and ckpt["meta"]["epoch"] in (1, 2)
    assert type(model.bn1) is torch.nn.BatchNorm2d

    # resume with another world size: the two-rank run continued on one rank = the one-rank run continued
    shutil.copytree(two, tmp_path / "two_resumed")
    for run in (one, tmp_path / "two_resumed"):
        single_rank(polyp_args(polyp_data, run, 3) + ["--resume"], monkeypatch)
        assert [r["epoch"] for r in metrics(run)] == [1, 2, 3]
    w, bn = relative_differences(one / "weights" / "last.pt", tmp_path / "two_resumed" / "weights" / "last.pt")
    assert w < RTOL and bn < RTOL, (w, bn)


@pytest.mark.slow  # a torchrun launch for one line (the split itself: tests/engine/test_distributed_helpers.py)
def test_a_global_batch_that_two_ranks_cannot_split_is_one_error_line(polyp_data, tmp_path):
    args = polyp_args(polyp_data, tmp_path / "run", 1)
    args[args.index("--batch-size") + 1] = "11"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "fastmed.cli", *args]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode != 0
    assert "error: --batch-size 11 is not divisible by the 2 training processes" in proc.stderr
    assert "ConfigError" not in proc.stderr  # the ranks print one line each; the only traceback is torchrun's report


# ------------------------------------------------------------------ wsi train (ragged bags)


def write_ragged_slides(folder: Path, n_slides: int) -> Path:
    """``n_slides`` feature files of 3-9 patches (alternating normal/tumor) and their labels CSV (returned)."""
    folder.mkdir(parents=True)
    encoder = {"encoder": "tiny", "encoder_weights": "", "feature_dim": 4, "encoder_seed": 0, "encoder_sha256": "a" * 64}
    rows = ["slide_id,label"]
    for i in range(n_slides):
        n, label = 3 + (i * 5) % 7, i % 2
        feats = np.random.default_rng(i).normal(label, 1.0, (n, 4)).astype(np.float32)
        coords = np.stack([np.arange(n) * 64, np.zeros(n)], 1).astype(np.int64)
        attrs = {"slide_id": f"s{i}", "slide_path": f"/nowhere/s{i}.tiff", "size0": 64, "patch_size": 64, "mpp": 0.5,
                 "mode": "bbox", "width": 64 * n, "height": 64, **encoder}
        write_patch_file(folder / f"s{i}.h5", PatchSet(coords, attrs, np.ones(n, np.float32), np.full(n, float(label), np.float32), feats))
        rows.append(f"s{i},{'tumor' if label else 'normal'}")
    labels = folder.parent / "labels.csv"
    labels.write_text("\n".join(rows) + "\n")
    return labels


def test_wsi_train_on_two_ranks_equals_one_process(tmp_path, monkeypatch):
    """Slides, not patches, are dealt to the ranks; the switched-off loss terms leave the patch and instance
    heads without gradients, which DDP must accept."""
    labels = write_ragged_slides(tmp_path / "features", 12)  # 8 training slides: steps of 4, then 4

    def args(out):
        return ["wsi", "train", "--features", str(tmp_path / "features"), "--labels", str(labels), "--epochs", "2",
                "--batch-size", "4", "--val-fraction", "0.34", "--dropout", "0", "--w-patch", "0", "--w-topk", "0",
                "--w-attn", "0", "--lr", "1e-3", "--device", "cpu", "--progress", "false", "--out", str(out)]

    cwd = tmp_path / "two"
    cwd.mkdir()
    torchrun(args(Path("run")), cwd)
    single_rank(args(tmp_path / "one"), monkeypatch)
    assert_one_run_folder(cwd, cwd / "run")
    w, _ = relative_differences(tmp_path / "one" / "weights" / "last.pt", cwd / "run" / "weights" / "last.pt")
    assert w < RTOL, w
    for a, b in zip(metrics(tmp_path / "one"), metrics(cwd / "run")):
        assert b["train/loss"] == pytest.approx(a["train/loss"], rel=RTOL)
        assert b["val/auc"] == a["val/auc"]


# ------------------------------------------------------------------ every other trainer runs under torchrun


@pytest.fixture(scope="module")
def synth_seg(tmp_path_factory):
    from fastmed.data.synthetic import make_synthetic

    return make_synthetic(tmp_path_factory.mktemp("synth_seg"), seed=0, size="tiny", parts=["seg"]) / "seg"


def _teacher(path: Path) -> Path:
    """A random mobilenet_v3_small digits classifier checkpoint (a distillation teacher)."""
    from fastmed.engine.checkpoint import make_checkpoint, save_checkpoint
    from fastmed.nets.registry import create_model

    model = create_model("mobilenet_v3_small", num_classes=10)
    return save_checkpoint(path, make_checkpoint(model, task="polyp", kind="classifier", arch="mobilenet_v3_small",
                                                 arch_kwargs={"num_classes": 10}, class_names=[str(i) for i in range(10)],
                                                 input_size=[8, 8]))


SMOKE = {  # each: the command's arguments for a seconds-long run (the data folders are filled in by the test)
    "polyp augment": ["polyp", "augment", "--data", "{polyp}", "--epochs", "1", "--per-class", "2", "--steps-per-epoch", "2",
                      "--image-size", "32", "--base", "8", "--judge-steps", "5"],
    "polyp pretrain": ["polyp", "pretrain", "--data", "{polyp}", "--arch", "mobilenet_v3_small", "--epochs", "1",
                       "--batch-size", "8", "--image-size", "32"],
    "seg reweight": ["seg", "train", "--method", "reweight", "--data", "{seg}", "--epochs", "1", "--base-width", "4",
                     "--depth", "2", "--image-size", "32", "--n-exact", "4", "--tau", "1", "--batch-size", "4", "--overlays", "2"],
    "seg contour": ["seg", "train", "--method", "contour", "--data", "{seg}", "--epochs", "1", "--batch-size", "4",
                    "--image-size", "32", "--base-width", "4", "--depth", "2", "--overlays", "2", "--sigma-dist", "2"],
    "distill train": ["distill", "train", "--data", "digits", "--epochs", "1", "--batch-size", "128", "--teacher", "{teacher}"],
}


@pytest.mark.slow
@pytest.mark.parametrize("command", sorted(SMOKE))
def test_every_other_trainer_runs_on_two_ranks(command, polyp_data, synth_seg, tmp_path):
    """Each trainer under ``torchrun --nproc_per_node=2``: one run folder, whose best.pt loads in a plain process."""
    slots = {"polyp": str(polyp_data), "seg": str(synth_seg), "teacher": str(_teacher(tmp_path / "teacher.pt"))}
    cwd = tmp_path / "work"
    cwd.mkdir()
    torchrun([a.format(**slots) for a in SMOKE[command]] + ["--device", "cpu", "--progress", "false", "--out", "run"], cwd)
    assert_one_run_folder(cwd, cwd / "run")
    assert len(metrics(cwd / "run")) == 1
    load_model(cwd / "run" / "weights" / "best.pt")
