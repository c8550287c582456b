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


def dynamic_chain(k: int, n: int, weight: np.ndarray, zero_point: np.ndarray | None, b_scale: np.ndarray,
                  bias: np.ndarray | None, relu: bool, scale_first: bool) -> onnx.ModelProto:
    """The chain quantize_dynamic writes: DynamicQuantizeLinear -> MatMulInteger -> Cast -> Mul(scale product)
    [-> Add(bias)] [-> Relu], the scale product's Mul placed before or after the MatMulInteger."""
    scale_mul = helper.make_node("Mul", ["xs", "bs"], ["s"])
    nodes = [helper.make_node("DynamicQuantizeLinear", ["x"], ["xq", "xs", "xz"])]
    nodes += [scale_mul] if scale_first else []
    nodes += [helper.make_node("MatMulInteger", ["xq", "w", "xz", "wz" if zero_point is not None else ""], ["acc"]),
              helper.make_node("Cast", ["acc"], ["accf"], to=onnx.TensorProto.FLOAT)]
    nodes += [] if scale_first else [scale_mul]
    nodes.append(helper.make_node("Mul", ["accf", "s"], ["y0" if bias is not None or relu else "y"]))
    if bias is not None:
        nodes.append(helper.make_node("Add", ["bias", "y0"], ["y1" if relu else "y"]))
    if relu:
        nodes.append(helper.make_node("Relu", ["y1" if bias is not None else "y0"], ["y"]))
    inits = [numpy_helper.from_array(weight, "w"), numpy_helper.from_array(b_scale, "bs")]
    inits += [] if zero_point is None else [numpy_helper.from_array(zero_point, "wz")]
    inits += [] if bias is None else [numpy_helper.from_array(bias, "bias")]
    graph = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("x", 1, ["batch", k])],
                              [helper.make_tensor_value_info("y", 1, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model


@pytest.mark.parametrize("case", range(6))
def test_dynamic_matmul_chain_is_fused_and_bit_exact_with_onnxruntime(case):
    """quantize_dynamic's chain runs as one DynamicQuantizeMatMul (+Relu) with exactly onnxruntime's values (its
    default session, which fuses the chain itself, and with graph optimizations off): uint8 and int8 weights,
    per-tensor and per-column scales and zero points, with and without a bias, a K long enough that the float32
    product must be split (case 5), batches of 1 and more than a row block."""
    import onnxruntime as ort

    k, n = (2000, 7) if case == 5 else (96, 24)
    dtype = np.uint8 if case % 2 == 0 else np.int8
    info = np.iinfo(dtype)
    weight = rng.integers(info.min, info.max + 1, (k, n)).astype(dtype)
    if case == 5:  # every weight at an extreme: the column sums reach k * 255
        weight = np.where(rng.random((k, n)) < 0.5, info.min, info.max).astype(dtype)
    zero_point = [None, np.array(3, np.int8), rng.integers(100, 150, n).astype(np.uint8),
                  rng.integers(-5, 5, n).astype(np.int8), np.array(128, np.uint8), None][case]
    b_scale = (rng.uniform(0.001, 0.01, n) if case in (1, 3, 5) else rng.uniform(0.001, 0.01, ())).astype(np.float32)
    bias = None if case == 2 else rng.normal(0, 1, n).astype(np.float32)
    model = dynamic_chain(k, n, weight, zero_point, b_scale, bias, relu=case in (0, 3, 4), scale_first=case % 2 == 1)
    ours = nn_core.Model(model)
    assert ours.plan_ops == ["DynamicQuantizeMatMul" + ("+Relu" if case in (0, 3, 4) else "")]
    sessions = []
    for level in (ort.GraphOptimizationLevel.ORT_ENABLE_ALL, ort.GraphOptimizationLevel.ORT_DISABLE_ALL):
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.graph_optimization_level = level
        sessions.append(ort.InferenceSession(model.SerializeToString(), options,
                                             providers=["CPUExecutionProvider"]))
    for rows, spread in ((1, 1.0), (3, 50.0), (300, 3.0), (700, 1e4)):
        x = (rng.normal(0.5, 1, (rows, k)) * spread).astype(np.float32)
        if case == 4:
            x = np.abs(x)  # zero point 0: the centred values reach 255
        got = ours.run({"x": x})["y"]
        for session in sessions:
            np.testing.assert_array_equal(got, session.run(None, {"x": x})[0])
    np.testing.assert_array_equal(ours.run({"x": np.zeros((2, k), np.float32)})["y"],
                                  sessions[1].run(None, {"x": np.zeros((2, k), np.float32)})[0])


def test_dynamic_matmul_chain_with_other_readers_is_left_alone():
    """A cast product read by a second node is not fused (its value must still exist); results unchanged."""
    model = dynamic_chain(16, 4, i8(16, 4), None, f32(0.01), None, relu=False, scale_first=True)
    model.graph.node.append(helper.make_node("Neg", ["accf"], ["z"]))
    model.graph.output.append(helper.make_tensor_value_info("z", 1, None))
    ours = nn_core.Model(model)
    assert "DynamicQuantizeMatMul" not in ours.plan_ops
    x = rng.normal(0, 1, (3, 16)).astype(np.float32)
    for got, want in zip(ours.run({"x": x}).values(), ort_outputs(model, x), strict=True):
        np.testing.assert_array_equal(got, want)


def test_contrib_ops_refuse_bad_attributes():
    node = helper.make_node("QGemm", ["a", "as", "az", "b", "bs", "bz"], ["y"], domain=MS, transB=2)
    with pytest.raises(ModelError, match="transB"):
        nn_core.Model(model_of(node, u8(2, 3), [f32(1), np.uint8(0), i8(3, 2), f32(1), np.int8(0)]))
    node = helper.make_node("QLinearSoftmax", ["x", "xs", "xz", "ys", "yz"], ["y"], domain=MS)
    with pytest.raises(ModelError, match="opset"):
        nn_core.Model(model_of(node, u8(2, 3), [f32(1), np.uint8(0), f32(1), np.uint8(0)]))
