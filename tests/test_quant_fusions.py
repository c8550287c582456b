"""The fast plan's rewrites of dynamically quantized chains, held bit-exact against onnxruntime running the same
file (its default session, which fuses some chains itself, and with graph optimizations off, node by node)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

import nn_core

rng = np.random.default_rng(11)


def ort_sessions(model: onnx.ModelProto) -> list:
    import onnxruntime as ort

    sessions = []
    for level in (ort.GraphOptimizationLevel.ORT_ENABLE_ALL, ort.GraphOptimizationLevel.ORT_DISABLE_ALL):
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.graph_optimization_level = level
        sessions.append(ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"]))
    return sessions


def conv_chain(weight: np.ndarray, zero_point: np.ndarray | None, w_scale: np.ndarray, bias: np.ndarray | None,
               *, relu: bool, pool: bool, scale_first: bool, bias_reshaped: bool = False,
               attrs: dict | None = None, channels: int = 1) -> onnx.ModelProto:
    """quantize_dynamic's Conv: DynamicQuantizeLinear -> ConvInteger -> Cast -> Mul(x_scale * w_scale)
    [-> Add(bias)] [-> Relu] [-> MaxPool 2x2]; the bias given as a constant of shape (M, 1, 1) or, as
    onnxruntime's quantizer writes it, a Reshape of the (M,) vector placed first."""
    nodes = [helper.make_node("DynamicQuantizeLinear", ["x"], ["xq", "xs", "xz"])]
    inits = [numpy_helper.from_array(weight, "w"), numpy_helper.from_array(w_scale, "ws")]
    if bias is not None and bias_reshaped:
        nodes.insert(0, helper.make_node("Reshape", ["bias_flat", "bias_shape"], ["bias"]))
        inits += [numpy_helper.from_array(bias.reshape(-1), "bias_flat"),
                  numpy_helper.from_array(np.array([1, -1, 1, 1], np.int64), "bias_shape")]
    elif bias is not None:
        inits.append(numpy_helper.from_array(bias, "bias"))
    scale_mul = helper.make_node("Mul", ["xs", "ws"], ["s"])
    nodes += [scale_mul] if scale_first else []
    nodes += [helper.make_node("ConvInteger", ["xq", "w", "xz", "wz" if zero_point is not None else ""], ["acc"],
                               **(attrs or {})),
              helper.make_node("Cast", ["acc"], ["accf"], to=onnx.TensorProto.FLOAT)]
    nodes += [] if scale_first else [scale_mul]
    last = "y0"
    nodes.append(helper.make_node("Mul", ["accf", "s"], [last]))
    if zero_point is not None:
        inits.append(numpy_helper.from_array(zero_point, "wz"))
    for op, more in (("Add", ["bias"] if bias is not None else None), ("Relu", [] if relu else None),
                     ("MaxPool", [] if pool else None)):
        if more is None:
            continue
        extra = {"kernel_shape": [2, 2], "strides": [2, 2]} if op == "MaxPool" else {}
        nodes.append(helper.make_node(op, [last, *more], [last + op], **extra))
        last += op
    nodes.append(helper.make_node("Identity", [last], ["y"]))
    graph = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("x", 1, ["batch", channels, 12, 12])],
                              [helper.make_tensor_value_info("y", 1, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model


@pytest.mark.parametrize("case", range(6))
def test_dynamic_conv_chain_is_one_kernel_and_bit_exact_with_onnxruntime(case):
    """The ConvInteger chain runs as one DynamicQuantizeConv (+Relu, +MaxPool: pooled on the exact integer sums
    before the positive scale and the bias) with onnxruntime's values: uint8 and int8 weights, per-tensor and
    per-channel scales, a bias constant or reshaped by a node, padding, strides, groups, batches of 1 and more."""
    channels, out = (4, 6) if case == 3 else (3, 8)
    dtype = np.int8 if case in (1, 4) else np.uint8
    info = np.iinfo(dtype)
    weight = rng.integers(info.min, info.max + 1, (out, channels // (2 if case == 3 else 1), 3, 3)).astype(dtype)
    zero_point = [np.array(131, np.uint8), np.array(0, np.int8), None, np.array(7, np.uint8),
                  np.array(-3, np.int8), np.array(128, np.uint8)][case]
    w_scale = (rng.uniform(0.001, 0.01, (out, 1, 1)) if case in (1, 2) else rng.uniform(0.001, 0.01, ())
               ).astype(np.float32)
    bias = None if case == 4 else rng.normal(0, 1, (out, 1, 1)).astype(np.float32)
    pads = {"pads": [1, 1, 1, 1]}
    attrs = [pads, {}, {**pads, "strides": [2, 2]}, {**pads, "group": 2}, pads, {**pads, "kernel_shape": [3, 3]}]
    attrs = attrs[case]
    pool = case in (0, 3, 5)
    relu = case != 2
    model = conv_chain(weight, zero_point, w_scale, bias, relu=relu, pool=pool, scale_first=case % 2 == 0,
                       bias_reshaped=case in (0, 5), attrs=attrs, channels=channels)
    ours = nn_core.Model(model)
    label = "DynamicQuantizeConv" + ("+Relu" if relu else "") + ("+MaxPool" if pool else "")
    assert label in ours.plan_ops and not {"ConvInteger", "Cast", "DynamicQuantizeLinear"} & set(ours.plan_ops)
    sessions = ort_sessions(model)
    for rows, spread, shift in ((1, 1.0, 0.0), (3, 50.0, 0.5), (40, 3.0, -2.0), (2, 1e4, 0.0)):
        x = (rng.normal(shift, 1, (rows, channels, 12, 12)) * spread).astype(np.float32)
        got = ours.run({"x": x})["y"]
        for session in sessions:
            np.testing.assert_array_equal(got, session.run(None, {"x": x})[0])
    zeros = np.zeros((2, channels, 12, 12), np.float32)
    np.testing.assert_array_equal(ours.run({"x": zeros})["y"], sessions[1].run(None, {"x": zeros})[0])


def test_dynamic_conv_chain_general_path_is_the_chain_as_written():
    """A weight scale the lean path cannot take (negative: pooling first would then pick the wrong value) still
    fuses, runs the chain node by node inside the kernel, and leaves the MaxPool to itself."""
    weight = rng.integers(0, 256, (5, 2, 3, 3)).astype(np.uint8)
    w_scale = np.array(-0.004, np.float32)
    model = conv_chain(weight, np.array(120, np.uint8), w_scale, rng.normal(0, 1, (5, 1, 1)).astype(np.float32),
                       relu=False, pool=True, scale_first=True, channels=2)
    ours = nn_core.Model(model)
    assert "DynamicQuantizeConv" in ours.plan_ops and "MaxPool" in ours.plan_ops
    x = rng.normal(0, 2, (3, 2, 12, 12)).astype(np.float32)
    got = ours.run({"x": x})["y"]
    for session in ort_sessions(model):
        np.testing.assert_array_equal(got, session.run(None, {"x": x})[0])


def test_dynamic_conv_chain_with_other_readers_is_left_alone():
    """The integer sums read by a second node must still exist: no fusion, same values."""
    model = conv_chain(rng.integers(0, 256, (4, 1, 3, 3)).astype(np.uint8), None, np.array(0.01, np.float32), None,
                       relu=False, pool=False, scale_first=True)
    model.graph.node.append(helper.make_node("Neg", ["acc"], ["z"]))
    model.graph.output.append(helper.make_tensor_value_info("z", 6, None))
    ours = nn_core.Model(model)
    assert "DynamicQuantizeConv" not in ours.plan_ops
    x = rng.normal(0, 1, (2, 1, 12, 12)).astype(np.float32)
    for got, want in zip(ours.run({"x": x}).values(), ort_sessions(model)[1].run(None, {"x": x}), strict=True):
        np.testing.assert_array_equal(got, want)
