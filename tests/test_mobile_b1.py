"""A separable chain's pointwise (and head) biases carried down the chain (nn_core/ops/separable.py,
SeparableChain._carries): a layer's output is left short by its bias, clamped to its activation's shifted bounds,
the next depthwise conv's padding rows hold minus that constant and its sums take it on as one output row's worth
of bias, and the chain's mean over the image adds its mean back. Against the general kernels of the traced plan
and onnxruntime, with biases large enough that many values cross the bounds."""

import numpy as np
import pytest
from helpers import ort_run
from onnx import helper, numpy_helper
from test_separable_b1 import MOBILENET_BLOCKS, _separable_net
from test_separable_int8 import _quantized

import nn_core
import nn_core.plan as plan
from nn_core.ops.qconv_pair import CentredConvPair
from nn_core.ops.separable import SeparableChain


def _loud_biases(proto: object, scale: float = 4.0, without: tuple[str, ...] = ()) -> object:
    """``proto`` with every conv bias ``scale`` times larger (``without``: the layers whose bias goes)."""
    for index, init in enumerate(proto.graph.initializer):
        if init.name.endswith("_b"):
            proto.graph.initializer[index].CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) * scale,
                                                                            init.name))
    for node in proto.graph.node:
        if node.name in without:
            node.input[2] = ""
    return proto


def _chain(model: nn_core.Model) -> SeparableChain:
    (chain,) = [s.kernel for s in model._fast_plan().steps if isinstance(s.kernel, SeparableChain)]
    return chain


def _carries(model: nn_core.Model) -> list[bool]:
    chain = _chain(model)
    return chain._carries(list(zip(chain.kernels[::2], chain.kernels[1::2], strict=True)))


