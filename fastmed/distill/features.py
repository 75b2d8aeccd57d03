"""Direct feature supervision (the L2 baseline, FitNets-style): a learned projection of the student's
pooled features onto the teacher's, scored by their relative squared error.

``FeatureTap`` reads a registered classifier's pooled features without changing
how the model is called: a forward pre-hook on its head (``fc`` of a ResNet,
``classifier`` of a MobileNet/EfficientNet) stores the head's input, ``(B, F)``.
"""
from __future__ import annotations

import torch
from torch import nn

from fastmed.nets.classifiers import feature_extractor, head_prefixes


class FeatureTap:
    """After every ``model(x)``, ``tap.features`` holds the ``(B, F)`` input of the model's head (with its graph)."""

    def __init__(self, model: nn.Module):
        head = getattr(model, head_prefixes(model)[0].rstrip("."))
        self.dim = feature_extractor(model)[1]
        self.features: torch.Tensor | None = None
        self._handle = head.register_forward_pre_hook(self._store)

    def _store(self, module: nn.Module, args: tuple) -> None:
        self.features = args[0]

    def remove(self) -> None:
        self._handle.remove()


class FeatureMatchLoss(nn.Module):
    """``mean_b ‖W f_s,b + c − f_t,b‖² / mean_b ‖f_t,b‖²`` with a learned linear projection ``W, c`` (F_s → F_t).

    Scale-free: 0 for a perfect match, 1 for a student that projects to zero.
    The teacher's features are detached (no gradient reaches the teacher).

    Call: ``loss(teacher_features (B, F_t), student_features (B, F_s)) -> scalar``.
    """

    def __init__(self, student_dim: int, teacher_dim: int):
        super().__init__()
        self.projection = nn.Linear(student_dim, teacher_dim)

    def forward(self, teacher_features: torch.Tensor, student_features: torch.Tensor) -> torch.Tensor:
        target = teacher_features.detach().float()
        if target.dim() != 2 or student_features.dim() != 2 or target.shape[0] != student_features.shape[0]:
            raise ValueError(f"features must be (B, F_t) and (B, F_s), got {tuple(target.shape)} and "
                             f"{tuple(student_features.shape)}")
        err = (self.projection(student_features.float()) - target).pow(2).sum(1).mean()
        return err / target.pow(2).sum(1).mean().clamp_min(1e-12)
