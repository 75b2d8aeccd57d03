"""Known-value tests of the four attention-MIL losses and the ragged top-K selection."""
from __future__ import annotations

import math

import pytest
import torch

from fastmed.wsi.losses import attention_patch_loss, bag_loss, patch_loss, topk_instance_loss, topk_rows


def _bce(p: float, y: float) -> float:
    return -(y * math.log(p) + (1 - y) * math.log(1 - p))


def test_bag_loss_known_value():
    logits = torch.tensor([0.0, math.log(3.0)])  # p = 0.5, 0.75
    got = bag_loss(logits, torch.tensor([1, 0]))
    assert got.item() == pytest.approx((_bce(0.5, 1) + _bce(0.75, 0)) / 2, rel=1e-6)


def test_patch_loss_ignores_unknown_labels():
    logits = torch.tensor([0.0, 100.0, math.log(3.0)])
    labels = torch.tensor([1, -1, 1])
    assert patch_loss(logits, labels).item() == pytest.approx((_bce(0.5, 1) + _bce(0.75, 1)) / 2, rel=1e-6)
    zero = patch_loss(logits.requires_grad_(), torch.full((3,), -1))
    assert zero.item() == 0.0 and zero.requires_grad


def test_topk_rows_per_bag_with_k_clamped():
    scores = torch.tensor([0.1, 0.9, 0.5, 3.0, -1.0, 2.0])
    offsets = torch.tensor([0, 3, 4, 6])  # bags: [0.1, 0.9, 0.5], [3.0], [-1.0, 2.0]
    rows = sorted(topk_rows(scores, offsets, 2).tolist())
    assert rows == [1, 2, 3, 4, 5]  # bag of 1 gives its single patch; k clamped
    assert sorted(topk_rows(scores, offsets, 1).tolist()) == [1, 3, 5]


def test_topk_instance_loss_known_value():
    scores = torch.tensor([5.0, 0.0, 1.0, 9.0])
    offsets = torch.tensor([0, 3, 4])
    inst = torch.tensor([0.0, 7.0, math.log(3.0), 0.0])  # top-2 of bag 0: rows 0 (p .5) and 2 (p .75)
    got = topk_instance_loss(inst, scores, offsets, torch.tensor([1, 0]), k=2)
    want = (_bce(0.5, 1) + _bce(0.75, 1) + _bce(0.5, 0)) / 3
    assert got.item() == pytest.approx(want, rel=1e-6)


def test_attention_patch_loss_known_value_and_gradient():
    s = torch.tensor([0.0, math.log(3.0), 1.0], requires_grad=True)   # sigmoid .5, .75
    logit = torch.tensor([0.0, 0.0, 1.0], requires_grad=True)        # sigmoid .5, .5
    labels = torch.tensor([1, 0, -1])
    got = attention_patch_loss(s, logit, labels)
    assert got.item() == pytest.approx((_bce(0.25, 1) + _bce(0.375, 0)) / 2, rel=1e-5)
    got.backward()
    assert s.grad[2] == 0 and logit.grad[2] == 0 and s.grad[0] < 0 and s.grad[1] > 0


def test_attention_patch_loss_is_finite_at_saturation():
    s = torch.tensor([60.0, -60.0])
    logit = torch.tensor([60.0, -60.0])
    loss = attention_patch_loss(s, logit, torch.tensor([0, 1]))
    assert torch.isfinite(loss) and loss.item() > 10
