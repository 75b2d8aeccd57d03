"""Training data of the contour method: image, filled mask and correlation map per item.

Labels come from the GeoJSON outlines only (``contours/<id>.geojson``): the
mask is the union of the filled polygons and the correlation target is the
fused map of ``correlation.correlation_maps``. Maps are computed once when the
dataset is built (cached in memory; about a millisecond per 64x64 image, see
``benchmarks/seg_contour_maps.py``) and augmented together with the image:
90-degree rotations and flips commute with distances and intensities, so the
augmented map is the map of the augmented image.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from fastmed.data.images import read_image
from fastmed.engine.progress import progress
from fastmed.errors import DataError
from fastmed.seg.contour.contours import rasterize_objects, read_contours
from fastmed.seg.contour.correlation import CorrelationMaps, CorrelationParams, correlation_maps
from fastmed.seg.data import SegItem, load_rgb, to_tensor_image


@dataclass
class ContourLabels:
    """Labels of one image at the training size."""

    image: np.ndarray     # (S, S, 3) uint8
    contours: np.ndarray  # (K, S, S) bool
    filled: np.ndarray    # (K, S, S) bool
    maps: CorrelationMaps


def contour_labels(item: SegItem, image_size: int, params: CorrelationParams) -> ContourLabels:
    """Read ``item``'s image and contours and compute its labels at ``image_size``."""
    if item.contours is None:
        raise DataError(f"image {item.id} has no contours/{item.id}.geojson")
    original = read_image(item.image).shape[:2]
    image = load_rgb(item.image, image_size)
    parsed = read_contours(item.contours)
    contours, filled = rasterize_objects(parsed.objects, (image_size, image_size), original)
    return ContourLabels(image, contours, filled, correlation_maps(image, contours, params))


class ContourSegDataset(torch.utils.data.Dataset):
    """Items with contours → ``{"image": (3, S, S) normalized, "mask": (1, S, S) {0, 1},
    "corr": (1, S, S) [0, 1], "index": int}``.

    Items whose contours cannot be read are skipped and listed in ``skipped``
    (``(id, reason)``); ``augment`` applies a random rotation by 90-degree steps
    and a flip to image, mask and map alike (drawn from torch's RNG).
    """

    def __init__(self, items: Sequence[SegItem], image_size: int, params: CorrelationParams,
                 augment: bool = False, show_progress: bool = False):
        self.params, self.augment = params, augment
        self.items: list[SegItem] = []
        self.skipped: list[tuple[str, str]] = []
        images, masks, corrs = [], [], []
        for item in progress(items, desc="correlation maps", enabled=show_progress):
            try:
                lab = contour_labels(item, image_size, params)
            except DataError as exc:
                self.skipped.append((item.id, str(exc)))
                continue
            self.items.append(item)
            images.append(to_tensor_image(lab.image))
            masks.append(torch.from_numpy(lab.filled.any(0).astype(np.float32))[None])
            corrs.append(torch.from_numpy(lab.maps.fused)[None])
        if not self.items:
            raise DataError(f"no usable contour annotations among {len(items)} image(s)"
                            + (f", e.g. {self.skipped[0][0]}: {self.skipped[0][1]}" if self.skipped else ""))
        self.images, self.masks, self.corrs = torch.stack(images), torch.stack(masks), torch.stack(corrs)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor | int]:
        out: dict[str, torch.Tensor | int] = {"image": self.images[i], "mask": self.masks[i], "corr": self.corrs[i], "index": i}
        if self.augment:
            # torch's RNG: seeded by the run, and per worker and epoch by the DataLoader
            k, flip = int(torch.randint(4, ())), bool(torch.randint(2, ()))
            for key in ("image", "mask", "corr"):
                t = torch.rot90(out[key], k, (1, 2))
                out[key] = t.flip(2) if flip else t
        return out
