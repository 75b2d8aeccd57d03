"""``make_slides(artefacts=("debris",))``: dark debris on the tissue of both classes, with its ground truth per slide."""
from __future__ import annotations

import csv

import numpy as np
import tifffile
from PIL import Image

from fastmed.data.synthetic.slides import make_slides
from fastmed.wsi.patch_file import read_patch_file
from fastmed.wsi.tile import TileOptions, tile_folder


def test_debris_lies_on_tissue_of_both_classes_and_its_mask_is_written(tmp_path):
    out = make_slides(tmp_path / "slides", 2, seed=1, height=256, width=384, artefacts=("debris",))
    labels = [r["label"] for r in csv.DictReader(open(out / "labels.csv"))]
    assert labels == ["tumor", "normal"]
    tiles = tmp_path / "tiles"
    tile_folder(out, tiles, TileOptions(patch_size=64, mpp=0.5, mask_downsample=16), workers=1, show_progress=False)
    for sid in ("slide_000", "slide_001"):
        mask = np.asarray(Image.open(out / "artefacts" / f"{sid}.png")) > 0
        rgb = tifffile.imread(out / f"{sid}.tiff", level=0).astype(float)
        assert mask.shape == rgb.shape[:2] and 0.001 < mask.mean() < 0.2
        assert rgb[mask].mean() < 0.6 * rgb[~mask].mean()  # the mask is where the dark debris is
        covered = np.zeros_like(mask)  # the tissue detector keeps the patches with debris
        for x, y in read_patch_file(tiles / f"{sid}.h5").coords:
            covered[y:y + 64, x:x + 64] = True
        assert covered[mask].mean() > 0.9
    plain = make_slides(tmp_path / "plain", 1, seed=1, height=256, width=384)
    assert not (plain / "artefacts").exists()
