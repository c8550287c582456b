"""Normalization kernels: BatchNormalization (inference, plus the opset-14 training mode), Instance-, Layer-,
Group- and MeanVariance-Normalization, and LRN.

BatchNormalization with constant statistics is prepared at load time into one per-channel scale and shift, so
a call costs one multiply and one add.
"""

from __future__ import annotations

import math

import numpy as np

from .activations import ones_column
from .caches import keep
from .gradients import sum_to_shape
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
        self.output_count = len(node.outputs)
        if node.opset >= 14:
            self.training = bool(self.attr("training_mode", 0))
        else:
            # before opset 14, asking for the running and saved statistics (outputs 2-5) is training mode (as
            # onnxruntime reads it), unless opset 6's is_test says otherwise
            self.training = self.output_count > 1 and not (node.opset < 7 and self.attr("is_test", 0))
        self.legacy = node.opset < 14
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
        if not self.legacy:
            return (y, running_mean, running_var)[: self.output_count]
        # legacy outputs 4 and 5: the batch mean and the inverse standard deviation (onnxruntime's saved values)
        saved_inv_std = 1.0 / np.sqrt(batch_var + self.epsilon)
        return (y, running_mean, running_var, batch_mean.astype(x.dtype),
                saved_inv_std.astype(x.dtype))[: self.output_count]

    def backward(self, inputs, outputs, grads):
        x, scale, b, mean, var = inputs
        grads = list(grads) + [None] * (5 - len(grads))
        if self.training:
            return self._train_backward(x, scale, mean, var, grads)
        g = grads[0] if grads[0] is not None else np.zeros(x.shape, x.dtype)
        shape = _per_channel(scale, x.shape).shape
        acc = np.float64 if x.dtype == np.float64 else np.float32
        inv = 1.0 / np.sqrt(var.astype(np.float64) + self.epsilon)
        factor = scale.astype(np.float64) * inv

        def per_channel(values: np.ndarray) -> np.ndarray:
            return values.reshape(shape).astype(acc)

        def reduce(values: np.ndarray) -> np.ndarray:
            return sum_to_shape(values, shape).reshape(scale.shape).astype(np.float64)

        centered = x.astype(acc, copy=False) - per_channel(mean)
        dx = g * per_channel(factor)
        db = reduce(g)
        g_centered = reduce(g * centered)
        dscale = g_centered * inv
        dmean = -db * factor
        dvar = g_centered * scale * (-0.5) * inv ** 3
        # inference with several outputs hands the running statistics through
        for index, target in ((1, dmean), (3, dmean), (2, dvar), (4, dvar)):
            if grads[index] is not None and index < len(outputs):
                target += grads[index].reshape(scale.shape)
        return [dx.astype(x.dtype, copy=False), dscale.astype(scale.dtype), db.astype(b.dtype),
                dmean.astype(mean.dtype), dvar.astype(var.dtype)]

    def _train_backward(self, x, scale, mean, var, grads):
        """The batch-statistics backward: y = (x - batch mean) / sqrt(batch var + eps) * scale + B, and the
        running (and legacy saved) statistics, which depend on x through the batch mean and variance."""
        axes = (0,) + tuple(range(2, x.ndim))
        shape = (-1,) + (1,) * (x.ndim - 2)
        count = x.size // max(x.shape[1], 1)
        acc = x.astype(np.float64)
        batch_mean = acc.mean(axis=axes)
        batch_var = acc.var(axis=axes)
        inv = 1.0 / np.sqrt(batch_var + self.epsilon)
        centered = acc - batch_mean.reshape(shape)
        xhat = centered * inv.reshape(shape)
        momentum = self.momentum
        g = grads[0]
        if g is not None:
            g = g.astype(np.float64)
            dscale = (g * xhat).sum(axis=axes)
            db = g.sum(axis=axes)
            ghat = g * scale.astype(np.float64).reshape(shape)
            dx = inv.reshape(shape) * (ghat - ghat.mean(axis=axes, keepdims=True)
                                       - xhat * (ghat * xhat).mean(axis=axes, keepdims=True))
        else:
            dscale = db = np.zeros(scale.shape)
            dx = np.zeros(x.shape)
        # what reaches the batch mean and variance through the statistics outputs
        d_batch_mean = np.zeros(batch_mean.shape)
        d_batch_var = np.zeros(batch_var.shape)
        dmean = dvar = None
        if grads[1] is not None:
            d_batch_mean += grads[1].reshape(-1) * (1 - momentum)
            dmean = (grads[1] * momentum).astype(mean.dtype)
        if grads[2] is not None:
            d_batch_var += grads[2].reshape(-1) * (1 - momentum)
            dvar = (grads[2] * momentum).astype(var.dtype)
        if grads[3] is not None:
            d_batch_mean += grads[3].reshape(-1)
        if grads[4] is not None:
            d_batch_var += grads[4].reshape(-1) * (-0.5) * inv ** 3
        dx = dx + (d_batch_mean / count).reshape(shape) + (2.0 / count) * d_batch_var.reshape(shape) * centered
        return [dx.astype(x.dtype), dscale.reshape(scale.shape).astype(scale.dtype), db.astype(scale.dtype),
                dmean, dvar]


