"""Batch-1 int8 paths (issue 10): requantization in the accumulator's own memory order, row-major prepared
operands, a QOperator file's input quantization done by its first convolution. Each is held bit-exact against
the reference it replaces (a straightforward NumPy formula of the same float32 arithmetic, the operand as it was
laid out before, onnxruntime on the same file)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from nn_core.ops.quantized import PreparedB, _Requantizer

rng = np.random.default_rng(11)


def reference_codes(acc: np.ndarray, multiplier: np.ndarray, zero_point: int, dtype: type) -> np.ndarray:
    """onnxruntime's requantization spelled out: float32 product, round half to even, add the zero point,
    saturate."""
    info = np.iinfo(dtype)
    shaped = multiplier.reshape((1, -1) + (1,) * (acc.ndim - 2)) if multiplier.size > 1 else multiplier.reshape(())
    rounded = np.rint(acc.astype(np.float32) * shaped).astype(np.float64) + zero_point
    return np.clip(rounded, info.min, info.max).astype(dtype)


@pytest.mark.parametrize("dtype, zero_point", [(np.uint8, 0), (np.uint8, 131), (np.int8, 0), (np.int8, -7)])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "gaps"])
def test_requantizer_gives_the_codes_in_every_layout(dtype, zero_point, layout):
    """Contiguous sums, a transposed (channels-last) buffer and a view with gaps (the valid part of padded rows)
    give the same codes, ties rounded to even, saturated at both ends; the result keeps the sums' layout, not a
    C-order copy written through strides."""
    channels, height, width = 5, 7, 9
    sums = np.concatenate([np.arange(-600, 600), rng.integers(-40000, 40000, 1500)])
    sums = rng.permutation(np.resize(sums, channels * height * width)).astype(np.float32)
    sums = sums.reshape(1, channels, height, width)
    multiplier = np.array([0.5, 0.25, 0.0371, 1.0, 0.003], np.float32)
    want = reference_codes(sums, multiplier, zero_point, dtype)
    if layout == "channels_last":
        acc = np.ascontiguousarray(sums.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
    elif layout == "gaps":
        padded = np.zeros((1, channels, height, width + 2), np.float32)
        padded[..., :width] = sums
        acc = padded[..., :width]
    else:
        acc = sums.copy()
    got = _Requantizer(multiplier, np.array(zero_point, dtype), dtype, 1, 4)(acc)
    assert got.dtype == dtype
    np.testing.assert_array_equal(got, want)
    if layout == "channels_last":
        assert got.transpose(0, 2, 3, 1).flags.c_contiguous


def test_requantizer_takes_float64_sums():
    sums = rng.integers(-2 ** 30, 2 ** 30, (3, 40)).astype(np.float64)
    multiplier = np.float32(1e-7)
    got = _Requantizer(np.array(multiplier), np.array(3, np.uint8), np.uint8, -1, 2)(sums.copy())
    np.testing.assert_array_equal(got, reference_codes(sums.astype(np.float32), np.array(multiplier), 3, np.uint8))


def test_prepared_operand_is_row_major_and_gives_the_same_products():
    """A transposed constant (QGemm's transB) is stored row-major; the exact products are those of the operand
    as given, also on the sliced (K split) path."""
    b = rng.integers(-128, 128, (48, 600)).astype(np.int8)
    zero_point = rng.integers(-3, 3, 48).astype(np.int8)
    prepared = PreparedB(b.T, zero_point)
    assert prepared.centred.flags.c_contiguous
    centred = b.T.astype(np.float64) - zero_point.astype(np.float64)
    a = rng.integers(-255, 256, (2, 600)).astype(np.float32)
    np.testing.assert_array_equal(prepared.product(a, 255.0), a.astype(np.float64) @ centred)
    big = rng.integers(-2 ** 20, 2 ** 20, (2, 600)).astype(np.float32)  # past float32's exact range: sliced
    np.testing.assert_array_equal(prepared.product(big, float(2 ** 20)), big.astype(np.float64) @ centred)


@pytest.mark.parametrize("dtype, zero_point", [(np.uint8, 128), (np.int8, -3), (np.uint8, 0)])
@pytest.mark.parametrize("variant", ["fused", "other_scale", "read_elsewhere", "scale_fed"])
def test_qoperator_input_quantization_done_by_the_first_qlinear_conv(dtype, zero_point, variant):
    """A QOperator file's QuantizeLinear -> QLinearConv (``nn_core quantize --format qoperator`` writes it) runs
    as one kernel quantizing x on entry, with onnxruntime's values (saturation included); a QuantizeLinear with
    another scale, whose codes something else reads too, or whose scale (the same value as the convolution's)
    is fed at run time, stays a step of its own."""
    import onnxruntime as ort
    from test_quant_fusions import qdq_conv

    import nn_core
    from nn_core.quantize import to_integer_ops

    model = to_integer_ops(qdq_conv(dtype, zero_point, q_read_elsewhere=variant == "read_elsewhere"))
    assert [n.op_type for n in model.graph.node][:2] == ["QuantizeLinear", "QLinearConv"]
    if variant == "other_scale":  # the convolution's own x_scale differs from the QuantizeLinear's
        conv = next(n for n in model.graph.node if n.op_type == "QLinearConv")
        model.graph.initializer.append(onnx.numpy_helper.from_array(np.array(0.031, np.float32), "other_xs"))
        conv.input[1] = "other_xs"
    feeds = {}
    if variant == "scale_fed":  # one value, named alike by both nodes
        next(n for n in model.graph.node if n.op_type == "QLinearConv").input[1] = "xs"
        scale = next(t for t in model.graph.initializer if t.name == "xs")
        model.graph.initializer.remove(scale)
        model.graph.input.append(onnx.helper.make_tensor_value_info("xs", onnx.TensorProto.FLOAT, []))
        feeds["xs"] = onnx.numpy_helper.to_array(scale)
    ours = nn_core.Model(model)
    assert ("QuantizeLinear" in ours.plan_ops) == (variant != "fused")
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    for rows, spread in ((1, 1.0), (3, 10.0), (70, 3.0)):  # 10.0: many inputs saturate
        x = (rng.normal(0, 1, (rows, 2, 9, 9)) * spread).astype(np.float32)
        for have, want in zip(ours.run({"x": x, **feeds}).values(), session.run(None, {"x": x, **feeds}),
                              strict=True):
            np.testing.assert_array_equal(have, want)


@pytest.mark.parametrize("dtype, zero_point", [(np.uint8, 0), (np.uint8, 200), (np.int8, -5), (np.int8, 0)])
def test_quantize_linear_lean_path_in_every_layout(dtype, zero_point):
    """QuantizeLinear with load-time per-tensor parameters: onnxruntime's codes (divide, round half to even, add
    the zero point, saturate) for contiguous and channels-last inputs, the latter's layout kept."""
    from nn_core.ops.quantized import QuantizeLinear
    from nn_core.ops.registry import NodeSpec

    scale, zp = np.array(0.05, np.float32), np.array(zero_point, dtype)
    kernel = QuantizeLinear(NodeSpec(op_type="QuantizeLinear", name="q", inputs=["x", "s", "z"], outputs=["y"],
                                     attrs={}, opset=13, consts=[None, scale, zp]))
    x = (rng.standard_normal((1, 7, 5, 6)) * 8).astype(np.float32)
    x.flat[:40] = (np.arange(40) - 20) * np.float32(0.025)  # halves of the step: ties
    info = np.iinfo(dtype)
    want = np.clip(np.rint(x / scale).astype(np.float64) + zero_point, info.min, info.max).astype(dtype)
    laid = np.ascontiguousarray(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
    for value in (x, laid):
        got = kernel.run(value, scale, zp)
        assert got.dtype == dtype
        np.testing.assert_array_equal(got, want)
    assert kernel.run(laid, scale, zp).transpose(0, 2, 3, 1).flags.c_contiguous


def test_dynamic_quantize_linear_matches_onnxruntime_in_every_layout():
    import onnxruntime as ort
    from onnx import helper

    from nn_core.ops.quantized import DynamicQuantizeLinear
    from nn_core.ops.registry import NodeSpec

    graph = helper.make_graph([helper.make_node("DynamicQuantizeLinear", ["x"], ["y", "s", "z"])], "dql",
                              [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, None)],
                              [helper.make_tensor_value_info(n, t, None) for n, t in (
                                  ("y", onnx.TensorProto.UINT8), ("s", onnx.TensorProto.FLOAT),
                                  ("z", onnx.TensorProto.UINT8))])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    kernel = DynamicQuantizeLinear(NodeSpec(op_type="DynamicQuantizeLinear", name="d", inputs=["x"],
                                            outputs=["y", "s", "z"], attrs={}, opset=13, consts=[None]))
    for shift in (0.0, 2.0, -3.0):  # zero point inside, at 0, at 255
        x = (rng.standard_normal((1, 6, 5, 4)) + shift).astype(np.float32)
        laid = np.ascontiguousarray(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
        want = session.run(None, {"x": x})
        for value in (x, laid):
            for have, expected in zip(kernel.run(value), want, strict=True):
                np.testing.assert_array_equal(have, expected)
