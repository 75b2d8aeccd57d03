"""Numba CPU kernels of ragged attention-MIL pooling (forward and backward).

Same maths as ``mil_pool_reference`` (the specification). For bag ``b`` with
rows ``i``, weights ``w_i`` (sigmoid, or exp shifted by the bag max) and
``den_b = sum_i w_i``::

    forward:   z_b   = sum_i w_i h_i / den_b
    backward:  dh_i  = (w_i / den_b) g_b
               ds_i  = (g_b . h_i - g_b . z_b) / den_b * dw_i/ds_i
               dw/ds = w (1 - w) (sigmoid) or w (softmax; the max shift cancels)

Each pass streams ``h`` once, row by row: the forward reads it, the backward
reads it and writes ``dh`` — no ``(N, D)`` temporary, so both are memory-bound.
Work is split into *items* of at most ``ROWS_PER_ITEM`` rows of one bag
(``work_items``); ``torch.get_num_threads()`` Python threads each run the
GIL-free kernel on a contiguous share of the items (``run_items``; the calling
thread runs one share itself). Numba's
own ``parallel=True`` (OpenMP layer) ran 2-8x slower than one thread whenever
other jobs held the cores of the 2-core test machine; plain threads do not
spin-wait.  The forward writes one partial sum per item and adds them per bag
afterwards (``bag_means``), so long bags use every thread; below
``PARALLEL_MIN_ELEMENTS`` elements of ``h`` everything runs on the calling
thread (the hand-off cost more than it saved). Sums are accumulated in
float64; ``h`` and ``dh`` stay in the input dtype (float32 or float64). ``dh``
lands in the last gradient buffer handed out when nothing holds it any more
(``gradient_buffer``): no fresh pages to fault in at every training step.
Every cast around the kernels (scores in, ``ds`` and ``z`` out, the upstream
gradient in) is NumPy's, on the calling thread (``host_array``): a large torch
cast leaves torch's OpenMP threads spinning beside the kernel's threads.
"""
from __future__ import annotations

import ctypes
import functools
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from numba import njit

# Rows per work item: enough to amortise scheduling, small enough to balance 16 ragged bags on 2+ threads.
ROWS_PER_ITEM = 512
# Threads only from this many elements of h (N*D) on. fwd+bwd, 2 threads / 1 thread on the quiet 2-core machine
# (median of 24): 2^21: 1.14-1.28 (64x16k x128: 2.26 vs 1.77 ms), 2^22: 1.01-1.18, 2^23: 1.05 (D 128) and 0.74
# (D 512), 2^24: 0.86, 2^25: 0.77 (16 bags x 32k x 1024: 24.4 vs 31.7 ms); the threshold sits between 2^22 and 2^23.
PARALLEL_MIN_ELEMENTS = 6 << 20
HUGE_PAGE = 1 << 21  # bytes of an x86-64 / arm64 transparent huge page
MADV_HUGEPAGE = 14  # Linux madvise advice
# Let LLVM reorder the sums (SIMD lanes) and fuse multiply-adds; no finite-math assumptions.
FASTMATH = {"reassoc", "contract"}
NUMPY_DTYPES = {torch.float16: np.float16, torch.float32: np.float32, torch.float64: np.float64}


@njit(cache=True)
def work_items(offsets):
    """``(n_items, 3)`` int64 rows ``(bag, first row, end row)`` covering every bag in order."""
    n_bags = offsets.shape[0] - 1
    n_items = 0
    for b in range(n_bags):
        n_items += (offsets[b + 1] - offsets[b] + ROWS_PER_ITEM - 1) // ROWS_PER_ITEM
    items = np.empty((n_items, 3), np.int64)
    k = 0
    for b in range(n_bags):
        for lo in range(offsets[b], offsets[b + 1], ROWS_PER_ITEM):
            items[k, 0] = b
            items[k, 1] = lo
            items[k, 2] = min(lo + ROWS_PER_ITEM, offsets[b + 1])
            k += 1
    return items


def attention_weights(scores: np.ndarray, offsets: np.ndarray, softmax: bool) -> tuple[np.ndarray, np.ndarray]:
    """float64 weights ``w (N,)`` and their bag sums ``den (B,)`` from float64 ``scores (N,)``; every bag non-empty.

    NumPy's vectorised ``exp`` (3x faster than a Numba loop of scalar ``exp`` calls here: 0.10 vs 0.29 ms at
    N=57k); a sigmoid of a very negative score overflows ``exp(-s)`` to inf, giving the exact limit 0.
    """
    starts = offsets[:-1]
    with np.errstate(over="ignore"):
        if softmax:
            w = np.exp(scores - np.repeat(np.maximum.reduceat(scores, starts), np.diff(offsets)))
        else:
            w = 1.0 / (1.0 + np.exp(-scores))
    return w, np.add.reduceat(w, starts)


