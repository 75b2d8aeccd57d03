"""The module a segmenter export compiles: the network with its mask head as the only output."""
from __future__ import annotations

import torch


class MaskHead(torch.nn.Module):
    """``images (N, 3, H, W)`` → mask logits ``(N, K, H, W)`` of a segmenter (a tensor, or a dict's ``"mask"``).

    The contour method's U-Net also returns a correlation head, a training aid
    no cart needs; every exported segmenter has this one output.
    """

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        from fastmed.nets.unet import mask_logits

        return mask_logits(self.model(images))


def deployable(model: torch.nn.Module, kind: str) -> torch.nn.Module:
    """What an export compiles and ``Predictor(best.pt)`` runs: segmenters in :class:`MaskHead` (eval mode), classifiers as they are."""
    return MaskHead(model).eval() if kind == "segmenter" else model
