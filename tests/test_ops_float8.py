"""nn_core.ops.float8 converts bit-exactly as ONNX specifies (checked against onnx's own helpers)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from nn_core.ops import float8


def _dtype(name: str) -> np.dtype:
    return np.dtype(helper.tensor_dtype_to_np_dtype(getattr(onnx.TensorProto, name)))


VALUES = np.concatenate([np.random.default_rng(0).standard_normal(5000).astype(np.float32) * scale
                         for scale in (1e-5, 1e-2, 1, 30, 500, 1e4, 1e6)]
                        + [np.array([0, -0.0, np.inf, -np.inf, np.nan, 448, 449, 464, 465, 240, 57344, 61440],
                                    np.float32)])


@pytest.mark.parametrize("name", ["FLOAT8E4M3FN", "FLOAT8E4M3FNUZ", "FLOAT8E5M2", "FLOAT8E5M2FNUZ"])
@pytest.mark.parametrize("saturate", [True, False])
def test_float8_round_trip_matches_onnx(name, saturate):
    dtype = _dtype(name)
    ours = float8.from_float(VALUES, dtype, saturate)
    reference = numpy_helper.saturate_cast(VALUES, dtype) if saturate else VALUES.astype(dtype)
    assert ours.dtype == dtype
    np.testing.assert_array_equal(float8.to_float32(ours), reference.astype(np.float32))
    codes = np.arange(256, dtype=np.uint8).view(dtype)
    np.testing.assert_array_equal(float8.to_float32(codes), codes.astype(np.float32))


def test_bfloat16_rounds_to_nearest_even():
    dtype = _dtype("BFLOAT16")
    ours = float8.from_float(VALUES, dtype)
    assert np.array_equal(ours.view(np.uint16)[~np.isnan(VALUES)],
                          VALUES.astype(dtype).view(np.uint16)[~np.isnan(VALUES)])
    assert np.isnan(float8.to_float32(ours)[np.isnan(VALUES)]).all()
    assert float8.to_float32(float8.from_float(np.float32(1.0), dtype)).shape == ()


@pytest.mark.parametrize("mode", ["up", "down", "nearest"])
@pytest.mark.parametrize("saturate", [True, False])
def test_e8m0_matches_onnx(mode, saturate):
    ours = float8.from_float(VALUES, _dtype("FLOAT8E8M0"), saturate, mode)
    want = numpy_helper.to_float8e8m0(VALUES, saturate, mode)
    assert np.array_equal(ours.view(np.uint8), want.view(np.uint8))


def test_float4e2m1_matches_ml_dtypes():
    dtype = _dtype("FLOAT4E2M1")
    steps = np.arange(-80, 81, dtype=np.float32) / 8  # every tie and its neighbours
    values = np.concatenate([VALUES, steps, np.nextafter(steps, np.float32(9)), np.nextafter(steps, np.float32(-9)),
                             np.array([np.nan, -np.nan, 1e-45, -1e-45, 5, -5, 7, -7], np.float32)])
    ours = float8.from_float(values, dtype)
    assert ours.dtype == dtype
    assert np.array_equal(ours.view(np.uint8), values.astype(dtype).view(np.uint8))
    codes = np.arange(16, dtype=np.uint8).view(dtype)
    np.testing.assert_array_equal(float8.to_float32(codes), codes.astype(np.float32))
    assert float8.to_float32(float8.from_float(np.float32(100), dtype)) == 6  # saturates


@pytest.mark.parametrize("name", ["FLOAT8E4M3FN", "FLOAT8E5M2", "FLOAT4E2M1", "INT4", "UINT4"])
def test_quantize_dequantize_narrow_types(name):
    """QuantizeLinear to the float8 / 4-bit types and back, against onnx's reference implementation."""
    from onnx.reference import ReferenceEvaluator

    import nn_core

    elem = getattr(onnx.TensorProto, name)
    x = np.array([[0.0, 0.3, -1.7, 2.5], [100.0, -100.0, 0.74, 1.26], [3.3, -0.5, 7.0, 448.0]], np.float32)
    scale = np.array([0.5, 1.0, 2.0], np.float32)
    zero_point = numpy_helper.from_array(np.zeros(3, _dtype(name)), "zp")
    if name in ("INT4", "UINT4"):
        zero_point = helper.make_tensor("zp", elem, [3], [1, 2, 3])
    graph = helper.make_graph(
        [helper.make_node("QuantizeLinear", ["x", "scale", "zp"], ["q"], axis=0),
         helper.make_node("DequantizeLinear", ["q", "scale16", "zp"], ["y"], axis=0)],
        "g", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [3, 4])],
        [helper.make_tensor_value_info("q", elem, [3, 4]),
         helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT16, [3, 4])],
        [numpy_helper.from_array(scale, "scale"), numpy_helper.from_array(scale.astype(np.float16), "scale16"),
         zero_point])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    want_q, want_y = ReferenceEvaluator(model).run(None, {"x": x})
    got = nn_core.load_proto(model, name).run({"x": x})
    assert got["q"].dtype == want_q.dtype and np.array_equal(got["q"].view(np.uint8), want_q.view(np.uint8))
    assert got["y"].dtype == np.float16
    np.testing.assert_array_equal(got["y"], want_y)


@pytest.mark.parametrize("op", ["MatMul", "Celu", "Elu"])
def test_bfloat16_kernels_compute_in_float32_and_round_back(op):
    import nn_core

    bf16 = _dtype("BFLOAT16")
    rng = np.random.default_rng(1)
    a = rng.standard_normal((2, 3, 16)).astype(np.float32).astype(bf16)
    b = rng.standard_normal((16, 5)).astype(np.float32).astype(bf16)
    inputs = ["a", "b"] if op == "MatMul" else ["a"]
    graph = helper.make_graph(
        [helper.make_node(op, inputs, ["y"])], "g",
        [helper.make_tensor_value_info("a", onnx.TensorProto.BFLOAT16, list(a.shape))],
        [helper.make_tensor_value_info("y", onnx.TensorProto.BFLOAT16, None)],
        [numpy_helper.from_array(b, "b")] if op == "MatMul" else [])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 22)])
    y = nn_core.load_proto(model, op).run({"a": a})["y"]
    a32 = float8.to_float32(a)
    want = {"MatMul": lambda: a32 @ float8.to_float32(b),
            "Celu": lambda: np.maximum(a32, 0) + np.minimum(0, np.expm1(a32)),
            "Elu": lambda: np.where(a32 > 0, a32, np.expm1(np.minimum(a32, 0)))}[op]()
    assert y.dtype == bf16
    assert np.array_equal(y.view(np.uint16), float8.from_float(want.astype(np.float32), bf16).view(np.uint16))
