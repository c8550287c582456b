"""Gradient rules of the elementwise, activation and reduction kernels where ONNX's node cases do not reach:
broadcasting of every binary op in both directions, opset < 7 axis-aligned broadcasting, variadic ops with ties,
Clip with bounds as inputs, Softmax / LogSoftmax on 4-D at every opset semantics, every reduction with keepdims,
negative axes, axes as input and noop_with_empty_axes, ReduceProd through zeros, and float32 kept float32.

Each rule is compared with float64 central differences of ``sum(<output, cotangent>)`` at every input element;
inputs are drawn away from kinks so the derivative exists everywhere checked.
"""

from __future__ import annotations

import numpy as np
import pytest

from nn_core.ops.registry import NodeSpec, resolve

EPS = 1e-6


def kernel(op_type: str, opset: int = 18, consts=(), inputs: int = 3, **attrs):
    """The kernel of a node with ``inputs`` declared (run-time unless in ``consts``) inputs."""
    spec = NodeSpec(op_type=op_type, name="node", attrs=attrs, opset=opset, consts=list(consts),
                    inputs=["a", "b", "c"][:inputs], outputs=["y"])
    return resolve(op_type, opset)(spec)


def check(op, inputs, rtol=1e-5, only=None):
    """Compare ``op.backward`` with central differences for every float input element (of the inputs ``only``
    lists, if given); return the rule's gradients."""
    inputs = [None if x is None else np.asarray(x) for x in inputs]
    out = np.asarray(op.run(*inputs))
    cotangent = np.random.default_rng(1).standard_normal(out.shape)
    grads = list(op.backward(inputs, [out], [cotangent]))
    grads += [None] * (len(inputs) - len(grads))

    def loss(values) -> float:
        return float(np.sum(np.asarray(op.run(*values)) * cotangent))

    for index, (x, grad) in enumerate(zip(inputs, grads)):
        if only is not None and index not in only:
            continue
        if x is None or x.dtype.kind != "f":
            assert grad is None, f"input {index} is not differentiable but got a gradient"
            continue
        assert grad is not None and grad.shape == x.shape and grad.dtype == x.dtype, (index, grad)
        numeric = np.zeros(x.shape)
        for where in np.ndindex(x.shape):
            shifted = [v.copy() if i == index else v for i, v in enumerate(inputs)]
            shifted[index][where] += EPS
            up = loss(shifted)
            shifted[index][where] -= 2 * EPS
            numeric[where] = (up - loss(shifted)) / (2 * EPS)
        np.testing.assert_allclose(grad, numeric, rtol=rtol, atol=1e-6, err_msg=f"input {index}")
    return grads


def rand(*shape, low=-2.0, high=2.0, seed=0):
    return np.random.default_rng(seed).uniform(low, high, shape)


def away_from(values, points=(0.0,), gap=0.1):
    """``values`` nudged at least ``gap`` from each kink in ``points``."""
    for p in points:
        near = np.abs(values - p) < gap
        values = np.where(near, p + np.where(values >= p, gap, -gap), values)
    return values


# --------------------------------------------------------------------------------------------------------------
# binary arithmetic


BROADCASTS = [((2, 3, 4), (4,)), ((4,), (2, 3, 4)), ((3, 1, 4), (2, 4)), ((2, 1), (1, 3)), ((), (2, 3)),
              ((2, 3), ()), ((1, 3, 1), (2, 1, 4))]


@pytest.mark.parametrize("a_shape, b_shape", BROADCASTS)
@pytest.mark.parametrize("op_type", ["Add", "Sub", "Mul", "Div", "Pow", "Mod"])
def test_binary_ops_broadcast_in_both_directions(op_type, a_shape, b_shape):
    a, b = rand(*a_shape, seed=1), rand(*b_shape, seed=2)
    if op_type == "Pow":
        a = np.abs(a) + 0.5  # a positive base: x^y and its y-derivative are defined
    if op_type in ("Div", "Mod"):
        b = away_from(b, gap=0.5)
    if op_type == "Mod":  # keep a / b away from the integers where Mod jumps
        b = np.where(np.abs(b) < 0.5, 0.7, b) * 1.0
        a = a + 0.013
    op = kernel(op_type, 14, fmod=1) if op_type == "Mod" else kernel(op_type, 14)
    check(op, [a, b])


