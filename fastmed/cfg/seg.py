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
    use_rough: bool = opt(True, "reweight: train on the rough images too (false: exact images only)")
    update_gamma: bool = opt(True, "reweight: update the weights (false: keep --gamma-init)")
    gamma_init: float = opt(1.0, "reweight: initial weight of every rough image, in [0, 1]")
    tau: int = opt(5, "reweight: update the weights every tau steps")
    beta: float = opt(0.2, "reweight: weight step size (per update, in units of the normalized dot product)")
    update_rule: str = opt("centered", "reweight: gamma step from d_k = g_S.g_k: raw (beta*d_k), scaled (beta*d_k/mean|d|), "
                           "centered (beta*(d_k - mean d)/mean|d_k - mean d|: agreement relative to the pool)",
                           choices=("raw", "scaled", "centered"))
    gamma_loss: str = opt("dice", "reweight: per-image loss whose gradients g_S, g_k are compared: dice (soft Dice) | seg (BCE + Dice)",
                          choices=("dice", "seg"))
    pool_size: int = opt(0, "reweight: rough images re-weighted per update (0 = all)")
    exact_batch: int = opt(8, "reweight: exact images in the batch that gives g_S")
    mixing: bool = opt(True, "reweight: mixed images + main/auxiliary models with cross pseudo-labels")
    lam: float = opt(0.5, "reweight: weight lambda of the cross pseudo-label loss r_ij")
    # --- method contour ---
    n_train: int = opt(-1, "contour: training images used (sampled with --seed; -1 = all with contours/)")
    corr_mode: str = opt("both", "contour: correlation from distance, intensity difference, or both (product of Gaussians)", choices=("both", "distance", "intensity"))
    sigma_dist: float = opt(3.0, "contour: width of the distance Gaussian, pixels at --image-size")
    sigma_int: float = opt(0.2, "contour: width of the intensity Gaussian (RGB distance / sqrt(3), in [0, 1])")
    corr_fusion: str = opt("max", "contour: fuse per-object maps by max over objects, or take the nearest object's", choices=("max", "nearest"))
    corr_weight: float = opt(1.0, "contour: weight of the correlation regression (first difference); 0 = mask loss only")
    mask_weight: float = opt(1.0, "contour: weight of the mask loss BCE + Dice (second difference)")
    corr_loss: str = opt("mse", "contour: correlation regression loss", choices=("mse", "l1"))

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
        if self.sigma_dist <= 0 or self.sigma_int <= 0:
            raise ConfigError(f"options --sigma-dist and --sigma-int must be > 0, got {self.sigma_dist} and {self.sigma_int}")
        if self.corr_weight < 0 or self.mask_weight < 0 or self.corr_weight + self.mask_weight == 0:
            raise ConfigError("options --corr-weight and --mask-weight must be >= 0 and not both 0")


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
