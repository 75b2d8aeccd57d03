"""Public batched Sinkhorn divergence: validation and backend dispatch.

``sinkhorn_divergence(x, y)`` returns, for every problem ``b`` of a batch, the
debiased Sinkhorn divergence

    S_eps(a, b) = OT_eps(a, b) - OT_eps(a, a) / 2 - OT_eps(b, b) / 2

between the weighted point clouds ``(a[b], x[b])`` and ``(b[b], y[b])``, with
GeomLoss's conventions (cost ``|x - y|^p / p``, ``eps = blur^p``, eps-scaling
from ``diameter``, symmetric log-domain updates, dual value, envelope-theorem
gradient): the numbers agree with
``geomloss.SamplesLoss("sinkhorn", p=p, blur=blur, scaling=scaling, diameter=diameter)``.
``sinkhorn_cost`` returns the raw ``OT_eps(a, b)``. The maths lives in
``sinkhorn_reference.py``; the Triton kernel in ``sinkhorn_triton.py``.

Backends: ``"torch"`` (the reference, autograd), ``"numba"`` (CPU: each
problem's whole descent in cache, one pass per row, vectorised float32 exp,
threads across problems, envelope-theorem backward; ``sinkhorn_numba.py``),
``"triton"`` (one launch per temperature for all problems and terms, analytic
backward), ``"auto"`` (Triton on CUDA tensors, Numba on the CPU: no crossover,
it beat the reference from one point per set on, see ``choose_backend``).
"""
from __future__ import annotations

import torch

from fastmed.kernels._dispatch import check_same_device, check_tensor, resolve_backend
from fastmed.kernels.sinkhorn_reference import epsilon_schedule, max_diameter, sinkhorn_reference

FLOAT_DTYPES = (torch.float32, torch.bfloat16, torch.float16, torch.float64)
TRITON_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
BACKENDS = ("auto", "torch", "numba", "triton")


def _check_weights(name: str, w: torch.Tensor | None, like: torch.Tensor, pts_name: str) -> torch.Tensor:
    """Validate optional weights ``(B, N)`` of ``like: (B, N, D)``; default uniform ``1/N``."""
    B, n, _ = like.shape
    if w is None:
        return torch.full((B, n), 1.0 / n, device=like.device, dtype=torch.float32)
    check_tensor(name, w, ndim=2, dtypes=FLOAT_DTYPES)
    if tuple(w.shape) != (B, n):
        raise ValueError(f"{name} must have shape (B, N) = {(B, n)} to match {pts_name} {tuple(like.shape)}, got {tuple(w.shape)}")
    if bool((w < 0).any()):
        raise ValueError(f"{name} must be non-negative (zero weights pad a set), got min {float(w.min()):.3g}")
    if bool((w.sum(1) <= 0).any()):
        raise ValueError(f"{name}: every row needs a positive total weight")
    return w


def _validate(x, y, x_weights, y_weights, p, blur, scaling, diameter):
    check_tensor("x", x, ndim=3, dtypes=FLOAT_DTYPES)
    check_tensor("y", y, ndim=3, dtypes=FLOAT_DTYPES)
    if x.dtype != y.dtype:
        raise ValueError(f"x and y must share a dtype, got x {x.dtype} and y {y.dtype}")
    if x.shape[0] != y.shape[0] or x.shape[2] != y.shape[2]:
        raise ValueError(f"x (B, N, D) and y (B, M, D) must agree on B and D, got x {tuple(x.shape)} and y {tuple(y.shape)}")
    if x.shape[0] < 1 or x.shape[1] < 1 or y.shape[1] < 1 or x.shape[2] < 1:
        raise ValueError(f"x and y must be non-empty, got x {tuple(x.shape)} and y {tuple(y.shape)}")
    check_same_device(x=x, y=y, x_weights=x_weights, y_weights=y_weights)
    if p not in (1, 2):
        raise ValueError(f"p must be 1 or 2 (cost |x - y|^p / p), got {p!r}")
    if not blur > 0:
        raise ValueError(f"blur must be > 0, got {blur!r}")
    if not 0 < scaling < 1:
        raise ValueError(f"scaling must be in (0, 1), got {scaling!r}")
    if diameter is not None and not diameter > 0:
        raise ValueError(f"diameter must be > 0 or None, got {diameter!r}")
    a = _check_weights("x_weights", x_weights, x, "x")
    b = _check_weights("y_weights", y_weights, y, "y")
    return a, b


