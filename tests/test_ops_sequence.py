"""Sequences and optionals: the kernels, and models whose inputs and outputs are lists or None."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper

import nn_core
from nn_core.errors import InputError, ModelError


def _seq_type(elem=TensorProto.FLOAT):
    return helper.make_sequence_type_proto(helper.make_tensor_type_proto(elem, None))


def _model(nodes, inputs, outputs, opset=18):
    graph = helper.make_graph(nodes, "g", inputs, outputs)
    return nn_core.load_proto(helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)]))


def test_sequence_in_and_out_pass_through_as_lists():
    model = _model(
        [helper.make_node("SequenceInsert", ["s", "t"], ["out"]),
         helper.make_node("SequenceLength", ["out"], ["n"])],
        [helper.make_value_info("s", _seq_type()), helper.make_tensor_value_info("t", TensorProto.FLOAT, [2])],
        [helper.make_value_info("out", _seq_type()), helper.make_tensor_value_info("n", TensorProto.INT64, [])])
    seq = [np.ones(3, np.float32), np.zeros((2, 2), np.float32)]
    got = model.run({"s": seq, "t": np.array([5, 6], np.float32)})
    assert isinstance(got["out"], list) and len(got["out"]) == 3
    assert got["out"][2].tolist() == [5, 6] and got["n"] == 3
    assert len(seq) == 2, "the fed list is not modified"
    assert model.inputs[0].kind == "sequence" and model.inputs[0].dtype == np.float32


def test_a_tensor_fed_for_a_sequence_is_refused():
    model = _model([helper.make_node("SequenceLength", ["s"], ["n"])], [helper.make_value_info("s", _seq_type())],
                   [helper.make_tensor_value_info("n", TensorProto.INT64, [])])
    with pytest.raises(InputError, match="sequence"):
        model.run({"s": np.zeros(3, np.float32)})


def test_empty_optional_output_is_none():
    opt = helper.make_optional_type_proto(helper.make_tensor_type_proto(TensorProto.FLOAT, [2]))
    model = _model([helper.make_node("Optional", [], ["o"], type=helper.make_tensor_type_proto(TensorProto.FLOAT,
                                                                                                   [2])),
                    helper.make_node("OptionalHasElement", ["o"], ["has"])], [],
                   [helper.make_value_info("o", opt), helper.make_tensor_value_info("has", TensorProto.BOOL, [])])
    got = model.run({})
    assert got["o"] is None and got["has"] == np.array(False)


def test_optional_get_element_of_empty_fails_clearly():
    opt = helper.make_optional_type_proto(helper.make_tensor_type_proto(TensorProto.FLOAT, [2]))
    model = _model([helper.make_node("OptionalGetElement", ["o"], ["x"])], [helper.make_value_info("o", opt)],
                   [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])])
    assert model.run({"o": np.ones(2, np.float32)})["x"].tolist() == [1, 1]
    with pytest.raises(ModelError, match="empty"):
        model.run({"o": None})


def test_split_concat_round_trip_and_bad_positions():
    model = _model(
        [helper.make_node("SplitToSequence", ["x"], ["s"], axis=1, keepdims=0),
         helper.make_node("SequenceAt", ["s", "i"], ["item"]),
         helper.make_node("ConcatFromSequence", ["s"], ["y"], axis=1, new_axis=1)],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3]),
         helper.make_tensor_value_info("i", TensorProto.INT64, [])],
        [helper.make_tensor_value_info("item", TensorProto.FLOAT, [2]),
         helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])])
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    got = model.run({"x": x, "i": np.array(-1)})
    assert got["item"].tolist() == [2, 5] and np.array_equal(got["y"], x)
    with pytest.raises(ModelError, match="position 3 is outside"):
        model.run({"x": x, "i": np.array(3)})


def test_a_sequence_past_the_limit_is_refused():
    limits = nn_core.Limits(max_loop_iterations=4)
    graph = helper.make_graph([helper.make_node("SplitToSequence", ["x"], ["s"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [10])],
                              [helper.make_value_info("s", _seq_type())])
    model = nn_core.load_proto(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]),
                               limits=limits)
    with pytest.raises(ModelError, match="max_loop_iterations"):
        model.run({"x": np.zeros(10, np.float32)})


def test_sequence_map_with_a_broadcast_tensor():
    body = helper.make_graph([helper.make_node("Add", ["a", "b"], ["c"])], "body",
                             [helper.make_tensor_value_info("a", TensorProto.FLOAT, None),
                              helper.make_tensor_value_info("b", TensorProto.FLOAT, None)],
                             [helper.make_tensor_value_info("c", TensorProto.FLOAT, None)])
    model = _model([helper.make_node("SequenceMap", ["s", "t"], ["out"], body=body)],
                   [helper.make_value_info("s", _seq_type()), helper.make_tensor_value_info("t", TensorProto.FLOAT,
                                                                                            [1])],
                   [helper.make_value_info("out", _seq_type())])
    got = model.run({"s": [np.ones(2, np.float32), np.zeros(3, np.float32)], "t": np.array([2], np.float32)})
    assert [v.tolist() for v in got["out"]] == [[3, 3], [2, 2, 2]]


def test_constant_sequences_are_not_folded_into_arrays():
    model = _model([helper.make_node("SequenceEmpty", [], ["s"], dtype=TensorProto.FLOAT)], [],
                   [helper.make_value_info("s", _seq_type())])
    assert model.run({})["s"] == []
