"""Options shared by commands (mixed into task configs).

A command inherits only the options it reads:

* ``OutOptions``: ``out``;
* ``PredictOptions``: + ``device`` (deterministic inference commands);
* ``RunOptions``: + ``seed``, ``progress``;
* ``FitOptions``: + ``epochs``, ``lr``, ``weight_decay``, ``resume`` (every trainer);
* ``BatchOptions``: + ``batch_size``, ``amp`` (trainers that batch in-memory tensors);
* ``TrainOptions``: + ``workers`` (trainers that read batches through a DataLoader).

Configs use ``@dataclass(kw_only=True)`` so that required options (no
default) may follow inherited ones.
"""
from __future__ import annotations

from dataclasses import dataclass

from fastmed.cfg.base import at_least, opt


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

    def validate(self) -> None:
        from fastmed.errors import ConfigError

        super().validate()
        if self.epochs < 1:
            raise ConfigError(f"option --epochs must be >= 1, got {self.epochs}")
        if self.lr <= 0:
            raise ConfigError(f"option --lr must be > 0, got {self.lr}")


@dataclass(kw_only=True)
class BatchOptions(FitOptions):
    """Options of a trainer with a batch size and bf16 autocast."""

    batch_size: int = opt(32, "images per step")
    amp: bool = opt(True, "bf16 mixed precision on CUDA (ignored on CPU)")

    def validate(self) -> None:
        from fastmed.errors import ConfigError

        super().validate()
        if self.batch_size < 1:
            raise ConfigError(f"option --batch-size must be >= 1, got {self.batch_size}")


@dataclass(kw_only=True)
class TrainOptions(BatchOptions):
    """Options of a trainer that reads its batches through a DataLoader."""

    workers: int = opt(0, "DataLoader worker processes (0 = in the main process)")
