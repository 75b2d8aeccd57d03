"""``fastmed seg predict``: mask PNGs and overlays from a segmenter checkpoint.

Writes ``<out>/masks/<stem>.png`` (0/255 at the image's own size; class
indices for multi-class models), ``<out>/overlays/<stem>.png`` (mask tinted
red with its outline) and ``<out>/predictions.csv`` (``path,foreground_fraction`` per
image). A contour model trained with ``--object-slots K`` also gets
``<out>/objects/<stem>.png``, a uint8 label map from its slot head (0 background,
k = slot k, ``seg.contour.objects.slot_instances``; it is not cut to the fused
mask, which comes from the mask head), and an ``n_objects`` column (slots
present in the image). Unreadable images are skipped and listed at the end.
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
from fastmed.seg.contour.objects import slot_instances
from fastmed.seg.data import to_tensor_image


@torch.no_grad()
def predict_outputs(model: torch.nn.Module, images: torch.Tensor, threshold: float = 0.5) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``images (B, 3, H, W)`` normalized -> ``(masks, objects)``, each ``(B, H, W)`` uint8.

    masks: as ``predict_masks``. objects: the slot labels of a model with an ``"objects"`` head
    (``slot_instances``), else None.
    """
    output = model(images)
    objects = output.get("objects") if isinstance(output, dict) else None
    return _masks(output, threshold), None if objects is None else slot_instances(objects, threshold).to(torch.uint8)


@torch.no_grad()
def predict_masks(model: torch.nn.Module, images: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """``(B, H, W)`` uint8 masks: one output channel: ``sigmoid(logit) > threshold`` (0/1); several: argmax class index."""
    return _masks(model(images), threshold)


def _masks(output, threshold: float) -> torch.Tensor:
    """The uint8 masks of a model's raw output (see ``predict_masks``)."""
    logits = mask_logits(output)
    if logits.shape[1] == 1:
        return (torch.sigmoid(logits[:, 0]) > threshold).to(torch.uint8)
    return logits.argmax(1).to(torch.uint8)


def object_slot_count(ckpt: dict) -> int:
    """K of a checkpoint trained with ``--object-slots K`` (its ``"objects"`` head has 2K channels), else 0."""
    return int((ckpt["arch"]["kwargs"].get("extra_heads") or {}).get("objects", 0)) // 2


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


def _at_size(labels: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    """``(h, w)`` uint8 labels -> ``size`` (nearest), as a numpy array."""
    return F.interpolate(labels[None, None].float(), size=size, mode="nearest")[0, 0].byte().cpu().numpy()


def _mask_png(mask: np.ndarray, binary: bool) -> np.ndarray:
    return (mask > 0).astype(np.uint8) * 255 if binary else mask.astype(np.uint8)


def run_predict(cfg) -> int:
    """CLI runner: predict every image of ``cfg.source`` with ``cfg.weights``."""
    device = select_device(cfg.device)
    model, ckpt = load_model(cfg.weights, map_location=device)
    if ckpt.get("kind") != "segmenter":
        raise FastmedError(f"{cfg.weights} is a {ckpt.get('kind')!r} checkpoint; seg predict needs kind 'segmenter'")
    slots = object_slot_count(ckpt)
    if slots > 255:
        raise FastmedError(f"{cfg.weights} has {slots} object slots; seg predict writes slot labels as 8-bit PNGs (at most 255)")
    size = ckpt.get("input_size") or [64, 64]
    norm = ckpt["normalization"]
    out = new_run_dir("seg", "predict", cfg.out)
    paths = find_images(cfg.source)
    rows, skipped = [], []
    binary = int(ckpt["arch"]["kwargs"].get("num_classes", 1)) == 1
    columns = ["path", "foreground_fraction"] + (["n_objects"] if slots else [])
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
        masks, objects = predict_outputs(model, torch.stack(batch).to(device), cfg.threshold)
        for i, (p, img) in enumerate(originals):
            m = _at_size(masks[i], img.shape[:2])
            write_png(out / "masks" / f"{p.stem}.png", _mask_png(m, binary))
            write_png(out / "overlays" / f"{p.stem}.png", overlay_mask(img, m))
            rows.append({"path": str(p), "foreground_fraction": round(float((m > 0).mean()), 5)})
            if objects is not None:
                labels = _at_size(objects[i], img.shape[:2])
                write_png(out / "objects" / f"{p.stem}.png", labels)
                rows[-1]["n_objects"] = int(np.count_nonzero(np.bincount(labels.ravel())[1:]))
    buf = io.StringIO()  # keyed on "path", like the classifiers' prediction files (fastmed.export.predictions)
    w = csv.DictWriter(buf, fieldnames=columns)
    w.writeheader()
    w.writerows(rows)
    atomic_write_text(out / "predictions.csv", buf.getvalue())
    print(f"wrote {len(rows)} masks and overlays{f' and {slots}-slot object maps' if slots else ''} to {out}")
    if skipped:
        print(f"skipped {len(skipped)} unreadable image(s):")
        for p, why in skipped:
            print(f"  {p}: {why}")
    return 0
