"""Normalization kernels: BatchNormalization (inference, plus the opset-14 training mode), Instance-, Layer-,
Group- and MeanVariance-Normalization, and LRN.

BatchNormalization with constant statistics is prepared at load time into one per-channel scale and shift, so
a call costs one multiply and one add.
"""

from __future__ import annotations

import numpy as np

from .registry import NodeSpec, Op, register
from .shape import finite_attr, int_attr, resolve_axes, resolve_axis


def _epsilon(op: Op) -> float:
    epsilon = finite_attr(op, "epsilon", 1e-5)
    if epsilon <= 0:
        raise op.fail(f"attribute 'epsilon' must be positive, got {epsilon}")
    return epsilon


def _stats_dtype(x: np.ndarray) -> type:
    """Statistics are accumulated in float64 for float64 inputs, float32 otherwise (float16 would lose too much)."""
    return np.float64 if x.dtype == np.float64 else np.float32


# ----------------------------------------------------------------------------------------------------------------
# BatchNormalization


def _per_channel(param: np.ndarray, x_shape: tuple[int, ...]) -> np.ndarray:
    """A BatchNormalization parameter shaped to broadcast against the input: one value per channel normally;
    one value per (channel, position) for the legacy spatial=0 form."""
    if param.size == x_shape[1]:
        return param.reshape((-1,) + (1,) * (len(x_shape) - 2))
    return param.reshape((1,) + tuple(x_shape[1:]))


def batchnorm_factors(scale: np.ndarray, b: np.ndarray, mean: np.ndarray, var: np.ndarray,
                      epsilon: float) -> tuple[np.ndarray, np.ndarray]:
    """(multiplier, shift) with ``BN(x) == x * multiplier + shift``, computed in float64."""
    factor = scale.astype(np.float64) / np.sqrt(var.astype(np.float64) + epsilon)
    return factor, b.astype(np.float64) - mean.astype(np.float64) * factor


