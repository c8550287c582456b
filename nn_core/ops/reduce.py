"""Reduction kernels: ReduceSum / Mean / Max / Min / Prod / L1 / L2 / LogSum / LogSumExp / SumSquare, ArgMax, ArgMin.

The axes to reduce are the `axes` attribute in older opsets and the optional second input later (ReduceSum from
opset 13, the others from opset 18). No axes means every axis, unless `noop_with_empty_axes` asks for the input
unchanged. Results keep the input's element type; sums of float16 are accumulated in float32 first.

Every reduction of floating-point data has a gradient rule (``_Reduce.backward``): the output's gradient is given
back the reduced axes and multiplied by the derivative of the reduction in ``_DERIVATIVES``. ArgMax / ArgMin give
integers and have none.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from .registry import NodeSpec, Op, register
from .shape import int_attr

Axes = tuple[int, ...]


def _sum(x: np.ndarray, axes: Axes, keepdims: bool) -> np.ndarray:
    if x.dtype == np.float16:  # float16 running sums lose digits fast
        return np.add.reduce(x, axis=axes, keepdims=keepdims, dtype=np.float32).astype(np.float16)
    # an explicit dtype, or NumPy would widen small integer types to int64 (np.add.reduce: np.sum minus overhead)
    return np.add.reduce(x, axis=axes, keepdims=keepdims, dtype=x.dtype)


def _in_float(compute: Callable[[np.ndarray, Axes, bool], np.ndarray]):
    """Integer inputs of log/sqrt reductions: compute in float64, then truncate back as ONNX's reference does."""

    def wrapped(x: np.ndarray, axes: Axes, keepdims: bool) -> np.ndarray:
        if x.dtype.kind in "iub":
            return compute(x.astype(np.float64), axes, keepdims).astype(x.dtype)
        return compute(x, axes, keepdims)

    return wrapped


def _identity_of(x: np.ndarray, largest: bool):
    """What max (largest=False) / min (largest=True) of an empty set is: the extreme value of the type."""
    if x.dtype.kind == "f":
        return np.inf if largest else -np.inf
    if x.dtype.kind == "b":
        return largest
    info = np.iinfo(x.dtype)
    return info.max if largest else info.min


def _max(x: np.ndarray, axes: Axes, keepdims: bool) -> np.ndarray:
    if x.size == 0:
        return np.maximum.reduce(x, axis=axes, keepdims=keepdims, initial=_identity_of(x, largest=False))
    return np.maximum.reduce(x, axis=axes, keepdims=keepdims)


def _min(x: np.ndarray, axes: Axes, keepdims: bool) -> np.ndarray:
    if x.size == 0:
        return np.minimum.reduce(x, axis=axes, keepdims=keepdims, initial=_identity_of(x, largest=True))
    return np.minimum.reduce(x, axis=axes, keepdims=keepdims)


def _mean(x: np.ndarray, axes: Axes, keepdims: bool) -> np.ndarray:
    count = math.prod(x.shape[a] for a in axes)
    if x.dtype.kind in "iu":
        return (_sum(x.astype(np.float64), axes, keepdims) / count).astype(x.dtype)
    return _sum(x, axes, keepdims) / count  # a Python int divisor keeps the float type


def _prod(x: np.ndarray, axes: Axes, keepdims: bool) -> np.ndarray:
    return np.multiply.reduce(x, axis=axes, keepdims=keepdims, dtype=x.dtype)


def _l1(x: np.ndarray, axes: Axes, keepdims: bool) -> np.ndarray:
    return _sum(np.abs(x), axes, keepdims)


def _sum_square(x: np.ndarray, axes: Axes, keepdims: bool) -> np.ndarray:
    return _sum(x * x, axes, keepdims)


@_in_float
def _l2(x: np.ndarray, axes: Axes, keepdims: bool) -> np.ndarray:
    return np.sqrt(_sum_square(x, axes, keepdims))


@_in_float
def _log_sum(x: np.ndarray, axes: Axes, keepdims: bool) -> np.ndarray:
    return np.log(_sum(x, axes, keepdims))


@_in_float
def _log_sum_exp(x: np.ndarray, axes: Axes, keepdims: bool) -> np.ndarray:
    # max + log(sum(exp(x - max))): exp never overflows; a slice that is all -inf (or empty) shifts by 0 instead
    peak = _max(x, axes, keepdims=True)
    peak = np.where(np.isfinite(peak), peak, 0).astype(x.dtype, copy=False)
    with np.errstate(divide="ignore"):  # log(0) = -inf is the right answer for a slice of -inf
        result = np.log(_sum(np.exp(x - peak), axes, keepdims=True)) + peak
    return result if keepdims else np.squeeze(result, axis=axes)


