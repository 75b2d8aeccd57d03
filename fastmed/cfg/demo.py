"""``fastmed demo``: every task end to end on built-in synthetic data."""
from __future__ import annotations

from dataclasses import dataclass

from fastmed.cfg.base import at_least, opt


@dataclass(kw_only=True)
class DemoConfig:
    out: str = opt("runs/demo", "demo folder: data/, one run folder per stage, REPORT.md")
    seed: int = opt(0, "random seed")
    device: str = opt("auto", "auto | cpu | cuda | cuda:N")
    stages: list[str] = opt([], "run only these stages (comma-separated; default all)")
    progress: bool = opt(True, "show progress bars")

    def validate(self) -> None:
        at_least(self, 0, "seed")


from fastmed.cfg.base import Command  # noqa: E402

COMMANDS = [
    Command("demo", None, DemoConfig, "fastmed.demo:run_demo",
            "synthesize data, train every task briefly, predict, export, write REPORT.md"),
]
