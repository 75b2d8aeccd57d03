"""Loading initial weights from a local file (nothing is ever downloaded)."""
from __future__ import annotations

import os
from pathlib import Path

import torch

from fastmed.errors import FastmedError


def read_state_dict(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict | None]:
    """The weights in ``path``: a fastmed checkpoint (returns its dict too) or a
    plain ``state_dict`` file such as torchvision's ``resnet18-*.pth``."""
    path = Path(path)
    if not path.is_file():
        raise FastmedError(f"weights file not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise FastmedError(f"cannot read weights {path}: {exc}") from exc
    if isinstance(obj, dict) and obj.get("format") == "fastmed-checkpoint":
        return obj["model"], obj
    if isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return obj, None
    raise FastmedError(f"{path} holds neither a fastmed checkpoint nor a state_dict of tensors")


def load_matching_weights(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> tuple[list[str], list[str]]:
    """Copy every tensor of ``state`` whose name and shape match ``model``.

    Returns ``(loaded names, skipped names)``; a classifier head of another
    class count is skipped, not an error. No matching tensor at all is an error.
    """
    own = model.state_dict()
    loaded = [k for k, v in state.items() if k in own and own[k].shape == v.shape]
    skipped = [k for k in state if k not in loaded]
    if not loaded:
        raise FastmedError("none of the weights match this architecture (wrong --arch for the file?)")
    model.load_state_dict({k: state[k] for k in loaded}, strict=False)
    return loaded, skipped
