"""Activation kernels: the ReLU family, sigmoid-likes, Clip, Gelu, and Softmax / LogSoftmax / Hardmax.

Every formula is written so that it cannot overflow for large |x| (no exp of a large positive number): the
results are right at the extremes, not just in the middle of the range.

Each kernel's ``backward`` is its gradient rule. At a kink (ReLU at 0, a clipping bound) the derivative is not
defined; the rules take the side torch and onnxruntime take (ReLU: 0 at 0; Clip: the gradient passes at the bound).
"""

from __future__ import annotations

import math

import numpy as np

from . import float8
from .caches import keep
from .elementwise import as_input_grad, erf
from .float8 import NARROW_FLOATS
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

    def backward(self, inputs, outputs, grads):
        return [_scaled(grads[0], inputs[0] > 0, inputs[0])]


def _scaled(grad: np.ndarray, derivative, x: np.ndarray) -> np.ndarray:
    """grad * derivative, in ``x``'s dtype (a bool mask or a float64 intermediate must not change it)."""
    return (grad * derivative).astype(x.dtype, copy=False)


@register("LeakyRelu", 1)
class LeakyRelu(Op):
    def __init__(self, node: NodeSpec):
        super().__init__(node)
        self.alpha = finite_attr(self, "alpha", 0.01)

    def run(self, x: np.ndarray) -> np.ndarray:
        if 0 <= self.alpha <= 1:  # then max(x, alpha x) is the same thing in one pass
            return np.maximum(x, x * self.alpha)
        return np.where(x < 0, x * self.alpha, x)

    def backward(self, inputs, outputs, grads):
        x, grad = inputs[0], grads[0]
        return [np.where(x < 0, grad * self.alpha, grad).astype(x.dtype, copy=False)]


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

    def backward(self, inputs, outputs, grads):
        x, slope = inputs
        grad = grads[0]
        aligned = align_channel_slope(x, slope) if self.legacy or (slope.ndim == 1 and x.ndim > 2) else slope
        negative = x < 0
        dx = as_input_grad(np.where(negative, grad * aligned, grad), x)
        dslope = as_input_grad(np.where(negative, grad * x, 0), aligned).reshape(slope.shape)
        return [dx, dslope]


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

    def backward(self, inputs, outputs, grads):
        y = outputs[0]
        return [_scaled(grads[0], y * (1 - y), inputs[0])]


@register("Tanh", 1)
class Tanh(Op):
    run = staticmethod(np.tanh)

    def backward(self, inputs, outputs, grads):
        y = outputs[0]
        return [_scaled(grads[0], 1 - y * y, inputs[0])]


@register("Softplus", 1)
class Softplus(Op):
    run = staticmethod(softplus)

    def backward(self, inputs, outputs, grads):
        return [_scaled(grads[0], sigmoid(inputs[0]), inputs[0])]


@register("Softsign", 1)
class Softsign(Op):
    def run(self, x: np.ndarray) -> np.ndarray:
        return x / (1 + np.abs(x))

    def backward(self, inputs, outputs, grads):
        x = inputs[0]
        denominator = 1 + np.abs(x)
        return [_scaled(grads[0], 1 / (denominator * denominator), x)]


@register("Mish", 18)
class Mish(Op):
    def run(self, x: np.ndarray) -> np.ndarray:
        return x * np.tanh(softplus(x))

    def backward(self, inputs, outputs, grads):
        # d/dx x tanh(sp(x)) = tanh(sp) + x (1 - tanh(sp)^2) sigmoid(x), since sp' = sigmoid
        x = inputs[0]
        t = np.tanh(softplus(x))
        return [_scaled(grads[0], t + x * (1 - t * t) * sigmoid(x), x)]


@register("Elu", 1)
class Elu(Op):
    def __init__(self, node: NodeSpec):
        super().__init__(node)
        self.alpha = finite_attr(self, "alpha", 1.0)

    def run(self, x: np.ndarray) -> np.ndarray:
        # bfloat16 (float8): computed in float32, rounded back to nearest even
        if x.dtype.kind == "V" and x.dtype.name in NARROW_FLOATS:
            return float8.from_float(self.run(float8.to_float32(x)), x.dtype)
        return np.where(x > 0, x, self.alpha * _exp_minus_one_of_negative_part(x))

    def backward(self, inputs, outputs, grads):
        x = inputs[0]
        return [_scaled(grads[0], np.where(x > 0, 1, self.alpha * np.exp(np.minimum(x, 0))), x)]


