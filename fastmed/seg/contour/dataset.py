"""Training data of the contour method: image, filled mask and correlation map per item.

Labels come from the GeoJSON outlines only (``contours/<id>.geojson``): the
mask is the union of the filled polygons and the correlation target is the
fused map of ``correlation.correlation_maps``. Maps are computed once when the
dataset is built (cached in memory; about a millisecond per 64x64 image, see
``benchmarks/seg_contour_maps.py``) and augmented together with the image:
90-degree rotations and flips commute with distances and intensities, so the
augmented map is the map of the augmented image.

With ``object_slots = K > 0`` every item also carries its first K objects'
own targets (``objects.py``): filled polygons and per-object correlation maps,
zero-padded to K, and which of the K entries are objects. With
``exact_masks`` (validation) the mask is the exact ``masks/<id>.png`` where
the item has one, so imprecise outlines are scored against the truth; items
whose ``meta.csv`` marks ``touching = 1`` and that have ``instances/<id>.png``
are listed in ``touching`` (objects 1 and 2 touch) for the separation error.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from PIL import Image

from fastmed.data.images import read_image, read_mask
from fastmed.engine.progress import progress
from fastmed.errors import DataError
from fastmed.seg.contour.contours import rasterize_objects, read_contours
from fastmed.seg.contour.correlation import CorrelationMaps, CorrelationParams, correlation_maps
from fastmed.seg.data import SegItem, load_binary_mask, load_rgb, to_tensor_image


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


def read_instances(item: SegItem, image_size: int) -> np.ndarray:
    """``(S, S)`` uint8 object ids of ``instances/<id>.png`` (nearest resize)."""
    inst = read_mask(item.instances)
    if inst.shape != (image_size, image_size):
        inst = np.asarray(Image.fromarray(inst).resize((image_size, image_size), Image.NEAREST))
    return inst


def padded_objects(lab: ContourLabels, slots: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The first ``slots`` objects' ``(filled, correlation)`` ``(slots, S, S)`` float32, zero-padded, and ``valid (slots,)``."""
    n = min(slots, len(lab.filled))
    size = lab.image.shape[:2]
    filled, corr = torch.zeros(slots, *size), torch.zeros(slots, *size)
    filled[:n] = torch.from_numpy(lab.filled[:n].astype(np.float32))
    corr[:n] = torch.from_numpy(lab.maps.per_object[:n])
    return filled, corr, torch.arange(slots) < n


class ContourSegDataset(torch.utils.data.Dataset):
    """Items with contours → ``{"image": (3, S, S) normalized, "mask": (1, S, S) {0, 1},
    "corr": (1, S, S) [0, 1], "index": int}`` (+ ``"obj_masks", "obj_corrs": (K, S, S)``,
    ``"obj_valid": (K,)`` with ``object_slots = K``; see the module docstring).

    Items whose contours cannot be read are skipped and listed in ``skipped``
    (``(id, reason)``); ``augment`` applies a random rotation by 90-degree steps
    and a flip to image, mask and map alike (drawn from torch's RNG).
    """

    def __init__(self, items: Sequence[SegItem], image_size: int, params: CorrelationParams,
                 augment: bool = False, show_progress: bool = False, object_slots: int = 0, exact_masks: bool = False):
        self.params, self.augment, self.object_slots = params, augment, object_slots
        self.items: list[SegItem] = []
        self.skipped: list[tuple[str, str]] = []
        self.touching: list[tuple[int, np.ndarray]] = []  # (dataset index, exact instance ids (S, S))
        images, masks, corrs, objects = [], [], [], []
        for item in progress(items, desc="correlation maps", enabled=show_progress):
            try:
                lab = contour_labels(item, image_size, params)
                mask = load_binary_mask(item.mask, image_size) if exact_masks and item.mask is not None else lab.filled.any(0)
                inst = read_instances(item, image_size) if exact_masks and item.instances is not None \
                    and str(item.meta.get("touching", "0")).strip() == "1" else None
            except DataError as exc:
                self.skipped.append((item.id, str(exc)))
                continue
            if inst is not None:
                self.touching.append((len(self.items), inst))
            self.items.append(item)
            images.append(to_tensor_image(lab.image))
            masks.append(torch.from_numpy(np.asarray(mask, dtype=np.float32))[None])
            corrs.append(torch.from_numpy(lab.maps.fused)[None])
            if object_slots:
                objects.append(padded_objects(lab, object_slots))
        if not self.items:
            raise DataError(f"no usable contour annotations among {len(items)} image(s)"
                            + (f", e.g. {self.skipped[0][0]}: {self.skipped[0][1]}" if self.skipped else ""))
        self.images, self.masks, self.corrs = torch.stack(images), torch.stack(masks), torch.stack(corrs)
        if object_slots:
            self.obj_masks, self.obj_corrs, self.obj_valid = (torch.stack(t) for t in zip(*objects))

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor | int]:
        out: dict[str, torch.Tensor | int] = {"image": self.images[i], "mask": self.masks[i], "corr": self.corrs[i], "index": i}
        maps = ["image", "mask", "corr"]
        if self.object_slots:
            out.update(obj_masks=self.obj_masks[i], obj_corrs=self.obj_corrs[i], obj_valid=self.obj_valid[i])
            maps += ["obj_masks", "obj_corrs"]
        if self.augment:
            # torch's RNG: seeded by the run, and per worker and epoch by the DataLoader
            k, flip = int(torch.randint(4, ())), bool(torch.randint(2, ()))
            for key in maps:
                t = torch.rot90(out[key], k, (1, 2))
                out[key] = t.flip(2) if flip else t
        return out
