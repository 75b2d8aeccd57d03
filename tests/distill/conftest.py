"""Distillation tests run single-threaded: on the shared 2-core test machine two
intra-op threads were measured 8x slower than one (OpenMP threads waiting on each other)."""
from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
