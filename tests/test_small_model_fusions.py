"""Issue 10, small digit models at batch 1: the pooling runners and the dense layer's absorbed Softmax /
LogSoftmax give what the general paths give (within float rounding, against the separable passes, the traced
graph and onnxruntime), are really taken, and hand back arrays no later run overwrites."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import make_model, ort_run, tensor_info
from onnx import helper

import nn_core


def _kernel(node, opset=13, consts=None):
    from nn_core.ops import load_all_kernels, resolve
    from nn_core.ops.attributes import node_attributes
    from nn_core.ops.registry import NodeSpec

    load_all_kernels()
    spec = NodeSpec(op_type=node.op_type, inputs=list(node.input), outputs=list(node.output),
                    attrs=node_attributes(node), opset=opset, consts=consts or [None] * len(node.input))
    return resolve(node.op_type, opset)(spec)


def _separable(kernel, x: np.ndarray) -> np.ndarray:
    """The pooling by the general path: the separable passes over the (padded) scratch, then the divisor."""
    plan = kernel.plan(x)
    y = plan.reduce(plan.source(x), np.add if kernel.op_type == "AveragePool" else np.maximum)
    if kernel.op_type == "AveragePool":
        divisor = plan.window_counts(kernel.include_pad)
        y = y / (divisor if isinstance(divisor, float) else divisor.astype(y.dtype))
    return y


AVERAGE_CASES = [
    ((1, 4, 24, 24), dict(kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1, count_include_pad=1)),  # LeNet-5
    ((1, 8, 8, 8), dict(kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1, count_include_pad=0)),
    ((2, 3, 7, 9), dict(kernel_shape=[3, 2], strides=[2, 3], pads=[1, 0, 2, 1], count_include_pad=1)),
    ((1, 3, 7, 9), dict(kernel_shape=[3, 2], strides=[2, 3], pads=[1, 0, 2, 1], ceil_mode=1)),
    ((1, 2, 9, 9), dict(kernel_shape=[2, 2], dilations=[2, 2], pads=[1, 1, 0, 0])),
    ((1, 10, 2, 2), dict(kernel_shape=[2, 2], strides=[2, 2])),  # global, written as a window
    ((1, 10, 4, 4), dict(kernel_shape=[4, 4], strides=[4, 4])),
    ((1, 2, 5, 5), dict(kernel_shape=[4, 4], strides=[4, 4])),  # one window, not the whole input
    ((1, 16, 32, 32), dict(kernel_shape=[2, 2], strides=[2, 2])),  # over the matrix size: straight passes
]


@pytest.mark.parametrize("shape, attrs", AVERAGE_CASES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_average_pool_runners_match_the_separable_passes(shape, attrs, dtype):
    node = helper.make_node("AveragePool", ["x"], ["y"], **attrs)
    kernel = _kernel(node, opset=19)
    rng = np.random.default_rng(len(shape) + sum(shape))
    x = rng.standard_normal(shape).astype(dtype)
    want = _separable(_kernel(node, opset=19), x)
    first = kernel.run(x)
    assert (x.shape, x.dtype) in kernel.fast  # the runner is kept for the next calls
    kept = first.copy()
    second = kernel.run(x + 1)
    np.testing.assert_allclose(first, want, rtol=1e-5 if dtype == np.float32 else 1e-12, atol=1e-6)
    np.testing.assert_array_equal(first, kept)  # not a buffer the second run wrote into
    assert second is not first and first.dtype == dtype and first.shape == want.shape
    # a strided view of the same shape (a convolution may hand one over)
    wide = np.zeros(shape[:-1] + (2 * shape[-1],), dtype)
    wide[..., ::2] = x
    np.testing.assert_allclose(kernel.run(wide[..., ::2]), first, rtol=1e-6 if dtype == np.float32 else 1e-14)


@pytest.mark.parametrize("shape, attrs", AVERAGE_CASES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
@pytest.mark.parametrize("activation", ["Sigmoid", "Tanh"])
def test_average_pool_with_a_fused_activation_matches_the_two_steps(shape, attrs, dtype, activation):
    """A fused Sigmoid runs as tanh of half the input, pooled with half weights, plus the pooled halves: the
    same as sigmoid then the separable passes, within rounding (absolute), tails and saturation included."""
    from nn_core.ops.activations import sigmoid

    node = helper.make_node("AveragePool", ["x"], ["y"], **attrs)
    kernel = _kernel(node, opset=19)
    assert kernel.fuse_preactivation(activation)
    function = sigmoid if activation == "Sigmoid" else np.tanh
    rng = np.random.default_rng(sum(shape))
    x = (rng.standard_normal(shape) * 6).astype(dtype)
    x.flat[:4] = [-120.0, 95.0, -30.0, 0.0]  # saturated, far tail, exactly zero
    want = _separable(_kernel(node, opset=19), function(x))
    first = kernel.run(x)
    kept = first.copy()
    second = kernel.run(-x)
    tolerance = 2e-3 if dtype == np.float16 else 1e-6 if dtype == np.float32 else 1e-14
    np.testing.assert_allclose(first, want, rtol=tolerance, atol=tolerance)
    np.testing.assert_array_equal(first, kept)  # not a buffer the second run wrote into
    assert second is not first and first.dtype == dtype and first.shape == want.shape
    np.testing.assert_allclose(second, _separable(_kernel(node, opset=19), function(-x)), rtol=tolerance,
                               atol=tolerance)
    # a strided view of the same shape (a convolution may hand one over)
    wide = np.zeros(shape[:-1] + (2 * shape[-1],), dtype)
    wide[..., ::2] = x
    np.testing.assert_allclose(kernel.run(wide[..., ::2]), first, rtol=tolerance, atol=tolerance)


def test_average_pool_as_matrices_matches_onnxruntime():
    for shape, attrs in AVERAGE_CASES[:5]:
        proto = make_model([helper.make_node("AveragePool", ["x"], ["y"], **attrs)],
                           [tensor_info("x", list(shape))], [tensor_info("y", None)], opset=19)
        x = np.random.default_rng(5).standard_normal(shape).astype(np.float32)
        np.testing.assert_allclose(nn_core.load_proto(proto).run({"x": x})["y"], ort_run(proto, {"x": x})[0],
                                   rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("shape, attrs", [
    ((1, 4, 28, 28), dict(kernel_shape=[28, 28], strides=[28, 28])),  # global, written as a window
    ((1, 4, 28, 28), dict(kernel_shape=[2, 2], strides=[2, 2])),
    ((1, 3, 7, 7), dict(kernel_shape=[3, 3], strides=[2, 2])),
    ((1, 3, 7, 7), dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])),  # scratch: general path
    ((1, 2, 5, 5), dict(kernel_shape=[4, 4], strides=[4, 4])),
    ((1, 3, 7, 8), dict(kernel_shape=[2, 2], strides=[2, 2])),  # an odd height: its last row is left out
    ((1, 3, 7, 9), dict(kernel_shape=[2, 2], strides=[2, 2])),
    ((2, 5, 13, 12), dict(kernel_shape=[4, 4], strides=[4, 4])),  # blocks, or passes on an NCHW input
])
def test_max_pool_runners_match_the_separable_passes(shape, attrs):
    node = helper.make_node("MaxPool", ["x"], ["y"], **attrs)
    kernel = _kernel(node)
    x = np.random.default_rng(6).standard_normal(shape).astype(np.float32)
    x[0, 0, 0, 0] = np.nan  # propagates on every path
    want = _separable(_kernel(node), x)
    first = kernel.run(x)
    kept = first.copy()
    kernel.run(-x)
    np.testing.assert_array_equal(first, want)
    np.testing.assert_array_equal(first, kept)
    assert ((x.shape, x.dtype) in kernel.fast) == ("pads" not in attrs)
    # channels-last storage (a convolution may hand that over): the same maxima
    stored = np.ascontiguousarray(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
    np.testing.assert_array_equal(kernel.run(stored), want)
    plan = kernel.plan(x)
    np.testing.assert_array_equal(plan.reduce_block(plan.source(stored), np.maximum), want)


def _dense_head(op: str, normalizer: str, opset: int, axis: int | None, x_shape=(1, 12)):
    rng = np.random.default_rng(9)
    w = rng.standard_normal((x_shape[-1], 10)).astype(np.float32)
    b = rng.standard_normal(10).astype(np.float32)
    if op == "Gemm":
        nodes = [helper.make_node("Gemm", ["x", "w", "b"], ["h"])]
    else:
        nodes = [helper.make_node("MatMul", ["x", "w"], ["m"]), helper.make_node("Add", ["m", "b"], ["h"])]
    nodes += [helper.make_node("Relu", ["h"], ["r"]),
              helper.make_node(normalizer, ["r"], ["y"], **({} if axis is None else {"axis": axis}))]
    return make_model(nodes, [tensor_info("x", ["N", *x_shape[1:]])], [tensor_info("y", None)],
                      {"w": w, "b": b}, opset=opset)


@pytest.mark.parametrize("op", ["Gemm", "MatMul"])
@pytest.mark.parametrize("normalizer", ["Softmax", "LogSoftmax"])
@pytest.mark.parametrize("opset, axis", [(13, None), (11, None), (13, 1), (11, -1)])
def test_dense_layer_absorbs_the_softmax_after_it(op, normalizer, opset, axis):
    proto = _dense_head(op, normalizer, opset, axis)
    model = nn_core.load_proto(proto)
    fused = "Add+" if op == "MatMul" else ""
    assert model.plan_ops == [f"{op}+{fused}Relu+{normalizer}"]
    rng = np.random.default_rng(10)
    for batch in (1, 3):
        x = (rng.standard_normal((batch, 12)) * 4).astype(np.float32)
        first = model.run({"x": x})["y"]
        kept = first.copy()
        second = model.run({"x": -x})["y"]
        np.testing.assert_array_equal(first, kept)  # the second run wrote elsewhere
        traced, _ = model.run_traced({"x": x})
        np.testing.assert_allclose(first, traced["y"], rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(first, ort_run(proto, {"x": x})[0], rtol=1e-5, atol=1e-6)
        assert second is not first and first.dtype == np.float32


def test_a_softmax_over_other_axes_goes_to_its_own_kernel():
    # opset 11: axis 0 of the (N, 10) product normalises over everything, not each row
    proto = _dense_head("Gemm", "Softmax", 11, 0)
    model = nn_core.load_proto(proto)
    assert model.plan_ops == ["Gemm+Relu+Softmax"]
    x = np.random.default_rng(11).standard_normal((3, 12)).astype(np.float32)
    got = model.run({"x": x})["y"]
    np.testing.assert_allclose(got.sum(), 1.0, rtol=1e-5)
    np.testing.assert_allclose(got, ort_run(proto, {"x": x})[0], rtol=1e-5, atol=1e-7)
    # a 3-D MatMul product and a middle axis (opset 13): the Softmax kernel's own rule
    proto = _dense_head("MatMul", "LogSoftmax", 13, 1, x_shape=(2, 5, 12))
    x = np.random.default_rng(12).standard_normal((2, 5, 12)).astype(np.float32)
    np.testing.assert_allclose(nn_core.load_proto(proto).run({"x": x})["y"], ort_run(proto, {"x": x})[0],
                               rtol=1e-5, atol=1e-5)


def test_a_softmax_that_is_also_read_elsewhere_or_an_output_is_not_absorbed():
    rng = np.random.default_rng(13)
    w = rng.standard_normal((6, 4)).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Softmax", ["h"], ["y"]),
             helper.make_node("Neg", ["h"], ["z"])]
    model = nn_core.load_proto(make_model(nodes, [tensor_info("x", [1, 6])],
                                          [tensor_info("y", None), tensor_info("z", None)], {"w": w}))
    assert model.plan_ops == ["MatMul", "Softmax", "Neg"]
    x = rng.standard_normal((1, 6)).astype(np.float32)
    out = model.run({"x": x})
    np.testing.assert_allclose(out["z"], -(x @ w), rtol=1e-6)
    np.testing.assert_allclose(out["y"].sum(), 1.0, rtol=1e-6)


def test_an_identity_naming_a_graph_output_is_written_by_its_producer():
    """A TensorFlow export's last node is an Identity from the softmax to the output's name: the producer writes
    the output itself. Not when the value is read elsewhere or is an output too."""
    rng = np.random.default_rng(14)
    w = rng.standard_normal((6, 4)).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Softmax", ["h"], ["s"]),
             helper.make_node("Identity", ["s"], ["y"])]
    model = nn_core.load_proto(make_model(nodes, [tensor_info("x", [1, 6])], [tensor_info("y", None)], {"w": w}))
    assert model.plan_ops == ["MatMul+Softmax"]
    x = rng.standard_normal((1, 6)).astype(np.float32)
    np.testing.assert_allclose(model.run({"x": x})["y"], model.run_traced({"x": x})[0]["y"], rtol=1e-6)
    negated = helper.make_node("Neg", ["s"], ["z"])
    for outputs, extra in (([tensor_info("y", None), tensor_info("s", None)], []),
                           ([tensor_info("y", None), tensor_info("z", None)], [negated])):
        model = nn_core.load_proto(make_model(nodes + extra, [tensor_info("x", [1, 6])], outputs, {"w": w}))
        assert "Identity" in model.plan_ops
        out = model.run({"x": x})
        np.testing.assert_array_equal(out["y"], out.get("s", -out.get("z", 0)))


def test_a_pad_of_zeros_hands_its_input_on():
    proto = make_model([helper.make_node("Pad", ["x", "pads"], ["p"], mode="constant"),
                        helper.make_node("AveragePool", ["p"], ["y"], kernel_shape=[2, 2], strides=[2, 2])],
                       [tensor_info("x", [1, 3, 2, 2])], [tensor_info("y", None)],
                       {"pads": np.zeros(8, np.int64)}, opset=13)
    model = nn_core.load_proto(proto)
    x = np.random.default_rng(15).standard_normal((1, 3, 2, 2)).astype(np.float32)
    pad = model._fast_plan().steps[0].kernel
    assert pad.run(x) is x and pad.run(x) is x  # (the layout made on the first call, read on the second)
    np.testing.assert_allclose(model.run({"x": x})["y"], x.mean(axis=(2, 3), keepdims=True), rtol=1e-6)
    with pytest.raises(nn_core.ModelError, match="pads"):  # a rank the pads do not fit is still refused
        pad.run(x[0])


@pytest.mark.parametrize("attrs, scales", [
    ({"coordinate_transformation_mode": "asymmetric", "nearest_mode": "floor"}, [1, 1, 2, 2]),  # U-Net's
    ({}, [1, 1, 1.5, 0.75]),
    ({"coordinate_transformation_mode": "align_corners"}, [1, 1, 2, 0.5]),
    ({"nearest_mode": "ceil"}, [1, 2, 0.6, 3]),
])
def test_nearest_resize_by_repeats_is_the_gather(attrs, scales):
    x = np.random.default_rng(16).standard_normal((1, 3, 9, 12)).astype(np.float32)
    node = helper.make_node("Resize", ["x", "", "s"], ["y"], mode="nearest", **attrs)
    scales = np.array(scales, np.float32)
    kernel = _kernel(node, opset=18)
    got = kernel.run(x, None, scales)
    plans = kernel.plans_for(x, (None, scales))
    assert all(plan.repeats() is not None for plan in plans)
    want = x
    for plan in plans:
        want = plan.apply(want, 0.0)
    np.testing.assert_array_equal(got, want)
    assert got is not x and not np.shares_memory(got, x)
    proto = make_model([node], [tensor_info("x", list(x.shape))], [tensor_info("y", None)], {"s": scales}, opset=18)
    np.testing.assert_array_equal(got, ort_run(proto, {"x": x})[0])


def test_a_reversed_crop_is_gathered():
    x = np.arange(2 * 6, dtype=np.float32).reshape(1, 2, 6)
    node = helper.make_node("Resize", ["x", "r", "s"], ["y"], mode="nearest",
                            coordinate_transformation_mode="tf_crop_and_resize")
    roi = np.array([0, 0, 1, 1, 1, 0], np.float32)  # the last axis from 1 down to 0: reversed
    scales = np.array([1, 1, 1], np.float32)
    kernel = _kernel(node, opset=18)
    got = kernel.run(x, roi, scales)
    assert kernel.plans_for(x, (roi, scales))[-1].repeats() is None
    np.testing.assert_array_equal(got, x[..., ::-1])


def test_bilinear_resize_of_float32_and_float64_images():
    node = helper.make_node("Resize", ["x", "", "s"], ["y"], mode="linear")
    scales = np.array([1, 1, 2, 2], np.float32)
    x = np.random.default_rng(17).standard_normal((1, 4, 14, 14))
    kernel = _kernel(node, opset=18)
    wide = kernel.run(x, None, scales)
    narrow = kernel.run(x.astype(np.float32), None, scales)
    assert wide.dtype == np.float64 and narrow.dtype == np.float32
    want = x
    for plan in kernel.plans_for(x, (None, scales)):
        want = plan.apply(want, 0.0)
    np.testing.assert_allclose(wide, want, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(narrow, want, rtol=1e-6, atol=1e-6)


def test_dense_products_by_ndarray_dot_are_matmul():
    rng = np.random.default_rng(18)
    w = rng.standard_normal((6, 5)).astype(np.float32)
    matmul = _kernel(helper.make_node("MatMul", ["x", "w"], ["y"]), consts=[None, w])
    gemm = _kernel(helper.make_node("Gemm", ["x", "w"], ["y"]), consts=[None, w])
    for shape in ((1, 6), (3, 6), (6,), (2, 3, 6), (2, 1, 3, 6)):
        x = rng.standard_normal(shape).astype(np.float32)
        got = matmul.run(x, w)
        assert got.shape == np.matmul(x, w).shape
        np.testing.assert_allclose(got, np.matmul(x, w), rtol=1e-6, atol=1e-6)
        if x.ndim == 2:
            np.testing.assert_allclose(gemm.run(x, w), x @ w, rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError):  # a 0-d operand is not a product (the plan names the node)
        matmul.run(np.ones((), np.float32), w)


@pytest.mark.parametrize("normalizer", ["Softmax", "LogSoftmax"])
def test_the_absorbed_normaliser_at_the_extremes_is_its_kernel(normalizer):
    """Rows whose exponentials overflow, underflow, or hold NaN and infinities: the shifted form, as the kernel;
    a single row of ordinary logits takes the unshifted Softmax. Within rounding of the kernel, NaN where it is."""
    eye = np.eye(4, dtype=np.float32)
    gemm = _kernel(helper.make_node("Gemm", ["x", "w"], ["y"]), consts=[None, eye])
    kernel = _kernel(helper.make_node(normalizer, ["x"], ["y"]))
    assert gemm.fuse_normalizer(kernel) and not gemm.fuse_activation("relu", {})
    rows = [[1.0, 2.0, 3.0, 4.0], [-300.0, -310.0, -200.0, -250.0], [90.0, 95.0, 80.0, -5.0],
            [-120.0, 0.5, -90.0, -1.0], [np.nan, 1.0, 2.0, 3.0], [np.inf, 1.0, 2.0, 3.0], [-0.2, -0.1, -0.4, -3.0]]
    for dtype in (np.float32, np.float64):
        for row in rows:
            x = np.array([row], dtype)
            with np.errstate(invalid="ignore", over="ignore"):
                want, got = kernel.run(x.copy()), gemm.run(x, eye)
            assert got.dtype == dtype and got.shape == (1, 4)
            np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-30 if normalizer == "Softmax" else 1e-5)
        x = np.array(rows[:4], dtype)  # several rows at once
        np.testing.assert_allclose(gemm.run(x, eye), kernel.run(x.copy()), rtol=1e-6, atol=1e-30)


def test_dense_layers_take_in_a_following_tanh_or_sigmoid_bit_for_bit():
    rng = np.random.default_rng(19)
    w, b = rng.standard_normal((6, 5)).astype(np.float32), rng.standard_normal(5).astype(np.float32)
    k = rng.standard_normal((2, 3, 3, 3)).astype(np.float32)
    nodes = [helper.make_node("Gemm", ["x", "w", "b"], ["g"]), helper.make_node("Tanh", ["g"], ["t"]),
             helper.make_node("Relu", ["t"], ["r"]),  # after the curve: a step of its own
             helper.make_node("MatMul", ["r", "w2"], ["m"]), helper.make_node("Add", ["m", "b2"], ["a"]),
             helper.make_node("Sigmoid", ["a"], ["y"])]
    model = nn_core.load_proto(make_model(nodes, [tensor_info("x", ["N", 6])], [tensor_info("y", None)],
                                          {"w": w, "b": b, "w2": w[:5] * 2, "b2": b}))
    assert model.plan_ops == ["Gemm+Tanh", "Relu", "MatMul+Add+Sigmoid"]
    for batch in (1, 4):
        x = (rng.standard_normal((batch, 6)) * 3).astype(np.float32)
        first = model.run({"x": x})["y"]
        kept = first.copy()
        model.run({"x": -x})
        np.testing.assert_array_equal(first, kept)
        np.testing.assert_array_equal(first, model.run_traced({"x": x})[0]["y"])
    conv = [helper.make_node("Conv", ["x", "k"], ["c"]), helper.make_node("Tanh", ["c"], ["y"])]
    model = nn_core.load_proto(make_model(conv, [tensor_info("x", [1, 3, 5, 5])], [tensor_info("y", None)], {"k": k}))
    assert model.plan_ops == ["Conv", "Tanh"]  # a convolution has no such epilogue


def test_a_residual_sum_takes_in_its_relu():
    rng = np.random.default_rng(20)
    nodes = [helper.make_node("Neg", ["x"], ["n"]), helper.make_node("Add", ["x", "n2"], ["s"]),
             helper.make_node("Relu", ["s"], ["y"]), helper.make_node("Mul", ["n", "n"], ["n2"])]
    nodes = [nodes[0], nodes[3], nodes[1], nodes[2]]
    model = nn_core.load_proto(make_model(nodes, [tensor_info("x", ["N", 3, 4])], [tensor_info("y", None)]))
    assert model.plan_ops == ["Neg", "Mul", "Add+Relu"]
    x = rng.standard_normal((2, 3, 4)).astype(np.float32)
    x[0, 0, 0] = np.nan
    first = model.run({"x": x})["y"]
    kept = first.copy()
    model.run({"x": -x})
    np.testing.assert_array_equal(first, kept)
    np.testing.assert_array_equal(first, model.run_traced({"x": x})[0]["y"])
    add = model._fast_plan().steps[-1].kernel
    with pytest.raises(nn_core.ModelError, match="fused activation"):
        add.backward([x, x], [first], [first])
    ints = add.run(np.array([[-3, 2]], np.int32), np.array([1], np.int32))
    assert ints.dtype == np.int32 and ints.tolist() == [[0, 3]]
    assert not _kernel(helper.make_node("Mul", ["a", "b"], ["y"])).fuse_activation("relu", {})
    assert _kernel(helper.make_node("Add", ["a", "b"], ["y"])).has_gradient()
    assert not _kernel(helper.make_node("Equal", ["a", "b"], ["y"])).has_gradient()


@pytest.mark.parametrize("shape, dtype", [((1, 8, 14, 14), np.float32), ((3, 5, 7), np.float64),
                                          ((2, 4, 3, 3), np.float16), ((1, 6, 9, 9), np.float32)])
def test_global_average_pool_takes_in_the_flatten_after_it(shape, dtype):
    from onnx import TensorProto

    elem = {np.float32: TensorProto.FLOAT, np.float64: TensorProto.DOUBLE, np.float16: TensorProto.FLOAT16}[dtype]
    nodes = [helper.make_node("GlobalAveragePool", ["x"], ["g"]), helper.make_node("Flatten", ["g"], ["y"])]
    model = nn_core.load_proto(make_model(nodes, [tensor_info("x", ["N", *shape[1:]], elem)],
                                          [tensor_info("y", None, elem)]))
    assert model.plan_ops == ["GlobalAveragePool+Flatten"]
    rng = np.random.default_rng(21)
    x = rng.standard_normal(shape).astype(dtype)
    if shape[-1] == 9:  # a strided view (channels-last storage)
        x = np.ascontiguousarray(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
    first = model.run({"x": x})["y"]
    kept = first.copy()
    model.run({"x": x + 1})
    np.testing.assert_array_equal(first, kept)
    want = x.mean(axis=tuple(range(2, x.ndim)), dtype=dtype).reshape(shape[0], -1)
    assert first.dtype == dtype and first.shape == (shape[0], shape[1])
    np.testing.assert_allclose(first, want, rtol={np.float16: 1e-3, np.float32: 1e-5, np.float64: 1e-12}[dtype],
                               atol=1e-6)
    kernel = model._fast_plan().steps[0].kernel
    with pytest.raises(nn_core.ModelError, match="fused Flatten"):
        kernel.backward([x], [first], [first])
    with pytest.raises(nn_core.ModelError):
        kernel.run(x.reshape(shape[0], -1))  # no spatial axis: refused as by the unfused kernel


def test_a_flatten_on_another_axis_or_a_read_pool_stays_apart():
    x = np.random.default_rng(22).standard_normal((2, 3, 4, 4)).astype(np.float32)
    for nodes, outputs in (([helper.make_node("GlobalAveragePool", ["x"], ["g"]),
                             helper.make_node("Flatten", ["g"], ["y"], axis=2)], ["y"]),
                           ([helper.make_node("GlobalAveragePool", ["x"], ["g"]),
                             helper.make_node("Flatten", ["g"], ["y"])], ["y", "g"])):
        model = nn_core.load_proto(make_model(nodes, [tensor_info("x", [2, 3, 4, 4])],
                                              [tensor_info(name, None) for name in outputs]))
        assert model.plan_ops == ["GlobalAveragePool", "Flatten"]
        out = model.run({"x": x})
        np.testing.assert_allclose(out["y"].reshape(-1), x.mean(axis=(2, 3)).reshape(-1), rtol=1e-6)


@pytest.mark.parametrize("activation", ["Tanh", "Sigmoid"])
def test_an_average_pool_takes_in_the_activation_before_it(activation):
    """A fused Tanh gives the two steps' values bit for bit; a fused Sigmoid (through tanh, see
    AveragePool._activated_runner) within float rounding."""
    rng = np.random.default_rng(23)
    k = rng.standard_normal((4, 1, 5, 5)).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "k"], ["c"]), helper.make_node(activation, ["c"], ["a"]),
             helper.make_node("AveragePool", ["a"], ["y"], kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1,
                              count_include_pad=1)]
    model = nn_core.load_proto(make_model(nodes, [tensor_info("x", ["N", 1, 28, 28])], [tensor_info("y", None)],
                                          {"k": k}, opset=19))
    assert model.plan_ops == ["Conv", f"{activation}+AveragePool"]
    for batch in (1, 2):
        x = (rng.standard_normal((batch, 1, 28, 28)) * 3).astype(np.float32)
        first = model.run({"x": x})["y"]
        kept = first.copy()
        model.run({"x": -x})
        np.testing.assert_array_equal(first, kept)
        traced = model.run_traced({"x": x})[0]["y"]
        if activation == "Tanh":
            np.testing.assert_array_equal(first, traced)
        else:
            np.testing.assert_allclose(first, traced, rtol=1e-6, atol=1e-7)
    pool = model._fast_plan().steps[-1].kernel
    with pytest.raises(nn_core.ModelError, match="fused activation"):
        pool.backward([x], [first], [first])
    # an activation that is read elsewhere too, or an output, stays a step of its own
    for outputs in (["y", "a"],):
        model = nn_core.load_proto(make_model(nodes, [tensor_info("x", ["N", 1, 28, 28])],
                                              [tensor_info(name, None) for name in outputs], {"k": k}, opset=19))
        assert model.plan_ops == ["Conv", activation, "AveragePool"]
