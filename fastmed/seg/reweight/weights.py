"""The per-image weights gamma of the rough images, their update, and how well they separate.

Update (every tau steps): with ``g_S`` the mean loss gradient of an exact
batch and ``d_k = g_S . g_k`` for every rough image k in the pool,
``gamma_k <- clip(gamma_k + beta * step_k, 0, 1)`` with ``step_k`` by rule:

* ``raw``:      ``d_k`` (the literal rule; beta then depends on the loss scale);
* ``scaled``:   ``d_k / mean|d|`` (beta in units of gamma);
* ``centered``: ``(d_k - mean d) / mean|d - mean d|`` (agreement relative to the pool);
* ``ratio``:    ``clip((d_k - m/2) / |m|, -1, 1)`` with ``m = median d`` (for ``m > 0``:
  ``d_k/m - 1/2``): a weight falls only where its image agrees with the exact batch less
  than half as much as the pool's median image.

Why ``ratio`` is the default: on the synthetic data nearly every d_k is positive (all
images agree on the large background), so with gamma starting at 1 ``raw`` and ``scaled``
never lower a weight, although wrong rough masks have clearly smaller d_k; ``centered``
does lower them, but its steps sum to zero over the pool, so in a pool of only right
masks it lowers about half the weights too (see README, seg-reweight: ``seg_reweight_rules``).
``ratio`` needs the right masks to be the majority of the pool (the median is then one of theirs).
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from torch import nn

from fastmed.engine.metrics import roc_auc
from fastmed.kernels import per_sample_grad_dot


def mean_gradient(model: nn.Module, loss_fn: Callable, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
    """``g_S``: gradient of the mean per-sample loss over ``(x, y)``, as ``{param name: tensor}`` (no ``.grad`` written)."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    loss = loss_fn(model(x), y).mean()
    grads = torch.autograd.grad(loss, [p for _, p in named], allow_unused=True)
    return {n: g.detach() for (n, _), g in zip(named, grads) if g is not None}


def gradient_dots(model: nn.Module, loss_fn: Callable, x: torch.Tensor, y: torch.Tensor, direction: dict[str, torch.Tensor], chunk: int = 32) -> torch.Tensor:
    """``(K,)``: ``g_k . direction`` for every image of ``x (K, ...)``, in chunks of ``chunk`` images."""
    parts = [per_sample_grad_dot(model, loss_fn, x[i:i + chunk], y[i:i + chunk], direction) for i in range(0, len(x), chunk)]
    return torch.cat(parts)


class GammaTable:
    """Weights of ``n`` rough images, their history ``[(step, gamma copy), ...]`` and the dot
    products of every update ``dot_history = [(step, pool index (P,), d (P,)), ...]``."""

    def __init__(self, n: int, init: float = 1.0):
        if not 0.0 <= init <= 1.0:
            raise ValueError(f"gamma init must be in [0, 1], got {init}")
        self.gamma = torch.full((n,), float(init))
        self.history: list[tuple[int, np.ndarray]] = [(0, self.gamma.numpy().copy())]
        self.dot_history: list[tuple[int, np.ndarray, np.ndarray]] = []

    def step(self, index: torch.Tensor, dots: torch.Tensor, beta: float, rule: str, step: int) -> torch.Tensor:
        """Apply the update to ``gamma[index]`` given ``dots (len(index),)``; return the applied change."""
        d = dots.detach().double().cpu()
        self.dot_history.append((step, index.cpu().numpy().copy(), d.numpy().copy()))
        if rule == "scaled":
            d = d / d.abs().mean().clamp_min(1e-30)
        elif rule == "centered":
            d = d - d.mean()
            d = d / d.abs().mean().clamp_min(1e-30)
        elif rule == "ratio":
            m = d.median()
            d = ((d - m / 2) / m.abs().clamp_min(1e-30)).clamp(-1.0, 1.0)
        elif rule != "raw":
            raise ValueError(f"rule must be 'raw', 'scaled', 'centered' or 'ratio', got {rule!r}")
        old = self.gamma[index].clone()
        self.gamma[index] = (old + beta * d.float()).clamp(0.0, 1.0)
        self.history.append((step, self.gamma.numpy().copy()))
        return self.gamma[index] - old

    def state_dict(self) -> dict:
        return {"gamma": self.gamma.clone(), "steps": [s for s, _ in self.history],
                "history": torch.from_numpy(np.stack([g for _, g in self.history])),
                "dots": [(s, torch.from_numpy(i), torch.from_numpy(d)) for s, i, d in self.dot_history]}

    def load_state_dict(self, state: dict) -> None:
        self.gamma = state["gamma"].clone().float()
        self.history = [(int(s), g.numpy().copy()) for s, g in zip(state["steps"], state["history"])]
        self.dot_history = [(int(s), i.numpy().copy(), d.numpy().copy()) for s, i, d in state.get("dots", [])]


def separation_auc(gamma: np.ndarray, wrong: np.ndarray) -> float:
    """AUC of ``1 - gamma`` as a score for "wrong rough mask" (ties count 1/2); NaN without both classes.

    1.0: every wrong mask has a lower weight than every right one; 0.5: chance.
    """
    return roc_auc(wrong, -np.asarray(gamma, float))  # a lower weight is a higher "wrong" score
