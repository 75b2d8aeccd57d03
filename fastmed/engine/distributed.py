"""Training under ``torchrun``: one process per device, gradients averaged by DDP.

Every trainer runs unchanged under ``torchrun --nproc_per_node=N`` (and
``--nnodes`` with a rendezvous). ``start_run`` calls ``init_from_env``; with
no ``WORLD_SIZE`` in the environment nothing here does anything and the
helpers are no-ops (``world_size() == 1``, ``is_main()``), so a plain process
behaves exactly as before. Under torchrun:

- the process group uses NCCL on CUDA (device ``cuda:LOCAL_RANK``) and gloo on the CPU;
- rank 0 alone picks the run folder (``broadcast_object``) and writes config,
  metrics, checkpoints, plots and progress bars; the other ranks' stdout is
  silenced and their trainer stops after the fit loop (``end_worker``);
- a trainer's data come from ``train_loader`` (a ``distributed_sampler``: each
  rank a disjoint share of one seeded order, ``set_epoch`` each epoch by the
  fit loop), ``epoch_order`` (trainers that batch slides themselves) or
  ``rank_part`` (a step's draw shared by all ranks), in per-rank batches of
  ``per_rank_batch(global batch)``, so a step sees the same samples, and the
  averaged gradient equals, a one-rank step of the global batch;
- ``wrap_model`` turns BatchNorm layers into synchronised ones (when the
  per-rank batch is small) and wraps the model in ``DistributedDataParallel``
  with ``find_unused_parameters`` (loss terms a config switches off leave
  parameters without gradients); its ``state_dict`` is the plain model's, so
  checkpoints load without DDP and resume works with any world size.
  ``sync_gradients`` does the same for trainers DDP does not fit (GANs,
  several models, per-sample gradients): it averages in an optimizer pre-step hook.
"""
from __future__ import annotations

import atexit
import datetime
import os
import sys
from typing import Any, Sequence, TypeVar

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from fastmed.engine.sync_bn import convert_to_cpu_sync_bn
from fastmed.errors import ConfigError

T = TypeVar("T")

#: per-rank batches below this size get synchronised BatchNorm (statistics over the global batch)
SYNC_BN_BELOW = 32


def launched() -> bool:
    """Whether this process was started by ``torchrun`` (``WORLD_SIZE`` is set)."""
    return "WORLD_SIZE" in os.environ


def active() -> bool:
    """Whether a process group is up (``init_from_env`` ran under torchrun)."""
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    """Number of training processes (1 without torchrun)."""
    return dist.get_world_size() if active() else 1


def rank() -> int:
    """This process's global rank (0 without torchrun)."""
    return dist.get_rank() if active() else 0


def is_main() -> bool:
    """Whether this process writes the run's files (rank 0, or the only process)."""
    return rank() == 0


