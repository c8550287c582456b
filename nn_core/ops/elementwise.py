"""Elementwise kernels: arithmetic, comparisons, logic, rounding, transcendental functions and Cast.

Most of these are one NumPy ufunc. Where the ufunc already has ONNX's semantics the kernel's ``run`` *is* the
ufunc (a static method), so an inference pays no extra Python frame for them. Inputs of ONNX elementwise ops share
one element type, so NumPy's promotion keeps it (float32 stays float32); the few ops that take mixed types (Pow)
cast their result back explicitly.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import reduce

import numpy as np
import onnx
from onnx import helper

from .caches import constant_run
from .float8 import NARROW_FLOATS
from .float8 import cast as narrow_cast
from .gradients import sum_to_shape
from .registry import NodeSpec, Op, register
from .shape import check_broadcast, element_limit, int_attr


def _is_float(x: np.ndarray | None) -> bool:
    return x is not None and x.dtype.kind == "f"


#: outputs of this many elements or more take their ReLU against a shared run of zeros (zero_run)
RELU_RUN_MIN = 2048
#: ... and of at most this many (the run is kept for the process)
RELU_RUN_MAX = 1 << 18
_zero_runs: dict[np.dtype, np.ndarray] = {}


def zero_run(dtype: np.dtype, size: int) -> np.ndarray:
    """A read-only run of ``size`` zeros (caches.constant_run's, looked up by dtype alone: this is per call)."""
    run = _zero_runs.get(dtype)
    if run is None or run.size < size:
        run = _zero_runs[dtype] = constant_run(0.0, dtype, size)
    return run[:size]


def relu_in_place(y: np.ndarray) -> np.ndarray:
    """max(y, 0) written over the float array ``y`` (returned): a C-contiguous ``y`` of RELU_RUN_MIN to
    RELU_RUN_MAX elements against a same-shape run of zeros (NumPy's plain SIMD loop instead of a broadcast zero:
    6,272 values 1.74 -> 1.36 us with the look-up, 50,000 10.0 -> 5.6 us). The same maximum either way, bit for
    bit (-0.0, NaN)."""
    size = y.size
    if RELU_RUN_MIN <= size <= RELU_RUN_MAX and y.flags.c_contiguous:
        flat = y.reshape(size)
        np.maximum(flat, zero_run(y.dtype, size), out=flat)
        return y
    return np.maximum(y, y.dtype.type(0), out=y)


def as_input_grad(grad: np.ndarray, x: np.ndarray) -> np.ndarray:
    """A gradient for input ``x``: broadcasting undone and in ``x``'s dtype (float32 stays float32)."""
    return sum_to_shape(np.asarray(grad), x.shape).astype(x.dtype, copy=False)

# --------------------------------------------------------------------------------------------------------------
# Unary ops that are exactly a NumPy ufunc


# d output / d input of the differentiable ones, from the input x and the output y (times the output gradient)
_UNARY_DERIVATIVES: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "Abs": lambda x, y: np.sign(x),  # 0 at 0, the subgradient torch and onnxruntime use
    "Neg": lambda x, y: np.full_like(x, -1),
    "Sqrt": lambda x, y: 0.5 / y,
    "Exp": lambda x, y: y,
    "Log": lambda x, y: 1 / x,
    "Reciprocal": lambda x, y: -(y * y),
    "Sin": lambda x, y: np.cos(x),
    "Cos": lambda x, y: -np.sin(x),
    "Tan": lambda x, y: 1 + y * y,
    "Asin": lambda x, y: 1 / np.sqrt(1 - x * x),
    "Acos": lambda x, y: -1 / np.sqrt(1 - x * x),
    "Atan": lambda x, y: 1 / (1 + x * x),
    "Sinh": lambda x, y: np.cosh(x),
    "Cosh": lambda x, y: np.sinh(x),
    "Asinh": lambda x, y: 1 / np.sqrt(x * x + 1),
    "Acosh": lambda x, y: 1 / np.sqrt(x * x - 1),
    "Atanh": lambda x, y: 1 / (1 - x * x),
}
# piecewise constant: the derivative is 0 wherever it exists
_STEP_FUNCTIONS = ("Floor", "Ceil", "Round", "Sign")


