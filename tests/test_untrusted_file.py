"""A model file is untrusted input: what the loader and the plan must refuse, confine or keep as mere data."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import nn_core


def _relu_model(node_name: str = "relu", input_name: str = "x", output_name: str = "y") -> onnx.ModelProto:
    graph = helper.make_graph(
        [helper.make_node("Relu", [input_name], ["hidden"], name=node_name),
         helper.make_node("Neg", ["hidden"], [output_name], name=node_name + "2")],
        "g",
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info(output_name, TensorProto.FLOAT, [2])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


INJECTIONS = [
    "relu\nimport pathlib; pathlib.Path({canary!r}).write_text('pwned')",
    "relu\x00\nimport pathlib; pathlib.Path({canary!r}).write_text('pwned')",
    "relu'); __import__('pathlib').Path({canary!r}).write_text('pwned'); ('",
    "relu\\\n    __import__('pathlib').Path({canary!r}).write_text('pwned')",
]


@pytest.mark.parametrize("template", INJECTIONS)
@pytest.mark.parametrize("where", ["node", "value"])
def test_names_are_data_never_code(tmp_path, template, where):
    canary = tmp_path / "canary"
    text = template.format(canary=str(canary))
    model = _relu_model(node_name=text) if where == "node" else _relu_model(input_name=text, output_name=text + "o")
    loaded = nn_core.load_proto(model, name="hostile.onnx")
    result = loaded.run({loaded.inputs[0].name: np.array([-1.0, 2.0], np.float32)})
    loaded.run_traced({loaded.inputs[0].name: np.array([-1.0, 2.0], np.float32)})
    assert not canary.exists()
    assert np.array_equal(next(iter(result.values())), [0.0, -2.0])
    for name in (text, text + "o"):
        assert name not in loaded.plan_source
