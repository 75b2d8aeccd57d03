"""Triton: the conv / linear contraction of ``per_sample_grad_dot`` fused with the per-sample sum.

One kernel computes, for every sample n,

    s_n = sum_{o, p} y[n, o, p] * conv2d(x, w)[n, o, p]

as an implicit GEMM (input patches gathered on the fly, any stride, padding,
dilation, groups) whose epilogue multiplies the output tile by ``y`` and sums
it: neither ``conv2d(x, w)`` nor the ``(M, C, H, W)`` product is stored.

The layers map onto it (``a`` the layer input, ``delta`` its output gradient,
``G`` the weight direction):

* Conv1d/Conv2d:   x = a,     w = G, y = delta   (1-d as height 1)
* ConvTranspose:   x = delta, w = G, y = a       (<delta, convT(a, G)> = <conv(delta, G), a>)
* Linear:          x = a viewed (M, in, T, 1), w = G as 1x1, y = delta viewed (M, out, T, 1)

Bias and norm-layer terms are tiny and stay in PyTorch; Conv3d, non-zero
padding modes and float64 use the reference contraction.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
import triton
import triton.language as tl
from torch import nn

from fastmed.kernels._dispatch import triton_interpreting
from fastmed.kernels.grad_dot_reference import _bias_dot, layer_dot_reference


@triton.jit
def _conv_output_dot_kernel(
    x_ptr,      # (N, C_in, H, W) any strides
    w_ptr,      # (C_out, C_in_g * KH * KW) contiguous
    y_ptr,      # (N, C_out, OH, OW) any strides
    part_ptr,   # (N, n_p_blocks, groups * n_o_blocks) float32 partial sums
    C_in_g, H, W, C_out_g, OH, OW, KH, KW, K_total,
    sxn, sxc, sxh, sxw, syn, syc, syh, syw,
    stride_h, stride_w, pad_h, pad_w, dil_h, dil_w,
    n_p_blocks, n_o_blocks, n_go,
    BLOCK_P: tl.constexpr, BLOCK_O: tl.constexpr, BLOCK_K: tl.constexpr, PRECISION: tl.constexpr,
    UPCAST: tl.constexpr,  # Triton's CPU interpreter multiplies bf16 tiles wrongly: do them in fp32 there
):
    n = tl.program_id(0).to(tl.int64)
    pid_p = tl.program_id(1)
    pid_go = tl.program_id(2)
    grp = pid_go // n_o_blocks
    ob = pid_go % n_o_blocks

    offs_p = pid_p * BLOCK_P + tl.arange(0, BLOCK_P)
    p_ok = offs_p < OH * OW
    oh = offs_p // OW
    ow = offs_p % OW
    offs_o = ob * BLOCK_O + tl.arange(0, BLOCK_O)
    o_ok = offs_o < C_out_g
    co = grp * C_out_g + offs_o

    acc = tl.zeros((BLOCK_P, BLOCK_O), dtype=tl.float32)
    for k0 in range(0, K_total, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        k_ok = offs_k < K_total
        ci = offs_k // (KH * KW)
        r = offs_k % (KH * KW)
        kh = r // KW
        kw = r % KW
        ih = oh[:, None] * stride_h - pad_h + kh[None, :] * dil_h
        iw = ow[:, None] * stride_w - pad_w + kw[None, :] * dil_w
        x_ok = p_ok[:, None] & k_ok[None, :] & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
        x_off = n * sxn + (grp * C_in_g + ci)[None, :] * sxc + ih * sxh + iw * sxw
        xt = tl.load(x_ptr + x_off, mask=x_ok, other=0.0)
        wt = tl.load(w_ptr + co[None, :] * K_total + offs_k[:, None], mask=k_ok[:, None] & o_ok[None, :], other=0.0)
        if UPCAST:
            xt = xt.to(tl.float32)
            wt = wt.to(tl.float32)
        acc += tl.dot(xt, wt, input_precision=PRECISION)
    y_off = n * syn + co[None, :] * syc + oh[:, None] * syh + ow[:, None] * syw
    yt = tl.load(y_ptr + y_off, mask=p_ok[:, None] & o_ok[None, :], other=0.0).to(tl.float32)
    s = tl.sum(tl.sum(acc * yt, axis=1), axis=0)
    tl.store(part_ptr + (n * n_p_blocks + pid_p) * n_go + pid_go, s)


def _block(n: int, lo: int, hi: int) -> int:
    return max(lo, min(hi, triton.next_power_of_2(max(1, n))))


def _launch_conv_output_dot(x, w, y, stride, padding, dilation, groups) -> torch.Tensor:
    """Host side: ``x (N, Cin, H, W)``, ``w (Cout, Cin/groups, KH, KW)``, ``y (N, Cout, OH, OW)`` -> ``(N,)`` float32."""
    n, c_in, h, wd = x.shape
    c_out, c_in_g, kh, kw = w.shape
    oh, ow = y.shape[2:]
    c_out_g = c_out // groups
    k_total = c_in_g * kh * kw
    w2 = w.to(x.dtype).reshape(c_out, k_total).contiguous()
    block_p = _block(oh * ow, 16, 64)
    block_o = _block(c_out_g, 16, 64)
    block_k = _block(k_total, 16, 32)
    n_p, n_o = triton.cdiv(oh * ow, block_p), triton.cdiv(c_out_g, block_o)
    part = torch.empty((n, n_p, groups * n_o), device=x.device, dtype=torch.float32)
    precision = "ieee" if x.dtype == torch.float32 else "tf32"  # exact fp32; 16-bit tiles use tensor cores
    _conv_output_dot_kernel[(n, n_p, groups * n_o)](
        x, w2, y, part,
        c_in_g, h, wd, c_out_g, oh, ow, kh, kw, k_total,
        *x.stride(), *y.stride(),
        stride[0], stride[1], padding[0], padding[1], dilation[0], dilation[1],
        n_p, n_o, groups * n_o,
        BLOCK_P=block_p, BLOCK_O=block_o, BLOCK_K=block_k, PRECISION=precision,
        UPCAST=x.dtype == torch.bfloat16 and triton_interpreting(),
    )
    return part.sum((1, 2))


class ConvOutputDot(torch.autograd.Function):
    """``s_n = <y_n, conv2d(x, w)_n>`` (fused forward; backward through PyTorch's conv gradients)."""

    @staticmethod
    def forward(ctx, x, w, y, stride, padding, dilation, groups):
        ctx.save_for_backward(x, w, y)
        ctx.conv = (stride, padding, dilation, groups)
        return _launch_conv_output_dot(x, w, y, stride, padding, dilation, groups).to(y.dtype)

    @staticmethod
    def backward(ctx, grad):
        x, w, y = ctx.saved_tensors
        stride, padding, dilation, groups = ctx.conv
        gy = grad.reshape(-1, 1, 1, 1).to(y.dtype) * y
        dx = dw = dy = None
        if ctx.needs_input_grad[0]:
            dx = torch.nn.grad.conv2d_input(x.shape, w, gy, stride, padding, dilation, groups)
        if ctx.needs_input_grad[1]:
            dw = torch.nn.grad.conv2d_weight(x, w.shape, gy, stride, padding, dilation, groups)
        if ctx.needs_input_grad[2]:
            dy = grad.reshape(-1, 1, 1, 1).to(y.dtype) * F.conv2d(x, w, None, stride, padding, dilation, groups)
        return dx, dw, dy, None, None, None, None


def conv_output_dot_triton(x, w, y, stride=(1, 1), padding=(0, 0), dilation=(1, 1), groups: int = 1) -> torch.Tensor:
    """``(N,)``: ``sum_{o,p} y * conv2d(x, w, stride, padding, dilation, groups)`` per sample, fused."""
    return ConvOutputDot.apply(x, w, y, tuple(stride), tuple(padding), tuple(dilation), int(groups))


def _as_2d(t: torch.Tensor) -> torch.Tensor:
    """``(N, C, L)`` -> ``(N, C, 1, L)`` view; ``(N, C, H, W)`` unchanged."""
    return t.unsqueeze(2) if t.dim() == 3 else t


def _pair(v: tuple, fill: int) -> tuple[int, int]:
    return (fill, v[0]) if len(v) == 1 else (v[0], v[1])


def _weight_dot(module: nn.Module, a: torch.Tensor, delta: torch.Tensor, gw: torch.Tensor) -> torch.Tensor | None:
    """The fused weight term, or ``None`` when this layer needs the reference contraction."""
    if isinstance(module, nn.Linear):
        m, n_in, n_out = a.shape[0], a.shape[-1], delta.shape[-1]
        x = a.reshape(m, -1, n_in).transpose(1, 2).unsqueeze(-1)       # (M, in, T, 1) view
        y = delta.reshape(m, -1, n_out).transpose(1, 2).unsqueeze(-1)  # (M, out, T, 1) view
        return conv_output_dot_triton(x, gw.reshape(n_out, n_in, 1, 1), y)
    is_conv = type(module) in (nn.Conv1d, nn.Conv2d)
    is_conv_t = type(module) in (nn.ConvTranspose1d, nn.ConvTranspose2d)
    if not (is_conv or is_conv_t) or module.padding_mode != "zeros" or isinstance(module.padding, str) and module.padding != "valid":
        return None
    pad = (0,) * len(module.kernel_size) if isinstance(module.padding, str) else module.padding
    conv = (_pair(module.stride, 1), _pair(pad, 0), _pair(module.dilation, 1), module.groups)
    w = gw if gw.dim() == 4 else gw.unsqueeze(2)
    if is_conv:
        return conv_output_dot_triton(_as_2d(a), w, _as_2d(delta), *conv)
    x, y = _as_2d(delta), _as_2d(a)  # adjoint: <delta, convT(a, G)> = <conv(delta, G), a>
    expect = [(x.shape[2 + i] + 2 * conv[1][i] - conv[2][i] * (w.shape[2 + i] - 1) - 1) // conv[0][i] + 1 for i in range(2)]
    if expect != list(y.shape[2:]):
        return None
    return conv_output_dot_triton(x, w, y, *conv)


def layer_dot_triton(module: nn.Module, a: torch.Tensor, delta: torch.Tensor, g: dict[str, torch.Tensor], node: object = None) -> torch.Tensor:
    """Like ``layer_dot_reference``; conv, transposed-conv and linear weight terms fused in Triton."""
    if "weight" not in g or a.dtype not in (torch.float32, torch.float16, torch.bfloat16):
        return layer_dot_reference(module, a, delta, g)
    weight_term = _weight_dot(module, a, delta, g["weight"])
    if weight_term is None:
        return layer_dot_reference(module, a, delta, g)
    bias = _bias_dot(delta, g.get("bias"), -1 if isinstance(module, nn.Linear) else 1)
    return weight_term if bias is None else weight_term + bias.to(weight_term.dtype)
