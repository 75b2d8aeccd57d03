"""Per-sample gradient dot products: ``per_sample_grad_dot(model, loss_fn, inputs, targets, direction)``.

For each of the M samples of a batch, the dot product of the gradient of its
own loss with a fixed ``direction`` (e.g. the mean gradient of a trusted
batch, as in learning-to-reweight)::

    d = per_sample_grad_dot(model, loss_fn, x, y, g)    # x (M, ...), loss_fn(model(x), y) -> (M,); d (M,)

Exact, and without materializing M per-sample gradients: one forward and one
backward of the batch (stopping at the first layers' outputs), plus one
contraction per layer (see ``grad_dot_reference`` for the maths).
``backend="auto"`` fuses the convolution / linear contractions with the
per-sample sum in Triton on CUDA (float32/float16/bfloat16); elsewhere it uses
``grad_dot_cpu``, which picks per convolution the fastest of four exact
contractions (timed on first use for each layer configuration and shapes)
and takes GroupNorm's per-sample affine gradients from its own backward kernel.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from fastmed.kernels._dispatch import check_same_device, check_tensor, resolve_backend
from fastmed.kernels.grad_dot_cpu import layer_dot_cpu
from fastmed.kernels.grad_dot_reference import layer_dot_reference, per_sample_grad_dot_reference

TRITON_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
BACKENDS = ("auto", "torch", "cpu", "triton")


def check_direction(model: nn.Module, direction: object) -> dict[str, torch.Tensor]:
    """Validate ``direction`` against ``model.named_parameters()``; return it as a dict."""
    if not isinstance(direction, dict):
        raise TypeError(f"direction must be a dict of parameter name -> tensor, got {type(direction).__name__}")
    params = dict(model.named_parameters())
    for name, g in direction.items():
        if name not in params:
            import difflib

            close = difflib.get_close_matches(str(name), list(params), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ValueError(f"direction names {name!r}, which is not a parameter of the model{hint}")
        check_tensor(f"direction[{name!r}]", g)
        if g.shape != params[name].shape:
            raise ValueError(
                f"direction[{name!r}] must have the parameter's shape {tuple(params[name].shape)}, got {tuple(g.shape)}"
            )
        if not g.is_floating_point():
            raise ValueError(f"direction[{name!r}] must be floating point, got {g.dtype}")
        check_same_device(**{f"parameter {name!r}": params[name], f"direction[{name!r}]": g})
    return direction


def per_sample_grad_dot(
    model: nn.Module,
    loss_fn: Callable[[object, object], torch.Tensor],
    inputs: torch.Tensor,
    targets: object,
    direction: dict[str, torch.Tensor],
    *,
    backend: str = "auto",
) -> torch.Tensor:
    """``d_m = <grad_theta loss_fn(model(inputs), targets)[m], direction>`` for every sample m.

    Args:
        model: the network. Samples must be independent: BatchNorm in training
            mode (batch statistics) is refused with ``ValueError``. Conv1d/2d/3d,
            ConvTranspose1d/2d/3d, Linear, GroupNorm, LayerNorm, InstanceNorm and
            eval-mode BatchNorm have exact fast rules; any other layer with
            parameters is handled exactly through ``torch.func.jvp`` (a warning
            names it).
        loss_fn: ``loss_fn(outputs, targets) -> (M,)`` per-sample losses.
        inputs: ``(M, ...)`` floating-point batch, on the model's device.
        targets: passed to ``loss_fn`` unchanged.
        direction: parameter name (as in ``model.named_parameters()``) -> tensor
            of that parameter's shape; parameters left out count as zero.
        backend: ``"auto"`` | ``"torch"`` (the reference contractions) |
            ``"cpu"`` (``grad_dot_cpu``: per layer the cheaper exact rule; any
            device) | ``"triton"`` (the fused contraction for conv/linear
            layers; float64 uses the reference). ``"auto"``: Triton on CUDA,
            ``"cpu"`` otherwise.

    Returns:
        ``(M,)`` tensor (dtype of the losses), detached. The model's ``.grad``
        fields are not touched.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not callable(loss_fn):
        raise TypeError(f"loss_fn must be callable, got {type(loss_fn).__name__}")
    check_tensor("inputs", inputs)
    if not inputs.is_floating_point() or inputs.dim() < 1 or inputs.shape[0] < 1:
        raise ValueError(f"inputs must be a floating-point (M, ...) batch with M >= 1, got {inputs.dtype} {tuple(inputs.shape)}")
    direction = check_direction(model, direction)
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    choice = "cpu" if backend == "cpu" else resolve_backend(backend, inputs)
    if choice == "triton" and inputs.dtype in TRITON_DTYPES:
        from fastmed.kernels.grad_dot_triton import layer_dot_triton

        layer_dot = layer_dot_triton
    elif choice == "cpu" or (backend == "auto" and choice == "torch"):
        layer_dot = layer_dot_cpu
    else:
        layer_dot = layer_dot_reference
    return per_sample_grad_dot_reference(model, loss_fn, inputs, targets, direction, layer_dot=layer_dot)
