"""``fastmed seg predict``: mask PNGs and overlays from a segmenter checkpoint.

Writes ``<out>/masks/<stem>.png`` (0/255 at the image's own size; class
indices for multi-class models), ``<out>/overlays/<stem>.png`` (mask tinted
red with its outline) and ``<out>/predictions.csv`` (``path,foreground_fraction`` per
image). Unreadable images are skipped and listed at the end.
"""
from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from scipy import ndimage

from fastmed.data.images import is_image_file, read_image, write_png
from fastmed.engine.atomic import atomic_write_text
from fastmed.engine.checkpoint import load_model
from fastmed.engine.device import select_device
from fastmed.engine.progress import progress
from fastmed.engine.run_dir import new_run_dir
from fastmed.errors import DataError, FastmedError
from fastmed.nets.unet import mask_logits
from fastmed.seg.data import to_tensor_image


@torch.no_grad()
def predict_masks(model: torch.nn.Module, images: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """``images (B, 3, H, W)`` normalized -> ``(B, H, W)`` uint8 masks.

    One output channel: ``sigmoid(logit) > threshold`` (0/1); several: argmax class index.
    """
    logits = mask_logits(model(images))
    if logits.shape[1] == 1:
        return (torch.sigmoid(logits[:, 0]) > threshold).to(torch.uint8)
    return logits.argmax(1).to(torch.uint8)


def overlay_mask(image: np.ndarray, mask: np.ndarray, color: tuple[int, int, int] = (255, 40, 40), alpha: float = 0.4) -> np.ndarray:
    """``image (H, W, 3)`` uint8 with ``mask (H, W)`` (non-zero = object) tinted and outlined -> ``(H, W, 3)`` uint8."""
    m = np.asarray(mask) > 0
    out = image.astype(np.float32)
    out[m] = (1 - alpha) * out[m] + alpha * np.asarray(color, np.float32)
    edge = m & ~ndimage.binary_erosion(m)
    out[edge] = color
    return out.clip(0, 255).astype(np.uint8)


def find_images(source: str | Path) -> list[Path]:
    """An image file, or every image under a folder (recursive, sorted)."""
    source = Path(source)
    if source.is_file():
        return [source]
    if source.is_dir():
        found = sorted(p for p in source.rglob("*") if p.is_file() and is_image_file(p))
        if not found:
            raise DataError(f"no images found under {source}")
        return found
    raise DataError(f"--source not found: {source}")


def _mask_png(mask: np.ndarray, binary: bool) -> np.ndarray:
    return (mask > 0).astype(np.uint8) * 255 if binary else mask.astype(np.uint8)


def run_predict(cfg) -> int:
    """CLI runner: predict every image of ``cfg.source`` with ``cfg.weights``."""
    device = select_device(cfg.device)
    model, ckpt = load_model(cfg.weights, map_location=device)
    if ckpt.get("kind") != "segmenter":
        raise FastmedError(f"{cfg.weights} is a {ckpt.get('kind')!r} checkpoint; seg predict needs kind 'segmenter'")
    size = ckpt.get("input_size") or [64, 64]
    norm = ckpt["normalization"]
    out = new_run_dir("seg", "predict", cfg.out)
    paths = find_images(cfg.source)
    rows, skipped = [], []
    binary = int(ckpt["arch"]["kwargs"].get("num_classes", 1)) == 1
    for start in progress(range(0, len(paths), cfg.batch_size), desc="seg predict", enabled=cfg.progress):
        batch, originals = [], []
        for p in paths[start:start + cfg.batch_size]:
            try:
                img = read_image(p)
            except DataError as exc:
                skipped.append((p, str(exc)))
                continue
            resized = np.asarray(Image.fromarray(img).resize((size[1], size[0]), Image.BILINEAR))
            batch.append(to_tensor_image(resized, norm["mean"], norm["std"]))
            originals.append((p, img))
        if not batch:
            continue
        masks = predict_masks(model, torch.stack(batch).to(device), cfg.threshold)
        for (p, img), m in zip(originals, masks):
            m = F.interpolate(m[None, None].float(), size=img.shape[:2], mode="nearest")[0, 0].byte().cpu().numpy()
            write_png(out / "masks" / f"{p.stem}.png", _mask_png(m, binary))
            write_png(out / "overlays" / f"{p.stem}.png", overlay_mask(img, m))
            rows.append({"path": str(p), "foreground_fraction": round(float((m > 0).mean()), 5)})
    buf = io.StringIO()  # keyed on "path", like the classifiers' prediction files (fastmed.export.predictions)
    w = csv.DictWriter(buf, fieldnames=["path", "foreground_fraction"])
    w.writeheader()
    w.writerows(rows)
    atomic_write_text(out / "predictions.csv", buf.getvalue())
    print(f"wrote {len(rows)} masks and overlays to {out}")
    if skipped:
        print(f"skipped {len(skipped)} unreadable image(s):")
        for p, why in skipped:
            print(f"  {p}: {why}")
    return 0
