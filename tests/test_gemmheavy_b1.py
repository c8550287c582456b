"""Issue 10, light_resnet50 at batch 1: a ResidualConv (conv -> residual sum -> ReLU) leaves its output short by
its conv's bias, carried into the 1x1 convolutions and the next residual sums that read it
(ops/residual.py carry_residual_biases), and runs the sum and its bound over the flat storage. Against
onnxruntime, the traced graph and the plan without the carry."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import make_model, ort_run, tensor_info
from onnx import helper

import nn_core
from nn_core.ops import residual
from nn_core.ops.residual import ProjectedResidual, ResidualConv


def _blocks(size: int, batch: int, tail: str = "pool", relu: bool = True, reader_pads: int = 0,
            reader_kernel: int = 1, biases: bool = True, visible: bool = False) -> object:
    """A stem convolution, then three identity blocks (1x1 + ReLU -> 1x1, summed with the block's input, then
    ReLU), then a projection block (a strided 1x1 main branch and a strided 1x1 projection summed), then ``tail``
    ("pool": a global average pool; "conv": a 1x1 convolution; "none": the last sum is the output). The first
    block's output is read by a convolution ``reader_kernel`` wide with ``reader_pads`` (the second block's
    first); ``visible`` also makes it a graph output."""
    rng = np.random.default_rng(size + batch)
    channels, inner = 16, 4
    inits = {"ws": rng.standard_normal((channels, 3, 3, 3)) * 0.3, "bs": rng.standard_normal(channels) * 0.3}
    nodes = [helper.make_node("Conv", ["x", "ws", "bs"], ["b0"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["b0"], ["r0"])]
    for block in range(1, 4):
        kernel = reader_kernel if block == 2 else 1
        pads = reader_pads if block == 2 else 0
        inits[f"wa{block}"] = rng.standard_normal((inner, channels, kernel, kernel)) * 0.3
        inits[f"ba{block}"] = rng.standard_normal(inner) * 0.3
        grown = 2 * pads - kernel + 1  # (a padded 1x1 reader grows the image: the next conv takes it back)
        inits[f"wb{block}"] = rng.standard_normal((channels, inner, grown + 1, grown + 1)) * 0.3
        inits[f"bb{block}"] = rng.standard_normal(channels) * 0.3
        last = f"r{block - 1}"
        nodes += [helper.make_node("Conv", [last, f"wa{block}", f"ba{block}"], [f"a{block}"], pads=[pads] * 4),
                  helper.make_node("Relu", [f"a{block}"], [f"ar{block}"]),
                  helper.make_node("Conv", [f"ar{block}", f"wb{block}"] + ([f"bb{block}"] if biases else []),
                                   [f"c{block}"]),
                  helper.make_node("Add", [f"c{block}", last], [f"s{block}"])]
        nodes.append(helper.make_node("Relu" if relu else "Identity", [f"s{block}"], [f"r{block}"]))
    inits.update(wm=rng.standard_normal((channels * 2, channels, 1, 1)) * 0.3, bm=rng.standard_normal(channels * 2),
                 wp=rng.standard_normal((channels * 2, channels, 1, 1)) * 0.3, bp=rng.standard_normal(channels * 2))
    nodes += [helper.make_node("Conv", ["r3", "wm", "bm"], ["m"], strides=[2, 2]),
              helper.make_node("Conv", ["r3", "wp", "bp"], ["p"], strides=[2, 2]),
              helper.make_node("Add", ["m", "p"], ["t"]),
              helper.make_node("Relu", ["t"], ["z"])]
    if tail == "pool":
        nodes.append(helper.make_node("GlobalAveragePool", ["z"], ["y"]))
    elif tail == "conv":
        inits["wt"] = rng.standard_normal((8, channels * 2, 1, 1)) * 0.3
        nodes.append(helper.make_node("Conv", ["z", "wt"], ["y"]))
    else:
        nodes.append(helper.make_node("Identity", ["z"], ["y"]))
    outputs = [tensor_info("y", None)] + ([tensor_info("r1", None)] if visible else [])
    inits = {name: value.astype(np.float32) for name, value in inits.items()}
    return make_model(nodes, [tensor_info("x", [batch, 3, size, size])], outputs, inits)


def _carried(loaded) -> list[bool]:
    return [step.kernel.carry is not None for step in loaded._fast_plan().steps if type(step.kernel) is ResidualConv]


def _check(model, batch: int, size: int, seed: int = 0) -> None:
    loaded = nn_core.load_proto(model)
    x = np.random.default_rng(seed).standard_normal((batch, 3, size, size)).astype(np.float32)
    names = [output.name for output in model.graph.output]
    first = loaded.run({"x": x})
    kept = {name: first[name].copy() for name in names}
    want = ort_run(model, {"x": x})
    traced = loaded.run_traced({"x": x})[0]
    for name, value in zip(names, want, strict=True):
        np.testing.assert_allclose(first[name], value, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(first[name], traced[name], rtol=1e-4, atol=1e-4)
    second = loaded.run({"x": x * 0.5})
    for name, value in zip(names, ort_run(model, {"x": x * 0.5}), strict=True):
        np.testing.assert_array_equal(first[name], kept[name])  # fresh outputs: the ones a caller holds stay
        np.testing.assert_allclose(second[name], value, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("size,batch,tail", [
    (96, 1, "pool"),  # the last identity block read by the projection block
    (100, 1, "conv"),
    (97, 2, "none"),  # batch 2, odd size; the projection block's sum is the output
])
def test_identity_blocks_carry_their_biases_and_match_onnxruntime(size, batch, tail):
    model = _blocks(size, batch, tail)
    assert _carried(nn_core.load_proto(model)) == [True, True, True]
    _check(model, batch, size)


def test_a_sum_without_relu_carries_too():
    model = _blocks(96, 1, relu=False)
    assert _carried(nn_core.load_proto(model)) == [True, True, True]
    _check(model, 1, 96)


def test_convolutions_without_bias_carry_the_shortcuts_constant():
    model = _blocks(96, 1, biases=False)
    assert _carried(nn_core.load_proto(model)) == [True, True, True]
    _check(model, 1, 96)


@pytest.mark.parametrize("pads,kernel,visible", [(1, 1, False), (1, 3, False), (0, 1, True)])
def test_a_block_read_by_a_padded_or_wide_convolution_or_the_caller_is_not_carried(pads, kernel, visible):
    """The first block's output read by a padded 1x1 or a 3x3 convolution (which would add the constant at the
    padding too), or handed to the caller, keeps its bias; the blocks after it still carry theirs."""
    model = _blocks(96, 1, reader_pads=pads, reader_kernel=kernel, visible=visible)
    assert _carried(nn_core.load_proto(model)) == [False, True, True]
    _check(model, 1, 96)


def test_the_carry_matches_the_plan_without_it_and_keeps_a_nan():
    model = _blocks(96, 1, "none")
    x = np.random.default_rng(3).standard_normal((1, 3, 96, 96)).astype(np.float32)
    x[0, :, 20, 30] = np.nan
    carried = nn_core.load_proto(model).run({"x": x})["y"]
    original = residual.carry_residual_biases
    residual.carry_residual_biases = lambda steps, outputs: steps
    try:
        plain = nn_core.load_proto(model)
        assert _carried(plain) == [False, False, False]
        want = plain.run({"x": x})["y"]
    finally:
        residual.carry_residual_biases = original
    np.testing.assert_array_equal(np.isnan(carried), np.isnan(want))
    assert np.isnan(carried).any()
    np.testing.assert_allclose(carried, want, rtol=1e-5, atol=1e-5)


def test_a_carried_step_gives_the_same_values_in_every_layout():
    """The kernel called with its image and shortcut channels-last (the flat pass over channels-last storage),
    both NCHW-contiguous (the flat pass over NCHW rows: its bound laid out per channel) or in different layouts
    (no flat pass): the same sum and bound."""
    model = _blocks(96, 1, "none")
    plan = nn_core.load_proto(model)._fast_plan()
    step = next(step for step in plan.steps if type(step.kernel) is ResidualConv)
    kernel = step.kernel
    assert kernel.carry is not None
    rng = np.random.default_rng(4)
    values = dict(plan.constants)
    image = rng.standard_normal((1, 4, 96, 96)).astype(np.float32)
    shortcut = rng.standard_normal((1, 16, 96, 96)).astype(np.float32)

    def last(a: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(a.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)

    def run(x: np.ndarray, other: np.ndarray) -> np.ndarray:
        return kernel.run(*[x if name.startswith("ar") else values[name] for name in step.inputs[:-1]], other)

    want = run(last(image), last(shortcut))
    assert want.transpose(0, 2, 3, 1).flags.c_contiguous
    for x, other in ((image, shortcut), (image, last(shortcut)), (last(image), shortcut)):
        np.testing.assert_allclose(run(x, other), want, rtol=1e-5, atol=1e-5)
    bound = -kernel.carry.reshape(-1, 1, 1).astype(np.float32)
    assert (want >= bound).all() and (want == bound).any()
    # a shortcut that broadcasts goes through the Add kernel, then the bound
    per_channel = rng.standard_normal((1, 16, 1, 1)).astype(np.float32)
    product = kernel.conv.run(*[image if name.startswith("ar") else values[name] for name in step.inputs[:-1]])
    np.testing.assert_allclose(run(image, per_channel), np.maximum(product + per_channel, bound), rtol=1e-6,
                               atol=1e-6)


def test_the_projection_block_takes_the_constant_into_its_stacked_bias():
    model = _blocks(96, 1, "pool")
    loaded = nn_core.load_proto(model)
    assert ProjectedResidual in [type(step.kernel) for step in loaded._fast_plan().steps]
    _check(model, 1, 96, seed=5)


def _pooled_conv(size: int, pool: dict) -> object:
    """A 3x3 48 -> 192 convolution (332 KB of weights, more than BLOCKED_WEIGHT_BYTES) with a bias and a ReLU,
    then a MaxPool of ``pool``: Inception-v2's 64 -> 192 layer's kind."""
    rng = np.random.default_rng(size)
    inits = {"w": (rng.standard_normal((192, 48, 3, 3)) * 0.1).astype(np.float32),
             "b": rng.standard_normal(192).astype(np.float32)}
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("MaxPool", ["r"], ["y"], **pool)]
    return make_model(nodes, [tensor_info("x", [1, 48, size, size])], [tensor_info("y", None)], inits)


@pytest.mark.parametrize("size,pool", [
    (100, {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}),
    (97, {"kernel_shape": [3, 3], "strides": [2, 2]}),
    (99, {"kernel_shape": [3, 3], "strides": [2, 2], "ceil_mode": 1}),
])
def test_a_pooled_convolution_of_heavier_weights_is_made_and_pooled_in_bands(size, pool):
    """Its product (7 MB) is larger than BANDED_POOL_BYTES: blocks of output rows, pooled band by band, with the
    values of the plan that pools the whole product and onnxruntime's."""
    from nn_core.ops import conv

    model = _pooled_conv(size, pool)
    x = np.random.default_rng(6).standard_normal((1, 48, size, size)).astype(np.float32)
    banded = nn_core.load_proto(model)
    got = banded.run({"x": x})["y"]
    kept = got.copy()
    plans = [plan for step in banded._fast_plan().steps for plan, _ in getattr(step.kernel, "plans", {}).values()]
    assert any(plan.block_rows < plan.out_sizes[0] for plan in plans)
    saved = conv.BANDED_WEIGHT_BYTES
    conv.BANDED_WEIGHT_BYTES = conv.BLOCKED_WEIGHT_BYTES
    try:
        whole = nn_core.load_proto(model)
        want = whole.run({"x": x})["y"]
        plans = [plan for step in whole._fast_plan().steps for plan, _ in getattr(step.kernel, "plans", {}).values()]
        assert all(plan.block_rows == plan.out_sizes[0] for plan in plans)
    finally:
        conv.BANDED_WEIGHT_BYTES = saved
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got, ort_run(model, {"x": x})[0], rtol=1e-4, atol=1e-4)
    banded.run({"x": x * 2})
    np.testing.assert_array_equal(got, kept)  # a fresh output


