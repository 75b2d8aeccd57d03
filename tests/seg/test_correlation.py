"""Correlation maps: known values, fusion, edge cases, agreement with SciPy's EDT."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from fastmed.seg.contour.correlation import CorrelationParams, correlation_maps


def _single_pixel_contour(shape=(15, 17), at=(7, 8)) -> np.ndarray:
    c = np.zeros((1, *shape), bool)
    c[0][at] = True
    return c


def test_distance_mode_known_values():
    contours = _single_pixel_contour()
    img = np.zeros((15, 17, 3), np.uint8)
    maps = correlation_maps(img, contours, CorrelationParams(mode="distance", sigma_dist=2.0))
    assert maps.per_object.shape == (1, 15, 17) and maps.fused.shape == (15, 17)
    assert maps.distance[0, 7, 11] == 3.0 and maps.distance[0, 10, 12] == 5.0
    np.testing.assert_allclose(maps.per_object[0, 10, 12], np.exp(-25 / 8), rtol=1e-6)
    assert maps.per_object[0, 7, 8] == 1.0
    assert (maps.nearest[0, :, 3, 2] == [7, 8]).all()


def test_intensity_mode_known_values():
    """Left half dark, right half bright, contour on a dark pixel: bright pixels correlate exp(-1/(2 s^2))."""
    img = np.zeros((9, 10, 3), np.float32)
    img[:, 5:] = 1.0
    contours = _single_pixel_contour((9, 10), (4, 2))
    maps = correlation_maps(img, contours, CorrelationParams(mode="intensity", sigma_int=0.5))
    np.testing.assert_allclose(maps.per_object[0, :, :5], 1.0)
    np.testing.assert_allclose(maps.per_object[0, :, 5:], np.exp(-1 / (2 * 0.25)), rtol=1e-6)


def test_both_is_product_of_the_two():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)
    contours = rng.random((2, 20, 24)) > 0.97
    kw = {"sigma_dist": 2.5, "sigma_int": 0.3}
    both = correlation_maps(img, contours, CorrelationParams(mode="both", **kw)).per_object
    dist = correlation_maps(img, contours, CorrelationParams(mode="distance", **kw)).per_object
    inten = correlation_maps(img, contours, CorrelationParams(mode="intensity", **kw)).per_object
    np.testing.assert_allclose(both, dist * inten, rtol=1e-5, atol=1e-7)


def test_distances_equal_scipy_and_fusions():
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, (32, 30, 3), dtype=np.uint8)
    contours = np.zeros((3, 32, 30), bool)
    contours[0, 5, 3:9] = contours[1, 20:26, 22] = contours[2, 28, 5] = True
    params = CorrelationParams(mode="both", sigma_dist=4.0, sigma_int=0.2, fusion="max")
    maps = correlation_maps(img, contours, params)
    for k in range(3):
        np.testing.assert_allclose(maps.distance[k], ndi.distance_transform_edt(~contours[k]), rtol=1e-6)
    np.testing.assert_allclose(maps.distance_min, ndi.distance_transform_edt(~contours.any(0)), rtol=1e-6)
    np.testing.assert_array_equal(maps.fused, maps.per_object.max(0))
    nearest = correlation_maps(img, contours, CorrelationParams(mode="both", sigma_dist=4.0, sigma_int=0.2, fusion="nearest"))
    k_star = maps.distance.argmin(0)
    np.testing.assert_array_equal(nearest.fused, np.take_along_axis(maps.per_object, k_star[None], 0)[0])
    assert not np.array_equal(nearest.fused, maps.fused)


def test_no_objects_and_empty_object():
    img = np.zeros((8, 8, 3), np.uint8)
    none = correlation_maps(img, np.zeros((0, 8, 8), bool))
    assert none.per_object.shape == (0, 8, 8) and (none.fused == 0).all() and np.isinf(none.distance_min).all()
    contours = np.zeros((2, 8, 8), bool)
    contours[0, 3, 3] = True  # object 1 has no pixel (e.g. too small after resizing)
    maps = correlation_maps(img, contours)
    assert (maps.per_object[1] == 0).all() and np.isinf(maps.distance[1]).all()
    np.testing.assert_array_equal(maps.fused, maps.per_object[0])


@pytest.mark.parametrize("kwargs", [{"mode": "foo"}, {"fusion": "mean"}, {"sigma_dist": 0.0}, {"sigma_int": -1.0}])
def test_bad_params(kwargs):
    with pytest.raises(ValueError):
        CorrelationParams(**kwargs)


def test_bad_shapes():
    with pytest.raises(ValueError, match="contours"):
        correlation_maps(np.zeros((8, 8, 3)), np.zeros((8, 8), bool))
    with pytest.raises(ValueError, match="image"):
        correlation_maps(np.zeros((8, 9, 3)), np.zeros((1, 8, 8), bool))
