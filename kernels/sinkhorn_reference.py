"""Readable PyTorch reference of the batched Sinkhorn divergence (GeomLoss conventions).

This is the specification of ``fastmed.kernels.sinkhorn_divergence``, its CPU
path, and what the Triton kernel is tested against. It follows GeomLoss's
``SamplesLoss("sinkhorn", p, blur, scaling, diameter, backend="tensorized")``
step for step, so that the numbers agree:

* cost ``C(x, y) = |x - y|^p / p`` for ``p`` in {1, 2} (``p = 1`` clamps the
  squared distance at 1e-8 before the square root, as GeomLoss does);
* temperature ``eps = blur^p``; eps-scaling schedule
  ``[diameter^p] + exp(arange(p log diameter, p log blur, p log scaling)) + [blur^p]``,
  the diameter being the bounding-box diagonal of all points of the batch when
  not given;
* log-weights ``log a`` with ``-1e5`` where ``a <= 0`` (zero weights pad sets);
* symmetric log-domain updates (both potentials from the previous ones, then
  averaged with them), run without autograd;
* one last extrapolation step with autograd on and the potentials (and
  log-weights) detached: by the envelope theorem this gives the exact gradient
  of the converged dual value with respect to the points, and the potentials
  as the gradient with respect to the weights;
* dual value ``<a, f_ba - f_aa> + <b, g_ab - g_bb>`` (debiased: the Sinkhorn
  divergence ``OT(a,b) - OT(a,a)/2 - OT(b,b)/2``) or ``<a, f_ba> + <b, g_ab>``
  (``OT_eps(a, b)``).

The x-y, y-x, x-x and y-y problems of all ``B`` pairs are stacked (sets
zero-padded to ``n = max(N, M)`` and masked out of every column), so that each
temperature step is a single log-sum-exp over a ``(B * 4, n, n)`` cost tensor:
fewer, larger tensor operations than one softmin per problem and term.

Shapes: ``x: (B, N, D)``, ``y: (B, M, D)``, ``a: (B, N)``, ``b: (B, M)``;
potentials ``f: (B, N)``, ``g: (B, M)``; the result is ``(B,)``.
Computation is in float32 (float64 stays float64); the value is returned in
the input dtype.
"""
from __future__ import annotations

import math

import numpy as np
import torch

LOG_ZERO = -100000.0  # log-weight of a zero-weight (padding) point, as in GeomLoss


def cost_matrix(x: torch.Tensor, y: torch.Tensor, p: int) -> torch.Tensor:
    """``C[b, i, j] = |x[b, i] - y[b, j]|^p / p`` for ``x: (B, N, D)``, ``y: (B, M, D)`` → ``(B, N, M)``."""
    sq = (x * x).sum(-1).unsqueeze(2) - 2 * torch.bmm(x, y.transpose(1, 2)) + (y * y).sum(-1).unsqueeze(1)
    if p == 2:
        return sq / 2
    return sq.clamp_min(1e-8).sqrt()


def max_diameter(x: torch.Tensor, y: torch.Tensor) -> float:
    """Diagonal of the bounding box of all points of ``x`` and ``y`` (whole batch)."""
    d = x.shape[-1]
    pts = torch.cat([x.reshape(-1, d), y.reshape(-1, d)]).detach().float()
    return float((pts.max(0).values - pts.min(0).values).norm())


def epsilon_schedule(p: int, diameter: float, blur: float, scaling: float) -> list[float]:
    """Temperatures of the eps-scaling descent, from ``diameter^p`` down to ``blur^p``."""
    steps = np.arange(p * math.log(diameter), p * math.log(blur), p * math.log(scaling))
    return [diameter**p] + [float(np.exp(e)) for e in steps] + [blur**p]


def log_weights(w: torch.Tensor) -> torch.Tensor:
    """``log w`` with ``LOG_ZERO`` where ``w <= 0`` (differentiable where ``w > 0``)."""
    return torch.where(w > 0, w.clamp_min(1e-38).log(), torch.full_like(w, LOG_ZERO))


