"""Integer kernels (quantized.py) and the com.microsoft quantized ops (contrib_ms.py) against onnxruntime on
random int8/uint8 data: bit-exact, through a loaded model (constant weights, the prepared fast paths) and
through the kernel alone (every input at run time)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

import nn_core
from nn_core.errors import ModelError
from nn_core.ops.testing import run_node

MS = "com.microsoft"
ELEM = {np.dtype(np.float32): 1, np.dtype(np.uint8): 2, np.dtype(np.int8): 3, np.dtype(np.int32): 6}


def model_of(node: onnx.NodeProto, x: np.ndarray, consts: list, opset: int = 13) -> onnx.ModelProto:
    """``node`` with input 0 fed at run time and the others as initializers."""
    inits = [numpy_helper.from_array(np.asarray(v), name) for name, v in zip(node.input[1:], consts) if name]
    graph = helper.make_graph([node], "t", [helper.make_tensor_value_info(node.input[0], ELEM[x.dtype], x.shape)],
                              [onnx.ValueInfoProto(name=o) for o in node.output], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset), helper.make_opsetid(MS, 1)])
    model.ir_version = 8
    return model


def ort_outputs(model: onnx.ModelProto, x: np.ndarray) -> list[np.ndarray]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run(None, {model.graph.input[0].name: x})


def check(node: onnx.NodeProto, x: np.ndarray, consts: list, opset: int = 13, tolerance: int = 0) -> np.ndarray:
    model = model_of(node, x, consts, opset)
    want = ort_outputs(model, x)
    ours = nn_core.Model(model)
    got = list(ours.run({node.input[0]: x}).values())
    dynamic = run_node(node, [x, *consts], opset)
    for expected, loaded, alone in zip(want, got, dynamic, strict=True):
        for have in (loaded, alone):
            assert have.dtype == expected.dtype and have.shape == expected.shape
            if tolerance:
                diff = np.abs(have.astype(np.int64) - expected.astype(np.int64))
                assert diff.max() <= tolerance
            else:
                np.testing.assert_array_equal(have, expected)
    return want[0]


rng = np.random.default_rng(7)


def u8(*shape):
    return rng.integers(0, 256, shape).astype(np.uint8)


def i8(*shape, low=-127):
    return rng.integers(low, 128, shape).astype(np.int8)


def f32(value):
    return np.array(value, np.float32)


@pytest.mark.parametrize("group,pads,strides", [(1, [0, 0, 0, 0], [1, 1]), (1, [2, 2, 2, 2], [1, 1]),
                                                 (2, [1, 0, 1, 0], [2, 1]), (4, [1, 1, 1, 1], [1, 1])])
def test_qlinear_conv_matches_onnxruntime(group, pads, strides):
    x = u8(3, 4, 11, 9)
    w = i8(8, 4 // group, 3, 3)
    w_scale = rng.uniform(0.001, 0.02, 8).astype(np.float32)
    bias = rng.integers(-5000, 5000, 8).astype(np.int32)
    node = helper.make_node("QLinearConv", ["x", "xs", "xz", "w", "ws", "wz", "ys", "yz", "b"], ["y"],
                            group=group, pads=pads, strides=strides)
    consts = [f32(0.05), np.uint8(121), w, w_scale, np.zeros(8, np.int8), f32(0.3), np.uint8(100), bias]
    y = check(node, x, consts)
    assert 0 < (y == 0).mean() + (y == 255).mean() < 0.9  # the saturation is exercised, not everything


def test_qlinear_conv_fused_with_maxpool_matches_onnxruntime():
    x = u8(5, 3, 12, 12)
    w = i8(6, 3, 5, 5)
    nodes = [helper.make_node("QLinearConv", ["x", "xs", "xz", "w", "ws", "wz", "ys", "yz"], ["c"], pads=[2] * 4),
             helper.make_node("MaxPool", ["c"], ["y"], kernel_shape=[2, 2], strides=[2, 2])]
    consts = {"xs": f32(0.02), "xz": np.uint8(3), "w": w, "ws": rng.uniform(0.01, 0.03, 6).astype(np.float32),
              "wz": np.zeros(6, np.int8), "ys": f32(0.5), "yz": np.uint8(0)}
    graph = helper.make_graph(nodes, "t", [helper.make_tensor_value_info("x", 2, x.shape)],
                              [onnx.ValueInfoProto(name="y")],
                              [numpy_helper.from_array(np.asarray(v), k) for k, v in consts.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    ours = nn_core.Model(model)
    assert ours.plan_ops == ["QLinearConv+MaxPool"]
    np.testing.assert_array_equal(ours.run({"x": x})["y"], ort_outputs(model, x)[0])


def test_conv_integer_matches_onnxruntime():
    x = u8(2, 3, 10, 10)
    node = helper.make_node("ConvInteger", ["x", "w", "xz", "wz"], ["y"], pads=[1, 1, 1, 1])
    check(node, x, [u8(4, 3, 3, 3), np.uint8(128), np.uint8(7)])


@pytest.mark.parametrize("k", [16, 700, 3000])
def test_qlinear_matmul_exact_for_any_k(k):
    # K * 255 * 127 passes 2**24 at K = 519: the sum is split so float32 stays exact
    a = u8(6, k)
    b = i8(k, 5, low=-128)
    node = helper.make_node("QLinearMatMul", ["a", "as", "az", "b", "bs", "bz", "ys", "yz"], ["y"])
    check(node, a, [f32(0.01), np.uint8(0), b, f32(0.02), np.int8(0), f32(0.01 * k / 4), np.uint8(128)])


def test_qlinear_matmul_extreme_values_stay_exact():
    a = np.full((2, 4000), 255, np.uint8)
    b = np.full((4000, 3), -128, np.int8)
    node = helper.make_node("MatMulInteger", ["a", "b", "az", "bz"], ["y"])
    y = check(node, a, [b, np.uint8(0), np.int8(0)])
    assert y[0, 0] == 4000 * 255 * -128


def test_matmul_integer_batched_matches_onnxruntime():
    node = helper.make_node("MatMulInteger", ["a", "b", "az", "bz"], ["y"])
    check(node, u8(2, 3, 40), [i8(40, 7), np.uint8(9), np.int8(0)])


def test_dynamic_quantize_linear_matches_onnxruntime():
    node = helper.make_node("DynamicQuantizeLinear", ["x"], ["y", "s", "z"])
    x = rng.normal(0.3, 2.0, (7, 33)).astype(np.float32)
    check(node, x, [])


@pytest.mark.parametrize("trans_b,float_out", [(0, False), (1, False), (1, True)])
def test_qgemm_matches_onnxruntime(trans_b, float_out):
    a = u8(9, 50)
    b = i8(*((6, 50) if trans_b else (50, 6)))
    c = rng.integers(-3000, 3000, 6).astype(np.int32)
    ins = ["a", "as", "az", "b", "bs", "bz", "c"] + ([] if float_out else ["ys", "yz"])
    node = helper.make_node("QGemm", ins, ["y"], domain=MS, transB=trans_b, alpha=1.0)
    consts = [f32(0.03), np.uint8(17), b, rng.uniform(0.005, 0.01, 6).astype(np.float32), np.zeros(6, np.int8), c]
    consts += [] if float_out else [f32(0.7), np.uint8(128)]
    check(node, a, consts)


def test_qlinear_add_and_mul_match_onnxruntime():
    a, b = u8(4, 33), u8(4, 33)
    for op in ("QLinearAdd", "QLinearMul"):
        node = helper.make_node(op, ["a", "as", "az", "b", "bs", "bz", "cs", "cz"], ["y"], domain=MS)
        check(node, a, [f32(0.02), np.uint8(100), b, f32(0.03), np.uint8(140), f32(0.05), np.uint8(128)],
              tolerance=1)


@pytest.mark.parametrize("op", ["QLinearLeakyRelu", "QLinearSigmoid"])
def test_lookup_table_activations_match_onnxruntime(op):
    for x, zp in ((u8(5, 40), np.uint8(128)), (i8(5, 40, low=-128), np.int8(3))):
        node = helper.make_node(op, ["x", "xs", "xz", "ys", "yz"], ["y"], domain=MS, **(
            {"alpha": 0.1} if op == "QLinearLeakyRelu" else {}))
        y_zp = np.zeros((), x.dtype)
        check(node, x, [f32(0.05), zp, f32(1 / 255 if op == "QLinearSigmoid" else 0.04), y_zp], tolerance=1)


def test_qlinear_concat_matches_onnxruntime():
    x1, x2 = u8(2, 3, 4), u8(2, 5, 4)
    node = helper.make_node("QLinearConcat", ["ys", "yz", "x1", "s1", "z1", "x2", "s2", "z2"], ["y"], domain=MS,
                            axis=1)
    inits = {"ys": f32(0.1), "yz": np.uint8(128), "s1": f32(0.1), "z1": np.uint8(128), "x2": x2, "s2": f32(0.07),
             "z2": np.uint8(120)}
    graph = helper.make_graph([node], "t", [helper.make_tensor_value_info("x1", 2, x1.shape)],
                              [onnx.ValueInfoProto(name="y")],
                              [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13), helper.make_opsetid(MS, 1)])
    m.ir_version = 8
    want = ort_outputs(m, x1)[0]
    np.testing.assert_array_equal(nn_core.Model(m).run({"x1": x1})["y"], want)


def test_qlinear_global_average_pool_matches_onnxruntime():
    node = helper.make_node("QLinearGlobalAveragePool", ["x", "xs", "xz", "ys", "yz"], ["y"], domain=MS,
                            channels_last=0)
    check(node, u8(2, 5, 7, 6), [f32(0.03), np.uint8(20), f32(0.02), np.uint8(10)], tolerance=1)


def test_qlinear_average_pool_matches_onnxruntime():
    node = helper.make_node("QLinearAveragePool", ["x", "xs", "xz", "ys", "yz"], ["y"], domain=MS,
                            kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], count_include_pad=0)
    check(node, u8(2, 3, 9, 8), [f32(0.03), np.uint8(20), f32(0.02), np.uint8(10)], tolerance=1)


@pytest.mark.parametrize("opset", [12, 13])
def test_qlinear_softmax_matches_onnxruntime(opset):
    node = helper.make_node("QLinearSoftmax", ["x", "xs", "xz", "ys", "yz"], ["y"], domain=MS, opset=opset,
                            axis=-1 if opset >= 13 else 1)
    check(node, u8(6, 10), [f32(0.1), np.uint8(128), f32(1 / 256), np.uint8(0)], tolerance=1)


def test_dynamic_quantize_matmul_and_matmul_integer_to_float_match_onnxruntime():
    a = rng.normal(0, 1, (5, 64)).astype(np.float32)
    b = i8(64, 12)
    b_scale = rng.uniform(0.01, 0.02, 12).astype(np.float32)
    bias = rng.normal(0, 1, 12).astype(np.float32)
    node = helper.make_node("DynamicQuantizeMatMul", ["a", "b", "bs", "bz", "bias"], ["y"], domain=MS)
    model = model_of(node, a, [b, b_scale, np.zeros(12, np.int8), bias])
    np.testing.assert_allclose(nn_core.Model(model).run({"a": a})["y"], ort_outputs(model, a)[0], rtol=1e-5,
                               atol=1e-5)
    node = helper.make_node("MatMulIntegerToFloat", ["a", "b", "as", "bs", "az", "bz", "bias"], ["y"], domain=MS)
    a8 = u8(5, 64)
    model = model_of(node, a8, [b, f32(0.02), b_scale, np.uint8(128), np.zeros(12, np.int8), bias])
    np.testing.assert_allclose(nn_core.Model(model).run({"a": a8})["y"], ort_outputs(model, a8)[0], rtol=1e-6,
                               atol=1e-6)


def test_contrib_ops_refuse_bad_attributes():
    node = helper.make_node("QGemm", ["a", "as", "az", "b", "bs", "bz"], ["y"], domain=MS, transB=2)
    with pytest.raises(ModelError, match="transB"):
        nn_core.Model(model_of(node, u8(2, 3), [f32(1), np.uint8(0), i8(3, 2), f32(1), np.int8(0)]))
    node = helper.make_node("QLinearSoftmax", ["x", "xs", "xz", "ys", "yz"], ["y"], domain=MS)
    with pytest.raises(ModelError, match="opset"):
        nn_core.Model(model_of(node, u8(2, 3), [f32(1), np.uint8(0), f32(1), np.uint8(0)]))