# ----------------------------------------------------------------------------------------------------------------
# Instance / Layer / Group / MeanVariance normalization


def _normalized_grad(ghat: np.ndarray, xhat: np.ndarray, inv_std: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    """The gradient with respect to x of ``xhat = (x - mean) * inv_std`` (statistics over ``axes``) given the
    gradient ``ghat`` with respect to xhat."""
    return inv_std * (ghat - ghat.mean(axis=axes, keepdims=True)
                      - xhat * (ghat * xhat).mean(axis=axes, keepdims=True))


def _normalize(x: np.ndarray, axes: tuple[int, ...], epsilon: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(normalized x, mean, 1/std) over ``axes``, computed in the statistics dtype; mean and 1/std keep dims."""
    acc = x.astype(_stats_dtype(x), copy=False)
    count = math.prod(acc.shape[a] for a in axes)
    if count == 0 or acc.ndim == 0:
        mean = acc.mean(axis=axes, keepdims=True)
        centered = acc - mean
        inv_std = 1.0 / np.sqrt(np.mean(centered * centered, axis=axes, keepdims=True) + epsilon)
        return centered * inv_std, mean, inv_std
    # np.add.reduce and in-place arithmetic: np.mean's Python-level overhead dominates the small inputs of a
    # transformer's LayerNormalization (a few microseconds a call)
    mean = np.add.reduce(acc, axis=axes, keepdims=True)
    np.divide(mean, count, out=mean)
    centered = acc - mean
    variance = np.add.reduce(np.square(centered), axis=axes, keepdims=True)
    np.divide(variance, count, out=variance)
    variance += epsilon
    inv_std = np.divide(1.0, np.sqrt(variance, out=variance), out=variance)
    centered *= inv_std
    return centered, mean, inv_std


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

    def backward(self, inputs, outputs, grads):
        x, scale, b = inputs
        g = grads[0]
        if g is None:
            return [None, None, None]
        axes = tuple(range(2, x.ndim))
        xhat, _, inv_std = _normalize(x, axes, self.epsilon)
        shape = (-1,) + (1,) * (x.ndim - 2)
        g = g.astype(xhat.dtype, copy=False)
        dx = _normalized_grad(g * scale.astype(xhat.dtype).reshape(shape), xhat, inv_std, axes)
        outer = (0,) + axes
        return [dx.astype(x.dtype, copy=False), (g * xhat).sum(axis=outer).reshape(scale.shape).astype(scale.dtype),
                g.sum(axis=outer).reshape(b.shape).astype(b.dtype)]


# (count, dtype) -> row_averager's column (read-only: shared by every caller)
_AVERAGERS: dict[tuple[int, np.dtype], np.ndarray] = {}


def row_averager(count: int, dtype: np.dtype) -> np.ndarray:
    """The (count, 1) column of 1/count whose product with (rows, count) is the rows' means, kept (a few at a
    time) and read-only."""
    key = (count, dtype)
    column = _AVERAGERS.get(key)
    if column is None:
        column = np.full((count, 1), 1.0 / count, dtype)
        column.setflags(write=False)
        keep(_AVERAGERS, key, column)
    return column


def normalized_rows(x: np.ndarray, averager: np.ndarray, epsilon: float) -> np.ndarray:
    """The (rows, count) normalisation of float ``x`` over its trailing axes of ``averager.shape[0]`` values,
    without scale or bias, in seven NumPy calls: both row means (of x, then of the squared deviations) are one
    matrix-vector product by ``averager`` (row_averager) each -- np.add.reduce over many short rows runs row by row
    and costs twice as much on a transformer's (tokens, width) -- and the division by the standard deviation is in
    place. The products are ndarray.dot, which on 2-D operands is np.matmul's with ~0.35 us less dispatch each.
    The sums are BLAS's, equal to ``_normalize``'s within float rounding."""
    centered, deviation = centered_rows(x, averager, epsilon)
    centered /= deviation
    return centered


def centered_rows(x: np.ndarray, averager: np.ndarray, epsilon: float) -> tuple[np.ndarray, np.ndarray]:
    """(x's rows less their means, their (rows, 1) standard deviations sqrt(variance + epsilon)): what
    normalized_rows divides, for a caller that applies the division to fewer values (a mean's weights)."""
    rows = x.reshape(-1, averager.shape[0])
    centered = rows - rows.dot(averager)
    deviation = np.square(centered).dot(averager)
    deviation += epsilon
    np.sqrt(deviation, out=deviation)
    return centered, deviation


def layer_norm_rows(x: np.ndarray, averager: np.ndarray, epsilon: float, scale: np.ndarray,
                    b: np.ndarray | None) -> np.ndarray:
    """LayerNormalization of float ``x`` over its trailing axes (``normalized_rows``), with ``scale`` and ``b``
    broadcasting into x's shape applied in place: nine NumPy calls."""
    centered = normalized_rows(x, averager, epsilon).reshape(x.shape)
    centered *= scale
    if b is not None:
        centered += b
    return centered


@register("LayerNormalization", 17)
class LayerNormalization(Op):
    def __init__(self, node: NodeSpec):
        super().__init__(node)
        self.axis = int_attr(self, "axis", -1)
        self.epsilon = _epsilon(self)
        self.output_count = len(node.outputs)
        # per (input shape, dtype): the normalised axes and their size when the lean path applies, else None
        self.lean: dict[tuple, tuple | None] = {}

    def run(self, x, scale, b=None):
        if self.output_count == 1 and type(x) is np.ndarray and type(scale) is np.ndarray:
            key = (x.shape, x.dtype, scale.shape, None if b is None else b.shape)
            lean = self.lean.get(key, False)
            if lean is False:
                lean = self._lean_geometry(x, scale, b)
                keep(self.lean, key, lean)
            if lean is not None:
                return self._run_lean(x, scale, b, *lean)
        axis = resolve_axis(self, self.axis, x.ndim)
        normalized, mean, inv_std = _normalize(x, tuple(range(axis, x.ndim)), self.epsilon)
        y = normalized * scale
        if b is not None:
            y += b
        y = y.astype(x.dtype, copy=False)
        if self.output_count == 1:
            return y
        return (y, mean, inv_std)[: self.output_count]

    def _lean_geometry(self, x: np.ndarray, scale: np.ndarray, b: np.ndarray | None) -> tuple | None:
        """(axes, count) when the lean path computes exactly what the general one does: the statistics in the
        input's own dtype (float32/float64), a non-empty normalised block, and scale and bias that broadcast
        into the input's shape (so they can be applied in place)."""
        axis = resolve_axis(self, self.axis, x.ndim)
        axes = tuple(range(axis, x.ndim))
        count = math.prod(x.shape[axis:])
        if x.dtype not in (np.float32, np.float64) or _stats_dtype(x) != x.dtype or not count or not x.ndim:
            return None
        if scale.dtype != x.dtype or (b is not None and b.dtype != x.dtype):
            return None
        try:
            shapes = [x.shape, scale.shape] + ([] if b is None else [b.shape])
            if np.broadcast_shapes(*shapes) != x.shape:
                return None
        except ValueError:
            return None
        return axes, count

    def _run_lean(self, x: np.ndarray, scale: np.ndarray, b: np.ndarray | None, axes: tuple, count: int
                  ) -> np.ndarray:
        """``_normalize`` then scale and bias in few NumPy calls (layer_norm_rows), the averager kept per size."""
        return layer_norm_rows(x, row_averager(count, x.dtype), self.epsilon, scale, b)

    def backward(self, inputs, outputs, grads):
        x, scale = inputs[0], inputs[1]
        b = inputs[2] if len(inputs) > 2 else None
        grads = list(grads) + [None] * (3 - len(grads))
        axis = resolve_axis(self, self.axis, x.ndim)
        axes = tuple(range(axis, x.ndim))
        count = max(int(np.prod([x.shape[a] for a in axes])), 1)
        xhat, _, inv_std = _normalize(x, axes, self.epsilon)
        g = grads[0]
        dx = np.zeros(xhat.shape, xhat.dtype)
        dscale = db = None
        if g is not None:
            g = g.astype(xhat.dtype, copy=False)
            dx = _normalized_grad(g * scale, xhat, inv_std, axes)
            dscale = sum_to_shape(g * xhat, scale.shape).astype(scale.dtype)
            db = None if b is None else sum_to_shape(g, b.shape).astype(b.dtype)
        if grads[1] is not None:  # the mean output
            dx = dx + grads[1] / count
        if grads[2] is not None:  # the 1/std output: d(1/std)/dx = -(1/std)^2 * xhat / count
            dx = dx - grads[2] * inv_std * inv_std * xhat / count
        return [dx.astype(x.dtype, copy=False), dscale, db][: len(inputs)]


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

    def backward(self, inputs, outputs, grads):
        x, scale, b = inputs
        g = grads[0]
        if g is None:
            return [None, None, None]
        batch, channels = x.shape[:2]
        per_group = scale.size == self.groups and channels != self.groups
        grouped = x.reshape(batch, self.groups, -1)
        xhat, _, inv_std = _normalize(grouped, (2,), self.epsilon)
        shape = (-1,) + (1,) * (x.ndim - 2)
        full_scale = np.repeat(scale, channels // self.groups) if per_group else scale
        g = g.astype(xhat.dtype, copy=False)
        ghat = (g * full_scale.astype(xhat.dtype).reshape(shape)).reshape(grouped.shape)
        dx = _normalized_grad(ghat, xhat, inv_std, (2,)).reshape(x.shape)
        outer = (0,) + tuple(range(2, x.ndim))
        dscale = (g * xhat.reshape(x.shape)).sum(axis=outer)
        db = g.sum(axis=outer)
        if per_group:
            dscale = dscale.reshape(self.groups, -1).sum(axis=1)
            db = db.reshape(self.groups, -1).sum(axis=1)
        return [dx.astype(x.dtype, copy=False), dscale.reshape(scale.shape).astype(scale.dtype),
                db.reshape(b.shape).astype(b.dtype)]


def _rows_of(shape: tuple[int, ...], axes: tuple[int, ...]) -> tuple[int, int] | None:
    """(kept elements, reduced elements) when every reduced axis longer than 1 comes after every kept axis longer
    than 1, so that a C-ordered array of ``shape`` is those rows of reduced values; else None."""
    kept = [i for i in range(len(shape)) if i not in axes and shape[i] > 1]
    reduced = [i for i in axes if shape[i] > 1]
    if kept and reduced and kept[-1] > reduced[0]:
        return None
    count = math.prod(shape[i] for i in axes)
    return (math.prod(shape) // count, count) if count else None


@register("MeanVarianceNormalization", 9)
class MeanVarianceNormalization(Op):
    """(x - mean) / (std + 1e-9) over ``axes`` (default: batch and spatial axes of NCHW)."""

    def __init__(self, node: NodeSpec):
        super().__init__(node)
        self.axes = tuple(int(a) for a in self.attr("axes", [0, 2, 3]))
        self.layouts: dict[tuple[int, ...], tuple[tuple[int, ...], tuple[int, int] | None]] = {}

    def run(self, x):
        layout = self.layouts.get(x.shape)
        if layout is None:  # (the axes and rows of a shape, kept: ~2 us a call of a small input)
            axes = tuple(sorted(resolve_axes(self, self.axes, x.ndim)))
            layout = keep(self.layouts, x.shape, (axes, _rows_of(x.shape, axes)))
        axes, grouped = layout
        acc = x.astype(_stats_dtype(x), copy=False)
        if grouped is not None:
            # every reduced axis after every kept one (NCHW's default, batch 1): rows of contiguous values, whose
            # sums are BLAS products with a column of ones (a (1, 8, 28, 28) input over C, H, W: 23 -> ~6 us)
            rows = acc.reshape(grouped)
            if grouped[0] == 1:  # one row (the whole sample): its statistics as Python floats, two passes
                return self._one_row(rows[0], x)
            ones = ones_column(grouped[1], acc.dtype)  # (the row sums as BLAS products)
            mean = rows.dot(ones) / grouped[1]
            squares = rows * rows
            std = np.sqrt(np.maximum(squares.dot(ones) / grouped[1] - mean * mean, 0))
            centered = np.subtract(rows, mean, out=squares)
            centered /= std + acc.dtype.type(1e-9)
            return centered.reshape(x.shape).astype(x.dtype, copy=False)
        mean = acc.mean(axis=axes, keepdims=True)
        std = np.sqrt(np.maximum(np.mean(acc * acc, axis=axes, keepdims=True) - mean * mean, 0))
        return ((acc - mean) / (std + 1e-9)).astype(x.dtype, copy=False)

    @staticmethod
    def _one_row(row: np.ndarray, x: np.ndarray) -> np.ndarray:
        """The normalized ``row`` (every value of the sample) shaped as ``x``: the mean from one BLAS sum, then
        the variance of the centred values (BLAS: their dot with themselves) -- the spec's E[x^2] - E[x]^2 without
        its cancellation, equal to it within its rounding -- and one multiply by 1 / (std + 1e-9)."""
        count = row.shape[0]
        mean = float(row.dot(ones_column(count, row.dtype))[0]) / count
        centered = np.subtract(row, row.dtype.type(mean))
        deviation = math.sqrt(max(float(centered.dot(centered)) / count, 0.0))
        centered *= row.dtype.type(1.0 / (deviation + 1e-9))
        return centered.reshape(x.shape).astype(x.dtype, copy=False)

    def backward(self, inputs, outputs, grads):
        x, g = inputs[0], grads[0]
        if g is None:
            return [None]
        axes = tuple(sorted(resolve_axes(self, self.axes, x.ndim)))
        count = max(int(np.prod([x.shape[a] for a in axes])), 1)
        acc = x.astype(_stats_dtype(x), copy=False)
        mean = acc.mean(axis=axes, keepdims=True)
        std = np.sqrt(np.maximum(np.mean(acc * acc, axis=axes, keepdims=True) - mean * mean, 0))
        centered = acc - mean
        denominator = std + 1e-9
        g = g.astype(acc.dtype, copy=False)
        # y = c / (s + 1e-9) with c = x - mean and s the (biased) std: ds/dx = c / (count * s)
        through_std = np.sum(g * centered, axis=axes, keepdims=True) / (denominator * denominator)
        dx = (g - g.mean(axis=axes, keepdims=True)) / denominator - \
            centered * through_std / (count * np.where(std > 0, std, 1.0))
        return [dx.astype(x.dtype, copy=False)]


# ----------------------------------------------------------------------------------------------------------------
# LRN


# LRN windows of up to this many neighbouring channels are summed by shifted adds, wider ones by running sums
_LRN_SHIFTED_ADDS = 8


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
        before, after = (self.size - 1) // 2, self.size - 1 - (self.size - 1) // 2
        acc = x.astype(_stats_dtype(x), copy=False)
        # every pass below allocates in x's layout (ufunc outputs follow their inputs), so a channels-last map
        # from the fast plan's convolutions stays channels-last for the pooling and convolutions after it
        base = self._window_sums(np.multiply(acc, acc), before, after)
        base *= self.alpha / self.size
        base += self.bias
        if self.beta == 0.75:  # (GoogLeNet's, AlexNet's) base^0.75 = sqrt(base) * sqrt(sqrt(base)): two vector
            root = np.sqrt(base, out=base)  # square roots, several times faster than a float power
            root *= np.sqrt(root)
        else:
            np.power(base, self.beta, out=base)
        return np.divide(acc, base, out=base).astype(x.dtype, copy=False)

    def _window_sums(self, values: np.ndarray, before: int, after: int) -> np.ndarray:
        """For each channel c, the sum of ``values`` over channels [c - before, c + after] (clipped), in
        ``values``' layout. A window of a few channels is that many shifted adds of ``values`` (no cancellation:
        every term is added, none subtracted); a wide one is a difference of running sums (as many passes
        whatever the width)."""
        channels = values.shape[1]
        before, after = min(before, channels - 1), min(after, channels - 1)
        if before + after <= _LRN_SHIFTED_ADDS:
            sums = values.copy(order="K")
            for shift in range(1, before + 1):  # channel c also gets c - shift
                np.add(sums[:, shift:], values[:, :-shift], out=sums[:, shift:])
            for shift in range(1, after + 1):  # ... and c + shift
                np.add(sums[:, :-shift], values[:, shift:], out=sums[:, :-shift])
            return sums
        running = np.zeros((values.shape[0], channels + 1) + values.shape[2:], dtype=values.dtype)
        np.cumsum(values, axis=1, out=running[:, 1:])
        top = np.minimum(np.arange(channels) + after + 1, channels)
        bottom = np.maximum(np.arange(channels) - before, 0)
        return running[:, top] - running[:, bottom]

    def backward(self, inputs, outputs, grads):
        x, g = inputs[0], grads[0]
        if g is None:
            return [None]
        before, after = (self.size - 1) // 2, self.size - 1 - (self.size - 1) // 2
        acc = x.astype(_stats_dtype(x), copy=False)
        g = g.astype(acc.dtype, copy=False)
        base = self.bias + self.alpha / self.size * self._window_sums(acc * acc, before, after)
        # y_c = x_c * base_c^-beta, and base_c sums x_k^2 over k in [c - before, c + after]: x_k feeds the
        # windows of the channels c in [k - after, k + before]
        through = self._window_sums(g * acc * base ** (-self.beta - 1), after, before)
        dx = g * base ** -self.beta - 2 * self.beta * self.alpha / self.size * acc * through
        return [dx.astype(x.dtype, copy=False)]
