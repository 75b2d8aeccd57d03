"""The fused Triton contraction <y, conv2d(x, w)> per sample vs PyTorch (TRITON_INTERPRET=1 on CPU)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from fastmed.kernels.grad_dot_triton import conv_output_dot_triton

# dtype -> (forward atol/rtol relative to the output scale, gradient atol/rtol)
TOL = {torch.float32: (1e-5, 1e-4), torch.bfloat16: (3e-2, 5e-2)}

CASES = [
    # (N, C_in, H, W, C_out, k, stride, padding, dilation, groups)
    (2, 3, 7, 9, 5, (3, 3), (1, 1), (1, 1), (1, 1), 1),
    (1, 4, 9, 6, 6, (3, 2), (2, 1), (0, 1), (1, 2), 2),
    (3, 6, 5, 5, 3, (1, 1), (1, 1), (0, 0), (1, 1), 3),
    (2, 2, 17, 3, 20, (5, 1), (3, 1), (2, 0), (1, 1), 1),
]


def reference(x, w, y, stride, padding, dilation, groups):
    return (y * F.conv2d(x, w, None, stride, padding, dilation, groups)).flatten(1).sum(1)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("case", CASES)
def test_forward_and_backward_match_reference(case, dtype):
    n, c_in, h, wd, c_out, k, stride, padding, dilation, groups = case
    x = torch.randn(n, c_in, h, wd).to(dtype).requires_grad_()
    w = torch.randn(c_out, c_in // groups, *k).to(dtype).requires_grad_()
    with torch.no_grad():
        out_shape = F.conv2d(x.float(), w.float(), None, stride, padding, dilation, groups).shape
    y = torch.randn(out_shape).to(dtype).requires_grad_()
    upstream = torch.randn(n).to(dtype) * 3.0
    want = reference(x.float(), w.float(), y.float(), stride, padding, dilation, groups)
    got = conv_output_dot_triton(x, w, y, stride, padding, dilation, groups)
    ftol, gtol = TOL[dtype]
    scale = want.abs().max().item() + 1.0
    assert got.dtype == dtype and got.shape == (n,)
    torch.testing.assert_close(got.float() / scale, want / scale, atol=ftol, rtol=0)
    grads = torch.autograd.grad(got, (x, w, y), upstream)
    xf, wf, yf = (t.detach().float().requires_grad_() for t in (x, w, y))
    grads_ref = torch.autograd.grad(reference(xf, wf, yf, stride, padding, dilation, groups), (xf, wf, yf), upstream.float())
    for a, b in zip(grads, grads_ref):
        s = b.abs().max().item() + 1.0
        torch.testing.assert_close(a.float() / s, b / s, atol=gtol, rtol=0)


def test_non_contiguous_inputs():
    x = torch.randn(2, 7, 5, 4).permute(0, 3, 1, 2)       # (2, 4, 7, 5), channels-last strides
    w = torch.randn(3, 4, 3, 3)
    y = torch.randn(2, 5, 3, 3).transpose(2, 3)[:, :3]    # (2, 3, 3, 5)[..] non-contiguous slice
    y = y[..., :3]
    got = conv_output_dot_triton(x, w, y, (2, 1), (0, 0), (1, 1), 1)
    torch.testing.assert_close(got, reference(x, w, y, (2, 1), (0, 0), (1, 1), 1), atol=1e-4, rtol=1e-4)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_per_sample_grad_dot_cuda_triton_matches_torch(dtype):
    from fastmed.kernels import per_sample_grad_dot
    from fastmed.nets.unet import UNet

    model = UNet(base_width=8, depth=2, up="transpose").cuda().to(dtype)
    x = torch.randn(6, 3, 32, 32, device="cuda", dtype=dtype)
    y = (torch.rand(6, 1, 32, 32, device="cuda") > 0.5).to(dtype)
    g = {k: torch.randn_like(v) for k, v in model.named_parameters()}

    def loss_fn(out, t):
        return F.binary_cross_entropy_with_logits(out.float(), t.float(), reduction="none").flatten(1).mean(1)

    got = per_sample_grad_dot(model, loss_fn, x, y, g, backend="triton")
    want = per_sample_grad_dot(model, loss_fn, x, y, g, backend="torch")
    scale = want.abs().max()
    torch.testing.assert_close(got / scale, want / scale, atol=TOL[dtype][0] * 10, rtol=0)
