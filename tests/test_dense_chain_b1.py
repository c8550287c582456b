"""Issue 10, dense heads at batch 1: consecutive Gemm / MatMul layers run as one DenseChain step (the bias of
each later layer a row of its weights, the hidden layers in the chain's buffers). Against the traced graph (the
unfused kernels) and onnxruntime: Gemm attributes (transB, alpha, beta, bias shapes, no bias), MatMul + Add,
hidden activations (ReLU, LeakyRelu, Tanh, Sigmoid) and a final Softmax / LogSoftmax, float64, a few rows,
larger batches and other shapes falling back to the kernels in turn, kept outputs, threads, and where a chain
must stop."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from helpers import make_model, ort_run, tensor_info
from onnx import TensorProto, helper

import nn_core
from nn_core.ops.dense_chain import MAX_ROWS, DenseChain


def _head(widths: list[int], layers: list[dict], dtype=np.float32, seed: int = 0, batch=None):
    """x (batch, widths[0]) through one dense layer per entry of ``layers``: {"op": "Gemm" | "MatMul", "act":
    op type or None, and Gemm's attributes / "bias": shape or None}."""
    rng = np.random.default_rng(seed)
    nodes, inits, value = [], {}, "x"
    for index, (layer, k, n) in enumerate(zip(layers, widths, widths[1:], strict=False)):
        out = f"h{index}"
        weight = (rng.standard_normal((k, n)) / np.sqrt(k)).astype(dtype)
        bias_shape = layer.get("bias", (n,))
        if layer["op"] == "Gemm":
            attrs = {a: layer[a] for a in ("alpha", "beta", "transB") if a in layer}
            if attrs.get("transB"):
                weight = np.ascontiguousarray(weight.T)
            inputs = [value, f"w{index}"]
            if bias_shape is not None:
                inits[f"b{index}"] = rng.standard_normal(bias_shape).astype(dtype)
                inputs.append(f"b{index}")
            nodes.append(helper.make_node("Gemm", inputs, [out], **attrs))
        else:
            nodes.append(helper.make_node("MatMul", [value, f"w{index}"], [f"m{index}"]))
            inits[f"b{index}"] = rng.standard_normal(n).astype(dtype)
            nodes.append(helper.make_node("Add", [f"m{index}", f"b{index}"], [out]))
        inits[f"w{index}"] = weight
        value = out
        act = layer.get("act")
        if act is not None:
            attrs = {"axis": -1} if act in ("Softmax", "LogSoftmax") else {}
            nodes.append(helper.make_node(act, [value], [f"a{index}"], **attrs))
            value = f"a{index}"
    nodes.append(helper.make_node("Identity", [value], ["y"]))
    elem = TensorProto.DOUBLE if dtype == np.float64 else TensorProto.FLOAT
    return make_model(nodes, [tensor_info("x", [batch, widths[0]], elem)], [tensor_info("y", None, elem)], inits)


def _chain_steps(model) -> list:
    return [s for s in model._fast_plan().steps if type(s.kernel) is DenseChain]


def _check(proto, x: np.ndarray, chained_layers: int, with_onnxruntime: bool = True) -> None:
    model = nn_core.load_proto(proto)
    chains = _chain_steps(model)
    assert len(chains) == 1 and len(chains[0].kernel.kernels) == chained_layers
    got = model.run({"x": x})["y"]
    traced, _ = model.run_traced({"x": x})
    tolerance = 1e-5 if x.dtype == np.float32 else 1e-12
    np.testing.assert_allclose(got, traced["y"], rtol=tolerance, atol=tolerance)
    if with_onnxruntime:
        np.testing.assert_allclose(got, ort_run(proto, {"x": x})[0], rtol=1e-4 if x.dtype == np.float32 else 1e-10,
                                   atol=1e-5 if x.dtype == np.float32 else 1e-10)
    assert got.dtype == x.dtype and got.shape == traced["y"].shape


LENET_HEAD = [{"op": "Gemm", "act": "Relu"}, {"op": "Gemm", "act": "Relu"}, {"op": "Gemm"}]
CASES = [
    ([600, 120, 84, 10], LENET_HEAD),
    ([784, 64, 32, 10], [{"op": "MatMul", "act": "Relu"}, {"op": "MatMul", "act": "Relu"},
                         {"op": "MatMul", "act": "Softmax"}]),  # tf_mlp_flat784
    ([50, 30, 10], [{"op": "Gemm", "act": "Tanh"}, {"op": "Gemm", "act": "LogSoftmax"}]),  # lenet_avgpool's head
    ([17, 9, 5], [{"op": "Gemm", "act": "Sigmoid", "transB": 1, "alpha": 0.5, "beta": 2.0},
                  {"op": "Gemm", "act": "LeakyRelu", "bias": (1, 5)}]),
    ([13, 7, 3], [{"op": "Gemm", "bias": None, "act": "Relu"}, {"op": "Gemm", "bias": None}]),  # no biases
    ([13, 7, 3, 4], [{"op": "Gemm", "bias": (1, 1), "act": "Relu"}, {"op": "MatMul"},
                     {"op": "Gemm", "bias": (1,), "transB": 1}]),  # broadcast biases, Gemm and MatMul mixed
]


@pytest.mark.parametrize("widths, layers", CASES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_chain_matches_the_kernels_and_onnxruntime(widths, layers, dtype):
    proto = _head(widths, layers, dtype)
    rng = np.random.default_rng(1)
    # (onnxruntime has no float64 LeakyRelu)
    with_onnxruntime = dtype == np.float32 or all(layer.get("act") != "LeakyRelu" for layer in layers)
    _check(proto, rng.standard_normal((1, widths[0])).astype(dtype), len(layers), with_onnxruntime)


@pytest.mark.parametrize("widths, layers", CASES)
@pytest.mark.parametrize("batch", [2, 5])
def test_a_few_rows_run_through_row_buffers(widths, layers, batch):
    # (more than one row: the layers worked transposed, every bias but the first layer's from the products)
    proto = _head(widths, layers)
    x = np.random.default_rng(2).standard_normal((batch, widths[0])).astype(np.float32)
    x[-1, 0] = np.nan  # a NaN row stays in its row
    _check(proto, x, len(layers))
    kernel = _chain_steps(nn_core.load_proto(proto))[0].kernel
    kernel.run(x)
    assert set(kernel.buffers) == {batch}


def test_a_large_batch_runs_the_kernels_in_turn():
    proto = _head([600, 120, 84, 10], LENET_HEAD)
    x = np.random.default_rng(2).standard_normal((MAX_ROWS + 1, 600)).astype(np.float32)
    _check(proto, x, 3)
    kernel = _chain_steps(nn_core.load_proto(proto))[0].kernel
    kernel.run(x)
    assert not kernel.buffers


def test_outputs_are_fresh_and_later_runs_keep_them():
    model = nn_core.load_proto(_head([600, 120, 84, 10], LENET_HEAD))
    rng = np.random.default_rng(3)
    x1, x2 = (rng.standard_normal((1, 600)).astype(np.float32) for _ in range(2))
    first = model.run({"x": x1})["y"]
    kept = first.copy()
    second = model.run({"x": x2})["y"]
    np.testing.assert_array_equal(first, kept)
    assert not np.shares_memory(first, second)
    np.testing.assert_allclose(model.run({"x": x1})["y"], kept, rtol=0, atol=0)


def test_non_finite_inputs_give_the_kernels_values():
    proto = _head([600, 120, 84, 10], LENET_HEAD)
    x = np.random.default_rng(4).standard_normal((1, 600)).astype(np.float32)
    x[0, 3], x[0, 7] = np.inf, np.nan
    model = nn_core.load_proto(proto)
    traced, _ = model.run_traced({"x": x})
    np.testing.assert_array_equal(model.run({"x": x})["y"], traced["y"])  # NaN where the kernels give NaN


def test_threads_get_their_own_results():
    proto = _head([600, 120, 84, 10], LENET_HEAD)
    model = nn_core.load_proto(proto)
    rng = np.random.default_rng(5)
    inputs = [rng.standard_normal((1, 600)).astype(np.float32) for _ in range(4)]
    wanted = [model.run_traced({"x": x})[0]["y"] for x in inputs]
    failures = []

    def work(index: int) -> None:
        for _ in range(200):
            got = model.run({"x": inputs[index]})["y"]
            if not np.allclose(got, wanted[index], rtol=1e-5, atol=1e-5):
                failures.append(index)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures


def test_a_hidden_graph_output_or_second_reader_ends_the_chain():
    proto = _head([20, 10, 6, 3], LENET_HEAD)
    # h0 (the first layer's product) also a graph output: the first layer cannot be absorbed into a chain
    proto.graph.output.append(tensor_info("h0", None))
    model = nn_core.load_proto(proto)
    (chain,) = _chain_steps(model)
    assert len(chain.kernel.kernels) == 2
    x = np.random.default_rng(6).standard_normal((1, 20)).astype(np.float32)
    got = model.run({"x": x})
    want = ort_run(proto, {"x": x})
    np.testing.assert_allclose(got["y"], want[0], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got["h0"], want[1], rtol=1e-4, atol=1e-5)


def test_a_transposed_input_or_run_time_weight_is_not_chained():
    rng = np.random.default_rng(7)
    w0, w1 = rng.standard_normal((8, 6)).astype(np.float32), rng.standard_normal((6, 4)).astype(np.float32)
    nodes = [helper.make_node("Gemm", ["x", "w0"], ["h"], transA=1),
             helper.make_node("Gemm", ["h", "w1"], ["y"])]
    proto = make_model(nodes, [tensor_info("x", [8, 1])], [tensor_info("y", None)], {"w0": w0, "w1": w1})
    assert not _chain_steps(nn_core.load_proto(proto))
    nodes = [helper.make_node("Gemm", ["x", "w0"], ["h"]), helper.make_node("Gemm", ["h", "w1x"], ["y"])]
    proto = make_model(nodes, [tensor_info("x", [1, 8]), tensor_info("w1x", [6, 4])], [tensor_info("y", None)],
                       {"w0": w0})
    assert not _chain_steps(nn_core.load_proto(proto))


def test_the_bundled_lenet_head_is_one_step():
    """Its dense layers are one DenseChain, which the conv blocks before it then take in (FedPooledHead)."""
    (step,) = nn_core.load("assets/lenet5.onnx")._fast_plan().steps
    assert step.label == "Conv+Relu+MaxPool+Conv+Relu+MaxPool+Flatten+Gemm+Relu+Gemm+Relu+Gemm"
    assert type(step.kernel.head.chain) is DenseChain


def test_a_matmul_by_a_vector_after_a_layer_is_left_out_of_the_chain(tmp_path):
    # a 1-D MatMul weight makes a vector, not a layer: chainable took its shape[1] and the load failed with
    # "IndexError: tuple index out of range" (found by tools/fuzz_models.py)
    nodes = [helper.make_node("Gemm", ["x", "w"], ["h"], name="fc"), helper.make_node("MatMul", ["h", "v"], ["y"])]
    weights = {"w": np.arange(12, dtype=np.float32).reshape(3, 4), "v": np.arange(4, dtype=np.float32)}
    proto = make_model(nodes, [tensor_info("x", [1, 3])], [tensor_info("y", None)], weights)
    model = nn_core.load_proto(proto, name="vector.onnx")
    assert model.plan_ops == ["Gemm", "MatMul"]
    x = np.array([[1.0, -2.0, 0.5]], np.float32)
    for _ in range(3):  # checked, specializing and specialized runs
        np.testing.assert_allclose(model.run({"x": x})["y"], ort_run(proto, {"x": x})[0], rtol=1e-6)
