"""Configs of ``fastmed export``, ``fastmed predict`` and ``fastmed bench`` (deployment)."""
from __future__ import annotations

from dataclasses import dataclass

from fastmed.cfg.base import Command, at_least, opt, require
from fastmed.cfg.common import OutOptions, PredictOptions
from fastmed.errors import ConfigError


@dataclass(kw_only=True)
class ExportConfig:
    weights: str = opt(help="a fastmed classifier or segmenter checkpoint (.pt)")
    format: str = opt("onnx", "artifact to write (aoti: an AOTInductor .pt2 package for Predictor and cmake/'s fastmed-run)",
                      choices=("onnx", "onnx-int8", "ort", "tensorrt", "aoti"))
    out: str | None = opt(None, "output file (default: beside the weights: .onnx, .int8.onnx, .ort, .engine, .pt2)")
    calib: str | None = opt(None, "image folder for int8 calibration (needed by onnx-int8 and --precision int8)")
    data: str | None = opt(None, "labelled class folder: parity images and the int8 accuracy change vs fp32")
    opset: int | None = opt(None, "ONNX opset (default: the exporter's current default)")
    exporter: str = opt("dynamo", "PyTorch ONNX exporter", choices=("dynamo", "torchscript"))
    batch: int = opt(0, "fixed batch size; 0 = dynamic batch axis")
    max_batch: int = opt(64, "largest batch of the dynamic axis / the TensorRT profile")
    uint8_input: bool = opt(False, "bake resize-free preprocessing into the graph: input (B, H, W, 3) uint8 RGB")
    parity_tol: float | None = opt(None, "max |Δprob| vs PyTorch before the export fails (default 1e-4 fp32, 1e-2 fp16)")
    per_channel: bool = opt(True, "int8: per-channel weight scales (falls back when accuracy drops)")
    max_drop: float = opt(1.0, "int8: largest accepted accuracy change vs fp32, in points")
    min_agreement: float = opt(0.99, "int8: smallest accepted top-1 agreement with fp32 on images held out from calibration")
    calib_images: int = opt(128, "int8: number of calibration images (spread over the folder)")
    precision: str = opt("fp16", "TensorRT engine precision", choices=("fp32", "fp16", "int8"))
    workspace_gb: float = opt(2.0, "TensorRT builder workspace in GiB")
    timing_cache: str | None = opt(None, "TensorRT timing cache file (default <out>.timing.cache)")
    device: str = opt("auto", "aoti: device to compile for: auto (CUDA when present) | cpu | cuda | cuda:N")
    seed: int = opt(0, "random seed (parity images when no folder is given)")

    def validate(self) -> None:
        if self.batch < 0:
            raise ConfigError(f"option --batch must be >= 0 (0 = dynamic), got {self.batch}")
        if self.max_batch < 2:
            raise ConfigError(f"option --max-batch must be >= 2, got {self.max_batch}")
        at_least(self, 0, "max_drop")
        _agreement_in_range(self)
        at_least(self, 1, "calib_images")
        at_least(self, 7, "opset")
        require(self, lambda v: v > 0, "> 0", "workspace_gb", "parity_tol")


@dataclass(kw_only=True)
class PredictConfig(PredictOptions):
    weights: str = opt(help="a .pt checkpoint, an .onnx/.ort file, a .pt2 (AOTInductor) package or a TensorRT engine")
    source: str = opt(help="an image, a folder of images, a video file, or a folder as an image sequence (--stream)")
    batch_size: int = opt(32, "images per forward pass (image mode)")
    stream: bool = opt(False, "treat a folder as a frame sequence: pipelined batch-1 inference with latency stats (videos always stream)")
    save_video: str | None = opt(None, "stream mode: write an annotated video here (.mp4)")
    queue_size: int = opt(8, "stream mode: frames per bounded queue between stages")
    max_frames: int | None = opt(None, "stream mode: stop after this many frames")
    threads: int = opt(0, "ONNX Runtime intra-op threads (0 = its default)")

    def validate(self) -> None:
        if self.batch_size < 1:
            raise ConfigError(f"option --batch-size must be >= 1, got {self.batch_size}")
        if self.queue_size < 1:
            raise ConfigError(f"option --queue-size must be >= 1, got {self.queue_size}")
        at_least(self, 1, "max_frames")
        at_least(self, 0, "threads")


@dataclass(kw_only=True)
class BenchConfig(OutOptions):
    """``fastmed bench``: each row runs on its backend's device (TensorRT on CUDA, the others on the CPU)."""

    weights: str = opt(help="a fastmed .pt checkpoint (every export row, PyTorch the reference), or one exported "
                            "file benched alone (.onnx, .int8.onnx, .ort, .pt2, .engine)")
    reference: str | None = opt(None, "with an exported --weights: the .pt it came from, for parity and agreement")
    seed: int = opt(0, "random seed (parity images when --data is not given)")
    data: str | None = opt(None, "labelled class folder: accuracy per row (and parity images)")
    calib: str | None = opt(None, "image folder for int8 calibration (int8 rows are skipped without it)")
    formats: list[str] = opt(["pytorch", "onnx", "onnx-int8", "tensorrt-fp16", "tensorrt-int8"], "rows to run")
    batch: int = opt(32, "batch size of the throughput column")
    warmup: int = opt(5, "untimed runs before timing")
    iters: int = opt(50, "timed runs at batch 1")
    max_drop: float = opt(1.0, "int8 rows: largest accepted accuracy change vs fp32, in points")
    min_agreement: float = opt(0.99, "int8 rows: smallest accepted top-1 agreement with fp32 (held-out images)")
    min_metric: float | None = opt(None, "exit 1 when any row's accuracy on --data is below this (0-1), for CI")
    exporter: str = opt("dynamo", "PyTorch ONNX exporter", choices=("dynamo", "torchscript"))
    threads: int = opt(0, "CPU threads for every backend (0 = PyTorch's default)")

    def validate(self) -> None:
        allowed = ("pytorch", "onnx", "onnx-int8", "tensorrt-fp16", "tensorrt-int8")
        bad = [f for f in self.formats if f not in allowed]
        if bad:
            raise ConfigError(f"option --formats: unknown {bad}; choose from {', '.join(allowed)}")
        if self.batch < 1 or self.iters < 1 or self.warmup < 0:
            raise ConfigError(f"--batch and --iters must be >= 1 and --warmup >= 0, got {self.batch}, {self.iters}, {self.warmup}")
        at_least(self, 0, "max_drop", "threads", "seed")
        _agreement_in_range(self)


def _agreement_in_range(cfg) -> None:
    if not 0 <= cfg.min_agreement <= 1:
        raise ConfigError(f"option --min-agreement must be in [0, 1] (a fraction of images), got {cfg.min_agreement}")


COMMANDS = [
    Command("export", None, ExportConfig, "fastmed.export.commands:run_export",
            "checkpoint → ONNX / ONNX int8 (QDQ) / ORT format / TensorRT engine / AOTInductor .pt2, with parity checks"),
    Command("predict", None, PredictConfig, "fastmed.export.commands:run_predict",
            "class probabilities from any model file for an image, a folder or a video (streaming)"),
    Command("bench", None, BenchConfig, "fastmed.export.commands:run_bench",
            "benchmark table of every backend: status, size, parity, accuracy, latency, throughput"),
]
