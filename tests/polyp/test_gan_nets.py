"""The class-conditioned generator and discriminator."""
from __future__ import annotations

import pytest
import torch

from fastmed.nets.registry import create_model


def test_identity_start_is_the_identity_and_the_default_start_is_not():
    x = torch.rand(2, 3, 16, 16) * 1.8 - 0.9
    y, noise = torch.tensor([0, 1]), torch.randn(2, 1, 16, 16)
    baseline = create_model("cond_generator", num_classes=3, base=8, n_res=1, identity_start=True)
    assert torch.allclose(baseline(x, y, noise), x, atol=1e-5)  # the baseline generator starts as the identity
    assert len(baseline.noise_in) == 0  # and takes its noise as an input plane only
    G = create_model("cond_generator", num_classes=3, base=8, n_res=2)
    a, b = G(x, y, noise), G(x, y, torch.randn(2, 1, 16, 16))
    assert len(G.noise_in) == 2
    # a small random start: the images change (seeds 0-4: mean |a - x| 0.01-0.03 on [-1, 1]), and so does the noise
    assert 1e-3 < (a - x).abs().mean() < 0.2 and (a - b).abs().mean() > 1e-3


def test_judge_cnn_logits_and_features():
    J = create_model("judge_cnn", num_classes=3, base=4)
    x = torch.randn(5, 3, 32, 32)
    assert J(x).shape == (5, 3) and J.features(x).shape == (5, 16)


def test_generator_shapes_range_and_conditioning():
    G = create_model("cond_generator", num_classes=3, base=8, n_res=1, identity_start=True)
    x = torch.rand(2, 3, 16, 16) * 1.8 - 0.9
    torch.nn.init.normal_(G.out.weight, std=0.1)  # as after some training
    noise = torch.randn(2, 1, 16, 16)
    a = G(x, torch.tensor([0, 0]), noise)
    b = G(x, torch.tensor([2, 2]), noise)
    assert a.shape == x.shape and a.abs().max() <= 1
    assert (a - b).abs().max() > 0  # the class changes the image
    assert (G(x, torch.tensor([0, 0]), torch.randn(2, 1, 16, 16)) - a).abs().max() > 0  # so does the noise


def test_generator_rejects_sides_not_divisible_by_four():
    G = create_model("cond_generator", num_classes=2, base=8, n_res=0)
    with pytest.raises(ValueError, match="divisible by 4"):
        G(torch.zeros(1, 3, 18, 18), torch.tensor([0]))


def test_discriminator_heads():
    D = create_model("cond_discriminator", num_classes=4, base=8)
    adv, cls = D(torch.zeros(3, 3, 32, 32))
    assert adv.shape == (3,) and cls.shape == (3, 4)
