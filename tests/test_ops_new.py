"""The operators added for issue 10 beyond what ONNX's node cases reach: subgraphs with outer-scope values,
nesting, and the refusals (a runaway Loop, too-deep nesting)."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper

import nn_core
from nn_core.errors import ModelError
from nn_core.limits import Limits

F = TensorProto.FLOAT
I64 = TensorProto.INT64
B = TensorProto.BOOL


def _model(nodes, inputs, outputs, initializers=(), opset=17):
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(initializers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _loop_body_adding(outer_name: str, condition_from: str | None = None):
    """Body: (i, cond, acc) -> (cond, acc + outer, acc) — a carried sum and a scan output."""
    nodes = [helper.make_node("Add", ["acc", outer_name], ["acc_out"]),
             helper.make_node("Identity", ["acc", ] if condition_from is None else [condition_from], ["scan"])]
    nodes.append(helper.make_node("Identity", ["cond"], ["cond_out"]))
    return helper.make_graph(
        nodes, "body",
        [helper.make_tensor_value_info("i", I64, []), helper.make_tensor_value_info("cond", B, []),
         helper.make_tensor_value_info("acc", F, [2])],
        [helper.make_tensor_value_info("cond_out", B, []), helper.make_tensor_value_info("acc_out", F, [2]),
         helper.make_tensor_value_info("scan", F, [2])])


def test_loop_reads_an_outer_scope_value_computed_by_the_main_graph():
    body = _loop_body_adding("step")
    model = _model(
        [helper.make_node("Mul", ["x", "x"], ["step"]),
         helper.make_node("Loop", ["trips", "", "init"], ["final", "stacked"], body=body)],
        [helper.make_tensor_value_info("x", F, [2]), helper.make_tensor_value_info("trips", I64, []),
         helper.make_tensor_value_info("init", F, [2])],
        [helper.make_tensor_value_info("final", F, [2]), helper.make_tensor_value_info("stacked", F, [None, 2])])
    m = nn_core.load_proto(model)
    out = m.run({"x": np.array([1, 2], np.float32), "trips": np.array(3), "init": np.zeros(2, np.float32)})
    np.testing.assert_allclose(out["final"], [3, 12])
    np.testing.assert_allclose(out["stacked"], [[0, 0], [1, 4], [2, 8]])


def test_nested_subgraphs_see_values_two_scopes_out():
    inner_then = helper.make_graph([helper.make_node("Add", ["x", "y"], ["t"])], "then", [],
                                   [helper.make_tensor_value_info("t", F, [1])])
    inner_else = helper.make_graph([helper.make_node("Sub", ["x", "y"], ["e"])], "else", [],
                                   [helper.make_tensor_value_info("e", F, [1])])
    outer_then = helper.make_graph(
        [helper.make_node("Neg", ["x"], ["y"]),
         helper.make_node("If", ["c2"], ["r"], then_branch=inner_then, else_branch=inner_else)],
        "outer_then", [], [helper.make_tensor_value_info("r", F, [1])])
    outer_else = helper.make_graph([helper.make_node("Identity", ["x"], ["z"])], "outer_else", [],
                                   [helper.make_tensor_value_info("z", F, [1])])
    model = _model([helper.make_node("If", ["c1"], ["out"], then_branch=outer_then, else_branch=outer_else)],
                   [helper.make_tensor_value_info("c1", B, []), helper.make_tensor_value_info("c2", B, []),
                    helper.make_tensor_value_info("x", F, [1])],
                   [helper.make_tensor_value_info("out", F, [1])])
    m = nn_core.load_proto(model)
    x = np.array([5], np.float32)
    assert m.run({"c1": np.array(True), "c2": np.array(False), "x": x})["out"][0] == 10  # x - (-x)
    assert m.run({"c1": np.array(True), "c2": np.array(True), "x": x})["out"][0] == 0
    assert m.run({"c1": np.array(False), "c2": np.array(True), "x": x})["out"][0] == 5
    # the outer If's implicit inputs are what its bodies read from the main graph, nested ones included
    (node,) = m.nodes
    assert node.inputs == ["c1", "x", "c2"]


def test_a_loop_without_end_is_refused_with_a_clear_error():
    body = _loop_body_adding("one")
    model = _model(
        [helper.make_node("Loop", ["", "go", "init"], ["final", "stacked"], body=body)],
        [helper.make_tensor_value_info("go", B, []), helper.make_tensor_value_info("init", F, [2])],
        [helper.make_tensor_value_info("final", F, [2]), helper.make_tensor_value_info("stacked", F, [None, 2])],
        [helper.make_tensor("one", F, [2], [1, 1])])
    m = nn_core.load_proto(model, limits=Limits(max_loop_iterations=1000))
    with pytest.raises(ModelError, match=r"Loop.*1,000 iterations.*max_loop_iterations"):
        m.run({"go": np.array(True), "init": np.zeros(2, np.float32)})


def test_a_huge_trip_count_is_fine_when_the_condition_stops_the_loop():
    body = helper.make_graph(
        [helper.make_node("Add", ["acc", "one"], ["acc_out"]),
         helper.make_node("Less", ["acc_out", "ten"], ["cond_out"])], "body",
        [helper.make_tensor_value_info("i", I64, []), helper.make_tensor_value_info("cond", B, []),
         helper.make_tensor_value_info("acc", F, [])],
        [helper.make_tensor_value_info("cond_out", B, []), helper.make_tensor_value_info("acc_out", F, [])])
    model = _model([helper.make_node("Loop", ["trips", "go", "init"], ["final"], body=body)],
                   [helper.make_tensor_value_info("init", F, [])],
                   [helper.make_tensor_value_info("final", F, [])],
                   [helper.make_tensor("trips", I64, [], [2**63 - 1]), helper.make_tensor("go", B, [], [True]),
                    helper.make_tensor("one", F, [], [1.0]), helper.make_tensor("ten", F, [], [10.0])])
    m = nn_core.load_proto(model)
    assert m.run({"init": np.array(0, np.float32)})["final"] == 10


def test_a_loop_whose_stacked_output_grows_past_the_tensor_budget_is_refused():
    body = _loop_body_adding("one")
    model = _model(
        [helper.make_node("Loop", ["trips", "", "init"], ["final", "stacked"], body=body)],
        [helper.make_tensor_value_info("init", F, [2])],
        [helper.make_tensor_value_info("final", F, [2]), helper.make_tensor_value_info("stacked", F, [None, 2])],
        [helper.make_tensor("trips", I64, [], [50_000]), helper.make_tensor("one", F, [2], [1, 1])])
    m = nn_core.load_proto(model, limits=Limits(max_tensor_bytes=64 * 1024))
    with pytest.raises(ModelError, match="stacked scan outputs|scan output"):
        m.run({"init": np.zeros(2, np.float32)})


def test_subgraphs_nested_too_deep_are_refused(monkeypatch):
    import nn_core.graph

    monkeypatch.setattr(nn_core.graph, "MAX_SUBGRAPH_NESTING", 4)  # protobuf itself stops near 33 levels
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "leaf", [],
                              [helper.make_tensor_value_info("y", F, [1])])
    leaf = graph
    for level in range(6):
        graph = helper.make_graph(
            [helper.make_node("If", ["c"], [f"y{level}"], then_branch=graph, else_branch=leaf)], f"g{level}", [],
            [helper.make_tensor_value_info(f"y{level}", F, [1])])
    model = _model(list(graph.node), [helper.make_tensor_value_info("c", B, []),
                                      helper.make_tensor_value_info("x", F, [1])],
                   [helper.make_tensor_value_info("y5", F, [1])])
    with pytest.raises(ModelError, match="nest"):
        nn_core.load_proto(model)


def test_a_body_reading_a_name_nobody_defines_is_a_dangling_input():
    then = helper.make_graph([helper.make_node("Identity", ["ghost"], ["t"])], "then", [],
                             [helper.make_tensor_value_info("t", F, [1])])
    model = _model([helper.make_node("If", ["c"], ["out"], then_branch=then, else_branch=then)],
                   [helper.make_tensor_value_info("c", B, [])], [helper.make_tensor_value_info("out", F, [1])])
    with pytest.raises(ModelError, match="ghost"):
        nn_core.load_proto(model)


def test_scan_with_outer_scope_and_reverse_direction():
    body = helper.make_graph(
        [helper.make_node("Add", ["s", "x"], ["s1"]), helper.make_node("Mul", ["s1", "k"], ["y"])], "body",
        [helper.make_tensor_value_info("s", F, [2]), helper.make_tensor_value_info("x", F, [2])],
        [helper.make_tensor_value_info("s1", F, [2]), helper.make_tensor_value_info("y", F, [2])])
    model = _model([helper.make_node("Scan", ["s0", "xs"], ["sf", "ys"], body=body, num_scan_inputs=1,
                                     scan_input_directions=[1])],
                   [helper.make_tensor_value_info("s0", F, [2]), helper.make_tensor_value_info("xs", F, [3, 2]),
                    helper.make_tensor_value_info("k", F, [])],
                   [helper.make_tensor_value_info("sf", F, [2]), helper.make_tensor_value_info("ys", F, [3, 2])])
    m = nn_core.load_proto(model)
    xs = np.arange(6, dtype=np.float32).reshape(3, 2)
    out = m.run({"s0": np.zeros(2, np.float32), "xs": xs, "k": np.array(2, np.float32)})
    np.testing.assert_allclose(out["sf"], xs.sum(0))
    np.testing.assert_allclose(out["ys"], 2 * np.cumsum(xs[::-1], axis=0))


# ---- recurrent layers against onnxruntime where the node cases do not reach ---------------------------------


def _against_onnxruntime(model, feeds, rtol=1e-4, atol=1e-5):
    ort = pytest.importorskip("onnxruntime")
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    want = session.run(None, feeds)
    got = list(nn_core.load_proto(model).run(feeds).values())
    for w, g in zip(want, got):
        assert g.shape == w.shape
        np.testing.assert_allclose(g, w, rtol=rtol, atol=atol)


@pytest.mark.parametrize("op", ["RNN", "GRU", "LSTM"])
@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
def test_recurrent_layers_with_sequence_lengths_and_initial_state(op, direction):
    rng = np.random.default_rng(0)
    steps, batch, features, hidden = 5, 3, 4, 6
    dirs = 2 if direction == "bidirectional" else 1
    gates = {"RNN": 1, "GRU": 3, "LSTM": 4}[op]
    inits = [helper.make_tensor(name, F, value.shape, value.ravel()) for name, value in (
        ("W", rng.normal(size=(dirs, gates * hidden, features)).astype(np.float32) * 0.5),
        ("R", rng.normal(size=(dirs, gates * hidden, hidden)).astype(np.float32) * 0.5),
        ("B", rng.normal(size=(dirs, 2 * gates * hidden)).astype(np.float32) * 0.1))]
    inputs = ["x", "W", "R", "B", "lens", "h0"]
    extra = {}
    if op == "LSTM":
        inits.append(helper.make_tensor("P", F, [dirs, 3 * hidden], rng.normal(size=dirs * 3 * hidden) * 0.1))
        inputs += ["c0", "P"]
    if op == "GRU":
        extra["linear_before_reset"] = 1
    outputs = ["Y", "Y_h"] + (["Y_c"] if op == "LSTM" else [])
    node = helper.make_node(op, inputs, outputs, hidden_size=hidden, direction=direction, **extra)
    value_infos = [helper.make_tensor_value_info("x", F, [steps, batch, features]),
                   helper.make_tensor_value_info("lens", TensorProto.INT32, [batch]),
                   helper.make_tensor_value_info("h0", F, [dirs, batch, hidden])]
    if op == "LSTM":
        value_infos.append(helper.make_tensor_value_info("c0", F, [dirs, batch, hidden]))
    model = _model([node], value_infos, [helper.make_tensor_value_info(o, F, None) for o in outputs], inits,
                   opset=14)
    feeds = {"x": rng.normal(size=(steps, batch, features)).astype(np.float32),
             "lens": np.array([5, 2, 4], np.int32),
             "h0": rng.normal(size=(dirs, batch, hidden)).astype(np.float32)}
    if op == "LSTM":
        feeds["c0"] = rng.normal(size=(dirs, batch, hidden)).astype(np.float32)
    _against_onnxruntime(model, feeds)


# ---- attention against onnxruntime: grouped heads with a KV cache and a float mask --------------------------


def test_attention_grouped_heads_with_cache_and_mask_matches_onnxruntime():
    rng = np.random.default_rng(1)
    batch, heads, kv_heads, q_len, past, size = 2, 4, 2, 3, 5, 8
    node = helper.make_node("Attention", ["Q", "K", "V", "mask", "pk", "pv"], ["Y", "present_k", "present_v"],
                            is_causal=0)
    shapes = {"Q": [batch, heads, q_len, size], "K": [batch, kv_heads, q_len, size],
              "V": [batch, kv_heads, q_len, size], "mask": [q_len, past + q_len],
              "pk": [batch, kv_heads, past, size], "pv": [batch, kv_heads, past, size]}
    model = _model([node], [helper.make_tensor_value_info(n, F, s) for n, s in shapes.items()],
                   [helper.make_tensor_value_info(n, F, None) for n in ("Y", "present_k", "present_v")], opset=23)
    feeds = {n: rng.normal(size=s).astype(np.float32) for n, s in shapes.items()}
    _against_onnxruntime(model, feeds)


# ---- spatial sampling and detection against onnxruntime -----------------------------------------------------


@pytest.mark.parametrize("mode", ["linear", "nearest", "cubic"])
@pytest.mark.parametrize("padding", ["zeros", "border", "reflection"])
@pytest.mark.parametrize("align", [0, 1])
def test_grid_sample_every_mode_and_padding(mode, padding, align):
    rng = np.random.default_rng(2)
    node = helper.make_node("GridSample", ["x", "grid"], ["y"], mode=mode, padding_mode=padding, align_corners=align)
    model = _model([node], [helper.make_tensor_value_info("x", F, [2, 3, 5, 6]),
                            helper.make_tensor_value_info("grid", F, [2, 4, 7, 2])],
                   [helper.make_tensor_value_info("y", F, None)], opset=20)
    feeds = {"x": rng.normal(size=(2, 3, 5, 6)).astype(np.float32),
             "grid": rng.uniform(-1.6, 1.6, size=(2, 4, 7, 2)).astype(np.float32)}
    if mode == "cubic" and padding == "border":
        # onnxruntime clamps the coordinate itself before cubic interpolation; the ONNX reference (and nn_core)
        # move only coordinates beyond the border, as the spec's linear and nearest modes do
        from onnx.reference import ReferenceEvaluator

        want = ReferenceEvaluator(model).run(None, feeds)[0]
        np.testing.assert_allclose(nn_core.load_proto(model).run(feeds)["y"], want, rtol=1e-4, atol=1e-4)
        return
    _against_onnxruntime(model, feeds, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("mode", ["avg", "max"])
def test_roi_align_matches_onnxruntime(mode):
    rng = np.random.default_rng(3)
    node = helper.make_node("RoiAlign", ["x", "rois", "idx"], ["y"], mode=mode, output_height=3, output_width=4,
                            sampling_ratio=0, spatial_scale=0.5)
    model = _model([node], [helper.make_tensor_value_info("x", F, [2, 3, 10, 12]),
                            helper.make_tensor_value_info("rois", F, [5, 4]),
                            helper.make_tensor_value_info("idx", I64, [5])],
                   [helper.make_tensor_value_info("y", F, None)], opset=16)
    rois = np.sort(rng.uniform(-2, 26, size=(5, 2, 2)), axis=1).transpose(0, 2, 1).reshape(5, 4)[:, [0, 2, 1, 3]]
    feeds = {"x": rng.normal(size=(2, 3, 10, 12)).astype(np.float32), "rois": rois.astype(np.float32),
             "idx": np.array([0, 1, 1, 0, 1])}
    _against_onnxruntime(model, feeds, rtol=1e-4, atol=1e-4)


def test_non_max_suppression_matches_onnxruntime_on_random_boxes():
    rng = np.random.default_rng(4)
    corners = rng.uniform(0, 10, size=(2, 40, 2, 2))
    boxes = np.concatenate([corners.min(axis=2), corners.max(axis=2)], axis=-1).astype(np.float32)
    node = helper.make_node("NonMaxSuppression", ["boxes", "scores", "k", "iou", "floor"], ["sel"])
    model = _model([node], [helper.make_tensor_value_info("boxes", F, [2, 40, 4]),
                            helper.make_tensor_value_info("scores", F, [2, 3, 40])],
                   [helper.make_tensor_value_info("sel", I64, None)],
                   [helper.make_tensor("k", I64, [1], [7]), helper.make_tensor("iou", F, [1], [0.3]),
                    helper.make_tensor("floor", F, [1], [0.2])], opset=11)
    _against_onnxruntime(model, {"boxes": boxes, "scores": rng.uniform(size=(2, 3, 40)).astype(np.float32)})
