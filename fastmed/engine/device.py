"""Device selection and mixed precision."""
from __future__ import annotations

import contextlib

import torch

from fastmed.errors import ConfigError


def select_device(device: str = "auto") -> torch.device:
    """Resolve ``"auto" | "cpu" | "cuda" | "cuda:N"`` to a ``torch.device``.

    ``auto`` picks CUDA when available. Asking for CUDA without one is an error.
    """
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cpu":
        return torch.device("cpu")
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"device={device!r} but no CUDA GPU is available; use device=cpu or auto")
        return torch.device(device)
    raise ConfigError(f"device must be auto, cpu, cuda or cuda:N, got {device!r}")


def autocast(device: torch.device, enabled: bool = True) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA when ``enabled``; a no-op context on the CPU."""
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()
