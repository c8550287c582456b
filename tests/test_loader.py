"""The loader and executor: graph handling, optimisation that changes nothing, and errors that name the culprit."""

from __future__ import annotations

import subprocess
import sys
import tracemalloc

import numpy as np
import onnx
import pytest
from helpers import make_model, ort_run, save, small_cnn, tensor_info
from onnx import helper, numpy_helper

import nn_core
from nn_core import InputError, ModelError, UnsupportedOperatorError


@pytest.fixture
def rng():
    return np.random.default_rng(7)


def test_small_cnn_matches_onnxruntime_and_traced_plan(tmp_path, rng):
    proto = small_cnn(rng)
    model = nn_core.load(save(proto, tmp_path / "cnn.onnx"))
    x = rng.standard_normal((5, 1, 8, 8)).astype(np.float32)
    got = model.run({"x": x})["y"]
    want = ort_run(proto, {"x": x})[0]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    # the fast plan folded BN into the conv, fused both ReLUs, chained the dense layers (DenseChain) and made the
    # conv block and the chain one step (PooledHead), yet the traced plan sees every original node
    assert model.plan_ops == ["Conv+BatchNormalization+Relu+MaxPool+Flatten+Gemm+Relu+Gemm"]
    outputs, records = model.run_traced({"x": x})
    np.testing.assert_allclose(outputs["y"], got, rtol=1e-5, atol=1e-6)
    assert [r.name for r in records] == [n.name for n in model.nodes]
    by_name = {r.name: r for r in records}
    assert by_name["bn1"].outputs["bn1"].shape == (5, 4, 8, 8)
    assert by_name["relu1"].outputs["r1"].min() >= 0
    assert by_name["pool1"].outputs["p1"].shape == (5, 4, 4, 4)


def test_specs_and_description(tmp_path, rng):
    model = nn_core.load(save(small_cnn(rng), tmp_path / "cnn.onnx"))
    (spec,) = model.inputs
    assert spec.name == "x" and spec.shape == ["N", 1, 8, 8] and spec.dtype == np.float32
    assert model.outputs[0].shape == ["N", 3]
    assert model.opset == 13
    assert model.parameter_count == 4 * 9 + 4 + 16 * 64 + 16 + 48 + 3 + 4 * 4
    assert model.op_counts()["Relu"] == 2


def test_nodes_out_of_order_and_initializers_as_inputs(tmp_path):
    w = np.arange(6, dtype=np.float32).reshape(2, 3)
    nodes = [helper.make_node("Relu", ["h"], ["y"], name="second"),
             helper.make_node("MatMul", ["x", "w"], ["h"], name="first")]
    proto = make_model(nodes, [tensor_info("x", [1, 2]), tensor_info("w", [2, 3])], [tensor_info("y", [1, 3])],
                       {"w": w})
    model = nn_core.load(save(proto, tmp_path / "m.onnx"))
    assert [n.name for n in model.nodes] == ["first", "second"]
    assert [v.name for v in model.inputs] == ["x"]  # the weight is not something to feed
    x = np.array([[1.0, -2.0]], np.float32)
    np.testing.assert_array_equal(model.run({"x": x})["y"], np.maximum(x @ w, 0))


def test_constant_subgraph_is_folded_and_still_correct(tmp_path):
    shape_nodes = [
        helper.make_node("Constant", [], ["two"], name="c2",
                         value=numpy_helper.from_array(np.array([2, 3], np.int64))),
        helper.make_node("Reshape", ["x", "two"], ["y"], name="reshape"),
    ]
    proto = make_model(shape_nodes, [tensor_info("x", [6])], [tensor_info("y", [2, 3])])
    model = nn_core.load(save(proto, tmp_path / "m.onnx"))
    assert "Constant" not in model.plan_source
    np.testing.assert_array_equal(model.run({"x": np.arange(6, dtype=np.float32)})["y"],
                                  np.arange(6, dtype=np.float32).reshape(2, 3))
    _, records = model.run_traced({"x": np.arange(6, dtype=np.float32)})
    assert records[0].folded and records[0].outputs["two"].tolist() == [2, 3]


