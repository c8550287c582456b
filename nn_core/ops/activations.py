"""Activation kernels: the ReLU family, sigmoid-likes, Clip, Gelu, and Softmax / LogSoftmax / Hardmax.

Every formula is written so that it cannot overflow for large |x| (no exp of a large positive number): the
results are right at the extremes, not just in the middle of the range.
"""

from __future__ import annotations

import math

import numpy as np

from .elementwise import erf
from .registry import NodeSpec, Op, register
from .shape import check_broadcast, element_limit, finite_attr, finite_or_inf_attr, int_attr


@register("Relu", 1)
class Relu(Op):
    def __init__(self, node: NodeSpec):
        super().__init__(node)
        # a 0-d zero of the input's type: NumPy compares against it faster than against a Python 0
        self.zero = np.zeros((), np.float32)

    def run(self, x: np.ndarray) -> np.ndarray:
        zero = self.zero
        if zero.dtype is not x.dtype:  # (a 0-d array of another type would promote x)
            zero = self.zero = np.zeros((), x.dtype)
        return np.maximum(x, zero)


@register("LeakyRelu", 1)
class LeakyRelu(Op):
    def __init__(self, node: NodeSpec):
        super().__init__(node)
        self.alpha = finite_attr(self, "alpha", 0.01)

    def run(self, x: np.ndarray) -> np.ndarray:
        if 0 <= self.alpha <= 1:  # then max(x, alpha x) is the same thing in one pass
            return np.maximum(x, x * self.alpha)
        return np.where(x < 0, x * self.alpha, x)


def align_channel_slope(x: np.ndarray, slope: np.ndarray) -> np.ndarray:
    """A 1-D slope of length C against an (N, C, ...) input means one slope per channel (axis 1).

    That was PRelu's rule before opset 7 and is what old exporters still write; NumPy's trailing alignment
    would pair it with the last axis instead (or fail), so it is reshaped to broadcast over axis 1.
    """
    if slope.ndim == 1 and x.ndim > 2 and slope.shape[0] == x.shape[1] != x.shape[-1]:
        return slope.reshape((-1,) + (1,) * (x.ndim - 2))
    return slope


@register("PRelu", 1)
class PRelu(Op):
    def __init__(self, node: NodeSpec):
        super().__init__(node)
        self.legacy = node.opset < 7  # before opset 7 a 1-D slope is always per channel
        self.max_elements = element_limit(self)

    def run(self, x: np.ndarray, slope: np.ndarray) -> np.ndarray:
        if self.legacy or (slope.ndim == 1 and x.ndim > 2):
            slope = align_channel_slope(x, slope)
        if x.size * slope.size > self.max_elements:
            check_broadcast(self, np.result_type(x, slope), x, slope)
        return np.where(x < 0, x * slope, x)


def sigmoid(x: np.ndarray) -> np.ndarray:
    """1 / (1 + exp(-x)) through exp(-|x|), which is never large: exact tails (down to denormals), no overflow."""
    small = np.exp(-np.abs(x))
    positive_side = 1 / (1 + small)
    return np.where(x >= 0, positive_side, small * positive_side)


def softplus(x: np.ndarray) -> np.ndarray:
    """log(1 + exp(x)) = max(x, 0) + log1p(exp(-|x|)): no overflow, and exact where exp(x) is tiny."""
    return np.maximum(x, 0) + np.log1p(np.exp(-np.abs(x)))


def _exp_minus_one_of_negative_part(x: np.ndarray) -> np.ndarray:
    # exp(x) - 1 only where it is used (x <= 0); clamping first keeps exp of large positives from overflowing
    return np.expm1(np.minimum(x, 0))


@register("Sigmoid", 1)
class Sigmoid(Op):
    run = staticmethod(sigmoid)


@register("Tanh", 1)
class Tanh(Op):
    run = staticmethod(np.tanh)


@register("Softplus", 1)
class Softplus(Op):
    run = staticmethod(softplus)


@register("Softsign", 1)
class Softsign(Op):
    def run(self, x: np.ndarray) -> np.ndarray:
        return x / (1 + np.abs(x))


