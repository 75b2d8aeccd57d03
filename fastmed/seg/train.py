"""``fastmed seg train``: dispatch to the chosen weak-label method's trainer."""
from __future__ import annotations

import importlib

from fastmed.errors import ConfigError

TRAINERS = {
    "reweight": "fastmed.seg.reweight.train",
    "contour": "fastmed.seg.contour.train",
}


def run_train(cfg) -> int:
    """Run ``<method module>.train(cfg)``; return 0 on success."""
    if cfg.method not in TRAINERS:
        raise ConfigError(f"option --method must be one of {', '.join(TRAINERS)}, got {cfg.method!r}")
    module = importlib.import_module(TRAINERS[cfg.method])
    module.train(cfg)
    return 0
