"""PyTorch classifier → ONNX with a dynamic batch axis, checked and self-describing.

Exporter choice (``exporter=``): ``"dynamo"`` (default) is the torch.export-based
exporter, PyTorch's default since 2.9, maintained, and the one that reaches
current opsets; it needs ``onnxscript`` and is slow on a CPU (~10-25 s for
MobileNetV3 here, mostly decompositions). ``"torchscript"`` is the legacy
exporter: deprecated and capped at opset 20, but ~10x faster; kept as a
fallback. The dynamo exporter's known trap is 0/1 specialization: traced with a
batch of 1, the batch axis can be frozen to 1. We trace with a batch of 2 and
an explicit ``torch.export.Dim``, and the tests run the exported file at batch
1 and at a larger batch, for both exporters.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch

from fastmed.errors import FastmedError
from fastmed.export.metadata import FLOAT_NCHW, UINT8_NHWC, ModelMetadata, set_onnx_metadata

EXPORTERS = ("dynamo", "torchscript")
TRACE_BATCH = 2  # not 1: a size-1 example invites the exporter to specialize the batch axis


class _Uint8Input(torch.nn.Module):
    """Bakes preprocessing into the graph: ``(B, H, W, 3)`` uint8 → normalized ``(B, 3, H, W)`` → model."""

    def __init__(self, model: torch.nn.Module, mean: list[float], std: list[float]):
        super().__init__()
        self.model = model
        self.register_buffer("scale", 1.0 / (255.0 * torch.tensor(std).view(1, 3, 1, 1)))
        self.register_buffer("shift", (torch.tensor(mean) / torch.tensor(std)).view(1, 3, 1, 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.permute(0, 3, 1, 2).float()
        return self.model(x * self.scale - self.shift)


class _HalfPrecision(torch.nn.Module):
    """fp32 in/out around an fp16 network (for TensorRT's strongly typed fp16 engines)."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model.half()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images.half()).float()


def export_onnx(
    model: torch.nn.Module,
    meta: ModelMetadata,
    out: str | os.PathLike,
    *,
    opset: int | None = None,
    fixed_batch: int | None = None,
    max_batch: int = 1024,
    uint8_input: bool = False,
    half: bool = False,
    exporter: str = "dynamo",
) -> Path:
    """Export an eval-mode classifier to ``out`` and return the path.

    Input ``images``: ``(B, 3, H, W)`` float32 normalized, or with
    ``uint8_input`` ``(B, H, W, 3)`` uint8 in ``meta.channel_order``; output
    ``logits``: ``(B, C)`` float32. ``B`` is dynamic in ``[1, max_batch]``
    unless ``fixed_batch`` is given. ``half`` stores fp16 weights and
    activations (fp32 input/output). The file passes ``onnx.checker`` (full
    check) and carries ``meta`` in ``metadata_props``.
    """
    import onnx

    if fixed_batch is not None and fixed_batch < 1:
        raise FastmedError(f"fixed_batch must be >= 1 or None, got {fixed_batch}")
    if exporter not in EXPORTERS:
        raise FastmedError(f"exporter must be one of {EXPORTERS}, got {exporter!r}")
    if max_batch < TRACE_BATCH:
        raise FastmedError(f"max_batch must be >= {TRACE_BATCH}, got {max_batch}")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    h, w = meta.input_size
    net = model.eval().cpu()
    if half:
        import copy

        net = _HalfPrecision(copy.deepcopy(net)).eval()
    if uint8_input:
        net = _Uint8Input(net, meta.mean, meta.std).eval()  # a new Module is in train mode
        example = torch.randint(0, 256, (fixed_batch or TRACE_BATCH, h, w, 3), dtype=torch.uint8)
    else:
        example = torch.randn(fixed_batch or TRACE_BATCH, 3, h, w)
    names = {"input_names": [meta.input_name], "output_names": [meta.output_name], "opset_version": opset}
    if exporter == "dynamo":
        dynamic = None if fixed_batch else ({0: torch.export.Dim("batch", min=1, max=max_batch)},)
        kwargs = {"dynamo": True, "dynamic_shapes": dynamic, "external_data": False, "optimize": True, "verbose": False}
    else:
        axes = None if fixed_batch else {meta.input_name: {0: "batch"}, meta.output_name: {0: "batch"}}
        kwargs = {"dynamo": False, "dynamic_axes": axes, "do_constant_folding": True}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(net, (example,), str(out), **names, **kwargs)
        except Exception as exc:
            raise FastmedError(f"ONNX export of {meta.arch} failed: {type(exc).__name__}: {exc}") from exc
    proto = onnx.load(str(out))
    meta = meta.replace(input_format=UINT8_NHWC if uint8_input else FLOAT_NCHW,
                        precision="fp16" if half else meta.precision)
    set_onnx_metadata(proto, meta)
    onnx.checker.check_model(proto, full_check=True)
    onnx.save(proto, str(out))
    return out


def onnx_opset(path: str | os.PathLike) -> int:
    """The default-domain opset of an ONNX file."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    return next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))


def onnx_batch_dim(path: str | os.PathLike) -> int | str:
    """The first input's batch dimension: an int when fixed, its symbol when dynamic."""
    import onnx

    dim = onnx.load(str(path), load_external_data=False).graph.input[0].type.tensor_type.shape.dim[0]
    return dim.dim_param or int(dim.dim_value)

