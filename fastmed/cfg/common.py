"""Options shared by commands (mixed into task configs).

A command inherits only the options it reads:

* ``OutOptions``: ``out``;
* ``PredictOptions``: + ``device`` (deterministic inference commands);
* ``RunOptions``: + ``seed``, ``progress``;
* ``FitOptions``: + ``epochs``, ``lr``, ``weight_decay``, ``resume``, ``overwrite`` (every trainer);
* ``BatchOptions``: + ``batch_size``, ``amp`` (trainers that batch in-memory tensors);
* ``TrainOptions``: + ``workers`` (trainers that read batches through a DataLoader).

Configs use ``@dataclass(kw_only=True)`` so that required options (no
default) may follow inherited ones.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from fastmed.cfg.base import at_least, opt, require


@dataclass(kw_only=True)
class OutOptions:
    """Where a command writes."""

    out: str | None = opt(None, "run folder (default runs/<task>/<mode>, numbered when taken)")


@dataclass(kw_only=True)
class PredictOptions(OutOptions):
    """Where an inference command writes and on which device it runs."""

    device: str = opt("auto", "auto | cpu | cuda | cuda:N")


@dataclass(kw_only=True)
class RunOptions(PredictOptions):
    """Where a command writes and how it runs."""

    seed: int = opt(0, "random seed (Python, NumPy, torch)")
    progress: bool = opt(True, "show progress bars")

    def validate(self) -> None:
        at_least(self, 0, "seed")  # NumPy refuses negative seeds


@dataclass(kw_only=True)
class FitOptions(RunOptions):
    """Options of every training command."""

    epochs: int = opt(10, "number of epochs")
    lr: float = opt(1e-3, "learning rate (AdamW)")
    weight_decay: float = opt(1e-4, "AdamW weight decay")
    resume: bool = opt(False, "continue the run in --out from weights/last.pt")
    overwrite: bool = opt(False, "replace the run already in --out (its metrics, weights and summary); "
                                 "without it (or --resume) such an --out is refused")

    def validate(self) -> None:
        from fastmed.errors import ConfigError

        super().validate()
        at_least(self, 1, "epochs")
        require(self, lambda v: math.isfinite(v) and v > 0, "a finite number > 0", "lr")
        require(self, lambda v: math.isfinite(v) and v >= 0, "a finite number >= 0", "weight_decay")
        if self.resume and self.overwrite:
            raise ConfigError("options --resume and --overwrite exclude each other: continue the run, or replace it")


@dataclass(kw_only=True)
class BatchOptions(FitOptions):
    """Options of a trainer with a batch size and bf16 autocast."""

    batch_size: int = opt(32, "images per step")
    amp: bool = opt(True, "bf16 mixed precision on CUDA (ignored on CPU)")

    def validate(self) -> None:
        super().validate()
        at_least(self, 1, "batch_size")


@dataclass(kw_only=True)
class TrainOptions(BatchOptions):
    """Options of a trainer that reads its batches through a DataLoader."""

    workers: int = opt(0, "DataLoader worker processes (0 = in the main process)")

    def validate(self) -> None:
        super().validate()
        at_least(self, 0, "workers")
