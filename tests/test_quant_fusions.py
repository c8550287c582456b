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


def matmul_chain(prefix: str, x: str, weight: np.ndarray, w_scale: np.ndarray, bias: np.ndarray, out: str
                 ) -> tuple[list, list]:
    """One quantize_dynamic MatMul chain from ``x`` to ``out`` (nodes, initializers), uint8 weights."""
    p = prefix
    nodes = [helper.make_node("DynamicQuantizeLinear", [x], [p + "q", p + "s", p + "z"]),
             helper.make_node("Mul", [p + "s", p + "ws"], [p + "scale"]),
             helper.make_node("MatMulInteger", [p + "q", p + "w", p + "z", p + "wz"], [p + "acc"]),
             helper.make_node("Cast", [p + "acc"], [p + "accf"], to=onnx.TensorProto.FLOAT),
             helper.make_node("Mul", [p + "accf", p + "scale"], [p + "y"]),
             helper.make_node("Add", [p + "y", p + "bias"], [out])]
    inits = [numpy_helper.from_array(weight, p + "w"), numpy_helper.from_array(w_scale, p + "ws"),
             numpy_helper.from_array(np.array(128, np.uint8), p + "wz"), numpy_helper.from_array(bias, p + "bias")]
    return nodes, inits


def two_layer_mlp(extra_reader: bool = False) -> onnx.ModelProto:
    """chain -> Relu -> chain: the second chain quantizes relu(h)."""
    first, inits = matmul_chain("a_", "x", rng.integers(0, 256, (20, 16)).astype(np.uint8),
                                np.array(0.01, np.float32), rng.normal(0, 1, 16).astype(np.float32), "h")
    second, more = matmul_chain("b_", "r", rng.integers(0, 256, (16, 5)).astype(np.uint8),
                                np.array(0.02, np.float32), rng.normal(0, 1, 5).astype(np.float32), "y")
    nodes = [*first, helper.make_node("Relu", ["h"], ["r"]), *second]
    outputs = [helper.make_tensor_value_info("y", 1, None)]
    if extra_reader:
        nodes.append(helper.make_node("Neg", ["r"], ["z"]))
        outputs.append(helper.make_tensor_value_info("z", 1, None))
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", 1, ["batch", 20])], outputs,
                              inits + more)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model


@pytest.mark.parametrize("extra_reader", [False, True])
def test_relu_before_a_dynamic_chain_is_absorbed_into_its_quantization(extra_reader):
    """The quantization of relu(h) is that of h with its minimum taken as 0: the Relu goes (unless its output is
    read elsewhere) and the values stay onnxruntime's, also when every h is negative (relu(h) all zero)."""
    model = two_layer_mlp(extra_reader)
    ours = nn_core.Model(model)
    if extra_reader:
        assert "Relu" in "".join(ours.plan_ops)
    else:
        assert ours.plan_ops == ["DynamicQuantizeMatMul", "DynamicQuantizeMatMul"]
    sessions = ort_sessions(model)
    for rows, shift in ((1, 0.0), (5, 2.0), (300, -1.0), (2, -1e6)):
        x = rng.normal(shift, 3, (rows, 20)).astype(np.float32)
        got = list(ours.run({"x": x}).values())
        for session in sessions:
            for have, want in zip(got, session.run(None, {"x": x}), strict=True):
                np.testing.assert_array_equal(have, want)


def test_relu_before_a_dynamic_conv_chain_is_absorbed():
    """Conv chain -> Relu -> conv chain: the second DynamicQuantizeConv quantizes relu(its input) itself."""
    first = conv_chain(rng.integers(0, 256, (4, 1, 3, 3)).astype(np.uint8), np.array(128, np.uint8),
                       np.array(0.01, np.float32), rng.normal(0, 1, (4, 1, 1)).astype(np.float32), relu=False,
                       pool=False, scale_first=True, attrs={"pads": [1, 1, 1, 1]})
    second = conv_chain(rng.integers(0, 256, (3, 4, 3, 3)).astype(np.uint8), np.array(120, np.uint8),
                        np.array(0.02, np.float32), rng.normal(0, 1, (3, 1, 1)).astype(np.float32), relu=True,
                        pool=True, scale_first=False, channels=4)
    renamed = []
    for node in second.graph.node:  # the second chain's names, prefixed; it reads relu(first output)
        node = onnx.NodeProto.FromString(node.SerializeToString())
        node.input[:] = ["r" if n == "x" else "b_" + n if n else n for n in node.input]
        node.output[:] = ["b_" + n for n in node.output]
        renamed.append(node)
    inits = [onnx.TensorProto.FromString(t.SerializeToString()) for t in second.graph.initializer]
    for t in inits:
        t.name = "b_" + t.name
    graph = first.graph
    graph.node.extend([helper.make_node("Relu", ["y"], ["r"]), *renamed])
    graph.initializer.extend(inits)
    graph.output[0].name = "b_y"
    ours = nn_core.Model(first)
    assert ours.plan_ops[:2] == ["DynamicQuantizeConv", "DynamicQuantizeConv+Relu+MaxPool"]
    assert "Relu" not in ours.plan_ops
    sessions = ort_sessions(first)
    for rows, shift in ((1, 0.0), (4, -0.5), (2, -1e4)):
        x = rng.normal(shift, 2, (rows, 1, 12, 12)).astype(np.float32)
        got = ours.run({"x": x})["b_y"]
        for session in sessions:
            np.testing.assert_array_equal(got, session.run(None, {"x": x})[0])


