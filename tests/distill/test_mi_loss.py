"""The properties of the mutual-information loss with a learnable prior (see fastmed/distill/mi_loss.py):
(1)-(3) the fitted prior, (4)-(6) the target prior of --prior-target (and its π)."""
from __future__ import annotations

import math

import pytest
import torch

from fastmed.distill import GaussianPrior, MutualInfoLoss, joint_distribution
from fastmed.distill.objective import DistillObjective
from fastmed.distill.data import UNLABELLED
from fastmed.distill.prior_target import target_distribution
from fastmed.errors import ConfigError

C = 5


def _logits(batch: int = 16, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    teacher = 3 * torch.randn(batch, C, generator=g)
    student = (teacher + 2 * torch.randn(batch, C, generator=g)).requires_grad_(True)
    return teacher, student


def _student_marginal(teacher, student):
    joint = joint_distribution(torch.softmax(teacher, 1), torch.softmax(student.detach(), 1))
    return joint.sum(1)


def _naive(loss: MutualInfoLoss, teacher, student):
    """The damaged substitution −Σ P_ij log(P_ij / (p_i P_T,j)) = −I − KL(P_S ‖ p)."""
    terms = loss.terms(teacher, student)
    return -terms["mi"] - terms["prior_kl"]


# (1) reduces to IIC's −I(S;T) when the prior equals the student marginal -----------------------------
def test_prior_equal_to_student_marginal_gives_iic_value_and_gradient():
    teacher, student = _logits()
    loss = MutualInfoLoss(C, prior=True).eval()  # eval: a = 0, p = softmax(m)
    with torch.no_grad():
        loss.prior.mean.copy_(_student_marginal(teacher, student).log())
    ours = loss(teacher, student)
    (grad_ours,) = torch.autograd.grad(ours, student)
    iic = MutualInfoLoss(C, prior=False)(teacher, student)
    (grad_iic,) = torch.autograd.grad(iic, student)
    assert ours.item() == pytest.approx(iic.item(), abs=1e-6)
    torch.testing.assert_close(grad_ours, grad_iic, atol=1e-6, rtol=1e-4)


def test_any_other_prior_costs_more_than_iic():
    teacher, student = _logits()
    iic = MutualInfoLoss(C, prior=False)(teacher, student).item()
    loss = MutualInfoLoss(C, prior=True, prior_init_std=0.5).train()
    with torch.no_grad():
        loss.prior.mean.normal_()
    assert loss(teacher, student).item() > iic + 1e-4


# (2) cannot run away through the prior -------------------------------------------------------------------
def _optimize_prior(objective, steps: int = 300):
    """Descend on the prior's m and ρ only (fixed network outputs); return the trace of (loss, -I, std)."""
    teacher, student = _logits(seed=1)
    student = student.detach()
    loss = MutualInfoLoss(C, prior=True, prior_init_std=0.5).train()
    opt = torch.optim.Adam(loss.parameters(), lr=0.05)
    trace = []
    for _ in range(steps):
        value = objective(loss, teacher, student)
        trace.append((value.item(), -loss.terms(teacher, student)["mi"].item(), loss.prior.std.mean().item()))
        opt.zero_grad()
        value.backward()
        opt.step()
    return trace


def test_fitted_prior_stays_bounded_and_noise_shrinks():
    trace = _optimize_prior(lambda loss, t, s: loss(t, s))
    assert all(value >= minus_mi - 1e-5 for value, minus_mi, _ in trace)  # L = −I + KL ≥ −I
    assert trace[-1][0] - trace[-1][1] < 0.05 * (trace[0][0] - trace[0][1])  # KL fitted away
    assert trace[-1][2] < trace[0][2]  # d shrinks


def test_naive_substitution_runs_away():
    trace = _optimize_prior(_naive)
    final, minus_mi, std = trace[-1]
    assert final < minus_mi - 3.0 < -math.log(C)  # far below IIC's optimum: unbounded below
    assert std > trace[0][2]  # d grows


def test_sign_of_expected_gradient_wrt_noise_scale():
    """∂E_a[L]/∂ρ ≥ 0 for the fitted prior, ≤ 0 for the naive one (Monte-Carlo over a)."""
    teacher, student = _logits(seed=2)
    student = student.detach()
    grads = {}
    for name, objective in (("fit", lambda loss, t, s: loss(t, s)), ("naive", _naive)):
        torch.manual_seed(0)
        loss = MutualInfoLoss(C, prior=True, prior_init_std=1.0).train()
        total = sum(objective(loss, teacher, student) for _ in range(400)) / 400
        total.backward()
        grads[name] = loss.prior.rho.grad.sum().item()
    assert grads["fit"] > 0 > grads["naive"]


def test_lower_bound_minus_log_c_for_random_parameters():
    loss = MutualInfoLoss(C, prior=True).train()
    for seed in range(20):
        teacher, student = _logits(batch=8, seed=seed)
        with torch.no_grad():
            loss.prior.mean.normal_(0, 5)
            loss.prior.rho.normal_(0, 3)
        assert loss(teacher, student).item() >= -math.log(C) - 1e-6


# (3) the prior is a valid distribution ------------------------------------------------------------------
def test_prior_is_a_distribution_for_extreme_parameters():
    prior = GaussianPrior(3).train()
    with torch.no_grad():
        prior.mean.copy_(torch.tensor([1000.0, -1000.0, 0.0]))
        prior.rho.copy_(torch.tensor([50.0, -50.0, 0.0]))
    assert (prior.std >= 0).all()
    for _ in range(20):
        p = prior()
        assert torch.isfinite(p).all() and (p >= 0).all()
        assert p.sum().item() == pytest.approx(1.0, abs=1e-6)
    loss = MutualInfoLoss(3, prior=True).train()
    loss.prior.load_state_dict(prior.state_dict())
    teacher, student = torch.randn(4, 3), torch.randn(4, 3, requires_grad=True)
    value = loss(teacher, student)
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(student.grad).all()


def test_prior_is_resampled_in_training_and_fixed_in_eval():
    prior = GaussianPrior(4, init_std=0.5)
    assert not torch.equal(prior.train()(), prior())
    torch.testing.assert_close(prior.eval()(), torch.full((4,), 0.25))


# the teacher is frozen ---------------------------------------------------------------------------------
def test_no_gradient_reaches_the_teacher():
    teacher_net, student_net = torch.nn.Linear(6, C), torch.nn.Linear(6, C)
    x = torch.randn(8, 6)
    objective = DistillObjective(C, ce_weight=1.0, kd_weight=1.0, mi_weight=1.0)
    out = objective(student_net(x), torch.randint(0, C, (8,)), teacher_net(x))
    out["loss"].backward()
    assert teacher_net.weight.grad is None and teacher_net.bias.grad is None
    assert student_net.weight.grad is not None and student_net.weight.grad.abs().sum() > 0
    assert objective.mi.prior.mean.grad is not None


def test_unlabelled_images_are_left_out_of_the_cross_entropy():
    objective = DistillObjective(C, ce_weight=1.0)
    logits = torch.randn(4, C)
    labels = torch.tensor([1, UNLABELLED, 3, UNLABELLED])
    expected = torch.nn.functional.cross_entropy(logits[[0, 2]], labels[[0, 2]])
    assert objective(logits, labels)["loss"].item() == pytest.approx(expected.item(), rel=1e-6)
    none = objective(logits, torch.full((4,), UNLABELLED))
    assert none["loss"].item() == 0.0 and "ce" not in none


# (4)-(6) a target prior: bounded, stationary at (P_S + μπ)/(1 + μ), favouring the target's classes ----------
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
    target = torch.tensor([0.1, 0.1, 0.1, 0.1, 0.6])
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
    loss = MutualInfoLoss(C, prior=True, prior_init_std=0.5, target=torch.full((C,), 1 / C), target_weight=2.0).train()
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
