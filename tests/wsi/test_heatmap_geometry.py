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
