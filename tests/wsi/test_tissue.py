"""Default tissue detector (optical density above glass): real IHC, synthetic stains and artefacts, pen marks.

Cases come from ``fastmed.data.synthetic.slides.tissue_case`` at mask scale (4x
downsampled). "Clearly stained tissue" of the real IHC section (scikit-image's
``ihc.png``, DAB + pale hematoxylin, on glass of colour (238, 238, 240)): pixels
whose optical density summed over R, G, B is >= 0.1 above that glass, after a
3 x 3 opening; glass = the canvas >= 2 px away from the section. Synthetic cases
use the renderer's ground-truth tissue; their glass is >= 2 px from tissue and
includes the pen / dust / bubble pixels on it (and, for ``shading``, dimmed glass). Coverage = detected fraction of
tissue (>= 95 %), glass kept = detected fraction of glass (<= 5 %).
"""
from __future__ import annotations

import numpy as np
import pytest

from fastmed.data.synthetic.slides import INKS, tissue_case
from fastmed.wsi.tissue import TissueParams, TissueResult, detect_tissue, estimate_glass, low_tissue_warning


def _scores(case, params=TissueParams()):
    mask = detect_tissue(case.rgb, params).mask
    return mask[case.tissue].mean(), mask[case.glass].mean(), mask


def test_real_ihc_section_on_glass_is_found_whole():
    case = tissue_case("ihc_real")
    assert case.tissue.sum() > 5000 and case.glass.sum() > 20000  # the metric has something to measure
    cover, glass, _ = _scores(case)
    assert cover >= 0.95, f"coverage of clearly stained tissue {cover:.3f}"
    assert glass <= 0.05, f"glass kept {glass:.3f}"


@pytest.mark.parametrize("name", ["he", "pale", "ihc", "pen", "dust_bubbles"])
def test_synthetic_variants_meet_coverage_and_glass(name):
    case = tissue_case(name)
    if name in ("pen", "dust_bubbles"):
        assert case.artefact.sum() > 20  # the artefacts really lie on the glass being scored
    cover, glass, _ = _scores(case)
    assert cover >= 0.95, f"{name}: coverage {cover:.3f}"
    assert glass <= 0.05, f"{name}: glass kept {glass:.3f}"


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_uneven_illumination_is_not_tissue(seed):
    # pale stain under light falling off 6 % across the slide: a single glass colour would call the dim glass tissue
    case = tissue_case("shading", seed)
    cover, glass, _ = _scores(case)
    assert cover >= 0.95 and glass <= 0.05, f"coverage {cover:.3f}, glass kept {glass:.3f}"


def test_pen_marks_are_excluded():
    case = tissue_case("pen")
    _, _, mask = _scores(case)
    assert mask[case.artefact].mean() <= 0.05
    # each ink alone on clean glass: nothing is tissue
    yy, xx = np.mgrid[0:96, 0:96]
    for ink in INKS.values():
        img = np.full((96, 96, 3), 238.0)
        stroke = np.abs(yy - 48 - 10 * np.sin(xx / 12)) < 6
        img[stroke] *= ink
        assert not detect_tissue(np.round(img).astype(np.uint8)).mask.any()


def test_glass_colour_is_the_brightest_mode_and_padding_is_ignored():
    img = np.zeros((60, 90, 3), np.uint8)
    img[:, :40] = (226, 229, 233)       # glass (a slightly blue scanner white)
    img[:, 40:75] = (215, 140, 185)     # tissue
    img[:, 75:] = 255                   # white padding outside the scanned area
    glass, noise = estimate_glass(img)
    np.testing.assert_allclose(glass, [226, 229, 233])
    assert noise <= 1.0
    only_tissue = np.full((40, 40, 3), (230, 170, 205), np.uint8)  # tissue fills the view: no glass mode
    np.testing.assert_allclose(estimate_glass(only_tissue)[0], [255, 255, 255])
    assert detect_tissue(only_tissue).mask.all()


def test_white_padding_outside_the_scan_is_not_glass_nor_tissue():
    # OpenSlide returns 255 outside the scanned area; it must not pull the glass model up (real glass then looks dark)
    case = tissue_case("he")
    img = case.rgb.copy()
    w = img.shape[1]
    img[:, : w // 3] = 255
    mask = detect_tissue(img).mask
    scanned = np.zeros(mask.shape, bool)
    scanned[:, w // 3:] = True
    assert not mask[:, : w // 3].any()
    assert mask[case.glass & scanned].mean() <= 0.05 and mask[case.tissue & scanned].mean() >= 0.95


def test_saturation_method_keeps_the_previous_default():
    case = tissue_case("ihc_real")
    old = detect_tissue(case.rgb, TissueParams(method="saturation"))
    assert old.threshold >= 8 and old.mask[case.tissue].mean() < 0.9  # the failure the od method fixes
    fixed = detect_tissue(case.rgb, TissueParams(method="saturation", threshold=9))
    assert fixed.threshold == 9 and fixed.mask.sum() > old.mask.sum()


def test_low_tissue_warning_only_when_most_non_glass_is_missed():
    mask = np.zeros((10, 10), bool)
    mask[:3] = True  # 30 % tissue
    assert low_tissue_warning(TissueResult(mask, 0.04, (240, 240, 240), 0.8)) is not None
    assert low_tissue_warning(TissueResult(mask, 0.04, (240, 240, 240), 0.4)) is None   # mostly glass: plausible
    mask[:7] = True
    assert low_tissue_warning(TissueResult(mask, 0.04, (240, 240, 240), 0.8)) is None   # 70 % of 80 %
