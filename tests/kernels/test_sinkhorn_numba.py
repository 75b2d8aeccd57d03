"""Numba CPU path of the Sinkhorn divergence: against the reference (float64 and float32) and GeomLoss."""
from __future__ import annotations

import pytest
import torch

import fastmed.kernels.sinkhorn_numba as sn
from fastmed.kernels import sinkhorn_cost, sinkhorn_divergence
from fastmed.kernels.sinkhorn import choose_backend

KW = dict(blur=0.2, scaling=0.6, diameter=8.0)


def _problem(B=3, N=11, M=7, D=5, dtype=torch.float64, seed=0):
    """Clouds ``x (B, N, D)``, ``y (B, M, D)``, weights (two zero weights in ``b``) and an upstream gradient."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, N, D, generator=g, dtype=torch.float64)
    y = torch.randn(B, M, D, generator=g, dtype=torch.float64) + 0.3
    a = torch.softmax(torch.randn(B, N, generator=g, dtype=torch.float64), 1)
    b = torch.softmax(torch.randn(B, M, generator=g, dtype=torch.float64), 1)
    b[:, -2:] = 0
    b = b / b.sum(1, keepdim=True)
    up = torch.linspace(-1.0, 2.0, B, dtype=torch.float64)
    return [t.to(dtype) for t in (x, y, a, b, up)]


def _value_and_grads(fn, x, y, a, b, up, **kw):
    """Value and gradients wrt x, y, a, b of ``sum(up * fn(x, y))``, all as float64."""
    x, y, a, b = (t.detach().clone().requires_grad_() for t in (x, y, a, b))
    v = fn(x, y, x_weights=a, y_weights=b, **kw)
    (v * up.to(v.dtype)).sum().backward()
    return [t.double() for t in (v.detach(), x.grad, y.grad, a.grad, b.grad)]


def _assert_rel(got, want, rtol):
    """Every tensor within ``rtol`` of ``want`` relative to ``want``'s largest magnitude."""
    for name, g, w in zip(("value", "grad x", "grad y", "grad a", "grad b"), got, want):
        err = float((g - w).abs().max() / w.abs().max())
        assert err <= rtol, f"{name}: relative error {err:.2e} > {rtol:.0e}"


@pytest.mark.parametrize("p", [1, 2])
@pytest.mark.parametrize("debias", [True, False])
@pytest.mark.parametrize("dtype, rtol", [(torch.float64, 1e-10), (torch.float32, 1e-5)])
def test_numba_matches_float64_reference(p, debias, dtype, rtol):
    # float32 against the float64 reference: the vectorised exp and float32 sums cost < 1e-5 (relative)
    fn = sinkhorn_divergence if debias else sinkhorn_cost
    prob = _problem()
    want = _value_and_grads(fn, *prob, p=p, backend="torch", **KW)
    got = _value_and_grads(fn, *(t.to(dtype) for t in prob), p=p, backend="numba", **KW)
    _assert_rel(got, want, rtol)


@pytest.mark.parametrize("p", [1, 2])
def test_numba_float32_matches_float32_reference(p):
    # the float32 reference carries the rounding of C(x_i, x_i) (not exactly 0): 1e-4 at p=1, as against GeomLoss
    prob = [t.float() for t in _problem()]
    want = _value_and_grads(sinkhorn_divergence, *prob, p=p, backend="torch", **KW)
    got = _value_and_grads(sinkhorn_divergence, *prob, p=p, backend="numba", **KW)
    _assert_rel(got, want, 1e-5 if p == 2 else 1e-3)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("p", [1, 2])
def test_numba_matches_geomloss(dtype, p):
    geomloss = pytest.importorskip("geomloss")
    x, y, a, b, up = _problem(B=2, N=9, M=6, D=4, dtype=dtype, seed=1)
    loss = geomloss.SamplesLoss("sinkhorn", p=p, backend="tensorized", **KW)
    want = _value_and_grads(lambda u, v, x_weights, y_weights: loss(x_weights, u, y_weights, v), x, y, a, b, up)
    got = _value_and_grads(sinkhorn_divergence, x, y, a, b, up, p=p, backend="numba", **KW)
    # GeomLoss in float32 has the rounding of its expanded costs and of C(x_i, x_i) (see above); float64: rounding only
    _assert_rel(got, want, (5e-5 if p == 2 else 1e-3) if dtype == torch.float32 else 1e-10)


def test_numba_two_diracs_known_value():
    # one point each: S_eps = |x - y|^2 / 2 exactly; gradient wrt x is x - y
    x = torch.tensor([[[0.0, 0.0]]], requires_grad=True)
    y = torch.tensor([[[3.0, 4.0]]])
    v = sinkhorn_divergence(x, y, backend="numba")
    v.sum().backward()
    torch.testing.assert_close(v.detach(), torch.tensor([12.5]), rtol=1e-6, atol=0)
    torch.testing.assert_close(x.grad, torch.tensor([[[-3.0, -4.0]]]), rtol=1e-5, atol=0)