def test_intermediates_are_freed(tmp_path):
    """Memory must not grow with graph length: a 60-node chain holds a couple of arrays at a time, not 60."""
    n = 60
    nodes = [helper.make_node("Add", ["x" if i == 0 else f"h{i}", "one"], [f"h{i + 1}" if i < n - 1 else "y"],
                              name=f"add{i}") for i in range(n)]
    proto = make_model(nodes, [tensor_info("x", [256, 1024])], [tensor_info("y", [256, 1024])],
                       {"one": np.ones(1, np.float32)})
    model = nn_core.load(save(proto, tmp_path / "chain.onnx"))
    x = np.zeros((256, 1024), np.float32)
    tracemalloc.start()
    y = model.run({"x": x})["y"]
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert float(y[0, 0]) == n
    assert peak < 4 * x.nbytes, f"peak {peak / 2**20:.1f} MiB for {x.nbytes / 2**20:.1f} MiB arrays"


def test_input_errors_name_the_input_and_shapes(tmp_path, rng):
    model = nn_core.load(save(small_cnn(rng), tmp_path / "cnn.onnx"))
    with pytest.raises(InputError, match=r"input 'x' expects shape \[N,1,8,8\], got \[8,8\]"):
        model.run({"x": np.zeros((8, 8), np.float32)})
    with pytest.raises(InputError, match="missing input 'x'"):
        model.run({})
    with pytest.raises(InputError, match="unknown input 'image'"):
        model.run({"image": np.zeros((1, 1, 8, 8), np.float32), "x": np.zeros((1, 1, 8, 8), np.float32)})
    # a float64 or uint8 image is converted, not refused
    assert model.run({"x": np.zeros((2, 1, 8, 8))})["y"].dtype == np.float32


def test_kernel_failure_names_the_node_and_shapes(tmp_path):
    nodes = [helper.make_node("MatMul", ["a", "b"], ["y"], name="mm")]
    proto = make_model(nodes, [tensor_info("a", ["N", "K"]), tensor_info("b", ["K", "M"])], [tensor_info("y", None)])
    model = nn_core.load(save(proto, tmp_path / "mm.onnx"))
    with pytest.raises(ModelError, match=r"node 'mm' \(MatMul\).*\[2, 3\].*\[4, 5\]"):
        model.run({"a": np.zeros((2, 3), np.float32), "b": np.zeros((4, 5), np.float32)})


def test_kernel_failure_on_a_value_of_the_wrong_type_leads_with_the_schema(tmp_path):
    # integer logits reaching a Softmax: the message says which input breaks which type rule, not only NumPy's
    # "Cannot cast ufunc 'exp' output from dtype('float64') to dtype('int64')"; on the fast path (twice: the
    # second run is the specialized one) and on the traced one alike (a string where numbers belong is refused
    # before the kernel runs: test_untrusted_file)
    proto = make_model([helper.make_node("Softmax", ["x"], ["y"], name="soft")],
                       [tensor_info("x", [1, 10], onnx.TensorProto.INT64)], [tensor_info("y", None)])
    model = nn_core.load(save(proto, tmp_path / "ints.onnx"))
    logits = np.arange(10, dtype=np.int64).reshape(1, 10)
    expected = (r"node 'soft' \(Softmax\): input 0 \('input'\) is int64; Softmax takes bfloat16, double, float, "
                r"float16 \(failed")
    for run in (model.run, model.run, model.run_traced):
        with pytest.raises(ModelError, match=expected):
            run({"x": logits})


def test_a_bool_input_where_the_op_takes_numbers_is_refused_at_load(tmp_path):
    # a Conv reading a graph input declared bool (or a bool initializer) would run into garbage or fail a fused
    # step later under another node's name; the file is refused at load, naming the node, the input and the
    # declared value. Bool where the op takes bool (Where's condition) still loads and runs
    conv = helper.make_node("Conv", ["x", "w"], ["y"], name="c1")
    weights = {"w": np.ones((2, 1, 3, 3), np.float32)}
    bool_image = make_model([conv], [tensor_info("x", [1, 1, 5, 5], onnx.TensorProto.BOOL)], [tensor_info("y", None)],
                            weights)
    with pytest.raises(ModelError, match=r"image\.onnx: node 'c1' \(Conv\): input 0 \('X'\) is bool; Conv takes "
                                         r"double, float, float16 \(the graph input 'x' it reads is declared so\)"):
        nn_core.load(save(bool_image, tmp_path / "image.onnx"))
    bool_weights = make_model([conv], [tensor_info("x", [1, 1, 5, 5])], [tensor_info("y", None)],
                              {"w": np.ones((2, 1, 3, 3), bool)})
    with pytest.raises(ModelError, match=r"input 1 \('W'\) is bool; .*the initializer 'w' it reads"):
        nn_core.load(save(bool_weights, tmp_path / "weights.onnx"))
    where = make_model([helper.make_node("Where", ["c", "x", "z"], ["y"])],
                       [tensor_info("c", [3], onnx.TensorProto.BOOL), tensor_info("x", [3])],
                       [tensor_info("y", None)], {"z": np.zeros(3, np.float32)})
    model = nn_core.load(save(where, tmp_path / "where.onnx"))
    got = model.run({"c": np.array([True, False, True]), "x": np.ones(3, np.float32)})["y"]
    np.testing.assert_array_equal(got, [1, 0, 1])


