"""Losses of the class-conditioned two-generator model (tensors in, tensors out).

Notation: ``K`` classes; per class a minibatch of ``2n`` real images split into
two halves ``X_k, X'_k`` and their generated images ``Y_k = G(X_k, k)``,
``Y'_k = G(X'_k, k)``; features come from a frozen CNN.

* generation loss ``|x - F(G(x, c), c)|_1`` – ``generation_loss``;
* prediction loss ``CE(c, D_cls(G(x, c)))`` – ``prediction_loss``;
* first distribution distance per class
  ``D_k = 2 W(X_k, Y_k) - W(X_k, X'_k) - W(Y_k, Y'_k)`` and second distance per
  class pair ``E_kl = 2 W(Y_k, Y_l) - W(Y_k, Y'_k) - W(Y_l, Y'_l)``, with ``W``
  the debiased Sinkhorn divergence. ``distribution_distances`` computes every
  ``W`` of a step (``3K + K(K-1)/2`` problems) in ONE batched
  ``sinkhorn_divergence`` call, padding unequal sets with zero weights;
* distribution losses ``-D`` and ``-sum E`` – ``distribution_losses``.

Guard for the unbounded ``-D`` (documented choice): features are L2-normalised
(points on the unit sphere, so every cost ``|u - v|^2 / 2 <= 2`` and every
``W <= 2``), and each distance enters the loss through a hinge
``-min(D, margin)``: once generated features are ``margin`` away from the
real (or other-class) distribution the loss stops pushing, so diversity never
turns into drift that destroys the image content.
"""
from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F

from fastmed.kernels import sinkhorn_divergence


def generation_loss(x: torch.Tensor, restored: torch.Tensor) -> torch.Tensor:
    """Cycle L1 between images ``(B, 3, H, W)`` and their restorations ``F(G(x))``."""
    return (x - restored).abs().mean()


def prediction_loss(class_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy between the source class ``(B,)`` and the class head's logits ``(B, K)`` on G's images."""
    return F.cross_entropy(class_logits.float(), labels)


def adversarial_loss(logits: torch.Tensor, real: bool) -> torch.Tensor:
    """Non-saturating GAN loss: BCE of logits ``(B,)`` against the target real (1) / generated (0)."""
    target = torch.ones_like(logits) if real else torch.zeros_like(logits)
    return F.binary_cross_entropy_with_logits(logits.float(), target.float())


def discriminator_class_loss(real_logits: torch.Tensor, real_labels: torch.Tensor, fake_logits: torch.Tensor,
                             fake_labels: torch.Tensor, fake_weight: float = 1.0) -> torch.Tensor:
    """Loss of the discriminator's class head.

    ``CE(real) - fake_weight * min(CE(fake), log K)``: cross-entropy on real
    images keeps the head a real classifier (otherwise its prediction on G's
    images means nothing); the negative prediction loss on generated images is
    the method's adversarial class game (the head tries to find G's images
    class-ambiguous, G tries to make them recognisable). It is capped at
    ``log K`` (the cross-entropy of a uniform guess): beyond chance level there
    is nothing left to learn and the term would be unbounded.
    """
    k = real_logits.shape[1]
    ce_fake = F.cross_entropy(fake_logits.float(), fake_labels)
    cap = torch.log(torch.tensor(float(k), device=ce_fake.device))
    return F.cross_entropy(real_logits.float(), real_labels) - fake_weight * torch.minimum(ce_fake, cap)


def normalize_features(f: torch.Tensor) -> torch.Tensor:
    """L2-normalise feature vectors along the last dimension (the bounded-distance guard)."""
    return F.normalize(f.float(), dim=-1)


def _pad_sets(sets: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack point sets ``(n_i, D)`` into ``(P, n_max, D)`` and weights ``(P, n_max)``: uniform, zero on padding."""
    n_max = max(s.shape[0] for s in sets)
    pts = sets[0].new_zeros(len(sets), n_max, sets[0].shape[1])
    w = sets[0].new_zeros(len(sets), n_max)
    for i, s in enumerate(sets):
        pts[i, : s.shape[0]] = s
        w[i, : s.shape[0]] = 1.0 / s.shape[0]
    return pts, w  # padding points sit at the origin with zero weight (they never move the value)


