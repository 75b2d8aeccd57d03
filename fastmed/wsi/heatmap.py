"""``fastmed wsi heatmap``: attention, patch-abnormality and combined heatmaps + positive-patch GeoJSON.

Maps are painted onto a canvas the size of the slide thumbnail, so memory is
bounded by the thumbnail (``max_side``) and the per-patch score vectors, not
by the slide or the number of patches.
"""
from __future__ import annotations

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
    """``(H, W)`` float32 canvas (NaN where no patch): each patch's value over its footprint (mean where they overlap).

    A patch covers canvas rows ``int(y * scale) ..`` and columns ``int(x * scale) ..``
    for ``round(size0 * scale)`` pixels (at least 1), clipped to the canvas. Sums
    and counts are added at the footprints' corners and integrated (a 2-D prefix
    sum), so the cost is O(patches + canvas), also for 200,000-patch slides.
    """
    h, w = shape
    side = max(1, int(round(size0 * scale)))
    c0 = np.clip((np.asarray(coords[:, 0], np.float64) * scale).astype(np.int64), 0, w)
    r0 = np.clip((np.asarray(coords[:, 1], np.float64) * scale).astype(np.int64), 0, h)
    c1, r1 = np.minimum(c0 + side, w), np.minimum(r0 + side, h)
    values = np.asarray(values, np.float64)

    def integrate(weights: np.ndarray) -> np.ndarray:
        corners = np.zeros((h + 1) * (w + 1))
        for rows, cols, sign in ((r0, c0, 1), (r0, c1, -1), (r1, c0, -1), (r1, c1, 1)):
            corners += sign * np.bincount(rows * (w + 1) + cols, weights, minlength=corners.size)
        return corners.reshape(h + 1, w + 1).cumsum(0).cumsum(1)[:h, :w]

    total, count = integrate(values), np.rint(integrate(np.ones_like(values)))
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


def positive_patches_geojson(bag: SlideBag, prob: np.ndarray, attention: np.ndarray, threshold: float) -> tuple[str, int]:
    """QuPath-importable FeatureCollection (JSON text) with one square detection per patch with probability >= threshold.

    Returns the text and the number of detections. The features are formatted
    directly (no dict per patch), so a 200,000-patch slide takes about a second.
    """
    size0 = float(bag.attrs["size0"])
    keep = np.asarray(prob) >= threshold
    xy = np.asarray(bag.coords, np.float64)[keep].tolist()
    p = np.round(np.asarray(prob, np.float64)[keep], 5).tolist()
    a = np.round(np.asarray(attention, np.float64)[keep], 5).tolist()
    head = '{"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [['
    tail = ('"properties": {"objectType": "detection", "classification": {"name": "Tumor", "color": [220, 30, 30]}, '
            '"measurements": {"probability": %r, "attention": %r}}}')
    feats = []
    for (x, y), pi, ai in zip(xy, p, a):
        x1, y1 = x + size0, y + size0
        feats.append(f"{head}[{x!r}, {y!r}], [{x1!r}, {y!r}], [{x1!r}, {y1!r}], [{x!r}, {y1!r}], [{x!r}, {y!r}]]]}}, "
                     + tail % (pi, ai))
    return '{"type": "FeatureCollection", "features": [' + ", ".join(feats) + "]}", len(feats)


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
    text, n_positive = positive_patches_geojson(bag, pred["patch_prob"], att_sig, threshold)
    atomic_write_text(out / f"{sid}_positive.geojson", text)
    return {"slide": bag.slide_id, "probability": round(pred["prob"], 5), "positive_patches": n_positive}


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
