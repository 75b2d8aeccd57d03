"""Configs of ``fastmed polyp ...`` (the polyp recognizer and its generator)."""
from __future__ import annotations

from dataclasses import dataclass

from fastmed.cfg.base import Command, opt
from fastmed.cfg.common import RunOptions, TrainOptions


@dataclass(kw_only=True)
class PolypTrainConfig(TrainOptions):
    data: str = opt(help="dataset folder with train/ and val/ class folders (or a folder of class folders)")
    arch: str = opt("resnet18", "classifier architecture (fastmed.nets.registry)")
    image_size: int = opt(64, "input side in pixels (images are resized)")
    weights_init: str | None = opt(None, "initial weights: a fastmed checkpoint or a torchvision state_dict file")
    val_fraction: float = opt(0.2, "validation fraction when DATA has no val/ folder")
    augment: bool = opt(True, "random flips, rotations and colour jitter during training")


@dataclass(kw_only=True)
class PolypPredictConfig(RunOptions):
    weights: str = opt(help="a fastmed classifier checkpoint (.pt)")
    source: str = opt(help="an image, a folder (searched recursively) or a .txt list of image paths")
    batch_size: int = opt(64, "images per forward pass")
    save: str | None = opt(None, "write predictions to this .csv or .json file (default: <out>/predictions.csv)")


COMMANDS = [
    Command("polyp", "train", PolypTrainConfig, "fastmed.polyp.train:run_train",
            "train the polyp recognizer on class folders"),
    Command("polyp", "predict", PolypPredictConfig, "fastmed.polyp.predict:run_predict",
            "per-image class probabilities from a recognizer checkpoint"),
]
