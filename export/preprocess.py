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

from fastmed.export.metadata import FLOAT_NCHW, UINT8_NHWC, ModelMetadata
from fastmed.errors import FastmedError

ImageLike = Any  # str | os.PathLike | np.ndarray (H, W, 3) uint8 | PIL.Image.Image


def to_rgb_uint8(item: ImageLike) -> np.ndarray:
    """One image as an ``(H, W, 3)`` uint8 RGB array (paths are read with ``read_image``)."""
    if isinstance(item, (str, os.PathLike)):
        from fastmed.data.images import read_image

        return read_image(item)
    if isinstance(item, Image.Image):
        return np.asarray(item.convert("RGB"))
    if isinstance(item, np.ndarray):
        if item.ndim == 3 and item.shape[2] == 3 and item.dtype == np.uint8:
            return item
        raise FastmedError(f"image arrays must be (H, W, 3) uint8 RGB, got shape {item.shape} dtype {item.dtype}")
    raise FastmedError(f"cannot use {type(item).__name__} as an image (give a path, an (H, W, 3) uint8 array or a PIL image)")


def resize(image: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """Antialiased bilinear resize of an ``(H, W, 3)`` uint8 image to ``size = (H, W)``.

    The same operation as training's eval transform (torchvision ``Resize(antialias=True)``
    on a uint8 image), so a checkpoint and its exports see identical pixels.
    """
    h, w = int(size[0]), int(size[1])
    if image.shape[:2] == (h, w):
        return image
    import torch
    from torchvision.transforms.v2.functional import resize as tv_resize

    chw = torch.tensor(image).permute(2, 0, 1)  # a copy: frames may be read-only views
    return tv_resize(chw, [h, w], antialias=True).permute(1, 2, 0).numpy()


def prepare_batch(images: Sequence[np.ndarray], meta: ModelMetadata) -> np.ndarray:
    """Resize and lay out ``N`` RGB uint8 images as the model's input tensor."""
    if len(images) == 0:
        raise FastmedError("no images to prepare")
    batch = np.stack([resize(im, meta.input_size) for im in images])  # (N, H, W, 3) uint8 RGB
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


def read_images(paths: Sequence[str | os.PathLike]) -> tuple[list[np.ndarray], list[tuple[Path, str]]]:
    """Read ``paths`` as RGB uint8; unreadable files are skipped and returned as ``(path, reason)``."""
    from fastmed.data.images import read_image

    images, skipped = [], []
    for p in paths:
        try:
            images.append(read_image(p))
        except FastmedError as exc:
            skipped.append((Path(p), str(exc)))
    return images, skipped


def random_images(n: int, size: Sequence[int], seed: int = 0) -> list[np.ndarray]:
    """``n`` random ``(H, W, 3)`` uint8 images (parity checks when no image folder is given)."""
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (int(size[0]), int(size[1]), 3), dtype=np.uint8) for _ in range(n)]
