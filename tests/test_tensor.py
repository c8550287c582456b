"""Tensor is the eager front door of the engine's autograd: its operations run the registered ONNX kernels (values
checked against NumPy) and ``backward`` runs those kernels' gradient rules (checked against float64 central
differences), for every operation the Tensor offers."""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view

from nn_core import InputError, Tensor, UnsupportedOperatorError
from nn_core import tensor as tensor_module
from nn_core.ops.registry import Op, resolve

EPS = 1e-6


# ---------------------------------------------------------------------------------------------- NumPy references


def softmax(a: np.ndarray, axis: int = -1) -> np.ndarray:
    e = np.exp(a - a.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def cross_entropy(logits: Tensor, labels: np.ndarray) -> Tensor:
    """Mean negative log-likelihood, written with Tensor operations only."""
    onehot = np.eye(logits.shape[1])[labels].astype(logits.dtype)
    return -(logits.log_softmax(axis=1) * onehot).sum(axis=1).mean()


def conv2d_ref(x, w, b=None, stride=1, pad=0, dilation=1, groups=1):
    x = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    kh, kw = w.shape[2:]
    span = ((kh - 1) * dilation + 1, (kw - 1) * dilation + 1)
    windows = sliding_window_view(x, span, axis=(2, 3))[:, :, ::stride, ::stride, ::dilation, ::dilation]
    per_group, out_per_group = x.shape[1] // groups, w.shape[0] // groups
    parts = [np.einsum("nchwij,ocij->nohw", windows[:, g * per_group:(g + 1) * per_group],
                       w[g * out_per_group:(g + 1) * out_per_group]) for g in range(groups)]
    y = np.concatenate(parts, axis=1)
    return y if b is None else y + b.reshape(1, -1, 1, 1)


def pool2d_ref(x, k, stride, pad, kind):
    fill = -np.inf if kind == "max" else 0.0
    padded = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)), constant_values=fill)
    windows = sliding_window_view(padded, (k, k), axis=(2, 3))[:, :, ::stride, ::stride]
    if kind == "max":
        return windows.max(axis=(-2, -1))
    counts = sliding_window_view(np.pad(np.ones(x.shape[2:]), pad), (k, k))[::stride, ::stride].sum(axis=(-2, -1))
    return windows.sum(axis=(-2, -1)) / counts  # padding is not counted (ONNX count_include_pad=0)


# ---------------------------------------------------------------------------------------------- the operations


@dataclass
class Case:
    name: str
    op: Callable[..., Tensor]  # on Tensors (and what NumPy arrays stand for inside it)
    ref: Callable[..., np.ndarray]  # the same on NumPy arrays
    shapes: tuple[tuple[int, ...], ...]
    positive: bool = False  # inputs drawn in [0.5, 2] (log, sqrt, powers of a tensor)

    def inputs(self) -> list[np.ndarray]:
        rng = np.random.default_rng(zlib.crc32(self.name.encode()))
        if self.positive:
            return [rng.uniform(0.5, 2.0, shape) for shape in self.shapes]
        return [rng.standard_normal(shape) for shape in self.shapes]


