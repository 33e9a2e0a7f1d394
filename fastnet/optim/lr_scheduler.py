"""Learning-rate schedules. Call ``scheduler.step()`` once per epoch (or per batch for
OneCycleLR); each sets every group's ``lr`` from its ``initial_lr``.

* StepLR: lr = lr0 · γ^⌊epoch / step_size⌋
* CosineAnnealingLR: lr = η_min + (lr0 − η_min)(1 + cos(π·t/T))/2
* OneCycleLR: linear warm-up from lr0/div_factor to lr0 over ``pct_start`` of the steps, then
  cosine annealing down to lr0/(div_factor·final_div_factor)
* LambdaLR: lr = lr0 · f(epoch)
"""

from __future__ import annotations

import math
from collections.abc import Callable

from .optimizer import Optimizer


class LRScheduler:
    def __init__(self, optimizer: Optimizer) -> None:
        self.optimizer = optimizer
        for group in optimizer.param_groups:
            group.setdefault("initial_lr", group["lr"])
        self.last_epoch = 0
        self._apply()

    def factor(self, epoch: int, group_index: int) -> float:  # pragma: no cover - abstract
        """The learning rate at ``epoch`` for a group whose initial rate is 1 (or the rate
        itself)."""
        raise NotImplementedError

    def lr_at(self, epoch: int, initial_lr: float, group_index: int) -> float:
        return initial_lr * self.factor(epoch, group_index)

    def _apply(self) -> None:
        for index, group in enumerate(self.optimizer.param_groups):
            group["lr"] = self.lr_at(self.last_epoch, group["initial_lr"], index)

    def step(self) -> None:
        self.last_epoch += 1
        self._apply()

    def get_last_lr(self) -> list[float]:
        return [group["lr"] for group in self.optimizer.param_groups]

    def state_dict(self) -> dict:
        return {"last_epoch": self.last_epoch}

    def load_state_dict(self, state: dict) -> None:
        self.last_epoch = int(state["last_epoch"])
        self._apply()


class StepLR(LRScheduler):
    def __init__(self, optimizer: Optimizer, step_size: int, gamma: float = 0.1) -> None:
        if step_size < 1:
            raise ValueError(f"step_size must be at least 1, got {step_size}")
        self.step_size, self.gamma = step_size, gamma
        super().__init__(optimizer)

    def factor(self, epoch, group_index):
        return self.gamma ** (epoch // self.step_size)


class CosineAnnealingLR(LRScheduler):
    def __init__(self, optimizer: Optimizer, T_max: int, eta_min: float = 0.0) -> None:
        if T_max < 1:
            raise ValueError(f"T_max must be at least 1, got {T_max}")
        self.T_max, self.eta_min = T_max, eta_min
        super().__init__(optimizer)

    def lr_at(self, epoch, initial_lr, group_index):
        t = min(epoch, self.T_max)
        return (
            self.eta_min
            + (initial_lr - self.eta_min) * (1 + math.cos(math.pi * t / self.T_max)) / 2
        )


class OneCycleLR(LRScheduler):
    """Warm-up then cosine decay over ``total_steps`` calls of ``step()`` (call it every batch)."""

    def __init__(
        self,
        optimizer: Optimizer,
        max_lr: float | None = None,
        total_steps: int = 1000,
        pct_start: float = 0.3,
        div_factor: float = 25.0,
        final_div_factor: float = 1e4,
    ) -> None:
        if total_steps < 2:
            raise ValueError(f"total_steps must be at least 2, got {total_steps}")
        if not 0.0 < pct_start < 1.0:
            raise ValueError(f"pct_start must be in (0, 1), got {pct_start}")
        if max_lr is not None:
            for group in optimizer.param_groups:
                group["initial_lr"] = max_lr
        self.total_steps, self.pct_start = total_steps, pct_start
        self.div_factor, self.final_div_factor = div_factor, final_div_factor
        super().__init__(optimizer)

    def factor(self, epoch, group_index):
        warmup = max(1, int(self.pct_start * self.total_steps))
        start, end = 1.0 / self.div_factor, 1.0 / (self.div_factor * self.final_div_factor)
        t = min(epoch, self.total_steps - 1)
        if t < warmup:
            return start + (1.0 - start) * t / warmup
        progress = (t - warmup) / max(1, self.total_steps - 1 - warmup)
        return end + (1.0 - end) * (1 + math.cos(math.pi * progress)) / 2


class LambdaLR(LRScheduler):
    def __init__(self, optimizer: Optimizer, lr_lambda: Callable[[int], float]) -> None:
        self.lr_lambda = lr_lambda
        super().__init__(optimizer)

    def factor(self, epoch, group_index):
        return self.lr_lambda(epoch)
