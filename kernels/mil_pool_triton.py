"""Triton kernels of ragged attention-MIL pooling (forward + backward).

Work is split into *chunks*: at most ``chunk_rows`` consecutive rows of one bag.
A chunk table (bag id, first row, end row) is built once per call, so a bag
of 200,000 patches is spread over many programs while a bag of 1 is one chunk.

Forward (grid: chunks x D-blocks): each program sums ``w_i * h_i`` over its
rows for one block of feature columns and ``w_i``, then atomically adds both
into float32 buffers ``num (B, D)`` / ``den (B,)``; ``z = num / den``. Sums of
weights merge in any order because the weights of a bag do not depend on the
chunking (sigmoid: per row; softmax: shifted by the bag max computed first).

Backward (grid: chunks): with ``a_i = w_i / S_b`` and upstream ``g_b``::

    dh_i = a_i g_b
    ds_i = c_i (g_b . h_i - g_b . z_b),   c_i = a_i (1 - w_i)  (sigmoid),  a_i (softmax)

one pass over ``h``: each row tile walks the feature columns once, writing
``dh`` and accumulating ``g_b . h_i`` for ``ds``. No ``(N, D)`` temporary.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from fastmed.kernels.mil_pool_reference import bag_index

CHUNK_ROWS = 1024  # rows of one bag handled by one program (GPU default)


@triton.jit
def _row_weights(s_ptr, rows, rmask, bag_max, SOFTMAX: tl.constexpr):
    """float32 weights ``w`` of rows ``rows`` (0 where ``rmask`` is false)."""
    s = tl.load(s_ptr + rows, mask=rmask, other=0.0).to(tl.float32)
    if SOFTMAX:
        w = tl.exp(s - bag_max)
    else:
        w = tl.sigmoid(s)
    return tl.where(rmask, w, 0.0)


@triton.jit
def _mil_pool_fwd_kernel(
    h_ptr,          # (N, D) features, any float dtype, strides (stride_hn, stride_hd)
    s_ptr,          # (N,) scores, contiguous
    bag_max_ptr,    # (B,) float32 per-bag max score (softmax only)
    chunk_bag_ptr,  # (C,) int64 bag id of each chunk
    chunk_lo_ptr,   # (C,) int64 first row of each chunk
    chunk_hi_ptr,   # (C,) int64 end row (exclusive) of each chunk
    num_ptr,        # (B, D) float32, zero-initialised, receives sum_i w_i h_i
    den_ptr,        # (B,) float32, zero-initialised, receives sum_i w_i
    D,
    stride_hn,
    stride_hd,
    SOFTMAX: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    c = tl.program_id(0)
    pd = tl.program_id(1)
    bag = tl.load(chunk_bag_ptr + c)
    lo = tl.load(chunk_lo_ptr + c)
    hi = tl.load(chunk_hi_ptr + c)
    cols = pd * BLOCK_D + tl.arange(0, BLOCK_D)
    cmask = cols < D
    acc = tl.zeros([BLOCK_D], dtype=tl.float32)
    wsum = tl.zeros([BLOCK_N], dtype=tl.float32)
    bag_max = tl.load(bag_max_ptr + bag)
    for r0 in range(lo, hi, BLOCK_N):
        rows = r0 + tl.arange(0, BLOCK_N)
        rmask = rows < hi
        w = _row_weights(s_ptr, rows, rmask, bag_max, SOFTMAX)
        x = tl.load(
            h_ptr + rows[:, None] * stride_hn + cols[None, :] * stride_hd,
            mask=rmask[:, None] & cmask[None, :],
            other=0.0,
        ).to(tl.float32)
        acc += tl.sum(w[:, None] * x, axis=0)
        wsum += w
    tl.atomic_add(num_ptr + bag * D + cols, acc, mask=cmask)
    if pd == 0:
        tl.atomic_add(den_ptr + bag, tl.sum(wsum, axis=0))


@triton.jit
def _mil_pool_bwd_kernel(
    h_ptr,          # (N, D) features, strides (stride_hn, stride_hd)
    s_ptr,          # (N,) scores, contiguous
    g_ptr,          # (B, D) float32 upstream gradient, contiguous
    gz_ptr,         # (B,) float32 g_b . z_b
    bag_max_ptr,    # (B,) float32 per-bag max score (softmax only)
    den_ptr,        # (B,) float32 S_b = sum of weights of bag b
    chunk_bag_ptr,  # (C,) int64
    chunk_lo_ptr,   # (C,) int64
    chunk_hi_ptr,   # (C,) int64
    dh_ptr,         # (N, D) gradient of h, contiguous, h's dtype
    ds_ptr,         # (N,) gradient of scores, contiguous, scores' dtype
    D,
    stride_hn,
    stride_hd,
    SOFTMAX: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    c = tl.program_id(0)
    bag = tl.load(chunk_bag_ptr + c)
    lo = tl.load(chunk_lo_ptr + c)
    hi = tl.load(chunk_hi_ptr + c)
    total = tl.load(den_ptr + bag)
    gz = tl.load(gz_ptr + bag)
    bag_max = tl.load(bag_max_ptr + bag)
    for r0 in range(lo, hi, BLOCK_N):
        rows = r0 + tl.arange(0, BLOCK_N)
        rmask = rows < hi
        w = _row_weights(s_ptr, rows, rmask, bag_max, SOFTMAX)
        a = w / total
        dot = tl.zeros([BLOCK_N], dtype=tl.float32)
        for d0 in range(0, D, BLOCK_D):
            cols = d0 + tl.arange(0, BLOCK_D)
            cmask = cols < D
            m2 = rmask[:, None] & cmask[None, :]
            x = tl.load(h_ptr + rows[:, None] * stride_hn + cols[None, :] * stride_hd, mask=m2, other=0.0).to(tl.float32)
            g = tl.load(g_ptr + bag * D + cols, mask=cmask, other=0.0)
            dot += tl.sum(x * g[None, :], axis=1)
            dh = a[:, None] * g[None, :]
            tl.store(dh_ptr + rows[:, None] * D + cols[None, :], dh.to(dh_ptr.dtype.element_ty), mask=m2)
        if SOFTMAX:
            coef = a
        else:
            coef = a * (1.0 - w)
        ds = coef * (dot - gz)
        tl.store(ds_ptr + rows, ds.to(ds_ptr.dtype.element_ty), mask=rmask)


def chunk_table(offsets: torch.Tensor, chunk_rows: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Split every bag into chunks of at most ``chunk_rows`` rows.

    Returns ``(bag, lo, hi)``, each ``(C,)`` int64 on ``offsets.device``.
    """
    offs = offsets.cpu()
    lengths = offs[1:] - offs[:-1]
    n_chunks = (lengths + chunk_rows - 1) // chunk_rows
    bag = torch.repeat_interleave(torch.arange(len(lengths)), n_chunks)
    first_chunk = torch.cumsum(n_chunks, 0) - n_chunks
    within = torch.arange(len(bag)) - first_chunk[bag]
    lo = offs[:-1][bag] + within * chunk_rows
    hi = torch.minimum(lo + chunk_rows, offs[1:][bag])
    dev = offsets.device
    return bag.to(dev), lo.to(dev), hi.to(dev)


