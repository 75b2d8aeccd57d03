"""Custom kernels for fastmed's hot spots (installed as ``fastmed.kernels``).

Every op has three layers (see docs/ARCHITECTURE.md §6): a readable PyTorch/NumPy
``reference``, a private Triton (or Numba) implementation, and the public
function below, which validates its inputs and dispatches with
``backend="auto"`` (Triton for CUDA tensors; on the CPU a Numba kernel where one
is faster, the reference otherwise).

Names are resolved lazily so that ``import fastmed.kernels`` never imports
Triton, Numba or even the op modules until an op is used.
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    # name -> module (inside fastmed.kernels) that defines it
    "sinkhorn_divergence": "sinkhorn",
    "sinkhorn_cost": "sinkhorn",
    "mil_attention_pool": "mil_pool",
    "per_sample_grad_dot": "grad_dot",
    "distance_transform_edt": "edt",
    "distance_transform_edt_batch": "edt",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'fastmed.kernels' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