class _UnaryGradient(Op):
    """The gradient rule of a unary ufunc kernel: its derivative from ``_UNARY_DERIVATIVES`` (or 0)."""

    def backward(self, inputs, outputs, grads):
        x, (y,), (grad,) = inputs[0], outputs, grads
        if not _is_float(x):
            return [None]
        if self.op_type in _STEP_FUNCTIONS:
            return [np.zeros_like(x)]
        return [(grad * _UNARY_DERIVATIVES[self.op_type](x, y)).astype(x.dtype, copy=False)]


def _register_ufunc(op_type: str, since: int, ufunc: Callable[..., np.ndarray]) -> type[Op]:
    differentiable = op_type in _UNARY_DERIVATIVES or op_type in _STEP_FUNCTIONS
    base = _UnaryGradient if differentiable else Op
    cls = type(op_type, (base,), {"run": staticmethod(ufunc), "__doc__": f"ONNX {op_type}: numpy {ufunc.__name__}."})
    return register(op_type, since)(cls)


for _op_type, _since, _ufunc in (
    ("Abs", 1, np.abs), ("Neg", 1, np.negative), ("Sqrt", 1, np.sqrt), ("Exp", 1, np.exp), ("Log", 1, np.log),
    ("Reciprocal", 1, np.reciprocal), ("Floor", 1, np.floor), ("Ceil", 1, np.ceil),
    ("Round", 11, np.rint),  # ONNX rounds halves to even, as rint does
    ("Sign", 9, np.sign), ("Sin", 7, np.sin), ("Cos", 7, np.cos), ("Tan", 7, np.tan), ("Asin", 7, np.arcsin),
    ("Acos", 7, np.arccos), ("Atan", 7, np.arctan), ("Sinh", 9, np.sinh), ("Cosh", 9, np.cosh),
    ("Asinh", 9, np.arcsinh), ("Acosh", 9, np.arccosh), ("Atanh", 9, np.arctanh),
    ("Not", 1, np.logical_not), ("IsNaN", 9, np.isnan), ("BitwiseNot", 18, np.invert),
):
    _register_ufunc(_op_type, _since, _ufunc)


# --------------------------------------------------------------------------------------------------------------
# Erf: piecewise Taylor polynomials whose coefficients are derived exactly at import time
#
# erf is smooth and all its derivatives are known in closed form: erf^(k)(c) = 2/sqrt(pi) (-1)^(k-1) H_{k-1}(c)
# exp(-c^2) with H the physicists' Hermite polynomials. So on [0, 6) cut into intervals of 0.25 we expand erf around
# each interval's centre (around 0 for the first, so tiny arguments keep full relative precision) to degree 15:
# the remainder is below 1e-15 everywhere, i.e. float64-accurate and far inside float32 rounding. Beyond 6, erf is
# 1 to double precision.

_ERF_STEP = 0.25
_ERF_LIMIT = 6.0
_ERF_DEGREE = 15


def _erf_by_series(x: np.ndarray) -> np.ndarray:
    """erf(x) = 2/sqrt(pi) exp(-x^2) sum_n x (2x^2)^n / (2n+1)!!: all terms positive, so no cancellation."""
    term = x.astype(np.float64)
    total = term.copy()
    for n in range(1, 400):  # enough terms for x up to 6 (the terms peak near n = x^2 and then shrink fast)
        term = term * (2 * x * x) / (2 * n + 1)
        total += term
    return 2 / np.sqrt(np.pi) * np.exp(-x * x) * total


def _erf_taylor_table(step: float, limit: float, degree: int) -> tuple[np.ndarray, np.ndarray]:
    centres = np.arange(step / 2, limit, step)
    centres[0] = 0.0
    coefficients = np.empty((degree + 1, len(centres)))  # row k: the x^k coefficient of every interval
    coefficients[0] = _erf_by_series(centres)
    gauss = 2 / np.sqrt(np.pi) * np.exp(-centres * centres)
    hermite_prev, hermite = np.zeros_like(centres), np.ones_like(centres)  # H_{-1} (unused), H_0
    factorial = 1.0
    for k in range(1, degree + 1):
        factorial *= k
        coefficients[k] = (-1) ** (k - 1) * hermite * gauss / factorial
        hermite_prev, hermite = hermite, 2 * centres * hermite - 2 * (k - 1) * hermite_prev
    return centres, coefficients


