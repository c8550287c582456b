"""Optimizers (SGD with momentum, Adam/AdamW) and learning-rate schedules for ``nn_core.layers`` parameters."""

from __future__ import annotations

import math

import numpy as np

from .layers import Parameter


class Optimizer:
    def __init__(self, parameters: list[Parameter], lr: float, weight_decay: float = 0.0) -> None:
        self.parameters = list(parameters)
        self.lr = lr
        self.weight_decay = weight_decay

    def zero_grad(self) -> None:
        for p in self.parameters:
            p.grad[...] = 0

    def step(self) -> None:
        raise NotImplementedError


class SGD(Optimizer):
    """SGD with (optionally Nesterov) momentum; weight decay is added to the gradient (L2 regularisation)."""

    def __init__(
        self,
        parameters: list[Parameter],
        lr: float = 0.05,
        momentum: float = 0.9,
        nesterov: bool = False,
        weight_decay: float = 0.0,
    ) -> None:
        super().__init__(parameters, lr, weight_decay)
        self.momentum, self.nesterov = momentum, nesterov
        self._velocity = [np.zeros_like(p.value) for p in self.parameters]

    def step(self) -> None:
        for p, v in zip(self.parameters, self._velocity, strict=True):
            grad = p.grad + self.weight_decay * p.value if (self.weight_decay and p.decay) else p.grad
            v *= self.momentum
            v += grad
            update = grad + self.momentum * v if self.nesterov else v
            p.value -= (self.lr * update).astype(p.value.dtype, copy=False)


class Adam(Optimizer):
    """Adam with bias correction; ``decoupled=True`` (the default) applies weight decay AdamW-style."""

    def __init__(
        self,
        parameters: list[Parameter],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        decoupled: bool = True,
    ) -> None:
        super().__init__(parameters, lr, weight_decay)
        self.beta1, self.beta2 = betas
        self.eps, self.decoupled = eps, decoupled
        self._m = [np.zeros_like(p.value) for p in self.parameters]
        self._v = [np.zeros_like(p.value) for p in self.parameters]
        self._t = 0

    def step(self) -> None:
        self._t += 1
        correction1 = 1 - self.beta1**self._t
        correction2 = 1 - self.beta2**self._t
        for p, m, v in zip(self.parameters, self._m, self._v, strict=True):
            decay = self.weight_decay if p.decay else 0.0
            grad = p.grad + decay * p.value if (decay and not self.decoupled) else p.grad
            m *= self.beta1
            m += (1 - self.beta1) * grad
            v *= self.beta2
            v += (1 - self.beta2) * grad * grad
            update = (m / correction1) / (np.sqrt(v / correction2) + self.eps)
            if decay and self.decoupled:
                update = update + decay * p.value
            p.value -= (self.lr * update).astype(p.value.dtype, copy=False)


class Schedule:
    """Learning rate as a function of the optimizer step, with an optional linear warm-up from 0."""

    def __init__(self, base_lr: float, warmup_steps: int = 0) -> None:
        self.base_lr, self.warmup_steps = base_lr, warmup_steps

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return self.base_lr * (step + 1) / self.warmup_steps
        return self.after_warmup(step - self.warmup_steps)

    def after_warmup(self, step: int) -> float:
        return self.base_lr


class CosineSchedule(Schedule):
    """Cosine decay from ``base_lr`` to ``min_lr`` over the steps after warm-up."""

    def __init__(self, base_lr: float, total_steps: int, warmup_steps: int = 0, min_lr: float = 0.0) -> None:
        super().__init__(base_lr, warmup_steps)
        self.decay_steps = max(total_steps - warmup_steps, 1)
        self.min_lr = min_lr

    def after_warmup(self, step: int) -> float:
        progress = min(step / self.decay_steps, 1.0)
        return self.min_lr + 0.5 * (self.base_lr - self.min_lr) * (1 + math.cos(math.pi * progress))


class StepSchedule(Schedule):
    """Multiplies the rate by ``gamma`` every ``step_size`` steps after warm-up."""

    def __init__(self, base_lr: float, step_size: int, gamma: float = 0.1, warmup_steps: int = 0) -> None:
        super().__init__(base_lr, warmup_steps)
        self.step_size, self.gamma = step_size, gamma

    def after_warmup(self, step: int) -> float:
        return self.base_lr * self.gamma ** (step // self.step_size)
