"""Configs of ``fastmed polyp ...`` (the polyp recognizer and its generator)."""
from __future__ import annotations

import math
from dataclasses import dataclass

from fastmed.cfg.base import Command, at_least, opt, require, within
from fastmed.cfg.common import FitOptions, PredictOptions, RunOptions, TrainOptions
from fastmed.errors import ConfigError

MIN_IMAGE_SIZE = 8  # the classifiers downsample by 32; below 8 pixels there is nothing left to learn from


@dataclass(kw_only=True)
class PolypTrainConfig(TrainOptions):
    data: str = opt(help="dataset folder with train/ and val/ class folders (or a folder of class folders)")
    arch: str = opt("resnet18", "classifier architecture (fastmed.nets.registry)")
    image_size: int = opt(64, "input side in pixels (images are resized)")
    weights_init: str | None = opt(None, "initial weights: a fastmed checkpoint or a torchvision state_dict file")
    val_fraction: float = opt(0.2, "validation fraction when DATA has no val/ folder")
    augment: bool = opt(True, "random flips, rotations and colour jitter during training")
    pretrained: str | None = opt(None, "encoder weights from `fastmed polyp pretrain` (same --arch); the head stays random")
    extra_data: list[str] = opt([], "extra class-folder datasets (e.g. generated images) added to the training set; comma-separated")

    def validate(self) -> None:
        super().validate()
        at_least(self, MIN_IMAGE_SIZE, "image_size")
        within(self, 0.0, 1.0, "val_fraction", hi_open=True)


@dataclass(kw_only=True)
class PolypPredictConfig(PredictOptions):
    weights: str = opt(help="a fastmed classifier checkpoint (.pt)")
    source: str = opt(help="an image, a folder (searched recursively) or a .txt list of image paths")
    batch_size: int = opt(64, "images per forward pass")
    save: str | None = opt(None, "write predictions to this .csv or .json file (default: <out>/predictions.csv)")

    def validate(self) -> None:
        at_least(self, 1, "batch_size")


@dataclass(kw_only=True)
class PolypAugmentConfig(FitOptions):
    """``fastmed polyp augment``: train the class-conditioned generator (G, restorer F, discriminator D).

    No --batch-size (a batch is 2 x --per-class images of every class), no --workers (the images are
    held in memory) and no --amp (the adversarial and Sinkhorn losses run in float32).
    """

    data: str = opt(help="dataset folder with train/ class folders (or a folder of class folders)")
    image_size: int = opt(64, "image side in pixels (divisible by 4)")
    per_class: int = opt(4, "real images per class and half-batch (a step sees 2 x per_class x classes images)")
    steps_per_epoch: int = opt(50, "generator updates per epoch")
    lr: float | None = opt(None, "Adam learning rate of G and F (default 1e-4; 2e-4 with --identity-start)")
    lr_d: float | None = opt(None, "Adam learning rate of the discriminator D (default 4e-4; 2e-4 with --identity-start)")
    d_steps: int = opt(1, "discriminator updates per generator update (the D:G ratio)")
    weight_decay: float = opt(0.0, "decoupled (AdamW) weight decay of G, F and D; 0 = plain Adam")
    base: int = opt(16, "channel width of G, F and D")
    w_adv: float = opt(1.0, "weight of the adversarial loss")
    w_gen: float | None = opt(None, "weight of the generation (cycle L1) loss (default 5; 10 with --identity-start)")
    w_pred: float | None = opt(None, "weight of the prediction (class) loss (default 5; 1 with --identity-start)")
    w_dist1: float | None = opt(None, "weight of the first distribution loss (-D, real vs generated, per class); 0 = off (default 3; 1 with --identity-start)")
    w_dist2: float = opt(1.0, "weight of the second distribution loss (-sum over class pairs); 0 = off")
    w_div: float | None = opt(None, "weight of the noise-diversity hinge max(0, --div-target - |G(x,c,z1) - G(x,c,z2)|) (default 1; 0 = off, the --identity-start default)")
    div_target: float = opt(0.05, "noise diversity (mean abs pixel difference on [0, 1]) below which the hinge pushes")
    identity_start: bool = opt(False, "the baseline generator: zero-initialised output convolution (G starts as the identity), noise as an input plane only, W(Y,Y') not detached, and the baseline defaults of --lr --lr-d --w-gen --w-pred --w-div --d-fake-class-weight --class-warmup --w-dist1 --margin --d-augment")
    judge: str | None = opt(None, "independent judge of the generated images' class: a classifier checkpoint trained on real images; default: a small CNN trained here on the real training images")
    judge_steps: int = opt(300, "training steps of the default judge (when --judge is not given)")
    class_warmup: int | None = opt(None, "updates of the discriminator's class head on real images (class cross-entropy only) before the first generator update, so the prediction loss carries class information from the start (default 200; 0 with --identity-start)")
    d_fake_class_weight: float | None = opt(None, "weight of the discriminator class head's negative prediction loss on generated images (default 0; 0.5 with --identity-start)")
    d_augment: str | None = opt(None, "differentiable augmentations (DiffAugment) of the real and generated images the discriminator's adversarial head sees, comma-separated from color, translation, cutout, or off (default color,cutout; off with --identity-start)")
    margin: float | None = opt(None, "hinge on the distribution distances: -min(D, margin) (guard on the unbounded -D; default 0.2, 0.1 with --identity-start)")
    blur: float = opt(0.05, "Sinkhorn blur on the L2-normalised features")
    features: str | None = opt(None, "frozen feature CNN: a fastmed classifier checkpoint (e.g. the recognizer); default: a seeded random --feature-arch")
    feature_arch: str = opt("mobilenet_v3_small", "architecture of the random frozen feature CNN when --features is not given")
    loss_threshold: float | None = opt(None, "update condition: stop updating once an epoch's mean target loss is below this")

    def validate(self) -> None:
        super().validate()
        require(self, lambda v: math.isfinite(v) and v > 0, "a finite number > 0", "lr_d")
        if self.image_size < MIN_IMAGE_SIZE or self.image_size % 4:
            raise ConfigError(f"option --image-size must be divisible by 4 and >= {MIN_IMAGE_SIZE}, got {self.image_size}")
        at_least(self, 2, "per_class")
        at_least(self, 1, "steps_per_epoch", "base", "d_steps", "judge_steps")
        at_least(self, 0, "w_adv", "w_gen", "w_pred", "w_dist1", "w_dist2", "w_div", "div_target", "d_fake_class_weight", "class_warmup")
        if self.d_augment is not None:
            from fastmed.polyp.gen_diff_augment import parse_policy
            try:
                parse_policy(self.d_augment)
            except ValueError as e:
                raise ConfigError(f"option --d-augment: {e}") from None
        if not ((self.margin is None or self.margin > 0) and self.blur > 0):
            raise ConfigError(f"options --margin and --blur must be > 0, got {self.margin}, {self.blur}")