CONST = np.array([[0.5, -1.5, 2.0, 1.0]])  # a NumPy operand inside a Tensor expression: broadcast, no gradient
VEC = (5, 3)
CASES = [
    # arithmetic, broadcasting in both directions, with Python and NumPy constants on either side
    Case("add", lambda a, b: a + b, lambda a, b: a + b, ((3, 1, 4), (2, 4))),
    Case("sub", lambda a, b: a - b, lambda a, b: a - b, ((2, 4), (3, 1, 1))),
    Case("mul", lambda a, b: a * b, lambda a, b: a * b, ((3, 1), (1, 4))),
    Case("div", lambda a, b: a / b, lambda a, b: a / b, ((2, 3), (3,)), positive=True),
    Case("pow", lambda a, b: a ** b, lambda a, b: a ** b, ((2, 3), (2, 1)), positive=True),
    Case("pow constant", lambda a: a ** 3, lambda a: a ** 3, ((2, 3),)),
    Case("constant pow", lambda a: 2.0 ** a, lambda a: 2.0 ** a, ((2, 3),)),
    Case("constants", lambda a: 1.5 - a * 2 + 3 / (a * a + 1) - CONST,
         lambda a: 1.5 - a * 2 + 3 / (a * a + 1) - CONST, ((3, 4),)),
    Case("ndarray on the left", lambda a: CONST * a + CONST, lambda a: CONST * a + CONST, ((2, 1),)),
    Case("neg", lambda a: -a, lambda a: -a, ((2, 3),)),
    # products
    Case("matmul", lambda a, b: a @ b, lambda a, b: a @ b, ((3, 4), (4, 2))),
    Case("matmul batched and broadcast", lambda a, b: a @ b, lambda a, b: a @ b, ((2, 1, 3, 4), (3, 4, 2))),
    Case("matmul vector", lambda a, b: a.matmul(b), lambda a, b: a @ b, ((4,), (2, 4, 3))),
    Case("dot vectors", lambda a, b: a.dot(b), np.dot, ((4,), (4,))),
    Case("dot matrix vector", lambda a, b: a.dot(b), np.dot, ((3, 4), (4,))),
    Case("cross", lambda a, b: a.cross(b), np.cross, (VEC, (1, 3))),
    Case("cross axis 0", lambda a, b: a.cross(b, axis=0), lambda a, b: np.cross(a, b, axis=0), ((3, 4), (3, 4))),
    Case("gemm", lambda a, b, c: a.gemm(b, c, alpha=0.5, beta=2.0, trans_a=True, trans_b=True),
         lambda a, b, c: 0.5 * a.T @ b.T + 2.0 * c, ((4, 3), (2, 4), (2,))),
    Case("linear", lambda x, w, b: x.linear(w, b), lambda x, w, b: x @ w.T + b, ((5, 4), (3, 4), (3,))),
    Case("linear without bias", lambda x, w: x.linear(w), lambda x, w: x @ w.T, ((5, 4), (3, 4))),
    # reductions
    Case("sum", lambda a: a.sum(), np.sum, ((2, 3, 4),)),
    Case("sum axis", lambda a: a.sum(axis=1), lambda a: a.sum(axis=1), ((2, 3, 4),)),
    Case("sum axes keepdims", lambda a: a.sum(axis=(0, -1), keepdims=True),
         lambda a: a.sum(axis=(0, -1), keepdims=True), ((2, 3, 4),)),
    Case("mean", lambda a: a.mean(), np.mean, ((2, 3, 4),)),
    Case("mean axis keepdims", lambda a: a.mean(axis=-1, keepdims=True), lambda a: a.mean(axis=-1, keepdims=True),
         ((2, 3, 4),)),
    Case("max", lambda a: a.max(), np.max, ((2, 3, 4),)),
    Case("max axis", lambda a: a.max(axis=0), lambda a: a.max(axis=0), ((3, 4),)),
    Case("max axes keepdims", lambda a: a.max(axis=(1, 2), keepdims=True),
         lambda a: a.max(axis=(1, 2), keepdims=True), ((2, 3, 4),)),
    # elementwise functions
    Case("exp", lambda a: a.exp(), np.exp, ((2, 3),)),
    Case("log", lambda a: a.log(), np.log, ((2, 3),), positive=True),
    Case("sqrt", lambda a: a.sqrt(), np.sqrt, ((2, 3),), positive=True),
    Case("tanh", lambda a: a.tanh(), np.tanh, ((2, 3),)),
    Case("sigmoid", lambda a: a.sigmoid(), lambda a: 1 / (1 + np.exp(-a)), ((2, 3),)),
    Case("relu", lambda a: a.relu(), lambda a: np.maximum(a, 0), ((3, 4),)),
    Case("softmax", lambda a: a.softmax(), softmax, ((2, 5),)),
    Case("softmax axis 0", lambda a: a.softmax(axis=0), lambda a: softmax(a, axis=0), ((3, 2, 2),)),
    Case("log_softmax", lambda a: a.log_softmax(), lambda a: np.log(softmax(a)), ((2, 5),)),
    # shapes and indexing
    Case("reshape", lambda a: a.reshape(3, -1), lambda a: a.reshape(3, -1), ((2, 3, 2),)),
    Case("reshape tuple", lambda a: a.reshape((4, 3)), lambda a: a.reshape(4, 3), ((2, 6),)),
    Case("transpose", lambda a: a.transpose(1, 2, 0), lambda a: a.transpose(1, 2, 0), ((2, 3, 4),)),
    Case("T", lambda a: a.T, lambda a: a.T, ((2, 3, 4),)),
    Case("flatten", lambda a: a.flatten(), lambda a: a.reshape(2, -1), ((2, 3, 2, 2),)),
    Case("flatten axis 2", lambda a: a.flatten(axis=2), lambda a: a.reshape(6, -1), ((2, 3, 2, 2),)),
    Case("squeeze", lambda a: a.squeeze(), np.squeeze, ((2, 1, 3, 1),)),
    Case("unsqueeze", lambda a: a.unsqueeze((0, -1)), lambda a: a[None, ..., None], ((2, 3),)),
    Case("slices", lambda a: a[1:, ::2, -3:], lambda a: a[1:, ::2, -3:], ((3, 5, 4),)),
    Case("negative steps", lambda a: a[::-1, 3:0:-2], lambda a: a[::-1, 3:0:-2], ((3, 5),)),
    Case("integer index", lambda a: a[1, :, -1], lambda a: a[1, :, -1], ((3, 4, 2),)),
    Case("array index", lambda a: a[:, [2, 0, 2]], lambda a: a[:, [2, 0, 2]], ((3, 4),)),
    Case("ellipsis and None", lambda a: a[..., None, 1:3], lambda a: a[..., None, 1:3], ((2, 3, 4),)),
    Case("concat", lambda a, b, c: Tensor.concat([a, b, c], axis=1), lambda a, b, c: np.concatenate([a, b, c], 1),
         ((2, 1, 3), (2, 2, 3), (2, 3, 3))),
    # convolution and pooling
    Case("conv2d", lambda x, w, b: x.conv2d(w, b), lambda x, w, b: conv2d_ref(x, w, b),
         ((2, 3, 6, 5), (4, 3, 3, 3), (4,))),
    Case("conv2d strided padded dilated", lambda x, w: x.conv2d(w, stride=2, padding=2, dilation=2),
         lambda x, w: conv2d_ref(x, w, stride=2, pad=2, dilation=2), ((1, 2, 7, 7), (3, 2, 3, 3))),
    Case("conv2d groups", lambda x, w: x.conv2d(w, padding=1, groups=2),
         lambda x, w: conv2d_ref(x, w, pad=1, groups=2), ((1, 4, 5, 5), (6, 2, 3, 3))),
    Case("two conv2d sharing one kernel", lambda x, w1, w2: x.conv2d(w1, padding=1).tanh().conv2d(w2, padding=1),
         lambda x, w1, w2: conv2d_ref(np.tanh(conv2d_ref(x, w1, pad=1)), w2, pad=1),
         ((1, 2, 5, 5), (2, 2, 3, 3), (2, 2, 3, 3))),
    Case("max_pool2d", lambda x: x.max_pool2d(2), lambda x: pool2d_ref(x, 2, 2, 0, "max"), ((2, 3, 6, 6),)),
    Case("max_pool2d overlapping padded", lambda x: x.max_pool2d(3, stride=2, padding=1),
         lambda x: pool2d_ref(x, 3, 2, 1, "max"), ((1, 2, 5, 5),)),
    Case("avg_pool2d", lambda x: x.avg_pool2d(2), lambda x: pool2d_ref(x, 2, 2, 0, "avg"), ((2, 3, 6, 6),)),
    Case("avg_pool2d overlapping padded", lambda x: x.avg_pool2d(3, stride=1, padding=1),
         lambda x: pool2d_ref(x, 3, 1, 1, "avg"), ((1, 2, 4, 5),)),
    # a composite: a small hand-written network and its loss
    Case("mlp cross-entropy", lambda x, w1, w2: cross_entropy(x.linear(w1).relu().linear(w2), np.array([0, 2, 1])),
         lambda x, w1, w2: -np.mean(np.log(softmax(np.maximum(x @ w1.T, 0) @ w2.T))[range(3), [0, 2, 1]]),
         ((3, 4), (5, 4), (3, 5))),
]
IDS = [case.name for case in CASES]


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_forward_matches_numpy(case):
    arrays = case.inputs()
    result = case.op(*(Tensor(a) for a in arrays))
    expected = np.asarray(case.ref(*arrays))
    assert isinstance(result, Tensor)
    assert result.shape == expected.shape
    assert result.dtype == np.float64
    np.testing.assert_allclose(result.numpy(), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_gradient_matches_central_differences(case):
    """The gradient of ``sum(op(inputs) * cotangent)`` with respect to every element of every input."""
    arrays = case.inputs()
    tensors = [Tensor(a.copy(), requires_grad=True) for a in arrays]
    out = case.op(*tensors)
    cotangent = np.random.default_rng(1).standard_normal(out.shape)
    out.backward(cotangent)

    def loss(values) -> float:
        return float(np.sum(case.op(*(Tensor(v) for v in values)).numpy() * cotangent))

    for index, (x, t) in enumerate(zip(arrays, tensors)):
        assert t.grad is not None and t.grad.shape == x.shape and t.grad.dtype == np.float64
        numeric = np.zeros_like(x)
        for where in np.ndindex(x.shape):
            shifted = [a.copy() for a in arrays]
            shifted[index][where] += EPS
            up = loss(shifted)
            shifted[index][where] -= 2 * EPS
            numeric[where] = (up - loss(shifted)) / (2 * EPS)
        np.testing.assert_allclose(t.grad, numeric, rtol=1e-5, atol=1e-6, err_msg=f"input {index}")


def test_every_recorded_step_is_the_registered_kernel_of_its_op():
    x, w = Tensor.randn(2, 3, requires_grad=True), Tensor.randn(3, 4, requires_grad=True)
    y = ((x @ w).relu() + 1.0).sum(axis=1)
    for t, op_type in ((y, "ReduceSum"), (y._inputs[0], "Add"), (y._inputs[0]._inputs[0], "Relu"),
                       (y._inputs[0]._inputs[0]._inputs[0], "MatMul")):
        assert type(t._op) is resolve(op_type, tensor_module.OPSET)


def test_backward_calls_the_kernels_own_rule(monkeypatch):
    """No derivative of its own: whatever the MatMul kernel's rule says is what w.grad becomes."""
    x, w = Tensor.ones(2, 3), Tensor.ones(3, 4, requires_grad=True)
    y = x @ w
    calls = []

    def rule(self, inputs, outputs, grads):
        calls.append((self.node.op_type, [np.shape(v) for v in inputs], outputs[0].shape, grads[0].shape))
        return [None, np.full(inputs[1].shape, 7.0)]

    monkeypatch.setattr(type(y._op), "backward", rule)
    y.backward(np.ones((2, 4)))
    assert calls == [("MatMul", [(2, 3), (3, 4)], (2, 4), (2, 4))]
    np.testing.assert_array_equal(w.grad, np.full((3, 4), 7.0))


def test_kernels_are_built_once_per_op_and_attributes():
    x, w = Tensor.randn(2, 3, 5, 5, seed=0), Tensor.randn(4, 3, 3, 3, seed=1)

    def forward():
        return x.conv2d(w, padding=1).max_pool2d(2).flatten().softmax().sum(axis=1)

    forward()
    built = len(tensor_module._KERNELS)
    forward()
    assert len(tensor_module._KERNELS) == built
    x.conv2d(w, padding=0)  # other attributes: another kernel
    assert len(tensor_module._KERNELS) == built + 1


# ---------------------------------------------------------------------------------------------- the tape


def test_broadcast_gradients_are_reduced_to_the_input_shapes():
    a = Tensor(np.arange(3.0).reshape(3, 1), requires_grad=True)
    b = Tensor(np.array([1.0, 2.0, 3.0, 4.0]), requires_grad=True)
    c = Tensor(np.array(2.0), requires_grad=True)
    (a * b + c).sum().backward()
    assert a.grad.shape == (3, 1) and b.grad.shape == (4,) and c.grad.shape == ()
    np.testing.assert_allclose(a.grad, np.full((3, 1), 10.0))  # each row of a meets every b
    np.testing.assert_allclose(b.grad, np.full(4, 3.0))  # 0 + 1 + 2
    assert c.grad == 12.0  # c reaches all 12 elements


def test_a_tensor_used_twice_accumulates_both_uses():
    x = Tensor(np.array([1.0, -2.0, 3.0]), requires_grad=True)
    y = x * x + x  # fan-out: three uses of x
    y.backward(np.ones(3))
    np.testing.assert_allclose(x.grad, 2 * x.numpy() + 1)
    z = x * 3.0
    loss = (z + z).sum()  # an intermediate used twice
    x.zero_grad()
    loss.backward()
    np.testing.assert_allclose(x.grad, np.full(3, 6.0))


def test_gradients_add_up_over_backward_calls_until_zero_grad():
    x = Tensor(np.array([1.0, 2.0]), requires_grad=True)
    (x * 2.0).sum().backward()
    (x * 3.0).sum().backward()
    np.testing.assert_allclose(x.grad, [5.0, 5.0])
    assert x.zero_grad() is x and x.grad is None
    (x * 3.0).sum().backward()
    np.testing.assert_allclose(x.grad, [3.0, 3.0])


def test_intermediates_get_their_gradient_and_constants_none():
    x = Tensor(np.array([1.0, 2.0]), requires_grad=True)
    constant = Tensor(np.array([3.0, 4.0]))
    hidden = x * constant
    hidden.sum().backward()
    np.testing.assert_allclose(hidden.grad, [1.0, 1.0])
    np.testing.assert_allclose(x.grad, [3.0, 4.0])
    assert constant.grad is None and not constant.requires_grad


def test_only_operations_on_tensors_requiring_a_gradient_are_recorded():
    a, b = Tensor.ones(2, 2), Tensor.ones(2, 2, requires_grad=True)
    plain = a @ a
    assert not plain.requires_grad and plain._op is None and plain._inputs == ()
    assert (a @ b).requires_grad
    cut = (b * 2.0).detach()
    assert not cut.requires_grad and cut._op is None
    with pytest.raises(InputError, match="no input"):
        (cut * 2.0).sum().backward()


def test_a_deep_tape_needs_no_recursion():
    x = Tensor(np.array([1.0]), requires_grad=True)
    y = x
    for _ in range(5000):
        y = y * 1.0001
    y.sum().backward()
    np.testing.assert_allclose(x.grad, [1.0001 ** 5000])


def test_a_hand_written_two_layer_mlp_learns():
    """Two interleaved half-moons-ish blobs, a 2-16-2 MLP, softmax cross-entropy, plain SGD on .data."""
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 64)
    points = rng.standard_normal((64, 2)).astype(np.float32) * 0.5 + np.where(labels[:, None] == 1, 1.0, -1.0)
    x = Tensor(points)
    w1 = Tensor.randn(16, 2, seed=1, requires_grad=True)
    b1 = Tensor.zeros(16, requires_grad=True)
    w2 = Tensor(Tensor.randn(2, 16, seed=2).numpy() * 0.25, requires_grad=True)
    b2 = Tensor.zeros(2, requires_grad=True)
    params = [w1, b1, w2, b2]
    losses = []
    for _ in range(30):
        for p in params:
            p.zero_grad()
        loss = cross_entropy(x.linear(w1, b1).relu().linear(w2, b2), labels)
        loss.backward()
        for p in params:
            assert p.grad.shape == p.shape and p.grad.dtype == np.float32
            p.data -= 0.5 * p.grad
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses
    accuracy = (x.linear(w1, b1).relu().linear(w2, b2).argmax(axis=1).numpy() == labels).mean()
    assert accuracy > 0.9


