"""Batched Sinkhorn divergence: reference vs GeomLoss, Triton (interpreter) vs reference, validation."""
from __future__ import annotations

import pytest
import torch

from fastmed.kernels import sinkhorn_cost, sinkhorn_divergence
from fastmed.kernels.sinkhorn_reference import epsilon_schedule

# dtype -> (value atol, value rtol, grad atol) for Triton vs the float32 reference
TOL = {torch.float32: (1e-4, 1e-4, 1e-4), torch.bfloat16: (5e-2, 2e-2, 5e-2)}


def _clouds(B=2, N=11, M=7, D=5, shift=0.3, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, N, D, generator=g).to(dtype)
    y = (torch.randn(B, M, D, generator=g) + shift).to(dtype)
    return x, y


def _value_and_grads(fn, x, y, upstream, **kw):
    x = x.detach().clone().requires_grad_()
    y = y.detach().clone().requires_grad_()
    v = fn(x, y, **kw)
    (v.float() * upstream).sum().backward()
    return v.detach().float(), x.grad.float(), y.grad.float()


@pytest.mark.parametrize("p", [1, 2])
@pytest.mark.parametrize("debias", [True, False])
def test_reference_matches_geomloss(p, debias):
    geomloss = pytest.importorskip("geomloss")
    x, y = _clouds(B=3, N=13, M=9, D=4)
    loss = geomloss.SamplesLoss("sinkhorn", p=p, blur=0.2, scaling=0.6, diameter=8.0, debias=debias, backend="tensorized")
    up = torch.tensor([1.0, -0.5, 2.0])
    want = _value_and_grads(lambda a, b: loss(a, b), x, y, up)
    got = _value_and_grads(sinkhorn_divergence if debias else sinkhorn_cost, x, y, up,
                           p=p, blur=0.2, scaling=0.6, diameter=8.0, backend="torch")
    # p=1: the diagonal of C(x, x) is sqrt(max(rounding error, 1e-8)), so matmul rounding shows at ~1e-5
    tol = 1e-5 if p == 2 else 1e-4
    for w, g in zip(want, got):
        torch.testing.assert_close(g, w, atol=tol, rtol=tol)


def test_reference_matches_geomloss_weights_and_auto_diameter():
    geomloss = pytest.importorskip("geomloss")
    x, y = _clouds(B=2, N=10, M=6, D=3)
    a = torch.rand(2, 10) + 0.1
    a[:, -3:] = 0  # padding points
    a = a / a.sum(1, keepdim=True)
    b = torch.softmax(torch.randn(2, 6), 1)
    loss = geomloss.SamplesLoss("sinkhorn", p=2, blur=0.1, scaling=0.5, backend="tensorized")
    want = loss(a, x, b, y)
    got = sinkhorn_divergence(x, y, x_weights=a, y_weights=b, blur=0.1, scaling=0.5, backend="torch")
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_zero_weight_points_are_ignored():
    x, y = _clouds(B=1, N=8, M=6, D=3)
    far = torch.cat([x, torch.full((1, 2, 3), 0.5)], 1)  # padding inside the bounding box
    a = torch.cat([torch.full((1, 8), 1 / 8), torch.zeros(1, 2)], 1)
    padded = sinkhorn_divergence(far, y, x_weights=a, diameter=10.0, backend="torch")
    plain = sinkhorn_divergence(x, y, diameter=10.0, backend="torch")
    torch.testing.assert_close(padded, plain, atol=1e-5, rtol=1e-5)


def test_known_value_two_diracs():
    # one point each: S_eps = |x - y|^2 / 2 exactly (the entropic terms cancel)
    x = torch.tensor([[[0.0, 0.0]]])
    y = torch.tensor([[[3.0, 4.0]]])
    torch.testing.assert_close(sinkhorn_divergence(x, y, backend="torch"), torch.tensor([12.5]))


def test_identical_sets_give_zero_with_finite_gradient():
    x, _ = _clouds(B=2, N=9, M=9, D=3)
    xr = x.clone().requires_grad_()
    v = sinkhorn_divergence(xr, x.clone(), blur=0.05, backend="torch")
    v.sum().backward()
    assert v.abs().max() < 1e-4
    assert torch.isfinite(xr.grad).all()


def test_tiny_blur_stays_finite():
    x, y = _clouds(B=2, N=9, M=8, D=3)
    xr = x.clone().requires_grad_()
    v = sinkhorn_divergence(xr, y, blur=1e-3, scaling=0.5, backend="torch")
    v.sum().backward()
    assert torch.isfinite(v).all() and torch.isfinite(xr.grad).all()


def test_epsilon_schedule_matches_geomloss_formula():
    eps = epsilon_schedule(2, 4.0, 0.5, 0.5)
    # diameter^p, then 16 * 0.25^k for k = 0, 1 (stop before blur^p), then blur^p
    assert eps == pytest.approx([16.0, 16.0, 4.0, 1.0, 0.25])


