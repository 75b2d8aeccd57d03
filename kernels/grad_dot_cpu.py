"""Faster contractions for ``per_sample_grad_dot`` in plain PyTorch (the CPU path of ``backend="auto"``).

Same maths as ``grad_dot_reference`` (``<delta_m, f(a_m; G_W)> + <sum delta_m, G_b>``
per layer), computed the way that is cheapest for the layer's shape:

* convolutions (any dimension, transposed or not), by one of six exact ways
  (``WAYS``): ``"per-sample"``: the per-sample weight gradients ``(M, *W.shape)``,
  all in ONE weight-gradient call of a convolution with ``M * groups`` groups
  (the batch folded into the channels), then a dot with ``G_W``; ``"per-sample
  loop"``: the same with one weight-gradient call per sample (oneDNN's batched
  weight gradient is its fastest convolution kernel at many shapes);
  ``"unfold"`` (convolutions with few patch entries per output channel, e.g. a
  first layer on RGB): the patch matrix times the output gradient, one batched GEMM;
  ``"pointwise"`` (1x1 convolutions, transposed ones with kernel = stride): the
  same GEMM straight from ``a`` and ``delta``, no patch matrix;
  ``"forward"``: ``f(a; G_W)`` as the reference, dotted with ``delta`` by
  ``vecdot`` (6x faster than the same dot as a batched ``(1, K) @ (K, 1)`` matrix
  product here: 0.05 against 0.30 ms at M=8, K=32768); ``"forward, channels-last"``
  (2-d layers): the same ``f`` from channels-last copies of ``a`` and ``G_W``
  (oneDNN's channels-last kernels are up to 6x faster at 3 input channels, e.g. a
  first layer on RGB), dotted with ``delta`` in one fused multiply-sum. Which is
  fastest depends on channels, resolution, kernel, stride and transposition (``--layers`` of the benchmark), so on the CPU
  the first call for a layer configuration and shapes times them and keeps the
  fastest (``measured_way_dot``); off the CPU ``static_way`` uses per-sample
  gradients up to ``PER_SAMPLE_GRAD_MAX_CHANNELS`` (C_in/groups * C_out/groups);
* GroupNorm (and InstanceNorm on instance statistics): the per-sample affine
  gradients from the group statistics, ``rstd * (sum delta*a - mean * sum delta)``,
  without re-normalizing ``a``, by GroupNorm's own backward kernel on the batch
  viewed as one sample of ``M * C`` channels;
* bias terms: in the forward ways, ``G_b`` as the bias of ``f`` (fused into the
  convolution); otherwise a sum over positions without moving the channel axis.

Linear, LayerNorm, eval-mode BatchNorm and non-``"zeros"`` padding modes use the
reference rules. ``benchmarks/bench_grad_dot.py --layers`` times the ways on
3x3 layers of one FLOP count.
"""
from __future__ import annotations

import math
import time

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

# off the CPU: per-sample weight gradients when C_in/groups * C_out/groups is at most this
PER_SAMPLE_GRAD_MAX_CHANNELS = 256


def conv_weight_grad(module: nn.Module, a: torch.Tensor, delta: torch.Tensor, weight: torch.Tensor, groups: int) -> torch.Tensor:
    """The weight gradient of ``module``'s convolution at input ``a``, output gradient ``delta``
    (``weight`` gives the shape only; ``groups`` may differ from the module's)."""
    transposed = isinstance(module, CONV_TRANSPOSE_TYPES)
    out_pad = transposed_output_padding(module, a, delta.shape) if transposed else [0] * len(module.kernel_size)
    _, grad_w, _ = torch.ops.aten.convolution_backward(
        delta, a, weight, None, list(module.stride), list(module.padding), list(module.dilation), transposed, out_pad,
        groups, [False, True, False],
    )
    return grad_w


def per_sample_conv_weight_grad(module: nn.Module, a: torch.Tensor, delta: torch.Tensor, g_weight: torch.Tensor) -> torch.Tensor:
    """``(M, *W.shape)``: each sample's weight gradient, from one grouped weight-gradient call.

    Sample m's channels become group block m of a single-image convolution with
    ``M * groups`` groups, whose weight gradient is the M per-sample gradients
    stacked along the first axis. ``g_weight`` only supplies the (M-times
    stacked) weight shape; its values do not enter the weight gradient.
    """
    m = a.shape[0]
    stacked = g_weight.expand(m, *g_weight.shape).reshape(m * g_weight.shape[0], *g_weight.shape[1:])
    grad_w = conv_weight_grad(module, a.reshape(1, -1, *a.shape[2:]), delta.reshape(1, -1, *delta.shape[2:]), stacked, m * module.groups)
    return grad_w.reshape(m, *g_weight.shape)


