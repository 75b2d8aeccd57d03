"""Triton implementation of the batched Sinkhorn divergence.

Layout: the two point sets of every problem are packed into one tensor
``z: (B, L, D)`` with ``L = N + M`` (rows ``[0, N)`` are ``x``, rows
``[N, L)`` are ``y``), their log-weights into ``logw: (B, L)``, and the four
dual potentials into ``pot: (B, 2, L)``: slot 0 holds the cross potentials
(``f_ba`` on the x rows, ``g_ab`` on the y rows), slot 1 the self potentials
of the debiasing terms (``f_aa`` on x, ``g_bb`` on y). One launch of
``_softmin_step_kernel`` updates every potential of every problem for one
temperature: grid ``(row blocks, term, B)`` with the terms

    t = 0: rows x, columns y, slot 0  (f_ba)     t = 2: rows x, columns x, slot 1 (f_aa)
    t = 1: rows y, columns x, slot 0  (g_ab)     t = 3: rows y, columns y, slot 1 (g_bb)

Costs are recomputed on chip from the points (one ``tl.dot`` per tile), so no
``(B, N, M)`` tensor ever exists in memory; the log-sum-exp over the columns
is computed online (running max and rescaled sum), in float32 whatever the
input dtype (float32, bfloat16, float16).

The backward pass is analytic (envelope theorem, as in GeomLoss): with the
final potentials ``F`` and the pre-final ones ``h``, the transport weights
of row ``i`` are ``P_ij = exp(logw_j + h_j / eps - C_ij / eps + F_i / eps)``
and ``d value / d z_i = w_i * sum_terms sign * sum_j P_ij * grad_1 C(z_i, z_j)``
(sign +1 for the cross term, -1 for the self term); the gradient with
respect to the weights is the final potentials, ``F_cross - F_self``.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from fastmed.kernels.sinkhorn_reference import log_weights

NEG_BIG = -1.0e30  # start value of the running max (finite, so exp(NEG_BIG - m) == 0)


@triton.jit
def _cost_tile(zr, zr_sq, zc, zc_sq, P: tl.constexpr):
    """Cost tile ``(BLOCK_R, BLOCK_C)`` between row points ``zr`` and column points ``zc``."""
    sq = zr_sq[:, None] + zc_sq[None, :] - 2.0 * tl.dot(zr, tl.trans(zc), input_precision="ieee")
    if P == 2:
        cost = 0.5 * sq
    else:
        cost = tl.sqrt(tl.maximum(sq, 1e-8))
    return cost, sq


@triton.jit
def _load_points(z_b, off, idx, mask, d, dmask, s_zl):
    """Points ``z_b[off + idx, :]`` as float32 ``(len(idx), BLOCK_D)`` (zeros where masked) and their squared norms."""
    pts = tl.load(z_b + (off + idx)[:, None] * s_zl + d[None, :], mask=mask[:, None] & dmask[None, :], other=0.0).to(tl.float32)
    return pts, tl.sum(pts * pts, axis=1)


@triton.jit
def _segment(t_row, t_col, N, M):
    """(row offset, row count, column offset, column count) of a term."""
    row_off = t_row * N
    n_rows = N + t_row * (M - N)
    col_off = t_col * N
    n_cols = N + t_col * (M - N)
    return row_off, n_rows, col_off, n_cols


@triton.jit
def _softmin_step_kernel(
    z_ptr,        # (B, L, D) points, any float dtype, strides (s_zb, s_zl, 1)
    logw_ptr,     # (B, L) float32 log-weights, contiguous
    pot_in_ptr,   # (B, 2, L) float32 potentials of the previous step, contiguous
    pot_out_ptr,  # (B, 2, L) float32 updated potentials, contiguous
    N, M, L, D, s_zb, s_zl,
    eps, inv_eps,
    USE_POT: tl.constexpr,   # False on the initial step (h = log-weights only)
    AVERAGE: tl.constexpr,   # symmetric update: out = (in + softmin) / 2
    P: tl.constexpr,         # cost exponent, 1 or 2
    BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_D: tl.constexpr,
):
    pid_r = tl.program_id(0)
    t = tl.program_id(1)
    b = tl.program_id(2)
    t_row = t % 2
    t_col = (t % 2) ^ (t < 2).to(tl.int32)
    slot = t // 2
    row_off, n_rows, col_off, n_cols = _segment(t_row, t_col, N, M)

    rows = pid_r * BLOCK_R + tl.arange(0, BLOCK_R)
    rmask = rows < n_rows
    d = tl.arange(0, BLOCK_D)
    dmask = d < D
    z_b = z_ptr + b * s_zb
    zr, zr_sq = _load_points(z_b, row_off, rows, rmask, d, dmask, s_zl)
    pot_b = pot_in_ptr + b * 2 * L + slot * L

    run_max = tl.full((BLOCK_R,), NEG_BIG, tl.float32)
    run_sum = tl.zeros((BLOCK_R,), tl.float32)
    for c0 in range(0, n_cols, BLOCK_C):
        cols = c0 + tl.arange(0, BLOCK_C)
        cmask = cols < n_cols
        zc, zc_sq = _load_points(z_b, col_off, cols, cmask, d, dmask, s_zl)
        cost, sq = _cost_tile(zr, zr_sq, zc, zc_sq, P)
        h = tl.load(logw_ptr + b * L + col_off + cols, mask=cmask, other=0.0)
        if USE_POT:
            h += tl.load(pot_b + col_off + cols, mask=cmask, other=0.0) * inv_eps
        val = h[None, :] - cost * inv_eps
        val = tl.where(cmask[None, :], val, float("-inf"))
        new_max = tl.maximum(run_max, tl.max(val, axis=1))
        run_sum = run_sum * tl.exp(run_max - new_max) + tl.sum(tl.exp(val - new_max[:, None]), axis=1)
        run_max = new_max
    out = -eps * (run_max + tl.log(run_sum))
    if AVERAGE:
        out = 0.5 * (out + tl.load(pot_b + row_off + rows, mask=rmask, other=0.0))
    tl.store(pot_out_ptr + b * 2 * L + slot * L + row_off + rows, out, mask=rmask)


@triton.jit
def _grad_kernel(
    z_ptr,        # (B, L, D) points, strides (s_zb, s_zl, 1)
    logw_ptr,     # (B, L) float32 log-weights
    w_ptr,        # (B, L) float32 weights
    pot_ptr,      # (B, 2, L) float32 pre-final potentials (input of the last extrapolation)
    fin_ptr,      # (B, 2, L) float32 final potentials (its output)
    gout_ptr,     # (B,) float32 upstream gradient
    grad_ptr,     # (B, L, D) float32 output gradient, contiguous
    N, M, L, D, s_zb, s_zl,
    inv_eps,
    DEBIAS: tl.constexpr, P: tl.constexpr,
    BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_D: tl.constexpr,
):
    pid_r = tl.program_id(0)
    seg = tl.program_id(1)  # 0: rows of x, 1: rows of y
    b = tl.program_id(2)
    row_off, n_rows, _, _ = _segment(seg, seg, N, M)
    rows = pid_r * BLOCK_R + tl.arange(0, BLOCK_R)
    rmask = rows < n_rows
    d = tl.arange(0, BLOCK_D)
    dmask = d < D
    z_b = z_ptr + b * s_zb
    zr, zr_sq = _load_points(z_b, row_off, rows, rmask, d, dmask, s_zl)

    acc = tl.zeros((BLOCK_R, BLOCK_D), tl.float32)
    for k in tl.static_range(2):  # k = 0: cross term (+), k = 1: self term (-)
        if k == 0 or DEBIAS:
            c_seg = (1 - seg) if k == 0 else seg
            _, _, col_off, n_cols = _segment(seg, c_seg, N, M)
            sign = 1.0 - 2.0 * k
            lse = -tl.load(fin_ptr + b * 2 * L + k * L + row_off + rows, mask=rmask, other=0.0) * inv_eps
            for c0 in range(0, n_cols, BLOCK_C):
                cols = c0 + tl.arange(0, BLOCK_C)
                cmask = cols < n_cols
                zc, zc_sq = _load_points(z_b, col_off, cols, cmask, d, dmask, s_zl)
                cost, sq = _cost_tile(zr, zr_sq, zc, zc_sq, P)
                h = tl.load(logw_ptr + b * L + col_off + cols, mask=cmask, other=0.0)
                h += tl.load(pot_ptr + b * 2 * L + k * L + col_off + cols, mask=cmask, other=0.0) * inv_eps
                logp = tl.where(cmask[None, :] & rmask[:, None], h[None, :] - cost * inv_eps - lse[:, None], float("-inf"))
                plan = tl.exp(logp)
                if P == 1:  # grad_1 |x - y| = (x - y) / |x - y|, zero where GeomLoss clamps
                    plan = tl.where(sq >= 1e-8, plan / tl.sqrt(tl.maximum(sq, 1e-8)), 0.0)
                acc += sign * (tl.sum(plan, axis=1)[:, None] * zr - tl.dot(plan, zc, input_precision="ieee"))
    w = tl.load(w_ptr + b * L + row_off + rows, mask=rmask, other=0.0)
    g = tl.load(gout_ptr + b)
    acc = acc * (w * g)[:, None]
    tl.store(grad_ptr + b * L * D + (row_off + rows)[:, None] * D + d[None, :], acc, mask=rmask[:, None] & dmask[None, :])


def _blocks(n_max: int, d: int) -> tuple[int, int, int]:
    """(BLOCK_R, BLOCK_C, BLOCK_D): tl.dot needs every side >= 16; keep tiles within registers."""
    block_d = max(16, triton.next_power_of_2(d))
    block = 64 if block_d <= 64 else (32 if block_d <= 256 else 16)
    block = min(block, max(16, triton.next_power_of_2(n_max)))
    return block, block, block_d


class _SinkhornTriton(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, y, a, b, p, eps_list, debias):
        B, N, D = x.shape
        M = y.shape[1]
        L = N + M
        z = torch.cat([x, y], dim=1).contiguous()
        w = torch.cat([a, b], dim=1).float().contiguous()
        logw = log_weights(w).contiguous()
        block_r, block_c, block_d = _blocks(max(N, M), D)
        grid = (triton.cdiv(max(N, M), block_r), 4 if debias else 2, B)
        cur = torch.zeros(B, 2, L, device=x.device, dtype=torch.float32)
        nxt = torch.empty_like(cur)

        def step(eps: float, use_pot: bool, average: bool) -> None:
            _softmin_step_kernel[grid](
                z, logw, cur, nxt, N, M, L, D, z.stride(0), z.stride(1), float(eps), 1.0 / float(eps),
                USE_POT=use_pot, AVERAGE=average, P=p, BLOCK_R=block_r, BLOCK_C=block_c, BLOCK_D=block_d,
            )

        step(eps_list[0], False, False)
        cur, nxt = nxt, cur
        for eps in eps_list:
            step(eps, True, True)
            cur, nxt = nxt, cur
        step(eps_list[-1], True, False)  # last extrapolation: cur = pre-final, nxt = final
        fin = nxt
        value = (w * (fin[:, 0] - fin[:, 1])).sum(1) if debias else (w * fin[:, 0]).sum(1)
        ctx.save_for_backward(z, w, logw, cur, fin)
        ctx.meta = (N, M, D, p, eps_list[-1], debias, x.dtype, y.dtype)
        ctx.w_dtypes = (a.dtype, b.dtype)
        return value.to(x.dtype)

    @staticmethod
    def backward(ctx, grad_out):
        z, w, logw, pot, fin = ctx.saved_tensors
        N, M, D, p, eps, debias, x_dtype, y_dtype = ctx.meta
        B, L = w.shape
        grad = torch.empty(B, L, D, device=z.device, dtype=torch.float32)
        block_r, block_c, block_d = _blocks(max(N, M), D)
        grid = (triton.cdiv(max(N, M), block_r), 2, B)
        _grad_kernel[grid](
            z, logw, w, pot, fin, grad_out.float().contiguous(), grad, N, M, L, D, z.stride(0), z.stride(1), 1.0 / eps,
            DEBIAS=debias, P=p, BLOCK_R=block_r, BLOCK_C=block_c, BLOCK_D=block_d,
        )
        g = grad_out.float()[:, None]
        grad_w = g * ((fin[:, 0] - fin[:, 1]) if debias else fin[:, 0])  # (B, L)
        return (grad[:, :N].to(x_dtype), grad[:, N:].to(y_dtype), grad_w[:, :N].to(ctx.w_dtypes[0]),
                grad_w[:, N:].to(ctx.w_dtypes[1]), None, None, None)


def sinkhorn_triton(
    x: torch.Tensor, y: torch.Tensor, a: torch.Tensor, b: torch.Tensor, *, p: int, eps_list: list[float], debias: bool
) -> torch.Tensor:
    """Batched Sinkhorn value ``(B,)`` (see module docstring); gradients flow to ``x``, ``y``, ``a`` and ``b``."""
    return _SinkhornTriton.apply(x, y, a, b, p, list(eps_list), debias)
