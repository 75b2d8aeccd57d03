"""AttentionMIL: ragged bags give the same result as one bag at a time; registry; metrics."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fastmed.engine.metrics import roc_auc
from fastmed.kernels.mil_pool import bag_offsets
from fastmed.nets.mil import AttentionMIL
from fastmed.nets.registry import create_model
from fastmed.wsi.metrics import binary_metrics


@pytest.mark.parametrize("normalize", ["sigmoid", "softmax"])
def test_ragged_batch_equals_one_slide_at_a_time(normalize):
    model = AttentionMIL(12, hidden=16, attn_dim=8, dropout=0.0, normalize=normalize).eval()
    lengths = [5, 1, 9]
    x = torch.randn(sum(lengths), 12)
    out = model(x, bag_offsets(lengths))
    assert out["bag"].shape == (3,) and out["patch"].shape == (15,) and out["attention"].shape == (15,)
    for b, (lo, n) in enumerate(zip([0, 5, 6], lengths)):
        single = model(x[lo:lo + n], bag_offsets([n]))
        torch.testing.assert_close(out["bag"][b:b + 1], single["bag"])


def test_sigmoid_normalization_is_not_softmax():
    torch.manual_seed(1)
    a = AttentionMIL(4, hidden=8, attn_dim=4, dropout=0.0, normalize="sigmoid").eval()
    b = AttentionMIL(4, hidden=8, attn_dim=4, dropout=0.0, normalize="softmax").eval()
    b.load_state_dict(a.state_dict())
    x = torch.randn(7, 4) * 3
    assert not torch.allclose(a(x, bag_offsets([7]))["bag"], b(x, bag_offsets([7]))["bag"])


def test_gradients_reach_every_parameter():
    model = AttentionMIL(6, hidden=8, attn_dim=4)
    out = model(torch.randn(10, 6), bag_offsets([4, 6]))
    (out["bag"].sum() + out["instance"].sum()).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_registry_and_bad_args():
    m = create_model("attention_mil", in_dim=5, hidden=4, attn_dim=3)
    assert isinstance(m, AttentionMIL)
    with pytest.raises(ValueError, match="normalize"):
        AttentionMIL(5, normalize="max")
    with pytest.raises(ValueError, match="x must be"):
        m(torch.randn(2, 3, 5), bag_offsets([2]))


def test_auc_known_values():
    assert roc_auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.75)
    assert roc_auc([0, 1], [0.5, 0.5]) == pytest.approx(0.5)  # ties count half
    assert math.isnan(roc_auc([1, 1], [0.2, 0.3]))
    m = binary_metrics(np.array([0, 1, 1, 0]), np.array([0.2, 0.9, 0.4, 0.6]), 0.5)
    assert m["acc"] == pytest.approx(0.5) and m["f1"] == pytest.approx(0.5) and m["auc"] == pytest.approx(0.75)
