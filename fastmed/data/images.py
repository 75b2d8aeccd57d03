"""Reading images from disk with clear errors: the one reader of training, prediction and export.

``read_image`` gives ``(H, W, 3)`` uint8 RGB (16-bit grey rescaled); with
``fit`` it shrinks huge images while decoding. ``load_image`` is what
prediction and calibration use: one file at model size.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from fastmed.errors import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def is_image_file(path: str | os.PathLike) -> bool:
    """True when the file name has an image suffix (case-insensitive)."""
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


SHRINK_MARGIN = 4  # a pre-shrunk image keeps at least this many times the model size per side
_SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I;16N", "I")


def to_rgb(im: Image.Image) -> Image.Image:
    """A PIL image as 8-bit RGB; 16-bit grey (modes ``I;16*``, ``I``) is rescaled, ``x / 257``, not clipped."""
    if im.mode in _SIXTEEN_BIT:
        a = np.asarray(im).astype(np.uint32)  # (H, W) 0..65535 (mode I is clipped to that range)
        grey = ((np.minimum(a, 65535) + 128) // 257).astype(np.uint8)
        return Image.fromarray(grey, "L").convert("RGB")
    return im if im.mode == "RGB" else im.convert("RGB")


def _shrink_factor(width: int, height: int, fit: Sequence[int]) -> int:
    """Integer factor by which a ``width x height`` image can shrink and keep ``SHRINK_MARGIN x fit``."""
    return max(1, min(width // (SHRINK_MARGIN * int(fit[1])), height // (SHRINK_MARGIN * int(fit[0]))))


def read_image(path: str | os.PathLike, fit: Sequence[int] | None = None) -> np.ndarray:
    """Read an image as ``(H, W, 3)`` uint8 RGB (grey, RGBA and 16-bit grey are converted).

    ``fit = (h, w)``, the size the caller will resize to: an image at least
    ``2 * SHRINK_MARGIN`` times larger per side is shrunk while it is decoded
    (JPEG DCT scaling via ``Image.draft``, then an integer box ``Image.reduce``)
    to no less than ``SHRINK_MARGIN * fit``, so a huge image never stays in
    memory at full size; smaller images are returned untouched.
    Raises ``DataError`` naming the file when it is missing, truncated, not an
    image, or over PIL's decompression-bomb limit.
    """
    path = Path(path)
    try:
        with Image.open(path) as im:
            if fit is not None and im.format == "JPEG" and _shrink_factor(*im.size, fit) >= 2:
                im.draft(im.mode, (SHRINK_MARGIN * int(fit[1]), SHRINK_MARGIN * int(fit[0])))
            im.load()
            rgb = to_rgb(im)
    except FileNotFoundError as exc:
        raise DataError(f"image not found: {path}") from exc
    except Exception as exc:  # PIL raises many types for bad files (DecompressionBombError, zlib, struct, OSError ...)
        raise DataError(f"cannot read image {path}: {exc}") from exc
    if fit is not None and (k := _shrink_factor(*rgb.size, fit)) >= 2:
        rgb = rgb.reduce(k)
    return np.array(rgb)


def resize_image(image: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """Antialiased bilinear resize of an ``(H, W, 3)`` uint8 image to ``size = (H, W)``.

    The operation of training's eval transform (torchvision ``Resize(antialias=True)``
    on a uint8 image), so a checkpoint and its exports see identical pixels.
    """
    h, w = int(size[0]), int(size[1])
    if image.shape[:2] == (h, w):
        return image
    import torch
    from torchvision.transforms.v2.functional import resize as tv_resize

    chw = torch.tensor(image).permute(2, 0, 1)  # a copy: frames may be read-only views
    return tv_resize(chw, [h, w], antialias=True).permute(1, 2, 0).numpy()


def load_image(path: str | os.PathLike, size: Sequence[int]) -> np.ndarray:
    """An image file at model size ``(h, w, 3)`` uint8: ``read_image(fit=size)`` then ``resize_image``.

    What prediction and calibration read, one file at a time, so memory is
    bounded by the batch at model size whatever the files' size.
    """
    return resize_image(read_image(path, fit=size), size)


def read_mask(path: str | os.PathLike) -> np.ndarray:
    """Read a mask as ``(H, W)`` uint8 (first channel of colour masks)."""
    path = Path(path)
    try:
        with Image.open(path) as im:
            im.load()
            arr = np.asarray(im)
    except FileNotFoundError as exc:
        raise DataError(f"mask not found: {path}") from exc
    except Exception as exc:  # as in read_image
        raise DataError(f"cannot read mask {path}: {exc}") from exc
    return arr[..., 0] if arr.ndim == 3 else arr


def write_png(path: str | os.PathLike, array: np.ndarray) -> Path:
    """Write a uint8 ``(H, W)`` or ``(H, W, 3)`` array as PNG (parent folders created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.ascontiguousarray(array)).save(path)
    return path


def list_images(source: str | os.PathLike) -> list[Path]:
    """Images named by ``source``: one image file, a folder (recursive) or a ``.txt`` list of paths."""
    source = Path(source)
    if source.is_dir():
        files = sorted(p for p in source.rglob("*") if p.is_file() and is_image_file(p))
    elif source.suffix.lower() == ".txt" and source.is_file():
        base = source.parent
        lines = [ln.strip() for ln in source.read_text(encoding="utf-8").splitlines()]
        files = [(Path(ln) if Path(ln).is_absolute() else base / ln) for ln in lines if ln and not ln.startswith("#")]
    elif source.is_file():
        files = [source]
    else:
        raise DataError(f"source not found: {source}")
    if not files:
        raise DataError(f"no images found in {source}")
    return files
