"""A registry of architectures: ``create_model(name, **kwargs)``.

Builders register themselves with ``@register("name")`` in their own module;
``create_model`` imports the modules listed in ``_MODULES`` on first use so
that checkpoints can be rebuilt from their ``arch`` record alone.
"""
from __future__ import annotations

import importlib
from typing import Callable

import torch

from fastmed.errors import ConfigError

_BUILDERS: dict[str, Callable[..., torch.nn.Module]] = {}
# modules whose import registers builders; add a line when you add a module
_MODULES = [
    "fastmed.nets.classifiers",
    "fastmed.nets.unet",
    "fastmed.nets.generators",
    "fastmed.nets.mil",
]
_loaded = False


def register(name: str) -> Callable[[Callable[..., torch.nn.Module]], Callable[..., torch.nn.Module]]:
    """Decorator: register ``builder(**kwargs) -> nn.Module`` under ``name``."""

    def deco(builder: Callable[..., torch.nn.Module]) -> Callable[..., torch.nn.Module]:
        if name in _BUILDERS and _BUILDERS[name] is not builder:
            raise ValueError(f"architecture {name!r} registered twice")
        _BUILDERS[name] = builder
        return builder

    return deco


def _load_all() -> None:
    global _loaded
    if _loaded:
        return
    for mod in _MODULES:
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as exc:
            if exc.name != mod:  # a real missing dependency inside the module
                raise
    _loaded = True


def available_models() -> list[str]:
    """Sorted names of all registered architectures."""
    _load_all()
    return sorted(_BUILDERS)


def create_model(name: str, **kwargs) -> torch.nn.Module:
    """Build the architecture registered as ``name`` with ``kwargs``."""
    _load_all()
    if name not in _BUILDERS:
        import difflib

        close = difflib.get_close_matches(name, list(_BUILDERS), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else f"; available: {', '.join(sorted(_BUILDERS))}"
        raise ConfigError(f"unknown architecture {name!r}{hint}")
    return _BUILDERS[name](**kwargs)
