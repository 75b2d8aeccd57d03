"""Configs of ``fastmed wsi ...``: tile, features, train, predict, heatmap (attention MIL on slides)."""
from __future__ import annotations

from dataclasses import dataclass

from fastmed.cfg.base import Command, opt
from fastmed.cfg.common import PredictOptions, TrainOptions
from fastmed.errors import ConfigError

TILING_MODES = ("pad", "drop", "bbox")  # same as fastmed.wsi.tiling.TILING_MODES (kept import-free here)
TISSUE_METHODS = ("od", "saturation")   # same as fastmed.wsi.tissue.METHODS


def _positive(cfg, *names: str) -> None:
    for name in names:
        value = getattr(cfg, name)
        if value is not None and value <= 0:
            raise ConfigError(f"option --{name.replace('_', '-')} must be > 0, got {value}")


@dataclass(kw_only=True)
class JobOptions:
    """Options of the batch jobs over slides that several processes or Slurm tasks share (``fastmed.wsi.shard``)."""

    shard: str | None = opt(None, "K/N: this job takes every N-th slide (sorted ids) from the K-th (default: "
                            "SLURM_ARRAY_TASK_ID/COUNT, else RANK/WORLD_SIZE, else 0/1 = all)")
    claim: bool = opt(False, "take each slide through a lock file in OUT/.locks first (jobs on a shared filesystem "
                      "balance uneven shards; a failed slide's lock is kept)")
    stale_lock_hours: float | None = opt(None, "first remove locks older than this many hours (jobs that died; 0 = all)")
    overwrite: bool = opt(False, "redo slides whose .h5 exists (default: resume, skip them)")

    def validate(self) -> None:
        if self.claim and self.overwrite:
            raise ConfigError("options --claim and --overwrite exclude each other: claiming jobs skip finished slides")
        if self.stale_lock_hours is not None and not self.stale_lock_hours >= 0:
            raise ConfigError(f"option --stale-lock-hours must be >= 0, got {self.stale_lock_hours}")


@dataclass(kw_only=True)
class WsiTileConfig(JobOptions):
    slides: str = opt(help="folder of slides (any format OpenSlide reads: .svs .tif .ndpi .mrxs .scn .dcm ...)")
    out: str = opt(help="output folder: <slide_id>.h5 per slide, masks/<slide_id>.png, errors.csv, tiling.json")
    annotations: str | None = opt(None, "folder of <slide_id>.geojson / .xml region annotations (default: SLIDES/annotations)")
    patch_size: int = opt(224, "patch side in pixels (at --mpp)")
    mpp: float | None = opt(0.5, "target microns per pixel (0.5 ~ 20x, 0.25 ~ 40x); none = level 0 as is")
    assume_mpp: float | None = opt(None, "level-0 microns per pixel for slides that record none (else level 0 is tiled as is)")
    step: int | None = opt(None, "stride between patches in pixels (default: patch size, no overlap)")
    mode: str = opt("bbox", "pad: whole-slide grid, edge tiles padded; drop: partial edge tiles dropped; "
                    "bbox: grid over the tissue bounding box", TILING_MODES)
    min_tissue: float = opt(0.25, "keep a patch when at least this fraction of it is tissue")
    mask_downsample: float = opt(32.0, "tissue detection runs on the level closest to this downsample")
    tissue_method: str = opt("od", "od: optical density above the slide's glass, pen marks and grey artefacts rejected; "
                             "saturation: HSV saturation with Otsu (the previous default)", TISSUE_METHODS)
    tissue_threshold: float | None = opt(None, "fixed tissue threshold instead of the automatic one: summed optical density "
                                         "above glass for od (e.g. 0.1), HSV saturation 0..255 for saturation")
    median: int = opt(7, "median blur window for tissue detection (pixels of the mask level)")
    close: int = opt(4, "morphological closing size for tissue detection (0 = none)")
    min_tissue_patches: float = opt(1.0, "drop tissue pieces smaller than this many patch areas")
    max_hole_patches: float = opt(1.0, "fill holes in the tissue smaller than this many patch areas")
    exclude_classes: list[str] = opt(["_2", "exclusion", "exclude", "ignore", "normal", "other"],
                                     "annotation classes that are not positive regions")
    verify: bool = opt(False, "read every tile once (finds corrupt tiles; slower)")
    workers: int = opt(2, "slides processed in parallel (processes)")
    progress: bool = opt(True, "show progress bars")

    def validate(self) -> None:
        super().validate()
        _positive(self, "patch_size", "mpp", "assume_mpp", "step", "mask_downsample")
        if not 0 <= self.min_tissue <= 1:
            raise ConfigError(f"option --min-tissue must be in [0, 1], got {self.min_tissue}")
        top, hint = (255, "") if self.tissue_method == "saturation" else (3, "; for an HSV-saturation threshold add --tissue-method saturation")
        if self.tissue_threshold is not None and not 0 <= self.tissue_threshold <= top:
            raise ConfigError(f"option --tissue-threshold must be in [0, {top}] for --tissue-method {self.tissue_method}, "
                              f"got {self.tissue_threshold}{hint}")


