"""The student's training objective: labels + Hinton KD + mutual information + L2 features (each weighted, each optional)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fastmed.distill.data import UNLABELLED
from fastmed.distill.features import FeatureMatchLoss
from fastmed.distill.kd import kd_loss
from fastmed.distill.mi_loss import MutualInfoLoss


class DistillObjective(nn.Module):
    """``ce_weight·CE(s, y) + kd_weight·KD_T(t, s) + mi_weight·MI(t, s) + feature_weight·L2(f_t, W f_s)``.

    Labels equal to ``UNLABELLED`` are ignored by the cross-entropy. The
    mutual-information loss (its learnable prior, its optional target ``π``
    with weight ``target_weight``) and the feature projection are sub-modules,
    so ``objective.parameters()`` are the prior's ``m``, ``ρ`` and the
    projection's ``W``, ``c`` (none without them). ``feature_dims``:
    ``(F_s, F_t)``, needed when ``feature_weight > 0``.
    """

    def __init__(self, num_classes: int, ce_weight: float = 1.0, kd_weight: float = 0.0, temperature: float = 4.0,
                 mi_weight: float = 0.0, prior: bool = True, prior_weight: float = 1.0, prior_init_std: float = 0.1,
                 target: torch.Tensor | None = None, target_weight: float = 1.0, feature_weight: float = 0.0,
                 feature_dims: tuple[int, int] | None = None):
        super().__init__()
        self.ce_weight, self.kd_weight, self.mi_weight = float(ce_weight), float(kd_weight), float(mi_weight)
        self.feature_weight = float(feature_weight)
        self.temperature = float(temperature)
        self.mi = (MutualInfoLoss(num_classes, prior, prior_weight, prior_init_std, target, target_weight)
                   if mi_weight > 0 else None)
        if feature_weight > 0 and feature_dims is None:
            raise ValueError("feature_dims (student, teacher) are required when feature_weight > 0")
        self.features = FeatureMatchLoss(*feature_dims) if feature_weight > 0 else None

    @property
    def needs_teacher(self) -> bool:
        return self.kd_weight > 0 or self.mi is not None or self.features is not None

    def forward(self, student_logits: torch.Tensor, labels: torch.Tensor, teacher_logits: torch.Tensor | None = None,
                student_features: torch.Tensor | None = None,
                teacher_features: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """``{"loss": scalar to minimize, ...its weighted-in terms, detached}`` for ``(B, C)`` logits, ``(B,)`` labels
        and, with ``feature_weight > 0``, ``(B, F_s)`` / ``(B, F_t)`` pooled features."""
        if self.needs_teacher and teacher_logits is None:
            raise ValueError("teacher_logits are required when kd_weight, mi_weight or feature_weight > 0")
        if self.features is not None and (student_features is None or teacher_features is None):
            raise ValueError("student_features and teacher_features are required when feature_weight > 0")
        loss = student_logits.new_zeros((), dtype=torch.float32)
        terms: dict[str, torch.Tensor] = {}
        labelled = labels != UNLABELLED
        if self.ce_weight > 0 and labelled.any():
            ce = F.cross_entropy(student_logits[labelled].float(), labels[labelled])
            loss = loss + self.ce_weight * ce
            terms["ce"] = ce.detach()
        if self.kd_weight > 0:
            kd = kd_loss(teacher_logits, student_logits, self.temperature)
            loss = loss + self.kd_weight * kd
            terms["kd"] = kd.detach()
        if self.mi is not None:
            mi_terms = self.mi.terms(teacher_logits, student_logits)
            loss = loss + self.mi_weight * mi_terms["loss"]
            terms["mi"] = mi_terms["mi"].detach()
            if self.mi.prior is not None:
                terms["prior_kl"] = mi_terms["prior_kl"].detach()
                terms["prior_std"] = self.mi.prior.std.detach().mean()
            if "target_kl" in mi_terms:
                terms["target_kl"] = mi_terms["target_kl"].detach()
        if self.features is not None:
            l2 = self.features(teacher_features, student_features)
            loss = loss + self.feature_weight * l2
            terms["feature_l2"] = l2.detach()
        return {"loss": loss, **terms}
