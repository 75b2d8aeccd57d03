"""Demo stage ``seg-reweight``: a short reweighting run on the synthetic segmentation data, then predict."""
from __future__ import annotations

import torch

from fastmed.cfg.seg import SegPredictConfig, SegReweightConfig
from fastmed.demo import DemoContext, DemoSection
from fastmed.seg.predict import run_predict
from fastmed.seg.reweight.train import train


def run(ctx: DemoContext) -> DemoSection:
    out = ctx.stage_dir("seg-reweight")
    data = ctx.data / "seg"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a small U-Net: one thread is faster than two contended ones
    try:
        cfg = SegReweightConfig(data=str(data), out=str(out / "train"), seed=ctx.seed, device=ctx.device,
                             progress=ctx.progress, epochs=20, lr=3e-3, image_size=32, base_width=8, n_exact=8, overlays=4)
        cfg.validate()
        s = train(cfg)
        weights = str(s.weights)
        run_predict(SegPredictConfig(weights=weights, source=str(data / "test" / "images"), out=str(out / "predict"),
                                     device=ctx.device, progress=ctx.progress))
    finally:
        torch.set_num_threads(threads)
    ctx.artifacts["seg_reweight_weights"] = weights
    m = s.metrics
    metrics = {"exact / rough training images": f"{m['n_exact']} / {m['n_rough']}",
               "val Dice (best epoch)": s.best, "test Dice": m["test/dice"], "test IoU": m["test/iou"]}
    if "gamma_auc" in m:
        metrics["gamma AUC, wrong vs right rough masks"] = m["gamma_auc"]
        metrics["mean gamma of wrong / right rough masks"] = f"{m['gamma_mean_wrong']:.2f} / {m['gamma_mean_right']:.2f}"
    overlays = sorted((out / "train" / "overlays").glob("*.png"))[:2]
    return DemoSection(
        title="seg-reweight (few exact masks, many rough ones)",
        summary=f"U-Net (GroupNorm) trained {cfg.epochs} epochs with per-image weights gamma for the rough masks "
                "(updated from per-sample gradient dot products with an exact batch), mixed images and a main/auxiliary "
                f"model pair. Red lines in gamma.png: rough masks the generator made wrong on purpose. Test masks: `{out / 'predict'}`.",
        metrics=metrics, images=[out / "train" / "gamma.png", *overlays],
    )
