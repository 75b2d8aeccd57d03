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


@pytest.fixture(scope="module")
def imprecise_sets(tmp_path_factory):
    """The same 10 images with exact outlines and with outlines simplified to 16 vertices, jittered by 3 px."""
    from fastmed.data.synthetic.seg import make_seg_dataset

    root = tmp_path_factory.mktemp("imprecise")
    kw = {"counts": {"train": 10}, "seed": 5, "size": 48, "max_objects": 1, "touching": 0.5}
    return (make_seg_dataset(root / "exact", **kw) / "train",
            make_seg_dataset(root / "jitter", contour_vertices=16, contour_jitter=3.0, **kw) / "train")


def test_imprecise_contours_keep_exact_masks_and_touching_pairs(imprecise_sets):
    from fastmed.data.synthetic.seg import surface_distance
    from scipy import ndimage

    exact, jitter = (scan_seg_split(p) for p in imprecise_sets)
    errors = []
    for e, j in zip(exact.items, jitter.items):
        np.testing.assert_array_equal(read_mask(e.image), read_mask(j.image))
        np.testing.assert_array_equal(read_mask(e.mask), read_mask(j.mask))
        filled_exact = contour_labels(e, 48, CorrelationParams()).filled.any(0)
        filled_jitter = contour_labels(j, 48, CorrelationParams()).filled.any(0)
        # exact outlines fill the mask (up to a pixel whose centre the 3-decimal GeoJSON rounding moved across)
        assert (filled_exact != (read_mask(e.mask) > 0)).sum() <= 2
        assert float(j.meta["contour_error_px"]) == pytest.approx(surface_distance(filled_jitter, read_mask(j.mask) > 0), abs=2e-3)
        assert e.meta["contour_error_px"] == "0.0"
        errors.append(float(j.meta["contour_error_px"]))
        inst = read_mask(e.instances)
        if e.meta["touching"] == "1":
            assert e.meta["n_objects"] == "2"
            # the two objects share a border: object 1 dilated by one pixel reaches object 2
            assert (ndimage.binary_dilation(inst == 1) & (inst == 2)).any()
    assert 0.8 < np.mean(errors) < 3.0  # 3 px of radial vertex jitter (clipped at 7.5 px) moved the outlines
    assert 2 <= sum(it.meta["touching"] == "1" for it in exact.items) <= 8


def test_dataset_scores_against_exact_masks_and_pads_objects(imprecise_sets):
    items = scan_seg_split(imprecise_sets[1]).items
    given = ContourSegDataset(items, 48, CorrelationParams(), object_slots=3)
    exact = ContourSegDataset(items, 48, CorrelationParams(), exact_masks=True)
    for i, item in enumerate(items):
        np.testing.assert_array_equal(exact.masks[i, 0].numpy() > 0, read_mask(item.mask) > 0)
    assert not torch.equal(given.masks, exact.masks)  # the jittered outlines fill other pixels
    touching = [i for i, it in enumerate(items) if it.meta["touching"] == "1"]
    assert [i for i, _ in exact.touching] == touching and not given.touching
    assert set(np.unique(exact.touching[0][1])) == {0, 1, 2}
    x = given[touching[0]]
    assert x["obj_masks"].shape == (3, 48, 48) and x["obj_valid"].tolist() == [True, True, False]
    assert float(x["obj_masks"][2].abs().sum()) == 0 and float(x["obj_corrs"][1].max()) > 0.99
    torch.testing.assert_close(x["obj_masks"].amax(0), x["mask"][0])  # the objects' union is the mask


def test_synth_cli_writes_imprecise_outlines_and_touching_pairs(tmp_path):
    from fastmed.cli import main

    base = ["synth", "--size", "tiny", "--parts", "seg", "--image-size", "48"]
    assert main(base + ["--out", str(tmp_path / "exact")]) == 0
    assert main(base + ["--out", str(tmp_path / "rough"), "--contour-vertices", "16", "--contour-jitter", "3",
                        "--touching", "0.5"]) == 0
    exact, rough = (scan_seg_split(tmp_path / name / "seg" / "train").items for name in ("exact", "rough"))
    assert all(it.meta["contour_error_px"] == "0.0" and it.meta["touching"] == "0" for it in exact)
    assert np.mean([float(it.meta["contour_error_px"]) for it in rough]) > 0.8
    assert any(it.meta["touching"] == "1" for it in rough)
    marker = (tmp_path / "rough" / "seg" / ".complete").read_text()
    assert "contour_jitter=3.0" in marker and "touching=0.5" in marker  # other options write other data
    for bad in (["--contour-vertices", "2"], ["--touching", "1.5"], ["--contour-jitter", "-1"]):
        assert main(base + ["--out", str(tmp_path / "bad")] + bad) == 2, bad
