"""Options every training/prediction command shares (mixed into task configs).

Configs use ``@dataclass(kw_only=True)`` so that required options (no
default) may follow inherited ones.
"""
from __future__ import annotations

from dataclasses import dataclass

from fastmed.cfg.base import opt


@dataclass(kw_only=True)
class RunOptions:
    """Where a command writes and how it runs."""

    out: str | None = opt(None, "run folder (default runs/<task>/<mode>, numbered when taken)")
    seed: int = opt(0, "random seed (Python, NumPy, torch)")
    device: str = opt("auto", "auto | cpu | cuda | cuda:N")
    progress: bool = opt(True, "show progress bars")


@dataclass(kw_only=True)
class TrainOptions(RunOptions):
    """Options of every training command."""

    epochs: int = opt(10, "number of epochs")
    batch_size: int = opt(32, "images per step")
    lr: float = opt(1e-3, "learning rate (AdamW)")
    weight_decay: float = opt(1e-4, "AdamW weight decay")
    workers: int = opt(0, "DataLoader worker processes (0 = in the main process)")
    amp: bool = opt(True, "bf16 mixed precision on CUDA (ignored on CPU)")
    resume: bool = opt(False, "continue the run in --out from weights/last.pt")

    def validate(self) -> None:
        from fastmed.errors import ConfigError

        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"option --{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.lr <= 0:
            raise ConfigError(f"option --lr must be > 0, got {self.lr}")
