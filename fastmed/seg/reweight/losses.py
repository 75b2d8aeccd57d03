"""The reweighting method's own loss: BCE over a region of a mixed image, per sample ``(B,)``.

The whole-image losses (``seg_loss``, ``soft_dice_loss``) are in ``fastmed.seg.losses``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def region_bce(logits: torch.Tensor, target: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
    """Pixel BCE summed over ``region`` (``(B, 1, H, W)`` in [0, 1]) and divided by all H*W pixels, per sample.

    The image's mean BCE splits as ``region_bce(r) + region_bce(1 - r)``, so the parts of a mixed
    image weigh by their area, as in an unmixed image.
    """
    bce = F.binary_cross_entropy_with_logits(logits, target.to(logits.dtype), reduction="none")
    return (bce * region).flatten(1).mean(1)