@register("Selu", 1)
class Selu(Op):
    def __init__(self, node: NodeSpec):
        super().__init__(node)
        # the defaults are the float32 values of the constants from the SELU paper, as the ONNX spec gives them
        self.alpha = finite_attr(self, "alpha", 1.67326319217681884765625)
        self.gamma = finite_attr(self, "gamma", 1.05070102214813232421875)

    def run(self, x: np.ndarray) -> np.ndarray:
        return self.gamma * np.where(x > 0, x, self.alpha * _exp_minus_one_of_negative_part(x))

    def backward(self, inputs, outputs, grads):
        x = inputs[0]
        return [_scaled(grads[0], self.gamma * np.where(x > 0, 1, self.alpha * np.exp(np.minimum(x, 0))), x)]


@register("Celu", 12)
class Celu(Op):
    def __init__(self, node: NodeSpec):
        super().__init__(node)
        self.alpha = finite_attr(self, "alpha", 1.0)
        if self.alpha == 0:
            raise self.fail("attribute 'alpha' must not be 0 (Celu divides by it)")

    def run(self, x: np.ndarray) -> np.ndarray:
        # bfloat16 (float8): computed in float32, rounded back to nearest even
        if x.dtype.kind == "V" and x.dtype.name in NARROW_FLOATS:
            return float8.from_float(self.run(float8.to_float32(x)), x.dtype)
        return np.maximum(x, 0) + self.alpha * _exp_minus_one_of_negative_part(x / self.alpha)

    def backward(self, inputs, outputs, grads):
        x = inputs[0]
        scaled = x / self.alpha
        # the terms are independent: 1 for x > 0, exp(x / alpha) where x / alpha <= 0 (for alpha > 0 the two meet
        # at 1 at x = 0, where Celu is smooth; a negative alpha puts the exponential on x > 0)
        derivative = (x > 0) + np.where(scaled <= 0, np.exp(np.minimum(scaled, 0)), 0)
        return [_scaled(grads[0], derivative, x)]


@register("ThresholdedRelu", 10)
class ThresholdedRelu(Op):
    def __init__(self, node: NodeSpec):
        super().__init__(node)
        self.alpha = finite_attr(self, "alpha", 1.0)

    def run(self, x: np.ndarray) -> np.ndarray:
        return np.where(x > self.alpha, x, 0)

    def backward(self, inputs, outputs, grads):
        return [_scaled(grads[0], inputs[0] > self.alpha, inputs[0])]


@register("HardSigmoid", 1)
class HardSigmoid(Op):
    def __init__(self, node: NodeSpec):
        super().__init__(node)
        self.alpha = finite_attr(self, "alpha", 0.2)
        self.beta = finite_attr(self, "beta", 0.5)

    def run(self, x: np.ndarray) -> np.ndarray:
        return np.clip(x * self.alpha + self.beta, 0, 1)

    def backward(self, inputs, outputs, grads):
        x = inputs[0]
        linear = x * self.alpha + self.beta
        return [_scaled(grads[0], np.where((linear > 0) & (linear < 1), self.alpha, 0), x)]


@register("HardSwish", 14)
class HardSwish(Op):
    def run(self, x: np.ndarray) -> np.ndarray:
        return x * np.clip(x * (1 / 6) + 0.5, 0, 1)

    def backward(self, inputs, outputs, grads):
        # x (x/6 + 1/2) between -3 and 3 (derivative x/3 + 1/2), 0 below, x above
        x = inputs[0]
        derivative = np.where(x >= 3, 1, np.where(x > -3, x * (1 / 3) + 0.5, 0))
        return [_scaled(grads[0], derivative, x)]


@register("Shrink", 9)
class Shrink(Op):
    def __init__(self, node: NodeSpec):
        super().__init__(node)
        self.bias = finite_attr(self, "bias", 0.0)
        self.lambd = finite_attr(self, "lambd", 0.5)

    def run(self, x: np.ndarray) -> np.ndarray:
        shrunk = np.where(x < -self.lambd, x + self.bias, np.where(x > self.lambd, x - self.bias, 0))
        return shrunk.astype(x.dtype, copy=False)  # integer inputs: the float attributes must not promote

    def backward(self, inputs, outputs, grads):
        x = inputs[0]
        if x.dtype.kind != "f":
            return [None]
        return [_scaled(grads[0], np.abs(x) > self.lambd, x)]


