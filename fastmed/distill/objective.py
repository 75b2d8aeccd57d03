"""The student's training objective: labels + Hinton KD + mutual information (each weighted, each optional)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fastmed.distill.data import UNLABELLED
from fastmed.distill.kd import kd_loss
from fastmed.distill.mi_loss import MutualInfoLoss


class DistillObjective(nn.Module):
    """``ce_weight·CE(s, y) + kd_weight·KD_T(t, s) + mi_weight·MI(t, s)``.

    Labels equal to ``UNLABELLED`` are ignored by the cross-entropy. The
    mutual-information loss (and its learnable prior) is a sub-module, so
    ``objective.parameters()`` are the prior's ``m`` and ``ρ`` (none without a prior).
    """

    def __init__(self, num_classes: int, ce_weight: float = 1.0, kd_weight: float = 0.0, temperature: float = 4.0,
                 mi_weight: float = 0.0, prior: bool = True, prior_weight: float = 1.0, prior_init_std: float = 0.1):
        super().__init__()
        self.ce_weight, self.kd_weight, self.mi_weight = float(ce_weight), float(kd_weight), float(mi_weight)
        self.temperature = float(temperature)
        self.mi = MutualInfoLoss(num_classes, prior, prior_weight, prior_init_std) if mi_weight > 0 else None

    @property
    def needs_teacher(self) -> bool:
        return self.kd_weight > 0 or self.mi is not None

    def forward(self, student_logits: torch.Tensor, labels: torch.Tensor,
                teacher_logits: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """``{"loss": scalar to minimize, ...its weighted-in terms, detached}`` for ``(B, C)`` logits, ``(B,)`` labels."""
        if self.needs_teacher and teacher_logits is None:
            raise ValueError("teacher_logits are required when kd_weight > 0 or mi_weight > 0")
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
        return {"loss": loss, **terms}
