"""Self-describing checkpoints.

A fastmed checkpoint is a plain ``dict`` saved with ``torch.save`` and read
back with ``torch.load(weights_only=True)``; it holds only tensors and
Python primitives::

    {
      "format": "fastmed-checkpoint", "format_version": 1,
      "fastmed_version": "0.1.0",
      "task": "polyp",                      # task that produced it
      "kind": "classifier",                 # classifier | segmenter | generator | mil | ...
      "arch": {"name": "resnet18", "kwargs": {"num_classes": 3}},   # nets.registry
      "class_names": ["adenoma", ...],
      "input_size": [128, 128],             # H, W fed to the model
      "channel_order": "RGB",
      "normalization": {"mean": [...], "std": [...]},   # on [0, 1] pixel values
      "model": <state_dict>,
      "meta": {...},                        # task-specific, primitives only
      "train_state": {...},                 # optimizer/epoch; only in last.pt
    }

``export`` and ``predict`` need nothing else: ``load_model(path)`` rebuilds the
network from ``arch`` and loads its weights.
"""
from __future__ import annotations

import os
import pickle
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch

from fastmed._version import __version__
from fastmed.engine.atomic import atomic_write
from fastmed.errors import FastmedError

FORMAT = "fastmed-checkpoint"
FORMAT_VERSION = 1
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


def make_checkpoint(
    model: torch.nn.Module,
    *,
    task: str,
    kind: str,
    arch: str,
    arch_kwargs: dict[str, Any],
    class_names: list[str] | None = None,
    input_size: tuple[int, int] | list[int] | None = None,
    normalization: dict[str, list[float]] | None = None,
    channel_order: str = "RGB",
    meta: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Build the checkpoint dict for ``model`` (weights copied to CPU)."""
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "fastmed_version": __version__,
        "task": task,
        "kind": kind,
        "arch": {"name": arch, "kwargs": dict(arch_kwargs)},
        "class_names": list(class_names) if class_names is not None else None,
        "input_size": list(input_size) if input_size is not None else None,
        "channel_order": channel_order,
        "normalization": normalization or {"mean": IMAGENET_MEAN, "std": IMAGENET_STD},
        "model": state,
        "meta": dict(meta or {}),
    }


def save_checkpoint(path: str | os.PathLike, ckpt: dict[str, Any]) -> Path:
    """Save ``ckpt`` atomically (temp file + rename)."""
    return atomic_write(path, lambda tmp: torch.save(ckpt, tmp))


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a fastmed checkpoint safely (``weights_only=True``) and check its format."""
    path = Path(path)
    if not path.is_file():
        raise FastmedError(f"checkpoint not found: {path}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. pickle-protocol notes on foreign files
            ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # PyTorch's text runs to paragraphs and suggests unsafe loading: say why in one line
        raise FastmedError(f"cannot read checkpoint {path}: {_unreadable_reason(path, exc)}") from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise FastmedError(f"{path} is not a fastmed checkpoint (no 'format': '{FORMAT}' key)")
    if ckpt.get("format_version", 0) > FORMAT_VERSION:
        raise FastmedError(
            f"{path} was written by a newer fastmed (format {ckpt['format_version']}); upgrade fastmed"
        )
    return ckpt


def _unreadable_reason(path: Path, exc: Exception) -> str:
    """Why ``torch.load(path, weights_only=True)`` failed, in a few words."""
    with open(path, "rb") as f:
        head = f.read(4)
    if not head:
        return "the file is empty"
    if not zipfile.is_zipfile(path):
        return "truncated (incomplete zip archive)" if head == b"PK\x03\x04" else "not a torch file"
    if isinstance(exc, pickle.UnpicklingError):
        return "it contains objects that are not plain tensors or numbers, which fastmed never loads"
    return f"corrupt torch file ({type(exc).__name__})"


def load_model(path_or_ckpt: str | os.PathLike | dict[str, Any], map_location: str | torch.device = "cpu") -> tuple[torch.nn.Module, dict[str, Any]]:
    """Rebuild the network recorded in a checkpoint and load its weights.

    Returns ``(model in eval mode, checkpoint dict)``.
    """
    from fastmed.nets.registry import create_model

    ckpt = path_or_ckpt if isinstance(path_or_ckpt, dict) else load_checkpoint(path_or_ckpt, map_location)
    model = create_model(ckpt["arch"]["name"], **ckpt["arch"]["kwargs"])
    model.load_state_dict(ckpt["model"])
    return model.to(map_location).eval(), ckpt
