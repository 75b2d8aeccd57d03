"""Losses of the contour method (tensors in, tensors out).

* first difference — ``correlation_loss``: regression between the predicted
  correlation ``sigmoid(corr_logits)`` and the target map, mean over pixels;
* second difference — the mask loss, pixel BCE + soft Dice on the mask logits
  (``fastmed.seg.losses.seg_loss``, shared with the reweight method);
* ``contour_loss`` = ``mask_weight * mask + corr_weight * corr``, plus, with
  object slots, ``mask_weight * obj_mask + corr_weight * obj_corr``: the
  per-object differences of ``objects.object_losses`` (claims 6-7).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from fastmed.seg.contour.objects import object_losses
from fastmed.seg.losses import seg_loss

CORR_LOSSES = ("mse", "l1")


def correlation_loss(corr_logits: torch.Tensor, target: torch.Tensor, kind: str = "mse") -> torch.Tensor:
    """Scalar regression loss; ``corr_logits``/``target``: ``(B, 1, H, W)``, target in [0, 1]."""
    if corr_logits.shape != target.shape:
        raise ValueError(f"corr_logits and target must have the same shape, got {tuple(corr_logits.shape)} and {tuple(target.shape)}")
    pred = torch.sigmoid(corr_logits)
    if kind == "mse":
        return F.mse_loss(pred, target.to(pred.dtype))
    if kind == "l1":
        return F.l1_loss(pred, target.to(pred.dtype))
    raise ValueError(f"kind must be one of {CORR_LOSSES}, got {kind!r}")


def contour_loss(out: dict[str, torch.Tensor], mask: torch.Tensor, corr: torch.Tensor, mask_weight: float = 1.0,
                 corr_weight: float = 1.0, corr_kind: str = "mse",
                 objects: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """``{"loss", "mask", "corr"}`` (+ ``"obj_mask", "obj_corr"`` with ``objects``) for the U-Net output
    ``{"mask": logits, "corr": logits}`` (each ``(B, 1, H, W)``; + ``"objects": (B, 2K, H, W)``).

    ``objects``: the per-object targets ``(obj_masks, obj_corrs, obj_valid)`` of ``objects.object_losses``.
    """
    l_mask = seg_loss(out["mask"], mask).mean()
    l_corr = correlation_loss(out["corr"], corr, corr_kind)
    losses = {"loss": mask_weight * l_mask + corr_weight * l_corr, "mask": l_mask, "corr": l_corr}
    if objects is not None:
        losses.update(object_losses(out["objects"], *objects))
        losses["loss"] = losses["loss"] + mask_weight * losses["obj_mask"] + corr_weight * losses["obj_corr"]
    return losses
