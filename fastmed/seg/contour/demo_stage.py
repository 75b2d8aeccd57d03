"""Demo stage ``seg-contour``: a short ``fastmed seg train --method contour`` run on the synthetic set."""
from __future__ import annotations

import time

import torch

from fastmed.cfg.seg import SegContourConfig
from fastmed.demo import DemoContext, DemoSection
from fastmed.seg.contour.train import train

EPOCHS = 25  # 8.5 s measured on an idle 2-core CPU


def run(ctx: DemoContext) -> DemoSection:
    """Train a small mask + correlation U-Net from the GeoJSON contours (8.5 s measured on an idle 2-core CPU)."""
    out = ctx.stage_dir("seg-contour") / "run"
    cfg = SegContourConfig(data=str(ctx.data / "seg"), out=str(out), epochs=EPOCHS, batch_size=8,
                         image_size=64, base_width=8, depth=3, lr=3e-3, seed=ctx.seed, device=ctx.device,
                         progress=ctx.progress, overlays=4)
    cfg.validate()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # on a shared 2-core machine one intra-op thread was several times faster
    t0 = time.perf_counter()
    try:
        summary = train(cfg)
    finally:
        torch.set_num_threads(threads)
    ctx.artifacts["seg_contour_weights"] = summary.weights
    m = summary.metrics
    return DemoSection(
        title="seg-contour: segmentation from contour annotations",
        summary=(f"A U-Net with a mask head and a correlation head trained {EPOCHS} epochs on {m['n_train']} synthetic "
                 "images labelled only by GeoJSON outlines: the filled polygons supervise the mask (BCE + Dice), the "
                 "correlation map (exact Euclidean feature transform to the nearest contour pixel, Gaussian in distance "
                 "times Gaussian in intensity difference, fused by max over objects) supervises the second head (MSE). "
                 f"Validation on {m['n_val']} images; metrics of the best epoch ({summary.best_epoch})."),
        metrics={"val Dice": m.get("val/dice"), "val IoU": m.get("val/iou"), "val HD95 (px)": m.get("val/hd95"),
                 "val correlation MAE": m.get("val/corr_mae"), "train time (s)": round(time.perf_counter() - t0, 1)},
        images=[out / "correlation_maps.png", out / "predictions.png", out / "curves.png"],
    )