def _check(proto: object, batch: int = 1, seed: int = 0, runs: int = 2) -> nn_core.Model:
    """Run after run (buffers reused) against the traced general kernels and onnxruntime, every output kept."""
    model = nn_core.load_proto(proto)
    dims = tuple(d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim[1:])
    kept = []
    for run in range(runs):
        x = np.random.default_rng(seed + run).standard_normal((batch, *dims)).astype(np.float32)
        got = model.run({"x": x})["y"]
        want, _ = model.run_traced({"x": x})
        np.testing.assert_allclose(got, want["y"], rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(got, ort_run(proto, {"x": x})[0], rtol=1e-4, atol=1e-4)
        kept.append((got, got.copy()))
    for got, copy in kept:
        np.testing.assert_array_equal(got, copy)
    return model


@pytest.mark.parametrize("activation", ["Relu", "Clip"])
@pytest.mark.parametrize("size", [(12, 12), (13, 11), (5, 6)])
def test_every_bias_is_carried_down_a_mobilenet_chain(activation, size):
    # stride-2 blocks: the pointwise conv before them writes column phases (_PhaseColumns) at even widths
    rng = np.random.default_rng(1)
    model = _check(_loud_biases(_separable_net(rng, MOBILENET_BLOCKS, activation, size=size)))
    assert _carries(model) == [True] * (len(MOBILENET_BLOCKS) + 1)


@pytest.mark.parametrize("block", [
    {"out": 8, "pads": [0, 0, 0, 0]},
    {"out": 8, "pads": [2, 0, 1, 2]},
    {"out": 8, "pads": [1, 2, 0, 1], "strides": [2, 3]},
    {"out": 8, "pads": [2, 2, 2, 2], "dilations": [2, 2]},
    {"out": 8, "pads": [1, 1, 1, 1], "strides": [2, 1]},
    {"out": 8, "kernel": (5, 3), "pads": [2, 1, 2, 1]},
    {"out": 8, "pads": [1, 5, 1, 5]},  # side padding wider than the image
])
@pytest.mark.parametrize("size", [(7, 4), (8, 6)])
def test_a_carried_constant_through_each_depthwise_geometry(block, size):
    rng = np.random.default_rng(2)
    model = _check(_loud_biases(_separable_net(rng, [{"out": 12}, block, {"out": 6}], "Relu", channels=12,
                                               size=size)))
    assert _carries(model) == [True] * 4


def test_without_a_head_bias_the_chain_carries_from_its_first_pointwise_conv():
    rng = np.random.default_rng(3)
    model = _check(_loud_biases(_separable_net(rng, MOBILENET_BLOCKS, "Relu"), without=("stem",)))
    assert _carries(model) == [False] + [True] * len(MOBILENET_BLOCKS)


def test_without_a_head_the_first_depthwise_conv_reads_the_input_as_it_is():
    rng = np.random.default_rng(4)
    model = _check(_loud_biases(_separable_net(rng, MOBILENET_BLOCKS, "Relu", stem=False)))
    assert _carries(model) == [False] + [True] * len(MOBILENET_BLOCKS)


def test_a_leaky_relu_carries_nothing():
    rng = np.random.default_rng(5)
    model = _check(_loud_biases(_separable_net(rng, MOBILENET_BLOCKS, "LeakyRelu")))
    assert _carries(model) == [False] * (len(MOBILENET_BLOCKS) + 1)


def test_a_chain_output_without_a_mean_adds_its_last_bias():
    rng = np.random.default_rng(6)
    proto = _loud_biases(_separable_net(rng, MOBILENET_BLOCKS, "Relu", size=(9, 10)))
    # the ReduceMean goes: the last pointwise conv's activation is the graph's output
    (mean,) = [node for node in proto.graph.node if node.op_type == "ReduceMean"]
    last = mean.input[0]
    proto.graph.node.remove(mean)
    for node in proto.graph.node:
        if last in node.output:
            node.output[0] = "y"
    proto.graph.output[0].type.tensor_type.shape.Clear()
    model = _check(proto)
    assert _carries(model) == [True] * len(MOBILENET_BLOCKS) + [False]


@pytest.mark.parametrize("batch", [2, 3])
def test_larger_batches_run_the_layers_kernels(batch):
    rng = np.random.default_rng(7)
    _check(_loud_biases(_separable_net(rng, MOBILENET_BLOCKS, "Clip")), batch=batch)


def test_a_nan_input_gives_nan_where_the_layers_do():
    rng = np.random.default_rng(8)
    proto = _loud_biases(_separable_net(rng, MOBILENET_BLOCKS, "Relu"))
    model = nn_core.load_proto(proto)
    x = rng.standard_normal((1, 3, 12, 12)).astype(np.float32)
    x[0, 1, 5, 0] = np.nan
    want, _ = model.run_traced({"x": x})
    np.testing.assert_array_equal(np.isnan(model.run({"x": x})["y"]), np.isnan(want["y"]))


def _pooled_after_first_block(proto: object) -> object:
    """``proto`` (_separable_net) with a 2x2 MaxPool after the first block's pointwise conv (as dwsep's)."""
    (reader,) = [node for node in proto.graph.node if node.name == "dw1"]
    source = reader.input[0]
    reader.input[0] = "pooled"
    index = next(i for i, node in enumerate(proto.graph.node) if source in node.output)
    proto.graph.node.insert(index + 1, helper.make_node("MaxPool", [source], ["pooled"], kernel_shape=[2, 2],
                                                        strides=[2, 2]))
    return proto


@pytest.mark.parametrize("activation", ["Relu", "Clip"])
@pytest.mark.parametrize(("size", "stride"), [((28, 28), 2), ((13, 10), 2), ((12, 12), 1)])
def test_a_pooled_pointwise_conv_carries_its_bias_per_channel_into_the_next_block(activation, size, stride):
    rng = np.random.default_rng(9)
    blocks = [{"out": 12}, {"out": 16, "strides": [stride, stride]}]
    proto = _pooled_after_first_block(_loud_biases(_separable_net(rng, blocks, activation, channels=8, size=size)))
    model = _check(proto)
    assert "MaxPool" in model.plan_ops[0] and len(model.plan_ops) == 1
    # not into the first block (its pooled pointwise conv would read a constant per column), then on
    assert _carries(model) == [False, True, True]


def test_a_stem_pair_lays_its_requantization_over_each_layout_of_its_sums(monkeypatch):
    """qconv_pair.CentredConvPair._centre: one centring requantizer per layout of the stem's sums (batch 1 and 3
    here), each bit-exact with the plan without the pair and onnxruntime, run after run."""
    proto = _quantized(np.random.default_rng(10), MOBILENET_BLOCKS, "Relu", size=(13, 11))
    ours = nn_core.load_proto(proto)
    with monkeypatch.context() as patch:
        patch.setattr(plan, "fuse_centred_conv_pairs", lambda steps, outputs: steps)
        plain = nn_core.load_proto(proto)
        plain._fast_plan()
    (pair,) = [s.kernel for s in ours._fast_plan().steps if isinstance(s.kernel, CentredConvPair)]
    rng = np.random.default_rng(11)
    kept = []
    for batch, scale in ((1, 1.0), (3, 1.0), (1, 25.0)):  # saturating last
        x = (rng.standard_normal((batch, 3, 13, 11)) * scale).astype(np.float32)
        got = ours.run({"x": x})["y"]
        np.testing.assert_array_equal(got, plain.run({"x": x})["y"])
        np.testing.assert_array_equal(got, ort_run(proto, {"x": x})[0])
        kept.append((got, got.copy()))
    assert len(pair.centres) == 2
    for got, copy in kept:
        np.testing.assert_array_equal(got, copy)