@pytest.mark.parametrize("form", ["axes_attribute", "axes_input", "vector_index", "other_axis"])
def test_batch_flatten_written_with_shape_nodes_runs_as_flatten(form):
    """``x.view(x.size(0), -1)`` exported as Shape -> Gather(0) -> Unsqueeze -> Concat([-1]) -> Reshape runs as one
    Flatten; a Gather of another axis is a different reshape and keeps its nodes."""
    opset = 11 if form == "axes_attribute" else 13
    index = np.array([0] if form == "vector_index" else 1 if form == "other_axis" else 0, np.int64)
    nodes = [helper.make_node("Shape", ["x"], ["s"]),
             helper.make_node("Constant", [], ["i"], value=numpy_helper.from_array(index)),
             helper.make_node("Constant", [], ["m"], value=numpy_helper.from_array(np.array([-1], np.int64))),
             helper.make_node("Gather", ["s", "i"], ["g"], axis=0)]
    if form == "vector_index":
        first = "g"
    elif form == "axes_attribute":
        nodes.append(helper.make_node("Unsqueeze", ["g"], ["u"], axes=[0]))
        first = "u"
    else:
        nodes += [helper.make_node("Constant", [], ["ax"], value=numpy_helper.from_array(np.array([0], np.int64))),
                  helper.make_node("Unsqueeze", ["g", "ax"], ["u"])]
        first = "u"
    nodes += [helper.make_node("Concat", [first, "m"], ["shape"], axis=0),
              helper.make_node("Reshape", ["x", "shape"], ["y"])]
    graph = helper.make_graph(nodes, "flat", [helper.make_tensor_value_info("x", 1, ["batch", 3, 4, 5])],
                              [helper.make_tensor_value_info("y", 1, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 7
    ours = nn_core.Model(model)
    if form == "other_axis":
        assert "Flatten" not in ours.plan_ops and "Reshape" in ours.plan_ops
    else:
        assert ours.plan_ops == ["Flatten"]
    for rows in (1, 3):
        x = rng.normal(0, 1, (rows, 3, 4, 5)).astype(np.float32)
        want = ort_sessions(model)[1].run(None, {"x": x})[0]
        got = ours.run({"x": x})["y"]
        assert got.shape == want.shape
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("dtype,zero_point", [(np.uint8, 131), (np.int8, -7), (np.uint16, 40000), (np.int16, -300),
                                              (np.uint8, None)])
def test_dequantize_with_load_time_parameters_matches_onnxruntime(dtype, zero_point):
    """DequantizeLinear with a constant per-tensor scale and zero point (its lean path): (x - zp) * scale in
    float32 as onnxruntime, over the type's whole range."""
    info = np.iinfo(dtype)
    x = rng.integers(info.min, info.max + 1, (3, 257)).astype(dtype)
    x[0, :2] = info.min, info.max
    inits = [numpy_helper.from_array(np.array(0.0173, np.float32), "s")]
    inputs = ["x", "s"]
    if zero_point is not None:
        inits.append(numpy_helper.from_array(np.array(zero_point, dtype), "z"))
        inputs.append("z")
    elem = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    graph = helper.make_graph([helper.make_node("DequantizeLinear", inputs, ["y"])], "dq",
                              [helper.make_tensor_value_info("x", elem, [3, 257])],
                              [helper.make_tensor_value_info("y", 1, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    model.ir_version = 10
    got = nn_core.Model(model).run({"x": x})["y"]
    want = ort_sessions(model)[1].run(None, {"x": x})[0]
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, want)
    expected = (x.astype(np.float64) - (zero_point or 0)).astype(np.float32) * np.float32(0.0173)
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("out_type,zero_point,y_scale", [(np.uint8, 100, 0.5), (np.int8, -20, 0.5),
                                                         (np.uint8, 3, 0.05), (np.int8, 0, 0.05)])
def test_qlinear_conv_requantized_chunk_by_chunk_with_its_pool_matches_onnxruntime(out_type, zero_point, y_scale):
    """QLinearConv + MaxPool requantizes each pooled chunk inside the convolution: output zero points away from
    0, int8 and uint8 outputs, a small output scale that saturates many values, per-channel weight scales, a
    batch of several chunks and a batch of 1."""
    w = rng.integers(-127, 128, (6, 3, 5, 5)).astype(np.int8)
    inputs = ["x", "xs", "xz", "w", "ws", "wz", "ys", "yz", "b"]
    nodes = [helper.make_node("QLinearConv", inputs, ["c"], pads=[2] * 4),
             helper.make_node("MaxPool", ["c"], ["y"], kernel_shape=[2, 2], strides=[2, 2])]
    consts = {"xs": np.array(0.02, np.float32), "xz": np.array(3, out_type), "w": w,
              "ws": rng.uniform(0.01, 0.03, 6).astype(np.float32), "wz": np.zeros(6, np.int8),
              "ys": np.array(y_scale, np.float32), "yz": np.array(zero_point, out_type),
              "b": rng.integers(-2000, 2000, 6).astype(np.int32)}
    elem = helper.np_dtype_to_tensor_dtype(np.dtype(out_type))  # onnxruntime: x and y of one type
    graph = helper.make_graph(nodes, "t", [helper.make_tensor_value_info("x", elem, ["batch", 3, 12, 12])],
                              [helper.make_tensor_value_info("y", elem, None)],
                              [numpy_helper.from_array(np.asarray(v), k) for k, v in consts.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    ours = nn_core.Model(model)
    assert ours.plan_ops == ["QLinearConv+MaxPool"]
    session = ort_sessions(model)[1]
    for rows in (1, 300):
        info = np.iinfo(out_type)
        x = rng.integers(info.min, info.max + 1, (rows, 3, 12, 12)).astype(out_type)
        got = ours.run({"x": x})["y"]
        want = session.run(None, {"x": x})[0]
        assert got.dtype == want.dtype
        np.testing.assert_array_equal(got, want)


def test_private_fused_ops_named_by_a_file_check_their_inputs():
    """The fast plan's private kernels are reachable by a file that names their domain: a bad attribute or a
    missing input is a ModelError, and an exotic but valid use (a weight scale fed at run time) computes the
    chain as written."""
    from nn_core.errors import ModelError
    from nn_core.ops.quantized import FUSED_DOMAIN

    def model(node, feeds, inits):
        graph = helper.make_graph([node], "p", [helper.make_tensor_value_info(n, 1, None) for n in feeds],
                                  [helper.make_tensor_value_info("y", 1, None)], inits)
        m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13),
                                                    helper.make_opsetid(FUSED_DOMAIN, 1)])
        m.ir_version = 8
        return m

    w = rng.integers(0, 256, (4, 2, 3, 3)).astype(np.uint8)
    inits = [numpy_helper.from_array(w, "w"), numpy_helper.from_array(np.array(128, np.uint8), "wz")]
    bad = helper.make_node("DynamicQuantizeConv", ["x", "w", "wz", "ws"], ["y"], domain=FUSED_DOMAIN, relu_input=5)
    with pytest.raises(ModelError, match="relu_input"):
        nn_core.Model(model(bad, ["x", "ws"], inits))
    short = helper.make_node("DynamicQuantizeConv", ["x", "w", "wz"], ["y"], domain=FUSED_DOMAIN)
    with pytest.raises(ModelError):
        nn_core.Model(model(short, ["x"], inits))
    node = helper.make_node("DynamicQuantizeConv", ["x", "w", "wz", "ws"], ["y"], domain=FUSED_DOMAIN, relu_input=1)
    ours = nn_core.Model(model(node, ["x", "ws"], inits))
    x = rng.normal(0, 1, (2, 2, 12, 12)).astype(np.float32)
    ws = np.array(0.01, np.float32)
    chain = conv_chain(w, np.array(128, np.uint8), ws, None, relu=False, pool=False, scale_first=True, channels=2)
    want = ort_sessions(chain)[1].run(None, {"x": np.maximum(x, 0)})[0]
    np.testing.assert_array_equal(ours.run({"x": x, "ws": ws})["y"], want)


def qdq_conv(dtype, x_zero_point: int, *, same_params: bool = True, q_read_elsewhere: bool = False
             ) -> onnx.ModelProto:
    """x -> QuantizeLinear -> DequantizeLinear -> Conv(DQ(w), DQ(int32 bias)) -> QuantizeLinear -> DQ: the
    first layer of a QDQ model. ``same_params`` False gives the DequantizeLinear a scale of its own."""
    out = 5
    w = rng.integers(-127, 128, (out, 2, 3, 3)).astype(np.int8)
    w_scale = rng.uniform(0.005, 0.02, out).astype(np.float32)
    x_scale = np.float32(0.03)
    bias = rng.integers(-500, 500, out).astype(np.int32)
    c = {"xs": np.array(x_scale, np.float32), "xz": np.array(x_zero_point, dtype),
         "xs2": np.array(x_scale if same_params else 0.031, np.float32), "w": w, "ws": w_scale,
         "wz": np.zeros(out, np.int8), "b": bias, "bs": (x_scale * w_scale).astype(np.float32),
         "bz": np.zeros(out, np.int32), "ys": np.array(0.07, np.float32), "yz": np.array(x_zero_point, dtype)}
    nodes = [helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "xs2", "xz"], ["xd"]),
             helper.make_node("DequantizeLinear", ["w", "ws", "wz"], ["wd"], axis=0),
             helper.make_node("DequantizeLinear", ["b", "bs", "bz"], ["bd"], axis=0),
             helper.make_node("Conv", ["xd", "wd", "bd"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("QuantizeLinear", ["c", "ys", "yz"], ["cq"]),
             helper.make_node("DequantizeLinear", ["cq", "ys", "yz"], ["y"])]
    outputs = [helper.make_tensor_value_info("y", 1, None)]
    if q_read_elsewhere:
        nodes.append(helper.make_node("Cast", ["xq"], ["xq_float"], to=1))
        outputs.append(helper.make_tensor_value_info("xq_float", 1, None))
    graph = helper.make_graph(nodes, "qdq", [helper.make_tensor_value_info("x", 1, ["batch", 2, 9, 9])], outputs,
                              [numpy_helper.from_array(v, k) for k, v in c.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model


@pytest.mark.parametrize("dtype,zero_point,variant", [(np.uint8, 128, "fused"), (np.int8, -3, "fused"),
                                                      (np.uint8, 0, "fused"), (np.uint8, 128, "other_scale"),
                                                      (np.uint8, 128, "read_elsewhere")])
def test_input_quantization_done_by_the_first_qlinear_conv(dtype, zero_point, variant):
    """A QDQ model's QuantizeLinear whose only reader is the first convolution's DequantizeLinear (same scale
    and zero point) runs inside the QLinearConv, x straight to zero-centred float32; values as onnxruntime's,
    saturation included. Another scale, or the quantized input read elsewhere, keeps the QuantizeLinear."""
    model = qdq_conv(dtype, zero_point, same_params=variant != "other_scale",
                     q_read_elsewhere=variant == "read_elsewhere")
    ours = nn_core.Model(model)
    assert ("QuantizeLinear" in ours.plan_ops) == (variant != "fused")
    if variant != "other_scale":
        assert "QLinearConv" in ours.plan_ops
    integer, unfused = ort_sessions(model)
    for rows, spread in ((1, 1.0), (3, 10.0), (70, 3.0)):
        x = (rng.normal(0, 1, (rows, 2, 9, 9)) * spread).astype(np.float32)  # 10.0: many inputs saturate
        got = list(ours.run({"x": x}).values())
        # onnxruntime's unfused graph convolves in float, whose rounding can land a sum near a half-step on the
        # other side (about 1 value in 30,000 here): our integer result must equal the fused one everywhere and
        # the unfused one wherever onnxruntime agrees with itself
        fused_want, unfused_want = integer.run(None, {"x": x}), unfused.run(None, {"x": x})
        for have, want, other in zip(got, fused_want, unfused_want, strict=True):
            np.testing.assert_array_equal(have, want)
            agreed = want == other
            np.testing.assert_array_equal(have[agreed], other[agreed])


def test_rewrites_for_a_file_use_only_standard_and_onnxruntime_ops():
    """fuse_qdq(private=False), what `nn_core quantize --format qoperator` writes from: none of the engine's
    private ops (onnxruntime could not load them) — the input's QuantizeLinear stays, no DynamicQuantizeConv,
    no Relu absorbed into a DynamicQuantizeMatMul; the fast plan (private=True) uses them."""
    from dataclasses import replace

    from nn_core.graph import Graph
    from nn_core.ops.quantized import FUSED_DOMAIN, fuse_qdq

    def rewritten(template, name, op_type, domain, inputs, outputs, attrs):
        return replace(template, name=name, op_type=op_type, domain=domain, inputs=inputs, outputs=outputs,
                       attrs=attrs)

    conv = conv_chain(rng.integers(0, 256, (4, 1, 3, 3)).astype(np.uint8), None, np.array(0.01, np.float32), None,
                      relu=False, pool=False, scale_first=True)
    for model in (qdq_conv(np.uint8, 128), conv, two_layer_mlp()):
        graph = Graph(model)
        outputs = {v.name for v in graph.outputs}
        for private in (False, True):
            nodes = fuse_qdq(list(graph.nodes), dict(graph.constants), outputs, rewritten, private=private)
            domains = {node.domain for node in nodes}
            assert (FUSED_DOMAIN in domains) == private
