"""Numba CPU kernel of the batched Sinkhorn divergence (forward and analytic backward).

Same maths as ``sinkhorn_reference`` (the specification, GeomLoss's
conventions); what changes is the order of the work:

* the costs ``C_xy (B, N, M)``, ``C_xx (B, N, N)``, ``C_yy (B, M, M)`` are
  computed once by ``torch.bmm`` (no padding to ``max(N, M)``; the y-x problem
  reads the columns of ``C_xy`` instead of a transposed copy);
* one problem at a time runs its whole eps-scaling descent, x-y, y-x, x-x and
  y-y updates interleaved, so its costs stay in the core's cache;
* each soft c-transform is one pass per row (or column block): max, then
  ``sum exp`` through a vectorised float32 ``exp`` (``exp_inplace``: Cody-Waite
  reduction, degree-5 polynomial, exponent bits; Numba has no vector ``exp``
  without SVML), then the potential update — no temporary of the kernel's size;
* problems are split across ``torch.get_num_threads()`` Python threads
  (``mil_pool_numba.run_items``: GIL-free serial kernels, one hand-off a call);
* float32 in, float32 accumulation (float64 in: float64 and ``np.exp``).

Backward (envelope theorem, as the reference's last extrapolation step with
the potentials detached): with ``P_ij = exp(h_j - C_ij / eps + f_i / eps)`` the
softmax of a term's last step and ``W = P * dC/d|x - y|`` (``W = P`` for p = 2,
``P / C`` for p = 1, zero where the squared distance was clamped), the rows of
each term get ``w_i (x_i sum_j W_ij - sum_j W_ij col_j)``; columns get nothing.
``w`` are the term's row weights times the upstream gradient and the term's
sign. ``backward_problems`` writes the ``W`` blocks; two ``baddbmm`` per point
set finish the gradient. The weights' gradient is the potentials.
"""
from __future__ import annotations

import numpy as np
import torch
from numba import njit, types
from numba.extending import overload

from fastmed.kernels.mil_pool_numba import run_items
from fastmed.kernels.sinkhorn_reference import LOG_ZERO

# Let LLVM reorder sums and max reductions (SIMD lanes) and fuse multiply-adds; no finite-math assumptions.
FASTMATH = {"reassoc", "contract", "nsz"}
# Below this many cost entries x eps steps a call runs on the calling thread (a hand-off costs ~0.1-0.5 ms here).
PARALLEL_MIN_WORK = 1 << 20


def exp_inplace(v, n, bits):
    """``v[:n] = exp(v[:n])`` for ``v <= 0`` (results below ~1e-38 become ~1e-38); ``bits`` is int32 scratch."""
    v[:n] = np.exp(v[:n])


@overload(exp_inplace, jit_options={"fastmath": FASTMATH})
def _exp_inplace_impl(v, n, bits):
    if v.dtype != types.float32:
        def exact(v, n, bits):
            for j in range(n):
                v[j] = np.exp(v[j])
        return exact

    def fast(v, n, bits):
        # exp(x) = 2^k exp(r), k = round(x / ln 2), r = x - k ln 2 in [-ln2/2, ln2/2] (Cephes expf polynomial)
        scale = bits.view(np.float32)
        for j in range(n):
            x = max(v[j], np.float32(-87.0))
            k = np.floor(x * np.float32(1.44269504) + np.float32(0.5))
            r = x - k * np.float32(0.693359375) - k * np.float32(-2.12194440e-4)
            p = np.float32(1.9875691500e-4)
            p = p * r + np.float32(1.3981999507e-3)
            p = p * r + np.float32(8.3334519073e-3)
            p = p * r + np.float32(4.1665795894e-2)
            p = p * r + np.float32(1.6666665459e-1)
            p = p * r + np.float32(5.0000001201e-1)
            v[j] = p * r * r + r + np.float32(1.0)
            bits[j] = (np.int32(k) + np.int32(127)) << 23
        for j in range(n):
            v[j] *= scale[j]
    return fast


@njit(nogil=True, cache=True, fastmath=FASTMATH)
def softmin_rows(c, h, inv_eps, eps, out, buf, bits):
    """``out[i] = -eps log sum_j exp(h[j] - c[i, j] / eps)`` for ``c: (R, K)``, ``h: (K,)``."""
    R, K = c.shape
    for i in range(R):
        ci = c[i]
        m = h[0] - ci[0] * inv_eps
        for j in range(K):
            buf[j] = h[j] - ci[j] * inv_eps
            m = max(m, buf[j])
        for j in range(K):
            buf[j] -= m
        exp_inplace(buf, K, bits)
        s = buf[0] - buf[0]
        for j in range(K):
            s += buf[j]
        out[i] = -eps * (m + np.log(s))


