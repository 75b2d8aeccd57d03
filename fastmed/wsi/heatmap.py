"""``fastmed wsi heatmap``: attention, patch-abnormality and combined heatmaps + positive-patch GeoJSON.

Maps are painted patch by patch onto a canvas the size of the slide
thumbnail, so memory is bounded by the thumbnail (``max_side``) and the
per-patch score vectors, not by the slide or the number of patches.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from fastmed.engine.atomic import atomic_write_text
from fastmed.engine.device import select_device
from fastmed.engine.progress import progress
from fastmed.engine.safe_names import safe_component
from fastmed.engine.run_dir import new_run_dir
from fastmed.errors import FastmedError
from fastmed.wsi.bags import SlideBag, iter_bags
from fastmed.wsi.batch_report import print_failures, write_report
from fastmed.wsi.predict import check_features, load_mil
from fastmed.wsi.slide_io import open_slide, read_level
from fastmed.wsi.train import predict_bags


def percentile_rank(v: np.ndarray) -> np.ndarray:
    """Values mapped to their rank in [0, 1] within the slide (how attention maps are usually shown)."""
    if len(v) < 2:
        return np.ones_like(v, dtype=np.float32)
    return (np.argsort(np.argsort(v)) / (len(v) - 1)).astype(np.float32)


def paint(values: np.ndarray, coords: np.ndarray, size0: float, shape: tuple[int, int], scale: float) -> np.ndarray:
    """``(H, W)`` float32 canvas (NaN where no patch): each patch's value over its footprint (mean where they overlap)."""
    total = np.zeros(shape, np.float32)
    count = np.zeros(shape, np.float32)
    side = max(1, int(round(size0 * scale)))
    for (x, y), v in zip(coords, values):
        c0, r0 = int(x * scale), int(y * scale)
        total[r0:r0 + side, c0:c0 + side] += v
        count[r0:r0 + side, c0:c0 + side] += 1
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / count, np.nan).astype(np.float32)


def overlay(thumb: np.ndarray, heat: np.ndarray, alpha: float, cmap: str = "jet") -> np.ndarray:
    """Blend a colour-mapped heat canvas (values in [0, 1], NaN = none) onto an RGB thumbnail."""
    import matplotlib

    colors = (matplotlib.colormaps[cmap](np.nan_to_num(heat, nan=0.0))[..., :3] * 255).astype(np.float32)
    out = thumb.astype(np.float32)
    has = ~np.isnan(heat)
    out[has] = (1 - alpha) * out[has] + alpha * colors[has]
    return out.astype(np.uint8)


def positive_patches_geojson(bag: SlideBag, prob: np.ndarray, attention: np.ndarray, threshold: float) -> dict:
    """QuPath-importable FeatureCollection: one square detection per patch with probability >= threshold."""
    size0 = float(bag.attrs["size0"])
    feats = []
    for (x, y), p, a in zip(bag.coords, prob, attention):
        if p < threshold:
            continue
        x, y = float(x), float(y)
        ring = [[x, y], [x + size0, y], [x + size0, y + size0], [x, y + size0], [x, y]]
        feats.append({"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [ring]},
                      "properties": {"objectType": "detection", "classification": {"name": "Tumor", "color": [220, 30, 30]},
                                     "measurements": {"probability": round(float(p), 5), "attention": round(float(a), 5)}}})
    return {"type": "FeatureCollection", "features": feats}


def thumbnail(bag: SlideBag, slides_dir: Path | None, level: int | None, max_side: int) -> tuple[np.ndarray, float]:
    """RGB thumbnail and its scale (thumbnail pixels per level-0 pixel)."""
    path = str(bag.attrs["slide_path"])
    if slides_dir is not None:
        path = str(slides_dir / Path(path).name)
    slide = open_slide(path)
    try:
        if level is None:
            img = np.asarray(slide.get_thumbnail((max_side, max_side)).convert("RGB"))
        else:
            img = read_level(slide, min(level, slide.level_count - 1))
        return img, img.shape[1] / slide.level_dimensions[0][0]
    finally:
        slide.close()


def render_slide(bag: SlideBag, pred: dict, out: Path, slides_dir: Path | None, level: int | None, max_side: int,
                 alpha: float, threshold: float) -> dict:
    """Write the three overlays, an overview strip and the GeoJSON of one slide; return a summary row.

    The file names start with the slide id read from the feature file, so an id
    that is not a plain file name (``../x``, ``/abs``) is refused (``DataError``).
    """
    from PIL import Image

    sid = safe_component(bag.slide_id, "slide id")
    thumb, scale = thumbnail(bag, slides_dir, level, max_side)
    att_sig = 1 / (1 + np.exp(-pred["attention"]))
    maps = {"attention": percentile_rank(pred["attention"]), "patch": pred["patch_prob"], "combined": att_sig * pred["patch_prob"]}
    panels = [thumb]
    for name, values in maps.items():
        img = overlay(thumb, paint(values, bag.coords, float(bag.attrs["size0"]), thumb.shape[:2], scale), alpha)
        Image.fromarray(img).save(out / f"{sid}_{name}.png", compress_level=1)
        panels.append(img)
    Image.fromarray(np.concatenate(panels, axis=1)).save(out / f"{sid}_overview.png", compress_level=1)
    gj = positive_patches_geojson(bag, pred["patch_prob"], att_sig, threshold)
    atomic_write_text(out / f"{sid}_positive.geojson", json.dumps(gj))
    return {"slide": bag.slide_id, "probability": round(pred["prob"], 5), "positive_patches": len(gj["features"])}


def run_heatmap(cfg) -> int:
    """CLI runner of ``fastmed wsi heatmap``."""
    device = select_device(cfg.device)
    model, ckpt = load_mil(cfg.weights, device)
    out = new_run_dir("wsi", "heatmap", cfg.out)
    done, failed = [], []
    slides_dir = Path(cfg.slides) if cfg.slides else None
    for bag in progress(iter_bags(cfg.features), desc="heatmap", enabled=cfg.progress):  # one slide in memory at a time
        check_features([bag], ckpt)
        try:
            pred = predict_bags(model, [bag], device)[0]
            done.append(render_slide(bag, pred, out, slides_dir, cfg.level, cfg.max_side, cfg.alpha, cfg.patch_threshold))
        except Exception as exc:  # noqa: BLE001 - one bad slide is reported, the rest go on
            msg = str(exc) if isinstance(exc, FastmedError) else f"{type(exc).__name__}: {exc}"
            failed.append((bag.slide_id, msg.replace("\n", " ")))
    errors_csv = write_report(out, "heatmaps", done, failed, {"weights": cfg.weights, "features": cfg.features})
    print(f"heatmaps of {len(done)} slide(s) in {out} (<slide>_attention|patch|combined|overview.png, <slide>_positive.geojson)")
    print_failures(failed, errors_csv)
    return 0 if done or not failed else 1
