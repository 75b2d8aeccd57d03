"""Deployment of fastmed models (installed as ``fastmed.export``).

ONNX / ONNX Runtime (fp32, int8) / ORT format / TensorRT export with parity
checks (``export``), one ``Predictor`` for every format, streaming inference
(``stream_predict``) and a benchmark table (``bench``). Heavy runtimes are
imported lazily: ``import fastmed.export`` loads none of them.
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "export": "fastmed.export.exporter",
    "ExportResult": "fastmed.export.exporter",
    "ParityError": "fastmed.export.exporter",
    "Predictor": "fastmed.export.predictor",
    "ModelMetadata": "fastmed.export.metadata",
    "stream_predict": "fastmed.export.stream",
    "bench": "fastmed.export.bench",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'fastmed.export' has no attribute {name!r}")