@njit(nogil=True, cache=True, fastmath=FASTMATH)
def softmin_cols(c, h, inv_eps, eps, out, buf, bits, colmax):
    """``out[j] = -eps log sum_i exp(h[i] - c[i, j] / eps)`` for ``c: (R, K)``, ``h: (R,)`` (reads rows of ``c``)."""
    R, K = c.shape
    for j in range(K):
        colmax[j] = h[0] - c[0, j] * inv_eps
    for i in range(1, R):
        hi = h[i]
        ci = c[i]
        for j in range(K):
            colmax[j] = max(colmax[j], hi - ci[j] * inv_eps)
    for j in range(K):
        out[j] = 0.0
    for i in range(R):
        hi = h[i]
        ci = c[i]
        for j in range(K):
            buf[j] = hi - ci[j] * inv_eps - colmax[j]
        exp_inplace(buf, K, bits)
        for j in range(K):
            out[j] += buf[j]
    for j in range(K):
        out[j] = -eps * (colmax[j] + np.log(out[j]))


@njit(nogil=True, cache=True, fastmath=FASTMATH)
def _shifted(logw, pot, inv_eps, h):
    """``h = logw + pot / eps``."""
    for j in range(h.shape[0]):
        h[j] = logw[j] + pot[j] * inv_eps


@njit(nogil=True, cache=True, fastmath=FASTMATH)
def _average(pot, new):
    """``pot = (pot + new) / 2`` (the symmetric update)."""
    for j in range(pot.shape[0]):
        pot[j] = (pot[j] + new[j]) / 2


@njit(nogil=True, cache=True, fastmath=FASTMATH)
def solve_problems(cxy, cxx, cyy, la, lb, eps, inv_eps, debias, pot_x, pot_y, first, last):
    """The eps-scaling descent of problems ``first..last-1``.

    ``cxy (B, N, M)``, ``cxx (B, N, N)``, ``cyy (B, M, M)`` costs (the self
    costs are unread when not ``debias``), ``la (B, N)``, ``lb (B, M)``
    log-weights, ``eps (S,)`` the schedule and ``inv_eps = 1 / eps`` (in the
    costs' dtype). Writes ``pot_x (B, 4, N)``:
    ``f_ba`` before / after the last extrapolation, ``f_aa`` before / after;
    ``pot_y (B, 4, M)`` likewise ``g_ab``, ``g_bb``.
    """
    N, M = cxy.shape[1], cxy.shape[2]
    L = max(N, M)
    dt = cxy.dtype
    buf, colmax = np.empty(L, dt), np.empty(L, dt)
    bits = np.empty(L, np.int32)
    hx, hy, hxx, hyy = np.empty(N, dt), np.empty(M, dt), np.empty(N, dt), np.empty(M, dt)
    fn, gn, fxn, gyn = np.empty(N, dt), np.empty(M, dt), np.empty(N, dt), np.empty(M, dt)
    S = eps.shape[0]
    for b in range(first, last):
        f, g, faa, gbb = pot_x[b, 0], pot_y[b, 0], pot_x[b, 2], pot_y[b, 2]
        e, ie = eps[0], inv_eps[0]
        softmin_rows(cxy[b], lb[b], ie, e, f, buf, bits)
        softmin_cols(cxy[b], la[b], ie, e, g, buf, bits, colmax)
        if debias:
            softmin_rows(cxx[b], la[b], ie, e, faa, buf, bits)
            softmin_rows(cyy[b], lb[b], ie, e, gbb, buf, bits)
        for s in range(S + 1):  # S symmetric steps, then the last extrapolation at eps[-1]
            e, ie = eps[min(s, S - 1)], inv_eps[min(s, S - 1)]
            _shifted(lb[b], g, ie, hy)
            _shifted(la[b], f, ie, hx)
            if s == S:
                f, g = pot_x[b, 1], pot_y[b, 1]
            softmin_rows(cxy[b], hy, ie, e, fn if s < S else f, buf, bits)
            softmin_cols(cxy[b], hx, ie, e, gn if s < S else g, buf, bits, colmax)
            if s < S:
                _average(f, fn)
                _average(g, gn)
            if debias:
                _shifted(la[b], faa, ie, hxx)
                _shifted(lb[b], gbb, ie, hyy)
                if s == S:
                    faa, gbb = pot_x[b, 3], pot_y[b, 3]
                softmin_rows(cxx[b], hxx, ie, e, fxn if s < S else faa, buf, bits)
                softmin_rows(cyy[b], hyy, ie, e, gyn if s < S else gbb, buf, bits)
                if s < S:
                    _average(faa, fxn)
                    _average(gbb, gyn)