def test_numba_threads_split_problems_identically(monkeypatch):
    prob = [t.float() for t in _problem(B=5)]
    one = _value_and_grads(sinkhorn_divergence, *prob, backend="numba", **KW)
    monkeypatch.setattr(sn, "PARALLEL_MIN_WORK", 0)  # force the thread split even on a tiny problem
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        split = _value_and_grads(sinkhorn_divergence, *prob, backend="numba", **KW)
    finally:
        torch.set_num_threads(threads)
    for s, o in zip(split, one):
        assert torch.equal(s, o)  # each problem runs serially on one thread: bitwise the same


def test_numba_non_contiguous_half_inputs_and_double_backward():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, 6, 17, generator=g).transpose(1, 2)  # (2, 17, 6), non-contiguous
    y = torch.randn(2, 20, 6, generator=g)[:, ::2]          # (2, 10, 6), strided
    want = sinkhorn_divergence(x.contiguous(), y.contiguous(), backend="torch", **KW)
    torch.testing.assert_close(sinkhorn_divergence(x, y, backend="numba", **KW), want, rtol=1e-5, atol=0)
    half = sinkhorn_divergence(x.bfloat16(), y.bfloat16(), backend="numba", **KW)
    assert half.dtype == torch.bfloat16
    torch.testing.assert_close(half.float(), sinkhorn_divergence(x.bfloat16().float(), y.bfloat16().float(),
                                                                 backend="torch", **KW).bfloat16().float())
    xr = x.clone().requires_grad_()
    v = sinkhorn_divergence(xr, y, backend="numba", **KW).sum()
    v.backward(retain_graph=True)
    first = xr.grad.clone()
    v.backward()  # the saved costs are not consumed by the first backward
    torch.testing.assert_close(xr.grad, 2 * first, rtol=1e-6, atol=0)


def test_auto_picks_numba_on_cpu():
    x = torch.zeros(1, 2, 2)
    assert choose_backend("auto", x, x) == "numba"
    assert choose_backend("torch", x, x) == "torch"
    with pytest.raises(ValueError, match="backend must be one of"):
        choose_backend("numpy", x, x)


def test_numba_float32_gradient_high_dim_is_as_accurate_as_geomloss():
    # large C / eps (here ~1e4): the stored f / eps carries its rounding, so the backward normalises each
    # softmax by its own sum (as the reference's autograd does); unnormalised it was 1.5e-3 off at this size
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 64, 256, generator=g, dtype=torch.float64)
    y = torch.randn(1, 64, 256, generator=g, dtype=torch.float64) + 0.5
    kw = dict(blur=0.1, scaling=0.5, diameter=20.0)
    grads = {}
    for name, dtype, backend in [("oracle", torch.float64, "torch"), ("numba", torch.float32, "numba")]:
        xr = x.to(dtype).detach().requires_grad_()
        sinkhorn_divergence(xr, y.to(dtype), backend=backend, **kw).sum().backward()
        grads[name] = xr.grad.double()
    err = float((grads["numba"] - grads["oracle"]).abs().max() / grads["oracle"].abs().max())
    assert err < 5e-4, err


def test_numba_backward_fills_gradients_without_torch_ops(monkeypatch):
    """The point gradients are zero-filled by NumPy: a large torch fill wakes torch's OpenMP threads, which spin on
    beside the kernel's threads. The gradient still matches the reference."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 5, 3, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.randn(2, 4, 3, generator=g, dtype=torch.float64, requires_grad=True)
    want = torch.autograd.grad(sinkhorn_divergence(x, y, blur=0.3, backend="torch").sum(), (x, y))
    fills = []
    real = torch.zeros_like
    monkeypatch.setattr(torch, "zeros_like", lambda *a, **k: (fills.append(a[0].shape), real(*a, **k))[1])
    got = torch.autograd.grad(sinkhorn_divergence(x, y, blur=0.3, backend="numba").sum(), (x, y))
    assert fills == []
    for gt, wt in zip(got, want):
        torch.testing.assert_close(gt, wt, rtol=1e-8, atol=1e-10)


def test_fast_exp_accuracy_and_exact_zero_below_float32_range():
    """The float32 ``exp_inplace`` (inside Numba) is within 5e-7 of float64 ``exp``, relative (3e-7 measured), down
    to -87, and exactly 0 below: no output is subnormal (a ~1e-38 entry times a weight would be, and on CPUs that handle subnormals in
    microcode such products made the backward 30x slower)."""
    import numpy as np
    from numba import njit

    @njit
    def run(v, bits):
        sn.exp_inplace(v, v.shape[0], bits)

    x = np.concatenate([np.linspace(-120.0, 0.0, 200_001, dtype=np.float32), np.float32([-87.0, -86.99, -87.01, -1e30])])
    v = x.copy()
    run(v, np.empty(len(x), np.int32))
    inside = x >= -87.0
    want = np.exp(x[inside].astype(np.float64))
    assert float(np.max(np.abs(v[inside] - want) / want)) < 5e-7
    assert (v[~inside] == 0).all()
    assert not ((v > 0) & (v < np.finfo(np.float32).tiny)).any()
