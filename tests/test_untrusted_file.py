"""A model file is untrusted input: what the loader and the plan must refuse, confine or keep as mere data."""

from __future__ import annotations

import os

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


# ---- reading files ----------------------------------------------------------------------------------------------

def _refused_within(seconds: float, call) -> str:
    """Run ``call`` in a thread; it must raise ModelError (returned as text) and must not block."""
    import threading

    outcome: list = []

    def work():
        try:
            call()
            outcome.append("loaded")
        except nn_core.ModelError as exc:
            outcome.append(exc)
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            outcome.append(exc)

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    thread.join(seconds)
    assert outcome, f"still blocked after {seconds} s"
    assert isinstance(outcome[0], nn_core.ModelError), repr(outcome[0])
    return str(outcome[0])


def test_a_fifo_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "model.onnx"
    os.mkfifo(fifo)
    assert "not a regular file" in _refused_within(5, lambda: nn_core.load(fifo))


def test_a_device_is_refused_without_reading_it_whole():
    assert "not a regular file" in _refused_within(5, lambda: nn_core.load("/dev/zero"))


def test_a_file_over_the_size_limit_is_refused_before_reading(tmp_path):
    path = tmp_path / "m.onnx"
    onnx.save(_relu_model(), path)
    message = _refused_within(5, lambda: nn_core.load(path, limits=nn_core.Limits(max_file_bytes=50)))
    assert "max_file_bytes" in message and "m.onnx" in message


def test_a_nul_in_the_path_is_a_model_error():
    assert "cannot be opened" in _refused_within(5, lambda: nn_core.load("bad\x00name.onnx"))


# ---- external and sparse data: one confined path -----------------------------------------------------------

SECRET = np.arange(4, dtype=np.float32) + 4242.0


def _weights_model(tensor: onnx.TensorProto, sparse: bool = False) -> onnx.ModelProto:
    node = helper.make_node("Add", ["x", "w"], ["y"], name="add")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])])
    if sparse:
        indices = helper.make_tensor("w_idx", TensorProto.INT64, [4], [0, 1, 2, 3])
        graph.sparse_initializer.append(helper.make_sparse_tensor(tensor, indices, [4]))
    else:
        graph.initializer.append(tensor)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _external(location: str, **fields: str) -> onnx.TensorProto:
    tensor = helper.make_tensor("w", TensorProto.FLOAT, [4], np.zeros(4, np.float32).tobytes(), raw=True)
    tensor.ClearField("raw_data")
    tensor.data_location = TensorProto.EXTERNAL
    for key, value in {"location": location, **fields}.items():
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value
    return tensor


@pytest.fixture
def model_folder(tmp_path):
    """A model folder beside a secret file that no model inside the folder may read."""
    (tmp_path / "secret.bin").write_bytes(SECRET.tobytes())
    folder = tmp_path / "models"
    folder.mkdir()
    (folder / "weights.bin").write_bytes(np.ones(4, np.float32).tobytes())
    return folder


@pytest.mark.parametrize("sparse", [False, True], ids=["dense", "sparse"])
@pytest.mark.parametrize("location, fields, expected", [
    ("../secret.bin", {}, "escapes the model folder"),
    ("{abs_secret}", {}, "relative to the model's folder"),
    ("link.bin", {}, "escapes the model folder"),
    ("weights\x00.bin", {}, "relative to the model's folder"),
    ("weights.bin", {"offset": "-4"}, "non-negative whole number"),
    ("weights.bin", {"length": "sixteen"}, "non-negative whole number"),
    ("weights.bin", {"offset": "8"}, "truncated"),
    ("weights.bin", {"length": "8"}, "needs 16 bytes"),
    ("missing.bin", {}, "missing beside the model"),
])
def test_external_data_stays_inside_the_model_folder(model_folder, location, fields, expected, sparse):
    (model_folder / "link.bin").symlink_to(model_folder.parent / "secret.bin")
    location = location.format(abs_secret=model_folder.parent / "secret.bin")
    path = model_folder / "m.onnx"
    path.write_bytes(_weights_model(_external(location, **fields), sparse).SerializeToString())
    message = _refused_within(5, lambda: nn_core.load(path))
    assert expected in message and "m.onnx" in message


def test_a_hard_link_to_a_file_outside_is_refused(model_folder):
    os.link(model_folder.parent / "secret.bin", model_folder / "linked.bin")
    path = model_folder / "m.onnx"
    path.write_bytes(_weights_model(_external("linked.bin")).SerializeToString())
    assert "hard links" in _refused_within(5, lambda: nn_core.load(path))


