"""Known values of the generator losses and the single batched Sinkhorn call."""
from __future__ import annotations

import math

import pytest
import torch

import fastmed.polyp.gan_losses as L
from fastmed.kernels.sinkhorn_reference import sinkhorn_reference


def test_generation_loss_known_value():
    x = torch.zeros(2, 3, 4, 4)
    assert L.generation_loss(x, x + 0.25).item() == pytest.approx(0.25)


def test_prediction_and_adversarial_losses_at_chance():
    logits = torch.zeros(5, 3)
    assert L.prediction_loss(logits, torch.tensor([0, 1, 2, 0, 1])).item() == pytest.approx(math.log(3))
    assert L.adversarial_loss(torch.zeros(4), True).item() == pytest.approx(math.log(2))
    assert L.adversarial_loss(torch.full((4,), 20.0), False).item() == pytest.approx(20.0, rel=1e-3)


def test_discriminator_class_loss_caps_the_negative_term():
    y = torch.tensor([0, 1])
    real = torch.tensor([[10.0, 0, 0], [0, 10.0, 0]])  # confident and right: CE ~ 0
    wrong = torch.tensor([[0, 50.0, 0], [50.0, 0, 0]])  # confidently wrong on generated images: CE ~ 50
    loss = L.discriminator_class_loss(real, y, wrong, y, fake_weight=1.0)
    assert loss.item() == pytest.approx(-math.log(3), abs=1e-3)  # capped at log K, not -50
    fake = wrong.clone().requires_grad_()
    L.discriminator_class_loss(real, y, fake, y).backward()
    assert fake.grad.abs().max() == 0  # beyond the cap nothing pushes


def _sets(sizes, d=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [L.normalize_features(torch.randn(n, d, generator=g)) for n in sizes]


def test_distribution_distances_match_separate_problems_in_one_call(monkeypatch):
    import fastmed.kernels.sinkhorn as sk

    calls = []
    real = sk.sinkhorn_divergence

    def counting(*a, **k):
        calls.append(a[0].shape)
        return real(*a, **k)

    monkeypatch.setattr(L, "sinkhorn_divergence", counting)
    ra, rb = _sets([3, 4, 2], seed=1), _sets([3, 4, 2], seed=2)
    fa, fb = _sets([3, 4, 2], seed=3), _sets([3, 4, 2], seed=4)
    first, second = L.distribution_distances(ra, rb, fa, fb, blur=0.1)
    assert len(calls) == 1 and calls[0][0] == 3 * 3 + 3  # 3K + K(K-1)/2 problems, one call

    def w(u, v):
        a = torch.full((1, len(u)), 1 / len(u))
        b = torch.full((1, len(v)), 1 / len(v))
        return sinkhorn_reference(u[None], v[None], a, b, blur=0.1, scaling=0.5, diameter=2.0)[0]

    for k in range(3):
        want = 2 * w(ra[k], fa[k]) - w(ra[k], rb[k]) - w(fa[k], fb[k])
        assert first[k].item() == pytest.approx(want.item(), abs=1e-5)
    want01 = 2 * w(fa[0], fa[1]) - w(fa[0], fb[0]) - w(fa[1], fb[1])
    assert second[0].item() == pytest.approx(want01.item(), abs=1e-5)


def test_distribution_distances_are_differentiable_and_hinged():
    ra, rb = _sets([4, 4], seed=1), _sets([4, 4], seed=2)
    fa = [t.clone().requires_grad_() for t in _sets([4, 4], seed=3)]
    fb = _sets([4, 4], seed=4)
    first, second = L.distribution_distances(ra, rb, fa, fb, blur=0.1)
    assert first.shape == (2,) and second.shape == (1,)
    loss1, loss2 = L.distribution_losses(first, second, margin=10.0)
    (loss1 + loss2).backward()
    assert all(torch.isfinite(t.grad).all() and t.grad.abs().sum() > 0 for t in fa)
    # with a margin below the distances the hinge is flat: no gradient
    fa2 = [t.detach().clone().requires_grad_() for t in fa]
    first, second = L.distribution_distances(ra, rb, fa2, fb, blur=0.1)
    loss1, loss2 = L.distribution_losses(first, second, margin=float(torch.cat([first, second]).detach().min()) - 1.0)
    (loss1 + loss2).backward()
    assert all(t.grad.abs().max() == 0 for t in fa2)


def test_distribution_distances_reject_mismatched_lists():
    s = _sets([2, 2])
    with pytest.raises(ValueError, match="same number"):
        L.distribution_distances(s, s[:1], s, s)


def test_distribution_distances_triton_matches_torch():
    pytest.importorskip("triton")
    ra, rb = _sets([3, 2, 4], seed=1), _sets([3, 2, 4], seed=2)
    fa = [t.clone().requires_grad_() for t in _sets([3, 2, 4], seed=3)]
    fb = _sets([3, 2, 4], seed=4)
    out = {}
    for backend in ("torch", "triton"):
        first, second = L.distribution_distances(ra, rb, fa, fb, blur=0.1, backend=backend)
        grads = torch.autograd.grad((first.sum() - second.sum()), fa)
        out[backend] = (first.detach(), second.detach(), torch.cat(grads))
    for t, r in zip(out["torch"], out["triton"]):
        torch.testing.assert_close(r, t, atol=1e-4, rtol=1e-4)


def test_diversity_loss_is_a_hinge_on_the_mean_abs_difference():
    a = torch.zeros(2, 3, 4, 4)
    assert L.diversity_loss(a, a + 0.01, 0.03).item() == pytest.approx(0.02, rel=1e-5)
    assert L.diversity_loss(a, a + 0.05, 0.03).item() == 0.0  # diverse enough: nothing pushes
    b = (a + 0.01).requires_grad_()
    L.diversity_loss(a, b, 0.03).backward()
    assert b.grad.sum().item() == pytest.approx(-1.0, rel=1e-5)  # d/db of -mean|a - b| with b > a, summed


def test_detach_self_keeps_the_values_and_stops_the_collapse_gradient():
    """Maximising D = 2W(X,Y) - W(X,X') - W(Y,Y') also rewards shrinking W(Y,Y'); with detach_self the
    second generated half Y' (which enters D only through W(Y,Y')) gets no gradient, and the values are unchanged."""
    ra, rb = _sets([4, 4], seed=1), _sets([4, 4], seed=2)
    fa, fb = _sets([4, 4], seed=3), [s.clone().requires_grad_() for s in _sets([4, 4], seed=4)]
    plain, _ = L.distribution_distances(ra, rb, fa, fb, blur=0.1)
    guarded, _ = L.distribution_distances(ra, rb, fa, fb, blur=0.1, detach_self=True)
    assert torch.allclose(plain, guarded)
    plain.sum().backward(retain_graph=True)
    assert fb[0].grad.abs().max() > 0  # the unguarded D pulls Y' (towards Y: collapse)
    for s in fb:
        s.grad = None
    first, second = L.distribution_distances(ra, rb, fa, fb, blur=0.1, detach_self=True)
    (first.sum() + second.sum()).backward()
    assert all(s.grad is None or s.grad.abs().max() == 0 for s in fb)
