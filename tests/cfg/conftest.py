"""Config tests run tiny models single-threaded: on the shared 2-core test machine two contended
intra-op threads were measured about 30x slower than one for a tiny U-Net step."""
from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
