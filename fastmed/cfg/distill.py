"""Configs of ``fastmed distill ...`` (a small student from a frozen teacher)."""
from __future__ import annotations

from dataclasses import dataclass

from fastmed.cfg.base import Command, opt, within
from fastmed.cfg.common import TrainOptions
from fastmed.cfg.polyp import PolypPredictConfig


@dataclass(kw_only=True)
class DistillTrainConfig(TrainOptions):
    data: str = opt(help="'digits' (scikit-learn's bundled 8x8 digits) or a dataset folder with train/ and val/ "
                         "class folders (or a folder of class folders)")
    teacher: str | None = opt(None, "teacher: a fastmed classifier checkpoint (.pt), e.g. from `fastmed polyp train`; "
                                    "omitted: --arch is trained from labels alone (the from-scratch baseline)")
    arch: str = opt("mobilenet_v3_small", "student architecture (a classifier of fastmed.nets.classifiers)")
    image_size: int | None = opt(None, "the student's input side in pixels (default: the teacher's; without one "
                                          "32 for digits, 64 otherwise); the teacher keeps its own")
    val_fraction: float = opt(0.2, "validation fraction when DATA has no val/ folder")
    label_fraction: float = opt(1.0, "fraction of training images (per class) whose labels the student's "
                                     "cross-entropy sees; the others are distilled only")
    batch_size: int = opt(64, "images per step (the joint distribution is estimated per batch)")
    ce_weight: float = opt(1.0, "weight of the cross-entropy on labels")
    kd_weight: float = opt(1.0, "weight of Hinton's KD term (0 = off)")
    temperature: float = opt(4.0, "KD temperature")
    mi_weight: float = opt(1.0, "weight of the mutual-information loss (0 = off)")
    prior: bool = opt(True, "replace the student marginal by a learnable Gaussian prior (false: plain IIC)")
    prior_weight: float = opt(1.0, "weight λ of KL(student marginal ‖ prior)")
    prior_init_std: float = opt(0.1, "initial noise scale d of the prior")
    prior_target: str = opt("none", "target class distribution π the prior is also pulled towards: none (the prior "
                                    "fits the student's marginal alone), balanced (uniform), weak (the "
                                    "--weak-classes get --weak-boost times the mass of the others)")
    target_weight: float = opt(1.0, "weight μ of KL(π ‖ prior) against KL(student marginal ‖ prior) "
                                    "(with --prior-target balanced|weak)")
    weak_classes: str | None = opt(None, "comma-separated class names of the weak (rare) classes: favoured by "
                                         "--prior-target weak, cut by --weak-train-fraction, scored as val/recall_weak")
    weak_boost: float = opt(2.0, "with --prior-target weak: mass of a weak class in π relative to another class")
    weak_train_fraction: float = opt(1.0, "keep this fraction of the --weak-classes' training images (the same "
                                          "draw for every seed; an imbalanced-data experiment; 1 = all)")
    feature_weight: float = opt(0.0, "weight of the L2 feature-matching baseline: relative squared error between "
                                     "a learned linear projection of the student's pooled features and the "
                                     "teacher's (0 = off)")
    teacher_aug: float = opt(0.5, "augmentation strength of the teacher's (weak) view")
    student_aug: float = opt(1.5, "augmentation strength of the student's (strong) view")
    flips: bool | None = opt(None, "flips and 90° turns in the augmentation (default: off for digits, on otherwise)")

    def validate(self) -> None:
        from fastmed.errors import ConfigError

        super().validate()
        for name in ("ce_weight", "kd_weight", "mi_weight", "feature_weight", "target_weight", "teacher_aug",
                     "student_aug"):
            if getattr(self, name) < 0:
                raise ConfigError(f"option --{name.replace('_', '-')} must be >= 0, got {getattr(self, name)}")
        if self.teacher is None and (self.kd_weight > 0 or self.mi_weight > 0 or self.feature_weight > 0):
            raise ConfigError("options --kd-weight/--mi-weight/--feature-weight need --teacher; set them to 0 to "
                              "train from labels alone")
        if self.ce_weight == 0 and self.kd_weight == 0 and self.mi_weight == 0:
            raise ConfigError("set --ce-weight, --kd-weight or --mi-weight > 0 (--feature-weight alone trains no "
                              "classifier head)")
        if self.prior_target != "none" and not (self.prior and self.mi_weight > 0):
            raise ConfigError(f"--prior-target {self.prior_target} needs the prior: --mi-weight > 0 and --prior true")
        if not 0.0 < self.weak_train_fraction <= 1.0:
            raise ConfigError(f"option --weak-train-fraction must be in (0, 1], got {self.weak_train_fraction}")
        if self.weak_train_fraction < 1.0 and not self.weak_classes:
            raise ConfigError("--weak-train-fraction needs --weak-classes (the classes to cut)")
        if self.temperature <= 0:
            raise ConfigError(f"option --temperature must be > 0, got {self.temperature}")
        if self.prior and self.mi_weight > 0 and self.prior_weight <= 0:
            raise ConfigError(f"option --prior-weight must be > 0 with --prior, got {self.prior_weight}")
        if self.prior_init_std <= 0:
            raise ConfigError(f"option --prior-init-std must be > 0, got {self.prior_init_std}")
        within(self, 0.0, 1.0, "label_fraction")
        within(self, 0.0, 1.0, "val_fraction", hi_open=True)
        if self.image_size is not None and self.image_size < 8:
            raise ConfigError(f"option --image-size must be >= 8, got {self.image_size}")


@dataclass(kw_only=True)
class DistillPredictConfig(PolypPredictConfig):
    """The same options as ``fastmed polyp predict``: a student is an ordinary classifier checkpoint."""


COMMANDS = [
    Command("distill", "train", DistillTrainConfig, "fastmed.distill.train:run_train",
            "distill a small student (MobileNet) from a frozen teacher checkpoint: mutual information with a "
            "learnable Gaussian prior (optionally favouring weak classes), optional Hinton KD and L2 features"),
    Command("distill", "predict", DistillPredictConfig, "fastmed.polyp.predict:run_predict",
            "per-image class probabilities from a student checkpoint (the classifier predictor of `polyp predict`)"),
]
