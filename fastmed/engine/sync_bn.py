"""Synchronised BatchNorm for CPU (gloo) training; torch's ``SyncBatchNorm`` runs only on accelerators.

In training mode under a process group of several ranks, the batch mean and
variance are those of the global batch (every rank's samples), computed with
two differentiable all-reduces (sum, then sum of squared deviations), so a
step of N ranks with per-rank batch b equals one process's step with batch
N·b. Otherwise (evaluation, one process) it is a plain BatchNorm.
"""
from __future__ import annotations

import warnings

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_fn
from torch.nn.modules.batchnorm import _BatchNorm

# the autograd-aware all_reduce is deprecated in favour of one without a backward pass: keep it, quietly
warnings.filterwarnings("ignore", message="torch.distributed.nn.functional.all_reduce is deprecated")


class CpuSyncBatchNorm(_BatchNorm):
    """BatchNorm over ``(N, C, ...)`` inputs whose training statistics are all-reduced across ranks."""

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        dims = [0, *range(2, x.dim())]
        shape = [1, -1] + [1] * (x.dim() - 2)
        local = torch.cat([x.sum(dims), x.new_full((1,), x.numel() / x.shape[1])])
        total = dist_fn.all_reduce(local)
        count, mean = total[-1], total[:-1] / total[-1]
        var = dist_fn.all_reduce(((x - mean.view(shape)) ** 2).sum(dims)) / count  # biased, as BatchNorm normalises
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                f = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
                self.running_mean.mul_(1 - f).add_(f * mean)
                self.running_var.mul_(1 - f).add_(f * var * count / (count - 1).clamp(min=1))
        y = (x - mean.view(shape)) * torch.rsqrt(var + self.eps).view(shape)
        return y * self.weight.view(shape) + self.bias.view(shape) if self.affine else y


def convert_to_cpu_sync_bn(module: torch.nn.Module) -> torch.nn.Module:
    """``module`` with every BatchNorm layer replaced by a ``CpuSyncBatchNorm`` sharing its parameters and buffers."""
    out = module
    if isinstance(module, _BatchNorm):
        out = CpuSyncBatchNorm(module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats)
        if module.affine:
            out.weight, out.bias = module.weight, module.bias
        out.running_mean, out.running_var = module.running_mean, module.running_var
        out.num_batches_tracked = module.num_batches_tracked
        out.training = module.training
    for name, child in module.named_children():
        out.add_module(name, convert_to_cpu_sync_bn(child))
    return out