@pytest.mark.parametrize("sparse", [False, True], ids=["dense", "sparse"])
def test_external_data_inside_the_folder_is_read(model_folder, sparse):
    path = model_folder / "m.onnx"
    path.write_bytes(_weights_model(_external("weights.bin", length="16"), sparse).SerializeToString())
    model = nn_core.load(path)
    assert np.array_equal(model.run({"x": np.zeros(4, np.float32)})["y"], np.ones(4, np.float32))


def test_a_constant_sparse_value_with_external_data_is_confined_too(model_folder):
    indices = helper.make_tensor("i", TensorProto.INT64, [4], [0, 1, 2, 3])
    node = helper.make_node("Constant", [], ["w"], name="const",
                            sparse_value=helper.make_sparse_tensor(_external("../secret.bin"), indices, [4]))
    add = helper.make_node("Add", ["x", "w"], ["y"], name="add")
    graph = helper.make_graph([node, add], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])])
    path = model_folder / "m.onnx"
    path.write_bytes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString())
    assert "escapes the model folder" in _refused_within(5, lambda: nn_core.load(path))
    # and given as a proto, a tensor whose external data was never read is refused, not read from the cwd
    proto = onnx.load(path, load_external_data=False)
    assert "was not read" in _refused_within(5, lambda: nn_core.load_proto(proto, "m.onnx"))


@pytest.mark.parametrize("dims, indices, expected", [
    ([4], [0, 1, 2, 9], "outside"),
    ([4], [0, 1, 2, -1], "outside"),
    ([-4], [0, 1, 2, 3], "negative dimension"),
    ([1 << 40], [0, 1, 2, 3], "max_tensor_bytes"),
])
def test_sparse_initializers_are_checked(dims, indices, expected):
    values = helper.make_tensor("w", TensorProto.FLOAT, [4], [1.0, 2.0, 3.0, 4.0])
    model = _weights_model(values)
    del model.graph.initializer[:]
    model.graph.sparse_initializer.append(
        helper.make_sparse_tensor(values, helper.make_tensor("i", TensorProto.INT64, [4], indices), dims))
    assert expected in _refused_within(5, lambda: nn_core.load_proto(model, "m.onnx"))


# ---- what the spec forbids -------------------------------------------------------------------------------------

def _mutated(change) -> onnx.ModelProto:
    model = _relu_model()
    change(model)
    return model


def _set_opset(model, version):
    model.opset_import[0].version = version


def _duplicate_opset(model):
    model.opset_import.append(helper.make_opsetid("", 13))


def _duplicate_output(model):
    model.graph.node[1].output[0] = "hidden"


def _overwrite_input(model):
    model.graph.node[1].output[0] = "x"


def _raw_tensor(dims: list[int], raw: bytes) -> TensorProto:
    tensor = TensorProto(name="w", data_type=TensorProto.FLOAT, raw_data=raw)
    tensor.dims.extend(dims)
    return tensor


def _negative_dims(model):
    model.graph.initializer.append(_raw_tensor([-1], b""))


def _unknown_type(model):
    model.graph.initializer.append(helper.make_tensor("w", TensorProto.FLOAT, [1], [1.0]))
    model.graph.initializer[0].data_type = 99


def _short_data(model):
    model.graph.initializer.append(_raw_tensor([100], b"\0" * 8))


def _huge_input(model):
    model.graph.input[0].CopyFrom(helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 100000, 100000]))


def _strides_as_floats(model):
    model.graph.node.insert(0, helper.make_node("MaxPool", ["x"], ["p"], name="pool", kernel_shape=[1],
                                                strides=[1.5]))


def _alpha_as_string(model):
    node = model.graph.node[0]
    node.op_type = "LeakyRelu"
    node.attribute.append(helper.make_attribute("alpha", "0.1"))


def _identity_without_outputs(model):
    model.graph.node.insert(0, helper.make_node("Identity", ["x"], [], name="identity"))


@pytest.mark.parametrize("change, expected", [
    (lambda m: _set_opset(m, 999), "opset 999"),
    (lambda m: _set_opset(m, 0), "opset 0"),
    (lambda m: setattr(m, "ir_version", 99), "IR version 99"),
    (lambda m: m.ClearField("opset_import"), "does not say which opset"),
    (_duplicate_opset, "twice"),
    (_duplicate_output, "both produce 'hidden'"),
    (_overwrite_input, "overwrites 'x'"),
    (_negative_dims, "negative dimension"),
    (_unknown_type, "unknown element type 99"),
    (_short_data, "needs 400 bytes"),
    (_huge_input, "declared input 'x'"),
    (_strides_as_floats, "attribute 'strides' is FLOATS"),
    (_alpha_as_string, "attribute 'alpha' is STRING"),
    (_identity_without_outputs, "has 0 outputs"),
], ids=["opset999", "opset0", "ir99", "no-opset", "dup-opset", "dup-output", "overwrite-input", "negative-dims",
        "type99", "short-data", "huge-input", "float-strides", "string-alpha", "identity-no-output"])
