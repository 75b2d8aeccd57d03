"""Precise BN: running statistics become the plain average over the given batches."""
from __future__ import annotations

import torch

from fastmed.engine.precise_bn import recompute_bn_stats


def test_running_stats_equal_the_batch_average_and_modes_are_restored():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1, bias=False), torch.nn.BatchNorm2d(4, momentum=0.01))
    batches = [(torch.randn(8, 3, 5, 5) * 3 + 2,) for _ in range(4)]
    model.eval()
    assert recompute_bn_stats(model, batches, torch.device("cpu")) == 4
    feats = torch.cat([model[0](b[0]) for b in batches])
    torch.testing.assert_close(model[1].running_mean, feats.mean((0, 2, 3)), rtol=1e-4, atol=1e-4)
    assert not model.training and model[1].momentum == 0.01


def test_no_batchnorm_runs_nothing():
    assert recompute_bn_stats(torch.nn.Linear(2, 2), iter(()), torch.device("cpu")) == 0
