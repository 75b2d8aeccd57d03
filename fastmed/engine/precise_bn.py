"""Re-estimate BatchNorm running statistics ("precise BN").

During a short training the weights move faster than BatchNorm's exponential
moving averages can follow; evaluated with those stale statistics a network
such as MobileNetV3 can predict a single class while its training accuracy
climbs. Recomputing the statistics as a plain average over training batches
with the current weights, before every evaluation and checkpoint, removes the
lag (Wu & Johnson, "Rethinking 'Batch' in BatchNorm", 2021, §3).
"""
from __future__ import annotations

from typing import Iterable

import torch


@torch.no_grad()
def recompute_bn_stats(model: torch.nn.Module, batches: Iterable, device: torch.device, max_batches: int = 50) -> int:
    """Reset and re-estimate every BatchNorm's running mean/var from ``batches``.

    ``batches`` yields ``(images, ...)`` tuples (a training DataLoader); only
    the images are used, ``(B, 3, H, W)``. Returns the number of batches used
    (0 when the model has no BatchNorm: nothing is run). The model's train/eval
    mode and the layers' momenta are restored.
    """
    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    if not bns:
        return 0
    was_training = model.training
    momenta = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the batches seen
    model.train()
    n = 0
    for batch in batches:
        if n >= max_batches:
            break
        model(batch[0].to(device))
        n += 1
    for m, mom in zip(bns, momenta):
        m.momentum = mom
    model.train(was_training)
    return n