@dataclass(kw_only=True)
class WsiFeaturesConfig(JobOptions):
    tiles: str = opt(help="folder written by `fastmed wsi tile`")
    out: str = opt(help="output folder: <slide_id>.h5 with features, errors.csv, features.json")
    encoder: str = opt("resnet50_l3", "resnet50_l3 (ResNet-50 up to layer3, 1024 features), tiny (fast, 64), "
                       "or a registered classifier (resnet18, mobilenet_v3_small, ...)")
    weights: str | None = opt(None, "encoder weights file (torchvision state_dict or fastmed checkpoint); "
                              "none = random init (nothing is downloaded)")
    slides: str | None = opt(None, "folder holding the slides, when they moved since tiling")
    batch_size: int = opt(64, "patches per forward pass")
    workers: int = opt(0, "DataLoader processes reading patches (0 = main process)")
    device: str = opt("auto", "auto | cpu | cuda | cuda:N")
    seed: int = opt(0, "seed of the encoder's random init")
    dtype: str = opt("float32", "stored feature type: float16 halves the files and what `wsi train` streams",
                     ("float32", "float16"))
    progress: bool = opt(True, "show progress bars")

    def validate(self) -> None:
        super().validate()
        _positive(self, "batch_size")


@dataclass(kw_only=True)
class WsiTrainConfig(TrainOptions):
    features: str = opt(help="folder written by `fastmed wsi features`")
    stream: bool = opt(False, "read each step's slides from the feature files (--workers processes) instead of holding "
                       "every training feature in memory: memory is a few batches, not the cohort; same batches")
    labels: str = opt(help="CSV with columns slide_id,label")
    positive: str = opt("tumor", "the label value of abnormal slides (every other value is negative)")
    val_fraction: float = opt(0.3, "slides held out for validation (stratified)")
    batch_size: int = opt(4, "slides per step (ragged bags; 1 = one slide per step)")
    epochs: int = opt(20, "number of epochs")
    lr: float = opt(5e-4, "learning rate (AdamW)")
    hidden: int = opt(128, "patch embedding size")
    attn_dim: int = opt(64, "gated-attention hidden size")
    dropout: float = opt(0.1, "dropout on patch embeddings")
    normalize: str = opt("sigmoid", "attention normalization: sigmoid divided by the sum (the method) or softmax",
                         ("sigmoid", "softmax"))
    w_patch: float = opt(1.0, "weight of loss 1: patch classifier on labelled patches of several slides")
    w_bag: float = opt(1.0, "weight of loss 2: bag classifier on the attention-pooled slide")
    w_topk: float = opt(0.5, "weight of loss 3: instance classifier on the K highest-attention patches")
    w_attn: float = opt(0.5, "weight of loss 4: sigmoid(attention) x patch probability vs patch label")
    top_k: int = opt(8, "K of loss 3 (clamped to the bag size)")
    max_patches: int = opt(4096, "at most this many random patches per slide per training step (bounds memory)")
    patch_samples: int = opt(512, "labelled patches per step for loss 1 (drawn across the step's slides)")
    patch_label_fraction: float = opt(1.0, "keep the patch labels of this fraction of the positive training slides "
                                      "(chosen with --seed); the others count as unannotated and feed only the bag and "
                                      "top-K losses (negative slides stay all-negative)")
    threshold: float = opt(0.5, "slide probability threshold for accuracy/F1 and predictions")

    def validate(self) -> None:
        super().validate()
        if not 0 <= self.val_fraction < 1:
            raise ConfigError(f"option --val-fraction must be in [0, 1), got {self.val_fraction}")
        _positive(self, "top_k", "max_patches", "hidden", "attn_dim")
        if not 0 <= self.patch_label_fraction <= 1:
            raise ConfigError(f"option --patch-label-fraction must be in [0, 1], got {self.patch_label_fraction}")
        if min(self.w_patch, self.w_bag, self.w_topk, self.w_attn) < 0:
            raise ConfigError("loss weights --w-patch/--w-bag/--w-topk/--w-attn must be >= 0")


