"""The teacher–student joint class distribution and its mutual information.

For a batch of probability rows ``s_b`` (student) and ``t_b`` (teacher), both
``(B, C)``::

    P = Σ_b s_bᵀ t_b            (C, C); P[i, j] = Σ_b s_b[i] · t_b[j]
    P ← (P + Pᵀ) / 2            symmetrized
    P ← P / Σ_ij P[i, j]        normalized to a distribution

Rows index the student's class, columns the teacher's. After symmetrization
both marginals are equal, ``P.sum(1) == P.sum(0) == (mean_b s_b + mean_b t_b) / 2``.
"""
from __future__ import annotations

import torch

# probabilities below EPS are clamped before a log; their contribution P·log P is ~0 anyway
EPS = 1e-10


def check_probability_rows(name: str, p: torch.Tensor) -> None:
    """Raise ``ValueError``/``TypeError`` unless ``p`` is a ``(B, C)`` float tensor of probability rows."""
    if not isinstance(p, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(p).__name__}")
    if p.dim() != 2 or p.shape[0] < 1 or p.shape[1] < 2:
        raise ValueError(f"{name} must have shape (B, C) with B >= 1 and C >= 2, got {tuple(p.shape)}")
    if not p.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got {p.dtype}")
    with torch.no_grad():
        row_sums = p.float().sum(dim=1)
        if (p < 0).any() or not torch.allclose(row_sums, torch.ones_like(row_sums), atol=1e-3):
            raise ValueError(f"{name} rows must be probabilities (>= 0, summing to 1); row sums span "
                             f"[{row_sums.min().item():.4g}, {row_sums.max().item():.4g}]")


def joint_distribution(p_teacher: torch.Tensor, p_student: torch.Tensor) -> torch.Tensor:
    """Symmetrized, normalized joint distribution of student and teacher classes.

    Args:
        p_teacher: ``(B, C)`` teacher probability rows.
        p_student: ``(B, C)`` student probability rows.

    Returns:
        ``(C, C)`` float32 tensor ``P`` (rows: student class, columns: teacher
        class), symmetric, non-negative, summing to 1. Differentiable in both inputs.
    """
    check_probability_rows("p_teacher", p_teacher)
    check_probability_rows("p_student", p_student)
    if p_teacher.shape != p_student.shape:
        raise ValueError(f"p_teacher and p_student must have the same shape, got {tuple(p_teacher.shape)} "
                         f"and {tuple(p_student.shape)}")
    joint = p_student.float().t() @ p_teacher.float()  # (C, B) @ (B, C) = Σ_b s_bᵀ t_b
    joint = (joint + joint.t()) / 2
    return joint / joint.sum()


def mutual_information(joint: torch.Tensor) -> torch.Tensor:
    """``I(S; T) = Σ_ij P_ij log(P_ij / (P_i· P_·j))`` in nats for a ``(C, C)`` joint ``P``."""
    if joint.dim() != 2 or joint.shape[0] != joint.shape[1]:
        raise ValueError(f"joint must be a square (C, C) matrix, got shape {tuple(joint.shape)}")
    p_row = joint.sum(dim=1, keepdim=True)  # (C, 1) student marginal
    p_col = joint.sum(dim=0, keepdim=True)  # (1, C) teacher marginal
    log_ratio = joint.clamp_min(EPS).log() - p_row.clamp_min(EPS).log() - p_col.clamp_min(EPS).log()
    return (joint * log_ratio).sum()
