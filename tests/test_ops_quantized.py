"""Quantized kernels (nn_core/ops/quantized.py) against hand-worked NumPy expectations, onnxruntime on random
data, and ONNX's node conformance cases."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import ort_run, tensor_info
from onnx import helper
from onnx_node_cases import cases_for, check_case_with_kernels
from test_ops_shape import ELEM, check_case_dtypes, one_node_model

from nn_core.errors import ModelError
from nn_core.ops.testing import run_node

ELEM = {**ELEM, np.dtype(np.float64): 11}


def ort_outputs(node, inputs: list, opset: int) -> list[np.ndarray]:
    feeds = {name: value for name, value in zip(node.input, inputs, strict=True) if name}
    graph_inputs = [tensor_info(name, list(v.shape), ELEM[v.dtype]) for name, v in feeds.items()]
    return ort_run(one_node_model(node, graph_inputs, opset), feeds)


def f32(*values) -> np.ndarray:
    return np.array(values, dtype=np.float32)


# ---------------------------------------------------------------- QuantizeLinear / DequantizeLinear


def test_quantize_rounds_half_to_even_and_saturates():
    node = helper.make_node("QuantizeLinear", ["x", "s", "z"], ["y"])
    x = f32(0.5, 1.5, 2.5, -0.5, -1.5, 300.0, -300.0, 3.49)
    (y,) = run_node(node, [x, np.array(1.0, np.float32), np.array(0, np.int8)], 13)
    assert y.dtype == np.int8
    assert y.tolist() == [0, 2, 2, 0, -2, 127, -128, 3]
    (u,) = run_node(node, [x, np.array(1.0, np.float32), np.array(10, np.uint8)], 13)
    assert u.dtype == np.uint8
    assert u.tolist() == [10, 12, 12, 10, 8, 255, 0, 13]


def test_quantize_without_zero_point_gives_uint8():
    node = helper.make_node("QuantizeLinear", ["x", "s"], ["y"])
    (y,) = run_node(node, [f32(-1.0, 0.26, 100.0), np.array(0.5, np.float32)], 13)
    assert y.dtype == np.uint8 and y.tolist() == [0, 1, 200]


def test_quantize_accepts_an_int32_zero_point():
    node = helper.make_node("QuantizeLinear", ["x", "s", "z"], ["y"])
    (y,) = run_node(node, [f32(1.0, -1e12), np.array(0.001, np.float32), np.array(5, np.int32)], 13)
    assert y.dtype == np.int32 and y.tolist() == [1005, np.iinfo(np.int32).min]


@pytest.mark.parametrize("dtype", [np.uint8, np.int8])
def test_quantize_per_axis_matches_onnxruntime(dtype):
    rng = np.random.default_rng(1)
    x = (rng.standard_normal((2, 3, 4)) * 5).astype(np.float32)
    scale = f32(0.1, 0.05, 0.2)
    zero = np.array([0, 3, -2] if dtype == np.int8 else [128, 120, 3], dtype)
    node = helper.make_node("QuantizeLinear", ["x", "s", "z"], ["y"], axis=1)
    want = ort_outputs(node, [x, scale, zero], 13)
    got = run_node(node, [x, scale, zero], 13)
    np.testing.assert_array_equal(got[0], want[0])
    assert got[0].dtype == want[0].dtype


def test_dequantize_per_axis_matches_onnxruntime():
    rng = np.random.default_rng(2)
    x = rng.integers(-128, 128, size=(3, 4, 2)).astype(np.int8)
    scale, zero = f32(0.5, 0.25, 2.0, 0.125), np.array([1, -3, 0, 7], np.int8)
    node = helper.make_node("DequantizeLinear", ["x", "s", "z"], ["y"], axis=-2)
    (want,) = ort_outputs(node, [x, scale, zero], 13)
    (got,) = run_node(node, [x, scale, zero], 13)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, want)


def test_opset_10_honours_a_per_axis_scale_anyway():
    # onnxruntime rejects a 1-D scale before opset 13, but its meaning (one scale per channel of axis 1) is clear
    x = np.array([[10, 10], [10, 10]], np.uint8)
    node = helper.make_node("DequantizeLinear", ["x", "s", "z"], ["y"])
    (y,) = run_node(node, [x, f32(1.0, 0.5), np.array([0, 2], np.uint8)], 10)
    np.testing.assert_array_equal(y, f32(10, 4, 10, 4).reshape(2, 2))


def test_mismatched_per_axis_scale_is_a_model_error():
    node = helper.make_node("DequantizeLinear", ["x", "s"], ["y"], name="dq", axis=0)
    with pytest.raises(ModelError, match="dq"):
        run_node(node, [np.zeros((3, 2), np.uint8), f32(1.0, 2.0)], 13)


def test_dynamic_quantize_matches_onnxruntime():
    rng = np.random.default_rng(3)
    node = helper.make_node("DynamicQuantizeLinear", ["x"], ["y", "s", "z"])
    for x in [rng.standard_normal((4, 5)).astype(np.float32) * 3, rng.uniform(0.5, 2, (6,)).astype(np.float32),
              -rng.uniform(0.5, 2, (6,)).astype(np.float32), np.zeros((3,), np.float32)]:
        want = ort_outputs(node, [x], 11)
        got = run_node(node, [x], 11)
        for have, expected in zip(got, want, strict=True):
            assert have.dtype == expected.dtype and have.shape == expected.shape
            np.testing.assert_array_equal(have, expected)


# ---------------------------------------------------------------- integer convolution and matmul


def quantized(rng, shape, dtype) -> np.ndarray:
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max + 1, size=shape).astype(dtype)


CONV_SETTINGS = [
    dict(),
    dict(pads=[1, 2, 0, 1], strides=[2, 1]),
    dict(dilations=[2, 2], pads=[2, 2, 2, 2]),
    dict(group=2, strides=[1, 2]),
    dict(auto_pad="SAME_UPPER", strides=[2, 2]),
    dict(auto_pad="SAME_LOWER"),
]


@pytest.mark.parametrize("settings", CONV_SETTINGS)
@pytest.mark.parametrize("x_type, per_channel", [(np.uint8, False), (np.int8, True), (np.uint8, True)])
def test_qlinearconv_matches_onnxruntime(settings, x_type, per_channel):
    rng = np.random.default_rng(len(str(settings)))
    group = settings.get("group", 1)
    x = quantized(rng, (2, 4, 7, 6), x_type)
    w = quantized(rng, (6, 4 // group, 3, 3), np.int8)
    w_scale = rng.uniform(0.001, 0.01, 6 if per_channel else ()).astype(np.float32)
    w_zero = np.zeros(6 if per_channel else (), np.int8)  # onnxruntime requires symmetric int8 weights
    inputs = [x, np.array(0.02, np.float32), np.array(7, x_type), w, w_scale, w_zero,
              np.array(0.3, np.float32), np.array(3, x_type), rng.integers(-2000, 2000, 6).astype(np.int32)]
    node = helper.make_node("QLinearConv", ["x", "xs", "xz", "w", "ws", "wz", "ys", "yz", "b"], ["y"], **settings)
    (want,) = ort_outputs(node, inputs, 13)
    for constants in [(), (3, 4, 5)]:
        (got,) = run_node(node, inputs, 13, constant_inputs=constants)
        assert got.dtype == want.dtype and got.shape == want.shape
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("settings", CONV_SETTINGS[:4])
def test_convinteger_matches_onnxruntime(settings):
    rng = np.random.default_rng(5)
    group = settings.get("group", 1)
    x = quantized(rng, (1, 4, 6, 5), np.uint8)
    w = quantized(rng, (4, 4 // group, 2, 3), np.uint8)
    node = helper.make_node("ConvInteger", ["x", "w", "xz", "wz"], ["y"], **settings)
    inputs = [x, w, np.array(100, np.uint8), np.array(3, np.uint8)]
    (want,) = ort_outputs(node, inputs, 13)
    (got,) = run_node(node, inputs, 13)
    assert got.dtype == np.int32
    np.testing.assert_array_equal(got, want)


def test_convinteger_stays_exact_beyond_float32_integer_range():
    # 288 products near 255 * 255 sum past 2**24, where float32 can no longer hold every integer
    rng = np.random.default_rng(8)
    x = rng.integers(250, 256, size=(1, 32, 3, 3)).astype(np.uint8)
    w = rng.integers(250, 256, size=(2, 32, 3, 3)).astype(np.uint8)
    node = helper.make_node("ConvInteger", ["x", "w"], ["y"])
    (y,) = run_node(node, [x, w], 13, constant_inputs=[1])
    want = np.einsum("nchw,mchw->nm", x.astype(np.int64), w.astype(np.int64)).reshape(1, 2, 1, 1)
    assert want.max() > 2**24 and (want % 2).any()
    np.testing.assert_array_equal(y, want)


def test_qlinearconv_zero_point_padding_is_neutral():
    # padding with the input zero point must contribute nothing: a 1x1 input padded to 3x3, 3x3 kernel of ones
    x = np.array([[[[200]]]], np.uint8)
    w = np.ones((1, 1, 3, 3), np.int8)
    inputs = [x, f32(1.0), np.array(100, np.uint8), w, f32(1.0), np.array(0, np.int8), f32(1.0),
              np.array(0, np.uint8)]
    node = helper.make_node("QLinearConv", ["x", "xs", "xz", "w", "ws", "wz", "ys", "yz"], ["y"], pads=[1, 1, 1, 1])
    (y,) = run_node(node, inputs, 13)
    assert y.tolist() == [[[[100]]]]


@pytest.mark.parametrize("a_type, b_type", [(np.uint8, np.uint8), (np.int8, np.int8), (np.uint8, np.int8)])
def test_qlinearmatmul_and_matmulinteger_match_onnxruntime(a_type, b_type):
    rng = np.random.default_rng(6)
    a, b = quantized(rng, (2, 3, 5), a_type), quantized(rng, (5, 4), b_type)
    a_zero, b_zero = np.array(4, a_type), np.array(2, b_type)
    node = helper.make_node("MatMulInteger", ["a", "b", "az", "bz"], ["y"])
    (want,) = ort_outputs(node, [a, b, a_zero, b_zero], 13)
    np.testing.assert_array_equal(run_node(node, [a, b, a_zero, b_zero], 13)[0], want)
    if a_type != b_type:
        return  # onnxruntime's QLinearMatMul wants matching types
    y_zero = np.array(1, a_type)
    inputs = [a, f32(0.05), a_zero, b, f32(0.02), b_zero, f32(0.7), y_zero]
    node = helper.make_node("QLinearMatMul", ["a", "as", "az", "b", "bs", "bz", "ys", "yz"], ["y"])
    (want,) = ort_outputs(node, inputs, 13)
    (got,) = run_node(node, inputs, 13)
    assert got.dtype == want.dtype
    np.testing.assert_array_equal(got, want)


# ---------------------------------------------------------------- ONNX node conformance

QUANTIZED_OPS = {"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "QLinearConv", "QLinearMatMul",
                 "ConvInteger", "MatMulInteger"}

# every selected case passes; float8/int4 cases are not selected (not plain numeric types)
KNOWN_FAILURES: dict[str, str] = {}

CASES = [c for c in cases_for(QUANTIZED_OPS, 10**6) if len(c.model.graph.node) == 1]


def test_conformance_selection_is_substantial():
    assert len(CASES) >= 25


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_node_conformance(case):
    if case.name in KNOWN_FAILURES:
        pytest.xfail(KNOWN_FAILURES[case.name])
    check_case_with_kernels(case)
    check_case_dtypes(case)