def test_what_the_spec_forbids_is_refused_with_the_reason(change, expected):
    message = _refused_within(5, lambda: nn_core.load_proto(_mutated(change), "bad.onnx"))
    assert expected in message and "bad.onnx" in message


def test_an_int_where_the_spec_wants_a_float_is_read_as_that_float():
    def alpha_as_int(model):
        node = model.graph.node[0]
        node.op_type = "LeakyRelu"
        node.attribute.append(helper.make_attribute("alpha", 2))

    model = nn_core.load_proto(_mutated(alpha_as_int), "m.onnx")
    assert np.allclose(model.run({"x": np.array([-1.0, 1.0], np.float32)})["y"], [2.0, -1.0])


def test_batchnorm_params_that_do_not_match_the_conv_are_refused_not_folded():
    weight = helper.make_tensor("w", TensorProto.FLOAT, [2, 1, 1, 1], [1.0, 2.0])
    params = [helper.make_tensor(n, TensorProto.FLOAT, [3], [1.0, 1.0, 1.0]) for n in ("s", "b", "m", "v")]
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
         helper.make_node("BatchNormalization", ["c", "s", "b", "m", "v"], ["y"], name="bn")],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 2, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [weight, *params])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 15)])
    with pytest.raises(nn_core.ModelError, match="bn"):
        loaded = nn_core.load_proto(model, "bn.onnx")
        loaded.run({"x": np.ones((1, 1, 2, 2), np.float32)})


def test_anything_a_kernel_raises_leaves_as_a_model_error_naming_the_node(monkeypatch):
    from nn_core.ops import activations

    model = nn_core.load_proto(_relu_model(node_name="the_relu"), "m.onnx")

    def broken(self, x):
        raise IndexError("index 7 is out of bounds")

    relu = type(model._plan.steps[0].kernel)
    assert relu.__module__ == activations.__name__
    monkeypatch.setattr(relu, "run", broken)
    model = nn_core.load_proto(_relu_model(node_name="the_relu"), "m.onnx")
    for call in (model.run, model.run_traced):
        with pytest.raises(nn_core.ModelError, match="the_relu.*IndexError"):
            call({"x": np.zeros(2, np.float32)})


@pytest.mark.parametrize("op, attrs, expected", [
    ("Conv", {"pads": [65536, 0, 0, 0]}, "exceed the limit of 1024"),
    ("MaxPool", {"kernel_shape": [2, 2], "pads": [2, 0, 0, 0]}, "smaller than the kernel"),
    ("AveragePool", {"kernel_shape": [3, 3], "pads": [1, 1, 3, 1]}, "smaller than the kernel"),
])
def test_padding_that_only_inflates_the_map_is_refused_at_load(op, attrs, expected):
    inputs = ["x", "w"] if op == "Conv" else ["x"]
    weights = [helper.make_tensor("w", TensorProto.FLOAT, [1, 1, 3, 3], [0.1] * 9)] if op == "Conv" else []
    graph = helper.make_graph([helper.make_node(op, inputs, ["y"], name="window", **attrs)], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 28, 28])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], weights)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    message = _refused_within(5, lambda: nn_core.load_proto(model, "pads.onnx"))
    assert expected in message and "window" in message


def test_an_unknown_element_type_in_an_attribute_is_refused_at_load():
    def cast_to_99(model):
        node = model.graph.node[1]
        node.op_type = "Cast"
        node.attribute.append(helper.make_attribute("to", 99))

    message = _refused_within(5, lambda: nn_core.load_proto(_mutated(cast_to_99), "bad.onnx"))
    assert "element type 99" in message and "relu2" in message