def test_a_fused_kernel_failing_keeps_the_plain_message(tmp_path):
    # a DenseChain (Gemm -> Relu -> Gemm as one step) fails on an input of the wrong width: the message names the
    # first node and the shapes, as an unfused kernel's would (the schema check only reads a kernel's own NodeSpec)
    nodes = [helper.make_node("Gemm", ["x", "w1", "b1"], ["h"], name="fc1"), helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("Gemm", ["r", "w2", "b2"], ["y"], name="fc2")]
    weights = {"w1": np.ones((3, 4), np.float32), "b1": np.ones(4, np.float32), "w2": np.ones((4, 2), np.float32),
               "b2": np.ones(2, np.float32)}
    proto = make_model(nodes, [tensor_info("x", [1, "K"])], [tensor_info("y", None)], weights)
    model = nn_core.load(save(proto, tmp_path / "chain.onnx"))
    assert model.plan_ops == ["Gemm+Relu+Gemm"]
    for _ in range(2):
        with pytest.raises(ModelError, match=r"chain\.onnx: node 'fc1' \(Gemm\) failed on inputs \[1, 5\] float32, "
                                             r"\[3, 4\] float32, \[4\] float32: ValueError: shapes"):
            model.run({"x": np.ones((1, 5), np.float32)})


def test_a_fused_step_failing_in_a_later_node_names_that_node(tmp_path):
    # Conv -> Relu -> MaxPool -> Flatten -> Gemm run as one step; an image larger than the Gemm was made for
    # breaks the Gemm, and the message names the Gemm (the graph is run node by node to find it), not the Conv
    # that begins the step; the plan keeps working for the size it takes
    from nn_core.builder import GraphBuilder

    b = GraphBuilder(input=("input", [1, 1, 28, 28]), seed=0)
    proto = b.build([b.gemm(b.flatten(b.max_pool(b.relu(b.conv(b.input, 4, 3, pads=1)), 2)), 10, name="head")])
    for dim, name in zip(proto.graph.input[0].type.tensor_type.shape.dim[2:], "HW", strict=True):
        dim.dim_param = name
    del proto.graph.value_info[:]
    model = nn_core.load(save(proto, tmp_path / "sized.onnx"))
    assert len(model.plan_ops) == 1 and model.plan_ops[0].startswith("Conv+")
    for _ in range(2):  # the shape's first run (specializing) and a later one
        with pytest.raises(ModelError, match=r"sized\.onnx: node 'head' \(Gemm\) failed on inputs \[1, 900\] "):
            model.run({"input": np.zeros((1, 1, 30, 30), np.float32)})
    assert model.run({"input": np.ones((1, 1, 28, 28), np.float32)})[model.outputs[0].name].shape == (1, 10)


def test_html_page_is_refused(tmp_path):
    page = tmp_path / "mnist.onnx"
    page.write_text("<!DOCTYPE html>\n<html><head><title>mnist.onnx at main</title></head></html>")
    with pytest.raises(ModelError, match="not an ONNX file .*HTML page"):
        nn_core.load(page)


def test_placeholder_text_and_empty_and_missing_files(tmp_path):
    text = tmp_path / "m.onnx"
    text.write_text("placeholder, model goes here\n")
    with pytest.raises(ModelError, match="not an ONNX file .*text file"):
        nn_core.load(text)
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    with pytest.raises(ModelError, match="empty"):
        nn_core.load(empty)
    with pytest.raises(ModelError, match="no such file"):
        nn_core.load(tmp_path / "absent.onnx")


def test_truncated_file_is_refused(tmp_path, rng):
    data = small_cnn(rng).SerializeToString()
    cut = tmp_path / "cut.onnx"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelError, match="truncated"):
        nn_core.load(cut)


