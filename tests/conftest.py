"""Test-wide settings: Triton's CPU interpreter, quiet progress bars, seeds.

``TRITON_INTERPRET=1`` must be set before Triton is first imported, so it is
set here at collection time unless a CUDA GPU is present (then kernels run
compiled, and the ``gpu`` tests apply).
"""
from __future__ import annotations

import os

os.environ.setdefault("FASTMED_PROGRESS", "0")
os.environ.setdefault("MPLBACKEND", "Agg")

import pytest  # noqa: E402
import torch  # noqa: E402

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

# FASTMED_TEST_THREADS lets a stability run vary the intra-op thread count (results must not depend on it)
torch.set_num_threads(int(os.environ.get("FASTMED_TEST_THREADS", max(1, min(2, os.cpu_count() or 1)))))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory):
    """A small synthetic dataset (all layouts) shared by the whole session."""
    from fastmed.data.synthetic import make_synthetic

    root = tmp_path_factory.mktemp("synth")
    make_synthetic(root, seed=0, size="tiny")
    return root


def pytest_collection_modifyitems(config, items):
    gpu = torch.cuda.is_available()
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords and not gpu:
            item.add_marker(skip_gpu)
