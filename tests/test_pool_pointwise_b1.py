"""Issue 10, ImageNet-size models: an AveragePool next to a 1x1 convolution runs in the cheaper order with it
(channels_last.PooledPointwise: Inception's pool branch, a stride-1 pooling then a projection to fewer channels;
PointwiseOfPooled: DenseNet's transition, a convolution then a 2x2/2 pooling). Both are linear per pixel and the
pooling's weights sum to one, so the values agree with onnxruntime and the traced graph within float rounding."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import make_model, ort_run, tensor_info
from onnx import helper

import nn_core


def _weights(rng: np.random.Generator, *shape):
    return (rng.standard_normal(shape) * (2.0 / np.prod(shape[1:])) ** 0.5).astype(np.float32)


def _model(rng, pool_attrs: dict, pool_first: bool, act: bool = True, out_channels: int = 8, bias: bool = True,
           conv_attrs: dict | None = None, size: int = 99):
    """Stem 3x3 conv (24 channels) -> ReLU, then AveragePool -> 1x1 Conv [-> ReLU] (``pool_first``) or 1x1 Conv
    [-> ReLU] -> AveragePool."""
    inits = {"w0": _weights(rng, 24, 3, 3, 3), "w1": _weights(rng, out_channels, 24, 1, 1)}
    conv_inputs = ["w1"]
    if bias:
        inits["b1"] = rng.normal(0, 0.5, out_channels).astype(np.float32)
        conv_inputs.append("b1")
    nodes = [helper.make_node("Conv", ["x", "w0"], ["c0"], strides=[2, 2]),
             helper.make_node("Relu", ["c0"], ["r0"])]
    conv_attrs = conv_attrs or {}
    if pool_first:
        nodes += [helper.make_node("AveragePool", ["r0"], ["p"], **pool_attrs),
                  helper.make_node("Conv", ["p", *conv_inputs], ["c1"], **conv_attrs)]
        last = "c1"
        if act:
            nodes.append(helper.make_node("Relu", ["c1"], ["y"]))
            last = "y"
    else:
        nodes.append(helper.make_node("Conv", ["r0", *conv_inputs], ["c1"], **conv_attrs))
        source = "c1"
        if act:
            nodes.append(helper.make_node("Relu", ["c1"], ["a1"]))
            source = "a1"
        nodes.append(helper.make_node("AveragePool", [source], ["y"], **pool_attrs))
        last = "y"
    if last != "y":
        nodes.append(helper.make_node("Identity", [last], ["y"]))
    return make_model(nodes, [tensor_info("x", [1, 3, size, size])], [tensor_info("y", None)], inits)


def _labels_and_check(model):
    loaded = nn_core.load_proto(model)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 3, 99, 99)).astype(np.float32)
    want = ort_run(model, {"x": x})[0]
    for _ in range(2):
        np.testing.assert_allclose(loaded.run({"x": x})["y"], want, rtol=1e-4, atol=1e-5)
    traced, _ = loaded.run_traced({"x": x})
    np.testing.assert_allclose(loaded.run({"x": x})["y"], traced["y"], rtol=1e-4, atol=1e-5)
    x[0, 1, 30, 31] = np.nan  # a NaN spreads over the same outputs either way
    traced, _ = loaded.run_traced({"x": x})
    np.testing.assert_allclose(loaded.run({"x": x})["y"], traced["y"], rtol=1e-4, atol=1e-5)
    return [step.label for step in loaded._fast_plan().steps]


INCEPTION_POOLS = [{"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]},
                   {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1], "count_include_pad": 0},
                   {"kernel_shape": [3, 2]},
                   {"kernel_shape": [3, 3], "count_include_pad": 1},
                   {"kernel_shape": [3, 3], "auto_pad": "SAME_UPPER"}]


@pytest.mark.parametrize("pool_attrs", INCEPTION_POOLS)
@pytest.mark.parametrize("act, bias", [(True, True), (False, True), (True, False)])
def test_stride_one_pooling_before_a_projection_runs_after_it(pool_attrs, act, bias):
    labels = _labels_and_check(_model(np.random.default_rng(1), pool_attrs, True, act, bias=bias))
    assert ("AveragePool+Conv" + ("+Relu" if act else "")) in labels


@pytest.mark.parametrize("pool_attrs, conv_attrs, out_channels", [
    ({"kernel_shape": [3, 3], "pads": [1, 1, 1, 1], "count_include_pad": 1}, {}, 8),  # padding counted
    ({"kernel_shape": [3, 3], "strides": [2, 2]}, {}, 8),  # strided: the convolution would grow 4x
    ({"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}, {}, 32),  # more channels out than in
    ({"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}, {"strides": [2, 2]}, 8),  # not a stride-1 convolution
    ({"kernel_shape": [3, 3], "pads": [2, 2, 2, 2], "ceil_mode": 1, "count_include_pad": 1}, {}, 8)])
def test_pooling_before_a_convolution_stays_first_where_the_order_matters_or_costs(pool_attrs, conv_attrs,
                                                                                     out_channels):
    labels = _labels_and_check(_model(np.random.default_rng(2), pool_attrs, True, out_channels=out_channels,
                                      conv_attrs=conv_attrs))
    assert not any(label.startswith("AveragePool+") for label in labels), labels


TRANSITION_POOLS = [{"kernel_shape": [2, 2], "strides": [2, 2]},
                    {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]},
                    {"kernel_shape": [2, 3], "strides": [2, 1], "ceil_mode": 1}]


@pytest.mark.parametrize("pool_attrs", TRANSITION_POOLS)
@pytest.mark.parametrize("bias", [True, False])
def test_convolution_before_a_strided_pooling_runs_on_the_pooled_map(pool_attrs, bias):
    labels = _labels_and_check(_model(np.random.default_rng(3), pool_attrs, False, act=False, bias=bias))
    assert "Conv+AveragePool" in labels


@pytest.mark.parametrize("pool_attrs, act", [({"kernel_shape": [2, 2], "strides": [2, 2]}, True),  # ReLU between
                                             ({"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}, False),  # stride 1
                                             ({"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1],
                                               "count_include_pad": 1}, False)])
def test_convolution_before_a_pooling_stays_first_where_the_order_matters_or_costs(pool_attrs, act):
    labels = _labels_and_check(_model(np.random.default_rng(4), pool_attrs, False, act=act))
    assert "Conv+AveragePool" not in labels and "Conv+Relu+AveragePool" not in labels, labels


def test_projection_that_absorbed_a_flatten_keeps_its_order():
    """A 1x1 convolution that hands out its output flattened (an absorbed Flatten) is not reordered."""
    rng = np.random.default_rng(5)
    inits = {"w0": _weights(rng, 24, 3, 3, 3), "w1": _weights(rng, 8, 24, 1, 1)}
    nodes = [helper.make_node("Conv", ["x", "w0"], ["c0"], strides=[2, 2]),
             helper.make_node("Relu", ["c0"], ["r0"]),
             helper.make_node("AveragePool", ["r0"], ["p"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
             helper.make_node("Conv", ["p", "w1"], ["c1"]),
             helper.make_node("Flatten", ["c1"], ["y"])]
    model = make_model(nodes, [tensor_info("x", [1, 3, 99, 99])], [tensor_info("y", None)], inits)
    labels = _labels_and_check(model)
    assert labels[-2:] == ["AveragePool", "Conv+Flatten"], labels
