"""mil_attention_pool's Numba CPU path against the reference (float32) and a float64 oracle."""
from __future__ import annotations

import mmap

import pytest
import torch

from fastmed.kernels import mil_attention_pool
from fastmed.kernels.mil_pool import NUMBA_MIN_ELEMENTS, bag_offsets, choose_backend
from fastmed.kernels.mil_pool_numba import MilPoolNumba
from fastmed.kernels.mil_pool_reference import mil_attention_pool_reference

LENGTHS = [3, 1, 7, 600]  # odd sizes, a bag of 1, one bag longer than a work item (512 rows)


def _inputs(lengths, D, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    N = sum(lengths)
    h = torch.randn(N, D, generator=g, dtype=torch.float64).to(dtype).requires_grad_()
    s = (torch.randn(N, generator=g, dtype=torch.float64) * 2).to(dtype).requires_grad_()
    up = torch.randn(len(lengths), D, generator=g, dtype=torch.float64).to(dtype) * 3  # upstream grad != 1
    return h, s, bag_offsets(lengths), up


def _oracle64(h, s, offsets, normalize):
    """The reference's maths per bag in float64 (the reference itself computes in float32)."""
    out = []
    for lo, hi in zip(offsets[:-1].tolist(), offsets[1:].tolist()):
        sb = s[lo:hi]
        w = torch.sigmoid(sb) if normalize == "sigmoid" else torch.exp(sb - sb.max())
        out.append((w[:, None] * h[lo:hi]).sum(0) / w.sum())
    return torch.stack(out)


def _values_and_grads(fn, h, s, offsets, up, normalize):
    z = fn(h, s, offsets, normalize)
    return (z, *torch.autograd.grad(z, (h, s), up))


def _numba(h, s, offsets, normalize):
    return mil_attention_pool(h, s, offsets, normalize=normalize, backend="numba")


def _numba64(h, s, offsets, normalize):
    """The kernel itself: the public op takes float32/fp16/bf16 only, the kernel also float64."""
    return MilPoolNumba.apply(h, s, offsets, normalize == "softmax")


def _assert_close_rel(got, want, rtol):
    assert got.dtype == want.dtype
    got, want = got.detach(), want.detach()
    scale = want.abs().max()
    assert float((got - want).abs().max()) <= rtol * float(scale), (float((got - want).abs().max()), float(scale))


@pytest.mark.parametrize("normalize", ["sigmoid", "softmax"])
def test_numba_matches_reference_fp32(normalize):
    h, s, offsets, up = _inputs(LENGTHS, 33, torch.float32)
    for got, want in zip(_values_and_grads(_numba, h, s, offsets, up, normalize),
                         _values_and_grads(mil_attention_pool_reference, h, s, offsets, up, normalize)):
        _assert_close_rel(got, want, 1e-5)


@pytest.mark.parametrize("normalize", ["sigmoid", "softmax"])
def test_numba_matches_float64_oracle(normalize):
    h, s, offsets, up = _inputs(LENGTHS, 17, torch.float64)
    for got, want in zip(_values_and_grads(_numba64, h, s, offsets, up, normalize),
                         _values_and_grads(_oracle64, h, s, offsets, up, normalize)):
        _assert_close_rel(got, want, 1e-12)


def test_numba_non_contiguous_input():
    hv = torch.randn(26, 40, dtype=torch.float64).t()[::2, ::2].detach().requires_grad_()  # (20, 13), strided
    sv = torch.randn(40, dtype=torch.float64)[::2].detach().requires_grad_()
    assert not hv.is_contiguous() and not sv.is_contiguous()
    offsets, up = bag_offsets([1, 6, 13]), torch.randn(3, 13, dtype=torch.float64)
    for got, want in zip(_values_and_grads(_numba64, hv, sv, offsets, up, "softmax"),
                         _values_and_grads(_oracle64, hv, sv, offsets, up, "softmax")):
        _assert_close_rel(got, want, 1e-12)


def test_numba_bf16_returns_input_dtypes():
    h, s, offsets, up = _inputs([5, 2], 8, torch.bfloat16)
    z, dh, ds = _values_and_grads(_numba, h, s, offsets, up, "sigmoid")
    zr, dhr, dsr = _values_and_grads(mil_attention_pool_reference, h, s, offsets, up, "sigmoid")
    assert (z.dtype, dh.dtype, ds.dtype) == (torch.bfloat16,) * 3
    for got, want in ((z, zr), (dh, dhr), (ds, dsr)):
        _assert_close_rel(got.float(), want.float(), 2e-2)


def test_auto_picks_numba_on_large_cpu_inputs_only():
    small, large = torch.empty(4, 4), torch.empty(NUMBA_MIN_ELEMENTS // 64, 64)
    assert choose_backend("auto", small, small[:, 0], torch.tensor([0, 4])) == "torch"
    assert choose_backend("auto", large, large[:, 0], torch.tensor([0, large.shape[0]])) == "numba"
    assert choose_backend("torch", large, large[:, 0], torch.tensor([0, large.shape[0]])) == "torch"


def test_numba_public_op_fp32_non_contiguous():
    hv = torch.randn(26, 40).t()[::2, ::2].detach().requires_grad_()  # (20, 13) float32, strided
    sv = torch.randn(40)[::2].detach().requires_grad_()
    offsets, up = bag_offsets([13, 1, 6]), torch.randn(3, 13)
    for got, want in zip(_values_and_grads(_numba, hv, sv, offsets, up, "sigmoid"),
                         _values_and_grads(mil_attention_pool_reference, hv, sv, offsets, up, "sigmoid")):
        _assert_close_rel(got, want, 1e-5)



def test_numba_two_threads_match_one(monkeypatch):
    from fastmed.kernels import mil_pool_numba

    monkeypatch.setattr(mil_pool_numba, "PARALLEL_MIN_ELEMENTS", 0)  # threads at this small size too
    h, s, offsets, up = _inputs([700, 1, 900, 3], 9, torch.float32)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)  # the tests run with OMP_NUM_THREADS=1: exercise the threaded split too
        two = _values_and_grads(_numba, h, s, offsets, up, "softmax")
    finally:
        torch.set_num_threads(before)
    for got, want in zip(two, _values_and_grads(mil_attention_pool_reference, h, s, offsets, up, "softmax")):
        _assert_close_rel(got, want, 1e-5)


def _anon_huge_kib(address: int) -> int:
    """``AnonHugePages`` (KiB) of the mapping of this process that holds ``address`` (``/proc/self/smaps``)."""
    from pathlib import Path

    inside = False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        head = line.split()[0]
        if "-" in head and not head.endswith(":"):
            lo, hi = (int(x, 16) for x in head.split("-"))
            inside = lo <= address < hi
        elif inside and head == "AnonHugePages:":
            return int(line.split()[1])
    return 0


def test_fresh_gradient_is_asked_to_live_on_huge_pages():
    """The backward's fresh grad_h is first-touch page faults as much as writes (234 MB at the benchmark's main
    size: 56-63 ms of first touch on 4 KiB pages, 4.6-10 ms on huge pages, benchmarks/results/mil_pool.md);
    ask_for_huge_pages gets it huge pages where THP is on "madvise" (plain torch.empty there gets none). Under
    "always" every allocation gets them anyway, so the test could not tell the hint's effect: skipped."""
    from pathlib import Path

    from fastmed.kernels.mil_pool_numba import HUGE_PAGE, ask_for_huge_pages

    thp = Path("/sys/kernel/mm/transparent_hugepage/enabled")
    if not thp.exists() or "[madvise]" not in thp.read_text():
        pytest.skip("transparent huge pages are not in madvise mode on this machine")
    # 16 MiB of fresh, untouched pages of our own mapping: a torch.empty of that size may reuse heap memory
    # that earlier tests in this process already touched (seen in the full suite), which no hint can change
    buf = mmap.mmap(-1, 8 * HUGE_PAGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)  # private: THP applies
    t = torch.frombuffer(buf, dtype=torch.float32)
    ask_for_huge_pages(t)
    t.fill_(1.0)
    aligned = -(-t.data_ptr() // HUGE_PAGE) * HUGE_PAGE  # madvise splits the mapping at the first 2 MiB boundary
    huge = _anon_huge_kib(aligned)
    del t
    buf.close()
    assert huge >= 2048


def test_numba_fp32_at_full_width_matches_float64_oracle():
    """D=1024 and a 2000-row bag: the backward's float32 dot products (float64 bag sums) stay near float64's maths
    (measured max error / max value: z 3e-8, dh 3e-8, ds 1.8e-7; the float32 reference's ds 1.3e-6)."""
    h, s, offsets, up = _inputs([3, 1, 2000], 1024, torch.float32)
    h64, s64 = (t.detach().double().requires_grad_() for t in (h, s))
    for got, want in zip(_values_and_grads(_numba, h, s, offsets, up, "sigmoid"),
                         _values_and_grads(_oracle64, h64, s64, offsets, up.double(), "sigmoid")):
        _assert_close_rel(got.double(), want, 1e-5)


def test_small_inputs_stay_on_the_calling_thread(monkeypatch):
    """Below PARALLEL_MIN_ELEMENTS the kernels run on the calling thread (the hand-off cost more than it saved)."""
    from fastmed.kernels import mil_pool_numba

    def no_pool(n_threads):
        raise AssertionError("thread pool used")

    monkeypatch.setattr(mil_pool_numba, "thread_pool", no_pool)
    h, s, offsets, up = _inputs([700, 1, 900, 3], 9, torch.float32)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        _values_and_grads(_numba, h, s, offsets, up, "sigmoid")  # 14k elements: one thread, no pool
        monkeypatch.setattr(mil_pool_numba, "PARALLEL_MIN_ELEMENTS", h.numel())
        with pytest.raises(AssertionError, match="thread pool used"):
            _values_and_grads(_numba, h, s, offsets, up, "sigmoid")
    finally:
        torch.set_num_threads(before)


def test_gradient_buffer_is_reused_only_when_nobody_holds_it():
    """grad_h lands in the last buffer handed out once nothing references it (no fresh pages to fault in each
    step); a gradient still held, or being accumulated into, is never overwritten."""
    h, s, offsets, up = _inputs(LENGTHS, 33, torch.float32)
    want = torch.autograd.grad(mil_attention_pool_reference(h, s, offsets), h, up)[0]

    _numba(h, s, offsets, "sigmoid").backward(up)
    first = h.grad.data_ptr()
    h.grad = None  # dropped: the buffer is free again
    blocker = torch.empty_like(h)  # a plain allocator would hand the freed block to this one
    _numba(h, s, offsets, "sigmoid").backward(up)
    assert h.grad.data_ptr() == first != blocker.data_ptr()
    _assert_close_rel(h.grad, want, 1e-5)

    held = h.grad  # kept by the caller: the next backward needs another buffer
    kept_values = held.clone()
    h.grad = None
    _numba(h, s, offsets, "sigmoid").backward(2 * up)
    assert h.grad.data_ptr() != held.data_ptr()
    torch.testing.assert_close(held, kept_values, rtol=0, atol=0)
    _assert_close_rel(h.grad, 2 * want, 1e-5)

    _numba(h, s, offsets, "sigmoid").backward(up)  # accumulates into h.grad (2 + 1)
    _assert_close_rel(h.grad, 3 * want, 1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_numba_path_casts_with_numpy_not_torch_ops(monkeypatch, dtype):
    """Scores in, ds out, z out and the upstream gradient in are cast by NumPy on the calling thread: a torch cast
    of more than 32k elements wakes torch's OpenMP threads, which spin on beside the kernel's own threads
    (bfloat16 ds, which NumPy cannot hold, is the one torch cast left)."""
    from fastmed.kernels.mil_pool_numba import host_array, torch_tensor

    s = torch.randn(5000, dtype=torch.float64).to(dtype)
    assert torch.equal(torch.from_numpy(host_array(s, "float64")), s.double())  # exact widening, bf16 included
    back = torch_tensor(host_array(s, "float64"), dtype)
    assert back.dtype == dtype and torch.equal(back, s)
    h, s, offsets, up = _inputs(LENGTHS, 5, torch.float32)
    s = s.detach().to(dtype).requires_grad_()
    to_calls = []
    real_to = torch.Tensor.to
    monkeypatch.setattr(torch.Tensor, "to", lambda t, *a, **k: (to_calls.append(a), real_to(t, *a, **k))[1])
    z = MilPoolNumba.apply(h, s, offsets, False)
    torch.autograd.grad(z, (h, s), up)
    assert to_calls == ([(torch.bfloat16,)] if dtype == torch.bfloat16 else [])


def test_attention_weights_known_values_and_extreme_scores():
    """Sigmoid limits are exact and silent at |s| = 1000; softmax weights are shifted by each bag's max."""
    import warnings

    import numpy as np

    from fastmed.kernels.mil_pool_numba import attention_weights

    scores = np.array([-1000.0, 0.0, 1000.0, np.log(3.0), 0.0])
    offsets = np.array([0, 3, 5])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        w, den = attention_weights(scores, offsets, False)
        ws, dens = attention_weights(scores, offsets, True)
    np.testing.assert_allclose(w, [0.0, 0.5, 1.0, 0.75, 0.5], rtol=1e-12)
    np.testing.assert_allclose(den, [1.5, 1.25], rtol=1e-12)
    np.testing.assert_allclose(ws, [0.0, 0.0, 1.0, 1.0, 1 / 3], rtol=1e-12)
    np.testing.assert_allclose(dens, [1.0, 4 / 3], rtol=1e-12)
