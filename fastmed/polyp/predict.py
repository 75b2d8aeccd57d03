"""``fastmed polyp predict``: per-image class probabilities from a classifier checkpoint."""
from __future__ import annotations

from pathlib import Path

from fastmed.cfg.polyp import PolypPredictConfig
from fastmed.data.folders import format_skipped
from fastmed.data.images import list_images
from fastmed.engine.run_dir import new_run_dir
from fastmed.errors import FastmedError


def run_predict(cfg: PolypPredictConfig) -> dict:
    """Predict every readable image of ``cfg.source``; unreadable ones are skipped and listed.

    ``cfg.weights`` may be a ``.pt`` checkpoint or any export (``.onnx``, ``.ort``,
    TensorRT engine): one predictor path, ``fastmed.export.Predictor``.
    """
    from fastmed.export.predictions import write_predictions
    from fastmed.export.predictor import Predictor

    predictor = Predictor(cfg.weights, device=cfg.device)
    names = predictor.class_names
    files = list_images(cfg.source)
    done, probs, skipped = predictor.predict_files(files, batch_size=cfg.batch_size)
    out = Path(cfg.save) if cfg.save else new_run_dir("polyp", "predict", cfg.out) / "predictions.csv"
    write_predictions(out, done, probs, names)  # the shared layout: path,class,prob_<name>...
    for p, pr in list(zip(done, probs))[:20]:
        print(f"{p}: {names[int(pr.argmax())]} ({pr.max():.3f})")
    if len(done) > 20:
        print(f"... {len(done) - 20} more")
    if skipped:
        print(format_skipped(skipped))
    print(f"predicted {len(done)} image(s), skipped {len(skipped)}; written to {out}")
    if not done:
        raise FastmedError(f"no readable image in {cfg.source}")
    return {"predictions": str(out), "n": len(done), "skipped": [str(p) for p, _ in skipped]}