@dataclass(kw_only=True)
class PolypGenerateConfig(RunOptions):
    """``fastmed polyp generate``: write a labelled generated dataset with a trained generator."""

    weights: str = opt(help="generator checkpoint of `fastmed polyp augment` (weights/best.pt or last.pt)")
    data: str = opt(help="source images: DATA/train/<class>/ or DATA/<class>/ (class names must match the generator's)")
    out: str = opt(help="output folder: OUT/<class>/<image>.png, OUT/manifest.csv, OUT/samples.png")
    per_image: int = opt(1, "generated images per source image (different noise)")
    batch_size: int = opt(32, "images per forward pass")
    judge: str | None = opt(None, "classifier checkpoint that judges the generated images' class in summary.json; default: the judge saved with the generator")

    def validate(self) -> None:
        super().validate()
        at_least(self, 1, "per_image", "batch_size")


@dataclass(kw_only=True)
class PolypPretrainConfig(TrainOptions):
    """``fastmed polyp pretrain``: Models-Genesis self-supervised pre-training of the recognizer's encoder."""

    data: str = opt(help="image folder (searched recursively; DATA/train/ is used when present); labels are not needed")
    extra_data: list[str] = opt([], "extra image folders (e.g. `polyp generate` output) pre-trained on together with DATA's images; comma-separated")
    arch: str = opt("resnet18", "classifier architecture whose encoder is pre-trained (same as `polyp train --arch`)")
    num_classes: int = opt(3, "head size of the saved classifier (the head is not trained; `polyp train` skips it)")
    image_size: int = opt(64, "image side in pixels")
    val_fraction: float = opt(0.1, "images held out to measure restoration error")
    bezier_prob: float = opt(0.9, "probability of the Bezier intensity transform (half of them inverted)")
    shuffle_prob: float = opt(0.5, "probability of local pixel shuffling")
    shuffle_window: int = opt(8, "largest shuffling window side (px); keep it below the encoder's receptive field")
    paint_prob: float = opt(0.0, "probability of in-/out-painting (optional; 0 = off)")
    outpaint_share: float = opt(0.8, "share of painting that is out-painting (the rest in-painting)")

    def validate(self) -> None:
        super().validate()
        within(self, 0.0, 1.0, "bezier_prob", "shuffle_prob", "paint_prob", "outpaint_share")
        within(self, 0.0, 1.0, "val_fraction", hi_open=True)
        at_least(self, MIN_IMAGE_SIZE, "image_size")
        at_least(self, 1, "num_classes")
        if not 2 <= self.shuffle_window <= self.image_size:
            raise ConfigError(f"option --shuffle-window must be in [2, --image-size {self.image_size}], got {self.shuffle_window}")


COMMANDS = [
    Command("polyp", "train", PolypTrainConfig, "fastmed.polyp.train:run_train",
            "train the polyp recognizer on class folders"),
    Command("polyp", "predict", PolypPredictConfig, "fastmed.polyp.predict:run_predict",
            "per-image class probabilities from a recognizer checkpoint"),
    Command("polyp", "augment", PolypAugmentConfig, "fastmed.polyp.augment:run_augment",
            "train the class-conditioned generator (cycle + class + Sinkhorn distribution losses)"),
    Command("polyp", "generate", PolypGenerateConfig, "fastmed.polyp.generate:run_generate",
            "write a labelled generated dataset (class folders + manifest) with a trained generator"),
    Command("polyp", "pretrain", PolypPretrainConfig, "fastmed.polyp.pretrain:run_pretrain",
            "Models-Genesis self-supervised pre-training of the recognizer encoder"),
]
