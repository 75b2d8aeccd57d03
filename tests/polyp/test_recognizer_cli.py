"""``fastmed polyp train`` / ``predict`` end to end on the tiny synthetic set."""
from __future__ import annotations

import csv
import json
import shutil

import pytest

from fastmed.cli import main

EPOCHS = 5


@pytest.fixture(scope="module")
def trained(synth_root, tmp_path_factory):
    """ResNet-18, 5 epochs (~7 s): enough to learn the tiny set (mobilenet_v3_small at 32 px stayed near chance)."""
    out = tmp_path_factory.mktemp("polyp_run")
    args = ["polyp", "train", "--data", str(synth_root / "polyp"), "--arch", "resnet18", "--epochs", str(EPOCHS),
            "--batch-size", "16", "--image-size", "32", "--out", str(out), "--progress", "false"]
    assert main(args) == 0
    return out


def test_train_writes_a_complete_run(trained):
    for name in ("config.yaml", "metrics.jsonl", "curves.png", "confusion_matrix.png", "summary.json", "weights/best.pt", "weights/last.pt"):
        assert (trained / name).exists(), name
    summary = json.loads((trained / "summary.json").read_text())
    # chance is 1/3 (3 balanced classes); seeds 0-6 gave a best-epoch macro-F1 of 0.77-1.0, one epoch of
    # mobilenet_v3_small 0.27: a method that does not learn stays far below 0.6
    assert summary["monitor"] == "val/macro_f1" and summary["best"] >= 0.6


def test_resume_continues_to_more_epochs(trained, synth_root, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    args = ["polyp", "train", "--data", str(synth_root / "polyp"), "--arch", "resnet18", "--epochs", str(EPOCHS + 1),
            "--batch-size", "16", "--image-size", "32", "--out", str(run), "--resume", "--progress", "false"]
    assert main(args) == 0
    epochs = [json.loads(x)["epoch"] for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert epochs == list(range(1, EPOCHS + 2))


def test_predict_skips_corrupt_images_and_writes_json(trained, synth_root, tmp_path, capsys):
    src = tmp_path / "imgs"
    shutil.copytree(synth_root / "polyp" / "test" / "adenoma", src)
    (src / "broken.png").write_bytes(b"\x89PNG broken")
    out = tmp_path / "p.json"
    assert main(["polyp", "predict", "--weights", str(trained / "weights" / "best.pt"), "--source", str(src), "--save", str(out)]) == 0
    records = json.loads(out.read_text())
    n_good = len(list((synth_root / "polyp" / "test" / "adenoma").glob("*.png")))
    assert len(records) == n_good
    assert abs(sum(v for k, v in records[0].items() if k.startswith("prob_")) - 1) < 1e-4
    assert "broken.png" in capsys.readouterr().out


def test_predict_csv_from_a_list_file(trained, synth_root, tmp_path):
    imgs = sorted((synth_root / "polyp" / "test" / "normal").glob("*.png"))[:2]
    lst = tmp_path / "list.txt"
    lst.write_text("\n".join(str(p) for p in imgs) + "\n")
    out = tmp_path / "p.csv"
    assert main(["polyp", "predict", "--weights", str(trained / "weights" / "best.pt"), "--source", str(lst), "--save", str(out)]) == 0
    rows = list(csv.DictReader(open(out)))
    assert [r["path"] for r in rows] == [str(p) for p in imgs] and rows[0]["class"] in {"adenoma", "hyperplastic", "normal"}


def test_extra_data_and_weights_init(trained, synth_root, tmp_path, capsys):
    args = ["polyp", "train", "--data", str(synth_root / "polyp"), "--arch", "resnet18", "--epochs", "1",
            "--batch-size", "16", "--image-size", "32", "--out", str(tmp_path / "r"), "--progress", "false",
            "--extra-data", str(synth_root / "polyp" / "test"), "--weights-init", str(trained / "weights" / "best.pt")]
    assert main(args) == 0
    out = capsys.readouterr().out
    n_train, n_extra = (len(list((synth_root / "polyp" / split).rglob("*.png"))) for split in ("train", "test"))
    assert f"extra data {synth_root / 'polyp' / 'test'}: {n_extra} images" in out
    assert f"on {n_train + n_extra} images" in out  # the extra images joined the training set
    assert "tensors loaded" in out and " 0 skipped" in out  # same arch: every tensor of the checkpoint arrived


def test_clear_errors(synth_root, tmp_path, capsys):
    assert main(["polyp", "train", "--data", str(tmp_path / "missing"), "--epochs", "1"]) == 2
    assert "dataset folder not found" in capsys.readouterr().err
    assert main(["polyp", "predict", "--weights", str(tmp_path / "none.pt"), "--source", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "not found" in err and "none.pt" in err
    bad = tmp_path / "plain.pt"
    import torch

    torch.save({"x": torch.zeros(1)}, bad)
    assert main(["polyp", "train", "--data", str(synth_root / "polyp"), "--epochs", "1", "--pretrained", str(bad), "--out", str(tmp_path / "r2")]) == 2
    assert "not a checkpoint of `fastmed polyp pretrain`" in capsys.readouterr().err


def test_pretrained_loads_the_encoder_but_not_the_head(tmp_path):
    import torch

    from fastmed.cfg.polyp import PolypTrainConfig
    from fastmed.engine.checkpoint import make_checkpoint, save_checkpoint
    from fastmed.nets.registry import create_model
    from fastmed.polyp.train import _init_weights

    source = create_model("resnet18", num_classes=3)
    path = save_checkpoint(tmp_path / "pre.pt", make_checkpoint(source, task="polyp", kind="pretrained-encoder", arch="resnet18",
                                                                 arch_kwargs={"num_classes": 3}))
    target = create_model("resnet18", num_classes=3)
    notes = _init_weights(target, PolypTrainConfig(data="unused", arch="resnet18", pretrained=str(path)))
    assert torch.equal(target.conv1.weight, source.conv1.weight)
    assert not torch.equal(target.fc.weight, source.fc.weight)
    assert "tensors loaded" in notes["pretrained"]
