"""Numba CPU kernel of the batched Sinkhorn divergence (forward and analytic backward).

Same maths as ``sinkhorn_reference`` (the specification, GeomLoss's
conventions); what changes is the order of the work:

* the costs ``C_xy (B, N, M)``, ``C_xx (B, N, N)``, ``C_yy (B, M, M)`` are
  computed once, from coordinate differences (no padding to ``max(N, M)``;
  the y-x problem reads the columns of ``C_xy`` instead of a transposed copy);
* one problem at a time runs its whole eps-scaling descent, x-y, y-x, x-x and
  y-y updates interleaved, so its costs stay in the core's cache;
* each soft c-transform is one pass per row (or column block): max, then
  ``sum exp`` through a vectorised float32 ``exp`` (``exp_inplace``: Cody-Waite
  reduction, degree-5 polynomial, exponent bits; Numba has no vector ``exp``
  without SVML), then the potential update — no temporary of the kernel's size;
* problems are split across ``torch.get_num_threads()`` Python threads
  (``mil_pool_numba.run_items``: GIL-free serial kernels, one hand-off a call;
  no BLAS call, so no OpenMP team that stalls when other jobs hold the cores);
* float32 in, float32 accumulation (float64 in: float64 and ``np.exp``).

Backward (envelope theorem, as the reference's last extrapolation step with
the potentials detached): with ``P_ij = exp(h_j - C_ij / eps + f_i / eps)`` the
softmax of a term's last step and ``dC = 1`` (p = 2) or ``1 / C_ij`` (p = 1),
the rows of each term get ``w_i sum_j P_ij dC (x_i - col_j)``; columns get
nothing. ``w`` are the term's row weights times the upstream gradient, negated
for the self terms. ``backward_problems`` accumulates that row by row into the
point gradients (no ``(B, N, M)`` gradient block). The weights' gradient is the
potentials.
"""
from __future__ import annotations

import numpy as np
import torch
from numba import njit, types
from numba.extending import overload

from fastmed.kernels.mil_pool_numba import run_items
from fastmed.kernels.sinkhorn_reference import log_weights

# Let LLVM reorder sums and max reductions (SIMD lanes) and fuse multiply-adds; no finite-math assumptions.
FASTMATH = {"reassoc", "contract", "nsz"}
# Below this many cost entries x eps steps a call runs on the calling thread (a hand-off costs ~0.1-0.5 ms here).
PARALLEL_MIN_WORK = 1 << 20


def exp_inplace(v, n, bits):
    """``v[:n] = exp(v[:n])`` for ``v <= 0`` (below -87, where exp < 1.7e-38, the result is 0); ``bits`` is int32
    scratch."""
    v[:n] = np.exp(v[:n])


@overload(exp_inplace, jit_options={"fastmath": FASTMATH})
def _exp_inplace_impl(v, n, bits):
    if v.dtype != types.float32:
        def exact(v, n, bits):
            for j in range(n):
                v[j] = np.exp(v[j])
        return exact

    def fast(v, n, bits):
        # exp(x) = 2^k exp(r), k = round(x / ln 2), r = x - k ln 2 in [-ln2/2, ln2/2] (Cephes expf polynomial).
        # Below -87 the scale is +0.0 (bits 0), not 2^-126: a kernel entry of ~1e-38 times a weight is a subnormal,
        # and on CPUs that handle subnormals in microcode (seen on an AVX-512 Xeon: the backward at B16 N=M=128
        # took 1 s instead of 30 ms) every product with one is 100x slower.
        scale = bits.view(np.float32)
        for j in range(n):
            inside = v[j] >= np.float32(-87.0)
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
            bits[j] = (np.int32(k) + np.int32(127)) << 23 if inside else np.int32(0)
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
def _finish_cost(sq, p):
    """``|u - v|^p / p`` from the squared distance (p = 1 clamps it at 1e-8, as GeomLoss)."""
    return sq / 2 if p == 2 else np.sqrt(max(sq, 1e-8))