@pytest.mark.parametrize("feed_shape", [[2], [3]])  # [3]: a first run of that shape, on the full-check path
def test_a_tensor_output_the_graph_computes_as_a_sequence_is_a_model_error_naming_it(feed_shape):
    # found by tools/fuzz_models.py: a node swapped for SequenceConstruct under an output declared a tensor
    graph = helper.make_graph(
        # two same-shape tensors: the old path stacked them silently into one array
        [helper.make_node("Relu", ["x"], ["a"]), helper.make_node("Neg", ["x"], ["b"]),
         helper.make_node("SequenceConstruct", ["a", "b"], ["y"], name="seq")],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
    )
    model = nn_core.load_proto(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]),
                               name="sequence_out.onnx")
    for shape in ([2], feed_shape):  # the second run of a shape takes the checked-shape fast path
        feed = {"x": np.ones(shape, np.float32)}
        with pytest.raises(nn_core.ModelError, match=r"sequence_out\.onnx: output 'y' is declared a tensor.*list"):
            model.run(feed)


@pytest.mark.parametrize("dims", [[3, 0], [2**20, 2**20, 0], [2**40, 7, 2**40, 0]])
@pytest.mark.parametrize("data_type", [TensorProto.FLOAT, TensorProto.INT4])
def test_an_empty_attribute_tensor_with_huge_other_dims_is_read_without_work_or_refused(dims, data_type):
    # found by tools/fuzz_models.py: onnx's reader sized work by the non-zero dims (MemoryError in a worker)
    from nn_core.ops.attributes import tensor_to_array

    tensor = helper.make_tensor("t", data_type, dims, [])
    if np.prod(np.array(dims, dtype=object)[np.array(dims) > 0]) >= 2**63:
        with pytest.raises(nn_core.ModelError, match=r"tensor 't' has dims .* too large"):
            tensor_to_array(tensor, "hostile.onnx")
    else:
        array = tensor_to_array(tensor, "hostile.onnx")
        assert array.shape == tuple(dims) and array.size == 0


def test_values_in_the_wrong_typed_field_are_named_not_left_to_a_reshape_error():
    # found by tools/fuzz_models.py (its data_type changed under it): onnx read the empty int64_data and failed
    # with "cannot reshape array of size 0 into shape (4,)"
    from nn_core.ops.attributes import tensor_to_array

    tensor = helper.make_tensor("w", TensorProto.FLOAT, [4], [1.0, 2.0, 3.0, 4.0])
    tensor.data_type = TensorProto.INT64
    with pytest.raises(nn_core.ModelError, match=r"hostile\.onnx: tensor 'w' of shape \[4\] int64 keeps its values in"
                                                 r" float_data, but int64 values belong in int64_data"):
        tensor_to_array(tensor, "hostile.onnx")
    short = helper.make_tensor("b", TensorProto.FLOAT, [3], [1.0, 2.0, 3.0])
    short.dims[0] = 4
    with pytest.raises(nn_core.ModelError, match=r"tensor 'b' of shape \[4\] holds 3 values, not 4"):
        tensor_to_array(short, "hostile.onnx")
    strings = helper.make_tensor("s", TensorProto.STRING, [2], [b"a", b"b"])
    strings.ClearField("string_data")
    strings.raw_data = b"ab"
    with pytest.raises(nn_core.ModelError, match=r"tensor 's' of shape \[2\] holds strings as raw bytes"):
        tensor_to_array(strings, "hostile.onnx")
    # every element type's own field still reads (float16 and bool through int32_data)
    for data_type, values in ((TensorProto.FLOAT16, [1.5, -2.0]), (TensorProto.BOOL, [True, False]),
                              (TensorProto.INT8, [-3, 4]), (TensorProto.DOUBLE, [0.25, 8.0])):
        array = tensor_to_array(helper.make_tensor("v", data_type, [2], values), "ok.onnx")
        np.testing.assert_array_equal(array, np.asarray(values, array.dtype))


@pytest.mark.parametrize("field", ["op_type", "name", "output"])
def test_node_text_that_is_not_utf8_is_refused_naming_the_node(tmp_path, field):
    # protobuf hands such a string field back as bytes: onnx's schema lookup then failed with "get_schema():
    # incompatible function arguments" (found by tools/fuzz_models.py)
    proto = _relu_model(node_name="relu_node", output_name="y")
    text = {"op_type": b"Relu", "name": b"relu_node", "output": b"hidden"}[field]
    broken = proto.SerializeToString().replace(text, text[:1] + b"\xff" + text[2:], 1)
    path = tmp_path / "bytes.onnx"
    path.write_bytes(broken)
    with pytest.raises(nn_core.ModelError, match=r"bytes\.onnx: node 0 has a name, operator or value name that is"
                                                 r" not UTF-8 text: b'.\\xff"):
        nn_core.load(path)


def _string_model(nodes, inputs, initializers=(), opset=13) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "strings", inputs, [helper.make_tensor_value_info("y", TensorProto.UNDEFINED,
                                                                                         None)], list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


