import math

import numpy as np
import pytest

from fastmed.seg.metrics import dice_score, hd95, iou_score, segmentation_metrics


def _square(y0, y1, x0, x1, size=20):
    m = np.zeros((size, size), np.uint8)
    m[y0:y1, x0:x1] = 1
    return m


def test_known_values():
    a, b = _square(2, 6, 2, 6), _square(3, 7, 2, 6)  # 16 px each, overlap 12
    assert dice_score(a, b) == pytest.approx(24 / 32)
    assert iou_score(a, b) == pytest.approx(12 / 20)
    # shifted by one row: every surface distance is 0 or 1
    assert hd95(a, b) == pytest.approx(1.0)
    far = _square(2, 6, 12, 16)  # 10 px to the right
    assert hd95(a, far) == pytest.approx(10.0)


def test_empty_conventions():
    z, a = np.zeros((8, 8)), _square(1, 3, 1, 3, 8)
    assert dice_score(z, z) == 1.0 and iou_score(z, z) == 1.0 and hd95(z, z) == 0.0
    assert dice_score(z, a) == 0.0 and math.isnan(hd95(z, a))


def test_batched_and_shape_errors():
    a, b = _square(2, 6, 2, 6), _square(3, 7, 2, 6)
    out = segmentation_metrics(np.stack([a, a])[:, None], np.stack([a, b])[:, None])
    assert out["dice"] == pytest.approx((1 + 0.75) / 2)
    assert out["hd95"] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="same shape"):
        dice_score(a, a[:5])
