"""Work done off the UI thread lets go of Python's global lock often: the model file is parsed in pieces."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from google.protobuf.message import DecodeError
from onnx import helper, numpy_helper

from nn_core.onnx_io import parse_model

ROOT = Path(__file__).resolve().parent.parent
MODELS = [ROOT / "assets" / "lenet5.onnx", *sorted((ROOT / "tests" / "models").glob("*.onnx"))]


def _weighty_model() -> onnx.ModelProto:
    """A model whose graph holds several initializers, a Constant node with a tensor, metadata after the graph."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((64, 64)).astype(np.float32), f"w{i}") for i in range(6)]
    nodes = [helper.make_node("Constant", [], ["c"], value=numpy_helper.from_array(np.ones((32, 32), np.float32)))]
    previous = "x"
    for i in range(6):
        nodes.append(helper.make_node("MatMul", [previous, f"w{i}"], [f"h{i}"], name=f"mm{i}"))
        previous = f"h{i}"
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 64])],
                              [helper.make_tensor_value_info(previous, onnx.TensorProto.FLOAT, [1, 64])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    helper.set_model_props(model, {"classes": "0,1,2"})
    return model


@pytest.mark.parametrize("piece", [16, 200, 5000, 1 << 20])
def test_parsing_in_pieces_gives_the_same_model(piece):
    for path in MODELS:
        data = path.read_bytes()
        assert parse_model(data, piece) == onnx.load_model_from_string(data), path.name
    data = _weighty_model().SerializeToString()
    assert parse_model(data, piece).SerializeToString() == data


def test_parsing_in_pieces_refuses_what_the_whole_parser_refuses():
    data = _weighty_model().SerializeToString()
    for broken in (data[: len(data) // 2], data[:-3], b"\x0b" + data, data + b"\xff\xff"):
        with pytest.raises(DecodeError):
            onnx.load_model_from_string(broken)
        with pytest.raises(DecodeError):
            parse_model(broken, 64)


def test_an_empty_graph_field_is_kept():
    model = onnx.ModelProto(ir_version=8)
    model.graph.SetInParent()
    data = model.SerializeToString() + b"\x08\x09" * 200  # ir_version repeated: the last one wins
    parsed = parse_model(data, 16)
    assert parsed.HasField("graph") and parsed.ir_version == 9
