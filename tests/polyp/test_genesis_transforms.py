"""Models-Genesis corruptions: monotone Bézier maps, window-preserving shuffling, painting."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from fastmed.polyp import genesis_transforms as T


@pytest.mark.parametrize("seed", range(5))
def test_bezier_mapping_is_monotone_with_fixed_ends(seed):
    rng = np.random.default_rng(seed)
    x, y = T.bezier_mapping(rng)
    assert np.all(np.diff(x) >= -1e-12) and np.all(np.diff(y) >= -1e-12)
    assert (x[0], y[0], x[-1], y[-1]) == pytest.approx((0, 0, 1, 1))
    x, y = T.bezier_mapping(rng, inverted=True)
    assert np.all(np.diff(y) <= 1e-12) and (y[0], y[-1]) == pytest.approx((1, 0))


def test_bezier_intensity_keeps_or_reverses_pixel_order():
    img = torch.rand(3, 8, 8)
    flat = img.flatten()
    order = flat.argsort()
    up = T.bezier_intensity(img, np.random.default_rng(0), inverted=False).flatten()[order]
    down = T.bezier_intensity(img, np.random.default_rng(0), inverted=True).flatten()[order]
    assert torch.all(up.diff() >= -1e-6) and torch.all(down.diff() <= 1e-6)
    assert up.min() >= 0 and up.max() <= 1


def test_local_shuffle_keeps_each_window_multiset_and_the_rest():
    img = torch.rand(3, 16, 16)
    windows = [(0, 0, 4, 4), (5, 3, 3, 6), (10, 10, 6, 5)]  # disjoint
    out = T.local_pixel_shuffle(img, np.random.default_rng(0), windows=windows)
    inside = torch.zeros(16, 16, dtype=torch.bool)
    for top, left, h, w in windows:
        inside[top:top + h, left:left + w] = True
        a = img[:, top:top + h, left:left + w].reshape(3, -1).T.tolist()
        b = out[:, top:top + h, left:left + w].reshape(3, -1).T.tolist()
        assert sorted(map(tuple, a)) == sorted(map(tuple, b))  # same pixels (RGB triples), permuted
    assert torch.equal(out[:, ~inside], img[:, ~inside])
    assert not torch.equal(out, img)


def test_random_shuffle_windows_stay_small_and_keep_the_image_multiset():
    img = torch.rand(3, 32, 32)
    rng = np.random.default_rng(1)
    wins = T.random_windows(rng, 32, 32, 6, 20)
    assert all(2 <= h <= 6 and 2 <= w <= 6 and t + h <= 32 and l + w <= 32 for t, l, h, w in wins)
    out = T.local_pixel_shuffle(img, rng, max_window=6)
    assert torch.equal(out.flatten().sort().values, img.flatten().sort().values)


def test_painting_and_corrupt():
    img = torch.full((3, 32, 32), 0.5)
    rng = np.random.default_rng(2)
    inp = T.paint(img, rng, outpaint=False)
    outp = T.paint(img, rng, outpaint=True)
    kept_in = (inp == 0.5).all(0).float().mean()
    kept_out = (outp == 0.5).all(0).float().mean()
    assert 0 < kept_out < kept_in < 1  # out-painting keeps one box, in-painting loses a few
    out = T.corrupt(torch.rand(3, 32, 32), rng, bezier_prob=1, shuffle_prob=1, paint_prob=1)
    assert out.shape == (3, 32, 32) and out.min() >= 0 and out.max() <= 1