@register("BatchNormalization", 1)
class BatchNormalization(Op):
    """Inference normalization with the running statistics (training_mode=1 from opset 14 uses the batch's)."""

    def __init__(self, node: NodeSpec):
        super().__init__(node)
        self.epsilon = _epsilon(self)
        self.momentum = finite_attr(self, "momentum", 0.9)
        self.training = bool(self.attr("training_mode", 0)) and node.opset >= 14
        self.output_count = len(node.outputs)
        params = [self.const(i) for i in range(1, 5)]
        self.factors = None
        if all(p is not None for p in params):
            self._check_params(params)
            self.factors = batchnorm_factors(*params, self.epsilon)

    def _check_params(self, params, x: np.ndarray | None = None) -> None:
        sizes = [p.size for p in params]
        if len(set(sizes)) != 1 or (x is not None and (x.ndim < 2 or sizes[0] not in (
                x.shape[1], x.size // max(x.shape[0], 1)))):
            shape = "" if x is None else f" for an input of shape {list(x.shape)}"
            raise self.fail(f"scale, B, mean and var of sizes {sizes} do not match{shape}")
        self.prepared: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}

    def _affine(self, x: np.ndarray, scale, b, mean, var) -> tuple[np.ndarray, np.ndarray]:
        key = (x.shape[1:], x.ndim, x.dtype)
        if self.factors is not None:
            cached = self.prepared.get(key)
            if cached is not None:
                return cached
            factor, shift = self.factors
        else:
            factor, shift = batchnorm_factors(scale, b, mean, var, self.epsilon)
        pair = (_per_channel(factor, x.shape).astype(x.dtype), _per_channel(shift, x.shape).astype(x.dtype))
        if self.factors is not None:
            self.prepared[key] = pair
        return pair

    def run(self, x, scale, b, mean, var):
        if self.factors is None or x.ndim < 2 or self.factors[0].size != x.shape[1]:
            self._check_params([scale, b, mean, var], x)
        if self.training:
            return self._train(x, scale, b, mean, var)
        factor, shift = self._affine(x, scale, b, mean, var)
        y = x * factor
        y += shift
        if self.output_count > 1:  # legacy training outputs: hand the running statistics through unchanged
            return (y, mean, var, mean, var)[: self.output_count]
        return y

    def _train(self, x, scale, b, mean, var):
        axes = (0,) + tuple(range(2, x.ndim))
        acc = x.astype(np.float64)
        batch_mean = acc.mean(axis=axes)
        batch_var = acc.var(axis=axes)
        factor, shift = batchnorm_factors(scale, b, batch_mean, batch_var, self.epsilon)
        y = (acc * _per_channel(factor, x.shape) + _per_channel(shift, x.shape)).astype(x.dtype)
        if self.output_count == 1:
            return y
        running_mean = (mean * self.momentum + batch_mean * (1 - self.momentum)).astype(mean.dtype)
        running_var = (var * self.momentum + batch_var * (1 - self.momentum)).astype(var.dtype)
        return (y, running_mean, running_var)[: self.output_count]


# ----------------------------------------------------------------------------------------------------------------
# Instance / Layer / Group / MeanVariance normalization


def _normalize(x: np.ndarray, axes: tuple[int, ...], epsilon: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(normalized x, mean, 1/std) over ``axes``, computed in the statistics dtype; mean and 1/std keep dims."""
    acc = x.astype(_stats_dtype(x), copy=False)
    mean = acc.mean(axis=axes, keepdims=True)
    centered = acc - mean
    inv_std = 1.0 / np.sqrt(np.mean(centered * centered, axis=axes, keepdims=True) + epsilon)
    return centered * inv_std, mean, inv_std


@register("InstanceNormalization", 1)
class InstanceNormalization(Op):
    def __init__(self, node: NodeSpec):
        super().__init__(node)
        self.epsilon = _epsilon(self)

    def run(self, x, scale, b):
        if x.ndim < 2 or scale.size != x.shape[1] or b.size != x.shape[1]:
            raise self.fail(f"scale {list(scale.shape)} and B {list(b.shape)} must have one value per channel of "
                            f"the input {list(x.shape)}")
        normalized, _, _ = _normalize(x, tuple(range(2, x.ndim)), self.epsilon)
        shape = (-1,) + (1,) * (x.ndim - 2)
        return (normalized * scale.reshape(shape) + b.reshape(shape)).astype(x.dtype, copy=False)


@register("LayerNormalization", 17)
class LayerNormalization(Op):
    def __init__(self, node: NodeSpec):
        super().__init__(node)
        self.axis = int_attr(self, "axis", -1)
        self.epsilon = _epsilon(self)
        self.output_count = len(node.outputs)

    def run(self, x, scale, b=None):
        axis = resolve_axis(self, self.axis, x.ndim)
        normalized, mean, inv_std = _normalize(x, tuple(range(axis, x.ndim)), self.epsilon)
        y = normalized * scale
        if b is not None:
            y += b
        y = y.astype(x.dtype, copy=False)
        if self.output_count == 1:
            return y
        return (y, mean, inv_std)[: self.output_count]


@register("GroupNormalization", 18)
class GroupNormalization(Op):
    """Normalization over groups of channels; opset 18 has one scale/bias per group, opset 21 per channel."""

    def __init__(self, node: NodeSpec):
        super().__init__(node)
        self.epsilon = _epsilon(self)
        self.groups = int_attr(self, "num_groups", 1)
        if self.groups < 1:
            raise self.fail(f"num_groups {self.groups} must be positive")

    def run(self, x, scale, b):
        if x.ndim < 2:
            raise self.fail(f"input must have a channel axis, got shape {list(x.shape)}")
        batch, channels = x.shape[:2]
        if channels % self.groups or scale.size not in (self.groups, channels) or b.size != scale.size:
            raise self.fail(f"{channels} channels, num_groups={self.groups}, scale {list(scale.shape)} and B "
                            f"{list(b.shape)} do not fit together")
        grouped = x.reshape(batch, self.groups, -1)
        normalized, _, _ = _normalize(grouped, (2,), self.epsilon)
        if scale.size == self.groups and channels != self.groups:  # opset 18: per-group parameters
            scale = np.repeat(scale, channels // self.groups)
            b = np.repeat(b, channels // self.groups)
        shape = (-1,) + (1,) * (x.ndim - 2)
        y = normalized.reshape(x.shape) * scale.reshape(shape) + b.reshape(shape)
        return y.astype(x.dtype, copy=False)


@register("MeanVarianceNormalization", 9)
class MeanVarianceNormalization(Op):
    """(x - mean) / (std + 1e-9) over ``axes`` (default: batch and spatial axes of NCHW)."""

    def __init__(self, node: NodeSpec):
        super().__init__(node)
        self.axes = tuple(int(a) for a in self.attr("axes", [0, 2, 3]))

    def run(self, x):
        axes = tuple(sorted(resolve_axes(self, self.axes, x.ndim)))
        acc = x.astype(_stats_dtype(x), copy=False)
        mean = acc.mean(axis=axes, keepdims=True)
        std = np.sqrt(np.maximum(np.mean(acc * acc, axis=axes, keepdims=True) - mean * mean, 0))
        return ((acc - mean) / (std + 1e-9)).astype(x.dtype, copy=False)


# ----------------------------------------------------------------------------------------------------------------
# LRN


@register("LRN", 1)
class LRN(Op):
    """Local response normalization across channels: x / (bias + alpha/size * sum of squares)^beta."""

    def __init__(self, node: NodeSpec):
        super().__init__(node)
        self.size = int_attr(self, "size")
        if self.size is None or self.size < 1:
            raise self.fail(f"attribute 'size' must be a positive integer, got {self.size}")
        self.alpha = finite_attr(self, "alpha", 1e-4)
        self.beta = finite_attr(self, "beta", 0.75)
        self.bias = finite_attr(self, "bias", 1.0)

    def run(self, x):
        if x.ndim < 2:
            raise self.fail(f"input must have a channel axis, got shape {list(x.shape)}")
        channels = x.shape[1]
        before, after = (self.size - 1) // 2, self.size - 1 - (self.size - 1) // 2
        squares = np.square(x.astype(_stats_dtype(x), copy=False))
        # window sums over channels via a running sum with one leading zero plane
        running = np.zeros((x.shape[0], channels + 1) + x.shape[2:], dtype=squares.dtype)
        np.cumsum(squares, axis=1, out=running[:, 1:])
        top = np.minimum(np.arange(channels) + after + 1, channels)
        bottom = np.maximum(np.arange(channels) - before, 0)
        window = running[:, top] - running[:, bottom]
        return (x / (self.bias + self.alpha / self.size * window) ** self.beta).astype(x.dtype, copy=False)