@njit(nogil=True, cache=True, fastmath=FASTMATH)
def _softmax_rows(c, h, f_out, inv_eps, w, sign, p1, c_min, self_term, out, rowsum, buf, bits):
    """``out[i, j] = sign w[i] P_ij dC`` with ``P_ij = exp(h[j] - c[i, j] / eps + f_out[i] / eps)``; ``rowsum[i] += sum_j out[i, j]``.

    ``dC`` is 1 (p = 2) or ``1 / c`` (p = 1, zero where ``c <= c_min``, the clamped distances).
    A ``self_term`` (x-x, y-y) gets ``out[i, i] = 0``: that entry's gradient ``x_i - x_i`` is zero
    (in the reference too), and dropping it avoids cancelling two large float32 terms (p = 1, ``1 / C_ii``).
    """
    R, K = c.shape
    for i in range(R):
        ci = c[i]
        fi = f_out[i] * inv_eps
        for j in range(K):
            buf[j] = h[j] - ci[j] * inv_eps + fi
        exp_inplace(buf, K, bits)
        wi = sign * w[i]
        s = buf[0] - buf[0]
        oi = out[i]
        for j in range(K):
            v = wi * buf[j]
            if p1:
                v = v / ci[j] if ci[j] > c_min else v - v
            oi[j] = v
            s += v
        if self_term:
            s -= oi[i]
            oi[i] = 0.0
        rowsum[i] += s


@njit(nogil=True, cache=True, fastmath=FASTMATH)
def _softmax_cols(c, h, g_out, inv_eps, w, p1, c_min, out, colsum, buf, bits):
    """``out[i, j] = w[j] Q_ij dC`` with ``Q_ij = exp(h[i] - c[i, j] / eps + g_out[j] / eps)`` (the y-x term, transposed); ``colsum[j] += sum_i``."""
    R, K = c.shape
    for i in range(R):
        ci = c[i]
        hi = h[i]
        for j in range(K):
            buf[j] = hi - ci[j] * inv_eps + g_out[j] * inv_eps
        exp_inplace(buf, K, bits)
        oi = out[i]
        for j in range(K):
            v = w[j] * buf[j]
            if p1:
                v = v / ci[j] if ci[j] > c_min else v - v
            oi[j] = v
            colsum[j] += v


@njit(nogil=True, cache=True, fastmath=FASTMATH)
def backward_problems(cxy, cxx, cyy, la, lb, pot_x, pot_y, wx, wy, eps, inv_eps, debias, p1, c_min,
                      wxy, wyx_t, wxx, wyy, rs_x, rs_y, first, last):
    """Gradient blocks of problems ``first..last-1`` (see the module docstring).

    Inputs as ``solve_problems`` plus ``wx (B, N)``, ``wy (B, M)``: row weights
    times the upstream gradient; ``eps``/``inv_eps``: the last temperature.
    Writes ``wxy (B, N, M)``, ``wyx_t (B, N, M)`` (the y-x block, transposed),
    ``wxx (B, N, N)``, ``wyy (B, M, M)`` (self blocks carry the minus sign),
    and their row sums ``rs_x (B, N)``, ``rs_y (B, M)`` (zeroed here).
    """
    N, M = cxy.shape[1], cxy.shape[2]
    L = max(N, M)
    dt = cxy.dtype
    buf, bits = np.empty(L, dt), np.empty(L, np.int32)
    hx, hy = np.empty(N, dt), np.empty(M, dt)
    one = inv_eps / inv_eps
    for b in range(first, last):
        rs_x[b] = 0.0
        rs_y[b] = 0.0
        _shifted(lb[b], pot_y[b, 0], inv_eps, hy)
        _shifted(la[b], pot_x[b, 0], inv_eps, hx)
        _softmax_rows(cxy[b], hy, pot_x[b, 1], inv_eps, wx[b], one, p1, c_min, False, wxy[b], rs_x[b], buf, bits)
        _softmax_cols(cxy[b], hx, pot_y[b, 1], inv_eps, wy[b], p1, c_min, wyx_t[b], rs_y[b], buf, bits)
        if debias:
            _shifted(la[b], pot_x[b, 2], inv_eps, hx)
            _shifted(lb[b], pot_y[b, 2], inv_eps, hy)
            _softmax_rows(cxx[b], hx, pot_x[b, 3], inv_eps, wx[b], -one, p1, c_min, True, wxx[b], rs_x[b], buf, bits)
            _softmax_rows(cyy[b], hy, pot_y[b, 3], inv_eps, wy[b], -one, p1, c_min, True, wyy[b], rs_y[b], buf, bits)


def _costs(u: torch.Tensor, v: torch.Tensor, p: int) -> torch.Tensor:
    """``|u_i - v_j|^p / p`` ``(B, R, K)`` like ``sinkhorn_reference.cost_matrix``, in place on the ``bmm`` result."""
    sq = torch.bmm(u, v.transpose(1, 2)).mul_(-2).add_((u * u).sum(-1).unsqueeze(2)).add_((v * v).sum(-1).unsqueeze(1))
    return sq.mul_(0.5) if p == 2 else sq.clamp_min_(1e-8).sqrt_()


