"""Known values of the discriminator's differentiable augmentations (``fastmed.polyp.gen_diff_augment``)."""
from __future__ import annotations

import pytest
import torch

from fastmed.polyp import gen_diff_augment as A


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_color_on_a_flat_image_is_a_brightness_shift_of_at_most_half():
    """A flat grey image has no saturation or contrast to scale: colour only shifts it, by the drawn brightness."""
    x = torch.full((64, 3, 4, 4), 0.2)
    out = A.color(x, _gen())
    shift = out - x
    assert torch.allclose(shift, shift[:, :1, :1, :1].expand_as(shift), atol=1e-6)  # one shift per image
    assert shift.abs().max() <= 0.5 + 1e-6 and shift.std() > 0.2  # uniform on [-0.5, 0.5]: sd 0.29


def test_translation_moves_a_pixel_by_at_most_an_eighth_and_pads_with_zeros():
    x = torch.zeros(32, 1, 16, 16)
    x[:, :, 8, 8] = 1.0
    out = A.translation(x, _gen())
    assert out.sum(dim=(1, 2, 3)).eq(1).all()  # 16 * 0.125 = 2 px: the pixel never leaves the image
    pos = out.flatten(1).argmax(1)
    dy, dx = pos // 16 - 8, pos % 16 - 8
    assert dy.abs().max() <= 2 and dx.abs().max() <= 2 and (dy != 0).any() and (dx != 0).any()
    border = A.translation(torch.ones(32, 1, 16, 16), _gen(1))
    assert (border == 0).any() and set(border.unique().tolist()) <= {0.0, 1.0}


def test_cutout_zeroes_one_square_of_half_the_side():
    out = A.cutout(torch.ones(200, 3, 16, 16), _gen())
    zeros = (out[:, 0] == 0).flatten(1).sum(1)
    assert zeros.max() == 64 and zeros.min() >= 16  # 8 x 8 inside the image; clipped to at least 4 x 4 at a corner
    assert (out[:, 0] == out[:, 2]).all()  # the same hole in every channel


def test_policy_parsing_and_gradient_through_the_augmentation():
    assert A.parse_policy("color, cutout") == ["color", "cutout"] and A.parse_policy("off") == [] == A.parse_policy("")
    with pytest.raises(ValueError, match="unknown augmentation"):
        A.parse_policy("color,blur")
    x = torch.rand(4, 3, 16, 16, requires_grad=True)
    out = A.diff_augment(x, A.parse_policy("translation,cutout"), _gen())
    out.sum().backward()
    # every output pixel that is a moved input pixel has gradient 1 on it; holes and padding have none
    assert set(x.grad.unique().tolist()) <= {0.0, 1.0} and x.grad.sum() == (out != 0).sum()
