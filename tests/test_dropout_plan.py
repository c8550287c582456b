"""Inference Dropout in the fast plan: gone when nothing reads its mask, kept (and right) when something does."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import nn_core

ort = pytest.importorskip("onnxruntime")


def _model(tmp_path, nodes, outputs, opset=10) -> str:
    graph = helper.make_graph(nodes, "dropout", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 6])],
                              [helper.make_tensor_value_info(name, kind, None) for name, kind in outputs])
    path = tmp_path / "model.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)]), str(path))
    return str(path)


def _both(path: str, x: np.ndarray) -> tuple[dict, list]:
    ours = nn_core.load(path).run({"x": x})
    theirs = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, {"x": x})
    return ours, theirs


def test_a_dropout_whose_mask_nobody_reads_leaves_the_plan(tmp_path):
    nodes = [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Dropout", ["r"], ["d", "unused_mask"]),
             helper.make_node("Neg", ["d"], ["y"])]
    path = _model(tmp_path, nodes, [("y", TensorProto.FLOAT)])
    model = nn_core.load(path)
    assert [step.label for step in model._fast_plan().steps] == ["Relu", "Neg"]
    x = np.linspace(-1, 1, 6, dtype=np.float32).reshape(1, 6)
    ours, theirs = _both(path, x)
    np.testing.assert_array_equal(ours["y"], theirs[0])


def test_a_dropout_whose_mask_is_read_or_an_output_stays(tmp_path):
    nodes = [helper.make_node("Dropout", ["x"], ["d", "mask"]), helper.make_node("Cast", ["mask"], ["m"], to=1),
             helper.make_node("Mul", ["d", "m"], ["y"])]
    # opset 13: before 12 onnxruntime's inference mask is all False, onnx's reference and ours all True
    path = _model(tmp_path, nodes, [("y", TensorProto.FLOAT), ("mask", TensorProto.BOOL)], opset=13)
    assert any(s.node.op_type == "Dropout" for s in nn_core.load(path)._fast_plan().steps)
    x = np.linspace(-1, 1, 6, dtype=np.float32).reshape(1, 6)
    ours, theirs = _both(path, x)
    np.testing.assert_array_equal(ours["y"], theirs[0])
    np.testing.assert_array_equal(ours["mask"], theirs[1])


def test_a_dropout_of_another_domain_is_not_taken_for_the_identity(tmp_path):
    nodes = [helper.make_node("Dropout", ["x"], ["y"], domain="com.example")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 6])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    path = tmp_path / "custom.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13),
                                                      helper.make_opsetid("com.example", 1)]), str(path))
    with pytest.raises(nn_core.ModelError, match="Dropout"):
        nn_core.load(str(path)).run({"x": np.ones((1, 6), np.float32)})
