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


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for a module of tiny models: on the shared 2-core test machine two contended
    threads were measured 8x (distillation) to 30x (a tiny U-Net step) slower than one."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory):
    """A small synthetic dataset (all layouts) shared by the whole session."""
    from fastmed.data.synthetic import make_synthetic

    root = tmp_path_factory.mktemp("synth")
    make_synthetic(root, seed=0, size="tiny")
    return root


@pytest.fixture
def bomb_png():
    """``bomb_png(path)`` writes a ~100-byte PNG whose header claims 20000 x 20000 pixels (a decompression bomb)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    def write(path, side: int = 20000):
        ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)  # 8-bit grey
        path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                         + chunk(b"IEND", b""))
        return path

    return write


def pytest_collection_modifyitems(config, items):
    gpu = torch.cuda.is_available()
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords and not gpu:
            item.add_marker(skip_gpu)
