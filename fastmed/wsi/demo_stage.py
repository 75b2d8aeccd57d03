"""Demo stage ``wsi``: tile → features (tiny encoder) → attention-MIL training → predict → heatmaps."""
from __future__ import annotations

import csv
import json

from fastmed.cfg.wsi import WsiFeaturesConfig, WsiHeatmapConfig, WsiPredictConfig, WsiTileConfig, WsiTrainConfig
from fastmed.demo import DemoContext, DemoSection
from fastmed.wsi.features import run_features
from fastmed.wsi.heatmap import run_heatmap
from fastmed.wsi.predict import run_predict
from fastmed.wsi.tile import run_tile
from fastmed.wsi.train import run_train


def run(ctx: DemoContext) -> DemoSection:
    out = ctx.stage_dir("wsi")
    slides = ctx.data / "slides"
    common = dict(progress=ctx.progress)
    run_tile(WsiTileConfig(slides=str(slides), out=str(out / "tiles"), patch_size=64, mask_downsample=16, workers=2, **common))
    run_features(WsiFeaturesConfig(tiles=str(out / "tiles"), out=str(out / "features"), encoder="tiny", device=ctx.device,
                                   seed=ctx.seed, **common))
    labels = str(slides / "labels.csv")
    trained = run_train(WsiTrainConfig(features=str(out / "features"), labels=labels, out=str(out / "train"), epochs=8, batch_size=2,
                                       lr=3e-3, val_fraction=0.25, seed=ctx.seed, device=ctx.device, **common))
    weights = str(trained.weights)
    run_predict(WsiPredictConfig(weights=weights, features=str(out / "features"), labels=labels, out=str(out / "predict"),
                                 device=ctx.device, **common))
    run_heatmap(WsiHeatmapConfig(weights=weights, features=str(out / "features"), out=str(out / "heatmaps"), max_side=384,
                                 device=ctx.device, **common))
    tiling = json.loads((out / "tiles" / "tiling.json").read_text(encoding="utf-8"))
    pred = json.loads((out / "predict" / "metrics.json").read_text())
    rows = list(csv.DictReader(open(out / "predict" / "predictions.csv", encoding="utf-8")))
    tumour = next((r["slide_id"] for r in rows if r.get("label") == "tumor"), rows[0]["slide_id"])
    metrics = {
        "slides tiled": tiling["n_ok"], "tiles": tiling["tiles"], "tiling tiles/s": tiling["tiles_per_s"],
        f"val slide AUC (best epoch, {trained.best_epoch})": trained.metrics.get("val/auc", float("nan")),
        "all-slide AUC (train+val)": pred["auc"], "all-slide accuracy": pred["acc"],
    }
    metrics.update({f"patch AUC {k.split('_')[-1]} (all slides)": v for k, v in pred.items() if k.startswith("patch_auc")})
    return DemoSection(
        title="wsi: attention MIL on synthetic slides (tiny encoder)",
        summary=f"{tiling['n_ok']} pyramidal TIFF slides tiled into 64-px patches at 0.5 µm/px, encoded with the `tiny` "
                "random-convolution encoder, and an attention-MIL model trained 8 epochs with all four losses, two slides per "
                "step (ragged bags). Patch AUC compares each map with the true tumour polygons. Overview: thumbnail, "
                "attention, patch probability, combined.",
        metrics=metrics,
        images=[out / "tiles" / "masks" / f"{tumour}.png", trained.run / "curves.png", out / "heatmaps" / f"{tumour}_overview.png"],
    )
