"""Faster contractions for ``per_sample_grad_dot`` in plain PyTorch (the CPU path of ``backend="auto"``).

Same maths as ``grad_dot_reference`` (``<delta_m, f(a_m; G_W)> + <sum delta_m, G_b>``
per layer), computed the way that is cheapest for the layer's shape:

* convolutions (any dimension, transposed or not) with few channels per group
  (``C_in/groups * C_out/groups <= PER_SAMPLE_GRAD_MAX_CHANNELS``): the per-sample
  weight gradients ``(M, *W.shape)``, all in ONE weight-gradient call of a
  convolution with ``M * groups`` groups (the batch folded into the channels),
  then a dot with ``G_W``. At these widths oneDNN's forward convolution (the
  reference's ``f(a; G_W)``) runs far below GEMM speed, its weight gradient does
  not, and the output ``(M, C_out, ...)`` is never formed;
* wider convolutions: ``f(a; G_W)`` as the reference, but dotted with ``delta``
  through a batched matrix product (no ``delta * f`` temporary);
* GroupNorm (and InstanceNorm on instance statistics): the per-sample affine
  gradients from the group statistics, ``rstd * (sum delta*a - mean * sum delta)``,
  without re-normalizing ``a``;
* bias terms: a sum over positions without moving the channel axis.

Linear, LayerNorm, eval-mode BatchNorm and non-``"zeros"`` padding modes use the
reference rules. The crossover ``PER_SAMPLE_GRAD_MAX_CHANNELS`` was measured with
``benchmarks/bench_grad_dot.py --layers`` (see README, per_sample_grad_dot).
"""
from __future__ import annotations

import torch
from torch import nn

from fastmed.kernels.grad_dot_reference import (
    CONV_TRANSPOSE_TYPES,
    CONV_TYPES,
    _bias_dot,
    directional_output,
    layer_dot_reference,
    transposed_output_padding,
)

# per-sample weight gradients when C_in/groups * C_out/groups is at most this (measured crossover)
PER_SAMPLE_GRAD_MAX_CHANNELS = 256


def per_sample_conv_weight_grad(module: nn.Module, a: torch.Tensor, delta: torch.Tensor, g_weight: torch.Tensor) -> torch.Tensor:
    """``(M, *W.shape)``: each sample's weight gradient, from one grouped weight-gradient call.

    Sample m's channels become group block m of a single-image convolution with
    ``M * groups`` groups, whose weight gradient is the M per-sample gradients
    stacked along the first axis. ``g_weight`` only supplies the (M-times
    stacked) weight shape; its values do not enter the weight gradient.
    """
    m = a.shape[0]
    transposed = isinstance(module, CONV_TRANSPOSE_TYPES)
    n = len(module.kernel_size)
    out_pad = transposed_output_padding(module, a, delta.shape) if transposed else [0] * n
    stacked = g_weight.expand(m, *g_weight.shape).reshape(m * g_weight.shape[0], *g_weight.shape[1:])
    _, grad_w, _ = torch.ops.aten.convolution_backward(
        delta.reshape(1, -1, *delta.shape[2:]), a.reshape(1, -1, *a.shape[2:]), stacked, None,
        list(module.stride), list(module.padding), list(module.dilation), transposed, out_pad,
        m * module.groups, [False, True, False],
    )
    return grad_w.reshape(m, *g_weight.shape)


def uses_per_sample_grad(module: nn.Module) -> bool:
    """True when the per-sample weight gradient is the cheaper contraction for this conv layer."""
    w = module.weight
    c_in, c_out = (w.shape[0], w.shape[1] * module.groups) if isinstance(module, CONV_TRANSPOSE_TYPES) else (w.shape[1] * module.groups, w.shape[0])
    return (c_in // module.groups) * (c_out // module.groups) <= PER_SAMPLE_GRAD_MAX_CHANNELS


def conv_dot(module: nn.Module, a: torch.Tensor, delta: torch.Tensor, g: dict[str, torch.Tensor]) -> torch.Tensor:
    """``(M,)`` contribution of a convolution or transposed convolution (zero padding)."""
    m = a.shape[0]
    out = delta.new_zeros(m)
    if "weight" in g:
        g_w = g["weight"].to(a.dtype)
        if uses_per_sample_grad(module):
            out = out + per_sample_conv_weight_grad(module, a, delta, g_w).reshape(m, -1) @ g_w.reshape(-1)
        else:
            f = directional_output(module, a, delta, g_w)
            out = out + torch.bmm(delta.reshape(m, 1, -1), f.reshape(m, -1, 1)).reshape(m)
    bias = _bias_dot(delta, g.get("bias"), 1)
    return out if bias is None else out + bias


def group_statistics(module: nn.Module, a: torch.Tensor, groups: int, node: object) -> tuple[torch.Tensor, torch.Tensor]:
    """``(mean, rstd)``, each ``(M, groups)``: saved by the forward's GroupNorm node, or recomputed."""
    if type(node).__name__ == "NativeGroupNormBackward0":
        return node._saved_result1, node._saved_result2
    m, c = a.shape[:2]
    _, mean, rstd = torch.ops.aten.native_group_norm(a.contiguous(), None, None, m, c, a[0, 0].numel(), groups, module.eps)
    return mean, rstd


def group_norm_dot(module: nn.Module, a: torch.Tensor, delta: torch.Tensor, g: dict[str, torch.Tensor], groups: int, node: object) -> torch.Tensor:
    """``(M,)`` contribution of a GroupNorm-like layer (per-sample statistics over ``groups`` groups).

    With ``xhat = (a - mean) * rstd`` per (sample, group), the per-sample weight
    gradient is ``sum_p delta * xhat = rstd * (sum_p delta * a - mean * sum_p delta)``.
    """
    m, c = delta.shape[:2]
    d = delta.reshape(m, c, -1)
    per_channel_delta = d.sum(-1)  # (M, C): also the per-sample bias gradient
    out = delta.new_zeros(m)
    if "weight" in g:
        mean, rstd = (s.to(delta.dtype).repeat_interleave(c // groups, 1) for s in group_statistics(module, a, groups, node))
        delta_a = torch.einsum("mcp,mcp->mc", d, a.reshape(m, c, -1))
        out = out + (rstd * (delta_a - mean * per_channel_delta)) @ g["weight"].to(delta.dtype)
    if "bias" in g:
        out = out + per_channel_delta @ g["bias"].to(delta.dtype)
    return out


def layer_dot_cpu(module: nn.Module, a: torch.Tensor, delta: torch.Tensor, g: dict[str, torch.Tensor], node: object = None) -> torch.Tensor:
    """The per-sample contribution ``(M,)`` of one call of a known layer type (fastest rule).

    ``node``: the autograd node of the layer's output (GroupNorm's saved statistics are read from it).
    """
    if isinstance(module, (*CONV_TYPES, *CONV_TRANSPOSE_TYPES)) and module.padding_mode == "zeros" and not isinstance(module.padding, str):
        return conv_dot(module, a, delta, g)
    if isinstance(module, nn.GroupNorm):
        return group_norm_dot(module, a, delta, g, module.num_groups, node)
    if isinstance(module, nn.modules.instancenorm._InstanceNorm) and (module.training or not module.track_running_stats):
        return group_norm_dot(module, a, delta, g, delta.shape[1], node)
    return layer_dot_reference(module, a, delta, g, node)
