"""Issue 10's batch-1 rewrites and lean kernel paths, each against the unfused graph or the general path it
stands in for (results equal within float rounding, and the rewrite really taken)."""

from __future__ import annotations

import numpy as np
from helpers import make_model, tensor_info
from onnx import helper

import nn_core


def _load(model):
    return nn_core.load_proto(model)


def test_pad_without_constant_value_input_takes_the_cached_layout():
    pads = [0, 0, 1, 2, 0, 0, 3, 1]
    model = make_model([helper.make_node("Pad", ["x", "pads"], ["y"], mode="constant")],
                       [tensor_info("x", [1, 3, 4, 4])], [tensor_info("y", None)],
                       {"pads": np.array(pads, np.int64)}, opset=13)
    loaded = _load(model)
    x = np.random.default_rng(0).standard_normal((1, 3, 4, 4)).astype(np.float32)
    want = np.pad(x, list(zip(pads[:4], pads[4:])))
    for _ in range(2):
        np.testing.assert_array_equal(loaded.run({"x": x})["y"], want)
    (step,) = loaded._fast_plan().steps
    assert step.kernel.layouts, "an omitted constant_value is 0, known at load time: the layout is cached"
