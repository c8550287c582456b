"""Optimizers over dicts of named arrays (a model's initializers) and learning-rate schedules.

    opt = SGD(lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4, decay={"fc1.weight", ...})
    opt.step(params, grads)        # params updated in place; names without a gradient are left alone

Weight decay applies only to the names in ``decay`` (by default every array of rank >= 2: convolution and dense
weights, not biases or normalisation scales and shifts). SGD adds it to the gradient (L2); AdamW decouples it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Mapping

import numpy as np


def default_decay(params: Mapping[str, np.ndarray]) -> set[str]:
    """The names weight decay applies to by default: weights of rank >= 2 (not biases, BN scale/shift)."""
    return {name for name, value in params.items() if np.ndim(value) >= 2}


class Optimizer:
    def __init__(self, lr: float, weight_decay: float = 0.0, decay: Collection[str] | None = None) -> None:
        self.lr = lr
        self.weight_decay = weight_decay
        self.decay = None if decay is None else set(decay)
        self.state: dict[str, dict[str, np.ndarray]] = {}

    def _decays(self, name: str, value: np.ndarray) -> bool:
        if not self.weight_decay:
            return False
        return name in self.decay if self.decay is not None else value.ndim >= 2

    def step(self, params: Mapping[str, np.ndarray], grads: Mapping[str, np.ndarray]) -> None:
        """Update every ``params[name]`` that has a gradient in ``grads``, in place."""
        for name, grad in grads.items():
            value = params.get(name)
            if value is not None and grad is not None:
                self.update(name, value, np.asarray(grad, dtype=value.dtype))

    def update(self, name: str, value: np.ndarray, grad: np.ndarray) -> None:
        raise NotImplementedError


class SGD(Optimizer):
    """SGD with (optionally Nesterov) momentum; weight decay added to the gradient (L2 regularisation)."""

    def __init__(self, lr: float = 0.05, momentum: float = 0.9, nesterov: bool = False, weight_decay: float = 0.0,
                 decay: Collection[str] | None = None) -> None:
        super().__init__(lr, weight_decay, decay)
        self.momentum, self.nesterov = momentum, nesterov

    def update(self, name: str, value: np.ndarray, grad: np.ndarray) -> None:
        if self._decays(name, value):
            grad = grad + np.asarray(self.weight_decay, value.dtype) * value
        lr = np.asarray(self.lr, value.dtype)
        if not self.momentum:
            value -= lr * grad
            return
        state = self.state.get(name)
        if state is None:
            velocity = self.state.setdefault(name, {"velocity": grad.copy()})["velocity"]
        else:
            velocity = state["velocity"]
            velocity *= np.asarray(self.momentum, value.dtype)
            velocity += grad
        if self.nesterov:
            value -= lr * (grad + np.asarray(self.momentum, value.dtype) * velocity)
        else:
            value -= lr * velocity


class AdamW(Optimizer):
    """Adam with bias correction and decoupled weight decay (``p -= lr * wd * p``, AdamW);
    ``decoupled=False`` adds the decay to the gradient instead (plain Adam with L2)."""

    def __init__(self, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.01, decay: Collection[str] | None = None, decoupled: bool = True) -> None:
        super().__init__(lr, weight_decay, decay)
        self.beta1, self.beta2 = betas
        self.eps, self.decoupled = eps, decoupled
        self.steps: dict[str, int] = {}

    def update(self, name: str, value: np.ndarray, grad: np.ndarray) -> None:
        decays = self._decays(name, value)
        if decays and not self.decoupled:
            grad = grad + np.asarray(self.weight_decay, value.dtype) * value
        state = self.state.get(name)
        if state is None:
            state = self.state[name] = {"m": np.zeros_like(value), "v": np.zeros_like(value)}
        t = self.steps[name] = self.steps.get(name, 0) + 1
        m, v = state["m"], state["v"]
        m *= np.asarray(self.beta1, value.dtype)
        m += np.asarray(1 - self.beta1, value.dtype) * grad
        v *= np.asarray(self.beta2, value.dtype)
        v += np.asarray(1 - self.beta2, value.dtype) * grad * grad
        step_size = self.lr / (1 - self.beta1 ** t)
        denominator = np.sqrt(v / np.asarray(1 - self.beta2 ** t, value.dtype)) + np.asarray(self.eps, value.dtype)
        if decays and self.decoupled:
            value -= np.asarray(self.lr * self.weight_decay, value.dtype) * value
        value -= np.asarray(step_size, value.dtype) * m / denominator


#: Adam is AdamW with the decay added to the gradient
def Adam(lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.0,
         decay: Collection[str] | None = None) -> AdamW:  # noqa: N802 - a constructor
    return AdamW(lr, betas, eps, weight_decay, decay, decoupled=False)


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
        self.step_size, self.gamma = max(int(step_size), 1), gamma

    def after_warmup(self, step: int) -> float:
        return self.base_lr * self.gamma ** (step // self.step_size)


def make_schedule(kind: str | Schedule | Callable[[int], float], lr: float, total_steps: int,
                  warmup_steps: int = 0) -> Callable[[int], float]:
    """``cosine``, ``step`` (x0.1 at every third of training), ``constant``, or a Schedule/callable as is."""
    if callable(kind):
        return kind
    if kind == "cosine":
        return CosineSchedule(lr, total_steps, warmup_steps)
    if kind == "step":
        return StepSchedule(lr, max(total_steps // 3, 1), gamma=0.1, warmup_steps=warmup_steps)
    if kind == "constant":
        return Schedule(lr, warmup_steps)
    raise ValueError(f"unknown schedule {kind!r} (cosine, step or constant)")