def softmin(eps: float, cost: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """Soft c-transform ``f_i = -eps * log sum_j exp(h_j - C_ij / eps)``; ``cost: (B, N, M)``, ``h: (B, M)`` → ``(B, N)``."""
    return -eps * torch.logsumexp(h.unsqueeze(1) - cost / eps, dim=2)


def _softmin_into(buf: torch.Tensor, eps: float, cost: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """``softmin`` without autograd, writing the ``(P, n, n)`` intermediate into ``buf``."""
    torch.add(h.unsqueeze(1), cost, alpha=-1.0 / eps, out=buf)
    return torch.logsumexp(buf, dim=2).mul_(-eps)


# The (up to) four OT problems of a divergence, stacked along a "term" axis so
# that every temperature step is one softmin over all of them:
#   term 0: rows x, columns y -> f_ba       term 2: rows x, columns x -> f_aa
#   term 1: rows y, columns x -> g_ab       term 3: rows y, columns y -> g_bb
# Term t's columns carry the potential of term PARTNER[t] (f_ba <-> g_ab; the
# self terms are their own partners) and the weights of its column set.
PARTNER = [1, 0, 2, 3]
SIGN = [1.0, 1.0, -1.0, -1.0]  # value = sum_t SIGN[t] * <row weights of t, potential of t>


def _pad(t: torch.Tensor, n: int) -> torch.Tensor:
    """Zero-pad dimension 1 of ``t`` to length ``n``."""
    if t.shape[1] == n:
        return t
    return torch.cat([t, t.new_zeros(t.shape[0], n - t.shape[1], *t.shape[2:])], 1)


def sinkhorn_potentials(cost: torch.Tensor, col_logw: torch.Tensor, eps_list: list[float]) -> torch.Tensor:
    """The symmetric eps-scaling Sinkhorn loop over stacked problems (no autograd).

    ``cost: (B, T, n, n)`` row-by-column costs of the ``T`` terms (T = 4, or 2
    without debiasing), ``col_logw: (B, T, n)`` log-weights of each term's
    columns (``-inf`` on padding). Returns the potentials ``(B, T, n)`` of the
    rows after the last temperature, before the final extrapolation.
    """
    B, T, n, _ = cost.shape
    partner = PARTNER[:T]
    with torch.no_grad():
        c = cost.detach().reshape(B * T, n, n)
        logw = col_logw.detach().reshape(B * T, n)
        buf = torch.empty_like(c)
        pot = _softmin_into(buf, eps_list[0], c, logw).view(B, T, n)
        for eps in eps_list:
            h = logw + pot[:, partner].reshape(B * T, n) / eps
            pot = 0.5 * (pot + _softmin_into(buf, eps, c, h).view(B, T, n))
    return pot


def sinkhorn_reference(
    x: torch.Tensor,
    y: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor,
    *,
    p: int = 2,
    blur: float = 0.05,
    scaling: float = 0.5,
    diameter: float | None = None,
    debias: bool = True,
) -> torch.Tensor:
    """Batched (debiased) Sinkhorn divergence, differentiable by autograd.

    Args:
        x: ``(B, N, D)`` points of the first measures.
        y: ``(B, M, D)`` points of the second measures.
        a: ``(B, N)`` non-negative weights of ``x`` (each row sums to 1).
        b: ``(B, M)`` non-negative weights of ``y``.
        p: exponent of the cost ``|x - y|^p / p`` (1 or 2).
        blur: final blur; ``eps = blur^p``.
        scaling: ratio of successive blurs in the eps-scaling descent.
        diameter: first blur of the descent; ``None`` = from the data.
        debias: Sinkhorn divergence (True) or the raw ``OT_eps`` (False).

    Returns:
        ``(B,)`` values in ``x.dtype``.
    """
    out_dtype = x.dtype
    work = torch.float64 if x.dtype == torch.float64 else torch.float32
    x, y, a, b = (t.to(work) for t in (x, y, a, b))
    if diameter is None:
        diameter = max_diameter(x, y)
    eps_list = epsilon_schedule(p, diameter, blur, scaling)
    eps = blur**p
    B, N, M = x.shape[0], x.shape[1], y.shape[1]
    n = max(N, M)
    T = 4 if debias else 2
    xp, yp = _pad(x, n), _pad(y, n)  # padding points are masked out of every column below
    rows = torch.stack([xp, yp, xp, yp][:T], 1)                    # (B, T, n, D)
    cols = torch.stack([yp, xp, xp, yp][:T], 1).detach()           # autograd flows into rows only (GeomLoss)
    cost = cost_matrix(rows.flatten(0, 1), cols.flatten(0, 1), p).view(B, T, n, n)
    la, lb = log_weights(a), log_weights(b)
    ninf_a, ninf_b = la.new_full((B, n - N), float("-inf")), lb.new_full((B, n - M), float("-inf"))
    la_cols, lb_cols = torch.cat([la, ninf_a], 1), torch.cat([lb, ninf_b], 1)
    col_logw = torch.stack([lb_cols, la_cols, la_cols, lb_cols][:T], 1)   # (B, T, n)
    row_w = torch.stack([_pad(a, n), _pad(b, n), _pad(a, n), _pad(b, n)][:T], 1)
    pot = sinkhorn_potentials(cost, col_logw, eps_list)
    # last extrapolation with autograd on and the potentials detached: envelope-theorem gradient
    # (the log-weights are detached too: d value / d weights = the potentials, as in GeomLoss)
    h = (col_logw + pot[:, PARTNER[:T]] / eps).detach()
    final = softmin(eps, cost.flatten(0, 1), h.flatten(0, 1)).view(B, T, n)
    sign = torch.tensor(SIGN[:T], dtype=work, device=x.device).view(1, T)
    return ((row_w * final).sum(2) * sign).sum(1).to(out_dtype)