WAYS = ("per-sample", "per-sample loop", "unfold", "pointwise", "forward", "forward, channels-last")  # exact contractions of a convolution
UNFOLD_MAX_GROWTH = 4  # "unfold" only where its patch matrix is at most this many times the output gradient
MEASURE_ROUNDS = 3
_MEASURED: dict[tuple, str] = {}  # layer configuration and shapes -> the faster way, timed on first use


def static_way(module: nn.Module) -> str:
    """The way to use without a measurement: per-sample weight gradients at few channels per group."""
    w = module.weight
    per_group = w.shape[0] * w.shape[1] // module.groups  # C_in/groups * C_out/groups for conv and conv-T
    return "per-sample" if per_group <= PER_SAMPLE_GRAD_MAX_CHANNELS else "forward"


def is_pointwise(module: nn.Module) -> bool:
    """Whether each output position of the convolution sees exactly one input position and each input position
    feeds its own output block: a 1x1 convolution with stride 1 and no padding, or a transposed convolution whose
    kernel equals its stride (no padding, no dilation; e.g. a U-Net's 2x2 stride-2 up-convolution)."""
    if any(p != 0 for p in module.padding):
        return False
    if isinstance(module, CONV_TRANSPOSE_TYPES):
        return tuple(module.kernel_size) == tuple(module.stride) and all(d == 1 for d in module.dilation)
    return all(k == 1 for k in module.kernel_size) and all(s == 1 for s in module.stride)


