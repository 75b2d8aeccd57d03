"""Distillation tests run single-threaded (the ``one_thread`` fixture of tests/conftest.py)."""
from __future__ import annotations

import pytest


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_thread):
    yield
