"""Deployment of fastmed models (installed as ``fastmed.export``).

ONNX / ONNX Runtime (fp32, int8) / TensorRT export, a ``Predictor`` for every
format, streaming inference and a benchmark table. Heavy runtimes are
imported lazily inside the functions that need them.
"""
