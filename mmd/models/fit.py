"""What every detector's training loop shares: one optimiser step, and the best epoch kept.

`EarlyStopping` remembers the weights of the epoch with the best (lowest) validation figure and
says when `patience` epochs went by without an improvement; `restore()` puts the best weights back.
"""

from __future__ import annotations

import copy
import math
from typing import Any, Callable, Sequence

import torch
from torch import nn


def optimise(loss: torch.Tensor, optimizers: Sequence[torch.optim.Optimizer], params: Sequence[torch.Tensor],
             clip: float | None) -> None:
    """zero_grad, backward, clip the gradient norm, step."""
    for opt in optimizers:
        opt.zero_grad(set_to_none=True)
    loss.backward()
    if clip is not None:
        nn.utils.clip_grad_norm_(params, clip)
    for opt in optimizers:
        opt.step()


class EarlyStopping:
    """The best epoch by a validation figure (lower is better) and its weights.

    `snapshot()` returns what `restore(state)` puts back; `patience=None` never stops early (the best
    epoch is still the one kept)."""

    def __init__(self, snapshot: Callable[[], Any], restore: Callable[[Any], None], patience: int | None,
                 min_delta: float = 1e-5):
        self._snapshot, self._restore = snapshot, restore
        self.patience, self.min_delta = patience, min_delta
        self.best, self.best_epoch, self.bad = math.inf, 0, 0
        self.state = snapshot()

    @classmethod
    def of_modules(cls, modules: Sequence[nn.Module], patience: int | None, min_delta: float = 1e-5) -> "EarlyStopping":
        """Keeps the modules' whole state dicts."""
        def snapshot() -> list[dict]:
            return [copy.deepcopy(m.state_dict()) for m in modules]

        def restore(states: list[dict]) -> None:
            for m, state in zip(modules, states):
                m.load_state_dict(state)

        return cls(snapshot, restore, patience, min_delta)

    def step(self, epoch: int, value: float) -> bool:
        """Record an epoch's validation figure; True when training should stop."""
        if value < self.best - self.min_delta:
            self.best, self.best_epoch, self.bad = value, epoch, 0
            self.state = self._snapshot()
            return False
        self.bad += 1
        return self.patience is not None and self.bad >= self.patience

    def restore(self) -> None:
        self._restore(self.state)