# --------------------------------------------------------------------------------------------------------------
# GELU on float32 in few NumPy calls
#
# elementwise.erf on float32 (a piecewise cubic: five gathers, ~20 NumPy calls) and the four arithmetic nodes
# around it cost a transformer's small MLP activations (a few thousand values) ~30 us, spent on calls, not on
# arithmetic. x (offset + erf(x / d)) = offset x + sign(d) |x| erf(|x| / |d|), since erf is odd; so one table of
# erf over [0, _GELU_ERF_LIMIT] at steps of 1/_GELU_STEPS, linearly interpolated, gives the whole activation in
# 11 float32 calls. Each step's line is kept as intercept and slope in the row number r = |x| / |d| * _GELU_STEPS
# (erf ~ intercept[k] + slope[k] r for k <= r < k + 1), read with two gathers at the truncated row: no fractional
# part to compute (a floor and a subtraction fewer than value + slope * (r - k)); the terms stay below 1, so their
# float32 sum is within ~1e-7 of erf. The interpolation is within 3e-8 of erf (h^2/8 max|erf''| at h = 1/2048),
# about float32's rounding of erf near 1, which the unfused graph's Erf node also has; the table's last row is
# erf = 1 exactly with no slope, so the tail is exact: x (1 + erf(x / sqrt 2)) is 0 for x <= -6.4 and x from 6.4
# on (the error of stopping there, 1 - erf(4.5) = 2e-10, is below both).

_GELU_STEPS = 2048
_GELU_ERF_LIMIT = 4.5


def _erf_interpolation_tables() -> tuple[np.ndarray, np.ndarray]:
    """The intercepts and slopes, in the row number r, of the lines through erf(k h) and erf((k + 1) h), h = 1 /
    _GELU_STEPS, for the rows k below the limit; then 1 and 0. Two flat tables, not one of pairs: a gather of rows
    of a 2-D table costs NumPy ~30 us here, two flat ones 2."""
    last = int(_GELU_ERF_LIMIT * _GELU_STEPS)
    rows = np.arange(last + 1, dtype=np.float64)
    values = erf(rows / _GELU_STEPS)
    values[last] = 1.0
    slopes = np.zeros(last + 1)
    slopes[:last] = np.diff(values)
    return values - slopes * rows, slopes


_ERF_INTERCEPTS, _ERF_SLOPES = _erf_interpolation_tables()


