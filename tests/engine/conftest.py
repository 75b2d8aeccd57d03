"""A toy ``TrainTask`` for the fit-loop tests."""
from __future__ import annotations

import pytest
import torch

from fastmed.engine.checkpoint import make_checkpoint


class LinearTask:
    """Fits y = 2x with one linear unit (the loss must fall); 4 batches of 16 points per epoch.

    ``in_features`` and ``class_names`` change what ``checkpoint()`` records (arch kwargs, class
    names); ``interrupt_at`` raises KeyboardInterrupt when that epoch starts.
    """

    def __init__(self, in_features: int = 1, class_names=("a", "b"), interrupt_at: int | None = None):
        self.model = torch.nn.Linear(in_features, 1)
        self.opt = torch.optim.SGD(self.model.parameters(), lr=0.1)
        self.x = torch.linspace(-1, 1, 16)[:, None].repeat(1, in_features)
        self.in_features, self.class_names, self.interrupt_at = in_features, list(class_names), interrupt_at

    def train_batches(self, epoch):
        if epoch == self.interrupt_at:
            raise KeyboardInterrupt
        return [(self.x, 2 * self.x[:, :1])] * 4

    def train_step(self, batch):
        loss = torch.nn.functional.mse_loss(self.model(batch[0]), batch[1])
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        return {"loss": loss.item()}

    def evaluate(self):
        return {"loss": torch.nn.functional.mse_loss(self.model(self.x), 2 * self.x[:, :1]).item()}

    def checkpoint(self):
        return make_checkpoint(self.model, task="test", kind="regressor", arch="linear", arch_kwargs={"in_features": self.in_features},
                               class_names=self.class_names, input_size=[1, 1])

    def state_dict(self):
        return {"optimizer": self.opt.state_dict()}

    def load_state_dict(self, state):
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["optimizer"])


@pytest.fixture
def linear_task():
    """The ``LinearTask`` class (call it for a fresh task)."""
    return LinearTask
