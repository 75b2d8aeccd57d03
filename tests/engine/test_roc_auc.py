"""The package's one ROC AUC (``fastmed.engine.metrics.roc_auc``) against hand counts and scikit-learn."""
from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from fastmed.engine.metrics import roc_auc


@pytest.mark.parametrize("y, score, pairs_won, n_pairs", [
    # positives {0.35, 0.8} vs negatives {0.1, 0.4}: 0.35 beats 0.1; 0.8 beats both -> 3 of 4 pairs
    ([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8], 3, 4),
    # one tie between classes counts one half: 2 pairs, (1 + 0.5)
    ([1, 0, 1], [0.5, 0.5, 0.9], 1.5, 2),
    # every score equal: every pair a tie
    ([0, 1, 0, 1, 1], [2.0] * 5, 0.5 * 6, 6),
    # perfectly reversed
    ([1, 1, 0], [0.0, 0.1, 0.2], 0, 2),
    # labels other than 0/1: nonzero is positive
    ([0, 2, 0, 5], [3, 4, 1, 2], 3, 4),  # 4 beats 3, 1; 2 beats 1, loses to 3
])
def test_hand_counted_pairs(y, score, pairs_won, n_pairs):
    assert roc_auc(y, score) == pytest.approx(pairs_won / n_pairs, rel=1e-12)


def test_one_class_is_nan_not_a_number():
    assert math.isnan(roc_auc([1, 1, 1], [0.2, 0.3, 0.1]))
    assert math.isnan(roc_auc([0, 0], [0.2, 0.3]))
    assert math.isnan(roc_auc([], []))


def test_length_mismatch_is_an_error():
    with pytest.raises(ValueError, match="2 labels but 3 scores"):
        roc_auc([0, 1], [0.1, 0.2, 0.3])


@pytest.mark.parametrize("seed", range(5))
def test_matches_sklearn_with_many_ties(seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 300)
    score = np.round(rng.normal(y * 0.7, 1.0), 1)  # rounding makes many ties, within and across classes
    assert roc_auc(y, score) == pytest.approx(roc_auc_score(y, score), rel=1e-12)