@njit(nogil=True, cache=True, fastmath=FASTMATH)
def cost_block(u, v, p, out):
    """``out[i, j] = |u[i] - v[j]|^p / p`` for ``u: (R, D)``, ``v: (K, D)``.

    From coordinate differences, not the expanded ``|u|^2 - 2 u.v + |v|^2``: no
    cancellation, and ``C(x_i, x_i) = 0`` exactly. Four columns at a time share
    the loads of ``u[i]``.
    """
    R, D = u.shape
    K = v.shape[0]
    for i in range(R):
        ui = u[i]
        j = 0
        while j + 4 <= K:
            v0, v1, v2, v3 = v[j], v[j + 1], v[j + 2], v[j + 3]
            s0 = s1 = s2 = s3 = ui[0] - ui[0]
            for d in range(D):
                t0, t1, t2, t3 = ui[d] - v0[d], ui[d] - v1[d], ui[d] - v2[d], ui[d] - v3[d]
                s0 += t0 * t0
                s1 += t1 * t1
                s2 += t2 * t2
                s3 += t3 * t3
            out[i, j], out[i, j + 1] = _finish_cost(s0, p), _finish_cost(s1, p)
            out[i, j + 2], out[i, j + 3] = _finish_cost(s2, p), _finish_cost(s3, p)
            j += 4
        for j in range(j, K):
            vj = v[j]
            sq = ui[0] - ui[0]
            for d in range(D):
                t = ui[d] - vj[d]
                sq += t * t
            out[i, j] = _finish_cost(sq, p)


@njit(nogil=True, cache=True, fastmath=FASTMATH)
def costs_problems(x, y, p, debias, cxy, cxx, cyy, first, last):
    """The cost blocks of problems ``first..last-1`` (``x (B, N, D)``, ``y (B, M, D)``; self blocks if ``debias``)."""
    for b in range(first, last):
        cost_block(x[b], y[b], p, cxy[b])
        if debias:
            cost_block(x[b], x[b], p, cxx[b])
            cost_block(y[b], y[b], p, cyy[b])


@njit(nogil=True, cache=True, fastmath=FASTMATH)
def _grad_rows(c, h, f_out, inv_eps, w, p1, c_min, self_term, rows, cols, grad, buf, bits):
    """``grad[i] += w[i] sum_j P_ij dC_ij (rows[i] - cols[j])``, ``P_ij`` the row softmax of ``h[j] - c[i, j] / eps``
    (shifted by ``f_out[i] / eps``, normalised by its row sum).

    ``dC`` is 1 (p = 2) or ``1 / c`` (p = 1, zero where ``c <= c_min``: the clamped distances). A
    ``self_term`` (x-x, y-y) skips ``j = i``, whose ``rows[i] - cols[i]`` is zero.
    """
    R, K = c.shape
    D = rows.shape[1]
    for i in range(R):
        ci = c[i]
        fi = f_out[i] * inv_eps
        for j in range(K):
            buf[j] = h[j] - ci[j] * inv_eps + fi
        exp_inplace(buf, K, bits)
        z = buf[0] - buf[0]
        for j in range(K):
            z += buf[j]
        wi = w[i] / z  # normalise: f_out / eps carries the rounding of c / eps (large), the row sum does not
        for j in range(K):
            v = wi * buf[j]
            if p1:
                v = v / ci[j] if ci[j] > c_min else v - v
            buf[j] = v
        if self_term:
            buf[i] = 0.0
        s = buf[0] - buf[0]
        for j in range(K):
            s += buf[j]
        gi, ri = grad[i], rows[i]
        for d in range(D):
            gi[d] += s * ri[d]
        j = 0
        while j + 4 <= K:  # four columns per pass over gi
            q0, q1, q2, q3 = buf[j], buf[j + 1], buf[j + 2], buf[j + 3]
            c0, c1, c2, c3 = cols[j], cols[j + 1], cols[j + 2], cols[j + 3]
            for d in range(D):
                gi[d] -= q0 * c0[d] + q1 * c1[d] + q2 * c2[d] + q3 * c3[d]
            j += 4
        for j in range(j, K):
            q, cj = buf[j], cols[j]
            for d in range(D):
                gi[d] -= q * cj[d]


