"""Configs of ``fastmed seg ...`` (segmentation from weak labels, and prediction).

``seg train`` has one config per ``--method``: ``SegReweightConfig`` and
``SegContourConfig`` share ``SegTrainOptions``; one method's options are not
accepted by the other (``Command.variants``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from fastmed.cfg.base import Command, at_least, opt, within
from fastmed.cfg.common import BatchOptions, PredictOptions, TrainOptions
from fastmed.errors import ConfigError

SEG_METHODS = ("reweight", "contour")
_METHOD_HELP = "weak-label method: reweight (few exact + many rough masks) | contour (outlines)"


@dataclass(kw_only=True)
class SegTrainOptions(BatchOptions):
    """Options of both ``seg train`` methods; ``METHOD`` is the subclass's ``--method`` value."""

    METHOD: ClassVar[str]
    data: str = opt(help="Kvasir-SEG-style folder: images/ + masks/ (+ rough_masks/, contours/), or one with train/ and val/ splits")
    method: str = opt("reweight", _METHOD_HELP, choices=SEG_METHODS)
    batch_size: int = opt(8, "images per step")
    image_size: int = opt(64, "input side in pixels (images are resized; divisible by 2**depth)")
    base_width: int = opt(16, "U-Net channels at the first level")
    depth: int = opt(3, "U-Net down/up levels")
    val_fraction: float = opt(0.2, "validation fraction when DATA has no val/ split")
    augment: bool = opt(True, "random flips and 90-degree rotations")
    overlays: int = opt(8, "validation overlay PNGs to write")

    def validate(self) -> None:
        super().validate()
        if self.method != self.METHOD:
            raise ConfigError(f"{type(self).__name__} is --method {self.METHOD}, got --method {self.method}")
        at_least(self, 1, "base_width", "depth")
        at_least(self, 0, "overlays")
        within(self, 0.0, 1.0, "val_fraction", hi_open=True)
        if self.image_size < 2**self.depth or self.image_size % (2**self.depth):
            raise ConfigError(f"option --image-size must be a positive multiple of 2**depth = {2**self.depth}, got {self.image_size}")


@dataclass(kw_only=True)
class SegReweightConfig(SegTrainOptions):
    """``seg train --method reweight``: few exact masks, many rough ones re-weighted by gradient agreement."""

    METHOD: ClassVar[str] = "reweight"
    amp: bool = opt(True, "bf16 mixed precision of the training forward passes on CUDA (ignored on CPU)")
    n_exact: int = opt(8, "images used with their exact mask (sampled with --seed; -1 = every image with masks/)")
    exact_list: str | None = opt(None, "text file of image ids to use as exact (one per line); overrides --n-exact")
    use_rough: bool = opt(True, "train on the rough images too (false: exact images only)")
    update_gamma: bool = opt(True, "update the weights (false: keep --gamma-init)")
    gamma_init: float = opt(1.0, "initial weight of every rough image, in [0, 1]")
    tau: int = opt(5, "update the weights every tau steps")
    beta: float = opt(0.2, "weight step size (per update, in units of the normalized dot product)")
    update_rule: str = opt("ratio", "gamma step from d_k = g_S.g_k: raw (beta*d_k), scaled (beta*d_k/mean|d|), "
                           "centered (beta*(d_k - mean d)/mean|d_k - mean d|: agreement relative to the pool), "
                           "ratio (beta*clip(d_k/median d - 1/2, -1, 1): lowered only below half the pool's median agreement)",
                           choices=("raw", "scaled", "centered", "ratio"))
    gamma_loss: str = opt("dice", "per-image loss whose gradients g_S, g_k are compared: dice (soft Dice) | seg (BCE + Dice)",
                          choices=("dice", "seg"))
    pool_size: int = opt(0, "rough images re-weighted per update (0 = all)")
    exact_batch: int = opt(8, "exact images in the batch that gives g_S")
    mixing: bool = opt(True, "mixed images + main/auxiliary models with cross pseudo-labels")
    mix_regions: str = opt("split", "which model learns which region of a mixed image: split (the first image's region "
                           "trains the main model, the second's the auxiliary) | both (each model learns both)",
                           choices=("split", "both"))
    oracle_gamma: bool = opt(False, "diagnostic upper bound: fix gamma to 0 for the rough masks meta.csv marks "
                             "rough_wrong and 1 for the rest (no updates)")
    lam: float = opt(0.5, "weight lambda of the cross pseudo-label loss r_ij")

    def validate(self) -> None:
        super().validate()
        within(self, 0.0, 1.0, "gamma_init")
        at_least(self, 1, "tau", "exact_batch")
        at_least(self, -1, "n_exact")
        at_least(self, 0, "pool_size", "beta", "lam")


@dataclass(kw_only=True)
class SegContourConfig(SegTrainOptions, TrainOptions):
    """``seg train --method contour``: masks and correlation maps from GeoJSON outlines."""

    METHOD: ClassVar[str] = "contour"
    method: str = opt("contour", _METHOD_HELP, choices=SEG_METHODS)
    n_train: int = opt(-1, "training images used (sampled with --seed; -1 = all with contours/)")
    corr_mode: str = opt("both", "correlation from distance, intensity difference, or both (product of Gaussians)", choices=("both", "distance", "intensity"))
    sigma_dist: float = opt(3.0, "width of the distance Gaussian, pixels at --image-size")
    sigma_int: float = opt(0.2, "width of the intensity Gaussian (RGB distance / sqrt(3), in [0, 1])")
    corr_fusion: str = opt("max", "fuse per-object maps by max over objects, or take the nearest object's", choices=("max", "nearest"))
    corr_weight: float = opt(1.0, "weight of the correlation regression (first difference); 0 = mask loss only")
    mask_weight: float = opt(1.0, "weight of the mask loss BCE + Dice (second difference)")
    corr_loss: str = opt("mse", "correlation regression loss", choices=("mse", "l1"))
    object_slots: int = opt(0, "per-object maps: K slots, each an object's mask and correlation map, matched to the "
                               "outlines per image (Hungarian); separates touching objects. 0 = fused maps only")

    def validate(self) -> None:
        super().validate()
        at_least(self, -1, "n_train")
        at_least(self, 0, "object_slots")
        if not (self.sigma_dist > 0 and self.sigma_int > 0):
            raise ConfigError(f"options --sigma-dist and --sigma-int must be > 0, got {self.sigma_dist} and {self.sigma_int}")
        at_least(self, 0, "corr_weight", "mask_weight")
        if self.corr_weight + self.mask_weight == 0:
            raise ConfigError("options --corr-weight and --mask-weight must not both be 0")


@dataclass(kw_only=True)
class SegPredictConfig(PredictOptions):
    weights: str = opt(help="a fastmed segmenter checkpoint (.pt)")
    source: str = opt(help="an image or a folder of images (searched recursively)")
    batch_size: int = opt(16, "images per forward pass")
    threshold: float = opt(0.5, "foreground probability threshold (binary masks)")
    progress: bool = opt(True, "show progress bars")

    def validate(self) -> None:
        at_least(self, 1, "batch_size")
        within(self, 0.0, 1.0, "threshold")


COMMANDS = [
    Command("seg", "train", SegReweightConfig, "fastmed.seg.train:run_train",
            "train a U-Net segmenter from weak labels (--method reweight | contour)",
            selector="method", variants=(("reweight", SegReweightConfig), ("contour", SegContourConfig))),
    Command("seg", "predict", SegPredictConfig, "fastmed.seg.predict:run_predict",
            "mask PNGs and overlays from a segmenter checkpoint"),
]