@pytest.mark.parametrize("op_type", ["Add", "Sub", "Mul", "Div", "Pow"])
def test_legacy_broadcast_aligned_at_an_axis(op_type):
    a = np.abs(rand(2, 3, 4, 2, seed=3)) + 0.5
    b = away_from(rand(3, 4, seed=4), gap=0.5)
    check(kernel(op_type, 6, broadcast=1, axis=1), [a, b])
    check(kernel(op_type, 6, broadcast=1), [a, rand(4, 2, seed=5) + 3])  # no axis: trailing alignment


def test_pow_integer_exponent_has_no_gradient_and_a_constant_square_is_differentiated():
    x = rand(2, 3)
    grads = check(kernel("Pow", 15), [x, np.array([1, 2, 3], np.int64)])
    assert grads[1] is None
    square = kernel("Pow", 15, consts=[None, np.array(2.0)])
    assert square.squares
    check(square, [x, np.array(2.0)], only=[0])  # (run ignores the constant's run-time value)


def test_pow_at_a_zero_base_gives_a_finite_exponent_gradient():
    op = kernel("Pow", 15)
    x, y = np.array([0.0, 2.0]), np.array([2.0, 3.0])
    _, dy = op.backward([x, y], [op.run(x, y)], [np.ones(2)])
    assert np.all(np.isfinite(dy)) and dy[0] == 0


# --------------------------------------------------------------------------------------------------------------
# variadic ops and Where


@pytest.mark.parametrize("op_type", ["Sum", "Mean", "Max", "Min"])
def test_variadic_ops_broadcast(op_type):
    inputs = [rand(2, 3, 4, seed=6), rand(3, 1, seed=7), rand(4, seed=8)]
    check(kernel(op_type, 13), inputs)
    check(kernel(op_type, 13), inputs[:1])


@pytest.mark.parametrize("op_type", ["Max", "Min"])
def test_variadic_ties_split_the_gradient_evenly(op_type):
    op = kernel(op_type, 13)
    a = np.array([1.0, 2.0, 3.0])
    b, c = np.array([1.0, 0.0, 3.0]), np.array([1.0, 5.0, -1.0]) * (1 if op_type == "Max" else -1)
    grads = op.backward([a, b, c], [op.run(a, b, c)], [np.full(3, 6.0)])
    total = sum(grads)
    np.testing.assert_allclose(total, 6.0)  # the gradient is shared, not duplicated
    if op_type == "Max":
        np.testing.assert_allclose(np.stack(grads)[:, 0], [2.0, 2.0, 2.0])  # three-way tie
        np.testing.assert_allclose(np.stack(grads)[:, 2], [3.0, 3.0, 0.0])  # two-way tie


def test_where_broadcasts_condition_x_and_y():
    condition = np.array([[True], [False]])
    check(kernel("Where", 16), [condition, rand(2, 1, 3, seed=9), rand(3, seed=10)])
    check(kernel("Where", 16), [np.array(True), rand(3, seed=9), rand(2, 3, seed=10)])


# --------------------------------------------------------------------------------------------------------------
# activations


def test_prelu_slope_broadcast_and_legacy_per_channel():
    x = away_from(rand(2, 3, 4, 2, seed=11))
    check(kernel("PRelu", 16), [x, rand(3, 1, 1, seed=12)])
    check(kernel("PRelu", 16), [x, rand(2, seed=12)])  # trailing alignment
    check(kernel("PRelu", 6), [x, rand(3, seed=12)])  # opset < 7: one slope per channel (axis 1)
    check(kernel("PRelu", 16), [x, rand(3, seed=12)])  # a 1-D per-channel slope old exporters still write


def test_clip_with_bounds_as_inputs():
    x = away_from(rand(3, 4, seed=13), points=(-0.5, 0.8))
    op = kernel("Clip", 13)
    grads = check(op, [x, np.array(-0.5), np.array(0.8)])
    assert grads[1] != 0 and grads[2] != 0  # some elements are clipped on each side
    check(op, [x, np.array(-0.5), None])
    check(op, [x, None, np.array(0.8)])
    check(kernel("Clip", 13, inputs=1), [x])
    check(op, [x, np.array(0.8), np.array(-0.5)])  # low > high: high everywhere, all the gradient to high
    low_over_high = op.backward([x, np.array(0.8), np.array(-0.5)], [op.run(x, np.array(0.8), np.array(-0.5))],
                                [np.ones(x.shape)])
    assert np.all(low_over_high[0] == 0) and low_over_high[1] == 0 and low_over_high[2] == x.size


