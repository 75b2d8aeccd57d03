"""Heatmap painting, percentile ranks, and the level/patch-size choice for a target resolution."""
from __future__ import annotations

import numpy as np

from fastmed.wsi.heatmap import paint, percentile_rank
from fastmed.wsi.slide_io import level0_mpp, patch_geometry


class FakeSlide:
    """Just what patch_geometry reads from an OpenSlide object."""

    def __init__(self, props, downsamples=(1.0, 4.0, 16.0)):
        self.properties = props
        self.level_downsamples = downsamples

    def get_best_level_for_downsample(self, ds):
        return max(i for i, d in enumerate(self.level_downsamples) if d <= ds) if ds >= 1 else 0


def test_paint_averages_overlaps_and_leaves_nan_elsewhere():
    canvas = paint(np.array([1.0, 0.0]), np.array([[0, 0], [8, 0]]), 16, (10, 14), 0.5)  # 16 level-0 px -> 8 canvas px
    assert canvas.shape == (10, 14)
    assert canvas[0, 0] == 1.0 and canvas[0, 5] == 0.5 and canvas[0, 10] == 0.0  # overlap of the two patches: mean
    assert np.isnan(canvas[0, 12:]).all() and np.isnan(canvas[8:, :]).all()       # no patch there


def paint_reference(values, coords, size0, shape, scale):
    """Patch by patch: the readable definition of ``paint``."""
    total, count = np.zeros(shape), np.zeros(shape)
    side = max(1, int(round(size0 * scale)))
    for (x, y), v in zip(coords, values):
        c0, r0 = int(x * scale), int(y * scale)
        total[r0:r0 + side, c0:c0 + side] += v
        count[r0:r0 + side, c0:c0 + side] += 1
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / count, np.nan)


def test_paint_equals_the_patch_by_patch_reference():
    rng = np.random.default_rng(0)
    for n, size0, scale, shape in ((500, 64, 0.1, (40, 50)), (20, 16, 0.03, (9, 7)), (30, 300, 0.05, (30, 33))):
        coords = rng.integers(0, int(max(shape) / scale), (n, 2))  # overlapping, some past the canvas, some gaps
        values = rng.random(n)
        got, want = paint(values, coords, size0, shape, scale), paint_reference(values, coords, size0, shape, scale)
        assert np.array_equal(np.isnan(got), np.isnan(want)) and np.isnan(want).any() and (~np.isnan(want)).any()
        np.testing.assert_allclose(got[~np.isnan(got)], want[~np.isnan(want)], rtol=1e-5)


def test_positive_patches_geojson_is_valid_json_with_one_square_per_kept_patch():
    import json

    import torch

    from fastmed.wsi.bags import SlideBag
    from fastmed.wsi.heatmap import positive_patches_geojson

    bag = SlideBag("s", torch.zeros(3, 1), np.array([[0, 0], [10, 20], [30, 0]]), torch.zeros(3), 1, {"size0": 10})
    text, n = positive_patches_geojson(bag, np.array([0.9, 0.2, 0.5], np.float32), np.array([0.123456, 0.5, 0.25]), 0.5)
    gj = json.loads(text)
    assert n == 2 and gj["type"] == "FeatureCollection" and len(gj["features"]) == 2
    first = gj["features"][0]
    assert first["geometry"] == {"type": "Polygon", "coordinates": [[[0.0, 0.0], [10.0, 0.0], [10.0, 10.0], [0.0, 10.0], [0.0, 0.0]]]}
    assert first["properties"]["measurements"] == {"probability": 0.9, "attention": 0.12346}
    assert first["properties"]["classification"]["name"] == "Tumor" and first["properties"]["objectType"] == "detection"
    assert gj["features"][1]["geometry"]["coordinates"][0][2] == [40.0, 10.0]
    assert positive_patches_geojson(bag, np.zeros(3), np.zeros(3), 0.5) == ('{"type": "FeatureCollection", "features": []}', 0)


def test_percentile_rank():
    np.testing.assert_allclose(percentile_rank(np.array([3.0, -1.0, 10.0])), [0.5, 0.0, 1.0])
    assert percentile_rank(np.array([2.0])).tolist() == [1.0]


def test_level_choice_for_target_mpp_and_fallbacks():
    s = FakeSlide({"openslide.mpp-x": "0.25"})
    g = patch_geometry(s, 224, 0.5)                   # needs downsample 2: read level 0 at 448 px, resize
    assert (g.level, g.read_size, g.size0, g.mpp_source) == (0, 448, 448, "openslide.mpp-x")
    g = patch_geometry(s, 224, 1.0)                   # downsample 4: level 1 as is
    assert (g.level, g.read_size, g.size0) == (1, 224, 896)
    assert level0_mpp(FakeSlide({"openslide.objective-power": "20"})) == (0.5, "objective-power")
    none = FakeSlide({})
    assert level0_mpp(none) == (None, "unknown")
    g = patch_geometry(none, 128, 0.5)                # no resolution: level 0 as is, recorded as unknown
    assert (g.level, g.read_size, g.mpp, g.mpp_source) == (0, 128, None, "unknown")
    assert patch_geometry(none, 128, 0.5, assume_mpp=0.25).read_size == 256
