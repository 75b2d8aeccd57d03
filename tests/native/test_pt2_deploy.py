"""`.pt2` on the deployment path: bench on a bare package, and a segmenter compiled by AOTInductor."""
import numpy as np
import pytest
import torch

from fastmed.export.bench import VALIDATED, bench
from fastmed.export.predictor import Predictor


def test_bench_on_a_bare_pt2(tiny_pt2, tiny_recognizer, synth_root, tmp_path):
    from fastmed.export.evaluate import evaluate_folder

    data = str(synth_root / "polyp" / "val")
    res = bench(tiny_pt2, tmp_path, data=data, reference=str(tiny_recognizer), batch=2, warmup=1, iters=3, threads=1)
    (row,) = res.rows
    assert row.format == "aoti" and row.name == "AOTInductor fp32" and row.status == VALIDATED
    assert row.max_abs_prob_diff < 1e-4 and row.top1_agreement == 1.0 and row.p50_ms > 0
    assert row.accuracy == pytest.approx(evaluate_folder(Predictor(tiny_recognizer), data).accuracy)


def test_contour_segmenter_compiles_to_pt2_with_its_mask_head(tmp_path):
    from fastmed.engine.checkpoint import make_checkpoint, save_checkpoint
    from fastmed.export import export
    from fastmed.nets.registry import create_model

    kwargs = {"base_width": 4, "depth": 2, "extra_heads": {"corr": 1}}  # the contour method's two-head U-Net
    torch.manual_seed(1)
    ckpt = tmp_path / "contour.pt"
    save_checkpoint(ckpt, make_checkpoint(create_model("unet", **kwargs).eval(), task="seg", kind="segmenter",
                                          arch="unet", arch_kwargs=kwargs, class_names=["object"], input_size=[32, 32]))
    pt2 = export(ckpt, "aoti", tmp_path / "contour.pt2", device="cpu").path
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (32 + 8 * i, 40, 3), dtype=np.uint8) for i in range(3)]
    p_pt2, p_pt = Predictor(pt2).predict(images), Predictor(ckpt).predict(images)
    assert p_pt2.shape == (3, 1, 32, 32) and Predictor(pt2).runtime == "aoti"
    np.testing.assert_allclose(p_pt2, p_pt, rtol=1e-4, atol=1e-6)