def _bag_max(scores: torch.Tensor, offsets: torch.Tensor, softmax: bool) -> torch.Tensor:
    """``(B,)`` float32 max score per bag (zeros when not needed)."""
    n_bags = offsets.numel() - 1
    if not softmax:
        return torch.zeros(n_bags, device=scores.device)
    bags = bag_index(offsets, scores.shape[0])
    init = torch.full((n_bags,), float("-inf"), device=scores.device)
    return init.scatter_reduce(0, bags, scores.float(), reduce="amax")


def _blocks(D: int) -> tuple[int, int]:
    block_d = min(128, triton.next_power_of_2(max(D, 16)))
    return 32, block_d


class _MilPoolFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h, scores, offsets, softmax: bool, chunk_rows: int):
        N, D = h.shape
        B = offsets.numel() - 1
        scores_c = scores.contiguous()
        cbag, clo, chi = chunk_table(offsets, chunk_rows)
        bag_max = _bag_max(scores_c, offsets, softmax)
        num = torch.zeros(B, D, device=h.device, dtype=torch.float32)
        den = torch.zeros(B, device=h.device, dtype=torch.float32)
        block_n, block_d = _blocks(D)
        grid = (cbag.numel(), triton.cdiv(D, block_d))
        _mil_pool_fwd_kernel[grid](
            h, scores_c, bag_max, cbag, clo, chi, num, den, D, h.stride(0), h.stride(1),
            SOFTMAX=softmax, BLOCK_N=block_n, BLOCK_D=block_d,
        )
        z = num / den[:, None]
        ctx.softmax = softmax
        ctx.save_for_backward(h, scores_c, z, den, bag_max, cbag, clo, chi)
        return z.to(h.dtype)

    @staticmethod
    def backward(ctx, grad_z):
        h, scores, z, den, bag_max, cbag, clo, chi = ctx.saved_tensors
        N, D = h.shape
        g = grad_z.float().contiguous()
        gz = (g * z).sum(1)
        dh = torch.empty((N, D), device=h.device, dtype=h.dtype)
        ds = torch.empty((N,), device=h.device, dtype=scores.dtype)
        block_n, block_d = _blocks(D)
        _mil_pool_bwd_kernel[(cbag.numel(),)](
            h, scores, g, gz, bag_max, den, cbag, clo, chi, dh, ds, D, h.stride(0), h.stride(1),
            SOFTMAX=ctx.softmax, BLOCK_N=block_n, BLOCK_D=block_d,
        )
        return dh, ds, None, None, None


def mil_attention_pool_triton(
    h: torch.Tensor, scores: torch.Tensor, offsets: torch.Tensor, *, normalize: str = "sigmoid", chunk_rows: int = CHUNK_ROWS
) -> torch.Tensor:
    """Triton implementation (inputs already validated by ``mil_attention_pool``)."""
    return _MilPoolFunction.apply(h, scores, offsets, normalize == "softmax", chunk_rows)
