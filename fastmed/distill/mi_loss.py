"""Mutual-information distillation loss with a learnable Gaussian prior, optionally pulled towards a target.

Notation (all distributions over the C classes, logs in nats):
``P`` the ``(C, C)`` joint of ``joint_distribution`` (rows: student, columns:
teacher), ``P_S = P.sum(1)`` its student marginal, ``P_T = P.sum(0)`` its
teacher marginal, ``p`` the prior, ``I(S;T) = Σ_ij P_ij log(P_ij / (P_S,i P_T,j))``.

Derivation
----------
IIC minimizes ``−I(S;T)``. The method replaces the student marginal ``P_S`` by a
learnable prior ``p``. Substituting naively::

    L_naive = −Σ_ij P_ij log( P_ij / (p_i P_T,j) )

and splitting ``log(P_ij / (p_i P_T,j)) = log(P_ij / (P_S,i P_T,j)) + log(P_S,i / p_i)``
(the second part does not depend on j, and ``Σ_j P_ij = P_S,i``) gives the key step::

    L_naive = −I(S;T) − KL(P_S ‖ p)

The prior enters only through ``−KL(P_S ‖ p) ≤ 0``. Gradient descent on the
prior's parameters therefore *maximizes* the KL: it moves ``p`` away from the
student marginal, towards ``p_i → 0`` where ``P_S,i > 0``, and ``L_naive → −∞``.
With ``p = softmax(m + d·a)`` the noise scale runs away too: for a symmetric
``a``, ``E_a[−log softmax(m + d·a)_i]`` is convex and even in ``d``, so it
grows with ``|d|``; in ``L_naive`` it carries a minus sign, so descent grows
``d`` without bound (``tests/distill/test_mi_loss.py`` shows both).

The fix keeps the substitution but gives the prior term the sign of a fit::

    L = −I(S;T) + λ·KL(P_S ‖ p)          (= L_naive + (1 + λ)·KL(P_S ‖ p))

1. Reduces to IIC: if ``p = P_S`` the KL is 0, so ``L = −I(S;T)``. The gradient
   agrees as well: ``∂KL/∂P_S = log(P_S / p) + 1 = 1`` there, a constant vector,
   orthogonal to every change of ``P_S`` that keeps it a distribution.
2. Cannot run away through the prior: ``m`` and ``d`` appear only in
   ``λ·(−Σ_i P_S,i log p_i)``, a cross-entropy minimized at ``p = P_S``. Descent
   pulls the prior *towards* the student marginal, and the expected term is
   non-decreasing in ``d``, so the noise scale can only shrink. For all
   parameters ``L ≥ −I(S;T) ≥ −log C``.
3. A valid distribution: the Gaussian lives on the prior's logits,
   ``p = softmax(m + d ⊙ a)``, ``a ~ N(0, I)`` resampled at every training call,
   ``d = softplus(ρ) ≥ 0``; ``p ≥ 0`` and ``Σ p = 1`` for any ``m``, ``ρ``, ``a``.
   (Taking ``m + d·a`` itself as probabilities would leave the simplex.)

What the student gets from the prior: ``λ·KL(P_S ‖ p)`` pulls each batch's
marginal towards ``p``, a fit of the marginal accumulated over many batches
(through the optimizer), jittered by the Gaussian noise — a smoothed class-
balance target in place of the single batch's marginal alone.

A target prior: favouring the weak classes
------------------------------------------
Fitted to ``P_S`` alone, the prior's only stationary point is the student's
own marginal: on imbalanced data it learns the majority's share and the term
above keeps the student there. To give the prior the role of the *wanted*
marginal, a user names a target class distribution ``π`` (uniform, or more mass
on the classes they call weak; ``fastmed.distill.prior_target``) and its weight
``μ ≥ 0``::

    L = −I(S;T) + λ·[ KL(P_S ‖ p) + μ·KL(π ‖ p) ]

4. Still bounded: both KLs are ≥ 0, so ``L ≥ −I(S;T) ≥ −log C`` for every
   ``m``, ``ρ``, ``a``; ``μ = 0`` is the loss above.
5. Stationary point: ``m``, ``d`` enter only through
   ``−λ·Σ_i (P_S,i + μ π_i) log p_i`` (plus constants), a cross-entropy whose
   minimum over the simplex is at ``d = 0`` and::

       p* = (P_S + μ·π) / (1 + μ)

   (Lagrange: ``∂/∂p_i [−Σ w log p + κ(Σ p − 1)] = 0`` gives ``p_i ∝ w_i``.)
   The noise argument of 2. holds for any non-negative weights ``w``, so ``d``
   still only shrinks.
6. What the student gets: the student half of ``P_S = (mean s + mean t)/2``
   is pulled towards ``p*``, i.e. part of the way from its training marginal
   to ``π``. On a class whose share the data makes small (``P_S,i < p*_i``)
   ``∂KL(P_S ‖ p)/∂P_S,i = log(P_S,i / p*_i) + 1`` is below the mean, so descent
   raises that class's probability on every image. For a classifier that only
   shifts its logits by a vector ``b``, matching the training marginal to ``π``
   is the prior-shift correction of Saerens et al. (2002):
   ``b_i ≈ log(π_i / π_train,i)``, the additive logit adjustment that makes a
   classifier trained on ``π_train`` Bayes-optimal under the prior ``π``
   (Menon et al., 2021, "Long-tail learning via logit adjustment"). The weak
   classes' recall rises, paid for by the majority's false positives; ``λ``,
   ``μ`` and the target set how far it goes (``benchmarks/distill_minority.py``
   measures it).

The teacher is frozen: its logits are detached here, so no gradient reaches it.
Both heads output C logits, so no feature projection is needed.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from fastmed.distill.joint import EPS, joint_distribution, mutual_information


class GaussianPrior(nn.Module):
    """A learnable random class prior ``p = softmax(m + softplus(ρ) ⊙ a)``, ``a ~ N(0, I)``.

    In training mode every call draws a new ``a``; in eval mode ``a = 0``
    (``p = softmax(m)``). ``m`` starts at 0 (uniform prior), ``softplus(ρ)`` at
    ``init_std``.
    """

    def __init__(self, num_classes: int, init_std: float = 0.1):
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        if init_std <= 0:
            raise ValueError(f"init_std must be > 0, got {init_std}")
        self.mean = nn.Parameter(torch.zeros(num_classes))
        # inverse softplus: softplus(rho) == init_std
        self.rho = nn.Parameter(torch.full((num_classes,), math.log(math.expm1(init_std))))

    @property
    def std(self) -> torch.Tensor:
        """``d = softplus(ρ) ≥ 0``, shape ``(C,)``."""
        return F.softplus(self.rho)

    def forward(self) -> torch.Tensor:
        """One draw of the prior: ``(C,)`` probabilities summing to 1."""
        logits = self.mean
        if self.training:
            logits = logits + self.std * torch.randn_like(self.mean)
        return torch.softmax(logits, dim=0)


class MutualInfoLoss(nn.Module):
    """``−I(S;T) + λ·[KL(P_S ‖ p) + μ·KL(π ‖ p)]`` between teacher and student class outputs (module docstring).

    Args:
        num_classes: C, the width of both logit tensors.
        prior: learn a Gaussian prior ``p`` (``False``: plain IIC ``−I(S;T)``).
        prior_weight: λ > 0, weight of the prior's terms.
        prior_init_std: initial noise scale ``d`` of the prior.
        target: ``(C,)`` target distribution ``π`` the prior is pulled towards (``None``: no target, μ unused);
            the prior's mean starts at ``log π``.
        target_weight: μ ≥ 0, weight of ``KL(π ‖ p)`` relative to ``KL(P_S ‖ p)``.

    Call: ``loss(teacher_logits (B, C), student_logits (B, C)) -> scalar``. The
    prior's ``m`` and ``ρ`` are parameters of this module: give them to the
    student's optimizer.
    """

    def __init__(self, num_classes: int, prior: bool = True, prior_weight: float = 1.0, prior_init_std: float = 0.1,
                 target: torch.Tensor | None = None, target_weight: float = 1.0):
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        if prior and prior_weight <= 0:
            raise ValueError(f"prior_weight must be > 0 when prior=True, got {prior_weight}")
        if target is not None:
            target = torch.as_tensor(target, dtype=torch.float32)
            if not prior:
                raise ValueError("a target needs prior=True (it is a target of the prior)")
            if target.shape != (num_classes,) or (target < 0).any() or abs(float(target.sum()) - 1) > 1e-5:
                raise ValueError(f"target must be a distribution over {num_classes} classes, got {target.tolist()}")
            if target_weight < 0:
                raise ValueError(f"target_weight must be >= 0, got {target_weight}")
        self.num_classes = num_classes
        self.prior_weight, self.target_weight = float(prior_weight), float(target_weight)
        self.prior = GaussianPrior(num_classes, prior_init_std) if prior else None
        self.register_buffer("target", target)
        if target is not None:
            with torch.no_grad():
                self.prior.mean.copy_(target.clamp_min(EPS).log())

    def terms(self, teacher_logits: torch.Tensor, student_logits: torch.Tensor) -> dict[str, torch.Tensor]:
        """``{"loss", "mi", "prior_kl"}`` scalars (``prior_kl`` is 0 without a prior), and ``"target_kl"`` with a target."""
        for name, x in (("teacher_logits", teacher_logits), ("student_logits", student_logits)):
            if not isinstance(x, torch.Tensor) or x.dim() != 2 or x.shape[1] != self.num_classes:
                shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
                raise ValueError(f"{name} must have shape (B, {self.num_classes}), got {shape}")
        p_teacher = torch.softmax(teacher_logits.detach().float(), dim=1)
        p_student = torch.softmax(student_logits.float(), dim=1)
        joint = joint_distribution(p_teacher, p_student)
        mi = mutual_information(joint)
        prior_kl = torch.zeros((), device=mi.device)
        if self.prior is None:
            return {"loss": -mi, "mi": mi, "prior_kl": prior_kl}
        p_s = joint.sum(dim=1)
        log_prior = self.prior().to(p_s.device).clamp_min(EPS).log()
        prior_kl = (p_s * (p_s.clamp_min(EPS).log() - log_prior)).sum()
        if self.target is None:
            return {"loss": -mi + self.prior_weight * prior_kl, "mi": mi, "prior_kl": prior_kl}
        target_kl = (self.target * (self.target.clamp_min(EPS).log() - log_prior)).sum()
        loss = -mi + self.prior_weight * (prior_kl + self.target_weight * target_kl)
        return {"loss": loss, "mi": mi, "prior_kl": prior_kl, "target_kl": target_kl}

    def forward(self, teacher_logits: torch.Tensor, student_logits: torch.Tensor) -> torch.Tensor:
        return self.terms(teacher_logits, student_logits)["loss"]