def init_from_env(device: torch.device) -> torch.device:
    """Join the torchrun process group (once) and return this rank's device.

    ``device`` is the resolved ``--device``: CUDA becomes ``cuda:LOCAL_RANK``
    with the NCCL backend, the CPU uses gloo. Without torchrun: ``device`` unchanged.
    """
    if not launched():
        return device
    missing = [k for k in ("RANK", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
    if missing:
        raise ConfigError(f"WORLD_SIZE is set but {', '.join(missing)} is not: start several processes with torchrun "
                          "(or unset WORLD_SIZE for one process)")
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(device)
    if not active():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=datetime.timedelta(minutes=30))
        atexit.register(_shutdown)
        if not is_main():
            sys.stdout = open(os.devnull, "w", encoding="utf-8")  # one log: rank 0's
    return device


def _shutdown() -> None:
    if active():
        dist.destroy_process_group()


def end_worker() -> None:
    """On a rank other than 0: leave the process group and exit (status 0). Rank 0 returns.

    Called after the fit loop: what a trainer does after it (reports,
    figures, test-set evaluation) is rank 0's alone.
    """
    if active() and not is_main():
        _shutdown()
        sys.stdout.flush()
        raise SystemExit(0)


def per_rank_batch(global_batch: int, option: str = "--batch-size") -> int:
    """``global_batch`` ÷ world size; ``ConfigError`` when it does not divide evenly."""
    n = world_size()
    if global_batch % n:
        raise ConfigError(f"{option} {global_batch} is not divisible by the {n} training processes; "
                          f"give a multiple of {n} (it is the global batch, split across processes)")
    return global_batch // n


def distributed_sampler(dataset: Sequence, shuffle: bool, seed: int) -> torch.utils.data.DistributedSampler | None:
    """This rank's share of ``dataset`` (``None`` without torchrun: keep the DataLoader's own sampling).

    Every rank draws the same permutation (``seed`` + epoch; the fit loop calls
    ``set_epoch``) and takes every ``world_size``-th index from its rank on,
    padding by repetition so that all ranks have the same number of steps.
    """
    if not active():
        return None
    return torch.utils.data.DistributedSampler(dataset, num_replicas=world_size(), rank=rank(), shuffle=shuffle, seed=seed)


def train_loader(dataset: Sequence, *, batch_size: int, generator: torch.Generator, shuffle: bool = True,
                 **kwargs: Any) -> torch.utils.data.DataLoader:
    """A trainer's training DataLoader: ``torch.utils.data.DataLoader(dataset, batch_size=..., shuffle=...,
    generator=..., **kwargs)`` without torchrun, exactly.

    Under torchrun: this rank's ``distributed_sampler`` (seeded with the
    generator's seed, the same on every rank) in batches of
    ``per_rank_batch(batch_size)``; the loader's own generator, which seeds
    the workers' augmentation, is offset by the rank. ``kwargs`` (``drop_last``,
    ``num_workers``, ...) pass through; ``drop_last`` keeps its meaning when
    computed from the global ``batch_size``, as every rank has the same number of samples.
    """
    if not active():
        return torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=generator, **kwargs)
    seed = generator.initial_seed()
    return torch.utils.data.DataLoader(dataset, batch_size=per_rank_batch(batch_size),
                                       sampler=distributed_sampler(dataset, shuffle, seed),
                                       generator=torch.Generator().manual_seed(seed + rank()), **kwargs)


def epoch_order(n: int, seed: int, epoch: int, generator: torch.Generator) -> list[int]:
    """A shuffled order of ``range(n)`` for trainers that batch items themselves (ragged MIL bags: slides).

    Without torchrun: ``torch.randperm(n, generator=generator)``, as before.
    Under torchrun: this rank's ``rank_share`` of a permutation drawn from
    ``seed`` and ``epoch`` alone (the same on every rank, like ``DistributedSampler``).
    """
    if not active():
        return torch.randperm(n, generator=generator).tolist()
    return rank_share(torch.randperm(n, generator=torch.Generator().manual_seed(seed + epoch)).tolist())


def rank_share(order: Sequence[T]) -> list[T]:
    """This rank's items of ``order`` (every ``world_size``-th from its rank), padded to equal length.

    For trainers that draw their own order (ragged MIL bags: a permutation of
    slides). ``order`` must be the same on every rank.
    """
    n = world_size()
    if n == 1:
        return list(order)
    items = list(order)
    per_rank = -(-len(items) // n)
    items += items[:per_rank * n - len(items)]
    return items[rank()::n]


def set_epoch(batches: Any, epoch: int) -> None:
    """Call ``set_epoch(epoch)`` on the sampler of a DataLoader ``batches`` when it has one."""
    for sampler in (getattr(batches, "sampler", None), getattr(getattr(batches, "batch_sampler", None), "sampler", None)):
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)
            return


class _DDP(DistributedDataParallel):
    """DDP whose ``state_dict``/``load_state_dict`` are the wrapped module's (no ``module.`` prefix)."""

    def state_dict(self, *args, **kwargs):
        return self.module.state_dict(*args, **kwargs)

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        return self.module.load_state_dict(state_dict, strict=strict, assign=assign)

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name == "module":  # not set yet (inside DDP's __init__)
                raise
            return getattr(self.module, name)


