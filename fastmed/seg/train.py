"""``fastmed seg train``: dispatch to the chosen weak-label method's trainer."""
from __future__ import annotations

import importlib

from fastmed.engine.training_run import RunSummary
from fastmed.errors import ConfigError

TRAINERS = {
    "reweight": "fastmed.seg.reweight.train",
    "contour": "fastmed.seg.contour.train",
}


def run_train(cfg) -> RunSummary:
    """Run ``<method module>.train(cfg)``; return its ``engine.training_run.RunSummary``."""
    if cfg.method not in TRAINERS:
        raise ConfigError(f"option --method must be one of {', '.join(TRAINERS)}, got {cfg.method!r}")
    module = importlib.import_module(TRAINERS[cfg.method])
    return module.train(cfg)
