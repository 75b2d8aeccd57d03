"""``fastmed polyp predict``: per-image class probabilities from a classifier checkpoint."""
from __future__ import annotations

import csv
import json
from pathlib import Path

from fastmed.cfg.polyp import PolypPredictConfig
from fastmed.data.folders import format_skipped
from fastmed.engine.checkpoint import load_model
from fastmed.engine.classify import list_images, predict_paths
from fastmed.engine.device import select_device
from fastmed.engine.run_dir import new_run_dir
from fastmed.errors import FastmedError


def write_predictions(path: Path, paths: list[Path], probs, class_names: list[str]) -> Path:
    """CSV (``path,pred,p_<class>...``) or JSON (list of records), by suffix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    records = [{"path": str(p), "pred": class_names[int(pr.argmax())], **{f"p_{c}": float(v) for c, v in zip(class_names, pr)}}
               for p, pr in zip(paths, probs)]
    if path.suffix.lower() == ".json":
        path.write_text(json.dumps(records, indent=2) + "\n", encoding="utf-8")
    else:
        with open(path, "w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=["path", "pred"] + [f"p_{c}" for c in class_names])
            w.writeheader()
            w.writerows(records)
    return path


def run_predict(cfg: PolypPredictConfig) -> dict:
    """Predict every readable image of ``cfg.source``; unreadable ones are skipped and listed."""
    device = select_device(cfg.device)
    model, ckpt = load_model(cfg.weights, map_location=device)
    if ckpt.get("kind") != "classifier":
        raise FastmedError(f"{cfg.weights} is a {ckpt.get('kind')!r} checkpoint, not a classifier")
    names = ckpt.get("class_names") or [str(i) for i in range(ckpt["arch"]["kwargs"].get("num_classes", 0))]
    files = list_images(cfg.source)
    done, probs, skipped = predict_paths(model, ckpt, files, device, cfg.batch_size)
    out = Path(cfg.save) if cfg.save else new_run_dir("polyp", "predict", cfg.out) / "predictions.csv"
    write_predictions(out, done, probs, names)
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