def _sinkhorn(x, y, *, p, blur, scaling, diameter, x_weights, y_weights, debias, backend) -> torch.Tensor:
    a, b = _validate(x, y, x_weights, y_weights, p, blur, scaling, diameter)
    chosen = choose_backend(backend, x, y)
    if chosen == "torch":
        return sinkhorn_reference(x, y, a, b, p=p, blur=blur, scaling=scaling, diameter=diameter, debias=debias)
    eps_list = epsilon_schedule(p, max_diameter(x, y) if diameter is None else diameter, blur, scaling)
    if chosen == "numba":
        from fastmed.kernels.sinkhorn_numba import SinkhornNumba

        work = torch.float64 if x.dtype == torch.float64 else torch.float32  # fp16/bf16: float32 like the reference
        return SinkhornNumba.apply(x.to(work), y.to(work), a.to(work), b.to(work), p, eps_list, debias).to(x.dtype)
    if x.dtype not in TRITON_DTYPES:
        raise ValueError(f"backend='triton' supports float32/bfloat16/float16 x and y, got {x.dtype}")
    from fastmed.kernels.sinkhorn_triton import sinkhorn_triton

    return sinkhorn_triton(x, y, a, b, p=p, eps_list=eps_list, debias=debias)


def choose_backend(backend: str, x: torch.Tensor, y: torch.Tensor) -> str:
    """``"triton"``, ``"numba"`` or ``"torch"`` for this request (see the module docstring)."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    on_cpu = x.device.type == "cpu"
    if backend == "numba" and not on_cpu:
        raise RuntimeError(f"backend='numba' needs CPU tensors, got x on {x.device}; use backend='auto'")
    if backend == "numba" or (backend == "auto" and on_cpu):
        return "numba"
    chosen = resolve_backend(backend, x, y)
    if backend == "auto" and chosen == "triton" and x.dtype not in TRITON_DTYPES:
        return "torch"
    return chosen


def sinkhorn_divergence(
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    p: int = 2,
    blur: float = 0.05,
    scaling: float = 0.5,
    diameter: float | None = None,
    x_weights: torch.Tensor | None = None,
    y_weights: torch.Tensor | None = None,
    debias: bool = True,
    backend: str = "auto",
) -> torch.Tensor:
    """Batched Sinkhorn divergence between point clouds.

    Args:
        x: ``(B, N, D)`` float points (float32, bfloat16, float16; float64 on the torch and numba backends).
        y: ``(B, M, D)`` float points, same dtype and device.
        p: cost exponent, 1 or 2 (cost ``|x - y|^p / p``).
        blur: final blur scale; the temperature is ``eps = blur^p``.
        scaling: ratio of successive blurs in the eps-scaling descent, in (0, 1).
        diameter: first blur of the descent; ``None`` computes the bounding-box
            diagonal of all points of the batch (as GeomLoss does).
        x_weights: ``(B, N)`` non-negative weights (default uniform ``1/N``);
            zero weights pad variable-size sets. Rows should sum to 1.
        y_weights: ``(B, M)`` likewise.
        debias: ``True`` for the Sinkhorn divergence, ``False`` for ``OT_eps``.
        backend: ``"auto"``, ``"torch"``, ``"numba"`` (CPU) or ``"triton"``.

    Returns:
        ``(B,)`` tensor in the dtype of ``x``; differentiable in ``x``, ``y`` and the weights
        (whose gradient is the dual potentials, as in GeomLoss).
    """
    return _sinkhorn(x, y, p=p, blur=blur, scaling=scaling, diameter=diameter,
                     x_weights=x_weights, y_weights=y_weights, debias=debias, backend=backend)


def sinkhorn_cost(
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    p: int = 2,
    blur: float = 0.05,
    scaling: float = 0.5,
    diameter: float | None = None,
    x_weights: torch.Tensor | None = None,
    y_weights: torch.Tensor | None = None,
    backend: str = "auto",
) -> torch.Tensor:
    """Batched entropic OT cost ``OT_eps(a, b)`` (not debiased); arguments as ``sinkhorn_divergence``."""
    return _sinkhorn(x, y, p=p, blur=blur, scaling=scaling, diameter=diameter,
                     x_weights=x_weights, y_weights=y_weights, debias=False, backend=backend)
