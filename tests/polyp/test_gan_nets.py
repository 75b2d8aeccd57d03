"""The class-conditioned generator and discriminator."""
from __future__ import annotations

import pytest
import torch

from fastmed.nets.registry import create_model


def test_generator_shapes_range_and_conditioning():
    G = create_model("cond_generator", num_classes=3, base=8, n_res=1)
    x = torch.rand(2, 3, 16, 16) * 1.8 - 0.9
    assert torch.allclose(G(x, torch.tensor([0, 1])), x, atol=1e-5)  # a new generator is the identity
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