def ways_for(module: nn.Module) -> tuple[str, ...]:
    """The ways that apply to this layer: ``"unfold"`` needs a (non-transposed) convolution whose patches are few
    per output channel, ``"pointwise"`` a pointwise layer (``is_pointwise``), ``"forward, channels-last"`` a 2-d
    layer (conv or transposed)."""
    w = module.weight
    patches_per_output = w.shape[1] * math.prod(module.kernel_size) / (w.shape[0] // module.groups)  # (C_in/g * K) / (C_out/g)
    applies = {"unfold": isinstance(module, CONV_TYPES) and patches_per_output <= UNFOLD_MAX_GROWTH,
               "pointwise": is_pointwise(module),
               "forward, channels-last": len(module.kernel_size) == 2}
    return tuple(way for way in WAYS if applies.get(way, True))


def patch_matrix(module: nn.Module, a: torch.Tensor, out_shape: torch.Size) -> torch.Tensor:
    """``(M, C_in * K, L)``: the zero-padded input patches of a (non-transposed) convolution of any dimension.

    One strided view of the padded input, ``(M, C_in, *kernel, *out_spatial)`` with the kernel axes stepping by
    dilation and the output axes by stride, copied once (3x faster than ``F.unfold`` here: 0.11 against 0.35 ms
    for the (8, 3, 64, 64) input of a 3x3 stride-2 layer).
    """
    padded = torch.nn.functional.pad(a, [p for p in reversed(module.padding) for _ in range(2)])
    m, c, steps = padded.shape[0], padded.shape[1], padded.stride()[2:]
    view = padded.as_strided(
        (m, c, *module.kernel_size, *out_shape[2:]),
        (padded.stride(0), padded.stride(1), *(st * d for st, d in zip(steps, module.dilation)),
         *(st * s for st, s in zip(steps, module.stride))),
    )
    return view.reshape(m, c * math.prod(module.kernel_size), -1)


def unfold_weight_grads(module: nn.Module, a: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """``(M * groups, C_out/g, C_in/g * K)``: per-sample weight gradients of a convolution from its patch matrix,
    by one batched GEMM ``delta_mg (C_out/g, L) @ patches_mg^T (L, C_in/g * K)``."""
    m, g = a.shape[0], module.groups
    patches = patch_matrix(module, a, delta.shape).reshape(m * g, -1, math.prod(delta.shape[2:]))
    return torch.bmm(delta.reshape(m * g, -1, patches.shape[-1]), patches.transpose(1, 2))


def pointwise_weight_grads(module: nn.Module, a: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """``(M, *W.shape)``: per-sample weight gradients of a pointwise layer (``is_pointwise``) by one batched GEMM
    over positions, with no patch matrix and no convolution call.

    1x1 convolution, ``W: (C_out, C_in/g, 1, ...)``: ``delta_mg (C_out/g, P) @ a_mg^T (P, C_in/g)``.
    Transposed, kernel = stride = ``k``, ``W: (C_in, C_out/g, *k)``: output position ``i * k + r`` is
    ``sum_c a[c, i] W[c, :, r]``, so ``delta`` regrouped to ``(C_out/g * prod k, P_in)`` (one copy of its size;
    rows past ``P_in * k``, i.e. output padding, receive nothing and are dropped) gives
    ``a_mg (C_in/g, P_in) @ delta_mg^T``.
    """
    if not is_pointwise(module):
        raise ValueError(f"the pointwise way needs a pointwise layer (1x1, or transposed with kernel = stride), not {module}")
    m, g, w = a.shape[0], module.groups, module.weight
    if not isinstance(module, CONV_TRANSPOSE_TYPES):
        grads = torch.bmm(delta.reshape(m * g, w.shape[0] // g, -1), a.reshape(m * g, w.shape[1], -1).transpose(1, 2))
        return grads.reshape(m, *w.shape)
    k, spatial = tuple(module.kernel_size), a.shape[2:]
    delta = delta[(..., *(slice(0, n * kk) for n, kk in zip(spatial, k)))]
    blocks = [d for n, kk in zip(spatial, k) for d in (n, kk)]  # (S1, k1, S2, k2, ...)
    delta = delta.reshape(m * g, w.shape[1], *blocks)
    nd = len(k)
    order = (0, 1, *(3 + 2 * i for i in range(nd)), *(2 + 2 * i for i in range(nd)))  # (Mg, C_out/g, k..., S...)
    regrouped = delta.permute(order).reshape(m * g, w.shape[1] * math.prod(k), -1)
    grads = torch.bmm(a.reshape(m * g, w.shape[0] // g, -1), regrouped.transpose(1, 2))
    return grads.reshape(m, *w.shape)


def way_dot(module: nn.Module, a: torch.Tensor, delta: torch.Tensor, g_weight: torch.Tensor,
            g_bias: torch.Tensor | None, way: str) -> torch.Tensor:
    """``(M,)``: ``<delta_m, f(a_m; G_W)> + <sum delta_m, G_b>`` by the given way (see ``WAYS``; ``g_bias``
    None: no bias term).

    The forward ways take ``G_b`` as the bias of their ``f`` (``<delta_m, f + G_b>`` is the same sum, and the
    fused bias costs nothing: 0.8-0.9 ms less at M=8 on the benchmark's 6-conv net than a separate sum over
    positions, in four A/B runs); the others add it from ``delta``'s sum over positions.
    """
    m = a.shape[0]
    if way == "forward, channels-last":  # (M, C, H, W) tensors; f comes back channels-last, the sum reads both layouts
        last = torch.channels_last
        f = directional_output(module, a.contiguous(memory_format=last), delta, g_weight.contiguous(memory_format=last), g_bias)
        return (delta * f).sum((1, 2, 3))
    if way == "forward":
        f = directional_output(module, a, delta, g_weight, g_bias)
        return torch.linalg.vecdot(delta.reshape(m, -1), f.reshape(m, -1))
    if way == "per-sample":
        out = per_sample_conv_weight_grad(module, a, delta, g_weight).reshape(m, -1) @ g_weight.reshape(-1)
    elif way == "unfold":
        out = unfold_weight_grads(module, a, delta).reshape(m, -1) @ g_weight.reshape(-1)
    elif way == "pointwise":
        out = pointwise_weight_grads(module, a, delta).reshape(m, -1) @ g_weight.reshape(-1)
    else:  # "per-sample loop": one weight-gradient call per sample
        flat = g_weight.reshape(-1)
        out = torch.stack([conv_weight_grad(module, a[i:i + 1], delta[i:i + 1], g_weight, module.groups).reshape(-1) @ flat
                           for i in range(m)])
    bias = _bias_dot(delta, g_bias, 1)
    return out if bias is None else out + bias


def measured_way_dot(module: nn.Module, a: torch.Tensor, delta: torch.Tensor, g_weight: torch.Tensor,
                     g_bias: torch.Tensor | None) -> torch.Tensor:
    """``way_dot`` by the faster way for this layer and these shapes.

    On the CPU the first call with a new (layer configuration, shapes, dtype,
    threads, bias or not) runs every way ``MEASURE_ROUNDS`` times (rotating which
    goes first), keeps the fastest (best time) for later calls and returns its
    result (all are exact); elsewhere ``static_way`` decides.
    """
    if a.device.type != "cpu":
        return way_dot(module, a, delta, g_weight, g_bias, static_way(module))
    key = (type(module), tuple(module.weight.shape), module.stride, module.padding, module.dilation, module.groups,
           tuple(a.shape), tuple(delta.shape), a.dtype, torch.get_num_threads(), g_bias is None)
    way = _MEASURED.get(key)
    if way is not None:
        return way_dot(module, a, delta, g_weight, g_bias, way)
    ways = ways_for(module)
    results, seconds = {}, {w: float("inf") for w in ways}
    # one thread: its CPU time (waiting for a core does not count); more: wall clock (other threads work too)
    clock = time.thread_time if torch.get_num_threads() == 1 else time.perf_counter
    for r in range(MEASURE_ROUNDS):  # alternating rounds, best of each: robust to a busy machine
        for candidate in ways[r % len(ways):] + ways[:r % len(ways)]:  # each way once first (cold caches)
            t0 = clock()
            results[candidate] = way_dot(module, a, delta, g_weight, g_bias, candidate)
            seconds[candidate] = min(seconds[candidate], clock() - t0)
    _MEASURED[key] = min(ways, key=seconds.get)
    return results[_MEASURED[key]]


def conv_dot(module: nn.Module, a: torch.Tensor, delta: torch.Tensor, g: dict[str, torch.Tensor]) -> torch.Tensor:
    """``(M,)`` contribution of a convolution or transposed convolution (zero padding)."""
    g_bias = g["bias"].to(a.dtype) if "bias" in g else None
    if "weight" in g:
        return measured_way_dot(module, a, delta, g["weight"].to(a.dtype), g_bias)
    return _bias_dot(delta, g_bias, 1)


def group_statistics(module: nn.Module, a: torch.Tensor, groups: int, node: object) -> tuple[torch.Tensor, torch.Tensor]:
    """``(mean, rstd)``, each ``(M, groups)``: saved by the forward's GroupNorm node, or recomputed."""
    if type(node).__name__ == "NativeGroupNormBackward0":
        return node._saved_result1, node._saved_result2
    m, c = a.shape[:2]
    _, mean, rstd = torch.ops.aten.native_group_norm(a.contiguous(), None, None, m, c, math.prod(a.shape[2:]), groups, module.eps)
    return mean, rstd


def group_norm_dot(module: nn.Module, a: torch.Tensor, delta: torch.Tensor, g: dict[str, torch.Tensor], groups: int, node: object) -> torch.Tensor:
    """``(M,)`` contribution of a GroupNorm-like layer (per-sample statistics over ``groups`` groups).

    With ``xhat = (a - mean) * rstd`` per (sample, group), the per-sample weight
    gradient is ``sum_p delta * xhat = rstd * (sum_p delta * a - mean * sum_p delta)``
    and the bias gradient ``sum_p delta``. Both come from ONE affine-only call of
    GroupNorm's own backward kernel on the batch viewed as a single sample of
    ``M * C`` channels in ``M * groups`` groups (its affine gradients are then the
    ``(M * C,)`` per-sample ones): a single vectorized pass over ``delta`` and ``a``.
    """
    m, c = delta.shape[:2]
    want_w, want_b = "weight" in g, "bias" in g
    mean, rstd = group_statistics(module, a, groups, node)
    _, grad_w, grad_b = torch.ops.aten.native_group_norm_backward(
        delta.contiguous().reshape(1, m * c, -1), a.contiguous().reshape(1, m * c, -1), mean.reshape(1, -1),
        rstd.reshape(1, -1), None, 1, m * c, math.prod(a.shape[2:]), m * groups, [False, want_w, want_b],
    )
    if not want_w:
        return grad_b.reshape(m, c) @ g["bias"].to(delta.dtype)
    out = grad_w.reshape(m, c) @ g["weight"].to(delta.dtype)
    return out.addmv_(grad_b.reshape(m, c), g["bias"].to(delta.dtype)) if want_b else out


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