# --------------------------------------------------------------------------------------------------------------
# Derivatives: (x, y, g, axes) -> d loss / d x, with the output y and its gradient g given back the reduced axes
# (keepdims shape), so they broadcast against x.


def _max_min_derivative(x: np.ndarray, y: np.ndarray, g: np.ndarray, axes: Axes) -> np.ndarray:
    # the gradient goes to the extreme; elements tying for it split it evenly (as torch's amax / amin do)
    holds = x == y
    return np.where(holds, g / np.maximum(np.add.reduce(holds, axis=axes, keepdims=True), 1), 0)


def _prod_derivative(x: np.ndarray, y: np.ndarray, g: np.ndarray, axes: Axes) -> np.ndarray:
    """d prod / d x_i is the product of the *other* elements of the slice: computed as the products before and
    after x_i (exclusive running products), not y / x_i, so zeros in the slice are exact, not 0/0."""
    if x.size == 0:
        return np.zeros(x.shape, x.dtype)
    kept = [a for a in range(x.ndim) if a not in axes]
    order = kept + list(axes)
    moved = np.transpose(x, order)
    rows = moved.reshape(moved.shape[:len(kept)] + (-1,))  # each slice as one row
    ones = np.ones(rows.shape[:-1] + (1,), x.dtype)
    before = np.cumprod(np.concatenate([ones, rows[..., :-1]], axis=-1), axis=-1)
    after = np.flip(np.cumprod(np.concatenate([ones, np.flip(rows, -1)[..., :-1]], axis=-1), axis=-1), -1)
    others = np.transpose((before * after).reshape(moved.shape), np.argsort(order))
    return g * others


def _l2_derivative(x: np.ndarray, y: np.ndarray, g: np.ndarray, axes: Axes) -> np.ndarray:
    # x / ||x||; at ||x|| = 0 the subgradient 0
    safe = np.where(y == 0, 1, y)
    return np.where(y == 0, 0, g * x / safe)


def _log_sum_exp_derivative(x: np.ndarray, y: np.ndarray, g: np.ndarray, axes: Axes) -> np.ndarray:
    # softmax of the slice, exp(x - y); a slice whose result is infinite (all -inf, or holding +inf) gets 0
    finite = np.isfinite(y)
    return np.where(finite, g * np.exp(x - np.where(finite, y, 0)), 0)


_DERIVATIVES: dict[str, Callable[[np.ndarray, np.ndarray, np.ndarray, Axes], np.ndarray]] = {
    "ReduceSum": lambda x, y, g, axes: g,
    "ReduceMean": lambda x, y, g, axes: g / math.prod(x.shape[a] for a in axes),
    "ReduceMax": _max_min_derivative,
    "ReduceMin": _max_min_derivative,
    "ReduceProd": _prod_derivative,
    "ReduceL1": lambda x, y, g, axes: g * np.sign(x),  # 0 at 0
    "ReduceL2": _l2_derivative,
    "ReduceLogSum": lambda x, y, g, axes: g / _sum(x, axes, True),
    "ReduceLogSumExp": _log_sum_exp_derivative,
    "ReduceSumSquare": lambda x, y, g, axes: 2 * g * x,
}