def test_a_string_times_a_huge_integer_is_refused_before_it_is_built(tmp_path):
    # NumPy multiplies an object array of str by ints as Python does, repeating the string: folding this Mul at
    # load built 2 GB of "a"s (4 s); 10**12 would exhaust memory (found by tools/fuzz_models.py, as a hang)
    text = helper.make_tensor("text", TensorProto.STRING, [2], [b"a", b"b"])
    times = helper.make_tensor("times", TensorProto.INT64, [2], [10**12, 10**12])
    proto = _string_model([helper.make_node("Mul", ["text", "times"], ["y"], name="repeat")], [], [text, times])
    path = tmp_path / "repeat.onnx"
    onnx.save(proto, str(path))
    with pytest.raises(nn_core.ModelError, match=r"repeat\.onnx: node 'repeat' \(Mul\): input 0 \('A'\) is string;"):
        nn_core.load(path)


def test_a_string_input_reaching_a_conv_is_refused_on_every_path(tmp_path):
    # a string image and integer weights: Conv's products would repeat the strings (found by the fuzzer: a hang)
    conv = helper.make_node("Conv", ["x", "w"], ["y"], name="conv")
    weights = helper.make_tensor("w", TensorProto.INT32, [2, 1, 3, 3], [10**6] * 18)
    proto = _string_model([conv], [helper.make_tensor_value_info("x", TensorProto.STRING, [1, 1, 5, 5])], [weights])
    path = tmp_path / "strings_in.onnx"
    onnx.save(proto, str(path))
    model = nn_core.load(path)
    image = np.full((1, 1, 5, 5), "ink", dtype=object)
    expected = r"strings_in\.onnx: node 'conv' \(Conv\): input 0 \('X'\) is string; Conv takes double, float"
    for run in (model.run, model.run, model.run, model.run_traced):  # compiled, checked, specialized, traced
        with pytest.raises(nn_core.ModelError, match=expected):
            run({"x": image})


def test_string_models_still_run_and_numeric_ones_get_no_guards(tmp_path):
    from nn_core.string_guard import StringGuard

    # strings through the ops that take them: Reshape, then Concat with a string constant
    shape = helper.make_tensor("shape", TensorProto.INT64, [1], [4])
    extra = helper.make_tensor("extra", TensorProto.STRING, [1], [b"z"])
    proto = _string_model([helper.make_node("Reshape", ["x", "shape"], ["flat"]),
                           helper.make_node("Concat", ["flat", "extra"], ["y"], axis=0)],
                          [helper.make_tensor_value_info("x", TensorProto.STRING, [2, 2])], [shape, extra])
    path = tmp_path / "text.onnx"
    onnx.save(proto, str(path))
    model = nn_core.load(path)
    for _ in range(3):
        got = model.run({"x": np.array([["a", "b"], ["c", "d"]], dtype=object)})["y"]
        assert list(got) == ["a", "b", "c", "d", "z"]
    assert not any(isinstance(step.kernel, StringGuard) for step in model._fast_plan().steps)
    lenet = nn_core.load(os.path.join(os.path.dirname(__file__), "..", "assets", "lenet5.onnx"))
    assert not any(isinstance(step.kernel, StringGuard) for step in lenet._fast_plan().steps)


def test_an_attention_reshape_to_an_impossible_size_is_not_fused_into_buffers(tmp_path):
    # the ViT fixture's q/k/v split (Reshape to [2, 16, 3, 2, 12]) with its token count flipped to 2**50: the fused
    # attention kernel sized a column of ones by it at load (4 PiB, MemoryError; found by tools/fuzz_models.py).
    # Left unfused, the Reshape refuses the size when it runs.
    from onnx import numpy_helper

    proto = onnx.load(os.path.join(os.path.dirname(__file__), "models", "grad", "vit_d20.onnx"))
    for index, tensor in enumerate(proto.graph.initializer):
        if tensor.name == "val_15":
            shape = numpy_helper.to_array(tensor).copy()
            shape[1] = 2**50
            proto.graph.initializer[index].CopyFrom(numpy_helper.from_array(shape, "val_15"))
    path = tmp_path / "huge_tokens.onnx"
    onnx.save(proto, str(path))
    model = nn_core.load(path)
    with pytest.raises(nn_core.ModelError, match=r"huge_tokens\.onnx: node 'node_view_1' \(Reshape\): cannot"):
        model.run({model.inputs[0].name: np.zeros((2, 1, 28, 28), np.float32)})
