"""``fastmed synth``: write the synthetic datasets in the real layouts."""
from __future__ import annotations

from dataclasses import dataclass

from fastmed.cfg.base import Command, at_least, opt, within
from fastmed.errors import ConfigError


@dataclass(kw_only=True)
class SynthConfig:
    out: str = opt("data/synth", "output folder (polyp/, seg/, slides/ are written inside)")
    seed: int = opt(0, "random seed; the same seed writes the same files")
    size: str = opt("small", "dataset size", choices=("tiny", "small", "demo", "large"))
    parts: list[str] = opt(["polyp", "seg", "slides"], "which datasets to write (comma-separated)")
    shift: float = opt(1.0, "illumination/colour shift strength of the polyp test_shift split (0 = none)")
    image_size: int = opt(64, "polyp and segmentation image side in pixels")
    contour_vertices: int = opt(0, "seg: outline polygons keep this many of their 64 vertices (0 = all; masks stay exact)")
    contour_jitter: float = opt(0.0, "seg: move every outline vertex radially by N(0, j^2) pixels (masks stay exact)")
    touching: float = opt(0.0, "seg: fraction of images with two touching lesions")

    def validate(self) -> None:
        at_least(self, 8, "image_size")
        at_least(self, 0, "contour_jitter")
        within(self, 0.0, 1.0, "touching")
        if self.contour_vertices and not 3 <= self.contour_vertices <= 64:
            raise ConfigError(f"option --contour-vertices must be 0 or in [3, 64], got {self.contour_vertices}")
        at_least(self, 0, "seed")
        at_least(self, 0, "shift")


COMMANDS = [
    Command("synth", None, SynthConfig, "fastmed.data.synthetic:run_synth",
            "write small deterministic datasets in the real layouts (class folders, Kvasir-SEG, tiled TIFF slides)"),
]