@register("Mish", 18)
class Mish(Op):
    def run(self, x: np.ndarray) -> np.ndarray:
        return x * np.tanh(softplus(x))


@register("Elu", 1)
class Elu(Op):
    def __init__(self, node: NodeSpec):
        super().__init__(node)
        self.alpha = finite_attr(self, "alpha", 1.0)

    def run(self, x: np.ndarray) -> np.ndarray:
        return np.where(x > 0, x, self.alpha * _exp_minus_one_of_negative_part(x))


@register("Selu", 1)
class Selu(Op):
    def __init__(self, node: NodeSpec):
        super().__init__(node)
        # the defaults are the float32 values of the constants from the SELU paper, as the ONNX spec gives them
        self.alpha = finite_attr(self, "alpha", 1.67326319217681884765625)
        self.gamma = finite_attr(self, "gamma", 1.05070102214813232421875)

    def run(self, x: np.ndarray) -> np.ndarray:
        return self.gamma * np.where(x > 0, x, self.alpha * _exp_minus_one_of_negative_part(x))


@register("Celu", 12)
class Celu(Op):
    def __init__(self, node: NodeSpec):
        super().__init__(node)
        self.alpha = finite_attr(self, "alpha", 1.0)
        if self.alpha == 0:
            raise self.fail("attribute 'alpha' must not be 0 (Celu divides by it)")

    def run(self, x: np.ndarray) -> np.ndarray:
        return np.maximum(x, 0) + self.alpha * _exp_minus_one_of_negative_part(x / self.alpha)


@register("ThresholdedRelu", 10)
class ThresholdedRelu(Op):
    def __init__(self, node: NodeSpec):
        super().__init__(node)
        self.alpha = finite_attr(self, "alpha", 1.0)

    def run(self, x: np.ndarray) -> np.ndarray:
        return np.where(x > self.alpha, x, 0)


@register("HardSigmoid", 1)
class HardSigmoid(Op):
    def __init__(self, node: NodeSpec):
        super().__init__(node)
        self.alpha = finite_attr(self, "alpha", 0.2)
        self.beta = finite_attr(self, "beta", 0.5)

    def run(self, x: np.ndarray) -> np.ndarray:
        return np.clip(x * self.alpha + self.beta, 0, 1)


@register("HardSwish", 14)
class HardSwish(Op):
    def run(self, x: np.ndarray) -> np.ndarray:
        return x * np.clip(x * (1 / 6) + 0.5, 0, 1)


@register("Shrink", 9)
class Shrink(Op):
    def __init__(self, node: NodeSpec):
        super().__init__(node)
        self.bias = finite_attr(self, "bias", 0.0)
        self.lambd = finite_attr(self, "lambd", 0.5)

    def run(self, x: np.ndarray) -> np.ndarray:
        shrunk = np.where(x < -self.lambd, x + self.bias, np.where(x > self.lambd, x - self.bias, 0))
        return shrunk.astype(x.dtype, copy=False)  # integer inputs: the float attributes must not promote


@register("Gelu", 20)
class Gelu(Op):
    def __init__(self, node: NodeSpec):
        super().__init__(node)
        self.approximate = self.attr("approximate", "none")
        if self.approximate not in ("none", "tanh"):
            raise self.fail(f"approximate must be 'none' or 'tanh', got {self.approximate!r}")

    def run(self, x: np.ndarray) -> np.ndarray:
        if self.approximate == "tanh":
            inner = math.sqrt(2 / math.pi) * (x + 0.044715 * x * x * x)
            return 0.5 * x * (1 + np.tanh(inner))
        return 0.5 * x * (1 + erf(x * (1 / math.sqrt(2))))


# --------------------------------------------------------------------------------------------------------------
# Clip


@register("Clip", 1)
class ClipWithAttributes(Op):
    """Clip before opset 11: bounds are the `min` / `max` attributes (absent: unbounded)."""

    def __init__(self, node: NodeSpec):
        super().__init__(node)
        self.low = None if self.attr("min") is None else finite_or_inf_attr(self, "min", 0.0)
        self.high = None if self.attr("max") is None else finite_or_inf_attr(self, "max", 0.0)

    def run(self, x: np.ndarray) -> np.ndarray:
        return clip(x, self.low, self.high)


