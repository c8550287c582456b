"""Issue 10: a batch-1 im2col convolution of one group with a small product multiplies 2-D views of its live
operands with np.dot (conv._Im2colPlan._small_product). Against onnxruntime over several runs with new inputs
(the views must follow the column buffer each call fills, never a copy made once), with and without an absorbed
activation and MaxPool, strides, padding and dilation; a product past SMALL_DOT_MACS, groups and batch 2 keep
np.matmul."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import make_model, ort_run, tensor_info
from onnx import helper

import nn_core
from nn_core.ops import conv


def _conv_model(channels: int, out_channels: int, size: int, kernel: int, tail: list[str], group: int = 1,
                **attrs) -> tuple:
    rng = np.random.default_rng(channels * 100 + out_channels + size)
    inits = {"w": rng.standard_normal((out_channels, channels // group, kernel, kernel)).astype(np.float32),
             "b": rng.standard_normal(out_channels).astype(np.float32)}
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], group=group, **attrs)]
    value = "c"
    for index, op in enumerate(tail):
        extra = {"kernel_shape": [2, 2], "strides": [2, 2]} if op == "MaxPool" else {}
        nodes.append(helper.make_node(op, [value], [f"t{index}"], **extra))
        value = f"t{index}"
    nodes.append(helper.make_node("Identity", [value], ["y"]))
    return make_model(nodes, [tensor_info("x", [None, channels, size, size])], [tensor_info("y", None)], inits)


@pytest.fixture
def small_products(monkeypatch) -> list:
    """The _small_product answers the plans made (None: np.matmul)."""
    answers: list = []
    original = conv._Im2colPlan._small_product

    def recording(self, first, second):
        answer = original(self, first, second)
        answers.append(answer)
        return answer

    monkeypatch.setattr(conv._Im2colPlan, "_small_product", recording)
    return answers


CASES = [
    (1, 4, 28, 5, [], {"strides": [2, 2]}),                       # keras_nhwc's first layer
    (4, 6, 12, 3, ["Relu"], {"strides": [2, 2]}),
    (3, 8, 14, 3, ["Relu", "MaxPool"], {"pads": [1, 1, 1, 1]}),
    (2, 5, 11, 3, [], {"dilations": [2, 2], "pads": [2, 1, 0, 2]}),
    (4, 8, 10, 3, ["Relu", "MaxPool"], {"strides": [1, 1]}),
]


@pytest.mark.parametrize("channels, out_channels, size, kernel, tail, attrs", CASES)
def test_small_products_match_onnxruntime_run_after_run(small_products, channels, out_channels, size, kernel,
                                                         tail, attrs):
    proto = _conv_model(channels, out_channels, size, kernel, tail, **attrs)
    model = nn_core.load_proto(proto)
    rng = np.random.default_rng(7)
    for _ in range(3):
        x = rng.standard_normal((1, channels, size, size)).astype(np.float32)
        np.testing.assert_allclose(model.run({"x": x})["y"], ort_run(proto, {"x": x})[0], rtol=1e-4, atol=1e-5)
    assert any(answer is not None for answer in small_products)


def test_large_products_groups_and_batches_keep_matmul(small_products):
    cases = [(_conv_model(32, 64, 26, 3, ["Relu"]), 1, 32, 26),               # 576 x 288 x 64
             (_conv_model(8, 8, 12, 3, ["Relu"], group=2), 1, 8, 12),
             (_conv_model(4, 6, 12, 3, ["Relu"]), 2, 4, 12)]
    for proto, batch, channels, size in cases:
        model = nn_core.load_proto(proto)
        x = np.random.default_rng(8).standard_normal((batch, channels, size, size)).astype(np.float32)
        np.testing.assert_allclose(model.run({"x": x})["y"], ort_run(proto, {"x": x})[0], rtol=1e-4, atol=1e-4)
    assert all(answer is None for answer in small_products)