_ERF_CENTRES, _ERF_COEFFICIENTS = _erf_taylor_table(_ERF_STEP, _ERF_LIMIT, _ERF_DEGREE)


# every coefficient and the centre of each interval, one row each
_ERF_TABLE = np.ascontiguousarray(np.vstack([_ERF_COEFFICIENTS, _ERF_CENTRES]))

# float32 and narrower: intervals of 1/256 need only degree 3 (remainder below 1e-12 relative), so an evaluation
# is 5 gathers and 6 multiply-adds instead of 13 and 22 (a transformer's GELU: 48 -> 26 us on 1,536 values). On
# 15 million sampled float32 arguments it rounds to the same float32 as the degree-15 series but for 29 values at a
# rounding boundary (all within 6e-8 of erf). One more interval past the limit holds the constant 1, so clamping
# |x| to the limit replaces a separate select (NaN stays NaN: np.minimum propagates it, np.fmin then picks a
# valid interval for the index).
_ERF_SINGLE_STEP = 1 / 256
_ERF_SINGLE_DEGREE = 3
_centres, _coefficients = _erf_taylor_table(_ERF_SINGLE_STEP, _ERF_LIMIT, _ERF_SINGLE_DEGREE)
_ERF_SINGLE_TABLE = np.ascontiguousarray(np.hstack([
    np.vstack([_coefficients, _centres]),
    np.array([[1.0]] + [[0.0]] * _ERF_SINGLE_DEGREE + [[_ERF_LIMIT]]),  # erf = 1 from the limit on (and at inf)
]))
del _centres, _coefficients


def _erf_single(x: np.ndarray) -> np.ndarray:
    if x.ndim == 0:  # (gathers from a 0-d index give scalars, which cannot be written in place)
        return _erf_single(x.reshape(1)).reshape(())
    table = _ERF_SINGLE_TABLE
    magnitude = np.abs(x, dtype=np.float64)
    np.minimum(magnitude, _ERF_LIMIT, out=magnitude)
    interval = np.fmin(magnitude * (1 / _ERF_SINGLE_STEP), table.shape[1] - 1).astype(np.intp)
    offset = magnitude - table[-1][interval]
    value = table[_ERF_SINGLE_DEGREE][interval] * offset
    for k in range(_ERF_SINGLE_DEGREE - 1, 0, -1):
        value += table[k][interval]
        value *= offset
    value += table[0][interval]
    return np.copysign(value, x, out=value).astype(x.dtype, copy=False)


def erf(x: np.ndarray) -> np.ndarray:
    """The error function, elementwise, in ``x``'s float type (computed in float64, accurate to ~1e-15)."""
    x = np.asarray(x)
    if x.dtype.kind == "f" and x.dtype.itemsize <= 4:
        return _erf_single(x)
    degree = _ERF_DEGREE
    magnitude = np.abs(x, dtype=np.float64) if x.dtype.kind == "f" else np.abs(x.astype(np.float64))
    # fmin, not minimum: NaN picks the last interval (and stays NaN through the polynomial) instead of a bad index
    interval = np.fmin(magnitude * (1 / _ERF_STEP), len(_ERF_CENTRES) - 1).astype(np.intp)
    table = _ERF_TABLE  # (one gather per row: a 2-D np.take is many times slower)
    offset = magnitude - table[-1][interval]
    value = table[degree][interval] * offset
    for k in range(degree - 1, 0, -1):  # Horner, with each element's own interval coefficients
        value += table[k][interval]
        value *= offset
    value += table[0][interval]
    value = np.where(magnitude >= _ERF_LIMIT, 1.0, value)  # also covers inf
    return np.copysign(value, x).astype(x.dtype, copy=False)


