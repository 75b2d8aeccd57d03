"""Per-object slots of the contour method (matching, losses: known values) and the separation error."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fastmed.seg.contour.losses import contour_loss
from fastmed.seg.contour.objects import match_slots, object_losses, pair_costs, slot_instances
from fastmed.seg.contour.separation import best_iou, mask_components, pair_separated, ridge_split, separation_error


def _two_objects(h: int = 4, w: int = 6) -> torch.Tensor:
    """``(2, h, w)``: object A the left half, object B the right half."""
    masks = torch.zeros(2, h, w)
    masks[0, :, : w // 2] = 1
    masks[1, :, w // 2:] = 1
    return masks


def test_pair_costs_known_value():
    # zero logits: p = 0.5 on 4 pixels, target all ones: soft Dice 1 - (2*2 + 1) / (2 + 4 + 1) = 2/7;
    # correlation 0.5 vs 0.25 everywhere: MSE 1/16
    cost = pair_costs(torch.zeros(1, 2, 2), torch.zeros(1, 2, 2), torch.ones(1, 2, 2), torch.full((1, 2, 2), 0.25))
    assert cost.shape == (1, 1)
    assert math.isclose(float(cost[0, 0]), 2 / 7 + 1 / 16, rel_tol=1e-6)


def test_match_slots_finds_the_permutation():
    masks = _two_objects()
    corrs = masks * 0.8
    # slot 0 predicts object B, slot 1 object A
    logits = 10 * (2 * masks.flip(0) - 1)
    assert sorted(match_slots(logits, logits, masks, corrs)) == [(0, 1), (1, 0)]
    assert match_slots(logits, logits, masks[:0], corrs[:0]) == []
    # more objects than slots: one slot, matched to the object it predicts
    assert match_slots(logits[:1], logits[:1], masks, corrs) == [(0, 1)]


def test_object_losses_known_values_and_unmatched_slots():
    # K = 2 zero-logit slots, one object (all ones, correlation 0.25) on 2x2 pixels:
    # matched slot: BCE log 2 + soft Dice 2/7; unmatched slot: BCE log 2 only (no Dice of an empty target);
    # correlation: matched (0.5 - 0.25)^2 = 1/16, unmatched 0.5^2 = 1/4
    objects = torch.zeros(1, 4, 2, 2)
    masks = torch.zeros(1, 2, 2, 2)
    masks[0, 0] = 1
    corrs = masks * 0.25
    valid = torch.tensor([[True, False]])
    out = object_losses(objects, masks, corrs, valid)
    assert math.isclose(float(out["obj_mask"]), math.log(2) + 1 / 7, rel_tol=1e-6)
    assert math.isclose(float(out["obj_corr"]), (1 / 16 + 1 / 4) / 2, rel_tol=1e-6)
    with pytest.raises(ValueError, match="2K"):
        object_losses(torch.zeros(1, 3, 2, 2), masks, corrs, valid)


def test_object_losses_do_not_depend_on_object_order_and_reward_the_right_slots():
    masks = _two_objects()[None]
    corrs = masks * 0.8
    valid = torch.ones(1, 2, dtype=torch.bool)
    torch.manual_seed(0)
    objects = torch.randn(1, 4, 4, 6)
    a = object_losses(objects, masks, corrs, valid)
    b = object_losses(objects, masks.flip(1), corrs.flip(1), valid)
    assert torch.allclose(a["obj_mask"], b["obj_mask"]) and torch.allclose(a["obj_corr"], b["obj_corr"])
    # slots that predict the two objects (in either order) cost less than random ones
    good = torch.cat([10 * (2 * masks.flip(1) - 1), torch.logit(corrs.flip(1).clamp(0.01, 0.99))], 1)
    g = object_losses(good, masks, corrs, valid)
    assert float(g["obj_mask"]) < 0.1 * float(a["obj_mask"]) and float(g["obj_corr"]) < 0.01 * float(a["obj_corr"])


def test_contour_loss_adds_weighted_object_terms():
    torch.manual_seed(1)
    out = {"mask": torch.randn(1, 1, 4, 6), "corr": torch.randn(1, 1, 4, 6), "objects": torch.randn(1, 4, 4, 6, requires_grad=True)}
    masks = _two_objects()[None]
    targets = (masks, masks * 0.5, torch.ones(1, 2, dtype=torch.bool))
    mask, corr = masks.amax(1, keepdim=True), masks.amax(1, keepdim=True) * 0.5
    plain = contour_loss(out, mask, corr, mask_weight=2.0, corr_weight=3.0)
    full = contour_loss(out, mask, corr, mask_weight=2.0, corr_weight=3.0, objects=targets)
    assert set(plain) == {"loss", "mask", "corr"}
    assert torch.allclose(full["loss"], plain["loss"] + 2.0 * full["obj_mask"] + 3.0 * full["obj_corr"])
    full["loss"].backward()
    assert float(out["objects"].grad.abs().sum()) > 0


def test_slot_instances():
    objects = torch.full((1, 4, 2, 3), -5.0)
    objects[0, 0, :, 0] = 5  # slot 0 claims column 0
    objects[0, 1, :, 1:] = 5  # slot 1 claims columns 1-2
    objects[0, 0, 0, 2] = 8   # ... but slot 0 is surer at (0, 2)
    objects[0, 1, 1, 2] = -5  # and nobody claims (1, 2)
    objects[0, 0, 1, 2] = -5
    np.testing.assert_array_equal(slot_instances(objects)[0].numpy(), [[1, 2, 1], [1, 2, 0]])


def test_separation_error_known_cases():
    inst = np.zeros((4, 6), np.uint8)
    inst[:, :3], inst[:, 3:] = 1, 2
    merged = (inst > 0).astype(int)  # one component covering both: IoU 0.5 each, but the same instance
    assert best_iou(merged, inst == 1) == (1, 0.5)
    assert not pair_separated(merged, inst, 1, 2)
    assert pair_separated(inst.astype(int) * 7, inst, 1, 2)  # labels need not match the ids
    shrunk = inst.astype(int)
    shrunk[:, 1:3] = 0  # object 1's instance covers a third of it: IoU 1/3 < 0.5
    assert not pair_separated(shrunk, inst, 1, 2)
    assert separation_error([merged, inst.astype(int), shrunk], [inst] * 3, [(1, 2)] * 3) == pytest.approx(2 / 3, rel=1e-9)
    assert math.isnan(separation_error([], [], []))
    gap = inst > 0
    gap[:, 3] = False  # a one-pixel gap splits the union mask into two components
    assert pair_separated(mask_components(gap), inst, 1, 2)
    assert not pair_separated(mask_components(inst > 0), inst, 1, 2)


def test_ridge_split_cuts_the_mask_along_the_correlation_ridge():
    inst = np.zeros((5, 8), np.uint8)
    inst[:, :4], inst[:, 4:] = 1, 2
    corr = np.zeros((5, 8))
    corr[:, 3:5] = 0.9  # the shared contour of the two objects
    cut = ridge_split(inst > 0, corr)
    assert pair_separated(cut, inst, 1, 2) and set(np.unique(cut)) == {1, 2}
    np.testing.assert_array_equal(cut == cut[0, 0], inst == 1)  # ridge pixels join their nearest seed
    assert not pair_separated(ridge_split(inst > 0, np.zeros((5, 8))), inst, 1, 2)  # no ridge: one instance
    np.testing.assert_array_equal(ridge_split(inst > 0, np.ones((5, 8))), mask_components(inst > 0))  # no seed
