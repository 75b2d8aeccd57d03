"""``fastmed wsi tile`` tissue report: fraction, threshold, mask PNG, and the low-tissue warning, on a real IHC slide."""
from __future__ import annotations

import json

import numpy as np
import pytest

from fastmed.cli import main
from fastmed.data.synthetic.slides import CASE_GLASS, read_ihc_section, write_pyramid_tiff

TILE = ["--patch-size", "64", "--mask-downsample", "4", "--workers", "1", "--progress", "false"]


@pytest.fixture(scope="module")
def ihc_slide(tmp_path_factory):
    """scikit-image's IHC section (512 px) on a 576 px glass slide: the thumbnail is mostly tissue."""
    folder = tmp_path_factory.mktemp("ihc_slide")
    img = np.broadcast_to(CASE_GLASS.astype(np.uint8), (576, 576, 3)).copy()
    img[32:544, 32:544] = read_ihc_section()
    write_pyramid_tiff(folder / "ihc.tiff", img, mpp=0.5)
    return folder


def _row(out):
    return json.loads((out / "tiling.json").read_text())["slides"][0]


def test_default_report_has_fraction_threshold_and_no_warning(ihc_slide, tmp_path, capsys):
    out = tmp_path / "tiles"
    assert main(["wsi", "tile", "--slides", str(ihc_slide), "--out", str(out), *TILE]) == 0
    row = _row(out)
    assert 0.6 < row["tissue_fraction"] < 0.95  # the section is 79 % of the slide, minus its lumens
    assert 0.03 < row["tissue_threshold"] < 0.1 and row["tissue_warning"] is None
    assert (out / "masks" / "ihc.png").stat().st_size > 0
    assert "warning" not in capsys.readouterr().out


@pytest.mark.parametrize("extra", [[], ["--tissue-threshold", "120"]])
def test_warning_when_the_mask_misses_much_of_a_stained_thumbnail(ihc_slide, tmp_path, capsys, extra):
    # the previous default (saturation + Otsu) drops the pale stroma: the case of issue 16, now warned about
    out = tmp_path / "tiles"
    assert main(["wsi", "tile", "--slides", str(ihc_slide), "--out", str(out), "--tissue-method", "saturation", *extra, *TILE]) == 0
    row = _row(out)
    assert row["tissue_fraction"] < 0.5 and row["tissue_threshold"] == (120 if extra else pytest.approx(53, rel=0.2))
    assert "darker than glass" in row["tissue_warning"]
    assert "warning: ihc: tissue mask covers" in capsys.readouterr().out


def test_threshold_out_of_range_for_the_method_is_a_one_line_error(ihc_slide, tmp_path, capsys):
    args = ["wsi", "tile", "--slides", str(ihc_slide), "--out", str(tmp_path / "t"), "--tissue-threshold", "20", *TILE]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "--tissue-threshold must be in [0, 3] for --tissue-method od" in err and len(err.strip().splitlines()) == 1
