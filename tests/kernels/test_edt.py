"""distance_transform_edt(_batch) against scipy.ndimage.distance_transform_edt."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from fastmed.kernels import distance_transform_edt, distance_transform_edt_batch


def _random_mask(rng: np.random.Generator, shape: tuple[int, ...], zero_fraction: float) -> np.ndarray:
    return (rng.random(shape) >= zero_fraction).astype(np.uint8)


def _distance_from_indices(indices: np.ndarray, sampling) -> np.ndarray:
    """Euclidean distance from every element to the point ``indices`` names (SciPy's formula)."""
    ndim = indices.shape[0]
    spacing = np.ones(ndim) if sampling is None else np.broadcast_to(np.asarray(sampling, float), (ndim,))
    grid = np.indices(indices.shape[1:])
    sq = sum(((indices[a] - grid[a]).astype(np.float64) * spacing[a]) ** 2 for a in range(ndim))
    return np.sqrt(sq)


def _assert_matches_scipy(mask: np.ndarray, sampling=None) -> None:
    """Distances equal SciPy's; our indices name *a* nearest zero (ties may differ)."""
    ref_d, ref_i = ndi.distance_transform_edt(mask, sampling=sampling, return_indices=True)
    d, i = distance_transform_edt(mask, sampling=sampling, return_indices=True)
    assert d.shape == ref_d.shape and d.dtype == np.float64
    assert i.shape == ref_i.shape and i.dtype == ref_i.dtype
    if sampling is None:
        np.testing.assert_array_equal(d, ref_d)
    else:  # anisotropic near-ties may round differently in the last bit
        np.testing.assert_allclose(d, ref_d, rtol=1e-12, atol=0)
    np.testing.assert_allclose(_distance_from_indices(i, sampling), ref_d, rtol=1e-12, atol=0)
    if (mask == 0).any():
        assert (mask[tuple(i)] == 0).all(), "an index names a non-zero element"
    else:
        np.testing.assert_array_equal(i, ref_i)
    d_only = distance_transform_edt(mask, sampling=sampling)
    np.testing.assert_array_equal(d_only, d)


@pytest.mark.parametrize("zero_fraction", [0.005, 0.1, 0.5, 0.95])
@pytest.mark.parametrize("shape", [(37,), (29, 41), (64, 17), (9, 13, 11)])
def test_random_masks_match_scipy(shape, zero_fraction):
    rng = np.random.default_rng(len(shape) * 100 + int(zero_fraction * 1000))
    _assert_matches_scipy(_random_mask(rng, shape, zero_fraction))


@pytest.mark.parametrize(
    "shape,sampling",
    [((33, 27), (0.7, 1.9)), ((33, 27), 2.5), ((12, 10, 15), (3.0, 0.5, 0.8)), ((50,), (0.3,))],
)
@pytest.mark.parametrize("zero_fraction", [0.02, 0.6])
def test_anisotropic_sampling_matches_scipy(shape, sampling, zero_fraction):
    rng = np.random.default_rng(7)
    _assert_matches_scipy(_random_mask(rng, shape, zero_fraction), sampling)


@pytest.mark.parametrize("shape", [(1, 1), (1, 9), (9, 1), (1, 6, 1), (4, 1, 7), (1, 1, 5), (5, 3, 1), (1,)])
def test_length_one_axes(shape):
    rng = np.random.default_rng(3)
    for zero_fraction in (0.2, 0.7):
        _assert_matches_scipy(_random_mask(rng, shape, zero_fraction), sampling=None)
        _assert_matches_scipy(_random_mask(rng, shape, zero_fraction), sampling=[1.5] * len(shape))


@pytest.mark.parametrize("shape", [(6, 9), (3, 4, 5), (7,), (1, 4)])
def test_no_zero_matches_scipy_virtual_point(shape):
    """No zero at all: SciPy reports (-1, 0, ..., 0); we return exactly the same."""
    mask = np.ones(shape, np.int64)
    sampling = [1.3] * len(shape)
    ref_d, ref_i = ndi.distance_transform_edt(mask, sampling=sampling, return_indices=True)
    d, i = distance_transform_edt(mask, sampling=sampling, return_indices=True)
    np.testing.assert_array_equal(d, ref_d)
    np.testing.assert_array_equal(i, ref_i)
    assert (i[0] == -1).all()


def test_all_zero_gives_zero_distance_and_own_index():
    mask = np.zeros((5, 7), np.uint8)
    d, i = distance_transform_edt(mask, return_indices=True)
    assert (d == 0).all()
    np.testing.assert_array_equal(i, np.indices(mask.shape))


def test_ties_give_exact_distance_and_a_nearest_zero():
    """Symmetric zeros: several nearest zeros per pixel, distances must still be exact."""
    mask = np.ones((9, 9), np.uint8)
    ties = {(0, 4), (8, 4), (4, 0), (4, 8)}
    for point in ties:
        mask[point] = 0
    _assert_matches_scipy(mask)
    d, i = distance_transform_edt(mask, return_indices=True)
    assert d[4, 4] == 4.0
    assert tuple(i[:, 4, 4]) in ties
    grid = np.ones((12, 12), np.uint8)
    grid[::3, ::3] = 0  # a lattice: most pixels tie between 2 or 4 zeros
    _assert_matches_scipy(grid)


def test_known_values():
    mask = np.array([[1, 1, 0, 1, 1, 1]])
    d, i = distance_transform_edt(mask, sampling=[2.0, 3.0], return_indices=True)
    np.testing.assert_array_equal(d, [[6.0, 3.0, 0.0, 3.0, 6.0, 9.0]])
    np.testing.assert_array_equal(i[1], [[2, 2, 2, 2, 2, 2]])
    mask = np.ones((5, 5))
    mask[0, 0] = 0
    np.testing.assert_array_equal(distance_transform_edt(mask)[3, 4], 5.0)


@pytest.mark.parametrize("dtype", [bool, np.uint8, np.int32, np.float32, np.float64])
def test_input_dtypes_and_non_contiguous(dtype):
    rng = np.random.default_rng(11)
    base = (rng.random((40, 30)) > 0.3).astype(dtype)
    for view in (base.T, base[::2, 1::3], np.asfortranarray(base)):
        _assert_matches_scipy(view)


def test_return_flags():
    mask = _random_mask(np.random.default_rng(0), (8, 9), 0.3)
    ref_d, ref_i = ndi.distance_transform_edt(mask, return_indices=True)
    only_i = distance_transform_edt(mask, return_distances=False, return_indices=True)
    assert only_i.shape == ref_i.shape
    np.testing.assert_array_equal(distance_transform_edt(mask), ref_d)
    with pytest.raises(ValueError, match="return_distances"):
        distance_transform_edt(mask, return_distances=False)


def test_empty_array():
    d, i = distance_transform_edt(np.zeros((0, 4)), return_indices=True)
    assert d.shape == (0, 4) and i.shape == (2, 0, 4)


@pytest.mark.parametrize(
    "kwargs,exc,match",
    [
        ({"sampling": [1.0, 2.0, 3.0]}, ValueError, "one value per axis"),
        ({"sampling": [1.0, -2.0]}, ValueError, "positive"),
        ({"sampling": [1.0, float("nan")]}, ValueError, "positive"),
        ({"sampling": "ab"}, TypeError, "sampling"),
    ],
)
def test_bad_sampling(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        distance_transform_edt(np.ones((3, 4)), **kwargs)


def test_bad_input():
    with pytest.raises(ValueError, match="input must be"):
        distance_transform_edt(np.ones((2, 2, 2, 2)))
    with pytest.raises(ValueError, match="input must be"):
        distance_transform_edt(np.float64(1.0))
    with pytest.raises(TypeError, match="dtype"):
        distance_transform_edt(np.array([["a", "b"]]))
    with pytest.raises(ValueError, match="inputs must be"):
        distance_transform_edt_batch(np.ones(5))


@pytest.mark.parametrize("shape,sampling", [((6, 31, 23), None), ((4, 7, 9, 5), (2.0, 1.0, 0.5)), ((3, 1, 8), 1.5)])
def test_batch_matches_per_image_scipy(shape, sampling):
    rng = np.random.default_rng(5)
    masks = _random_mask(rng, shape, 0.1)
    masks[1] = 1  # an image without any zero
    d, i = distance_transform_edt_batch(masks, sampling=sampling, return_indices=True)
    assert d.shape == masks.shape and i.shape == (shape[0], len(shape) - 1, *shape[1:])
    for b in range(shape[0]):
        ref_d, ref_i = ndi.distance_transform_edt(masks[b], sampling=sampling, return_indices=True)
        np.testing.assert_allclose(d[b], ref_d, rtol=1e-12, atol=0)
        np.testing.assert_allclose(_distance_from_indices(i[b], sampling), ref_d, rtol=1e-12, atol=0)
        if b == 1:
            np.testing.assert_array_equal(i[b], ref_i)
        else:
            assert (masks[b][tuple(i[b])] == 0).all()
    np.testing.assert_array_equal(distance_transform_edt_batch(masks, sampling=sampling), d)


def test_batch_accepts_list_of_arrays():
    rng = np.random.default_rng(2)
    masks = [_random_mask(rng, (10, 12), 0.2) for _ in range(3)]
    d = distance_transform_edt_batch(masks)
    for b, m in enumerate(masks):
        np.testing.assert_array_equal(d[b], ndi.distance_transform_edt(m))


@pytest.mark.parametrize("shape,sampling", [((5, 40, 33), None), ((3, 9, 14, 11), (1.0, 2.0, 0.7)), ((2, 70), None)])
def test_parallel_path_matches_scipy(monkeypatch, shape, sampling):
    """Small inputs run on one thread; force the multi-threaded kernels and compare too."""
    import fastmed.kernels.edt as edt_module

    monkeypatch.setattr(edt_module, "PARALLEL_MIN_ELEMENTS", 0)
    rng = np.random.default_rng(9)
    masks = _random_mask(rng, shape, 0.05)
    d, i = distance_transform_edt_batch(masks, sampling=sampling, return_indices=True)
    for b in range(shape[0]):
        ref_d = ndi.distance_transform_edt(masks[b], sampling=sampling)
        np.testing.assert_allclose(d[b], ref_d, rtol=1e-12, atol=0)
        np.testing.assert_allclose(_distance_from_indices(i[b], sampling), ref_d, rtol=1e-12, atol=0)
    np.testing.assert_array_equal(distance_transform_edt_batch(masks, sampling=sampling), d)
    _assert_matches_scipy(masks[0], sampling)