@njit(nogil=True, cache=True, fastmath=FASTMATH)
def forward_items(h, w, items, partial, first, last):
    """``partial[k] = sum_i w_i h_i`` over the rows of items ``first..last-1`` (float64 ``(n_items, D)``)."""
    dim = h.shape[1]
    for k in range(first, last):
        acc = partial[k]
        acc[:] = 0.0
        for i in range(items[k, 1], items[k, 2]):
            wi = w[i]
            for d in range(dim):
                acc[d] += wi * h[i, d]


@njit(cache=True)
def bag_means(partial, items, den):
    """``z (B, D)`` float64: the items' partial sums added per bag, divided by ``den (B,)``."""
    z = np.zeros((den.shape[0], partial.shape[1]), np.float64)
    for k in range(items.shape[0]):
        z[items[k, 0]] += partial[k]
    for b in range(den.shape[0]):
        z[b] /= den[b]
    return z


@njit(nogil=True, cache=True, fastmath=FASTMATH)
def backward_items(h, w, den, gz, g, items, softmax, dh, ds, first, last):
    """``dh`` and ``ds`` rows of items ``first..last-1`` from ``g (B, D)`` and ``gz_b = g_b . z_b``."""
    dim = h.shape[1]
    for k in range(first, last):
        b = items[k, 0]
        gb = g[b]
        for i in range(items[k, 1], items[k, 2]):
            a = gb.dtype.type(w[i] / den[b])
            dot = gb.dtype.type(0.0)  # in h's dtype: float32 lanes are twice as many as float64 ones
            for d in range(dim):
                dot += gb[d] * h[i, d]
                dh[i, d] = a * gb[d]
            dw = (np.float64(dot) - gz[b]) / den[b]
            ds[i] = dw * w[i] if softmax else dw * w[i] * (1.0 - w[i])


def run_items(kernel, n_items: int, *args, parallel: bool = True) -> None:
    """Call ``kernel(*args, first, last)`` on ``torch.get_num_threads()`` threads (one if not ``parallel``): the
    calling thread and pool threads, each a contiguous share of items."""
    n_parts = max(1, min(torch.get_num_threads() if parallel else 1, n_items))
    bounds = np.linspace(0, n_items, n_parts + 1).astype(np.int64)
    if n_parts == 1:
        kernel(*args, 0, n_items)
        return
    # the kernels release the GIL; the pool's idle threads block (no spinning) between calls. The calling thread
    # runs the first share itself: one hand-off fewer (39 instead of 72 us a call for two shares here)
    rest = [thread_pool(n_parts - 1).submit(kernel, *args, int(bounds[p]), int(bounds[p + 1])) for p in range(1, n_parts)]
    kernel(*args, 0, int(bounds[1]))
    for share in rest:
        share.result()


@functools.lru_cache(maxsize=1)
def thread_pool(n_threads: int) -> ThreadPoolExecutor:
    """A pool of ``n_threads`` threads kept between calls (starting threads cost ~0.5 ms per call here)."""
    return ThreadPoolExecutor(n_threads, thread_name_prefix="fastmed-mil-pool")


@functools.lru_cache(maxsize=1)
def _libc():
    """The C library (for ``madvise``), or None off Linux."""
    return ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None


