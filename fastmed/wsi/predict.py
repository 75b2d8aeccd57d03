"""``fastmed wsi predict``: slide probabilities from a trained attention-MIL checkpoint."""
from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import torch

from fastmed.engine.atomic import atomic_write_json, atomic_write_text
from fastmed.engine.checkpoint import load_model
from fastmed.engine.device import select_device
from fastmed.engine.progress import progress
from fastmed.engine.run_dir import new_run_dir
from fastmed.errors import FastmedError
from fastmed.wsi.bags import SlideBag, iter_bags, read_labels, without_features
from fastmed.wsi.encoders import describe_encoder, encoder_identity
from fastmed.wsi.metrics import binary_metrics
from fastmed.wsi.train import patch_localization, predict_bags


def load_mil(weights: str, device: torch.device):
    """``(AttentionMIL, checkpoint)`` from a ``wsi train`` checkpoint (``FastmedError`` for another kind)."""
    model, ckpt = load_model(weights, map_location=device)
    if ckpt.get("kind") != "mil":
        raise FastmedError(f"{weights} is a {ckpt.get('kind')!r} checkpoint, not an attention-MIL one (fastmed wsi train)")
    return model, ckpt


def check_features(bags: list[SlideBag], ckpt: dict) -> None:
    """Raise when the feature files were made with another encoder than the training ones (width, name or weights hash)."""
    want = ckpt["arch"]["kwargs"]["in_dim"]
    trained = (ckpt.get("meta") or {}).get("encoder") or {}
    enc = trained.get("encoder")
    for bag in bags:
        if bag.features.shape[1] != want:
            raise FastmedError(f"slide {bag.slide_id}: {bag.features.shape[1]} features, the model expects {want} "
                               f"(encoder {enc!r}); run `fastmed wsi features --encoder {enc}`")
        if trained.get("encoder_sha256") and encoder_identity(bag.attrs) != encoder_identity(trained):
            raise FastmedError(f"slide {bag.slide_id}: features of encoder {describe_encoder(bag.attrs)}, the model was trained "
                               f"on {describe_encoder(trained)}; encode the slides with the training encoder")


def run_predict(cfg) -> int:
    """CLI runner of ``fastmed wsi predict``."""
    device = select_device(cfg.device)
    model, ckpt = load_mil(cfg.weights, device)
    meta = ckpt.get("meta") or {}
    threshold = cfg.threshold if cfg.threshold is not None else float(meta.get("threshold", 0.5))
    labels = read_labels(cfg.labels) if cfg.labels else None
    positive = meta.get("positive", "tumor")
    bags, preds, skipped = [], [], []
    bags_in = iter_bags(cfg.features, labels, positive, skipped)  # one slide's features in memory at a time
    for bag in progress(bags_in, desc="predict", enabled=cfg.progress):
        check_features([bag], ckpt)
        preds.append(predict_bags(model, [bag], device)[0])
        bags.append(without_features(bag))  # keep ids, coordinates and patch labels only
    out = new_run_dir("wsi", "predict", cfg.out)
    names = [ckpt["class_names"][0], positive]  # label 0 / 1
    rows = [{"slide_id": b.slide_id, "probability": round(p["prob"], 6), "prediction": names[int(p["prob"] >= threshold)],
             "n_patches": len(b.coords), **({"label": names[b.label]} if labels else {})} for b, p in zip(bags, preds)]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0]))
    w.writeheader()
    w.writerows(rows)
    save = Path(cfg.save) if cfg.save else out / "predictions.csv"
    atomic_write_text(save, buf.getvalue())
    print(f"predicted {len(rows)} slide(s) (threshold {threshold}); {save}")
    if labels:
        metrics = binary_metrics(np.array([b.label for b in bags]), np.array([p["prob"] for p in preds]), threshold)
        metrics.update(patch_localization(bags, preds))
        atomic_write_json(out / "metrics.json", metrics)
        print("  " + ", ".join(f"{k}={v:.4f}" for k, v in metrics.items()))
    if skipped:
        print(f"  skipped (no label or no patches): {', '.join(skipped)}")
    return 0