def test_a_hand_written_conv_layer_gets_its_gradient():
    """The seed exercise: a convolution, pooling and a dense layer by hand; the loss's gradient reaches every
    weight, in its own shape, and a step against it lowers the loss."""
    images = Tensor.randn(4, 1, 8, 8, seed=0, dtype=np.float64)
    labels = np.array([0, 1, 2, 1])
    kernels = Tensor.randn(3, 1, 3, 3, seed=1, dtype=np.float64, requires_grad=True)
    dense = Tensor.randn(3, 3 * 4 * 4, seed=2, dtype=np.float64, requires_grad=True)

    def loss() -> Tensor:
        return cross_entropy(images.conv2d(kernels, padding=1).relu().max_pool2d(2).flatten().linear(dense), labels)

    before = loss()
    before.backward()
    assert kernels.grad.shape == kernels.shape and dense.grad.shape == dense.shape
    kernels.data -= 0.01 * kernels.grad
    dense.data -= 0.01 * dense.grad
    assert loss().item() < before.item()


# ---------------------------------------------------------------------------------------------- errors


def test_an_operation_whose_kernel_has_no_rule_is_refused_by_name(monkeypatch):
    x = Tensor(np.array([[0.5, -1.0]]), requires_grad=True)
    y = x.tanh().sum()
    monkeypatch.setattr(resolve("Tanh", tensor_module.OPSET), "backward", Op.backward)
    with pytest.raises(UnsupportedOperatorError, match="Tanh"):
        y.backward()