def ask_for_huge_pages(t: torch.Tensor) -> None:
    """Hint (Linux ``madvise(MADV_HUGEPAGE)``) that the 2 MiB-aligned part of ``t``'s fresh, untouched memory
    be backed by transparent huge pages, before anything writes it.

    A fresh ``(N, D)`` gradient is first-touch page faults as much as writes: at N=57k, D=1024 (234 MB) the
    OS zero-fills 57k 4-KiB pages (first touch 46-71 ms, 3.3-12 ms with this hint, against a
    15-31 ms bytes estimate, over the 2026-12-02 runs of ``benchmarks/bench_mil_pool.py``). Where THP is ``never`` or unavailable the call does nothing; any failure is ignored.
    """
    libc = _libc()
    start, end = t.data_ptr(), t.data_ptr() + t.numel() * t.element_size()
    lo, hi = -(-start // HUGE_PAGE) * HUGE_PAGE, end // HUGE_PAGE * HUGE_PAGE
    if libc is not None and hi > lo:
        libc.madvise(ctypes.c_void_p(lo), ctypes.c_size_t(hi - lo), MADV_HUGEPAGE)


_SPARE: dict[tuple, list] = {}  # (shape, dtype) -> [last gradient buffer handed out, its reference count when free]
_SPARE_LOCK = threading.Lock()  # two backward calls in two threads must not both take the free buffer


def _reference_count(key: tuple) -> int:
    """References to the spare buffer of ``key``, counted the same way at creation and at each check."""
    return sys.getrefcount(_SPARE[key][0])


def gradient_buffer(like: torch.Tensor) -> np.ndarray:
    """An uninitialised array shaped like ``like`` (N, D) for a new ``grad_h``: the last one handed out if
    nothing uses it any more.

    A fresh (N, D) gradient costs first-touch page faults on top of its writes (see ``ask_for_huge_pages``), and
    large blocks go back to the OS when freed, so every step would pay them again. The buffer handed out
    last is kept here; the tensor made from it by ``torch.from_numpy`` holds a reference to it for as long as
    its storage lives (``h.grad``, a view, an accumulating sum), so a reference count back at its value when
    the buffer was new means nobody can see it any more and it is handed out again. One buffer is kept:
    resting memory grows by one gradient, peak memory does not. A new buffer gets ``ask_for_huge_pages``
    before its first touch.
    """
    key = (tuple(like.shape), like.dtype)
    with _SPARE_LOCK:  # the caller's reference to the returned array marks it taken before the lock is let go
        if key in _SPARE and _reference_count(key) == _SPARE[key][1]:
            return _SPARE[key][0]
        fresh = torch.empty(like.shape, dtype=like.dtype)
        ask_for_huge_pages(fresh)  # before the kernel's first touch (torch's own THP_MEM_ALLOC_ENABLE=1 does the same)
        _SPARE.clear()
        _SPARE[key] = [fresh.numpy(), 0]
        del fresh  # the array keeps its tensor alive; nothing but the dict refers to the array now
        _SPARE[key][1] = _reference_count(key)
        return _SPARE[key][0]


def host_array(t: torch.Tensor, dtype) -> np.ndarray:
    """CPU tensor ``t`` as a C-contiguous NumPy array of ``dtype``, converted by NumPy on the calling thread.

    Not by a torch op: one of more than 32k elements runs on torch's OpenMP threads, which keep spinning for
    milliseconds afterwards and take a core from this kernel's threads (on 2 cores a following 7 ms pass took
    9.5 ms, 7.3 ms after a NumPy conversion). NumPy has no bfloat16; its bits are a float32's upper half.
    """
    t = t.detach().contiguous()
    if t.dtype == torch.bfloat16:
        return (t.view(torch.int16).numpy().astype(np.int32) << 16).view(np.float32).astype(dtype, copy=False)
    return t.numpy().astype(dtype, copy=False)


def torch_tensor(a: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
    """``a`` as a tensor of ``dtype``, cast by NumPy (see ``host_array``); bfloat16 (not in NumPy) by torch."""
    if dtype == torch.bfloat16:
        return torch.from_numpy(a).to(dtype)
    return torch.from_numpy(a.astype(NUMPY_DTYPES[dtype], copy=False))


class MilPoolNumba(torch.autograd.Function):
    """Autograd wrapper: ``apply(h (N, D), scores (N,), offsets (B+1,) int64, softmax) -> (B, D)``.

    CPU tensors; ``h`` float32 or float64 (any strides; copied when not
    C-contiguous), ``scores`` any float dtype (``ds`` comes back in it).
    Returns ``(B, D)`` in ``h.dtype``.
    """

    @staticmethod
    def forward(ctx, h, scores, offsets, softmax):
        h = h.detach().contiguous()
        hn, off = h.numpy(), offsets.contiguous().numpy()
        items = work_items(off)
        w, den = attention_weights(host_array(scores, np.float64), off, softmax)
        partial = np.empty((items.shape[0], h.shape[1]), np.float64)
        run_items(forward_items, items.shape[0], hn, w, items, partial, parallel=hn.size >= PARALLEL_MIN_ELEMENTS)
        z = bag_means(partial, items, den)
        ctx.softmax, ctx.scores_dtype = softmax, scores.dtype
        ctx.save_for_backward(h, *(torch.from_numpy(a) for a in (w, den, z, items)))
        return torch.from_numpy(z.astype(hn.dtype))

    @staticmethod
    def backward(ctx, grad):
        h_t, *rest = ctx.saved_tensors
        h, w, den, z, items = h_t.numpy(), *(t.numpy() for t in rest)
        dh = gradient_buffer(h_t)
        dh_t = torch.from_numpy(dh)
        ds = np.empty(h.shape[0], np.float64)
        g = host_array(grad, np.float64)
        gz = (g * z).sum(1)
        g = g.astype(h.dtype, copy=False)
        run_items(backward_items, items.shape[0], h, w, den, gz, g, items, ctx.softmax, dh, ds,
                  parallel=h.size >= PARALLEL_MIN_ELEMENTS)
        return dh_t, torch_tensor(ds, ctx.scores_dtype), None, None
