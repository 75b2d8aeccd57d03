"""Segmenters on the deployment path: ONNX export of both seg U-Nets, mask probabilities, predict's mask files, a bench row."""
import csv

import numpy as np
import pytest
import torch
from PIL import Image

from fastmed.cli import main
from fastmed.export.predictor import Predictor

SIZE = 32
# reweight: the plain U-Net; contour: the two-head U-Net (mask + correlation), shipped as its mask head
ARCH = {"reweight": {"base_width": 4, "depth": 2}, "contour": {"base_width": 4, "depth": 2, "extra_heads": {"corr": 1}}}


@pytest.fixture(scope="module")
def seg_models(tmp_path_factory, one_thread):
    """``{method: (checkpoint path, its ONNX export)}``: random-init tiny U-Nets at 32x32 (contour: dynamo exporter)."""
    from fastmed.engine.checkpoint import make_checkpoint, save_checkpoint
    from fastmed.export import export
    from fastmed.nets.registry import create_model

    root = tmp_path_factory.mktemp("seg_export")
    out = {}
    for method, kwargs in ARCH.items():
        torch.manual_seed(1)
        model = create_model("unet", **kwargs).eval()
        ckpt = root / f"{method}.pt"
        save_checkpoint(ckpt, make_checkpoint(model, task="seg", kind="segmenter", arch="unet", arch_kwargs=kwargs,
                                              class_names=["object"], input_size=[SIZE, SIZE], meta={"method": method}))
        exporter = "dynamo" if method == "contour" else "torchscript"
        out[method] = (ckpt, export(ckpt, "onnx", root / f"{method}.onnx", exporter=exporter).path)
    return out


def _images(n, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (SIZE + 8 * i, SIZE + 4 * i, 3), dtype=np.uint8) for i in range(n)]


@pytest.mark.parametrize("method", ["reweight", "contour"])
@pytest.mark.parametrize("batch", [1, 3])
def test_onnx_masks_match_pytorch(seg_models, method, batch):
    import onnx

    from fastmed.engine.checkpoint import load_model
    from fastmed.export.preprocess import prepare_batch
    from fastmed.nets.unet import mask_logits

    ckpt, onnx_path = seg_models[method]
    assert len(onnx.load(str(onnx_path)).graph.output) == 1, "a segmenter ships its mask head only"
    images = _images(batch)
    ort, pt = Predictor(onnx_path), Predictor(ckpt)
    p_ort, p_pt = ort.predict(images), pt.predict(images)
    assert p_ort.shape == (batch, 1, SIZE, SIZE) and ort.runtime == "onnxruntime"
    model, _ = load_model(ckpt)
    with torch.no_grad():
        direct = torch.sigmoid(mask_logits(model(torch.from_numpy(prepare_batch(images, pt.meta))))).numpy()
    np.testing.assert_allclose(p_pt, direct, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(p_ort, p_pt, rtol=1e-4, atol=1e-6)
    assert 0.05 < p_pt.std() and p_pt.min() < 0.5 < p_pt.max(), "a flat mask would make the parity vacuous"


def test_predict_writes_masks_and_overlays(seg_models, tmp_path, capsys):
    _, onnx_path = seg_models["contour"]
    src = tmp_path / "imgs"
    src.mkdir()
    images = _images(3, seed=1)
    for i, im in enumerate(images):
        Image.fromarray(im).save(src / f"im{i}.png")
    (src / "broken.png").write_bytes(b"\x89PNG broken")
    run = tmp_path / "run"
    assert main(["predict", "--weights", str(onnx_path), "--source", str(src), "--out", str(run)]) == 0
    rows = list(csv.DictReader(open(run / "predictions.csv")))
    assert [r["path"] for r in rows] == [str(src / f"im{i}.png") for i in range(3)] and "skipped" in capsys.readouterr().out
    probs = Predictor(onnx_path).predict(images[:1])[0, 0]
    for i, im in enumerate(images):
        mask = np.asarray(Image.open(run / "masks" / f"im{i}.png"))
        overlay = np.asarray(Image.open(run / "overlays" / f"im{i}.png"))
        assert mask.shape == im.shape[:2] and overlay.shape == im.shape and set(np.unique(mask)) <= {0, 255}
        assert float(rows[i]["foreground_fraction"]) == pytest.approx((mask > 0).mean(), abs=1e-5)
    first = np.asarray(Image.open(run / "masks" / "im0.png"))  # at model size: exactly the thresholded probabilities
    np.testing.assert_array_equal(first > 0, probs > 0.5)


def test_bench_segmenter_row_has_dice_and_parity(seg_models, synth_root, tmp_path):
    from fastmed.export.bench import VALIDATED, bench
    from fastmed.export.segmenter import evaluate_masks

    ckpt, onnx_path = seg_models["contour"]
    data = str(synth_root / "seg" / "val")
    res = bench(onnx_path, tmp_path, data=data, reference=str(ckpt), batch=2, warmup=1, iters=3, threads=1)
    (row,) = res.rows
    assert row.status == VALIDATED and row.max_abs_prob_diff < 1e-4 and row.top1_agreement > 0.999
    assert row.p50_ms > 0 and row.throughput_ips > 0
    assert row.accuracy == pytest.approx(evaluate_masks(Predictor(ckpt), data).dice, rel=1e-3)


def test_int8_export_of_a_segmenter_is_refused(seg_models, polyp_dir, capsys):
    ckpt, _ = seg_models["reweight"]
    assert main(["export", "--weights", str(ckpt), "--format", "onnx-int8", "--calib", str(polyp_dir / "train")]) == 2
    err = capsys.readouterr().err
    assert "classifiers" in err and len(err.strip().splitlines()) == 1
