"""GeoJSON contours, rasterization and the contour training dataset."""
from __future__ import annotations


import numpy as np
import pytest
import torch

from fastmed.data.images import read_mask
from fastmed.errors import DataError
from fastmed.seg.contour.contours import parse_contours, rasterize_object, rasterize_objects, read_contours
from fastmed.seg.contour.correlation import CorrelationParams
from fastmed.seg.contour.dataset import ContourSegDataset, contour_labels
from fastmed.seg.data import scan_seg_split

SQUARE = [[2, 2], [8, 2], [8, 8], [2, 8], [2, 2]]


def _feature(geometry: dict, name: str = "polyp") -> dict:
    return {"type": "Feature", "geometry": geometry, "properties": {"classification": {"name": name}}}


def test_parse_accepts_qupath_shapes_and_skips_non_polygons():
    poly = {"type": "Polygon", "coordinates": [SQUARE]}
    multi = {"type": "MultiPolygon", "coordinates": [[SQUARE], [[[10, 10], [12, 10], [12, 12]]]]}
    point = {"type": "Point", "coordinates": [1, 1]}
    fc = {"type": "FeatureCollection", "features": [_feature(poly), _feature(multi, "x"), _feature(point)]}
    parsed = parse_contours(fc)
    assert len(parsed.objects) == 2 and parsed.skipped == 1 and parsed.names == ["polyp", "x"]
    assert len(parsed.objects[1]) == 2 and parsed.objects[0][0][0].shape == (5, 2)
    assert len(parse_contours([_feature(poly)]).objects) == 1
    assert len(parse_contours(_feature(poly)).objects) == 1
    assert len(parse_contours(poly).objects) == 1
    with pytest.raises(DataError, match="at least 3"):
        parse_contours({"type": "Polygon", "coordinates": [[[0, 0], [1, 1]]]})
    with pytest.raises(DataError, match="FeatureCollection"):
        parse_contours({"foo": 1})


def test_read_contours_bad_file(tmp_path):
    bad = tmp_path / "bad.geojson"
    bad.write_text("{not json")
    with pytest.raises(DataError, match="cannot read contours"):
        read_contours(bad)


def test_rasterize_square_with_hole_and_scaling():
    obj = parse_contours({"type": "Polygon", "coordinates": [SQUARE, [[4, 4], [6, 4], [6, 6], [4, 6]]]}).objects[0]
    contour, filled = rasterize_object(obj, (12, 12))
    # PIL convention of the synthetic generator: vertices shifted by -0.5, outline included,
    # so the square [2, 8] covers pixels 1..7 and the hole [4, 6] clears pixels 3..5
    assert filled.sum() == 7 * 7 - 3 * 3
    assert filled[1, 1] and filled[7, 7] and not filled[0, 0] and not filled[8, 8] and not filled[4, 4]
    assert contour[1, 5] and contour[5, 1] and not contour[2, 2]
    assert contour[4, 3] and not contour[4, 4]  # the hole's boundary is a contour too
    assert (contour & ~filled).sum() == 8  # hole outline pixels lie in the cleared hole
    contour2, filled2 = rasterize_object(obj, (6, 6), original=(12, 12))
    assert filled2.sum() < filled.sum() and filled2[0, 0] and not filled2[5, 5]
    c, f = rasterize_objects([], (5, 7))
    assert c.shape == (0, 5, 7) and f.shape == (0, 5, 7)


def test_filled_polygons_equal_synthetic_masks(synth_root):
    """The synthetic masks are rasterized from the same polygons: the fill must agree exactly."""
    scan = scan_seg_split(synth_root / "seg" / "train")
    for item in scan.items[:8]:
        lab = contour_labels(item, 64, CorrelationParams())
        np.testing.assert_array_equal(lab.filled.any(0), read_mask(item.mask) > 0)
        assert len(lab.contours) == int(item.meta["n_objects"])
        # PIL's line and polygon-outline rasterizers differ by a pixel here and there
        assert (lab.contours & lab.filled).sum() >= 0.9 * lab.contours.sum()


def test_dataset_items_shapes_and_skips(synth_root, tmp_path):
    items = scan_seg_split(synth_root / "seg" / "train").items[:5]
    broken = tmp_path / "broken.geojson"
    broken.write_text("[}")
    items[1].contours = broken
    items[2].contours = None
    ds = ContourSegDataset(items, 32, CorrelationParams())
    assert len(ds) == 3 and [s[0] for s in ds.skipped] == [items[1].id, items[2].id]
    x = ds[0]
    assert x["image"].shape == (3, 32, 32) and x["mask"].shape == (1, 32, 32) and x["corr"].shape == (1, 32, 32)
    assert 0 <= float(x["corr"].min()) and float(x["corr"].max()) <= 1 and float(x["corr"].max()) > 0.99
    assert set(torch.unique(x["mask"]).tolist()) <= {0.0, 1.0}
    with pytest.raises(DataError, match="no usable contour"):
        ContourSegDataset(items[1:3], 32, CorrelationParams())


def test_augmentation_moves_image_mask_and_map_together(synth_root):
    items = scan_seg_split(synth_root / "seg" / "train").items[:2]
    plain = ContourSegDataset(items, 32, CorrelationParams())
    aug = ContourSegDataset(items, 32, CorrelationParams(), augment=True)
    for _ in range(6):
        a, p = aug[0], plain[0]
        matches = []
        for k in range(4):
            for flip in (False, True):
                def t(x):
                    y = torch.rot90(x, k, (1, 2))
                    return y.flip(2) if flip else y
                matches.append(all(torch.equal(t(p[key]), a[key]) for key in ("image", "mask", "corr")))
        assert any(matches)
