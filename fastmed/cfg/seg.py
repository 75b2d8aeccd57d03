"""Configs of ``fastmed seg ...`` (segmentation from weak labels, and prediction)."""
from __future__ import annotations

from dataclasses import dataclass

from fastmed.cfg.base import Command, opt
from fastmed.cfg.common import RunOptions, TrainOptions
from fastmed.errors import ConfigError

SEG_METHODS = ("reweight", "contour")


@dataclass(kw_only=True)
class SegTrainConfig(TrainOptions):
    data: str = opt(help="Kvasir-SEG-style folder: images/ + masks/ (+ rough_masks/, contours/), or one with train/ and val/ splits")
    method: str = opt("reweight", "weak-label method: reweight (few exact + many rough masks) | contour (outlines)", choices=SEG_METHODS)
    batch_size: int = opt(8, "images per step")
    image_size: int = opt(64, "input side in pixels (images are resized; divisible by 2**depth)")
    base_width: int = opt(16, "U-Net channels at the first level")
    depth: int = opt(3, "U-Net down/up levels")
    val_fraction: float = opt(0.2, "validation fraction when DATA has no val/ split")
    augment: bool = opt(True, "random flips and 90-degree rotations")
    overlays: int = opt(8, "validation overlay PNGs to write")
    # --- method reweight ---
    n_exact: int = opt(8, "reweight: images used with their exact mask (sampled with --seed; -1 = every image with masks/)")
    exact_list: str | None = opt(None, "reweight: text file of image ids to use as exact (one per line); overrides --n-exact")
    gamma_init: float = opt(1.0, "reweight: initial weight of every rough image, in [0, 1]")
    tau: int = opt(5, "reweight: update the weights every tau steps")
    beta: float = opt(0.2, "reweight: weight step size (per update, in units of the normalized dot product)")
    normalize_dots: bool = opt(True, "reweight: divide g_S.g_k by the mean |g_S.g_k| of the pool before the step")
    pool_size: int = opt(0, "reweight: rough images re-weighted per update (0 = all)")
    exact_batch: int = opt(8, "reweight: exact images in the batch that gives g_S")
    mixing: bool = opt(True, "reweight: mixed images + main/auxiliary models with cross pseudo-labels")
    lam: float = opt(0.5, "reweight: weight lambda of the cross pseudo-label loss r_ij")

    def validate(self) -> None:
        super().validate()
        if self.image_size % (2**self.depth):
            raise ConfigError(f"option --image-size must be divisible by 2**depth = {2**self.depth}, got {self.image_size}")
        if not 0.0 <= self.gamma_init <= 1.0:
            raise ConfigError(f"option --gamma-init must be in [0, 1], got {self.gamma_init}")
        for name in ("tau", "exact_batch"):
            if getattr(self, name) < 1:
                raise ConfigError(f"option --{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.pool_size < 0 or self.beta < 0 or self.lam < 0:
            raise ConfigError("options --pool-size, --beta and --lam must be >= 0")


@dataclass(kw_only=True)
class SegPredictConfig(RunOptions):
    weights: str = opt(help="a fastmed segmenter checkpoint (.pt)")
    source: str = opt(help="an image or a folder of images (searched recursively)")
    batch_size: int = opt(16, "images per forward pass")
    threshold: float = opt(0.5, "foreground probability threshold (binary masks)")


COMMANDS = [
    Command("seg", "train", SegTrainConfig, "fastmed.seg.train:run_train",
            "train a U-Net segmenter from weak labels (--method reweight | contour)"),
    Command("seg", "predict", SegPredictConfig, "fastmed.seg.predict:run_predict",
            "mask PNGs and overlays from a segmenter checkpoint"),
]