class ErfGelu:
    """``factor * x * (offset + erf(x / divisor))`` for float32 ``x``, all in float32 (a call mixing types costs
    NumPy a buffered cast) from a table of erf: the float32 formula within its rounding. GELU is divisor
    sqrt(2), offset 1, factor 0.5."""

    def __init__(self, divisor: float, offset: float, factor: float):
        with np.errstate(over="ignore"):
            self.scale = np.float32(_GELU_STEPS / abs(divisor)) if divisor else None  # |x| -> fractional row
            self.linear = np.float32(factor * offset)
            signed = factor if divisor > 0 else -factor
            self.intercepts = (_ERF_INTERCEPTS * signed).astype(np.float32)
            self.slopes = (_ERF_SLOPES * signed).astype(np.float32)
        if not all(math.isfinite(v) for v in (divisor, offset, factor)) or not self.scale \
                or not np.isfinite(self.scale) or not np.isfinite(self.linear) \
                or not np.isfinite(self.intercepts).all():
            raise ValueError(f"GELU constants out of float32 range: {divisor}, {offset}, {factor}")
        self.last_row = np.float32(len(_ERF_INTERCEPTS) - 1)
        self.row_lines: tuple[np.ndarray, np.ndarray] | None = None  # (slopes, intercepts) / scale: row_odd_part

    def __call__(self, x: np.ndarray) -> np.ndarray:
        if not x.ndim:  # (NumPy gives 0-d results as scalars, which cannot be written in place)
            return self(x.reshape(1)).reshape(())
        row, magnitude = self._odd_part(x)
        np.multiply(x, self.linear, out=magnitude)
        row += magnitude
        return row

    def odd_part(self, x: np.ndarray) -> np.ndarray:
        """The activation less its linear part ``factor * offset * x`` (``linear``), for a caller that folds
        that part into a matrix product: factor sign(divisor) |x| erf(|x| / |divisor|), of a non-0-d ``x``."""
        return self._odd_part(x)[0]

    def rows_exact_to(self, magnitude: float) -> bool:
        """Whether the table rows |x| * ``scale`` (|x| / |divisor| * _GELU_STEPS) of inputs up to ``magnitude``
        convert to integers exactly (well below 2^63): then row_odd_part may take them unclamped."""
        return math.isfinite(magnitude) and magnitude * float(self.scale) < 2.0 ** 62

    def row_odd_part(self, rows: np.ndarray) -> np.ndarray:
        """odd_part(x) from ``rows`` = x * ``scale`` (a caller's product with the factor in its weights) of
        inputs proven within rows_exact_to (or NaN): |x| erf = (|rows| / scale) (intercept + slope |rows|), the
        1/scale kept in the tables, and rows past the table (finite, exactly truncated) read its last line by the
        gathers' clip; NaN's index, whatever it is, is clipped too, and NaN stays. Two calls fewer than
        odd_part: no multiply by the scale, no clamp."""
        if self.row_lines is None:  # (made on first use: most instances never need them)
            self.row_lines = (self.slopes / self.scale, self.intercepts / self.scale)
        row_slopes, row_intercepts = self.row_lines
        row = np.abs(rows)
        index = row.astype(np.intp)
        lines = row_slopes.take(index, mode="clip")
        lines *= row
        lines += row_intercepts.take(index, mode="clip")
        lines *= row
        return lines

    def _odd_part(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(odd_part(x), a fresh array of x's shape that the caller may overwrite)."""
        magnitude = np.abs(x)
        row = np.multiply(magnitude, self.scale)
        np.fmin(row, self.last_row, out=row)  # past the table, and NaN (which |x| carries through): last row
        index = row.astype(np.intp)  # (truncation: the row's floor, as it is not negative)
        row *= self.slopes.take(index)
        row += self.intercepts.take(index)  # factor erf(|x| / |divisor|), signed as the divisor
        row *= magnitude
        return row, magnitude


_STANDARD_GELU = ErfGelu(math.sqrt(2), 1.0, 0.5)


@register("Gelu", 20)
class Gelu(Op):
    def __init__(self, node: NodeSpec):
        super().__init__(node)
        self.approximate = self.attr("approximate", "none")
        if self.approximate not in ("none", "tanh"):
            raise self.fail(f"approximate must be 'none' or 'tanh', got {self.approximate!r}")

    def run(self, x: np.ndarray) -> np.ndarray:
        if self.approximate == "none" and type(x) is np.ndarray and x.dtype == np.float32:
            return _STANDARD_GELU(x)
        if self.approximate == "tanh":
            inner = math.sqrt(2 / math.pi) * (x + 0.044715 * x * x * x)
            return 0.5 * x * (1 + np.tanh(inner))
        return 0.5 * x * (1 + erf(x * (1 / math.sqrt(2))))

    def backward(self, inputs, outputs, grads):
        x = inputs[0]
        if self.approximate == "tanh":
            c = math.sqrt(2 / math.pi)
            t = np.tanh(c * (x + 0.044715 * x * x * x))
            derivative = 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * c * (1 + 3 * 0.044715 * x * x)
        else:  # Phi(x) + x phi(x), Phi and phi the standard normal's distribution and density
            density = np.exp(-0.5 * x * x) * (1 / math.sqrt(2 * math.pi))
            derivative = 0.5 * (1 + erf(x * (1 / math.sqrt(2)))) + x * density
        return [_scaled(grads[0], derivative, x)]


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

    def backward(self, inputs, outputs, grads):
        return clip_backward(inputs[0], self.low, self.high, grads[0])[:1]


@register("Clip", 11)
class Clip(Op):
    """Clip from opset 11: bounds are optional inputs 1 and 2."""

    def __init__(self, node: NodeSpec):
        super().__init__(node)
        # constant bounds (the usual ReLU6 case) become Python numbers once, which keep x's type in NumPy
        self.low = _scalar_or_none(self.const(1), self, "min")
        self.high = _scalar_or_none(self.const(2), self, "max")
        self.bounds_known = (self.low is not None or len(node.inputs) < 2 or not node.inputs[1]) and (
            self.high is not None or len(node.inputs) < 3 or not node.inputs[2]
        )

    def run(self, x: np.ndarray, low: np.ndarray | None = None, high: np.ndarray | None = None) -> np.ndarray:
        if self.bounds_known:
            return clip(x, self.low, self.high)
        return clip(x, low, high)

    def backward(self, inputs, outputs, grads):
        x, low, high = (list(inputs) + [None, None])[:3]
        low = None if low is None or low.size == 0 else low
        high = None if high is None or high.size == 0 else high
        dx, dlow, dhigh = clip_backward(x, low, high, grads[0])
        return [dx, dlow, dhigh][:len(inputs)]


def clip_backward(x: np.ndarray, low, high, grad: np.ndarray) -> list[np.ndarray | None]:
    """Gradients of ``clip`` w.r.t. x, low and high (the last two None unless they are float arrays).

    clip is min(max(x, low), high): x gets the gradient where low <= x and max(x, low) <= high (torch's choice at
    the bounds), low where x < low and low <= high, high where max(x, low) > high -- so low > high gives it all
    to high, as the forward does.
    """
    if x.dtype.kind != "f":
        return [None, None, None]
    raised = x if low is None else np.maximum(x, low)
    passes = np.ones(x.shape, bool) if high is None else raised <= high
    dx = np.where(passes if low is None else passes & (x >= low), grad, 0)
    dlow = dhigh = None
    if isinstance(low, np.ndarray) and low.dtype.kind == "f":
        dlow = as_input_grad(np.where(passes & (x < low), grad, 0), low)
    if isinstance(high, np.ndarray) and high.dtype.kind == "f":
        dhigh = as_input_grad(np.where(passes, 0, grad), high)
    return [as_input_grad(dx, x), dlow, dhigh]


def _scalar_or_none(value: np.ndarray | None, op: Op, what: str) -> float | int | None:
    """A constant bound (Clip's min or max): None when absent or empty, else its one value."""
    if value is None or value.size == 0:
        return None
    if value.size != 1:
        raise op.fail(f"{what} must be a scalar; it has shape {list(value.shape)}")
    return value.reshape(()).item()


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
        # the first normalised axis when the normalised axes are the input's trailing ones (resolved with them),
        # else None
        self.trailing_from: int | None = None

    def axes(self, x: np.ndarray) -> int | tuple[int, ...]:
        """The axis (from opset 13) or axes (before) to normalise over, resolved once per input rank."""
        if x.ndim != self.resolved_rank:
            if not -x.ndim <= self.axis < max(x.ndim, 1):
                raise self.fail(f"axis {self.axis} is out of range for an input of shape {x.shape}")
            axis = self.axis % x.ndim if x.ndim else 0
            self.resolved_axes = tuple(range(axis, x.ndim)) if self.coerce_2d else axis
            self.trailing_from = axis if x.ndim and (self.coerce_2d or axis == x.ndim - 1) else None
            self.resolved_rank = x.ndim
        return self.resolved_axes


# np.maximum.reduce / np.add.reduce: np.max / np.sum without their per-call overhead (which dominates small inputs)


def _trailing_max(x: np.ndarray, axes: int | tuple[int, ...]) -> np.ndarray:
    """np.maximum.reduce(x, axes, keepdims=True) over trailing axes. With many short rows (attention scores)
    that reduction runs row by row without vectorising (6 us on (2, 2, 16, 16)); on a transposed copy it is
    elementwise maxima of whole rows (2 us with the copy). Maxima are exact, NaN propagates: the same values."""
    if not x.ndim or x.size < 16 * x.shape[-1]:  # few rows (a classifier's scores): the plain reduction
        return np.maximum.reduce(x, axis=axes, keepdims=True)
    first = axes if isinstance(axes, int) else (axes[0] if axes else x.ndim)
    trailing = axes == x.ndim - 1 if isinstance(axes, int) else tuple(axes) == tuple(range(first, x.ndim))
    length = math.prod(x.shape[first:])
    if not trailing or first == 0 or not x.flags.c_contiguous or length < 2 or x.size < 16 * length:
        return np.maximum.reduce(x, axis=axes, keepdims=True)
    rows = np.ascontiguousarray(x.reshape(-1, length).T)
    return np.maximum.reduce(rows, axis=0).reshape(x.shape[:first] + (1,) * (x.ndim - first))


# |x| up to this bound: exp(x) neither overflows nor underflows to 0 in float32 (e^80 ~ 5.5e34 < 3.4e38, e^-80 ~
# 1.8e-35 > 1.2e-38, the smallest normal), so Softmax needs no shift by the row maximum (LogSoftmax keeps it:
# x - log(sum(exp(x))) would subtract two values of up to 80, losing digits of a result near 0)
EXP_SAFE = 80.0
# ln of float32's largest value (3.4e38) less a margin for rounding: the sum of n exponentials stays finite while
# every exponent is at most this minus ln(n) (without it, 10,000 logits of 80 sum to inf and Softmax gives 0s)
_LOG_FLOAT32_MAX = 88.0


def _exp_is_safe(x: np.ndarray, summed: int) -> bool:
    """Whether Softmax may skip the shift on a float32/float64 ``x`` whose sums run over ``summed`` values: every
    value in [-EXP_SAFE, EXP_SAFE], and low enough that ``summed`` exponentials add up to a finite sum. Two
    whole-array reductions (~0.5 us each on attention scores) instead of the row maxima of many short rows and a
    subtraction (~4 us). NaN and infinities fail the comparison and keep the shifted form."""
    if x.dtype not in (np.float32, np.float64) or not x.size or not x.ndim:
        return False
    upper = min(EXP_SAFE, _LOG_FLOAT32_MAX - math.log(max(summed, 1)))
    return bool(np.maximum.reduce(x, axis=None) <= upper and np.minimum.reduce(x, axis=None) >= -EXP_SAFE)


# (row length, dtype) -> a column of ones, (row length, row length, dtype) -> a square of ones: row sums of many
# short rows as one matrix product
_ONES: dict[tuple, np.ndarray] = {}


def has_nan(values: np.ndarray) -> bool:
    """Whether float ``values`` hold a NaN, from one BLAS dot of the values with themselves (~0.5 us on 10^4
    values; np.isnan(...).any() makes a bool array first): squares are never negative, so infinities sum to inf and
    only a NaN makes the sum NaN. The batch-1 plans that keep padding as zero weights (0 * inf is NaN where zero
    padding would never have read the value) check their outputs with it and redo the rare input that has one."""
    flat = values.reshape(-1)
    total = flat.dot(flat)
    return bool(total != total)


def ones_column(width: int, dtype: np.dtype) -> np.ndarray:
    """A (width, 1) column of ones of ``dtype``, kept (a few at a time): ``rows.dot(ones_column(...))`` is the
    row sums of 2-D ``rows`` as one BLAS product."""
    key = (width, dtype)
    ones = _ONES.get(key)
    if ones is None:
        ones = keep(_ONES, key, np.ones((width, 1), dtype))
    return ones


#: the widest rows whose sums small_softmax_rows takes with a (width, width) square of ones (4 KB in float32)
SQUARE_SUM_WIDTH = 32


def ones_square(width: int, dtype: np.dtype) -> np.ndarray:
    """A (width, width) square of ones of ``dtype`` (width at most SQUARE_SUM_WIDTH), kept (a few at a time):
    ``rows.dot(ones_square(...))`` holds each row's sum in every column."""
    key = (width, width, dtype)
    ones = _ONES.get(key)
    if ones is None:
        ones = keep(_ONES, key, np.ones((width, width), dtype))
    return ones


def softmax_last_axis_(x: np.ndarray) -> np.ndarray:
    """Softmax over the last axis of a non-empty float32/float64 ``x``: what the Softmax kernel computes, within
    rounding, in place when x is C-contiguous (the result is returned either way). x is taken as 2-D rows; their
    sums are one matrix-vector product by a column of ones -- on attention scores, many rows of a few values,
    np.add.reduce runs row by row at several times the cost (and a stacked np.matmul at twice)."""
    rows = x.reshape(-1, x.shape[-1])
    if not _exp_is_safe(rows, rows.shape[1]):  # (NaN and infinities take the shifted path too)
        rows -= _trailing_max(rows, 1)
    np.exp(rows, out=rows)
    rows /= rows.dot(ones_column(rows.shape[1], rows.dtype))
    return rows.reshape(x.shape)


# a Softmax of at most this many values (a classifier's scores) over trailing axes is small_softmax_rows'
SMALL_SOFTMAX = 256
_FLOAT_TYPES = (np.dtype(np.float32), np.dtype(np.float64))


def small_softmax_rows(rows: np.ndarray) -> np.ndarray:
    """Softmax of each row of a 2-D float32/float64 ``rows`` of at most SMALL_SOFTMAX values, as a fresh array.

    On a classifier's ten scores the whole-array range check of the general path (two reductions and their
    Python glue, ~2.5 us) costs more than the arithmetic: each row's maximum is taken from Python floats instead
    (a plain loop: a generator under all() costs ~0.2 us more on two rows). Rows whose maxima all lie in
    [0, EXP_SAFE] skip the shift (no exponential overflows, each sum is at least 1, and a value whose exponential
    underflows is below float's normal range in the shifted form too); any other row (and NaN or an infinity, as
    in the general path) takes ``exp(x - max)``. Row sums are one BLAS product (np.add.reduce costs twice as much
    on a row of ten); rows of at most SQUARE_SUM_WIDTH values take it with a square of ones, which writes each
    row's sum across the whole row, so the division is NumPy's same-shape loop (~0.25 us) instead of a
    broadcast of a column (~0.55 us). Equal to the general path within rounding."""
    for row in rows.tolist():
        if not 0.0 <= max(row) <= EXP_SAFE:
            exps = rows - np.maximum.reduce(rows, axis=1, keepdims=True)
            np.exp(exps, out=exps)
            break
    else:
        exps = np.exp(rows)
    width = rows.shape[1]
    if width <= SQUARE_SUM_WIDTH:
        np.divide(exps, exps.dot(ones_square(width, rows.dtype)), out=exps)
    else:
        exps /= exps.dot(ones_column(width, rows.dtype))
    return exps


@register("Softmax", 1)
class Softmax(_Normalizer):
    def run(self, x: np.ndarray) -> np.ndarray:
        axes = self.axes(x)
        first = self.trailing_from
        if first is not None and 0 < x.size <= SMALL_SOFTMAX and x.dtype in _FLOAT_TYPES:
            return small_softmax_rows(x.reshape(-1, math.prod(x.shape[first:]))).reshape(x.shape)
        summed = x.shape[axes] if isinstance(axes, int) else math.prod(x.shape[axes[0]:] if axes else ())
        if _exp_is_safe(x, summed):  # the shift by the maximum cancels in the quotient: the same within rounding
            exps = np.exp(x)
            exps /= np.add.reduce(exps, axis=axes, keepdims=True)
            return exps
        exps = x - _trailing_max(x, axes)
        np.exp(exps, out=exps)  # every exponent <= 0: no overflow; in place, one array fewer
        exps /= np.add.reduce(exps, axis=axes, keepdims=True)
        return exps

    def backward(self, inputs, outputs, grads):
        # dx = y (g - sum(g y)) over the normalised axes
        y, grad = outputs[0], grads[0]
        weighted = grad * y
        dx = weighted - y * np.add.reduce(weighted, axis=self.axes(y), keepdims=True)
        return [dx.astype(inputs[0].dtype, copy=False)]


@register("LogSoftmax", 1)
class LogSoftmax(_Normalizer):
    def run(self, x: np.ndarray) -> np.ndarray:
        axes = self.axes(x)
        # x - max - log(sum(exp(x - max))): never exp of a large number nor log of an underflowed 0
        shifted = x - _trailing_max(x, axes)
        shifted -= np.log(np.add.reduce(np.exp(shifted), axis=axes, keepdims=True))
        return shifted

    def backward(self, inputs, outputs, grads):
        # dx = g - softmax(x) sum(g) over the normalised axes (softmax = exp of the output)
        y, grad = outputs[0], grads[0]
        dx = grad - np.exp(y) * np.add.reduce(grad, axis=self.axes(y), keepdims=True)
        return [dx.astype(inputs[0].dtype, copy=False)]


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

    def backward(self, inputs, outputs, grads):
        return [np.zeros_like(inputs[0])]  # piecewise constant: 0 wherever the derivative exists