@njit(nogil=True, cache=True, fastmath=FASTMATH)
def _grad_cols(c, h, g_out, inv_eps, w, p1, c_min, rows, cols, grad, colsum, wsum, qbuf, bits):
    """The y-x term from ``c = C_xy (R, K)``: ``grad[j] = w[j] sum_i Q_ij dC_ij (cols[j] - rows[i])``, ``Q_ij``
    the column softmax of ``h[i] - c[i, j] / eps`` (shifted by ``g_out[j] / eps``, normalised by its column sum).

    ``grad`` must be zero on entry; ``colsum``, ``wsum (K,)`` and ``qbuf (4, K)`` are scratch. Four rows at
    a time share each pass over ``grad[j]``.
    """
    R, K = c.shape
    D = rows.shape[1]
    colsum[:K] = 0.0
    wsum[:K] = 0.0
    for i0 in range(0, R, 4):
        n = min(4, R - i0)
        for k in range(n):
            ci, hi, qk = c[i0 + k], h[i0 + k], qbuf[k]
            for j in range(K):
                qk[j] = hi - ci[j] * inv_eps + g_out[j] * inv_eps
            exp_inplace(qk, K, bits)
            for j in range(K):
                q = qk[j]
                colsum[j] += q
                if p1:
                    q = q / ci[j] if ci[j] > c_min else q - q
                qk[j] = q
                wsum[j] += q
        if n == 4:
            r0, r1, r2, r3 = rows[i0], rows[i0 + 1], rows[i0 + 2], rows[i0 + 3]
            for j in range(K):
                q0, q1, q2, q3 = qbuf[0, j], qbuf[1, j], qbuf[2, j], qbuf[3, j]
                gj = grad[j]
                for d in range(D):
                    gj[d] += q0 * r0[d] + q1 * r1[d] + q2 * r2[d] + q3 * r3[d]
        else:
            for k in range(n):
                rk = rows[i0 + k]
                for j in range(K):
                    q, gj = qbuf[k, j], grad[j]
                    for d in range(D):
                        gj[d] += q * rk[d]
    for j in range(K):
        gj, cj, s, scale = grad[j], cols[j], wsum[j], w[j] / colsum[j]
        for d in range(D):
            gj[d] = scale * (s * cj[d] - gj[d])


@njit(nogil=True, cache=True, fastmath=FASTMATH)
def backward_problems(x, y, cxy, cxx, cyy, la, lb, pot_x, pot_y, wx, wy, inv_eps, debias, p1, c_min,
                      gx, gy, first, last):
    """Point gradients ``gx (B, N, D)``, ``gy (B, M, D)`` (zero-filled by the caller) of problems ``first..last-1``.

    Inputs as ``solve_problems`` plus ``wx (B, N)``, ``wy (B, M)``: row weights
    times the upstream gradient; ``inv_eps``: 1 / the last temperature.
    The self terms enter with a minus sign (the value is ``<a, f_ba - f_aa> + <b, g_ab - g_bb>``).
    """
    N, M = cxy.shape[1], cxy.shape[2]
    L = max(N, M)
    dt = cxy.dtype
    buf, colsum, wsum, bits = np.empty(L, dt), np.empty(L, dt), np.empty(L, dt), np.empty(L, np.int32)
    qbuf = np.empty((4, M), dt)
    hx, hy = np.empty(N, dt), np.empty(M, dt)
    nwx, nwy = np.empty(N, dt), np.empty(M, dt)
    for b in range(first, last):
        _shifted(lb[b], pot_y[b, 0], inv_eps, hy)
        _shifted(la[b], pot_x[b, 0], inv_eps, hx)
        _grad_rows(cxy[b], hy, pot_x[b, 1], inv_eps, wx[b], p1, c_min, False, x[b], y[b], gx[b], buf, bits)
        _grad_cols(cxy[b], hx, pot_y[b, 1], inv_eps, wy[b], p1, c_min, x[b], y[b], gy[b], colsum, wsum, qbuf, bits)  # first into gy
        if debias:
            _shifted(la[b], pot_x[b, 2], inv_eps, hx)
            _shifted(lb[b], pot_y[b, 2], inv_eps, hy)
            for i in range(N):
                nwx[i] = -wx[b, i]
            for j in range(M):
                nwy[j] = -wy[b, j]
            _grad_rows(cxx[b], hx, pot_x[b, 3], inv_eps, nwx, p1, c_min, True, x[b], x[b], gx[b], buf, bits)
            _grad_rows(cyy[b], hy, pot_y[b, 3], inv_eps, nwy, p1, c_min, True, y[b], y[b], gy[b], buf, bits)