class _Reduce(Op):
    compute: Callable[[np.ndarray, Axes, bool], np.ndarray]
    axes_input_since = 18  # the opset from which `axes` is an input rather than an attribute

    def __init__(self, node: NodeSpec):
        super().__init__(node)
        self.keepdims = bool(self.attr("keepdims", 1))
        self.noop_with_empty_axes = bool(self.attr("noop_with_empty_axes", 0))
        self.axes_as_input = node.opset >= self.axes_input_since
        self.static_axes: list[int] | None = None  # known at load time (attribute, constant input or absent)
        if not self.axes_as_input:
            self.static_axes = list(self.attr("axes", []))
            if not all(isinstance(a, int) for a in self.static_axes):
                raise self.fail(f"axes {self.static_axes} must be integers")
        elif len(node.inputs) < 2 or not node.inputs[1]:
            self.static_axes = []
        elif self.const(1) is not None:
            axes = self.const(1)
            if axes.dtype.kind not in "iu":
                raise self.fail(f"axes must be integers, got {axes.dtype}")
            self.static_axes = [int(a) for a in axes.reshape(-1)]
        self.resolved_rank, self.resolved_axes = -1, None

    def run(self, x: np.ndarray, axes_input: np.ndarray | None = None) -> np.ndarray:
        if self.static_axes is None:
            if axes_input is not None and axes_input.dtype.kind not in "iu":
                raise self.fail(f"axes must be integers, got {axes_input.dtype}")
            axes = self.resolve_axes([] if axes_input is None else axes_input.reshape(-1).tolist(), x)
        else:  # resolved once per input rank
            if x.ndim != self.resolved_rank:
                self.resolved_axes, self.resolved_rank = self.resolve_axes(self.static_axes, x), x.ndim
            axes = self.resolved_axes
        if axes is None:
            return x
        return self.compute(x, axes, self.keepdims)

    def resolve_axes(self, axes: list[int], x: np.ndarray) -> Axes | None:
        """The sorted non-negative axes to reduce; None when nothing is to be done (noop_with_empty_axes)."""
        rank = x.ndim
        if not axes:
            return None if self.noop_with_empty_axes else tuple(range(rank))
        if any(not -rank <= a < rank for a in axes):
            raise self.fail(f"axes {axes} are out of range for an input of shape {x.shape}")
        return tuple(sorted({a % rank for a in axes}))

    def backward(self, inputs, outputs, grads):
        x, grad = inputs[0], grads[0]
        rest = [None] * (len(inputs) - 1)  # the axes input has no gradient
        if x.dtype.kind != "f":
            return [None] + rest
        if self.static_axes is None:
            axes_input = inputs[1] if len(inputs) > 1 else None
            axes = self.resolve_axes([] if axes_input is None else axes_input.reshape(-1).tolist(), x)
        else:
            axes = self.resolve_axes(self.static_axes, x)
        if axes is None:  # noop_with_empty_axes: the output was the input
            return [np.asarray(grad).astype(x.dtype, copy=False)] + rest
        kept = tuple(1 if a in axes else n for a, n in enumerate(x.shape))
        dx = _DERIVATIVES[self.op_type](x, outputs[0].reshape(kept), np.asarray(grad).reshape(kept), axes)
        return [np.broadcast_to(dx, x.shape).astype(x.dtype)] + rest


def _register_reduction(op_type: str, compute: Callable[[np.ndarray, Axes, bool], np.ndarray], since: int) -> None:
    attributes = {
        "compute": staticmethod(compute), "axes_input_since": since,
        "__doc__": f"ONNX {op_type}: axes as attribute before opset {since}, as input from it.",
    }
    register(op_type, 1)(type(op_type, (_Reduce,), attributes))


for _op_type, _compute, _since in (
    ("ReduceSum", _sum, 13), ("ReduceMean", _mean, 18), ("ReduceMax", _max, 18), ("ReduceMin", _min, 18),
    ("ReduceProd", _prod, 18), ("ReduceL1", _l1, 18), ("ReduceL2", _l2, 18), ("ReduceLogSum", _log_sum, 18),
    ("ReduceLogSumExp", _log_sum_exp, 18), ("ReduceSumSquare", _sum_square, 18),
):
    _register_reduction(_op_type, _compute, _since)


class _ArgReduce(Op):
    find: Callable[..., np.ndarray]  # ndarray.argmax or ndarray.argmin (the methods skip np.argmax's overhead)

    def __init__(self, node: NodeSpec):
        super().__init__(node)
        self.axis = int_attr(self, "axis", 0)
        self.keepdims = bool(self.attr("keepdims", 1))
        self.last = bool(self.attr("select_last_index", 0))

    def run(self, x: np.ndarray) -> np.ndarray:
        if not -x.ndim <= self.axis < max(x.ndim, 1):
            raise self.fail(f"axis {self.axis} is out of range for an input of shape {x.shape}")
        find = self.find
        if self.last:  # NumPy returns the first of equal extremes: search the reversed axis instead
            reversed_index = find(np.flip(x, self.axis), axis=self.axis, keepdims=self.keepdims)
            return (x.shape[self.axis] - 1 - reversed_index).astype(np.int64, copy=False)
        return find(x, axis=self.axis, keepdims=self.keepdims).astype(np.int64, copy=False)


@register("ArgMax", 1)
class ArgMax(_ArgReduce):
    find = staticmethod(np.ndarray.argmax)


@register("ArgMin", 1)
class ArgMin(_ArgReduce):
    find = staticmethod(np.ndarray.argmin)
