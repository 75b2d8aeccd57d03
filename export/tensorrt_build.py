"""TensorRT engines from fastmed ONNX files (TensorRT 10/11 Python API, strongly typed).

TensorRT 11 removed the FP16/INT8 builder flags and the INT8 calibrator: a
network is strongly typed, its precision is the ONNX graph's. So:

* fp16 — the engine is built from an fp16 ONNX graph (``export_onnx(half=True)``:
  fp16 weights and activations, fp32 input/output);
* int8 — from the QDQ graph of ``onnx-int8`` (explicit quantization), the same
  artifact ONNX Runtime runs;
* fp32 — from the plain ONNX graph.

The build uses one optimization profile over the batch range and a timing
cache file that is read when present and written back after the build. The
metadata goes into a JSON sidecar (``model.engine.json``). TensorRT is
imported lazily; without it (or without a CUDA GPU) ``require_tensorrt`` says
to install the ``gpu`` extra.
"""
from __future__ import annotations

import os
from pathlib import Path

from fastmed.errors import ConfigError, FastmedError
from fastmed.export.metadata import ModelMetadata, write_sidecar

PRECISIONS = ("fp32", "fp16", "int8")
MISSING = ("TensorRT is not available: the tensorrt export and engine inference need the `gpu` extra "
           "(pip install 'fastmed[gpu]') and an NVIDIA GPU with CUDA")


def require_tensorrt():
    """Import and return the ``tensorrt`` module, or raise ``FastmedError`` naming the ``gpu`` extra."""
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise FastmedError(f"{MISSING} ({exc})") from exc
    import torch

    if not torch.cuda.is_available():
        raise FastmedError(f"{MISSING} (no CUDA GPU visible to PyTorch)")
    return trt


def check_build_args(precision: str, min_batch: int, max_batch: int, workspace_gb: float, opt_batch: int | None = None) -> None:
    """Validate engine build arguments before any heavy work."""
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    opt = min_batch if opt_batch is None else opt_batch
    if not 1 <= min_batch <= opt <= max_batch:
        raise ConfigError(f"batch profile needs 1 <= min <= opt <= max, got min={min_batch} opt={opt} max={max_batch}")
    if workspace_gb <= 0:
        raise ConfigError(f"workspace_gb must be > 0, got {workspace_gb}")


def prepare_tensorrt_onnx(model, meta: ModelMetadata, out: str | os.PathLike, precision: str, **onnx_kw) -> Path:
    """The ONNX graph an fp32 / fp16 engine is built from (int8 uses the ``onnx-int8`` file)."""
    from fastmed.export.onnx_export import export_onnx

    if precision not in ("fp32", "fp16"):
        raise ConfigError(f"prepare_tensorrt_onnx makes fp32 or fp16 graphs, got {precision!r} (int8: export onnx-int8)")
    return export_onnx(model, meta, out, half=precision == "fp16", **onnx_kw)


def build_engine(
    onnx_path: str | os.PathLike,
    out: str | os.PathLike,
    meta: ModelMetadata,
    *,
    min_batch: int = 1,
    opt_batch: int = 1,
    max_batch: int = 64,
    workspace_gb: float = 2.0,
    timing_cache: str | os.PathLike | None = None,
) -> list[Path]:
    """Build a serialized engine from ``onnx_path``; return ``[engine, sidecar, timing cache]``.

    The engine's precision is the graph's (strongly typed network). The
    profile spans ``(min_batch..max_batch, *input shape)`` with ``opt_batch``
    as the tuning point; ``timing_cache`` defaults to ``<out>.timing.cache``.
    """
    check_build_args(meta.precision, min_batch, max_batch, workspace_gb, opt_batch)
    trt = require_tensorrt()
    out = Path(out)
    cache_path = Path(timing_cache) if timing_cache else out.with_name(out.name + ".timing.cache")
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    if int(trt.__version__.split(".")[0]) < 11:  # strongly typed is the only mode from 11 on
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "\n".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise FastmedError(f"TensorRT cannot parse {onnx_path}:\n{errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gb * (1 << 30)))
    cache = config.create_timing_cache(cache_path.read_bytes() if cache_path.is_file() else b"")
    config.set_timing_cache(cache, ignore_mismatch=False)
    profile = builder.create_optimization_profile()
    inp = network.get_input(0)
    shape = tuple(inp.shape)[1:]
    profile.set_shape(inp.name, (min_batch, *shape), (opt_batch, *shape), (max_batch, *shape))
    config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise FastmedError(f"TensorRT failed to build an engine from {onnx_path} (see the log above)")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(bytes(serialized))
    cache_path.write_bytes(bytes(config.get_timing_cache().serialize()))
    sidecar = write_sidecar(out, meta, {"tensorrt_version": trt.__version__, "source_onnx": Path(onnx_path).name,
                                        "profile": {"min": min_batch, "opt": opt_batch, "max": max_batch}})
    return [sidecar, cache_path]
