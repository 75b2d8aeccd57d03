import numpy as np
from PIL import Image

from fastmed.cli import main
from fastmed.engine.checkpoint import make_checkpoint, save_checkpoint
from fastmed.nets.registry import create_model
from fastmed.seg.predict import overlay_mask


def test_overlay_marks_mask_only():
    img = np.zeros((8, 8, 3), np.uint8)
    m = np.zeros((8, 8), np.uint8)
    m[2:6, 2:6] = 1
    out = overlay_mask(img, m)
    assert out[0, 0].tolist() == [0, 0, 0] and out[3, 3, 0] > 0 and out[2, 2].tolist() == [255, 40, 40]


def test_seg_predict_cli(synth_root, tmp_path, capsys, bomb_png):
    kwargs = {"base_width": 4, "depth": 2}
    ckpt = make_checkpoint(create_model("unet", **kwargs), task="seg", kind="segmenter", arch="unet",
                           arch_kwargs=kwargs, class_names=["polyp"], input_size=[32, 32])
    weights = save_checkpoint(tmp_path / "seg.pt", ckpt)
    src = tmp_path / "src"
    src.mkdir()
    for p in sorted((synth_root / "seg" / "test" / "images").iterdir())[:3]:
        (src / p.name).write_bytes(p.read_bytes())
    (src / "broken.png").write_bytes(b"junk")
    bomb_png(src / "bomb.png")  # a header claiming 20000 x 20000 pixels: skipped like any unreadable image
    out = tmp_path / "pred"
    rc = main(["seg", "predict", "--weights", str(weights), "--source", str(src), "--out", str(out), "--device", "cpu"])
    assert rc == 0
    assert "skipped 2" in capsys.readouterr().out
    masks = sorted((out / "masks").glob("*.png"))
    assert len(masks) == 3 and len(list((out / "overlays").glob("*.png"))) == 3
    m = np.asarray(Image.open(masks[0]))
    assert m.shape == (64, 64) and set(np.unique(m)) <= {0, 255}
    csv_text = (out / "predictions.csv").read_text()
    assert csv_text.startswith("path,foreground_fraction") and csv_text.count("\n") == 4


def test_seg_predict_refuses_classifier(tmp_path):
    from fastmed.errors import FastmedError
    import pytest
    from fastmed.cfg.seg import SegPredictConfig
    from fastmed.seg.predict import run_predict

    ck = make_checkpoint(create_model("resnet18", num_classes=2), task="polyp", kind="classifier", arch="resnet18", arch_kwargs={"num_classes": 2})
    path = save_checkpoint(tmp_path / "c.pt", ck)
    with pytest.raises(FastmedError, match="segmenter"):
        run_predict(SegPredictConfig(weights=str(path), source=str(tmp_path), device="cpu"))


def _slot_checkpoint(tmp_path, slots: int, bias: list[float] | None = None):
    """A contour-style U-Net checkpoint with an ``objects`` head of ``slots`` slots; ``bias`` (one per slot)
    replaces that head by constant mask logits (weights 0), so every pixel's slot is known."""
    import torch

    kwargs = {"base_width": 4, "depth": 2, "extra_heads": {"corr": 1, "objects": 2 * slots}}
    model = create_model("unet", **kwargs)
    if bias is not None:
        with torch.no_grad():
            head = model.extra["objects"]
            head.weight.zero_()
            head.bias[:slots] = torch.tensor(bias)
    ckpt = make_checkpoint(model, task="seg", kind="segmenter", arch="unet", arch_kwargs=kwargs,
                           class_names=["object"], input_size=[32, 32], meta={"method": "contour", "object_slots": slots})
    return save_checkpoint(tmp_path / "slots.pt", ckpt)


def test_seg_predict_writes_object_slot_labels(synth_root, tmp_path):
    # slot 2's mask logit (3) beats slot 1's (2) and slot 3's (-4) everywhere: every pixel is object 2
    weights = _slot_checkpoint(tmp_path, 3, bias=[2.0, 3.0, -4.0])
    src = synth_root / "seg" / "test" / "images"
    out = tmp_path / "pred"
    assert main(["seg", "predict", "--weights", str(weights), "--source", str(src), "--out", str(out), "--device", "cpu"]) == 0
    objects = sorted((out / "objects").glob("*.png"))
    assert [p.name for p in objects] == sorted(p.name for p in src.glob("*.png"))
    labels = np.asarray(Image.open(objects[0]))
    assert labels.shape == (64, 64) and labels.dtype == np.uint8 and set(np.unique(labels)) == {2}  # at the image's size
    lines = (out / "predictions.csv").read_text().splitlines()
    assert lines[0] == "path,foreground_fraction,n_objects" and all(line.endswith(",1") for line in lines[1:])
    assert len(list((out / "masks").glob("*.png"))) == len(objects)  # the fused mask head as before


def test_seg_predict_without_slots_writes_no_object_maps(synth_root, tmp_path):
    kwargs = {"base_width": 4, "depth": 2, "extra_heads": {"corr": 1}}  # the contour U-Net without --object-slots
    ckpt = make_checkpoint(create_model("unet", **kwargs), task="seg", kind="segmenter", arch="unet",
                           arch_kwargs=kwargs, class_names=["object"], input_size=[32, 32])
    weights = save_checkpoint(tmp_path / "fused.pt", ckpt)
    out = tmp_path / "pred"
    assert main(["seg", "predict", "--weights", str(weights), "--source", str(synth_root / "seg" / "test" / "images"),
                 "--out", str(out), "--device", "cpu"]) == 0
    assert not (out / "objects").exists() and (out / "predictions.csv").read_text().startswith("path,foreground_fraction\n")


def test_seg_predict_refuses_more_slots_than_8_bit_labels(tmp_path, capsys):
    weights = _slot_checkpoint(tmp_path, 256)
    assert main(["seg", "predict", "--weights", str(weights), "--source", str(tmp_path), "--out", str(tmp_path / "p"),
                 "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "256 object slots" in err and len(err.strip().splitlines()) == 1 and not (tmp_path / "p").exists()
