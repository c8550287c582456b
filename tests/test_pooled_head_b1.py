"""PooledHead: a pooled, flattened convolution block and the dense layers that read it as one step, whose batch-1
runner pools straight into the head's permuted input (DenseChain.fed), against the traced kernels and
onnxruntime."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import conv_block_nodes, make_model, save, tensor_info
from onnx import helper

import nn_core
from nn_core.ops.dense_chain import DenseChain
from nn_core.ops.pooled_head import FedPooledHead, PooledHead
from nn_core.ops.registry import Parts


def _block_and_head(rng: np.random.Generator, activation: str | None, channels: int = 24, size: int = 14,
                    head_activation: str = "Relu", output_conv: bool = False) -> object:
    """x (N, 12, size, size) -> Conv 5x5 -> activation -> MaxPool 2x2 -> Flatten -> Gemm 32 -> act -> Gemm 10."""
    pooled = (size - 4) // 2
    flat = channels * pooled * pooled
    inits = {"w": (rng.standard_normal((channels, 12, 5, 5)) * 0.1).astype(np.float32),
             "b": (rng.standard_normal(channels) * 0.1).astype(np.float32),
             "w1": (rng.standard_normal((flat, 32)) * 0.05).astype(np.float32),
             "b1": (rng.standard_normal(32) * 0.1).astype(np.float32),
             "w2": (rng.standard_normal((32, 10)) * 0.1).astype(np.float32),
             "b2": (rng.standard_normal(10) * 0.1).astype(np.float32)}
    nodes = conv_block_nodes(activation)
    nodes += [helper.make_node("Flatten", ["p"], ["f"], name="flatten"),
              helper.make_node("Gemm", ["f", "w1", "b1"], ["h"], name="fc1"),
              helper.make_node(head_activation, ["h"], ["r"], name="fc1_act"),
              helper.make_node("Gemm", ["r", "w2", "b2"], ["y"], name="fc2")]
    outputs = [tensor_info("y", ["N", 10])] + ([tensor_info("f", ["N", flat])] if output_conv else [])
    return make_model(nodes, [tensor_info("x", ["N", 12, size, size])], outputs, inits)


def _onnxruntime(path, x: np.ndarray) -> np.ndarray:
    ort = pytest.importorskip("onnxruntime")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(["y"], {"x": x})[0]


def _specialized(model: nn_core.Model, x: np.ndarray) -> np.ndarray:
    """The output of a run through the shape's specialized plan function (the third run of the shape)."""
    for _ in range(2):
        model.run({"x": x})
    assert x.shape in model._fast_plan().by_shape
    return model.run({"x": x})["y"]


