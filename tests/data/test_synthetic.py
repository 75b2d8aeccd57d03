"""Synthetic data opens with the real readers and its ground truth is consistent."""
from __future__ import annotations

import csv
import hashlib
import json

import numpy as np
import pytest

from fastmed.data.images import read_image, read_mask
from fastmed.data.synthetic import make_synthetic
from fastmed.data.synthetic.polyp import CLASSES
from fastmed.data.synthetic.seg import rasterize_polygon


def _digest(folder) -> str:
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*.png")):
        h.update(p.read_bytes())
    return h.hexdigest()


def test_polyp_layout_and_determinism(synth_root, tmp_path):
    for split in ("train", "val", "test", "test_shift"):
        for cls in CLASSES:
            files = sorted((synth_root / "polyp" / split / cls).glob("*.png"))
            assert files, f"no images in {split}/{cls}"
            assert read_image(files[0]).shape == (64, 64, 3)
    again = make_synthetic(tmp_path, seed=0, size="tiny", parts=["polyp"])
    assert _digest(again / "polyp") == _digest(synth_root / "polyp")
    other = make_synthetic(tmp_path / "s1", seed=1, size="tiny", parts=["polyp"])
    assert _digest(other / "polyp") != _digest(synth_root / "polyp")


def test_shifted_split_changes_colour_statistics(synth_root):
    def mean_rgb(split):
        return np.mean([read_image(p).reshape(-1, 3).mean(0) for p in (synth_root / "polyp" / split).rglob("*.png")], axis=0)

    spread = lambda split: np.std([read_image(p).reshape(-1, 3).mean(0) for p in (synth_root / "polyp" / split).rglob("*.png")], axis=0)  # noqa: E731
    assert (spread("test_shift") > 1.5 * spread("test")).all()
    assert np.abs(mean_rgb("test") - mean_rgb("train")).max() < 15


def test_seg_masks_agree_with_contours_and_meta(synth_root):
    split = synth_root / "seg" / "train"
    rows = list(csv.DictReader(open(split / "meta.csv", encoding="utf-8")))
    assert rows and {r["rough_wrong"] for r in rows} <= {"0", "1"}
    assert any(int(r["n_objects"]) > 1 for r in rows), "some images must hold several objects"
    for r in rows:
        mask = read_mask(split / "masks" / f"{r['id']}.png") > 0
        inst = read_mask(split / "instances" / f"{r['id']}.png")
        gj = json.loads((split / "contours" / f"{r['id']}.geojson").read_text())
        assert gj["type"] == "FeatureCollection" and len(gj["features"]) == int(r["n_objects"]) == inst.max()
        filled = np.zeros_like(mask)
        for feat in gj["features"]:
            ring = np.array(feat["geometry"]["coordinates"][0])
            filled |= rasterize_polygon(ring[:-1], mask.shape[0])
        iou = (filled & mask).sum() / (filled | mask).sum()
        assert iou > 0.99
        assert ((inst > 0) == mask).all()
        rough = read_mask(split / "rough_masks" / f"{r['id']}.png") > 0
        overlap = (rough & mask).sum() / mask.sum()
        if r["rough_wrong"] == "0":
            assert overlap > 0.9, "a right rough mask covers its object"


def test_slides_open_with_openslide(synth_root):
    openslide = pytest.importorskip("openslide")
    labels = list(csv.DictReader(open(synth_root / "slides" / "labels.csv", encoding="utf-8")))
    assert {r["label"] for r in labels} == {"normal", "tumor"}
    for r in labels:
        slide = openslide.OpenSlide(str(synth_root / "slides" / f"{r['slide_id']}.tiff"))
        assert slide.level_count == 3
        assert [round(d) for d in slide.level_downsamples] == [1, 4, 16]
        assert float(slide.properties["openslide.mpp-x"]) == pytest.approx(0.5, rel=1e-3)
        region = np.asarray(slide.read_region((0, 0), 1, (64, 64)).convert("RGB"))
        assert region.shape == (64, 64, 3)
        gj = json.loads((synth_root / "slides" / "annotations" / f"{r['slide_id']}.geojson").read_text())
        assert (len(gj["features"]) > 0) == (r["label"] == "tumor")
        slide.close()


def test_bad_size_is_a_clear_error(tmp_path):
    from fastmed.errors import ConfigError

    with pytest.raises(ConfigError, match="size must be one of"):
        make_synthetic(tmp_path, size="huge")
