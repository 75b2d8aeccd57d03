"""The one stratified train/validation split (``fastmed.data.split``), used by class folders and wsi slides."""
from __future__ import annotations

import pytest

from fastmed.data.split import stratified_split


def test_every_class_with_two_items_is_in_both_parts_in_proportion():
    labels = [0] * 10 + [1] * 4 + [2] * 2 + [3]  # class 3 has a single item
    train, val = stratified_split(labels, 0.25, seed=0)
    assert sorted(train + val) == list(range(len(labels)))  # a partition
    count = lambda idx, c: sum(labels[i] == c for i in idx)  # noqa: E731
    assert [count(val, c) for c in range(4)] == [2, 1, 1, 0]  # round(10/4)=2, round(1)=1, max(1, 0.5)=1, a singleton stays in train
    assert [count(train, c) for c in range(4)] == [8, 3, 1, 1]


def test_seeded_and_seed_dependent():
    labels = [i % 2 for i in range(40)]
    assert stratified_split(labels, 0.3, 7) == stratified_split(labels, 0.3, 7)
    assert stratified_split(labels, 0.3, 7)[1] != stratified_split(labels, 0.3, 8)[1]


def test_zero_fraction_means_no_validation_and_bad_fractions_are_refused():
    assert stratified_split([0, 1, 1], 0.0, 0) == ([0, 1, 2], [])
    for bad in (-0.1, 1.0):
        with pytest.raises(ValueError, match="val_fraction"):
            stratified_split([0, 1], bad, 0)