def test_clip_with_constant_bounds_and_attribute_bounds():
    x = away_from(rand(3, 4, seed=14), points=(-0.5, 0.8))
    check(kernel("Clip", 13, consts=[None, np.array(-0.5, np.float64), np.array(0.8, np.float64)]),
          [x, np.array(-0.5), np.array(0.8)], only=[0])  # (run ignores the constants' run-time values)
    check(kernel("Clip", 6, min=-0.5, max=0.8), [x])
    check(kernel("Clip", 6, max=0.8), [x])


@pytest.mark.parametrize("op_type", ["Softmax", "LogSoftmax"])
@pytest.mark.parametrize("opset, axis", [(11, 1), (11, -2), (11, 0), (11, None), (13, 1), (13, None), (1, 3)])
def test_softmax_family_on_4d_at_every_opset_semantics(op_type, opset, axis):
    attrs = {} if axis is None else {"axis": axis}
    check(kernel(op_type, opset, **attrs), [rand(2, 3, 2, 2, seed=15)])


UNARY = ["Relu", "LeakyRelu", "Elu", "Selu", "Celu", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "Softplus",
         "Softsign", "Mish", "ThresholdedRelu", "Shrink", "Erf", "Abs", "Neg", "Exp", "Sin", "Cos", "Atan",
         "Sinh", "Cosh", "Asinh"]


@pytest.mark.parametrize("op_type", UNARY)
def test_unary_activation_rules(op_type):
    x = away_from(rand(3, 5, low=-4, high=4, seed=16), points=(-3.0, -2.5, -0.5, 0.0, 0.5, 1.0, 2.5, 3.0))
    check(kernel(op_type, 22), [x])


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu_both_modes(approximate):
    check(kernel("Gelu", 20, approximate=approximate), [rand(4, 5, low=-5, high=5, seed=17)])


@pytest.mark.parametrize("alpha", [0.5, 2.0, -1.5])
def test_celu_any_alpha_and_smooth_at_zero(alpha):
    x = np.concatenate([away_from(rand(8, seed=18)), [0.0] if alpha > 0 else []])
    check(kernel("Celu", 12, alpha=alpha), [x])


def test_positive_domain_functions():
    x = rand(3, 4, low=0.2, high=3.0, seed=19)
    for op_type in ("Sqrt", "Log", "Reciprocal", "Acosh"):
        check(kernel(op_type, 13), [x + (1.0 if op_type == "Acosh" else 0.0)])
    for op_type in ("Asin", "Acos", "Atanh", "Tan"):
        check(kernel(op_type, 13), [rand(3, 4, low=-0.9, high=0.9, seed=20)])


@pytest.mark.parametrize("op_type", ["Floor", "Ceil", "Round", "Sign", "Hardmax"])
def test_piecewise_constant_ops_have_zero_gradient(op_type):
    x = rand(3, 4, seed=21) + 0.25
    check(kernel(op_type, 13), [x])


# --------------------------------------------------------------------------------------------------------------
# casts


def test_cast_passes_float_gradients_back_in_the_input_type_and_none_through_integers():
    from onnx import TensorProto

    x = rand(2, 3).astype(np.float32)
    to_double = kernel("Cast", 19, to=TensorProto.DOUBLE)
    (grad,) = to_double.backward([x], [to_double.run(x)], [np.ones((2, 3))])
    assert grad.dtype == np.float32
    to_int = kernel("Cast", 19, to=TensorProto.INT32)
    assert to_int.backward([x], [to_int.run(x)], [None]) == [None]
    from_int = np.arange(6, dtype=np.int64).reshape(2, 3)
    assert to_double.backward([from_int], [to_double.run(from_int)], [np.ones((2, 3))]) == [None]
    like = kernel("CastLike", 19)
    grads = like.backward([x, np.zeros(1)], [like.run(x, np.zeros(1))], [np.ones((2, 3))])
    assert grads[0].dtype == np.float32 and grads[1] is None
    check(kernel("Cast", 19, to=TensorProto.DOUBLE), [rand(2, 3)])


