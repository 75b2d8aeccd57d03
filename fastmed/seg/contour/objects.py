"""Per-object predictions of the contour method (claims 6-7): K object slots matched to the objects.

With ``--object-slots K`` the U-Net gets one more head, ``"objects"``, of
``2K`` channels: slot ``s`` predicts an object's mask logits (channel ``s``)
and its own correlation logits (channel ``K + s``). The targets are the
per-object maps of ``correlation.correlation_maps`` (one correlation map per
object, on the exact Euclidean feature transform of that object's contour)
and the object's filled polygon.

Why slots with matching, not one predicted map compared with every object's
target: a single predicted map, however the per-object differences are fused
in the loss, is one value per pixel, so where two lesions touch it cannot say
which of them a pixel belongs to (the max or nearest fusion of the targets
is exactly such a map). A slot per object can: touching objects come out as
different slots. The order of objects in a GeoJSON file carries no meaning,
so every image's slots are assigned to its objects by the Hungarian algorithm
(``scipy.optimize.linear_sum_assignment``) on the cost of each
(slot, object) pair, soft-Dice of the masks + MSE of the correlation maps,
computed without gradient (set prediction as in DETR). The per-object
differences are then fused into one loss: for slot ``s`` of image ``b``::

    matched to object m:  mask_s = BCE(mask logits_s, filled_m) + softDice(...)
                          corr_s = mean_p (sigmoid(corr logits_s) - corr_m)^2
    unmatched:            mask_s = BCE(mask logits_s, 0),  corr_s = mean_p sigmoid(corr logits_s)^2
    obj_mask = mean over b, s of mask_s;   obj_corr = mean over b, s of corr_s

(an empty target has no Dice, so unmatched slots get BCE only). An image with
more objects than slots matches K of them; the rest are left to the union mask
head. The trainer adds ``mask_weight * obj_mask + corr_weight * obj_corr`` to
the loss of the fused heads.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment

from fastmed.seg.losses import soft_dice_loss


def pair_costs(mask_logits: torch.Tensor, corr_logits: torch.Tensor, masks: torch.Tensor, corrs: torch.Tensor) -> torch.Tensor:
    """``(K, M)`` matching cost of slot k and object m: soft-Dice loss of the masks + MSE of the correlations.

    Args: ``mask_logits``, ``corr_logits``: ``(K, H, W)`` one image's slots; ``masks``, ``corrs``: ``(M, H, W)`` its objects.
    """
    k, m = mask_logits.shape[0], masks.shape[0]
    logits = mask_logits[:, None].expand(k, m, *mask_logits.shape[1:]).reshape(k * m, -1)
    dice = soft_dice_loss(logits, masks[None].expand(k, m, *masks.shape[1:]).reshape(k * m, -1))
    mse = ((torch.sigmoid(corr_logits)[:, None] - corrs[None]) ** 2).flatten(2).mean(2)
    return dice.view(k, m) + mse


def match_slots(mask_logits: torch.Tensor, corr_logits: torch.Tensor, masks: torch.Tensor, corrs: torch.Tensor) -> list[tuple[int, int]]:
    """Minimum-cost ``(slot, object)`` pairs of one image (``min(K, M)`` of them; shapes as ``pair_costs``)."""
    if masks.shape[0] == 0:
        return []
    with torch.no_grad():
        cost = pair_costs(mask_logits.float(), corr_logits.float(), masks.float(), corrs.float())
    rows, cols = linear_sum_assignment(cost.cpu().numpy().astype(np.float64))
    return [(int(r), int(c)) for r, c in zip(rows, cols)]


def object_losses(objects: torch.Tensor, masks: torch.Tensor, corrs: torch.Tensor, valid: torch.Tensor) -> dict[str, torch.Tensor]:
    """``{"obj_mask", "obj_corr"}`` (scalars, see the module docstring).

    Args:
        objects: ``(B, 2K, H, W)`` the ``"objects"`` head (K mask logits, then K correlation logits).
        masks: ``(B, M, H, W)`` filled polygons of each image's objects (zero-padded).
        corrs: ``(B, M, H, W)`` per-object correlation targets in [0, 1] (zero-padded).
        valid: ``(B, M)`` bool, which of the M entries are objects.
    """
    if objects.shape[1] % 2 or objects.shape[0] != masks.shape[0] or masks.shape != corrs.shape:
        raise ValueError(f"objects must be (B, 2K, H, W) and masks, corrs (B, M, H, W), got {tuple(objects.shape)}, "
                         f"{tuple(masks.shape)}, {tuple(corrs.shape)}")
    k = objects.shape[1] // 2
    mask_logits, corr_logits = objects[:, :k], objects[:, k:]
    mask_terms, corr_terms = [], []
    for b in range(objects.shape[0]):
        idx = torch.nonzero(valid[b]).flatten()
        pairs = dict(match_slots(mask_logits[b], corr_logits[b], masks[b, idx], corrs[b, idx]))
        target_mask = torch.zeros_like(mask_logits[b])
        target_corr = torch.zeros_like(corr_logits[b])
        for s, m in pairs.items():
            target_mask[s], target_corr[s] = masks[b, idx[m]], corrs[b, idx[m]]
        bce = F.binary_cross_entropy_with_logits(mask_logits[b], target_mask, reduction="none").flatten(1).mean(1)
        matched = torch.tensor([s in pairs for s in range(k)], device=objects.device)
        dice = soft_dice_loss(mask_logits[b], target_mask)
        mask_terms.append(torch.where(matched, bce + dice, bce).mean())
        corr_terms.append(((torch.sigmoid(corr_logits[b]) - target_corr) ** 2).mean())
    return {"obj_mask": torch.stack(mask_terms).mean(), "obj_corr": torch.stack(corr_terms).mean()}


def slot_instances(objects: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """``(B, H, W)`` int64 instance labels from the ``"objects"`` head ``(B, 2K, H, W)``:
    pixel -> 1 + the slot of highest mask probability where that probability exceeds ``threshold``, else 0."""
    k = objects.shape[1] // 2
    prob, slot = torch.sigmoid(objects[:, :k].float()).max(1)
    return torch.where(prob > threshold, slot + 1, torch.zeros_like(slot))

