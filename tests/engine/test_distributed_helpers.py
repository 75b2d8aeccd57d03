"""``engine.distributed`` helpers without torchrun (no-ops) and with a faked world size (the split arithmetic)."""
from __future__ import annotations

import pytest
import torch

from fastmed.engine import distributed
from fastmed.errors import ConfigError


@pytest.fixture
def world(monkeypatch):
    """``world(n, r)``: pretend to be rank ``r`` of ``n`` processes."""
    def fake(n: int, r: int):
        monkeypatch.setattr(distributed, "world_size", lambda: n)
        monkeypatch.setattr(distributed, "rank", lambda: r)
    return fake


def test_without_torchrun_every_helper_leaves_things_as_they_are(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert distributed.init_from_env(torch.device("cpu")) == torch.device("cpu") and not distributed.active()
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 1), torch.nn.BatchNorm2d(2))
    assert distributed.wrap_model(model, torch.device("cpu"), 2) is model
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    assert distributed.sync_gradients(opt, model) is opt and type(model[1]) is torch.nn.BatchNorm2d
    assert not opt._optimizer_step_pre_hooks
    assert distributed.per_rank_batch(7) == 7 and distributed.rank_share([3, 1, 2]) == [3, 1, 2]
    assert distributed.broadcast_object({"a": 1}) == {"a": 1} and distributed.gather(5) == [5]
    loader = distributed.train_loader(list(range(10)), batch_size=4, generator=torch.Generator().manual_seed(0), drop_last=True)
    assert isinstance(loader.sampler, torch.utils.data.RandomSampler) and len(loader) == 2
    g = torch.Generator().manual_seed(3)
    assert distributed.epoch_order(6, 0, 1, g) == torch.randperm(6, generator=torch.Generator().manual_seed(3)).tolist()


def test_a_world_size_without_the_rest_of_torchrun_s_environment_is_one_error(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    for k in ("RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(k, raising=False)
    with pytest.raises(ConfigError, match="WORLD_SIZE is set but RANK, MASTER_ADDR, MASTER_PORT is not"):
        distributed.init_from_env(torch.device("cpu"))


def test_a_global_batch_splits_evenly_or_is_refused(world):
    world(4, 1)
    assert distributed.per_rank_batch(32) == 8
    with pytest.raises(ConfigError, match="--batch-size 30 is not divisible by the 4 training processes"):
        distributed.per_rank_batch(30)


def test_ranks_share_an_order_in_turn_padded_to_equal_length(world):
    order = [5, 0, 3, 1, 4]
    shares = []
    for r in range(3):
        world(3, r)
        shares.append(distributed.rank_share(order))
    assert shares == [[5, 1], [0, 4], [3, 5]]  # every item once, the first repeated: two steps on every rank
    world(2, 1)
    assert distributed.rank_part(torch.arange(6)).tolist() == [1, 3, 5]


def test_set_epoch_reaches_the_sampler_of_a_loader():
    sampler = torch.utils.data.DistributedSampler(list(range(8)), num_replicas=2, rank=0, shuffle=True, seed=0)
    loader = torch.utils.data.DataLoader(list(range(8)), batch_size=2, sampler=sampler)
    first = list(sampler)
    distributed.set_epoch(loader, 3)
    assert sampler.epoch == 3 and list(sampler) != first
    distributed.set_epoch([1, 2], 3)  # a plain list of batches: nothing to do


def test_cpu_sync_batchnorm_shares_the_parameters_and_is_a_batchnorm_on_one_process():
    from fastmed.engine.sync_bn import CpuSyncBatchNorm, convert_to_cpu_sync_bn

    ref = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), torch.nn.BatchNorm2d(4))
    ref[1].weight.data.uniform_(0.5, 2)
    net = convert_to_cpu_sync_bn(torch.nn.Sequential(ref[0], ref[1]))
    assert isinstance(net[1], CpuSyncBatchNorm) and net[1].weight is ref[1].weight
    x = torch.randn(5, 3, 6, 6)
    copy = torch.nn.BatchNorm2d(4)
    copy.load_state_dict(ref[1].state_dict())
    torch.testing.assert_close(net(x), copy(ref[0](x)), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(net[1].running_var, copy.running_var)