@pytest.mark.parametrize("batch", [1, 2])
def test_a_row_shift_convolutions_relu_runs_over_its_storage(batch):
    """ResNet's 3x3 64 -> 64 kind (_RowShiftPlan) with a fused ReLU, rectified over its channels-last storage:
    the traced kernels' and onnxruntime's values within rounding; a fresh output."""
    from nn_core.ops.conv import _RowShiftPlan

    rng = np.random.default_rng(7)
    inits = {"ws": (rng.standard_normal((32, 3, 3, 3)) * 0.3).astype(np.float32),
             "w": (rng.standard_normal((32, 32, 3, 3)) * 0.1).astype(np.float32),
             "b": rng.standard_normal(32).astype(np.float32)}
    nodes = [helper.make_node("Conv", ["x", "ws"], ["s"], pads=[1, 1, 1, 1]),
             helper.make_node("Conv", ["s", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["y"])]
    model = make_model(nodes, [tensor_info("x", [batch, 3, 97, 97])], [tensor_info("y", None)], inits)
    loaded = nn_core.load_proto(model)
    x = rng.standard_normal((batch, 3, 97, 97)).astype(np.float32)
    got = loaded.run({"x": x})["y"]
    kept = got.copy()
    plans = [plan for step in loaded._fast_plan().steps for plan, _ in getattr(step.kernel, "plans", {}).values()]
    assert any(type(plan) is _RowShiftPlan for plan in plans)
    assert (got >= 0).all() and (got == 0).any()
    np.testing.assert_allclose(got, loaded.run_traced({"x": x})[0]["y"], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got, ort_run(model, {"x": x})[0], rtol=1e-4, atol=1e-4)
    loaded.run({"x": -x})
    np.testing.assert_array_equal(got, kept)
