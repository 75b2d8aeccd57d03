"""Image preprocessing recorded in a model's metadata (the eval transform).

``to_rgb_uint8`` accepts what users hold (paths, ``(H, W, 3)`` uint8 arrays,
PIL images); ``prepare_batch`` resizes to the model's ``input_size`` and lays
the batch out as the artifact expects (see ``metadata.input_format``):

* ``float32-nchw-normalized``: ``(N, 3, H, W)`` float32, ``(x / 255 - mean) / std``
* ``uint8-nhwc``: ``(N, H, W, 3)`` uint8 (the graph normalizes)
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image

from fastmed.data.images import load_image, read_image, resize_image, to_rgb
from fastmed.export.metadata import FLOAT_NCHW, UINT8_NHWC, ModelMetadata
from fastmed.errors import FastmedError

ImageLike = Any  # str | os.PathLike | np.ndarray (H, W, 3) uint8 | PIL.Image.Image


def to_rgb_uint8(item: ImageLike, size: Sequence[int] | None = None) -> np.ndarray:
    """One image as an ``(H, W, 3)`` uint8 RGB array; at ``size = (h, w)`` when given.

    Paths are read with ``fastmed.data.images`` (``load_image``: shrunk while
    decoding, so a huge file is never held at full size), PIL images with its
    ``to_rgb`` (16-bit grey rescaled).
    """
    if isinstance(item, (str, os.PathLike)):
        return read_image(item) if size is None else load_image(item, size)
    if isinstance(item, Image.Image):
        image = np.asarray(to_rgb(item))
    elif isinstance(item, np.ndarray):
        if not (item.ndim == 3 and item.shape[2] == 3 and item.dtype == np.uint8):
            raise FastmedError(f"image arrays must be (H, W, 3) uint8 RGB, got shape {item.shape} dtype {item.dtype}")
        image = item
    else:
        raise FastmedError(f"cannot use {type(item).__name__} as an image (give a path, an (H, W, 3) uint8 array or a PIL image)")
    return image if size is None else resize_image(image, size)


def prepare_batch(images: Sequence[np.ndarray], meta: ModelMetadata) -> np.ndarray:
    """Resize and lay out ``N`` RGB uint8 images as the model's input tensor."""
    if len(images) == 0:
        raise FastmedError("no images to prepare")
    batch = np.stack([resize_image(im, meta.input_size) for im in images])  # (N, H, W, 3) uint8 RGB
    if meta.channel_order.upper() == "BGR":
        batch = batch[..., ::-1]
    if meta.input_format == UINT8_NHWC:
        return np.ascontiguousarray(batch)
    if meta.input_format != FLOAT_NCHW:
        raise FastmedError(f"unknown input_format {meta.input_format!r} in model metadata")
    x = batch.astype(np.float32) / 255.0
    x = (x - np.asarray(meta.mean, np.float32)) / np.asarray(meta.std, np.float32)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax of ``(N, C)`` logits, computed in float64 then cast to float32."""
    z = logits.astype(np.float64) - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


def read_images(paths: Sequence[str | os.PathLike], size: Sequence[int] | None = None
                ) -> tuple[list[np.ndarray], list[tuple[Path, str]]]:
    """Read ``paths`` as RGB uint8 (at ``size`` when given, one file at a time: bounded memory).

    Unreadable files are skipped and returned as ``(path, reason)``.
    """
    images, skipped = [], []
    for p in paths:
        try:
            images.append(to_rgb_uint8(Path(p), size))
        except FastmedError as exc:
            skipped.append((Path(p), str(exc)))
    return images, skipped


def random_images(n: int, size: Sequence[int], seed: int = 0) -> list[np.ndarray]:
    """``n`` random ``(H, W, 3)`` uint8 images (parity checks when no image folder is given)."""
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (int(size[0]), int(size[1]), 3), dtype=np.uint8) for _ in range(n)]