@dataclass(kw_only=True)
class WsiPredictConfig(PredictOptions):  # deterministic: no --seed
    weights: str = opt(help="a `fastmed wsi train` checkpoint (weights/best.pt)")
    features: str = opt(help="folder of per-slide feature files (`fastmed wsi features` with the training encoder)")
    labels: str | None = opt(None, "optional CSV slide_id,label: adds AUC/accuracy/F1 to the output")
    threshold: float | None = opt(None, "slide probability threshold (default: the checkpoint's, 0.5)")
    save: str | None = opt(None, "predictions file .csv (default: <out>/predictions.csv)")
    progress: bool = opt(True, "show a progress bar over the slides")


@dataclass(kw_only=True)
class WsiHeatmapConfig(PredictOptions):  # deterministic: no --seed
    weights: str = opt(help="a `fastmed wsi train` checkpoint")
    features: str = opt(help="folder of per-slide feature files")
    slides: str | None = opt(None, "folder holding the slides (default: the paths recorded at tiling)")
    level: int | None = opt(None, "slide level of the background thumbnail (default: largest level <= --max-side)")
    max_side: int = opt(2048, "longest side of the heatmap images in pixels")
    alpha: float = opt(0.5, "overlay opacity")
    patch_threshold: float = opt(0.5, "patches whose probability reaches this go into the GeoJSON (QuPath detections)")
    progress: bool = opt(True, "show a progress bar over the slides")


@dataclass(kw_only=True)
class WsiStatusConfig:
    folder: str = opt(help="output folder of `fastmed wsi tile` or `fastmed wsi features` (all its jobs' reports)")
    source: str | None = opt(None, "the slides (tiling) or tiles (features) folder (default: the one the reports name)")
    list_pending: bool = opt(False, "also list the pending slides")


COMMANDS = [
    Command("wsi", "tile", WsiTileConfig, "fastmed.wsi.tile:run_tile",
            "detect tissue and tile slides into patch coordinates (+ patch labels from annotations), one .h5 per slide"),
    Command("wsi", "features", WsiFeaturesConfig, "fastmed.wsi.features:run_features",
            "encode every patch with a frozen CNN, cached per slide"),
    Command("wsi", "status", WsiStatusConfig, "fastmed.wsi.status:run_status",
            "done / failed / running / pending slides of a tile or features folder (every job's report)"),
    Command("wsi", "train", WsiTrainConfig, "fastmed.wsi.train:run_train",
            "train the attention-MIL slide classifier (four losses, several slides per step)"),
    Command("wsi", "predict", WsiPredictConfig, "fastmed.wsi.predict:run_predict",
            "slide probabilities (and metrics when labels are given)"),
    Command("wsi", "heatmap", WsiHeatmapConfig, "fastmed.wsi.heatmap:run_heatmap",
            "attention / patch-abnormality / combined heatmaps (PNG) and positive patches (GeoJSON for QuPath)"),
]
