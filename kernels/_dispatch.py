"""Backend selection and input checks shared by every kernel.

``resolve_backend(backend, *tensors)`` is the single place that decides
whether an op runs its Triton kernel or its PyTorch reference:

* ``"auto"``   – Triton when every tensor is on CUDA and Triton imports,
                 the reference otherwise;
* ``"torch"``  – the reference, always;
* ``"triton"`` – Triton; on CPU tensors this needs ``TRITON_INTERPRET=1``
                 (Triton's interpreter, which is how CI tests the kernels).
"""
from __future__ import annotations

import functools
import os
from typing import Iterable

import torch

BACKENDS = ("auto", "torch", "triton")


@functools.lru_cache(maxsize=1)
def triton_available() -> bool:
    """True when ``import triton`` works (never raises)."""
    try:
        import triton  # noqa: F401
        import triton.language  # noqa: F401
    except Exception:  # ImportError, or a broken install
        return False
    return True


def triton_interpreting() -> bool:
    """True when Triton kernels run on the CPU through its interpreter."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def resolve_backend(backend: str, *tensors: torch.Tensor) -> str:
    """Return ``"triton"`` or ``"torch"`` for the given request and inputs.

    Raises ``ValueError`` for an unknown backend name and ``RuntimeError`` when
    Triton is asked for explicitly but cannot run on these tensors.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    on_cuda = bool(tensors) and all(t.is_cuda for t in tensors)
    if backend == "torch":
        return "torch"
    if backend == "auto":
        return "triton" if on_cuda and triton_available() else "torch"
    if not triton_available():
        raise RuntimeError("backend='triton' requested but Triton is not installed")
    if not on_cuda and not triton_interpreting():
        raise RuntimeError(
            "backend='triton' on CPU tensors needs TRITON_INTERPRET=1 "
            "(set before Triton is imported); use backend='torch' or CUDA tensors"
        )
    return "triton"


def check_tensor(
    name: str,
    t: object,
    *,
    ndim: int | None = None,
    dtypes: Iterable[torch.dtype] | None = None,
) -> torch.Tensor:
    """Validate one tensor argument; raise a ``TypeError``/``ValueError`` naming it."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if ndim is not None and t.dim() != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {tuple(t.shape)}")
    if dtypes is not None:
        dtypes = tuple(dtypes)
        if t.dtype not in dtypes:
            names = ", ".join(str(d).replace("torch.", "") for d in dtypes)
            raise ValueError(f"{name} must have dtype in ({names}), got {str(t.dtype).replace('torch.', '')}")
    return t


def check_same_device(**tensors: torch.Tensor | None) -> None:
    """Raise ``ValueError`` when the given (non-None) tensors sit on different devices."""
    present = {k: v for k, v in tensors.items() if v is not None}
    devices = {str(v.device) for v in present.values()}
    if len(devices) > 1:
        where = ", ".join(f"{k} on {v.device}" for k, v in present.items())
        raise ValueError(f"all tensors must be on one device, got {where}")
