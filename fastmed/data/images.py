"""Reading images from disk with clear errors."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from fastmed.errors import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def is_image_file(path: str | os.PathLike) -> bool:
    """True when the file name has an image suffix (case-insensitive)."""
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image as ``(H, W, 3)`` uint8 RGB (grey and RGBA are converted).

    Raises ``DataError`` naming the file when it is missing, truncated or not
    an image.
    """
    path = Path(path)
    try:
        with Image.open(path) as im:
            im.load()
            return np.array(im.convert("RGB"))
    except FileNotFoundError as exc:
        raise DataError(f"image not found: {path}") from exc
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise DataError(f"cannot read image {path}: {exc}") from exc


def read_mask(path: str | os.PathLike) -> np.ndarray:
    """Read a mask as ``(H, W)`` uint8 (first channel of colour masks)."""
    path = Path(path)
    try:
        with Image.open(path) as im:
            im.load()
            arr = np.asarray(im)
    except FileNotFoundError as exc:
        raise DataError(f"mask not found: {path}") from exc
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
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
