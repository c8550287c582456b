"""Gradient rules of the convolutions and poolings in the cases ONNX's node cases leave out (groups, depthwise,
dilations with strides, several chunks of a batch, ConvTranspose with groups, MaxPool ceil_mode with pads and
ties), each checked against float64 central finite differences at every element."""

from __future__ import annotations

import numpy as np
import pytest

from nn_core.ops import conv_grad
from nn_core.ops.registry import NodeSpec, resolve

EPS = 1e-6


def _kernel(op: str, attrs: dict, inputs: int = 1, outputs: int = 1, opset: int = 19):
    names = ["x", "w", "b"][:inputs]
    spec = NodeSpec(op_type=op, name="node", inputs=names, outputs=["y", "i"][:outputs], attrs=attrs, opset=opset,
                    consts=[None] * inputs)
    return resolve(op, opset)(spec)


def _check(kernel, inputs: list[np.ndarray], seed: int = 0) -> list[np.ndarray]:
    """Compare the rule with central differences of sum(<y, cotangent>) at every element of every input."""
    rng = np.random.default_rng(seed)
    first = kernel.run(*inputs)
    y = first[0] if isinstance(first, tuple) else first
    cotangent = rng.standard_normal(y.shape)

    def loss(values) -> float:
        out = kernel.run(*values)
        return float(np.sum((out[0] if isinstance(out, tuple) else out) * cotangent))

    outputs = list(first) if isinstance(first, tuple) else [first]
    grads = kernel.backward(inputs, outputs, [cotangent] + [None] * (len(outputs) - 1))
    for index, (x, grad) in enumerate(zip(inputs, grads, strict=True)):
        assert grad is not None and grad.shape == x.shape
        numeric = np.empty(x.shape)
        for where in np.ndindex(*x.shape):
            values = []
            for step in (EPS, -EPS):
                shifted = x.copy()
                shifted[where] += step
                values.append(loss([shifted if i == index else v for i, v in enumerate(inputs)]))
            numeric[where] = (values[0] - values[1]) / (2 * EPS)
        np.testing.assert_allclose(grad, numeric, rtol=1e-5, atol=1e-6, err_msg=f"input {index}")
    return grads


CONVS = [
    # (x shape, w shape, attrs)
    ((2, 4, 7, 6), (6, 2, 3, 2), {"group": 2, "strides": [2, 1], "dilations": [1, 2], "pads": [1, 0, 2, 1]}),
    ((2, 3, 8, 7), (3, 1, 3, 3), {"group": 3, "strides": [2, 2], "dilations": [2, 1], "pads": [2, 1, 1, 2]}),
    ((2, 3, 6, 6), (3, 1, 3, 3), {"group": 3, "pads": [1, 1, 1, 1]}),  # depthwise, unit strides (full width)
    ((2, 4, 6, 5), (4, 2, 3, 3), {"group": 2, "dilations": [2, 1], "auto_pad": "SAME_LOWER"}),
    ((3, 2, 9), (4, 2, 3), {"strides": [2], "dilations": [2], "pads": [1, 2]}),
    ((2, 2, 4, 5, 4), (3, 2, 2, 3, 2), {"strides": [1, 2, 1], "pads": [1, 0, 1, 0, 1, 1]}),
    ((2, 2, 4, 4, 5), (4, 1, 2, 2, 3), {"group": 2, "dilations": [1, 2, 1], "pads": [0, 1, 1, 1, 0, 1]}),
    ((2, 3, 5, 5), (2, 3, 1, 1), {}),
    ((2, 3, 5, 5), (2, 3, 5, 5), {"auto_pad": "VALID"}),
]


@pytest.mark.parametrize("x_shape, w_shape, attrs", CONVS)
def test_conv_gradients(x_shape, w_shape, attrs):
    rng = np.random.default_rng(1)
    x, w, b = rng.standard_normal(x_shape), rng.standard_normal(w_shape), rng.standard_normal(w_shape[0])
    _check(_kernel("Conv", attrs, inputs=3), [x, w, b])


def test_conv_gradients_over_several_chunks(monkeypatch):
    """A batch split into chunks, the last one partial, gives the gradients of the whole batch at once."""
    rng = np.random.default_rng(2)
    x, w, b = rng.standard_normal((7, 3, 6, 6)), rng.standard_normal((4, 3, 3, 3)), rng.standard_normal(4)
    for strides in ([1, 1], [2, 1]):
        attrs = {"pads": [1, 1, 1, 1], "strides": strides}
        chunked, whole = _kernel("Conv", attrs, inputs=3), _kernel("Conv", attrs, inputs=3)
        y = whole.run(x, w, b)
        dy = rng.standard_normal(y.shape)
        monkeypatch.setattr(conv_grad, "GRAD_CHUNK_BYTES", 1 << 30)
        want = whole.backward([x, w, b], [y], [dy])
        # about 2 (full-width columns) or 5 (exact ones) images per chunk: 7 images end with a partial chunk
        monkeypatch.setattr(conv_grad, "GRAD_CHUNK_BYTES", 20737)
        got = chunked.backward([x, w, b], [y], [dy])
        plan = next(iter(chunked.grad_plans.values()))
        assert 1 < plan.rows < 7 and 7 % plan.rows
        for g, e in zip(got, want, strict=True):
            np.testing.assert_allclose(g, e, rtol=1e-12, atol=1e-12)
        _check(chunked, [x, w, b])


