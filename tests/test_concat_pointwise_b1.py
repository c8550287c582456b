"""Issue 10, ImageNet-size models: a Concat on the channel axis that only a 1x1 convolution reads is left out
(channels_last.ConcatPointwise): each part is multiplied by its block of the weights and the products summed.
Against onnxruntime, the traced graph and the two kernels run in the graph's order."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import build_kernel, make_model, ort_run, tensor_info
from onnx import helper

import nn_core


def _weights(rng: np.random.Generator, *shape):
    return (rng.standard_normal(shape) * (2.0 / np.prod(shape[1:])) ** 0.5).astype(np.float32)


def _fire(rng, bias: bool = True, act: bool = True, three_parts: bool = False, conv_attrs: dict | None = None,
          extra_reader: bool = False, out_channels: int = 6):
    """Stem 3x3/2 conv (8 channels) -> a 1x1 and a 3x3 expand conv (+ the stem itself) -> Concat -> conv."""
    conv_attrs = conv_attrs or {"kernel_shape": [1, 1]}
    parts = ["e1", "e3"] + (["r0"] if three_parts else [])
    in_channels = 10 + 12 + (8 if three_parts else 0)
    kernel = conv_attrs["kernel_shape"]
    inits = {"w0": _weights(rng, 8, 3, 3, 3), "w1": _weights(rng, 10, 8, 1, 1), "w3": _weights(rng, 12, 8, 3, 3),
             "ws": _weights(rng, out_channels, in_channels // conv_attrs.get("group", 1), *kernel)}
    conv_inputs = ["cat", "ws"]
    if bias:
        inits["bs"] = rng.normal(0, 0.5, out_channels).astype(np.float32)
        conv_inputs.append("bs")
    nodes = [helper.make_node("Conv", ["x", "w0"], ["c0"], strides=[2, 2]),
             helper.make_node("Relu", ["c0"], ["r0"]),
             helper.make_node("Conv", ["r0", "w1"], ["e1"]),
             helper.make_node("Conv", ["r0", "w3"], ["e3"], pads=[1, 1, 1, 1]),
             helper.make_node("Concat", parts, ["cat"], axis=1),
             helper.make_node("Conv", conv_inputs, ["c"], **conv_attrs),
             helper.make_node("Relu" if act else "Identity", ["c"], ["y"])]
    outputs = [tensor_info("y", None)]
    if extra_reader:
        nodes.append(helper.make_node("Relu", ["cat"], ["z"]))
        outputs.append(tensor_info("z", None))
    return make_model(nodes, [tensor_info("x", [1, 3, 99, 99])], outputs, inits)


def _check(model) -> list[str]:
    loaded = nn_core.load_proto(model)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 3, 99, 99)).astype(np.float32)
    names = [o.name for o in model.graph.output]
    for _ in range(2):
        got = loaded.run({"x": x})
        for name, value in zip(names, ort_run(model, {"x": x}), strict=True):
            np.testing.assert_allclose(got[name], value, rtol=1e-4, atol=1e-5, err_msg=name)
    x[0, 0, 50, 50] = np.nan
    traced, _ = loaded.run_traced({"x": x})
    got = loaded.run({"x": x})
    for name in names:
        np.testing.assert_allclose(got[name], traced[name], rtol=1e-4, atol=1e-5, err_msg=name)
    return [step.label for step in loaded._fast_plan().steps]


@pytest.mark.parametrize("bias, act, three_parts", [(True, True, False), (False, True, False), (True, False, False),
                                                    (True, True, True)])
def test_concat_read_by_a_pointwise_convolution_is_left_out(bias, act, three_parts):
    labels = _check(_fire(np.random.default_rng(1), bias, act, three_parts))
    assert ("Concat+Conv" + ("+Relu" if act else "")) in labels, labels


@pytest.mark.parametrize("conv_attrs, extra_reader", [({"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}, False),
                                                      ({"kernel_shape": [1, 1], "strides": [2, 2]}, False),
                                                      ({"kernel_shape": [1, 1], "group": 2}, False),
                                                      ({"kernel_shape": [1, 1]}, True)])
def test_concat_stays_where_the_convolution_is_not_pointwise_or_others_read_it(conv_attrs, extra_reader):
    labels = _check(_fire(np.random.default_rng(2), conv_attrs=conv_attrs, extra_reader=extra_reader))
    assert not any(label.startswith("Concat+Conv") for label in labels), labels


def test_concat_pointwise_falls_back_to_the_two_kernels():
    """NCHW parts, parts whose channels do not add up to the weights' (the convolution's error), and a batch
    of two channels-last images (the blocks' path) against the kernels in order."""
    from nn_core.ops.channels_last import ConcatPointwise

    rng = np.random.default_rng(3)
    a = rng.standard_normal((2, 4, 7, 9)).astype(np.float32)
    b = rng.standard_normal((2, 6, 7, 9)).astype(np.float32)
    w = _weights(rng, 5, 10, 1, 1)
    bias = rng.standard_normal(5).astype(np.float32)
    concat = build_kernel(helper.make_node("Concat", ["a", "b"], ["c"], axis=1), [a, b], ())
    conv = build_kernel(helper.make_node("Conv", ["c", "w", "bias"], ["y"], name="squeeze"), [a, w, bias], (1, 2))
    conv.prefer_channels_last()
    fused = ConcatPointwise(concat, conv, 2)

    def last(x):
        return np.ascontiguousarray(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)

    for parts in ((a, b), (last(a), b), (last(a), last(b)), (last(a[:1]), last(b[:1]))):
        want = conv.run(concat.run(*parts), w, bias)
        np.testing.assert_allclose(fused.run(*parts, w, bias), want, rtol=1e-5, atol=1e-5)
    with pytest.raises(nn_core.ModelError, match="input has 9 channels"):
        fused.run(last(a), last(b[:, :5]), w, bias)