def _self_costs(u: torch.Tensor, p: int) -> torch.Tensor:
    """``_costs(u, u, p)`` with the exact diagonal (``|u_i - u_i| = 0``, clamped like the rest for p = 1)."""
    c = _costs(u, u, p)
    c.diagonal(dim1=1, dim2=2).fill_(0.0 if p == 2 else 1e-4)
    return c


def _run(kernel, B: int, work: int, *args) -> None:
    """``kernel(*args, 0, B)`` on this thread for small work, else split over problems (``run_items``)."""
    if work < PARALLEL_MIN_WORK:
        kernel(*args, 0, B)
    else:
        run_items(kernel, B, *args)


class SinkhornNumba(torch.autograd.Function):
    """``apply(x (B, N, D), y (B, M, D), a (B, N), b (B, M), p, eps_list, debias) -> (B,)``.

    CPU tensors of one dtype, float32 or float64 (any strides). Gradients: points
    by the envelope theorem, weights = the potentials (as the reference).
    """

    @staticmethod
    def forward(ctx, x, y, a, b, p, eps_list, debias):
        x, y = x.detach().contiguous(), y.detach().contiguous()
        a, b = a.detach().to(x.dtype).contiguous(), b.detach().to(x.dtype).contiguous()
        B, N, M = x.shape[0], x.shape[1], y.shape[1]
        cxy = _costs(x, y, p)
        empty = x.new_empty(B, 0, 0)
        cxx, cyy = (_self_costs(x, p), _self_costs(y, p)) if debias else (empty, empty)
        la = torch.where(a > 0, a.clamp_min(1e-38).log(), torch.full_like(a, LOG_ZERO))
        lb = torch.where(b > 0, b.clamp_min(1e-38).log(), torch.full_like(b, LOG_ZERO))
        np_dt = np.float64 if x.dtype == torch.float64 else np.float32
        eps = np.asarray(eps_list, np_dt)
        inv_eps = (1 / np.asarray(eps_list, np.float64)).astype(np_dt)
        pot_x, pot_y = x.new_empty(B, 4, N), y.new_empty(B, 4, M)
        arrays = [t.numpy() for t in (cxy, cxx, cyy, la, lb)]
        work = B * (2 * N * M + (N * N + M * M) * debias) * (len(eps_list) + 2)
        _run(solve_problems, B, work, *arrays, eps, inv_eps, debias, pot_x.numpy(), pot_y.numpy())
        f, g = pot_x[:, 1], pot_y[:, 1]
        if debias:
            f, g = f - pot_x[:, 3], g - pot_y[:, 3]
        ctx.p, ctx.debias, ctx.eps, ctx.work = p, debias, eps_list[-1], work
        ctx.save_for_backward(x, y, a, b, cxy, cxx, cyy, la, lb, pot_x, pot_y, f, g)
        return (a * f).sum(1) + (b * g).sum(1)

    @staticmethod
    def backward(ctx, grad):
        x, y, a, b, cxy, cxx, cyy, la, lb, pot_x, pot_y, f, g = ctx.saved_tensors
        B, N, M = x.shape[0], x.shape[1], y.shape[1]
        up = grad.detach().to(x.dtype).contiguous()
        wx, wy = (a * up[:, None]).contiguous(), (b * up[:, None]).contiguous()
        wxy, wyx_t, rs_x, rs_y = torch.empty_like(cxy), torch.empty_like(cxy), x.new_empty(B, N), y.new_empty(B, M)
        wxx, wyy = torch.empty_like(cxx), torch.empty_like(cyy)
        np_dt = np.float64 if x.dtype == torch.float64 else np.float32
        eps, inv_eps = np_dt(ctx.eps), np_dt(1 / ctx.eps)
        c_min = np_dt(np.sqrt(np_dt(1e-8)))
        arrays = [t.numpy() for t in (cxy, cxx, cyy, la, lb, pot_x, pot_y, wx, wy)]
        outs = [t.numpy() for t in (wxy, wyx_t, wxx, wyy, rs_x, rs_y)]
        _run(backward_problems, B, ctx.work // 8, *arrays, eps, inv_eps, ctx.debias, ctx.p == 1, c_min, *outs)
        gx = (x * rs_x.unsqueeze(2)).baddbmm_(wxy, y, alpha=-1)
        gy = (y * rs_y.unsqueeze(2)).baddbmm_(wyx_t.transpose(1, 2), x, alpha=-1)
        if ctx.debias:
            gx.baddbmm_(wxx, x, alpha=-1)
            gy.baddbmm_(wyy, y, alpha=-1)
        ga, gb = f * up[:, None], g * up[:, None]
        return gx, gy, ga, gb, None, None, None
