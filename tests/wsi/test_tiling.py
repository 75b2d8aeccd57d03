"""Tissue detection, the three tiling modes, coverage and annotation labels on known geometry."""
from __future__ import annotations

import json

import numpy as np
import pytest

from fastmed.wsi.annotations import positive_regions, rasterize, read_annotations
from fastmed.wsi.tiling import coverage, grid_coords
from fastmed.wsi.tissue import TissueParams, otsu_threshold, saturation, tissue_mask


def _image_with_tissue(h=64, w=96):
    img = np.full((h, w, 3), 240, np.uint8)  # white glass
    img[10:40, 20:70] = (220, 120, 180)       # pink tissue block
    img[24:26, 40:42] = 240                    # a tiny hole inside (filled)
    img[55, 5] = (200, 60, 150)                # a speck (dropped)
    return img


def test_tissue_mask_finds_block_fills_holes_drops_specks():
    mask = tissue_mask(_image_with_tissue(), TissueParams(median=3, close=3, min_area=20, max_hole_area=10))
    assert mask[10:40, 20:70].mean() > 0.95
    assert mask[24:26, 40:42].all()           # hole filled
    assert not mask[50:, :15].any()           # speck dropped
    assert mask.sum() < 1.1 * 30 * 50


def test_otsu_and_saturation():
    assert saturation(np.array([[[255, 255, 255], [255, 0, 0]]], np.uint8)).tolist() == [[0, 255]]
    values = np.array([10] * 50 + [200] * 50, np.uint8)
    assert 10 < otsu_threshold(values) <= 200


def test_three_tiling_modes():
    # slide 100 x 70 (w x h) level-0 px, tiles 32, tissue everywhere in a 2x2-px-per-mask-pixel mask
    tissue = np.zeros((35, 50), bool)
    tissue[10:30, 20:45] = True  # level-0 box x 40..90, y 20..60
    pad = grid_coords(100, 70, 32, 32, "pad")
    drop = grid_coords(100, 70, 32, 32, "drop")
    bbox = grid_coords(100, 70, 32, 32, "bbox", tissue, 2.0)
    assert len(pad) == 4 * 3 and len(drop) == 3 * 2
    assert (drop[:, 0] + 32 <= 100).all() and (drop[:, 1] + 32 <= 70).all()
    assert bbox[:, 0].min() == 40 and bbox[:, 1].min() == 20 and len(bbox) == 2 * 2
    with pytest.raises(ValueError, match="mode"):
        grid_coords(100, 70, 32, 32, "tile")


def test_coverage_known_fractions():
    mask = np.zeros((8, 8), bool)
    mask[:, :4] = True                         # left half, mask pixel = 4 level-0 px
    coords = np.array([[0, 0], [8, 0], [16, 0], [28, 28]])
    frac = coverage(mask, coords, 16, 4.0)
    np.testing.assert_allclose(frac, [1.0, 0.5, 0.0, 0.0])
    np.testing.assert_allclose(coverage(mask, np.array([[24, 24]]), 16, 4.0), [0.0])  # half outside the raster


def test_geojson_and_asap_labels(tmp_path):
    gj = {"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"classification": {"name": "Tumor"}},
         "geometry": {"type": "Polygon", "coordinates": [[[0, 0], [32, 0], [32, 32], [0, 32], [0, 0]],
                                                          [[0, 0], [16, 0], [16, 16], [0, 16], [0, 0]]]}},
        {"type": "Feature", "properties": {"classification": {"name": "Exclusion"}},
         "geometry": {"type": "Polygon", "coordinates": [[[64, 0], [96, 0], [96, 32], [64, 32], [64, 0]]]}},
    ]}
    (tmp_path / "a.geojson").write_text(json.dumps(gj))
    xml = ('<?xml version="1.0"?><ASAP_Annotations><Annotations>'
           '<Annotation Name="A" Type="Polygon" PartOfGroup="_0"><Coordinates>'
           '<Coordinate Order="0" X="0" Y="0"/><Coordinate Order="1" X="32" Y="0"/>'
           '<Coordinate Order="2" X="32" Y="32"/><Coordinate Order="3" X="0" Y="32"/>'
           '</Coordinates></Annotation>'
           '<Annotation Name="B" Type="Polygon" PartOfGroup="_2"><Coordinates>'
           '<Coordinate Order="0" X="64" Y="0"/><Coordinate Order="1" X="96" Y="0"/><Coordinate Order="2" X="96" Y="32"/>'
           '</Coordinates></Annotation></Annotations></ASAP_Annotations>')
    (tmp_path / "b.xml").write_text(xml)
    coords = np.array([[0, 0], [64, 0], [32, 32]])
    geo = positive_regions(read_annotations(tmp_path / "a.geojson"))
    asap = positive_regions(read_annotations(tmp_path / "b.xml"))
    assert [r.name for r in geo] == ["Tumor"] and [r.name for r in asap] == ["_0"]
    f_geo = coverage(rasterize(geo, 128, 64, 1.0), coords, 32, 1.0)
    f_asap = coverage(rasterize(asap, 128, 64, 1.0), coords, 32, 1.0)
    assert f_geo[0] == pytest.approx(0.75, abs=0.08) and f_geo[1] == 0 and f_geo[2] < 0.01  # hole cut out; exclusion ignored
    assert f_asap[0] == pytest.approx(1.0, abs=0.08) and f_asap[1] == 0


def test_unreadable_annotations_raise(tmp_path):
    from fastmed.errors import DataError

    (tmp_path / "x.geojson").write_text("{not json")
    with pytest.raises(DataError, match="x.geojson"):
        read_annotations(tmp_path / "x.geojson")
