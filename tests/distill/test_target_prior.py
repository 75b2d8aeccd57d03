"""The target prior of fastmed/distill/mi_loss.py (properties 4-6 of its docstring) and --prior-target's π."""
from __future__ import annotations

import math

import pytest
import torch

from fastmed.distill import MutualInfoLoss, joint_distribution
from fastmed.distill.prior_target import target_distribution
from fastmed.errors import ConfigError

C = 4


def _logits(batch: int = 32, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    teacher = 3 * torch.randn(batch, C, generator=g)
    student = (teacher + 2 * torch.randn(batch, C, generator=g)).requires_grad_(True)
    return teacher, student


def _student_marginal(teacher, student):
    return joint_distribution(torch.softmax(teacher, 1), torch.softmax(student.detach(), 1)).sum(1)


def test_target_distributions_known_values():
    torch.testing.assert_close(target_distribution("balanced", 4, [], 2.0), torch.full((4,), 0.25))
    torch.testing.assert_close(target_distribution("weak", 4, [1, 3], 3.0), torch.tensor([1.0, 3.0, 1.0, 3.0]) / 8)
    assert target_distribution("none", 4, [1], 3.0) is None


@pytest.mark.parametrize("kind, weak, boost, message", [
    ("weak", [], 2.0, "needs --weak-classes"),
    ("weak", [0], 0.0, "--weak-boost"),
    ("uniform", [], 2.0, "--prior-target must be one of"),
])
def test_target_distribution_errors(kind, weak, boost, message):
    with pytest.raises(ConfigError, match=message):
        target_distribution(kind, 4, weak, boost)


def test_target_kl_known_value():
    """C = 2, prior p = softmax(m) in eval mode: each term by hand."""
    teacher = torch.tensor([[10.0, -10.0], [-10.0, 10.0]])  # one-hot teacher rows
    student = torch.tensor([[10.0, -10.0], [10.0, -10.0]])  # the student says class 0 twice
    target = torch.tensor([0.2, 0.8])
    loss = MutualInfoLoss(2, prior=True, target=target, target_weight=0.5).eval()
    with torch.no_grad():
        loss.prior.mean.copy_(torch.tensor([0.5, 0.5]).log())
    terms = loss.terms(teacher, student)
    # joint [[.5, .5], [0, 0]] symmetrized -> [[.5, .25], [.25, 0]]: P_S = (.75, .25), P_T = (.75, .25)
    p_s = torch.tensor([0.75, 0.25], dtype=torch.float64)
    mi = 0.5 * math.log(0.5 / 0.75**2) + 2 * 0.25 * math.log(0.25 / (0.75 * 0.25))
    prior_kl = float((p_s * (p_s / 0.5).log()).sum())
    target_kl = 0.2 * math.log(0.2 / 0.5) + 0.8 * math.log(0.8 / 0.5)
    assert terms["mi"].item() == pytest.approx(mi, rel=1e-5)
    assert terms["prior_kl"].item() == pytest.approx(prior_kl, rel=1e-5)
    assert terms["target_kl"].item() == pytest.approx(target_kl, rel=1e-5)
    assert terms["loss"].item() == pytest.approx(-mi + prior_kl + 0.5 * target_kl, rel=1e-5)


def test_prior_equal_to_marginal_and_target_gives_iic():
    teacher, student = _logits()
    p_s = _student_marginal(teacher, student)
    loss = MutualInfoLoss(C, prior=True, target=p_s, target_weight=3.0).eval()  # mean starts at log π = log P_S
    iic = MutualInfoLoss(C, prior=False)
    assert loss(teacher, student).item() == pytest.approx(iic(teacher, student).item(), rel=1e-5)


def test_bounded_below_for_random_parameters_and_targets():
    g = torch.Generator().manual_seed(3)
    for seed in range(20):
        teacher, student = _logits(batch=8, seed=seed)
        target = torch.softmax(3 * torch.randn(C, generator=g), 0)
        loss = MutualInfoLoss(C, prior=True, target=target, target_weight=float(torch.rand((), generator=g) * 10)).train()
        with torch.no_grad():
            loss.prior.mean.normal_(0, 5)
            loss.prior.rho.normal_(0, 3)
        terms = loss.terms(teacher, student)
        assert terms["loss"].item() >= -terms["mi"].item() - 1e-6 >= -math.log(C) - 1e-6
        assert terms["target_kl"].item() >= -1e-7


@pytest.mark.parametrize("mu", [0.0, 1.0, 4.0])
def test_stationary_point_of_the_prior_is_the_mixture(mu):
    """Descent on m alone (a = 0) converges to p* = (P_S + μ·π) / (1 + μ)."""
    teacher, student = _logits(seed=1)
    student = student.detach()
    target = torch.tensor([0.1, 0.1, 0.1, 0.7])
    loss = MutualInfoLoss(C, prior=True, target=target, target_weight=mu).eval()
    opt = torch.optim.Adam([loss.prior.mean], lr=0.05)
    for _ in range(1500):
        opt.zero_grad()
        loss(teacher, student).backward()
        opt.step()
    p_star = (_student_marginal(teacher, student) + mu * target) / (1 + mu)
    torch.testing.assert_close(torch.softmax(loss.prior.mean.detach(), 0), p_star, rtol=1e-3, atol=1e-5)


def test_noise_scale_shrinks_with_a_target():
    teacher, student = _logits(seed=2)
    student = student.detach()
    loss = MutualInfoLoss(C, prior=True, prior_init_std=0.5, target=torch.full((C,), 0.25), target_weight=2.0).train()
    opt = torch.optim.Adam(loss.parameters(), lr=0.05)
    std0 = loss.prior.std.mean().item()
    for _ in range(300):
        opt.zero_grad()
        loss(teacher, student).backward()
        opt.step()
    assert loss.prior.std.mean().item() < 0.5 * std0


def test_target_favouring_a_class_raises_its_probability_under_descent():
    """At the prior's stationary point, the gradient on the student's logits of the favoured class is more negative
    with the target than without (descent raises that class on every image)."""
    teacher, student = _logits(seed=4)
    favoured = int(_student_marginal(teacher, student).argmin())  # the student's rarest class
    target = torch.full((C,), 0.1)
    target[favoured] = 1 - 0.1 * (C - 1)
    grads = {}
    for name, tgt, mu in (("none", None, 1.0), ("target", target, 1.0)):
        loss = MutualInfoLoss(C, prior=True, target=tgt, target_weight=mu).eval()
        p_s = _student_marginal(teacher, student)
        p_star = p_s if tgt is None else (p_s + mu * tgt) / (1 + mu)
        with torch.no_grad():
            loss.prior.mean.copy_(p_star.log())
        (g,) = torch.autograd.grad(loss(teacher, student), student)
        grads[name] = g[:, favoured].sum().item()
    assert grads["target"] < grads["none"] - 1e-4


def test_target_must_be_a_distribution():
    with pytest.raises(ValueError, match="distribution"):
        MutualInfoLoss(3, prior=True, target=torch.tensor([0.5, 0.5, 0.5]))
    with pytest.raises(ValueError, match="needs prior"):
        MutualInfoLoss(3, prior=False, target=torch.full((3,), 1 / 3))
