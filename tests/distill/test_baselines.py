"""Known values of the pieces behind the distill baselines: L2 feature matching, Hungarian matching, recalls, the cut."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from fastmed.distill.data import class_indices, cut_classes, load_digits_images
from fastmed.distill.features import FeatureMatchLoss, FeatureTap
from fastmed.distill.metrics import class_recalls, confusion, hungarian_matching
from fastmed.errors import ConfigError
from fastmed.nets.classifiers import feature_extractor
from fastmed.nets.registry import create_model


def test_feature_match_known_values():
    loss = FeatureMatchLoss(2, 3)
    teacher = torch.tensor([[1.0, 2.0, 2.0], [0.0, 0.0, 3.0]])  # mean squared norm (9 + 9) / 2 = 9
    student = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    with torch.no_grad():
        loss.projection.weight.zero_()
        loss.projection.bias.zero_()
    assert loss(teacher, student).item() == pytest.approx(1.0, rel=1e-6)  # projects to zero
    with torch.no_grad():
        loss.projection.weight.copy_(torch.tensor([[1.0, 0.0], [2.0, 0.0], [2.0, 3.0]]))
    assert loss(teacher, student).item() == pytest.approx(0.0, abs=1e-7)  # a perfect match
    with torch.no_grad():
        loss.projection.bias.fill_(1.0)  # every element off by 1: 3 per row / 9
    assert loss(teacher, student).item() == pytest.approx(3 / 9, rel=1e-6)


def test_feature_match_gradient_reaches_student_and_projection_only():
    loss = FeatureMatchLoss(4, 6)
    teacher = torch.randn(5, 6, requires_grad=True)
    student = torch.randn(5, 4, requires_grad=True)
    loss(teacher, student).backward()
    assert teacher.grad is None and student.grad.abs().sum() > 0 and loss.projection.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("arch", ["resnet18", "mobilenet_v3_small"])
def test_feature_tap_reads_the_pooled_features(arch):
    model = create_model(arch, num_classes=3).eval()
    tap = FeatureTap(model)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        model(x)
        body, dim = feature_extractor(model)
        expected = body(x)
    assert tap.dim == dim and tap.features.shape == (2, dim)
    torch.testing.assert_close(tap.features, expected)


def test_confusion_and_recalls_known_values():
    pred = torch.tensor([0, 0, 1, 2, 2, 2])
    labels = torch.tensor([0, 1, 1, 2, 2, 0])
    assert confusion(pred, labels, 3).tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 2]]
    torch.testing.assert_close(class_recalls(pred, labels, 3), torch.tensor([0.5, 0.5, 1.0], dtype=torch.float64))
    assert torch.isnan(class_recalls(pred, labels, 4)[3])  # no image of class 3


def test_hungarian_matching_undoes_a_relabelling():
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 5, (200,), generator=g)
    perm = torch.tensor([3, 0, 4, 1, 2])  # output = perm[class]
    pred = perm[labels]
    noisy = pred.clone()
    noisy[:30] = torch.randint(0, 5, (30,), generator=g)
    class_of = hungarian_matching(noisy, labels, 5)
    assert torch.equal(class_of[perm], torch.arange(5))
    # the best one-to-one map beats the identity by construction
    assert (class_of[noisy] == labels).float().mean() >= (noisy == labels).float().mean()


def test_cut_classes_keeps_a_fixed_fraction_of_the_named_classes():
    labels = load_digits_images().labels("train")
    keep = cut_classes(labels, [7, 9], 0.1)
    kept = np.bincount(np.asarray(labels)[keep], minlength=10)
    full = np.bincount(labels, minlength=10)
    assert [kept[c] for c in (7, 9)] == [round(0.1 * full[c]) for c in (7, 9)]
    assert all(kept[c] == full[c] for c in range(10) if c not in (7, 9))
    assert keep == sorted(keep) and keep == cut_classes(labels, [7, 9], 0.1)  # ordered, the same every call
    assert len(cut_classes([0, 0, 1], [1], 0.01)) == 3  # at least one image of a cut class stays
    with pytest.raises(ConfigError, match="weak-train-fraction"):
        cut_classes(labels, [7], 0.0)


def test_class_indices():
    assert class_indices("weak-classes", "normal, adenoma", ["adenoma", "hyperplastic", "normal"]) == [0, 2]
    assert class_indices("weak-classes", None, ["a", "b"]) == []
    with pytest.raises(ConfigError, match="no class 'x'"):
        class_indices("weak-classes", "x", ["a", "b"])
