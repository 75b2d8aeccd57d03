"""Readable PyTorch reference of ragged attention-MIL pooling (the specification).

Bags are stored back to back: features ``h: (N, D)``, one attention score per
row ``scores: (N,)`` and bag boundaries ``offsets: (B+1,)`` (bag ``b`` is rows
``offsets[b]:offsets[b+1]``). For bag ``b`` with rows ``i``::

    sigmoid:  w_i = sigmoid(s_i)                 z_b = sum_i w_i h_i / sum_i w_i
    softmax:  w_i = exp(s_i - max_{j in b} s_j)  z_b = sum_i w_i h_i / sum_i w_i

Differentiable by autograd (``index_add``), computed in float32 and returned in
``h.dtype``. It materialises an ``(N, D)`` product; the Triton kernel does not.
"""
from __future__ import annotations

import torch


def bag_index(offsets: torch.Tensor, n_rows: int) -> torch.Tensor:
    """``(N,)`` int64 bag id of every row, from ``offsets: (B+1,)``."""
    lengths = offsets[1:] - offsets[:-1]
    return torch.repeat_interleave(torch.arange(len(lengths), device=offsets.device), lengths, output_size=n_rows)


def attention_weights(scores: torch.Tensor, bags: torch.Tensor, n_bags: int, normalize: str) -> torch.Tensor:
    """Unnormalised float32 weights ``w: (N,)`` (sigmoid, or exp shifted by the bag max)."""
    s = scores.float()
    if normalize == "sigmoid":
        return torch.sigmoid(s)
    bag_max = torch.full((n_bags,), float("-inf"), device=s.device).scatter_reduce(0, bags, s, reduce="amax")
    return torch.exp(s - bag_max[bags])


def mil_attention_pool_reference(h: torch.Tensor, scores: torch.Tensor, offsets: torch.Tensor, normalize: str = "sigmoid") -> torch.Tensor:
    """Pool ``h: (N, D)`` into ``(B, D)`` with normalised attention weights per bag."""
    n_bags = offsets.numel() - 1
    bags = bag_index(offsets, h.shape[0])
    w = attention_weights(scores, bags, n_bags, normalize)
    den = torch.zeros(n_bags, device=h.device).index_add(0, bags, w)
    num = torch.zeros(n_bags, h.shape[1], device=h.device).index_add(0, bags, w[:, None] * h.float())
    return (num / den[:, None]).to(h.dtype)