def test_conv_gradients_keep_float32():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((4, 2, 6, 6)).astype(np.float32)
    w = rng.standard_normal((3, 2, 3, 3)).astype(np.float32)
    b = rng.standard_normal(3).astype(np.float32)
    kernel = _kernel("Conv", {"pads": [1, 1, 1, 1]}, inputs=3)
    y = kernel.run(x, w, b)
    dy = rng.standard_normal(y.shape).astype(np.float32)
    grads = kernel.backward([x, w, b], [y], [dy])
    assert [g.dtype for g in grads] == [np.float32] * 3
    wide = kernel.backward([x.astype(np.float64), w.astype(np.float64), b.astype(np.float64)], [y],
                           [dy.astype(np.float64)])
    for g, e in zip(grads, wide, strict=True):
        np.testing.assert_allclose(g, e, rtol=1e-4, atol=1e-4)


def test_fused_conv_refuses_a_gradient():
    kernel = _kernel("Conv", {}, inputs=2)
    assert kernel.fuse_activation("relu", {})
    x, w = np.ones((1, 1, 3, 3)), np.ones((1, 1, 2, 2))
    with pytest.raises(Exception, match="fused"):
        kernel.backward([x, w], [kernel.run(x, w)], [np.ones((1, 1, 2, 2))])


CONV_TRANSPOSES = [
    ((2, 4, 3, 3), (4, 2, 3, 2), {"group": 2, "strides": [2, 3], "output_padding": [1, 0], "pads": [1, 0, 0, 1]}),
    ((2, 4, 3, 4), (4, 1, 2, 3), {"group": 4, "dilations": [2, 1], "strides": [1, 2]}),
    ((1, 2, 4), (2, 3, 3), {"strides": [2], "output_shape": [10]}),
    ((2, 2, 3, 3), (2, 2, 3, 3), {"strides": [2, 2], "auto_pad": "SAME_LOWER"}),
]


@pytest.mark.parametrize("x_shape, w_shape, attrs", CONV_TRANSPOSES)
def test_conv_transpose_gradients(x_shape, w_shape, attrs):
    rng = np.random.default_rng(4)
    group = attrs.get("group", 1)
    x, w, b = rng.standard_normal(x_shape), rng.standard_normal(w_shape), rng.standard_normal(w_shape[1] * group)
    _check(_kernel("ConvTranspose", attrs, inputs=3), [x, w, b])


POOLS = [
    ("MaxPool", {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1], "ceil_mode": 1}),
    ("MaxPool", {"kernel_shape": [2, 3], "strides": [2, 1], "dilations": [2, 1], "pads": [0, 1, 1, 0],
                 "ceil_mode": 1}),
    ("MaxPool", {"kernel_shape": [2, 2], "strides": [2, 2]}),
    ("MaxPool", {"kernel_shape": [3], "strides": [2], "pads": [1, 1], "ceil_mode": 1}),
    ("AveragePool", {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1], "ceil_mode": 1}),
    ("AveragePool", {"kernel_shape": [3, 2], "strides": [2, 2], "pads": [1, 0, 1, 1], "ceil_mode": 1,
                     "count_include_pad": 1}),
    ("AveragePool", {"kernel_shape": [2, 2], "dilations": [2, 2], "pads": [1, 1, 0, 0]}),
    ("LpPool", {"kernel_shape": [2, 2], "strides": [1, 2], "p": 3, "pads": [1, 0, 0, 1]}),
    ("LpPool", {"kernel_shape": [3, 2], "p": 2}),
    ("GlobalMaxPool", {}),
    ("GlobalAveragePool", {}),
    ("GlobalLpPool", {"p": 3}),
]


@pytest.mark.parametrize("op, attrs", POOLS, ids=[f"{op}-{i}" for i, (op, _) in enumerate(POOLS)])
def test_pool_gradients(op, attrs):
    rng = np.random.default_rng(5)
    rank = len(attrs.get("kernel_shape", [1, 1]))
    x = rng.standard_normal((2, 3, *([7, 6][:rank] if rank == 2 else [9])))
    _check(_kernel(op, attrs), [x])


def test_max_pool_with_indices_gradient():
    rng = np.random.default_rng(6)
    _check(_kernel("MaxPool", {"kernel_shape": [3, 3], "strides": [1, 2], "pads": [1, 1, 1, 1]}, outputs=2),
           [rng.standard_normal((2, 2, 5, 6))])


