"""Known values of the joint distribution, the mutual information and the KD term; argument checks."""
from __future__ import annotations

import math

import pytest
import torch

from fastmed.distill import joint_distribution, kd_loss, mutual_information, MutualInfoLoss


def test_joint_hand_computed():
    s = torch.tensor([[1.0, 0.0], [0.5, 0.5]])
    t = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    # Σ_b s_bᵀ t_b = [[1, .5], [0, .5]] → symmetrized [[1, .25], [.25, .5]] → /2
    expected = torch.tensor([[0.5, 0.125], [0.125, 0.25]])
    joint = joint_distribution(t, s)
    torch.testing.assert_close(joint, expected)
    # Σ P log(P / (P_i P_j)) with marginals (0.625, 0.375), computed by hand in float64
    assert mutual_information(joint).item() == pytest.approx(0.1101189103360598, rel=1e-5)


def test_joint_is_symmetric_and_normalized_for_random_rows():
    s = torch.softmax(torch.randn(7, 5), 1)
    t = torch.softmax(torch.randn(7, 5), 1)
    joint = joint_distribution(t, s)
    assert joint.shape == (5, 5)
    torch.testing.assert_close(joint, joint.t())
    assert joint.sum().item() == pytest.approx(1.0, abs=1e-6)
    assert (joint >= 0).all()


def test_mutual_information_extremes():
    c = 4
    one_hot = torch.eye(c)
    assert mutual_information(joint_distribution(one_hot, one_hot)).item() == pytest.approx(math.log(c), rel=1e-6)
    uniform = torch.full((c, c), 1.0 / c)
    assert mutual_information(joint_distribution(one_hot, uniform)).item() == pytest.approx(0.0, abs=1e-7)


def test_iic_loss_of_agreeing_confident_outputs_is_minus_log_c():
    logits = 50 * torch.eye(3).repeat(4, 1)  # (12, 3), every class 4 times, confident
    loss = MutualInfoLoss(3, prior=False)(logits, logits)
    assert loss.item() == pytest.approx(-math.log(3), rel=1e-5)


def test_kd_known_value_and_temperature_scaling():
    teacher = torch.tensor([[0.0, 0.0]])               # softmax (0.5, 0.5)
    student = torch.tensor([[math.log(3.0), 0.0]])     # softmax (0.75, 0.25)
    expected = 0.5 * math.log(0.5 / 0.75) + 0.5 * math.log(0.5 / 0.25)
    assert kd_loss(teacher, student, temperature=1.0).item() == pytest.approx(expected, rel=1e-6)
    # logits scaled by T at temperature T give the same KL, times T²
    assert kd_loss(2 * teacher, 2 * student, temperature=2.0).item() == pytest.approx(4 * expected, rel=1e-5)
    assert kd_loss(student, student).item() == pytest.approx(0.0, abs=1e-7)


@pytest.mark.parametrize("bad, match", [
    (torch.ones(3), "shape"),
    (torch.tensor([[0.5, 0.6]]), "probabilities"),
    (torch.tensor([[1.5, -0.5]]), "probabilities"),
    (torch.tensor([[1, 0]]), "floating"),
])
def test_joint_rejects_bad_rows(bad, match):
    with pytest.raises((ValueError, TypeError), match=match):
        joint_distribution(bad, torch.tensor([[0.5, 0.5]]))


def test_shape_mismatches_are_named():
    with pytest.raises(ValueError, match="p_teacher and p_student"):
        joint_distribution(torch.full((2, 3), 1 / 3), torch.full((3, 3), 1 / 3))
    with pytest.raises(ValueError, match="student_logits"):
        MutualInfoLoss(3)(torch.zeros(2, 3), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="temperature"):
        kd_loss(torch.zeros(2, 3), torch.zeros(2, 3), temperature=0)
    with pytest.raises(ValueError, match="num_classes"):
        MutualInfoLoss(1)