def test_an_op_without_a_kernel_is_refused_by_name():
    with pytest.raises(UnsupportedOperatorError, match="NoSuchOp"):
        tensor_module.apply("NoSuchOp", Tensor.ones(2))


def test_backward_needs_a_single_value_or_a_matching_grad():
    x = Tensor.ones(2, 3, requires_grad=True)
    y = x * 2.0
    with pytest.raises(InputError, match=r"\(2, 3\)"):
        y.backward()
    with pytest.raises(InputError, match=r"\(3,\)"):
        y.backward(np.ones(3))
    with pytest.raises(InputError, match="no input"):
        Tensor.ones(2).sum().backward()


def test_only_floating_point_tensors_require_gradients():
    with pytest.raises(InputError, match="int64"):
        Tensor([1, 2], requires_grad=True)


@pytest.mark.parametrize("call, names", [
    (lambda: Tensor.ones(2, 3) + Tensor.ones(4, 3), [r"\(2, 3\)", r"\(4, 3\)", "Add"]),
    (lambda: Tensor.ones(2, 3) @ Tensor.ones(2, 3), [r"\(2, 3\)", "MatMul"]),
    (lambda: Tensor.ones(2, 3, 4).dot(Tensor.ones(4)), [r"\(2, 3, 4\)", "dot"]),
    (lambda: Tensor.ones(2, 2).cross(Tensor.ones(2, 2)), [r"\(2, 2\)", "3 components"]),
    (lambda: Tensor.ones(2, 3).reshape(4, 2), ["Reshape", r"\(2, 3\)"]),
    (lambda: Tensor.ones(2, 3)[2.5], ["2.5", "integer"]),
    (lambda: Tensor.ones(2, 3)[0, 0, 0], ["too many"]),
    (lambda: Tensor.ones(2, 3)[[0, 1], [0, 1]], ["array"]),
    (lambda: Tensor.ones(1, 1, 4, 4).conv2d(Tensor.ones(2, 3, 3, 3)), ["Conv", "channels"]),
])
def test_shape_errors_are_input_errors_naming_the_operands(call, names):
    with pytest.raises(InputError) as caught:
        call()
    for name in names:
        assert caught.match(name)