def distribution_distances(real_a: list[torch.Tensor], real_b: list[torch.Tensor], fake_a: list[torch.Tensor],
                           fake_b: list[torch.Tensor], *, blur: float = 0.05, scaling: float = 0.5,
                           backend: str = "auto", detach_self: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """First and second distribution distances from per-class feature sets.

    Args:
        real_a, real_b: per class ``k``, features ``(n_k, D)`` of the two real halves ``X_k``, ``X'_k``.
        fake_a, fake_b: per class, features of the generated halves ``Y_k``, ``Y'_k``.
        blur, scaling: Sinkhorn parameters (features should be L2-normalised; the
            diameter is fixed to 2, the diameter of the unit sphere).
        detach_self: stop the gradient through the generated self-terms
            ``W(Y_k, Y'_k)`` (same values): maximising ``D`` or ``E`` then cannot
            be done by shrinking them, i.e. by collapsing each class's generated set.

    Returns:
        ``(D (K,), E (K(K-1)/2,))``: per class ``2W(X,Y) - W(X,X') - W(Y,Y')``
        and per class pair ``k < l`` ``2W(Y_k,Y_l) - W(Y_k,Y'_k) - W(Y_l,Y'_l)``.
        All ``W`` come from one batched ``sinkhorn_divergence`` call.
    """
    K = len(real_a)
    if not (len(real_b) == len(fake_a) == len(fake_b) == K) or K < 1:
        raise ValueError(f"need the same number (>= 1) of classes in every list, got {len(real_a)}, {len(real_b)}, {len(fake_a)}, {len(fake_b)}")
    pairs = list(itertools.combinations(range(K), 2))
    firsts = [real_a[k] for k in range(K)] + [real_a[k] for k in range(K)] + [fake_a[k] for k in range(K)] + [fake_a[k] for k, _ in pairs]
    seconds = [fake_a[k] for k in range(K)] + [real_b[k] for k in range(K)] + [fake_b[k] for k in range(K)] + [fake_a[l] for _, l in pairs]
    x, a = _pad_sets(firsts)
    y, b = _pad_sets(seconds)
    w = sinkhorn_divergence(x, y, x_weights=a, y_weights=b, p=2, blur=blur, scaling=scaling, diameter=2.0, backend=backend)
    w_xy, w_xx, w_yy, w_pair = w[:K], w[K:2 * K], w[2 * K:3 * K], w[3 * K:]
    if detach_self:
        w_yy = w_yy.detach()
    first = 2 * w_xy - w_xx - w_yy
    if not pairs:
        return first, w.new_zeros(0)
    k_idx = torch.tensor([k for k, _ in pairs], device=w.device)
    l_idx = torch.tensor([l for _, l in pairs], device=w.device)
    second = 2 * w_pair - w_yy[k_idx] - w_yy[l_idx]
    return first, second


def diversity_loss(fake1: torch.Tensor, fake2: torch.Tensor, target: float) -> torch.Tensor:
    """Noise-diversity hinge ``max(0, target - mean|fake1 - fake2|)`` for two draws ``(B, 3, H, W)`` of the same sources.

    Zero once two noises give images ``target`` apart on average (bounded: it asks for
    diversity, never for ever larger differences); without it G may ignore its noise.
    """
    return torch.relu(target - (fake1 - fake2).abs().mean())


def distribution_losses(first: torch.Tensor, second: torch.Tensor, margin: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``(-mean_k min(D_k, margin), -sum_kl min(E_kl, margin))`` – the hinge guard on the unbounded ``-D``."""
    loss1 = -torch.clamp(first, max=margin).mean()
    loss2 = -torch.clamp(second, max=margin).sum() if second.numel() else second.new_zeros(())
    return loss1, loss2
