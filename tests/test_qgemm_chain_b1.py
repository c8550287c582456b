"""Quantized dense layers in a row as one step (nn_core/ops/qgemm_chain.py): each QGemm's requantized codes are
handed to the next one centred as float32. The output must equal, bit for bit, the layers' kernels run in turn
and onnxruntime's."""

import numpy as np
import onnx
import pytest
from helpers import ort_run
from onnx import helper, numpy_helper

import nn_core
from nn_core.ops.qgemm_chain import QuantizedGemmChain
from nn_core.quantize import quantize

rng = np.random.default_rng(21)


def _mlp(widths: list[int]) -> onnx.ModelProto:
    """x (N, 784) -> Gemm -> Relu -> ... -> Gemm -> y: random weights and biases."""
    nodes, inits, current, width = [], [], "x", 784
    for index, out in enumerate(widths):
        w = (rng.standard_normal((out, width)) * (2.0 / width) ** 0.5).astype(np.float32)
        inits += [numpy_helper.from_array(w, f"w{index}"),
                  numpy_helper.from_array((rng.standard_normal(out) * 0.3).astype(np.float32), f"b{index}")]
        nodes.append(helper.make_node("Gemm", [current, f"w{index}", f"b{index}"], [f"g{index}"], transB=1))
        current, width = f"g{index}", out
        if index < len(widths) - 1:
            nodes.append(helper.make_node("Relu", [current], [f"r{index}"]))
            current = f"r{index}"
    nodes.append(helper.make_node("Identity", [current], ["y"]))
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", 1, ["N", 784])],
                              [helper.make_tensor_value_info("y", 1, ["N", width])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model


def _chain(model: nn_core.Model) -> QuantizedGemmChain:
    return next(s.kernel for s in model._fast_plan().steps if isinstance(s.kernel, QuantizedGemmChain))


@pytest.mark.parametrize("fmt", ["qdq", "qoperator"])
@pytest.mark.parametrize("widths", [[120, 84, 10], [64, 10], [32, 48, 16, 10]])
def test_dense_head_is_one_step_and_bit_exact(fmt, widths):
    proto = quantize(_mlp(widths), fmt=fmt, count=20)
    model = nn_core.load_proto(proto)
    assert len(_chain(model).layers) == len(widths)
    for batch in (1, 3):
        for scale in (0.05, 1.0, 20.0):  # saturating both ways at the extremes
            x = (rng.random((batch, 784)) * scale).astype(np.float32)
            np.testing.assert_array_equal(model.run({"x": x})["y"], ort_run(proto, {"x": x})[0])


def test_chain_equals_the_layers_in_turn_and_takes_other_codes_through_them():
    model = nn_core.load_proto(quantize(_mlp([40, 30, 10]), fmt="qdq", count=20))
    chain = _chain(model)

    def in_turn(a: np.ndarray) -> np.ndarray:
        for layer, parameters in zip(chain.layers, chain.parameters):
            a = layer.run(a, *parameters)
        return a

    codes = rng.integers(0, 256, (2, 784)).astype(np.uint8)
    np.testing.assert_array_equal(chain.run(codes), in_turn(codes))
    wide = codes.astype(np.int32)  # not 8-bit: the layers' kernels decide (they refuse it by name)
    with pytest.raises(nn_core.ModelError):
        chain.run(wide)


def test_a_wrong_input_width_is_refused_by_the_first_layer():
    model = nn_core.load_proto(quantize(_mlp([40, 10]), fmt="qdq", count=20))
    with pytest.raises(nn_core.ModelError):
        _chain(model).run(np.zeros((1, 700), np.uint8))


@pytest.mark.parametrize("fmt", ["qdq", "qoperator"])
def test_one_row_through_bias_rows_equals_the_layers_in_turn(fmt):
    """Batch 1 runs through the chain's input rows ending in 1 (the bias a row of the weights): the same codes or
    floats bit for bit as the layers in turn, call after call (an earlier output is not overwritten), saturating
    inputs included; a layer whose sums would need more than one float32 slice keeps the sliced products."""
    model = nn_core.load_proto(quantize(_mlp([120, 84, 10]), fmt=fmt, count=20))
    chain = _chain(model)

    def in_turn(a: np.ndarray) -> np.ndarray:
        for layer, parameters in zip(chain.layers, chain.parameters):
            a = layer.run(a, *parameters)
        return a

    kept = []
    for low, high in ((0, 256), (0, 2), (250, 256), (100, 140)):
        codes = rng.integers(low, high, (1, 784)).astype(np.uint8)
        got = chain.run(codes)
        np.testing.assert_array_equal(got, in_turn(codes))
        kept.append((got, got.copy()))
    assert chain.one_row[np.dtype(np.uint8)] is not None
    for got, copy in kept:
        np.testing.assert_array_equal(got, copy)
    chain.one_row.clear()
    # as if layer 2's sums needed two float32 slices: the chain keeps the general products, still bit-exact
    chain.layers[1].b.slices = lambda a_bound, bias_bound=0.0: [slice(0, 60), slice(60, 120)]
    codes = rng.integers(0, 256, (1, 784)).astype(np.uint8)
    np.testing.assert_array_equal(chain.run(codes), in_turn(codes))
    assert chain.one_row[np.dtype(np.uint8)] is None


def test_one_row_from_threads_matches_one_at_a_time():
    """The input rows are shared by calls: threads running the chain at once each get their own row's result."""
    from concurrent.futures import ThreadPoolExecutor

    model = nn_core.load_proto(quantize(_mlp([64, 10]), fmt="qdq", count=20))
    chain = _chain(model)
    inputs = [rng.integers(0, 256, (1, 784)).astype(np.uint8) for _ in range(32)]
    want = [chain.run(codes).copy() for codes in inputs]
    with ThreadPoolExecutor(4) as pool:
        for _ in range(5):
            for got, expected in zip(pool.map(chain.run, inputs), want):
                np.testing.assert_array_equal(got, expected)