def test_unsupported_operator_lists_nodes_and_alternatives(tmp_path):
    nodes = [helper.make_node("FancyOp", ["x"], ["h"], name="f1", domain="example.com"),
             helper.make_node("FancyOp", ["h"], ["y"], name="f2", domain="example.com")]
    proto = make_model(nodes, [tensor_info("x", [1])], [tensor_info("y", [1])])
    proto.opset_import.append(helper.make_opsetid("example.com", 1))
    with pytest.raises(UnsupportedOperatorError, match=r"unsupported operators: FancyOp \(example.com, opset 1\) "
                                                      r"at nodes f1, f2 — supported: .*Conv"):
        nn_core.load(save(proto, tmp_path / "fancy.onnx"))


def test_dangling_input_and_cycle(tmp_path):
    dangling = make_model([helper.make_node("Relu", ["ghost"], ["y"], name="r")], [tensor_info("x", [1])],
                          [tensor_info("y", [1])])
    with pytest.raises(ModelError, match="dangling input: node 'r' \\(Relu\\) reads 'ghost'"):
        nn_core.load(save(dangling, tmp_path / "d.onnx"))
    cycle = make_model([helper.make_node("Add", ["x", "b"], ["a"], name="n1"),
                        helper.make_node("Relu", ["a"], ["b"], name="n2"),
                        helper.make_node("Identity", ["a"], ["y"], name="n3")],
                       [tensor_info("x", [1])], [tensor_info("y", [1])])
    with pytest.raises(ModelError, match="cycle: nodes n1, n2"):
        nn_core.load(save(cycle, tmp_path / "c.onnx"))



def test_empty_name_for_a_required_input_is_refused_at_load(tmp_path):
    # (a kernel would otherwise meet None and fail at run time with "'NoneType' object has no attribute ...")
    gemm = make_model([helper.make_node("Gemm", ["x", ""], ["y"], name="fc")], [tensor_info("x", [1, 4])],
                      [tensor_info("y", [1, 4])])
    with pytest.raises(ModelError, match=r"node 'fc' \(Gemm\): input 1 \('B'\) is required, but its name is empty"):
        nn_core.load(save(gemm, tmp_path / "gemm.onnx"))
    # an optional input may be left out so: Clip without its min
    clip = make_model([helper.make_node("Clip", ["x", "", "high"], ["y"], name="c")], [tensor_info("x", [3])],
                      [tensor_info("y", [3])], {"high": np.float32(1.0)})
    model = nn_core.load(save(clip, tmp_path / "clip.onnx"))
    np.testing.assert_array_equal(model.run({"x": np.array([-5, 0.5, 9], np.float32)})["y"], [-5, 0.5, 1])

def test_external_data_inside_folder_loads_and_escaping_path_is_refused(tmp_path, rng):
    proto = small_cnn(rng)
    folder = tmp_path / "model"
    folder.mkdir()
    x = rng.standard_normal((1, 1, 8, 8)).astype(np.float32)
    want = ort_run(proto, {"x": x})[0]
    onnx.save(proto, str(folder / "m.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
              location="weights.bin", size_threshold=0)
    np.testing.assert_allclose(nn_core.load(folder / "m.onnx").run({"x": x})["y"], want, rtol=1e-4, atol=1e-5)
    escaped = onnx.load(str(folder / "m.onnx"), load_external_data=False)
    for tensor in escaped.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = "../secret.bin"
    (tmp_path / "secret.bin").write_bytes((folder / "weights.bin").read_bytes())
    onnx.save(escaped, str(folder / "escaped.onnx"))
    with pytest.raises(ModelError, match="escapes the model folder"):
        nn_core.load(folder / "escaped.onnx")
    (folder / "weights.bin").unlink()
    with pytest.raises(ModelError, match="weights.bin.*missing"):
        nn_core.load(folder / "m.onnx")


def test_engine_never_imports_reference_runtimes(tmp_path, rng):
    path = save(small_cnn(rng), tmp_path / "cnn.onnx")
    code = (
        "import sys, numpy as np, nn_core\n"
        f"m = nn_core.load(r'{path}')\n"
        "m.run({'x': np.zeros((1, 1, 8, 8), np.float32)}); m.run_traced({'x': np.zeros((1, 1, 8, 8), np.float32)})\n"
        "bad = [k for k in ('onnxruntime', 'torch', 'tensorflow', 'onnx.reference') if k in sys.modules]\n"
        "print(bad)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
