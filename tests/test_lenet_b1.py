"""LeNet-style convolution blocks at small batches: the pooled channels-last plan that reduces its pooling phases
(and a fused ReLU) in one pass and absorbs a following Flatten, against the general kernels of the traced plan."""

from pathlib import Path

import numpy as np
import pytest
from helpers import conv_block_nodes, make_model, save, tensor_info
from onnx import helper

import nn_core

ASSETS = Path(__file__).resolve().parent.parent / "assets"


def _conv_block(rng: np.random.Generator, activation: str | None) -> object:
    """x (N, 12, 14, 14) -> Conv 5x5 to 24 channels -> activation -> MaxPool 2x2 -> Flatten -> Gemm to 10."""
    inits = {"w": (rng.standard_normal((24, 12, 5, 5)) * 0.1).astype(np.float32),
             "b": (rng.standard_normal(24) * 0.1).astype(np.float32),
             "fw": (rng.standard_normal((10, 600)) * 0.05).astype(np.float32),
             "fb": np.zeros(10, np.float32)}
    nodes = conv_block_nodes(activation)
    nodes += [helper.make_node("Flatten", ["p"], ["f"], name="flatten"),
              helper.make_node("Gemm", ["f", "fw", "fb"], ["y"], name="fc", transB=1)]
    return make_model(nodes, [tensor_info("x", ["N", 12, 14, 14])], [tensor_info("y", ["N", 10])], inits)


@pytest.mark.parametrize("activation", ["Relu", "LeakyRelu", None])
@pytest.mark.parametrize("batch", [1, 3])
def test_pooled_block_absorbs_flatten_and_matches_general_kernels(tmp_path, activation, batch):
    rng = np.random.default_rng(7)
    model = nn_core.load(save(_conv_block(rng, activation), tmp_path / "block.onnx"))
    fused = "Conv" + (f"+{activation}" if activation else "") + "+MaxPool+Flatten"
    assert model.plan_ops == [fused + "+Gemm"]  # (the dense layer joins the block: PooledHead)
    x = rng.standard_normal((batch, 12, 14, 14)).astype(np.float32)
    got = model.run({"x": x})["y"]
    want, _ = model.run_traced({"x": x})
    np.testing.assert_allclose(got, want["y"], rtol=1e-5, atol=1e-5)


def test_flattened_conv_output_is_fresh_and_exact(tmp_path):
    """The conv step's flattened output (here the graph's) equals the general kernels' and is not overwritten
    by the next run."""
    rng = np.random.default_rng(3)
    proto = _conv_block(rng, "Relu")
    proto.graph.node.pop()  # drop the Gemm: the flattened features are the output
    del proto.graph.output[:]
    proto.graph.output.append(tensor_info("f", ["N", 600]))
    model = nn_core.load(save(proto, tmp_path / "features.onnx"))
    assert model.plan_ops == ["Conv+Relu+MaxPool+Flatten"]
    first_x, second_x = (rng.standard_normal((1, 12, 14, 14)).astype(np.float32) for _ in range(2))
    first = model.run({"x": first_x})["f"]
    kept = first.copy()
    second = model.run({"x": second_x})["f"]
    np.testing.assert_array_equal(first, kept)
    assert not np.shares_memory(first, second)
    for x, got in ((first_x, first), (second_x, second)):
        want, _ = model.run_traced({"x": x})
        np.testing.assert_allclose(got, want["f"], rtol=1e-5, atol=1e-6)
        assert got.min() >= 0


def test_bundled_lenet_batch1_matches_general_kernels_across_runs():
    model = nn_core.load(ASSETS / "lenet5.onnx")
    spec = model.inputs[0]
    rng = np.random.default_rng(11)
    images = [rng.random((1, 1, 28, 28), dtype=np.float32) for _ in range(2)]
    name, output = spec.name, model.outputs[0].name
    first = model.run({name: images[0]})[output]
    kept = first.copy()
    second = model.run({name: images[1]})[output]
    np.testing.assert_array_equal(first, kept)
    for image, got in zip(images, (first, second), strict=True):
        want, _ = model.run_traced({name: image})
        np.testing.assert_allclose(got, want[output], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("activation, fused", [("Relu", True), ("Sigmoid", False), ("Clip", True),
                                               ("LeakyRelu", True), ("LeakyRelu-negative", False)])
@pytest.mark.parametrize("batch", [1, 3])
def test_an_activation_after_the_pooling_joins_the_conv(tmp_path, activation, fused, batch):
    """Conv -> MaxPool -> activation (PyTorch's classic MNIST net: relu(max_pool2d(conv(x)))): a non-decreasing
    activation the conv can fuse commutes with the max pooling and joins the conv's step; a decreasing one (a
    LeakyRelu of negative alpha) stays a step of its own, as does a Sigmoid (which a conv does not fuse). Against
    onnxruntime and the traced graph, three runs (the specialized one)."""
    ort = pytest.importorskip("onnxruntime")
    rng = np.random.default_rng(21)
    inits = {"w": (rng.standard_normal((16, 6, 5, 5)) * 0.2).astype(np.float32),
             "b": (rng.standard_normal(16) * 0.1).astype(np.float32),
             "fw": (rng.standard_normal((10, 400)) * 0.05).astype(np.float32),
             "fb": np.zeros(10, np.float32)}
    op = activation.split("-")[0]
    attrs = {"alpha": -0.5 if activation.endswith("negative") else 0.1} if op == "LeakyRelu" else {}
    extra = []
    if op == "Clip":
        inits.update({"low": np.array(-0.2, np.float32), "high": np.array(0.7, np.float32)})
        extra = ["low", "high"]
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv"),
             helper.make_node("MaxPool", ["c"], ["p"], name="pool", kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node(op, ["p", *extra], ["a"], name="act", **attrs),
             helper.make_node("Flatten", ["a"], ["f"], name="flatten"),
             helper.make_node("Gemm", ["f", "fw", "fb"], ["y"], name="fc", transB=1)]
    path = save(make_model(nodes, [tensor_info("x", ["N", 6, 14, 14])], [tensor_info("y", ["N", 10])], inits),
                tmp_path / "m.onnx")
    model = nn_core.load(path)
    assert (model.plan_ops == [f"Conv+MaxPool+{op}+Flatten+Gemm"]) == fused, model.plan_ops
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = rng.standard_normal((batch, 6, 14, 14)).astype(np.float32)
    for _ in range(3):
        got = model.run({"x": x})["y"]
    np.testing.assert_allclose(got, session.run(["y"], {"x": x})[0], rtol=1e-4, atol=1e-5)
    traced, _ = model.run_traced({"x": x})
    np.testing.assert_allclose(got, traced["y"], rtol=1e-4, atol=1e-5)
