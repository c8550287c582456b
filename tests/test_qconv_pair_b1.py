"""Two quantized convolutions in a row as one step (nn_core/ops/qconv_pair.py): the first one's sums are
requantized straight into the centred float32 the second multiplies. The output must equal, bit for bit, the two
kernels in turn (the plan without the pass) and onnxruntime's."""

import numpy as np
import onnx
import pytest
from helpers import ort_run
from onnx import helper, numpy_helper

import nn_core
import nn_core.plan as plan
from nn_core.ops.qconv_pair import CentredConvPair
from nn_core.quantize import quantize

rng = np.random.default_rng(33)


def _two_convs(pads: int, strides: int, pool: bool, size: int, second_read_twice: bool = False) -> onnx.ModelProto:
    """x (N, 1, size, size) -> Conv -> Relu -> [MaxPool] -> Conv -> Relu -> y (and the first Relu as a second
    output when ``second_read_twice``)."""
    w1 = (rng.standard_normal((5, 1, 3, 3)) * 0.4).astype(np.float32)
    w2 = (rng.standard_normal((7, 5, 3, 3)) * 0.3).astype(np.float32)
    inits = [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(rng.standard_normal(5).astype(np.float32),
                                                                         "b1"),
             numpy_helper.from_array(w2, "w2"), numpy_helper.from_array(rng.standard_normal(7).astype(np.float32),
                                                                         "b2")]
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[pads] * 4, strides=[strides] * 2),
             helper.make_node("Relu", ["c1"], ["r1"])]
    current = "r1"
    if pool:
        nodes.append(helper.make_node("MaxPool", ["r1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2]))
        current = "p1"
    nodes += [helper.make_node("Conv", [current, "w2", "b2"], ["c2"], pads=[1, 1, 1, 1]),
              helper.make_node("Relu", ["c2"], ["y"])]
    outputs = [helper.make_tensor_value_info("y", 1, None)]
    if second_read_twice:
        outputs.append(helper.make_tensor_value_info(current, 1, None))
    graph = helper.make_graph(nodes, "two_convs", [helper.make_tensor_value_info("x", 1, ["N", 1, size, size])],
                              outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model


def _without_pass(proto: onnx.ModelProto, monkeypatch) -> nn_core.Model:
    with monkeypatch.context() as patch:
        patch.setattr(plan, "fuse_centred_conv_pairs", lambda steps, outputs: steps)
        model = nn_core.load_proto(proto)
        model._fast_plan()
    return model


def _pairs(model: nn_core.Model) -> list:
    return [s for s in model._fast_plan().steps if isinstance(s.kernel, CentredConvPair)]


@pytest.mark.parametrize("fmt", ["qdq", "qoperator"])
@pytest.mark.parametrize("pads, strides, pool, size", [(0, 1, True, 12), (1, 1, False, 9), (1, 2, True, 15),
                                                       (0, 2, False, 11)])
def test_two_convolutions_are_one_step_and_bit_exact(fmt, pads, strides, pool, size, monkeypatch):
    proto = quantize(_two_convs(pads, strides, pool, size), fmt=fmt, count=20)
    ours, plain = nn_core.load_proto(proto), _without_pass(proto, monkeypatch)
    assert len(_pairs(ours)) == 1 and not _pairs(plain)
    kept = []
    for batch in (1, 3, 1):
        for scale in (0.05, 1.0, 30.0):  # saturating at the extremes
            x = (rng.standard_normal((batch, 1, size, size)) * scale).astype(np.float32)
            got = ours.run({"x": x})["y"]
            np.testing.assert_array_equal(got, plain.run({"x": x})["y"])
            np.testing.assert_array_equal(got, ort_run(proto, {"x": x})[0])
            kept.append((got, got.copy()))
    for got, copy in kept:  # an earlier output is not overwritten by a later run
        np.testing.assert_array_equal(got, copy)


def test_a_nan_input_takes_the_kernels_in_turn(monkeypatch):
    """A QDQ model's first convolution quantizes x on entry; a NaN there sends it through the QuantizeLinear
    kernel (the pair runs the two kernels in turn): the unfused plan's codes."""
    proto = quantize(_two_convs(1, 1, True, 10), fmt="qdq", count=20)
    ours, plain = nn_core.load_proto(proto), _without_pass(proto, monkeypatch)
    x = rng.standard_normal((1, 1, 10, 10)).astype(np.float32)
    x[0, 0, 3, 4] = np.nan
    np.testing.assert_array_equal(ours.run({"x": x})["y"], plain.run({"x": x})["y"])


def test_codes_read_elsewhere_keep_two_steps():
    proto = quantize(_two_convs(1, 1, True, 10, second_read_twice=True), fmt="qoperator", count=20)
    ours = nn_core.load_proto(proto)
    assert not _pairs(ours)
    x = rng.standard_normal((1, 1, 10, 10)).astype(np.float32)
    for have, want in zip(ours.run({"x": x}).values(), ort_run(proto, {"x": x}), strict=True):
        np.testing.assert_array_equal(have, want)


@pytest.mark.parametrize("activation", ["Relu", "LeakyRelu"])
def test_a_stem_convolution_centres_its_codes_into_a_separable_chain(activation, monkeypatch):
    """A QDQ model's stem convolution (its codes looked up in its activation's table) read only by a quantized
    separable chain requantizes into the chain's centred input: bit-exact with the two steps and onnxruntime,
    at batch 1 and 3; a shape the chain's buffers refuse goes through the chain's layers on the same codes."""
    from test_separable_b1 import MOBILENET_BLOCKS
    from test_separable_int8 import _quantized

    proto = _quantized(np.random.default_rng(5), MOBILENET_BLOCKS, activation, size=(13, 11))
    ours, plain = nn_core.load_proto(proto), _without_pass(proto, monkeypatch)
    pairs = _pairs(ours)
    assert len(pairs) == 1 and pairs[0].kernel.chain is not None and not _pairs(plain)
    dims = tuple(d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim[1:])
    for batch, scale in ((1, 1.0), (1, 20.0), (3, 1.0)):
        x = (rng.standard_normal((batch, *dims)) * scale).astype(np.float32)
        got = ours.run({"x": x})["y"]
        np.testing.assert_array_equal(got, plain.run({"x": x})["y"])
        np.testing.assert_array_equal(got, ort_run(proto, {"x": x})[0])
    monkeypatch.setattr(pairs[0].kernel.chain, "run_centred", lambda centred: None)
    x = rng.standard_normal((1, *dims)).astype(np.float32)
    np.testing.assert_array_equal(ours.run({"x": x})["y"], plain.run({"x": x})["y"])