@register("Clip", 11)
class Clip(Op):
    """Clip from opset 11: bounds are optional inputs 1 and 2."""

    def __init__(self, node: NodeSpec):
        super().__init__(node)
        # constant bounds (the usual ReLU6 case) become Python numbers once, which keep x's type in NumPy
        self.low = _scalar_or_none(self.const(1))
        self.high = _scalar_or_none(self.const(2))
        self.bounds_known = (self.low is not None or len(node.inputs) < 2 or not node.inputs[1]) and (
            self.high is not None or len(node.inputs) < 3 or not node.inputs[2]
        )

    def run(self, x: np.ndarray, low: np.ndarray | None = None, high: np.ndarray | None = None) -> np.ndarray:
        if self.bounds_known:
            return clip(x, self.low, self.high)
        return clip(x, low, high)


def _scalar_or_none(value: np.ndarray | None) -> float | int | None:
    return None if value is None or value.size == 0 else value.reshape(()).item()


def clip(x: np.ndarray, low, high) -> np.ndarray:
    """max(x, low) then min(., high), so low > high gives high everywhere, as ONNX specifies."""
    if low is not None:
        x = np.maximum(x, low)
    if high is not None:
        x = np.minimum(x, high)
    return x


# --------------------------------------------------------------------------------------------------------------
# Softmax, LogSoftmax, Hardmax
#
# Before opset 13 these flatten the input to 2-D at `axis` (default 1) and normalise over the whole second
# dimension, i.e. over all the axes from `axis` on; from opset 13 they normalise over the single `axis` (default -1).


class _Normalizer(Op):
    def __init__(self, node: NodeSpec):
        super().__init__(node)
        self.coerce_2d = node.opset < 13
        self.axis = int_attr(self, "axis", 1 if self.coerce_2d else -1)
        self.resolved_rank, self.resolved_axes = -1, 0

    def axes(self, x: np.ndarray) -> int | tuple[int, ...]:
        """The axis (from opset 13) or axes (before) to normalise over, resolved once per input rank."""
        if x.ndim != self.resolved_rank:
            if not -x.ndim <= self.axis < max(x.ndim, 1):
                raise self.fail(f"axis {self.axis} is out of range for an input of shape {x.shape}")
            axis = self.axis % x.ndim if x.ndim else 0
            self.resolved_axes = tuple(range(axis, x.ndim)) if self.coerce_2d else axis
            self.resolved_rank = x.ndim
        return self.resolved_axes


# np.maximum.reduce / np.add.reduce: np.max / np.sum without their per-call overhead (which dominates small inputs)


@register("Softmax", 1)
class Softmax(_Normalizer):
    def run(self, x: np.ndarray) -> np.ndarray:
        axes = self.axes(x)
        exps = np.exp(x - np.maximum.reduce(x, axis=axes, keepdims=True))  # every exponent <= 0: no overflow
        exps /= np.add.reduce(exps, axis=axes, keepdims=True)
        return exps


@register("LogSoftmax", 1)
class LogSoftmax(_Normalizer):
    def run(self, x: np.ndarray) -> np.ndarray:
        axes = self.axes(x)
        # x - max - log(sum(exp(x - max))): never exp of a large number nor log of an underflowed 0
        shifted = x - np.maximum.reduce(x, axis=axes, keepdims=True)
        shifted -= np.log(np.add.reduce(np.exp(shifted), axis=axes, keepdims=True))
        return shifted


@register("Hardmax", 1)
class Hardmax(_Normalizer):
    """1 at the first maximum along the axis (or across the flattened axes before opset 13), 0 elsewhere."""

    def run(self, x: np.ndarray) -> np.ndarray:
        axes = self.axes(x)
        if isinstance(axes, int):
            axis, rows = axes, x
        else:  # flatten the normalised axes into one
            axis = axes[0] if axes else x.ndim
            rows = x.reshape(x.shape[:axis] + (-1,))
        winners = np.expand_dims(np.argmax(rows, axis=axis), axis)
        onehot = np.zeros(rows.shape, dtype=x.dtype)
        np.put_along_axis(onehot, winners, 1, axis=axis)
        return onehot.reshape(x.shape)