@pytest.mark.parametrize("p", [1, 2])
@pytest.mark.parametrize("debias", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_triton_matches_reference(p, debias, dtype):
    pytest.importorskip("triton")
    x, y = _clouds(B=2, N=19, M=13, D=5, dtype=dtype)
    up = torch.tensor([0.7, -1.3])
    fn = sinkhorn_divergence if debias else sinkhorn_cost
    kw = dict(p=p, blur=0.1, scaling=0.6)
    want = _value_and_grads(fn, x.float(), y.float(), up, backend="torch", **kw)
    got = _value_and_grads(fn, x, y, up, backend="triton", **kw)
    atol, rtol, gatol = TOL[dtype]
    torch.testing.assert_close(got[0], want[0], atol=atol, rtol=rtol)
    torch.testing.assert_close(got[1], want[1], atol=gatol, rtol=rtol)
    torch.testing.assert_close(got[2], want[2], atol=gatol, rtol=rtol)


def test_triton_non_contiguous_and_weighted():
    pytest.importorskip("triton")
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 6, 17, generator=g).transpose(1, 2)  # (2, 17, 6), non-contiguous
    y = torch.randn(2, 20, 6, generator=g)[:, ::2]          # (2, 10, 6), strided
    assert not x.is_contiguous() and not y.is_contiguous()
    a = torch.softmax(torch.randn(2, 17, generator=g), 1)
    up = torch.tensor([1.5, 0.5])
    kw = dict(x_weights=a, blur=0.2, scaling=0.5, diameter=6.0)
    want = _value_and_grads(sinkhorn_divergence, x, y, up, backend="torch", **kw)
    got = _value_and_grads(sinkhorn_divergence, x, y, up, backend="triton", **kw)
    for w, r in zip(want, got):
        torch.testing.assert_close(r, w, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(x=torch.zeros(2, 3)), "x must have 3 dimensions"),
        (dict(y=torch.zeros(3, 4, 2)), "must agree on B and D"),
        (dict(y=torch.zeros(2, 4, 3, dtype=torch.float64)), "share a dtype"),
        (dict(x=torch.zeros(2, 3, 2, dtype=torch.int64), y=torch.zeros(2, 4, 2, dtype=torch.int64)), "x must have dtype"),
        (dict(p=3), "p must be 1 or 2"),
        (dict(blur=0.0), "blur must be > 0"),
        (dict(scaling=1.0), "scaling must be in"),
        (dict(x_weights=torch.ones(2, 4)), r"x_weights must have shape \(B, N\)"),
        (dict(y_weights=-torch.ones(2, 4)), "y_weights must be non-negative"),
        (dict(backend="cuda"), "backend must be one of"),
    ],
)
def test_bad_inputs_raise_value_error(kwargs, match):
    args = dict(x=torch.zeros(2, 3, 2), y=torch.zeros(2, 4, 2))
    args.update(kwargs)
    x, y = args.pop("x"), args.pop("y")
    with pytest.raises(ValueError, match=match):
        sinkhorn_divergence(x, y, **args)


def test_non_tensor_raises_type_error():
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        sinkhorn_divergence([[[0.0]]], torch.zeros(1, 1, 1))


@pytest.mark.gpu
def test_triton_gpu_matches_reference():
    x, y = (t.cuda() for t in _clouds(B=4, N=100, M=70, D=32))
    up = torch.randn(4, device="cuda")
    want = _value_and_grads(sinkhorn_divergence, x, y, up, backend="torch", blur=0.1)
    got = _value_and_grads(sinkhorn_divergence, x, y, up, backend="triton", blur=0.1)
    for w, r in zip(want, got):
        torch.testing.assert_close(r, w, atol=1e-3, rtol=1e-3)


@pytest.mark.parametrize("debias", [True, False])
def test_weight_gradients_match_geomloss_and_triton(debias):
    geomloss = pytest.importorskip("geomloss")
    x, y = _clouds(B=2, N=7, M=5, D=3)
    a0 = torch.softmax(torch.randn(2, 7, generator=torch.Generator().manual_seed(3)), 1)
    b0 = torch.full((2, 5), 0.2)
    up = torch.tensor([1.0, -2.0])
    loss = geomloss.SamplesLoss("sinkhorn", blur=0.2, diameter=6.0, debias=debias, backend="tensorized")
    fn = sinkhorn_divergence if debias else sinkhorn_cost
    grads = []
    for f in (lambda a, b: loss(a, x, b, y), lambda a, b: fn(x, y, x_weights=a, y_weights=b, blur=0.2, diameter=6.0, backend="torch"),
              lambda a, b: fn(x, y, x_weights=a, y_weights=b, blur=0.2, diameter=6.0, backend="triton")):
        a, b = a0.clone().requires_grad_(), b0.clone().requires_grad_()
        (f(a, b) * up).sum().backward()
        grads.append((a.grad, b.grad))
    for got in grads[1:]:
        torch.testing.assert_close(got[0], grads[0][0], atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(got[1], grads[0][1], atol=1e-4, rtol=1e-4)
