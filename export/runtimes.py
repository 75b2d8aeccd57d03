"""Inference backends behind :class:`~fastmed.export.predictor.Predictor`.

Each backend maps a prepared input batch (numpy, layout per its metadata) to
``(N, C)`` float32 logits with ``run(batch)`` and exposes ``meta`` and a short
``name``. ONNX Runtime and TensorRT are imported only when used.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from fastmed.errors import FastmedError
from fastmed.export.metadata import ModelMetadata, metadata_from_checkpoint, read_sidecar

ONNX_SUFFIXES = (".onnx", ".ort")
TENSORRT_SUFFIXES = (".engine", ".plan", ".trt")
AOTI_SUFFIX = ".pt2"


class TorchBackend:
    """A fastmed ``.pt`` checkpoint run in PyTorch eager mode (segmenters through their mask head)."""

    name = "pytorch"

    def __init__(self, path: str | os.PathLike, device: str = "auto"):
        import torch

        from fastmed.engine.checkpoint import load_model
        from fastmed.engine.device import select_device

        from fastmed.export.mask_head import deployable

        self.device = select_device(device)
        model, ckpt = load_model(path, map_location=self.device)
        self.meta = metadata_from_checkpoint(ckpt, path)
        self.model = deployable(model, self.meta.kind)
        self._torch = torch

    def run(self, batch: np.ndarray) -> np.ndarray:
        with self._torch.inference_mode():
            x = self._torch.from_numpy(batch).to(self.device)
            return self.model(x).float().cpu().numpy()


def check_output_classes(path: str | os.PathLike, shape, meta: ModelMetadata) -> None:
    """Raise when an output shape contradicts the metadata's class count (symbolic dims pass).

    Classifiers output ``(N, C)``, segmenters ``(N, C, H, W)`` mask logits.
    """
    dims = list(shape)
    rank = 4 if meta.kind == "segmenter" else 2
    classes = dims[1] if len(dims) == rank else None
    if len(dims) != rank or (isinstance(classes, int) and classes != meta.num_classes):
        raise FastmedError(f"{path}: the model outputs shape {tuple(dims)} but its fastmed metadata field "
                           f"'class_names' lists {meta.num_classes} classes; re-export the checkpoint")


def ort_providers(device: str = "auto") -> list[str]:
    """ONNX Runtime execution providers for ``device`` (CUDA first when asked and present)."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    if device.startswith("cuda") and "CUDAExecutionProvider" not in available:
        raise FastmedError(f"device={device!r} but onnxruntime has no CUDA provider; pip install 'fastmed[gpu]'")
    if device != "cpu" and "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


class OrtBackend:
    """An ``.onnx`` or ``.ort`` file run by ONNX Runtime.

    Metadata comes from the model's ``metadata_props`` (``.onnx``) or, for an
    ``.ort`` file without them, from the JSON sidecar export writes beside it. ``threads`` sets intra-op threads (0 = ORT default).
    """

    name = "onnxruntime"

    def __init__(self, path: str | os.PathLike, device: str = "auto", threads: int = 0):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3
        if threads:
            opts.intra_op_num_threads = threads
        # no busy-waiting between runs: on a shared CPU spinning threads starve everything else
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self.session = ort.InferenceSession(str(path), sess_options=opts, providers=ort_providers(device))
        except Exception as exc:  # ORT raises its own exception types for unreadable models
            raise FastmedError(f"ONNX Runtime cannot load {path}: {exc}") from exc
        props = dict(self.session.get_modelmeta().custom_metadata_map)
        if "class_names" not in props and Path(path).suffix.lower() == ".ort":
            self.meta = read_sidecar(path)  # export writes .ort metadata beside the file
        else:
            self.meta = ModelMetadata.from_props(props, str(path))
        self.input_name = self.session.get_inputs()[0].name
        check_output_classes(path, self.session.get_outputs()[0].shape, self.meta)

    def run(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: batch})[0].astype(np.float32, copy=False)


def open_backend(path: str | os.PathLike, device: str = "auto", threads: int = 0):
    """The backend for a file, chosen by its suffix (``.pt``, ``.onnx``/``.ort``, ``.pt2``, ``.engine``/``.plan``)."""
    path = Path(path)
    if not path.is_file():
        raise FastmedError(f"model file not found: {path}")
    suffix = path.suffix.lower()
    if suffix in (".pt", ".pth"):
        return TorchBackend(path, device)
    if suffix in ONNX_SUFFIXES:
        return OrtBackend(path, device, threads)
    if suffix in TENSORRT_SUFFIXES:
        from fastmed.export.tensorrt_runtime import TensorRTBackend

        return TensorRTBackend(path)
    if suffix == AOTI_SUFFIX:
        from fastmed.export.aoti_runtime import AotiBackend

        return AotiBackend(path)
    raise FastmedError(f"unknown model file type {suffix!r} for {path}; expected .pt, .onnx, .ort, .pt2 "
                       f"or a TensorRT engine ({', '.join(TENSORRT_SUFFIXES)})")
