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
* one last extrapolation step with autograd on and the potentials detached:
  by the envelope theorem this gives the exact gradient of the converged dual
  value with respect to the points;
* dual value ``<a, f_ba - f_aa> + <b, g_ab - g_bb>`` (debiased: the Sinkhorn
  divergence ``OT(a,b) - OT(a,a)/2 - OT(b,b)/2``) or ``<a, f_ba> + <b, g_ab>``
  (``OT_eps(a, b)``).

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
    """``softmin`` without autograd, writing the ``(B, N, M)`` intermediate into ``buf``."""
    torch.add(h.unsqueeze(1), cost, alpha=-1.0 / eps, out=buf)
    return torch.logsumexp(buf, dim=2).mul_(-eps)


def sinkhorn_potentials(
    costs: dict[str, torch.Tensor], a_log: torch.Tensor, b_log: torch.Tensor, eps_list: list[float], debias: bool
) -> dict[str, torch.Tensor]:
    """The symmetric eps-scaling Sinkhorn loop (no autograd).

    ``costs`` holds ``"xy": (B, N, M)``, ``"yx": (B, M, N)`` and, when
    ``debias``, ``"xx": (B, N, N)``, ``"yy": (B, M, M)``. Returns the dual
    potentials ``f_ba: (B, N)``, ``g_ab: (B, M)`` (and ``f_aa``, ``g_bb``)
    after the last temperature, before the final extrapolation.
    """
    # which weights each potential integrates against, and which cost it uses
    terms = {"f_ba": ("xy", b_log, "g_ab"), "g_ab": ("yx", a_log, "f_ba")}
    if debias:
        terms.update({"f_aa": ("xx", a_log, "f_aa"), "g_bb": ("yy", b_log, "g_bb")})
    with torch.no_grad():
        costs = {k: c.detach() for k, c in costs.items()}
        bufs = {}
        for c in costs.values():  # one scratch tensor per cost shape, reused every step
            bufs.setdefault(tuple(c.shape), torch.empty_like(c))
        eps = eps_list[0]
        pot = {name: _softmin_into(bufs[tuple(costs[k].shape)], eps, costs[k], w.detach()) for name, (k, w, _) in terms.items()}
        for eps in eps_list:
            new = {
                name: _softmin_into(bufs[tuple(costs[k].shape)], eps, costs[k], w.detach() + pot[other] / eps)
                for name, (k, w, other) in terms.items()
            }
            pot = {name: 0.5 * (pot[name] + new[name]) for name in terms}
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
    a_log, b_log = log_weights(a), log_weights(b)
    # autograd only flows into the first argument of each cost (GeomLoss convention)
    costs = {"xy": cost_matrix(x, y.detach(), p), "yx": cost_matrix(y, x.detach(), p)}
    if debias:
        costs.update({"xx": cost_matrix(x, x.detach(), p), "yy": cost_matrix(y, y.detach(), p)})
    pot = sinkhorn_potentials(costs, a_log, b_log, eps_list, debias)
    # last extrapolation with autograd: envelope-theorem gradient
    f_ba = softmin(eps, costs["xy"], b_log + pot["g_ab"].detach() / eps)
    g_ab = softmin(eps, costs["yx"], a_log + pot["f_ba"].detach() / eps)
    if not debias:
        return ((a * f_ba).sum(1) + (b * g_ab).sum(1)).to(out_dtype)
    f_aa = softmin(eps, costs["xx"], a_log + pot["f_aa"].detach() / eps)
    g_bb = softmin(eps, costs["yy"], b_log + pot["g_bb"].detach() / eps)
    return ((a * (f_ba - f_aa)).sum(1) + (b * (g_ab - g_bb)).sum(1)).to(out_dtype)