@register("Erf", 9)
class Erf(Op):
    run = staticmethod(erf)

    def backward(self, inputs, outputs, grads):
        x = inputs[0]
        return [(grads[0] * (2 / math.sqrt(math.pi)) * np.exp(-(x * x))).astype(x.dtype, copy=False)]


# --------------------------------------------------------------------------------------------------------------
# Binary arithmetic, comparisons and logic (NumPy broadcasting is ONNX's multidirectional broadcasting)


def truncating_divide(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Integer division rounding toward zero (ONNX and C), where NumPy's // rounds toward minus infinity."""
    quotient = np.floor_divide(a, b)
    if a.dtype.kind == "i":
        # floor and truncation differ by one exactly when the division is inexact and the signs differ
        inexact_negative = (np.remainder(a, b) != 0) & ((a < 0) != (b < 0))
        quotient = quotient + inexact_negative
    return quotient


def _divide(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if a.dtype.kind in "iu":
        return truncating_divide(a, b)
    return np.divide(a, b)


def _power(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    # from opset 12 the exponent may have another type; the result always has the base's type
    result = np.power(x, y)
    return result if result.dtype == x.dtype else result.astype(x.dtype)


_BINARY: dict[str, tuple[int, Callable[[np.ndarray, np.ndarray], np.ndarray]]] = {
    "Add": (1, np.add), "Sub": (1, np.subtract), "Mul": (1, np.multiply), "Div": (1, _divide),
    "Pow": (1, _power), "Equal": (1, np.equal), "Less": (1, np.less), "Greater": (1, np.greater),
    "LessOrEqual": (12, np.less_equal), "GreaterOrEqual": (12, np.greater_equal),
    "And": (1, np.logical_and), "Or": (1, np.logical_or), "Xor": (1, np.logical_xor),
    "BitwiseAnd": (18, np.bitwise_and), "BitwiseOr": (18, np.bitwise_or), "BitwiseXor": (18, np.bitwise_xor),
}

def _power_derivatives(x, y, out, grad):
    dx = grad * y * np.power(x, y - 1)
    # d/dy x^y = x^y log x, defined for x > 0 (and 0 in the limit at x = 0 with y > 0); 0 elsewhere
    dy = grad * out * np.log(np.where(x > 0, x, 1)) if _is_float(y) else None
    return dx, dy


def _mod_derivatives(a, b, out, grad):
    # out = a - q b with q an integer quotient (truncated for fmod=1, floored for fmod=0): q = (a - out) / b
    return grad, -grad * np.rint((a - out) / b)


# gradients of a binary op w.r.t. both inputs, at the broadcast shape: (a, b, out, output grad) -> (da, db)
_BINARY_DERIVATIVES: dict[str, Callable[..., tuple[np.ndarray | None, np.ndarray | None]]] = {
    "Add": lambda a, b, out, grad: (grad, grad),
    "Sub": lambda a, b, out, grad: (grad, -grad),
    "Mul": lambda a, b, out, grad: (grad * b, grad * a),
    "Div": lambda a, b, out, grad: (grad / b, -grad * out / b),
    "Pow": _power_derivatives,
    "Mod": _mod_derivatives,
}


def _binary_backward(self, inputs, outputs, grads):
    """The gradient rule of the binary arithmetic kernels: ``_BINARY_DERIVATIVES``, then broadcasting undone."""
    if getattr(self, "relu", False):
        raise self.fail("has a fused activation: differentiate the unfused graph (GradientPlan)")
    a, b = inputs
    aligned = self.aligned(a, b)
    da, db = _BINARY_DERIVATIVES[self.op_type](a, aligned, outputs[0], grads[0])
    return [as_input_grad(da, a) if _is_float(a) else None,
            as_input_grad(db, aligned).reshape(b.shape) if _is_float(b) and db is not None else None]


# these had explicit `broadcast` / `axis` attributes before opset 7
_LEGACY_BROADCAST_OPS = ("Add", "Sub", "Mul", "Div", "Pow", "Equal", "Less", "Greater", "And", "Or", "Xor")


def align_legacy_operand(a: np.ndarray, b: np.ndarray, axis: int) -> np.ndarray:
    """Opset < 7 broadcasting: ``b``'s dimensions line up with ``a``'s starting at ``axis`` (not at the end)."""
    if axis < 0:
        axis += a.ndim
    trailing = a.ndim - axis - b.ndim
    return b.reshape(b.shape + (1,) * trailing) if trailing > 0 else b


def _make_legacy_kernel(op_type: str, compute: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> type[Op]:
    class LegacyBroadcast(Op):
        __doc__ = f"ONNX {op_type} before opset 7: broadcasting only when asked, optionally aligned at `axis`."

        def __init__(self, node: NodeSpec):
            super().__init__(node)
            # without `axis` the old broadcast aligned trailing dimensions, exactly like NumPy
            self.axis = int_attr(self, "axis") if self.attr("broadcast", 0) else None
            self.max_elements = element_limit(self)

        def run(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
            if self.axis is not None:
                if not -a.ndim <= self.axis < max(a.ndim, 1) or self.axis % max(a.ndim, 1) + b.ndim > a.ndim:
                    raise self.fail(f"axis {self.axis} does not align shape {b.shape} inside {a.shape}")
                b = align_legacy_operand(a, b, self.axis)
            if a.size * b.size > self.max_elements:
                check_broadcast(self, np.result_type(a, b), a, b)
            return compute(a, b)

        def aligned(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
            """``b`` as ``run`` broadcasts it against ``a``."""
            return b if self.axis is None else align_legacy_operand(a, b, self.axis)

        backward = _binary_backward if op_type in _BINARY_DERIVATIVES else Op.backward

    LegacyBroadcast.__name__ = LegacyBroadcast.__qualname__ = f"Legacy{op_type}"
    return LegacyBroadcast


_BOOLEAN_RESULTS = ("Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual", "And", "Or", "Xor")


class _Broadcasting(Op):
    """Base of the broadcasting kernels: ``[100000, 1] + [1, 100000]`` is 40 GB, so the result's size is
    checked -- but only when the product of the input sizes (which bounds it) is over the budget, a test that
    costs one multiplication on the hot path."""

    boolean = False  # comparisons and logic give bool whatever their inputs

    def __init__(self, node: NodeSpec):
        super().__init__(node)
        self.max_elements = element_limit(self)

    def check(self, *arrays: np.ndarray) -> None:
        check_broadcast(self, np.bool_ if self.boolean else np.result_type(*arrays), *arrays)

    def aligned(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return b  # NumPy broadcasting: nothing to line up


def _make_binary_kernel(op_type: str, compute: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> type[Op]:
    class Binary(_Broadcasting):
        __doc__ = f"ONNX {op_type}, broadcasting."
        boolean = op_type in _BOOLEAN_RESULTS
        # Add only: a following Relu absorbed (the fast plan's fuse_activations; a residual block's sum and its
        # ReLU in one step), applied in place to the fresh float sum
        relu = False

        def fuse_activation(self, kind: str, params: dict[str, float]) -> bool:
            if op_type != "Add" or kind != "relu" or self.relu:
                return False
            self.relu = True
            return True

        def run(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
            if a.size * b.size > self.max_elements:
                self.check(a, b)
            if not self.relu:
                return compute(a, b)
            y = compute(a, b)
            if type(y) is np.ndarray and y.dtype.kind == "f":
                return relu_in_place(y)  # what the Relu kernel computes, in place
            return np.maximum(y, np.zeros((), np.result_type(y)))

        backward = _binary_backward if op_type in _BINARY_DERIVATIVES else Op.backward

    Binary.__name__ = Binary.__qualname__ = op_type
    return Binary


for _op_type, (_since, _compute) in _BINARY.items():
    if _op_type in _LEGACY_BROADCAST_OPS:
        register(_op_type, 1)(_make_legacy_kernel(_op_type, _compute))
        _since = 7
    if _op_type == "Pow":  # its modern kernel below prepares constant exponents
        continue
    register(_op_type, _since)(_make_binary_kernel(_op_type, _compute))


@register("Pow", 7)
class Pow(_Broadcasting):
    """Pow; a constant scalar exponent of 2 (LayerNorm's variance) becomes a square."""

    def __init__(self, node: NodeSpec):
        super().__init__(node)
        exponent = self.const(1)
        self.squares = exponent is not None and exponent.ndim == 0 and exponent == 2

    def run(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        if self.squares:
            return np.square(x)
        if x.size * y.size > self.max_elements:
            self.check(x, y)
        return _power(x, y)

    backward = _binary_backward


@register("Mod", 10)
class Mod(_Broadcasting):
    """Mod: fmod=0 takes the divisor's sign (Python's %), fmod=1 the dividend's (C's fmod)."""

    def __init__(self, node: NodeSpec):
        super().__init__(node)
        fmod = self.attr("fmod", 0)
        if fmod not in (0, 1):
            raise self.fail(f"fmod must be 0 or 1, got {fmod!r}")
        self.compute = np.fmod if fmod else np.remainder

    def run(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        if a.size * b.size > self.max_elements:
            self.check(a, b)
        return self.compute(a, b)

    backward = _binary_backward


@register("BitShift", 11)
class BitShift(_Broadcasting):
    def __init__(self, node: NodeSpec):
        super().__init__(node)
        direction = self.attr("direction", "")
        if direction not in ("LEFT", "RIGHT"):
            raise self.fail(f"direction must be LEFT or RIGHT, got {direction!r}")
        self.compute = np.left_shift if direction == "LEFT" else np.right_shift

    def run(self, x: np.ndarray, shift: np.ndarray) -> np.ndarray:
        if x.size * shift.size > self.max_elements:
            self.check(x, shift)
        return self.compute(x, shift)


@register("Where", 9)
class Where(_Broadcasting):
    def run(self, condition: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        if condition.size * x.size * y.size > self.max_elements:
            self.check(condition, x, y)  # (the bool condition does not change the result type)
        return np.where(condition, x, y)

    def backward(self, inputs, outputs, grads):
        condition, x, y = inputs
        grad = grads[0]
        return [None, as_input_grad(np.where(condition, grad, 0), x) if _is_float(x) else None,
                as_input_grad(np.where(condition, 0, grad), y) if _is_float(y) else None]


@register("IsInf", 10)
class IsInf(Op):
    def __init__(self, node: NodeSpec):
        super().__init__(node)
        self.negative = bool(self.attr("detect_negative", 1))
        self.positive = bool(self.attr("detect_positive", 1))

    def run(self, x: np.ndarray) -> np.ndarray:
        if self.negative and self.positive:
            return np.isinf(x)
        if self.positive:
            return np.isposinf(x)
        if self.negative:
            return np.isneginf(x)
        return np.zeros(x.shape, dtype=bool)


# --------------------------------------------------------------------------------------------------------------
# Variadic ops: fold the inputs pairwise with broadcasting
#
# Gradients: Sum passes the output gradient to every input, Mean a 1/n share of it. Max and Min pass it to the
# input that holds the extreme; where several inputs tie for it, they split it evenly (as torch.maximum does for
# two), so the gradients still add up to the output's.


def _variadic_backward(self, inputs, outputs, grads):
    out, grad = outputs[0], grads[0]
    if self.op_type in ("Max", "Min"):
        holds = [x == out for x in inputs]
        share = grad / np.maximum(reduce(np.add, holds, np.zeros(out.shape, out.dtype)), 1)
        return [as_input_grad(np.where(h, share, 0), x) if _is_float(x) else None for x, h in zip(inputs, holds)]
    if self.op_type == "Mean":
        grad = grad / len(inputs)
    return [as_input_grad(grad, x) if _is_float(x) else None for x in inputs]


def _make_variadic_kernel(op_type: str, combine: Callable[[np.ndarray, np.ndarray], np.ndarray], mean: bool):
    class Variadic(_Broadcasting):
        __doc__ = f"ONNX {op_type} of any number of inputs, broadcasting."

        def run(self, *inputs: np.ndarray) -> np.ndarray:
            if not inputs:
                raise self.fail("has no inputs")
            if math.prod(x.size for x in inputs) > self.max_elements:
                self.check(*inputs)
            result = reduce(combine, inputs)
            # a Python int divisor keeps the float type of the sum
            return result / len(inputs) if mean else result

        backward = _variadic_backward

    Variadic.__name__ = Variadic.__qualname__ = op_type
    return Variadic


for _op_type, _combine in (("Sum", np.add), ("Max", np.maximum), ("Min", np.minimum), ("Mean", np.add)):
    register(_op_type, 1)(_make_variadic_kernel(_op_type, _combine, mean=_op_type == "Mean"))


# --------------------------------------------------------------------------------------------------------------
# Cast


def onnx_dtype(elem_type: int | str, where: Op) -> np.dtype:
    """The NumPy dtype of an ONNX element type (an int, or a name such as "FLOAT" as Cast-1 spells it)."""
    try:
        if isinstance(elem_type, str):
            elem_type = onnx.TensorProto.DataType.Value(elem_type.upper())
        dtype = np.dtype(helper.tensor_dtype_to_np_dtype(elem_type))
    except (KeyError, ValueError, TypeError) as exc:
        raise where.fail(f"unknown element type {elem_type!r}") from exc
    if dtype.kind == "O":  # strings
        raise where.fail(f"casting to {onnx.TensorProto.DataType.Name(elem_type)} is not supported")
    return dtype


def _cast_mode(op: Op) -> tuple[bool, str]:
    """``saturate`` (opset 19+, float8 targets) and ``round_mode`` (opset 24+, float8 E8M0 targets)."""
    saturate = op.attr("saturate", 1)
    if saturate not in (0, 1):
        raise op.fail(f"attribute 'saturate' must be 0 or 1, got {saturate!r}")
    round_mode = op.attr("round_mode", "up")
    if round_mode not in ("up", "down", "nearest"):
        raise op.fail(f"attribute 'round_mode' must be up, down or nearest, got {round_mode!r}")
    return bool(saturate), round_mode


def _cast(x: np.ndarray, dtype: np.dtype, saturate: bool, round_mode: str) -> np.ndarray:
    if x.dtype.name in NARROW_FLOATS or dtype.name in NARROW_FLOATS:
        return narrow_cast(x, dtype, saturate, round_mode)
    return x.astype(dtype, copy=False)


@register("Cast", 1)
class Cast(Op):
    """Cast to `to`; float to int truncates toward zero as in C (NumPy's astype does the same). bfloat16 and
    the float8 types convert bit-exactly as ONNX specifies (``nn_core.ops.float8``: saturate, round_mode)."""

    def __init__(self, node: NodeSpec):
        super().__init__(node)
        if self.attr("to") is None:
            raise self.fail("missing attribute 'to'")
        self.dtype = onnx_dtype(self.attr("to"), self)
        self.max_elements = element_limit(self, self.dtype.itemsize)
        self.saturate, self.round_mode = _cast_mode(self)

    def run(self, x: np.ndarray) -> np.ndarray:
        if x.size > self.max_elements:  # a cast to a wider type can outgrow the budget its input met
            self.check_size(x.shape, self.dtype)
        return _cast(x, self.dtype, self.saturate, self.round_mode)

    def backward(self, inputs, outputs, grads):
        return [_cast_back(inputs[0], outputs[0], grads[0])]


def _cast_back(x: np.ndarray, out: np.ndarray, grad: np.ndarray | None) -> np.ndarray | None:
    """A cast between floating types passes the gradient through, in the input's type; through an integer or
    bool (on either side) no gradient flows."""
    if grad is None or not _is_float(x) or out.dtype.kind != "f":
        return None
    return np.asarray(grad).astype(x.dtype, copy=False)


@register("CastLike", 15)
class CastLike(Op):
    def __init__(self, node: NodeSpec):
        super().__init__(node)
        self.saturate, self.round_mode = _cast_mode(self)

    def run(self, x: np.ndarray, like: np.ndarray) -> np.ndarray:
        if x.size * like.dtype.itemsize > self.node.limits.max_tensor_bytes:
            self.check_size(x.shape, like.dtype)
        return _cast(x, like.dtype, self.saturate, self.round_mode)

    def backward(self, inputs, outputs, grads):
        return [_cast_back(inputs[0], outputs[0], grads[0]), None]  # only `like`'s type is used, not its values
