"""Hinton knowledge distillation: KL between temperature-softened teacher and student outputs."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def kd_loss(teacher_logits: torch.Tensor, student_logits: torch.Tensor, temperature: float = 4.0) -> torch.Tensor:
    """``T² · mean_b KL(softmax(t_b / T) ‖ softmax(s_b / T))`` (Hinton et al., 2015).

    The ``T²`` factor keeps the gradient scale independent of ``T``. The teacher
    logits are detached (no gradient reaches the teacher).

    Args:
        teacher_logits, student_logits: ``(B, C)``.
        temperature: T > 0.

    Returns:
        A scalar (nats).
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if teacher_logits.dim() != 2 or teacher_logits.shape != student_logits.shape:
        raise ValueError(f"teacher_logits and student_logits must both be (B, C), got {tuple(teacher_logits.shape)} "
                         f"and {tuple(student_logits.shape)}")
    log_t = F.log_softmax(teacher_logits.detach().float() / temperature, dim=1)
    log_s = F.log_softmax(student_logits.float() / temperature, dim=1)
    kl = (log_t.exp() * (log_t - log_s)).sum(dim=1).mean()
    return kl * temperature**2