@pytest.mark.parametrize("strides", [[2, 2], [1, 1]])
def test_max_pool_routes_a_tie_to_the_first_maximum(strides):
    x = np.zeros((1, 1, 3, 3))
    x[0, 0, 1, 1] = x[0, 0, 1, 2] = x[0, 0, 2, 1] = 5.0
    kernel = _kernel("MaxPool", {"kernel_shape": [2, 2], "strides": strides, "pads": [0, 0, 1, 1]}, outputs=2)
    y, indices = kernel.run(x)
    (grad,) = kernel.backward([x], [y, indices], [np.ones(y.shape), None])
    # each window's gradient lands where the Indices output points: its first maximum in row-major order
    expected = np.zeros(x.size)
    np.add.at(expected, indices.ravel(), 1.0)
    np.testing.assert_array_equal(grad.ravel(), expected)
    assert grad.sum() == y.size


def test_global_max_pool_routes_a_tie_to_the_first_maximum():
    x = np.array([[[[1.0, 3.0], [3.0, 2.0]]]])
    kernel = _kernel("GlobalMaxPool", {})
    (grad,) = kernel.backward([x], [kernel.run(x)], [np.full((1, 1, 1, 1), 2.0)])
    np.testing.assert_array_equal(grad, [[[[0.0, 2.0], [0.0, 0.0]]]])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_two_by_two_max_pool_gradient_matches_the_indices_output(dtype):
    """The whole-array 2x2 stride-2 rule (LeNet's pooling) routes every window's gradient to its first maximum,
    like the Indices output points: ties of every arrangement (all four equal, as after a ReLU's zeros), an
    infinite gradient (the tap walk takes over) and float64."""
    rng = np.random.default_rng(7)
    x = np.maximum(rng.standard_normal((3, 4, 6, 8)), 0).round(1).astype(dtype)
    x[0, 0] = 0.0
    patterns = [[[2, 2], [0, 0]], [[0, 2], [2, 2]], [[0, 0], [2, 2]], [[0, 0], [0, 2]], [[2, 0], [0, 2]]]
    for col, pattern in enumerate(patterns[:4]):
        x[1, 0, 0:2, 2 * col:2 * col + 2] = pattern
    x[1, 1, 2:4, 0:2] = patterns[4]
    fast = _kernel("MaxPool", {"kernel_shape": [2, 2], "strides": [2, 2]})
    walked = _kernel("MaxPool", {"kernel_shape": [2, 2], "strides": [2, 2]}, outputs=2)
    y, indices = walked.run(x)
    for dy in (rng.standard_normal(y.shape).astype(dtype), np.where(rng.random(y.shape) < 0.1, np.inf, 1.0)):
        dy = dy.astype(dtype)
        (grad,) = fast.backward([x], [fast.run(x)], [dy])
        expected = np.zeros(x.size, dtype)
        expected[indices.ravel()] = dy.ravel()
        assert grad.dtype == dtype
        np.testing.assert_array_equal(grad.ravel(), expected)


def test_conv_computes_only_the_wanted_gradients():
    """``wanted`` (what a gradient plan passes): an unwanted input gets None and the others are unchanged, for
    the full-width im2col, channels-last and strided plans."""
    rng = np.random.default_rng(8)
    for x_shape, w_shape, attrs in [((3, 1, 9, 9), (4, 1, 3, 3), {"pads": [1, 1, 1, 1]}),
                                    ((3, 8, 7, 7), (5, 8, 3, 3), {}),
                                    ((3, 2, 9, 8), (4, 2, 3, 3), {"strides": [2, 1]})]:
        x, w, b = (rng.standard_normal(s).astype(np.float32) for s in (x_shape, w_shape, w_shape[:1]))
        kernel = _kernel("Conv", attrs, inputs=3)
        y = kernel.run(x, w, b)
        dy = rng.standard_normal(y.shape).astype(np.float32)
        full = kernel.backward([x, w, b], [y], [dy])
        for wanted in ([False, True, True], [True, False, False], [False, False, True]):
            some = kernel.backward([x, w, b], [y], [dy], wanted=wanted)
            for want, got, expected in zip(wanted, some, full, strict=True):
                if want:
                    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
                else:
                    assert got is None


def test_a_training_step_gets_the_same_weight_gradients_with_and_without_wrt():
    """With ``wrt`` the plan skips the image's gradient, tells the convolutions what is wanted and runs each
    ReLU -> MaxPool pair as one rule; the weights' gradients are those of the plain walk."""
    import nn_core
    from nn_core.builder import lenet5
    from nn_core.losses import CrossEntropy

    model = nn_core.load_proto(lenet5(seed=3), "lenet5")
    plan = model.gradient_plan(training=True)
    rng = np.random.default_rng(9)
    x = (rng.random((5, 1, 28, 28)) * (rng.random((5, 1, 28, 28)) > 0.7)).astype(np.float32)
    params = {name: np.array(value) for name, value in model.initializers.items()}
    tape = plan.forward({model.inputs[0].name: x}, params)
    _, cotangents = CrossEntropy().bind(model)(tape.values, rng.integers(0, 10, 5))
    plain = plan.backward(tape, cotangents)
    weights = [name for name in params if params[name].dtype.kind == "f"]
    lean = plan.backward(tape, cotangents, wrt=weights)
    assert model.inputs[0].name in plain and model.inputs[0].name not in lean
    for name in weights:
        np.testing.assert_array_equal(lean[name], plain[name], err_msg=name)