@pytest.mark.parametrize("activation", ["Relu", "LeakyRelu", None])
@pytest.mark.parametrize("channels,size", [(24, 14), (7, 13), (16, 6)])
@pytest.mark.parametrize("head_activation", ["Relu", "Tanh"])
def test_fused_head_matches_the_traced_kernels_and_onnxruntime(tmp_path, activation, channels, size,
                                                               head_activation):
    rng = np.random.default_rng(channels * 10 + size)
    path = save(_block_and_head(rng, activation, channels, size, head_activation), tmp_path / "m.onnx")
    model = nn_core.load(path)
    (step,) = model._fast_plan().steps
    assert type(step.kernel) is PooledHead and type(step.kernel.chain) is DenseChain
    for seed in range(3):
        x = np.random.default_rng(seed).standard_normal((1, 12, size, size)).astype(np.float32)
        got = _specialized(model, x)
        assert model._fast_plan().by_shape[x.shape].__globals__["k0"] != step.kernel.run  # the fused runner
        traced, _ = model.run_traced({"x": x})
        np.testing.assert_allclose(got, traced["y"], rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(got, _onnxruntime(path, x), rtol=1e-4, atol=1e-5)


def test_other_batches_run_the_two_kernels(tmp_path):
    """Batch 3 (no fused runner) and batch 1 after it: both right, and the batch-1 output a fresh array."""
    rng = np.random.default_rng(3)
    path = save(_block_and_head(rng, "Relu"), tmp_path / "m.onnx")
    model = nn_core.load(path)
    many = rng.standard_normal((3, 12, 14, 14)).astype(np.float32)
    one = many[:1].copy()
    first = _specialized(model, one)
    kept = first.copy()
    np.testing.assert_allclose(_specialized(model, many), _onnxruntime(path, many), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(_specialized(model, one * 2), _onnxruntime(path, one * 2), rtol=1e-4, atol=1e-5)
    assert np.array_equal(first, kept)


def test_nan_and_infinity_propagate_as_in_the_kernels(tmp_path):
    rng = np.random.default_rng(4)
    path = save(_block_and_head(rng, "Relu"), tmp_path / "m.onnx")
    model = nn_core.load(path)
    x = rng.standard_normal((1, 12, 14, 14)).astype(np.float32)
    x[0, 3, 2, 2], x[0, 5, 9, 11] = np.nan, np.inf
    with np.errstate(invalid="ignore", over="ignore"):
        got = _specialized(model, x)
        traced, _ = model.run_traced({"x": x})
    np.testing.assert_array_equal(np.isnan(got), np.isnan(traced["y"]))


def test_no_fusion_when_the_block_has_another_reader(tmp_path):
    """The flattened block is also a graph output: it must be handed out, so the head stays its own step."""
    rng = np.random.default_rng(5)
    path = save(_block_and_head(rng, "Relu", output_conv=True), tmp_path / "m.onnx")
    model = nn_core.load(path)
    assert not any(type(s.kernel) is PooledHead for s in model._fast_plan().steps)
    x = rng.standard_normal((1, 12, 14, 14)).astype(np.float32)
    for _ in range(3):
        outputs = model.run({"x": x})
    traced, _ = model.run_traced({"x": x})
    np.testing.assert_allclose(outputs["y"], traced["y"], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(outputs["f"], traced["f"], rtol=1e-5, atol=1e-6)


def test_the_fed_order_must_be_a_permutation(tmp_path):
    rng = np.random.default_rng(6)
    model = nn_core.load(save(_block_and_head(rng, "Relu"), tmp_path / "m.onnx"))
    chain = model._fast_plan().steps[0].kernel.chain
    with pytest.raises(ValueError, match="permutation"):
        chain.fed(np.zeros(chain.width, np.int64))
    fed_input, _ = chain.fed(np.arange(chain.width)[::-1].copy())
    assert fed_input.shape == (1, chain.width + 1) and fed_input[0, -1] == 1


def _lenet(rng: np.random.Generator, positive_first: bool = False) -> object:
    """The bundled LeNet's shape: x (N, 1, 28, 28) -> Conv 5x5 pad 2 to 12 -> ReLU -> MaxPool 2 -> Conv 5x5 to
    24 -> ReLU -> MaxPool 2 -> Flatten -> Gemm 120 -> ReLU -> Gemm 10; ``positive_first``: conv1's weights all
    positive."""
    w1 = rng.standard_normal((12, 1, 5, 5)).astype(np.float32) * 0.3
    inits = {"w1": np.abs(w1) if positive_first else w1,
             "b1": (rng.standard_normal(12) * 0.1).astype(np.float32),
             "w2": (rng.standard_normal((24, 12, 5, 5)) * 0.1).astype(np.float32),
             "b2": (rng.standard_normal(24) * 0.1).astype(np.float32),
             "f1": (rng.standard_normal((600, 120)) * 0.05).astype(np.float32),
             "g1": (rng.standard_normal(120) * 0.1).astype(np.float32),
             "f2": (rng.standard_normal((120, 10)) * 0.1).astype(np.float32),
             "g2": (rng.standard_normal(10) * 0.1).astype(np.float32)}
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[2, 2, 2, 2]),
             helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
             helper.make_node("MaxPool", ["r1"], ["p1"], name="pool1", kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("Conv", ["p1", "w2", "b2"], ["c2"], name="conv2"),
              helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
              helper.make_node("MaxPool", ["r2"], ["p2"], name="pool2", kernel_shape=[2, 2], strides=[2, 2]),
              helper.make_node("Flatten", ["p2"], ["f"], name="flatten"),
              helper.make_node("Gemm", ["f", "f1", "g1"], ["h"], name="fc1"),
              helper.make_node("Relu", ["h"], ["hr"], name="fc1_relu"),
              helper.make_node("Gemm", ["hr", "f2", "g2"], ["y"], name="fc2")]
    return make_model(nodes, [tensor_info("x", ["N", 1, 28, 28])], [tensor_info("y", ["N", 10])], inits)


def test_lenet_is_one_step_fed_by_its_first_block(tmp_path):
    rng = np.random.default_rng(11)
    path = save(_lenet(rng), tmp_path / "lenet.onnx")
    model = nn_core.load(path)
    (step,) = model._fast_plan().steps
    assert type(step.kernel) is FedPooledHead
    for seed in range(3):
        x = np.random.default_rng(seed).random((1, 1, 28, 28), dtype=np.float32)
        got = _specialized(model, x)
        assert model._fast_plan().by_shape[x.shape].__globals__["k0"] != step.kernel.run  # the fused runner
        traced, _ = model.run_traced({"x": x})
        np.testing.assert_allclose(got, traced["y"], rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(got, _onnxruntime(path, x), rtol=1e-4, atol=1e-5)
    many = rng.random((2, 1, 28, 28), dtype=np.float32)
    np.testing.assert_allclose(_specialized(model, many), _onnxruntime(path, many), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("where", [(0, 0), (27, 27), (0, 27), (13, 14), (2, 25), (27, 1)])
def test_a_nan_made_by_the_first_blocks_layout_is_redone_by_the_kernels(tmp_path, where):
    """conv1's weights are positive, so a -inf pixel gives -inf, then 0 after the ReLU, in the kernels: a finite
    output. The phase layout's zero weights make it 0 * -inf = NaN instead, which reaches every output value;
    the fused runner sees it in the one value it checks and hands back the kernels' finite output."""
    rng = np.random.default_rng(12)
    model = nn_core.load(save(_lenet(rng, positive_first=True), tmp_path / "lenet.onnx"))
    x = rng.random((1, 1, 28, 28), dtype=np.float32)
    _specialized(model, x)
    x[0, 0, where[0], where[1]] = -np.inf
    with np.errstate(invalid="ignore", over="ignore"):
        got = model.run({"x": x})["y"]
        traced, _ = model.run_traced({"x": x})
    assert np.isfinite(traced["y"]).all()
    np.testing.assert_allclose(got, traced["y"], rtol=1e-4, atol=1e-5)
    x[0, 0, where[0], where[1]] = np.nan  # a NaN stays NaN everywhere, as in the kernels
    with np.errstate(invalid="ignore"):
        got = model.run({"x": x})["y"]
    assert np.isnan(got).all()


def _small_cnn(rng: np.random.Generator) -> object:
    """Two 3x3 blocks of few channels (their plans pool NCHW, which the fused runners do not take) and one dense
    layer: x (N, 1, 28, 28) -> Conv 1->6 -> ReLU -> MaxPool -> Conv 6->8 -> ReLU -> MaxPool -> Flatten -> Gemm."""
    inits = {"w1": (rng.standard_normal((6, 1, 3, 3)) * 0.3).astype(np.float32),
             "b1": (rng.standard_normal(6) * 0.1).astype(np.float32),
             "w2": (rng.standard_normal((8, 6, 3, 3)) * 0.2).astype(np.float32),
             "b2": (rng.standard_normal(8) * 0.1).astype(np.float32),
             "f": (rng.standard_normal((392, 10)) * 0.05).astype(np.float32),
             "g": (rng.standard_normal(10) * 0.1).astype(np.float32)}
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("MaxPool", ["r1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("Conv", ["p1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c2"], ["r2"]),
             helper.make_node("MaxPool", ["r2"], ["p2"], kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("Flatten", ["p2"], ["f2"]),
             helper.make_node("Gemm", ["f2", "f", "g"], ["y"])]
    return make_model(nodes, [tensor_info("x", ["N", 1, 28, 28])], [tensor_info("y", ["N", 10])], inits)


def test_shapes_the_fused_runners_do_not_take_run_as_parts(tmp_path):
    """The step is one FedPooledHead with a one-layer head, but its plans pool NCHW: the specialized function
    calls the three kernels' runners in turn on the step's line (Parts), with the kernels' values bit for bit."""
    rng = np.random.default_rng(13)
    path = save(_small_cnn(rng), tmp_path / "cnn.onnx")
    model = nn_core.load(path)
    (step,) = model._fast_plan().steps
    assert type(step.kernel) is FedPooledHead and len(step.kernel.head.chain.kernels) == 1
    x = rng.random((1, 1, 28, 28), dtype=np.float32)
    got = _specialized(model, x)
    plan = model._fast_plan()
    function = plan.by_shape[x.shape]
    assert {"k0_0", "k0_1", "k0_2"} <= set(function.__code__.co_names)
    assert np.array_equal(got, plan.function(x)[0])
    np.testing.assert_allclose(got, _onnxruntime(path, x), rtol=1e-4, atol=1e-5)
    for seed in range(3):  # later inputs, and another batch through the parts' own checks
        x = np.random.default_rng(seed).random((1 + seed, 1, 28, 28), dtype=np.float32)
        np.testing.assert_allclose(model.run({"x": x})["y"], _onnxruntime(path, x), rtol=1e-4, atol=1e-5)


def test_a_failing_part_is_named(tmp_path):
    rng = np.random.default_rng(14)
    model = nn_core.load(save(_small_cnn(rng), tmp_path / "cnn.onnx"))
    x = rng.random((1, 1, 28, 28), dtype=np.float32)
    _specialized(model, x)
    plan = model._fast_plan()

    def broken(*_args):
        raise ValueError("part failed")

    plan.by_shape[x.shape].__globals__["k0_1"] = broken
    with pytest.raises(nn_core.ModelError, match=rf"{plan.steps[0].node.name}.*part failed"):
        model.run({"x": x})


def test_parts_that_do_not_take_the_steps_inputs_leave_the_kernel(tmp_path, monkeypatch):
    """Parts whose argument counts do not add up to the step's inputs are not used: the kernel's run is."""
    rng = np.random.default_rng(15)
    model = nn_core.load(save(_small_cnn(rng), tmp_path / "cnn.onnx"))
    (step,) = model._fast_plan().steps
    monkeypatch.setattr(step.kernel, "specialize", lambda *inputs: Parts(((step.kernel.run, 2),)))
    x = rng.random((1, 1, 28, 28), dtype=np.float32)
    got = _specialized(model, x)
    assert model._fast_plan().by_shape[x.shape].__globals__["k0"] == step.kernel.run
    assert np.array_equal(got, model._fast_plan().function(x)[0])


@pytest.mark.parametrize("softmax", [False, True])
def test_one_dense_layer_is_fed_too(tmp_path, softmax):
    """Conv block -> Flatten -> one Gemm (and a Softmax it absorbs): the fused runner pools into the layer's
    fed input, whose weights hold its bias."""
    rng = np.random.default_rng(16)
    inits = {"w": (rng.standard_normal((24, 12, 5, 5)) * 0.1).astype(np.float32),
             "b": (rng.standard_normal(24) * 0.1).astype(np.float32),
             "f": (rng.standard_normal((600, 10)) * 0.05).astype(np.float32),
             "g": (rng.standard_normal(10) * 0.5).astype(np.float32)}
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"]), helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("MaxPool", ["r"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("Flatten", ["p"], ["f2"]),
             helper.make_node("Gemm", ["f2", "f", "g"], ["s" if softmax else "y"])]
    if softmax:
        nodes.append(helper.make_node("Softmax", ["s"], ["y"], axis=1))
    path = save(make_model(nodes, [tensor_info("x", ["N", 12, 14, 14])], [tensor_info("y", ["N", 10])], inits),
                tmp_path / "m.onnx")
    model = nn_core.load(path)
    (step,) = model._fast_plan().steps
    assert type(step.kernel) is PooledHead and len(step.kernel.chain.kernels) == 1
    for seed in range(3):
        x = np.random.default_rng(seed).standard_normal((1, 12, 14, 14)).astype(np.float32)
        got = _specialized(model, x)
        assert model._fast_plan().by_shape[x.shape].__globals__["k0"] != step.kernel.run
        np.testing.assert_allclose(got, _onnxruntime(path, x), rtol=1e-4, atol=1e-6)
    many = rng.standard_normal((3, 12, 14, 14)).astype(np.float32)
    np.testing.assert_allclose(_specialized(model, many), _onnxruntime(path, many), rtol=1e-4, atol=1e-6)