def wrap_model(model: torch.nn.Module, device: torch.device, batch: int | None = None) -> torch.nn.Module:
    """``model`` for training on this rank: DDP under torchrun, itself otherwise.

    ``batch`` is the per-rank batch (``None``: unknown, treated as small);
    below ``SYNC_BN_BELOW`` BatchNorm layers become synchronised (torch's
    ``SyncBatchNorm`` on CUDA, ``sync_bn.CpuSyncBatchNorm`` on the CPU), so
    they normalise over the global batch. Parameters keep their identity
    (an optimizer built before or after sees the same tensors).
    """
    if not active() or world_size() == 1:
        return model
    if batch is None or batch < SYNC_BN_BELOW:
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model) if device.type == "cuda" else convert_to_cpu_sync_bn(model)
    ids = [device.index] if device.type == "cuda" else None
    return _DDP(model, device_ids=ids, find_unused_parameters=True)


def sync_gradients(optimizer: torch.optim.Optimizer, *models: torch.nn.Module, batch: int | None = None) -> torch.optim.Optimizer:
    """Average the gradients of ``optimizer``'s parameters over the ranks before each of its steps (no-op without torchrun).

    The alternative to ``wrap_model`` for trainers that DDP does not fit: GANs
    (several forward passes of one network per backward), several models,
    per-sample gradients with ``torch.func`` on the plain module. ``models``
    get rank 0's parameters and buffers now and synchronised BatchNorm (as in
    ``wrap_model``, in place). A parameter without a gradient on every rank
    keeps none; one with a gradient on some ranks gets the average (zero elsewhere).
    """
    if world_size() == 1:
        return optimizer
    for model in models:
        if batch is None or batch < SYNC_BN_BELOW:
            _sync_batchnorm_in_place(model)
        with torch.no_grad():
            for t in [*model.parameters(), *model.buffers()]:
                dist.broadcast(t, src=0)
    optimizer.register_step_pre_hook(lambda opt, args, kwargs: _average_gradients(opt))
    return optimizer


def _sync_batchnorm_in_place(model: torch.nn.Module) -> None:
    """Replace ``model``'s BatchNorm layers by synchronised ones (the same parameter and buffer tensors)."""
    cuda = next(iter(model.parameters()), torch.empty(0)).device.type == "cuda"
    for name, child in model.named_children():
        if isinstance(child, torch.nn.modules.batchnorm._BatchNorm):
            model.add_module(name, torch.nn.SyncBatchNorm.convert_sync_batchnorm(child) if cuda else convert_to_cpu_sync_bn(child))
        else:
            _sync_batchnorm_in_place(child)


def _average_gradients(optimizer: torch.optim.Optimizer) -> None:
    """Replace each parameter's gradient by its mean over the ranks (one all-reduce of them all)."""
    params = [p for group in optimizer.param_groups for p in group["params"]]
    if not params:
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    has = torch.tensor([float(p.grad is not None) for p in params], device=params[0].device)
    flat = torch.cat([g.reshape(-1).float() for g in grads] + [has])
    dist.all_reduce(flat)
    flat /= world_size()
    parts = flat[:-len(params)].split([g.numel() for g in grads])
    for p, g, part, any_rank in zip(params, grads, parts, flat[-len(params):].tolist()):
        if any_rank > 0:
            p.grad = part.view_as(p).to(g.dtype)


def rank_part(batch: torch.Tensor) -> torch.Tensor:
    """This rank's rows of a ``batch`` drawn identically on every rank (rows ``rank, rank + N, ...``; all without torchrun)."""
    return batch[rank()::world_size()] if world_size() > 1 else batch


def broadcast_object(obj: T) -> T:
    """Rank 0's ``obj`` on every rank (``obj`` itself without torchrun)."""
    if not active():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather(obj: T) -> list[T]:
    """Every rank's ``obj``, in rank order, on every rank (``[obj]`` without torchrun)."""
    if not active():
        return [obj]
    out: list[Any] = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out