# --------------------------------------------------------------------------------------------------------------
# reductions

REDUCTIONS = ["ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2",
              "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare"]


def reduction_input(op_type):
    x = rand(2, 3, 4, low=-2, high=2, seed=22)
    if op_type == "ReduceLogSum":
        return np.abs(x) + 0.1
    return away_from(x) if op_type == "ReduceL1" else x


@pytest.mark.parametrize("keepdims", [0, 1])
@pytest.mark.parametrize("axes", [[1], [-1], [0, 2], [-3, 1], None])
@pytest.mark.parametrize("op_type", REDUCTIONS)
def test_reductions_with_axes_as_attribute(op_type, axes, keepdims):
    attrs = {"keepdims": keepdims} if axes is None else {"keepdims": keepdims, "axes": axes}
    check(kernel(op_type, 11 if op_type == "ReduceSum" else 13, **attrs), [reduction_input(op_type)])


@pytest.mark.parametrize("keepdims", [0, 1])
@pytest.mark.parametrize("op_type", REDUCTIONS)
def test_reductions_with_axes_as_input(op_type, keepdims):
    x = reduction_input(op_type)
    op = kernel(op_type, 18, inputs=2, keepdims=keepdims)
    assert op.static_axes is None  # run-time axes
    check(op, [x, np.array([-1, 0], np.int64)])
    check(op, [x, np.array([], np.int64)])  # empty: every axis
    constant = kernel(op_type, 18, consts=[None, np.array([1], np.int64)], keepdims=keepdims)
    check(constant, [x, np.array([1], np.int64)])


@pytest.mark.parametrize("op_type", REDUCTIONS)
def test_reductions_noop_with_empty_axes_pass_the_gradient_through(op_type):
    x = reduction_input(op_type)
    check(kernel(op_type, 18, inputs=1, noop_with_empty_axes=1), [x])
    check(kernel(op_type, 18, inputs=2, noop_with_empty_axes=1), [x, np.array([], np.int64)])


def test_reduce_max_ties_split_the_gradient():
    op = kernel("ReduceMax", 13, axes=[1], keepdims=0)
    x = np.array([[1.0, 3.0, 3.0, 0.0], [2.0, 2.0, 2.0, 2.0]])
    (grad,) = op.backward([x], [op.run(x)], [np.array([1.0, 1.0])])
    np.testing.assert_allclose(grad, [[0, 0.5, 0.5, 0], [0.25, 0.25, 0.25, 0.25]])


@pytest.mark.parametrize("zeros", [[], [(0, 1)], [(0, 1), (0, 2)], [(1, 0), (0, 3)]])
def test_reduce_prod_through_zeros(zeros):
    x = rand(2, 4, low=0.5, high=2.0, seed=23)
    for where in zeros:
        x[where] = 0.0
    for axes in ([1], [0], [0, 1]):
        check(kernel("ReduceProd", 13, axes=axes, keepdims=0), [x])


@pytest.mark.parametrize("op_type", REDUCTIONS + ["Softmax", "LogSoftmax", "Gelu", "Mish", "Celu", "Clip"])
def test_float32_gradients_stay_float32(op_type):
    x = rand(2, 3, seed=24).astype(np.float32)
    if op_type == "ReduceLogSum":
        x = np.abs(x) + 0.1
    op = kernel(op_type, 20)
    (grad, *_) = op.backward([x], [np.asarray(op.run(x))], [np.ones(np.shape(op.run(x)), np.float32)])
    assert grad.dtype == np.float32


@pytest.mark.parametrize("op_type", ["Add", "Sub", "Mul", "Div", "Pow", "Sum", "Max", "Where", "PRelu"])
def test_binary_float32_gradients_stay_float32(op_type):
    a, b = rand(2, 3).astype(np.float32) + 3, rand(3).astype(np.float32) + 3
    op = kernel(op_type, 16)
    inputs = [np.array([True, False, True]), a, b] if op_type == "Where" else [a, b]
    out = np.asarray(op.run(*inputs))
    grads = op.backward(inputs, [out], [np.ones(out.shape, np.float32)])
    assert all(g is None or g.dtype == np.float32 for g in grads)
    assert all(g.dtype == np.float32 for g, x in zip(grads, inputs) if x.dtype.kind == "f")
