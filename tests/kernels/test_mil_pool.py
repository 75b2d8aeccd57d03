"""mil_attention_pool: Triton (under TRITON_INTERPRET=1 on CPU) vs the PyTorch reference."""
from __future__ import annotations

import pytest
import torch

from fastmed.kernels import mil_attention_pool
from fastmed.kernels.mil_pool import bag_offsets
from fastmed.kernels.mil_pool_reference import mil_attention_pool_reference
from fastmed.kernels.mil_pool_triton import mil_attention_pool_triton

# dtype -> (forward atol/rtol, gradient atol/rtol)
TOL = {torch.float32: (1e-5, 1e-4), torch.bfloat16: (2e-2, 3e-2)}


def _inputs(lengths, D, dtype=torch.float32, scale=2.0):
    N = sum(lengths)
    h = torch.randn(N, D).to(dtype).requires_grad_()
    s = (torch.randn(N) * scale).to(dtype).requires_grad_()
    return h, s, bag_offsets(lengths)


def _compare(h, s, offsets, normalize, dtype, chunk_rows=1024):
    g = torch.randn(offsets.numel() - 1, h.shape[1]).to(dtype) * 3.0  # upstream grad != 1
    z_ref = mil_attention_pool_reference(h, s, offsets, normalize)
    dh_ref, ds_ref = torch.autograd.grad(z_ref, (h, s), g)
    z = mil_attention_pool_triton(h, s, offsets, normalize=normalize, chunk_rows=chunk_rows)
    dh, ds = torch.autograd.grad(z, (h, s), g)
    ftol, gtol = TOL[dtype]
    assert z.dtype == h.dtype and dh.dtype == h.dtype and ds.dtype == s.dtype
    torch.testing.assert_close(z.float(), z_ref.float(), atol=ftol, rtol=ftol)
    torch.testing.assert_close(dh.float(), dh_ref.float(), atol=gtol, rtol=gtol)
    torch.testing.assert_close(ds.float(), ds_ref.float(), atol=gtol, rtol=gtol)


@pytest.mark.parametrize("normalize", ["sigmoid", "softmax"])
@pytest.mark.parametrize("lengths,D", [([3, 1, 7], 5), ([1], 1), ([20, 2], 130)])
def test_triton_matches_reference_fp32(lengths, D, normalize):
    h, s, offsets = _inputs(lengths, D)
    _compare(h, s, offsets, normalize, torch.float32)


@pytest.mark.parametrize("normalize", ["sigmoid", "softmax"])
def test_long_bag_split_across_programs(normalize):
    h, s, offsets = _inputs([75, 4, 33], 9)
    _compare(h, s, offsets, normalize, torch.float32, chunk_rows=8)  # 10 + 1 + 5 chunks


@pytest.mark.parametrize("normalize", ["sigmoid", "softmax"])
def test_bf16(normalize):
    h, s, offsets = _inputs([12, 5], 24, dtype=torch.bfloat16)
    _compare(h, s, offsets, normalize, torch.bfloat16, chunk_rows=8)


def test_non_contiguous_features():
    hv = torch.randn(18, 40).t()[::2, ::2].detach().requires_grad_()  # (20, 9), column-major, strided
    assert not hv.is_contiguous()
    s = torch.randn(40)[::2].detach().requires_grad_()
    _compare(hv, s, bag_offsets([6, 14]), "sigmoid", torch.float32, chunk_rows=4)


def test_known_values_sigmoid_and_softmax():
    h = torch.tensor([[1.0, 0.0], [0.0, 2.0], [4.0, 4.0]])
    s = torch.tensor([0.0, 0.0, 1.0])
    offsets = torch.tensor([0, 2, 3])
    z = mil_attention_pool(h, s, offsets)
    torch.testing.assert_close(z, torch.tensor([[0.5, 1.0], [4.0, 4.0]]))  # equal weights; bag of 1
    s2 = torch.tensor([0.0, float(torch.log(torch.tensor(3.0))), 5.0])
    z2 = mil_attention_pool(h, s2, offsets, normalize="softmax")
    torch.testing.assert_close(z2, torch.tensor([[0.25, 1.5], [4.0, 4.0]]))  # softmax weights 1/4, 3/4
    w = torch.sigmoid(s2[:2])
    torch.testing.assert_close(mil_attention_pool(h, s2, offsets)[0], (w[:, None] * h[:2]).sum(0) / w.sum())


def test_auto_backend_on_cpu_uses_reference():
    h, s, offsets = _inputs([4, 4], 3)
    torch.testing.assert_close(mil_attention_pool(h, s, offsets), mil_attention_pool_reference(h, s, offsets))
    torch.testing.assert_close(mil_attention_pool(h, s, offsets, backend="triton"), mil_attention_pool_reference(h, s, offsets))


@pytest.mark.parametrize(
    "offsets,match",
    [
        (torch.tensor([0, 3, 3, 5]), "bag 1 has length 0"),
        (torch.tensor([0, 3, 4]), "end at N=5"),
        (torch.tensor([1, 5]), "start at 0"),
        (torch.tensor([0]), "B\\+1 >= 2"),
        (torch.tensor([0.0, 5.0]), "offsets must have dtype"),
    ],
)
def test_bad_offsets_raise(offsets, match):
    with pytest.raises(ValueError, match=match):
        mil_attention_pool(torch.randn(5, 2), torch.randn(5), offsets)


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="one entry per row"):
        mil_attention_pool(torch.randn(5, 2), torch.randn(4), torch.tensor([0, 5]))
    with pytest.raises(ValueError, match="normalize"):
        mil_attention_pool(torch.randn(5, 2), torch.randn(5), torch.tensor([0, 5]), normalize="max")
    with pytest.raises(ValueError, match="h must have 2 dimensions"):
        mil_attention_pool(torch.randn(5), torch.randn(5), torch.tensor([0, 5]))
    with pytest.raises(TypeError, match="scores must be a torch.Tensor"):
        mil_attention_pool(torch.randn(5, 2), [0.0] * 5, torch.tensor([0, 5]))
    with pytest.raises(ValueError, match="backend"):
        mil_attention_pool(torch.randn(5, 2), torch.randn(5), torch.tensor([0, 5]), backend="cuda")


@pytest.mark.gpu
@pytest.mark.parametrize("normalize", ["sigmoid", "softmax"])
def test_cuda_matches_reference(normalize):
    h, s, offsets = _inputs([200_001, 1, 517], 64)
    h, s, offsets = (t.detach().cuda().requires_grad_(t.requires_grad) for t in (h, s, offsets))
    _compare(h, s, offsets, normalize, torch.float32)