# ---------------------------------------------------------------------------------------------- the array side


def test_construction_and_numpy_interop():
    a = np.arange(6.0).reshape(2, 3)
    t = Tensor(a)
    assert t.numpy() is a and np.asarray(t) is a  # no copy
    assert (t.shape, t.ndim, t.size, t.dtype) == ((2, 3), 2, 6, np.float64)
    assert Tensor(t).numpy() is a and not Tensor(t).requires_grad
    assert Tensor([1, 2], dtype=np.float32).dtype == np.float32
    assert Tensor.zeros(2, 3).dtype == np.float32 and Tensor.ones((2, 3)).shape == (2, 3)
    np.testing.assert_array_equal(Tensor.randn(3, seed=4).numpy(), Tensor.randn(3, seed=4).numpy())
    assert Tensor.randn(2, requires_grad=True).requires_grad
    np.testing.assert_array_equal(Tensor.arange(4).numpy(), np.arange(4))
    assert len(t) == 2 and [row.tolist() for row in t] == a.tolist()
    assert Tensor(np.array(2.5)).item() == 2.5 and float(Tensor([[2.5]])) == 2.5
    assert "requires_grad=True" in repr(Tensor([1.0], requires_grad=True))
    assert "requires_grad" not in repr(t)
    with pytest.raises(TypeError):
        len(Tensor(1.0))


def test_argmax_gives_integer_positions_and_no_tape():
    a = np.array([[1.0, 3.0, 2.0], [5.0, 4.0, 0.0]])
    t = Tensor(a, requires_grad=True)
    np.testing.assert_array_equal(t.argmax().numpy(), [1, 0])
    np.testing.assert_array_equal(t.argmax(axis=0).numpy(), [1, 1, 0])
    assert not t.argmax().requires_grad


def test_float32_stays_float32():
    x, w = Tensor.randn(4, 3, requires_grad=True), Tensor.randn(2, 3, requires_grad=True)
    y = (x.linear(w) * 2 + 1).relu().softmax()
    assert y.dtype == np.float32
    y.backward(np.ones(y.shape, np.float32))
    assert x.grad.dtype == np.float32 and w.grad.dtype == np.float32
