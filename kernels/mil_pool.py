"""Ragged attention-MIL pooling: ``mil_attention_pool(h, scores, offsets)``.

Many bags (slides) of different sizes are pooled in one call, so a training
step can hold several slides without padding::

    z = mil_attention_pool(h, scores, offsets)      # h (N, D), scores (N,), offsets (B+1,) -> (B, D)

``normalize="sigmoid"`` (the method's default): weights ``sigmoid(s_i)``
divided by their sum over the bag; ``"softmax"``: the usual softmax per bag.
``backend="auto"`` runs the Triton kernel on CUDA tensors (one pass over the
features forward and backward, no ``(N, D)`` intermediate, long bags split
across programs); on the CPU the Numba kernel (``mil_pool_numba``, the same
single pass, threaded) from ``NUMBA_MIN_ELEMENTS`` elements of ``h`` on and the
PyTorch reference below that.
"""
from __future__ import annotations

import numpy as np
import torch

from fastmed.kernels._dispatch import check_same_device, check_tensor, resolve_backend
from fastmed.kernels.mil_pool_reference import mil_attention_pool_reference

NORMALIZATIONS = ("sigmoid", "softmax")
FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
BACKENDS = ("auto", "torch", "numba", "triton")
# backend="auto" on the CPU: the Numba kernel from this many elements of h (N*D) on, the reference below.
# Crossover, fwd+bwd on the 2-core CPU (quiet): at 2^17 elements the reference won (8x256 rows x 64: 0.31 vs
# 0.54 ms, Numba's fixed ~0.4 ms of thread hand-off dominates), at 2^18 either won, at 2^19 Numba did
# (16x512 x 64: 0.60 vs 2.2 ms; 16x256 x 128: 0.85 vs 2.4 ms).
NUMBA_MIN_ELEMENTS = 1 << 19


def bag_offsets(lengths: torch.Tensor | list[int]) -> torch.Tensor:
    """``(B+1,)`` int64 offsets ``[0, l0, l0+l1, ...]`` from bag lengths ``(B,)``."""
    lengths = torch.as_tensor(lengths, dtype=torch.int64)
    return torch.cat([lengths.new_zeros(1), torch.cumsum(lengths, 0)])


def check_offsets(offsets: torch.Tensor, n_rows: int) -> None:
    """Raise ``ValueError`` unless ``offsets`` describes non-empty bags covering ``n_rows`` rows.

    Checked on a host copy with NumPy (a few microseconds; the same checks as torch ops on small
    tensors cost ~0.1 ms a call, a tenth of a small pooling call)."""
    check_tensor("offsets", offsets, ndim=1, dtypes=(torch.int64, torch.int32))
    if offsets.numel() < 2:
        raise ValueError(f"offsets must have B+1 >= 2 entries, got shape {tuple(offsets.shape)}")
    off = offsets.detach().cpu().numpy()
    first, last = int(off[0]), int(off[-1])
    if first != 0 or last != n_rows:
        raise ValueError(f"offsets must start at 0 and end at N={n_rows} (rows of h), got {first} ... {last}")
    empty = np.flatnonzero(off[1:] <= off[:-1])
    if empty.size:
        bad = int(empty[0])
        raise ValueError(f"every bag must hold >= 1 row; bag {bad} has length {int(off[bad + 1] - off[bad])}")


def mil_attention_pool(
    h: torch.Tensor,
    scores: torch.Tensor,
    offsets: torch.Tensor,
    *,
    normalize: str = "sigmoid",
    backend: str = "auto",
) -> torch.Tensor:
    """Attention-weighted mean of each bag's features.

    Args:
        h: ``(N, D)`` float32/bf16/fp16 patch features of all bags, back to back.
        scores: ``(N,)`` attention logits (one per row of ``h``).
        offsets: ``(B+1,)`` int64 bag boundaries; bag ``b`` is rows
            ``offsets[b]:offsets[b+1]``; every bag non-empty.
        normalize: ``"sigmoid"`` (sigmoid weights divided by their sum) or ``"softmax"``.
        backend: ``"auto"`` | ``"torch"`` (reference) | ``"numba"`` (CPU) | ``"triton"``.

    Returns:
        ``(B, D)`` pooled features in ``h.dtype`` (accumulated in float32).

    Raises ``ValueError`` for an empty bag, offsets that do not cover ``h``,
    mismatched lengths, bad dtypes/shapes or an unknown ``normalize``.
    Validation reads ``offsets`` on the host (one synchronisation on CUDA).
    """
    check_tensor("h", h, ndim=2, dtypes=FLOAT_DTYPES)
    check_tensor("scores", scores, ndim=1, dtypes=FLOAT_DTYPES)
    if scores.shape[0] != h.shape[0]:
        raise ValueError(f"scores must have one entry per row of h: h {tuple(h.shape)}, scores {tuple(scores.shape)}")
    if normalize not in NORMALIZATIONS:
        raise ValueError(f"normalize must be one of {NORMALIZATIONS}, got {normalize!r}")
    check_same_device(h=h, scores=scores, offsets=offsets)
    check_offsets(offsets, h.shape[0])
    offsets = offsets.long()
    chosen = choose_backend(backend, h, scores, offsets)
    if chosen == "triton":
        from fastmed.kernels.mil_pool_triton import mil_attention_pool_triton

        return mil_attention_pool_triton(h, scores, offsets, normalize=normalize)
    if chosen == "numba":
        from fastmed.kernels.mil_pool_numba import MilPoolNumba

        h_in = h if h.dtype in (torch.float32, torch.float64) else h.float()  # fp16/bf16: float32 like the reference
        return MilPoolNumba.apply(h_in, scores, offsets, normalize == "softmax").to(h.dtype)
    return mil_attention_pool_reference(h, scores, offsets, normalize=normalize)


def choose_backend(backend: str, h: torch.Tensor, scores: torch.Tensor, offsets: torch.Tensor) -> str:
    """``"triton"``, ``"numba"`` or ``"torch"`` for this request (see ``mil_attention_pool``)."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "numba":
        if h.device.type != "cpu":
            raise RuntimeError(f"backend='numba' needs CPU tensors, got h on {h.device}; use backend='auto'")
        return "numba"
    chosen = resolve_backend(backend, h, scores, offsets)
    if backend == "auto" and chosen == "torch" and h.device.type == "cpu" and h.numel() >= NUMBA_MIN_ELEMENTS:
        return "numba"
    return chosen