def _run(kernel, B: int, work: int, *args) -> None:
    """``kernel(*args, 0, B)`` on this thread for small work, else split over problems (``run_items``)."""
    run_items(kernel, B, *args, parallel=work >= PARALLEL_MIN_WORK)


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
        cxy = x.new_empty(B, N, M)
        cxx, cyy = (x.new_empty(B, N, N), y.new_empty(B, M, M)) if debias else (x.new_empty(B, 0, 0), x.new_empty(B, 0, 0))
        la, lb = log_weights(a), log_weights(b)
        np_dt = np.float64 if x.dtype == torch.float64 else np.float32
        eps = np.asarray(eps_list, np_dt)
        inv_eps = (1 / np.asarray(eps_list, np.float64)).astype(np_dt)
        pot_x, pot_y = x.new_empty(B, 4, N), y.new_empty(B, 4, M)
        arrays = [t.numpy() for t in (cxy, cxx, cyy, la, lb)]
        entries = B * (N * M + (N * N + M * M) * debias)
        _run(costs_problems, B, entries * x.shape[2], x.numpy(), y.numpy(), p, debias, *arrays[:3])
        work = (entries + B * N * M) * (len(eps_list) + 2)
        _run(solve_problems, B, work, *arrays, eps, inv_eps, debias, pot_x.numpy(), pot_y.numpy())
        f, g = pot_x[:, 1], pot_y[:, 1]
        if debias:
            f, g = f - pot_x[:, 3], g - pot_y[:, 3]
        ctx.p, ctx.debias, ctx.eps, ctx.work = p, debias, eps_list[-1], (entries + B * N * M) * (1 + x.shape[2])
        ctx.save_for_backward(x, y, a, b, cxy, cxx, cyy, la, lb, pot_x, pot_y, f, g)
        return (a * f).sum(1) + (b * g).sum(1)

    @staticmethod
    def backward(ctx, grad):
        x, y, a, b, cxy, cxx, cyy, la, lb, pot_x, pot_y, f, g = ctx.saved_tensors
        up = grad.detach().to(x.dtype).contiguous()
        wx, wy = (a * up[:, None]).contiguous(), (b * up[:, None]).contiguous()
        np_dt = np.float64 if x.dtype == torch.float64 else np.float32
        # zero-filled by NumPy on this thread: a torch fill this large runs on torch's OpenMP threads, which spin on
        # beside the kernel's threads afterwards (B16 N=M=128 D256, 2 threads: fwd+bwd 42.2 -> 34.1 ms)
        gx, gy = (torch.from_numpy(np.zeros(tuple(t.shape), np_dt)) for t in (x, y))
        inv_eps, c_min = np_dt(1 / ctx.eps), np_dt(np.sqrt(np_dt(1e-8)))
        arrays = [t.numpy() for t in (x, y, cxy, cxx, cyy, la, lb, pot_x, pot_y, wx, wy)]
        _run(backward_problems, x.shape[0], ctx.work, *arrays, inv_eps, ctx.debias, ctx.p == 1, c_min, gx.numpy(), gy.numpy())
        return gx, gy, f * up[:, None], g * up[:, None], None, None, None
