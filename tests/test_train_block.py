"""Training plans run Conv -> Relu -> MaxPool 2x2 as one unit (nn_core.ops.conv_pool_train): its output and
gradients must be the node-by-node ones, for every geometry it accepts, ties included, and it must step aside
for the geometries it does not."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import make_model, tensor_info
from onnx import TensorProto, helper

import nn_core
from nn_core.builder import lenet5
from nn_core.optim import SGD
from nn_core.train import Trainer


def block_model(rng, channels, out_channels, size, kernel, pads, dtype=np.float64, pool_kernel=(2, 2),
                with_bias=True, second_conv=False, limits=None):
    """x -> [conv0 ->] conv -> relu -> maxpool -> flatten -> sum of squares-ish head (a Gemm to 3)."""
    kh, kw = kernel
    np_type = TensorProto.DOUBLE if dtype == np.float64 else TensorProto.FLOAT
    inits = {"w": (rng.standard_normal((out_channels, channels, kh, kw)) * 0.5).astype(dtype)}
    conv_inputs = ["h" if second_conv else "x", "w"]
    if with_bias:
        inits["b"] = (rng.standard_normal(out_channels) * 0.3).astype(dtype)
        conv_inputs.append("b")
    nodes = []
    if second_conv:
        inits["w0"] = (rng.standard_normal((channels, channels, 1, 1)) * 0.7).astype(dtype)
        nodes.append(helper.make_node("Conv", ["x", "w0"], ["h"], name="conv0"))
    nodes.append(helper.make_node("Conv", conv_inputs, ["c"], name="conv", pads=list(pads)))
    nodes.append(helper.make_node("Relu", ["c"], ["r"], name="relu"))
    nodes.append(helper.make_node("MaxPool", ["r"], ["p"], name="pool", kernel_shape=list(pool_kernel),
                                  strides=list(pool_kernel)))
    nodes.append(helper.make_node("Flatten", ["p"], ["f"], name="flatten"))
    out_h = size[0] + pads[0] + pads[2] - kh + 1
    out_w = size[1] + pads[1] + pads[3] - kw + 1
    features = out_channels * (out_h // pool_kernel[0]) * (out_w // pool_kernel[1])
    inits["w2"] = (rng.standard_normal((3, features)) * 0.3).astype(dtype)
    nodes.append(helper.make_node("Gemm", ["f", "w2"], ["y"], name="head", transB=1))
    model = make_model(nodes, [tensor_info("x", ["N", channels, *size], np_type)],
                       [tensor_info("y", ["N", 3], np_type)], inits)
    return nn_core.load_proto(model, "block", limits=limits)


def gradients(model, x, cotangent, wrt, blocks: bool):
    plan = model.gradient_plan(training=True)
    tape = plan.forward({"x": x}, dict(model.initializers), wrt=wrt if blocks else None)
    used = any(unit.active is not None for unit, _, _ in plan._blocks.values())
    return tape.outputs["y"], plan.backward(tape, {"y": cotangent}, wrt=wrt), used


def inputs_with_ties(rng, batch, channels, size, dtype):
    x = rng.standard_normal((batch, channels, *size)).astype(dtype)
    x[0] = 0  # a blank image: every window of the convolution's output is a four-way tie (the bias)
    x[1, :, : size[0] // 2] = 0.25  # flat regions: ties between equal positive values
    if batch > 2:
        x[2] = np.round(x[2])  # small integers: exact ties inside the image too
    return x


@pytest.mark.parametrize("channels,out_channels,size,kernel,pads", [
    (1, 4, (12, 12), (5, 5), (2, 2, 2, 2)),  # LeNet's conv1 shape, small
    (1, 3, (9, 11), (3, 3), (1, 0, 2, 1)),  # asymmetric pads, odd input sizes, even output
    (2, 5, (10, 8), (3, 3), (0, 0, 0, 0)),
    (3, 2, (8, 10), (4, 2), (1, 1, 2, 0)),  # even kernel sizes
    (1, 6, (6, 6), (1, 1), (0, 0, 0, 0)),  # a 1x1 kernel
    (12, 5, (10, 10), (5, 5), (0, 0, 0, 0)),  # LeNet's conv2 shape: channels-last columns
    (8, 3, (8, 9), (4, 5), (2, 1, 1, 0)),  # channels-last with pads and an even kernel height
])
def test_block_matches_node_by_node(channels, out_channels, size, kernel, pads):
    rng = np.random.default_rng(sum(size) + channels)
    model = block_model(rng, channels, out_channels, size, kernel, pads)
    x = inputs_with_ties(rng, 5, channels, size, np.float64)
    cotangent = rng.standard_normal((5, 3))
    wrt = ["w", "b", "w2"]
    y_ref, ref, used_ref = gradients(model, x, cotangent, wrt, blocks=False)
    y, got, used = gradients(model, x, cotangent, wrt, blocks=True)
    assert used and not used_ref
    np.testing.assert_allclose(y, y_ref, rtol=1e-12, atol=1e-12)  # (the summation order may differ)
    for name in wrt:
        np.testing.assert_allclose(got[name], ref[name], rtol=1e-11, atol=1e-11, err_msg=name)
    assert "r" not in got and "c" not in got  # the block's inside has no gradient of its own


@pytest.mark.parametrize("channels", [2, 8])  # NCHW and channels-last columns
def test_block_input_gradient_and_float32(channels):
    """dX through the block (it is not the first layer: conv0's weights are trained too), in float32."""
    rng = np.random.default_rng(7)
    model = block_model(rng, channels, 4, (10, 10), (5, 5), (1, 1, 1, 1), dtype=np.float32, second_conv=True)
    x = inputs_with_ties(rng, 4, channels, (10, 10), np.float32)
    cotangent = rng.standard_normal((4, 3)).astype(np.float32)
    wrt = ["w0", "w", "b", "w2"]
    _, ref, _ = gradients(model, x, cotangent, wrt, blocks=False)
    _, got, used = gradients(model, x, cotangent, wrt, blocks=True)
    assert used
    for name in wrt:
        scale = np.abs(ref[name]).max()
        np.testing.assert_allclose(got[name], ref[name], rtol=1e-4, atol=1e-5 * scale, err_msg=name)


def test_block_without_bias():
    rng = np.random.default_rng(3)
    model = block_model(rng, 1, 3, (8, 8), (3, 3), (1, 1, 1, 1), with_bias=False)
    x = inputs_with_ties(rng, 3, 1, (8, 8), np.float64)
    cotangent = rng.standard_normal((3, 3))
    _, ref, _ = gradients(model, x, cotangent, ["w"], blocks=False)
    _, got, used = gradients(model, x, cotangent, ["w"], blocks=True)
    assert used
    np.testing.assert_allclose(got["w"], ref["w"], rtol=1e-11, atol=1e-11)


@pytest.mark.parametrize("size,kernel,pads,pool", [
    ((9, 9), (3, 3), (1, 1, 1, 1), (2, 2)),  # odd output: the pooling drops a row, the unit does not apply
    ((8, 8), (3, 3), (1, 1, 1, 1), (3, 3)),  # not a 2x2 pooling
])
def test_block_steps_aside(size, kernel, pads, pool):
    rng = np.random.default_rng(11)
    model = block_model(rng, 1, 3, size, kernel, pads, pool_kernel=pool)
    x = inputs_with_ties(rng, 3, 1, size, np.float64)
    cotangent = rng.standard_normal((3, 3))
    _, ref, _ = gradients(model, x, cotangent, ["w", "b"], blocks=False)
    _, got, used = gradients(model, x, cotangent, ["w", "b"], blocks=True)
    assert not used
    for name in ("w", "b"):
        np.testing.assert_array_equal(got[name], ref[name])


def test_block_not_used_when_its_inside_is_asked_for_or_its_weights_are_not_trained():
    rng = np.random.default_rng(5)
    model = block_model(rng, 1, 3, (8, 8), (3, 3), (1, 1, 1, 1))
    x = inputs_with_ties(rng, 3, 1, (8, 8), np.float64)
    cotangent = rng.standard_normal((3, 3))
    for wrt in (["w", "r"], ["w2"]):
        _, _, used = gradients(model, x, cotangent, wrt, blocks=True)
        assert not used, wrt
    _, got, _ = gradients(model, x, cotangent, ["w", "r"], blocks=True)
    assert got["r"].shape == (3, 3, 8, 8)


def test_lenet_training_steps_match_with_and_without_the_block():
    """Three SGD steps of the LeNet-5 shape (float32) land on the same weights either way."""
    rng = np.random.default_rng(0)
    x = (rng.random((32, 1, 28, 28)) * (rng.random((32, 1, 28, 28)) > 0.8)).astype(np.float32)
    x[:2] = 0  # blank digits: ties in every window
    labels = rng.integers(0, 10, 32)
    results = []
    for blocks in (False, True):
        model = nn_core.load_proto(lenet5(seed=0), "lenet5")
        trainer = Trainer(model, SGD(lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4))
        if not blocks:
            trainer.plan._blocks = {}
            trainer.plan._forward_cache = None
        for _ in range(3):
            trainer.step(x, labels)
        used = [unit.active is not None for unit, _, _ in trainer.plan._blocks.values()]
        assert used == ([True, True] if blocks else [])  # both blocks: NCHW (conv1) and channels-last (conv2)
        results.append(trainer.params)
    for name, value in results[0].items():
        np.testing.assert_allclose(results[1][name], value, rtol=1e-4, atol=1e-5, err_msg=name)


@pytest.mark.parametrize("budget", [1, 3000, 20000])  # one image row per chunk; chunks across pooled rows
def test_block_chunks_of_image_rows(monkeypatch, budget):
    from nn_core.ops import conv_pool_train

    monkeypatch.setattr(conv_pool_train, "ROWS_CHUNK_BYTES", budget)
    test_block_matches_node_by_node(1, 3, (9, 11), (3, 3), (1, 0, 2, 1))
    test_block_input_gradient_and_float32(2)


def test_a_block_forward_then_a_backward_for_every_value():
    """A forward that ran the block as a unit, then backward without ``wrt``: the block's rule still answers
    (the weights' gradients are the node-by-node ones), instead of a pooling rule run on the unit's output."""
    rng = np.random.default_rng(9)
    model = block_model(rng, 1, 3, (8, 8), (3, 3), (1, 1, 1, 1))
    x = inputs_with_ties(rng, 3, 1, (8, 8), np.float64)
    cotangent = rng.standard_normal((3, 3))
    _, ref, _ = gradients(model, x, cotangent, ["w", "b"], blocks=False)
    plan = model.gradient_plan(training=True)
    tape = plan.forward({"x": x}, dict(model.initializers), wrt=["w", "b"])
    got = plan.backward(tape, {"y": cotangent})
    for name in ("w", "b"):
        np.testing.assert_allclose(got[name], ref[name], rtol=1e-11, atol=1e-11)


def test_block_keeps_the_nodes_limits():
    """A file's geometry is untrusted: run as a unit, the block is refused over the node's work budget, as the
    node-by-node forward is."""
    from nn_core.errors import ModelError

    rng = np.random.default_rng(4)
    model = block_model(rng, 1, 3, (8, 8), (3, 3), (1, 1, 1, 1), limits=nn_core.Limits(max_node_work=1000))
    x = inputs_with_ties(rng, 3, 1, (8, 8), np.float64)
    plan = model.gradient_plan(training=True)
    for wrt in (None, ["w", "b"]):
        with pytest.raises(ModelError, match="conv"):
            plan.forward({"x": x}, dict(model.initializers), wrt=wrt)
