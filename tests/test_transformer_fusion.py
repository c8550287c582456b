"""The fast plan's transformer fusions (nn_core.transformer_fusion): GELU exported as Div -> Erf -> Add -> Mul ->
Mul, attention on a packed projection, and x.flatten(k) from its shape nodes. Each fused plan against the unfused
graph (the traced plan) and onnxruntime, the fusion really taken, chains it must not take left alone, and the
fused kernels' fallback to the chain on inputs they were not prepared for."""

from __future__ import annotations

import math

import numpy as np
import pytest
from helpers import ROOT, make_model, ort_run, tensor_info
from onnx import helper

import nn_core
from nn_core.errors import ModelError
from nn_core.ops.activations import ErfGelu
from nn_core.ops.elementwise import erf

F32 = np.float32
SQRT2 = math.sqrt(2)


def _fast_and_unfused(model, feeds: dict) -> tuple[np.ndarray, np.ndarray, nn_core.Model]:
    loaded = nn_core.load_proto(model)
    fast = list(loaded.run(feeds).values())[0]
    unfused = list(loaded.run_traced(feeds)[0].values())[0]
    return fast, unfused, loaded


def _close(got: np.ndarray, want: np.ndarray, scale: float | None = None) -> None:
    """Equal within float32 rounding, relative to the values' scale."""
    scale = float(np.abs(want).max()) if scale is None else scale
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=3e-7 * max(scale, 1.0))


# ----------------------------------------------------------------------------------------------------------------
# GELU


def _gelu_model(form: str, divisor=SQRT2, offset=1.0, factor=0.5, shape=(2, 5, 48), const_shape=()):
    c = {"d": np.full(const_shape, divisor if form != "mul" else 1 / divisor, F32),
         "one": np.full(const_shape, offset, F32), "half": np.full(const_shape, factor, F32)}
    nodes = [helper.make_node("Div" if form != "mul" else "Mul", ["x", "d"], ["z"]),
             helper.make_node("Erf", ["z"], ["e"]),
             helper.make_node("Add", ["one", "e"] if form == "torch" else ["e", "one"], ["p"])]
    if form == "half_first":
        nodes += [helper.make_node("Mul", ["half", "x"], ["h"]), helper.make_node("Mul", ["h", "p"], ["y"])]
    else:
        nodes += [helper.make_node("Mul", ["x", "p"], ["t"]), helper.make_node("Mul", ["t", "half"], ["y"])]
    return make_model(nodes, [tensor_info("x", list(shape))], [tensor_info("y", None)], c)


@pytest.mark.parametrize("form", ["torch", "mul", "half_first", "other_order"])
def test_gelu_chain_is_one_step_equal_to_the_unfused_graph(form):
    x = (np.random.default_rng(0).standard_normal((2, 5, 48)) * 3).astype(F32)
    x[0, 0, :6] = [-30, -7, -5.5, 0, 1e-30, 40]
    model = _gelu_model(form)
    fast, unfused, loaded = _fast_and_unfused(model, {"x": x})
    assert len(loaded.plan_ops) == 1 and "Erf" in loaded.plan_ops[0]
    _close(fast, unfused)
    _close(fast, ort_run(model, {"x": x})[0])
    assert fast[0, 0, 0] == 0 and fast[0, 0, 5] == 40  # the tails are exact


def test_gelu_chain_with_other_constants_and_vector_constants():
    x = (np.random.default_rng(1).standard_normal((3, 48)) * 2).astype(F32)
    for divisor, offset, factor in ((1.7, 0.3, -2.0), (-1.2, 1.0, 0.5)):
        fast, unfused, loaded = _fast_and_unfused(_gelu_model("torch", divisor, offset, factor, (3, 48), (1,)),
                                                  {"x": x})
        assert len(loaded.plan_ops) == 1
        _close(fast, unfused)


@pytest.mark.parametrize("change", ["vector", "nan", "zero_divisor", "tiny_divisor", "y_is_read_twice",
                                    "rank_4_constant"])
def test_gelu_chains_it_must_not_take_stay_unfused(change):
    x = (np.random.default_rng(2).standard_normal((2, 5, 48))).astype(F32)
    model = _gelu_model("torch")
    init = {i.name: i for i in model.graph.initializer}
    if change == "vector":  # a per-feature divisor: not a scalar
        init["d"].CopyFrom(helper.make_tensor("d", 1, [48], np.linspace(1, 2, 48).astype(F32)))
    elif change == "nan":
        init["one"].CopyFrom(helper.make_tensor("one", 1, [], [float("nan")]))
    elif change == "zero_divisor":
        init["d"].CopyFrom(helper.make_tensor("d", 1, [], [0.0]))
    elif change == "tiny_divisor":  # 1 / divisor leaves float32's range
        init["d"].CopyFrom(helper.make_tensor("d", 1, [], [1e-44]))
    elif change == "rank_4_constant":  # would broadcast the rank-3 x up to rank 4
        init["half"].CopyFrom(helper.make_tensor("half", 1, [1, 1, 1, 1], [0.5]))
    else:  # an intermediate value is a graph output
        model.graph.output.append(tensor_info("e", None))
    with np.errstate(all="ignore"):
        fast, unfused, loaded = _fast_and_unfused(model, {"x": x})
    assert len(loaded.plan_ops) == 5
    np.testing.assert_array_equal(fast, unfused)


def test_gelu_kernel_falls_back_to_the_chain_on_inputs_it_was_not_made_for():
    loaded = nn_core.load_proto(_gelu_model("torch", shape=("N", 48)))
    (step,) = loaded._fast_plan().steps
    for x in (np.linspace(-4, 4, 96).reshape(2, 48), np.linspace(-4, 4, 48).astype(np.float16)):
        got = step.kernel.run(x)
        np.testing.assert_array_equal(got, step.kernel.chain(x))  # the members' kernels, one after the other
        wide = x.astype(np.float64)
        np.testing.assert_allclose(got, 0.5 * wide * (1 + erf(wide / math.sqrt(2))), rtol=2e-3, atol=2e-3)


def test_float32_gelu_is_the_formula_within_float32_rounding():
    x = np.concatenate([np.linspace(-12, 12, 200001), [-1e30, 1e30, -np.inf, np.inf, np.nan, 0.0, 1e-38]])
    x32 = x.astype(F32)
    wide = x32.astype(np.float64)
    gelu = nn_core.load_proto(make_model([helper.make_node("Gelu", ["x"], ["y"])], [tensor_info("x", [None])],
                                         [tensor_info("y", None)], opset=20))
    with np.errstate(all="ignore"):
        want = 0.5 * wide * (1 + erf(wide / math.sqrt(2)))
        got = ErfGelu(math.sqrt(2), 1.0, 0.5)(x32)
        np.testing.assert_array_equal(gelu.run({"x": x32})["y"], got)
    assert got.dtype == F32 and got.shape == x32.shape
    finite = np.isfinite(want)
    # float32's own rounding of the formula is ~1e-7 relative to |x|; the table adds under 3e-8
    assert np.all(np.abs(got[finite] - want[finite]) <= 1.5e-7 * np.maximum(np.abs(wide[finite]), 1e-30))
    assert got[-7] == 0 and got[-6] == F32(1e30) and got[-4] == np.inf and np.isnan(got[-3])


# ----------------------------------------------------------------------------------------------------------------
# attention


def _attention_model(batch=2, tokens=5, heads=3, depth=4, scale="div", picks=(0, 1, 2), merge=2, axis=-1,
                     batch_dim=None, opset=13):
    width = heads * depth
    consts = {"split": np.array([batch, tokens, 3, heads, depth], np.int64),
              "c": np.array(math.sqrt(depth) if scale == "div" else 1 / math.sqrt(depth), F32),
              "joined": np.array([batch, tokens, width], np.int64)}
    nodes = [helper.make_node("Reshape", ["qkv", "split"], ["r"]),
             helper.make_node("Transpose", ["r"], ["t"], perm=[2, 0, 3, 1, 4])]
    for name, pick in zip("qkv", picks):
        consts[f"i{name}"] = np.array(pick, np.int64)
        nodes.append(helper.make_node("Gather", ["t", f"i{name}"], [f"g{name}"], axis=0))
    nodes += [helper.make_node("Transpose", ["gk"], ["kt"], perm=[0, 1, 3, 2]),
              helper.make_node("MatMul", ["gq", "kt"], ["s"])]
    scores = "s"
    if scale != "none":
        nodes.append(helper.make_node("Div" if scale == "div" else "Mul", ["s", "c"], ["ss"]))
        scores = "ss"
    nodes += [helper.make_node("Softmax", [scores], ["p"], axis=axis), helper.make_node("MatMul", ["p", "gv"], ["o"])]
    out = "o"
    if merge:
        nodes.append(helper.make_node("Transpose", ["o"], ["ot"], perm=[0, 2, 1, 3]))
        out = "ot"
    if merge == 2:
        nodes.append(helper.make_node("Reshape", ["ot", "joined"], ["y"]))
        out = "y"
    return make_model(nodes, [tensor_info("qkv", [batch_dim or batch, tokens, 3 * width])],
                      [helper.make_tensor_value_info(out, 1, None)], consts, opset=opset)


def _qkv(batch=2, tokens=5, width=12, seed=3, scale=2.0):
    return (np.random.default_rng(seed).standard_normal((batch, tokens, 3 * width)) * scale).astype(F32)


@pytest.mark.parametrize("case", [{}, {"scale": "mul"}, {"scale": "none"}, {"merge": 0}, {"merge": 1},
                                  {"picks": (2, -3, 1)}, {"axis": 3}, {"batch": 1, "tokens": 17, "heads": 2},
                                  {"opset": 11}])
def test_attention_is_one_step_equal_to_the_unfused_graph(case):
    model = _attention_model(**case)
    batch, tokens, heads = case.get("batch", 2), case.get("tokens", 5), case.get("heads", 3)
    qkv = _qkv(batch, tokens, heads * 4)
    fast, unfused, loaded = _fast_and_unfused(model, {"qkv": qkv})
    assert len(loaded.plan_ops) == 1 and "Softmax" in loaded.plan_ops[0]
    _close(fast, unfused)
    _close(fast, ort_run(model, {"qkv": qkv})[0])


def test_attention_softmax_shifts_large_scores_as_the_kernel_does():
    qkv = _qkv(scale=40.0)  # scores far past exp's float32 range
    fast, unfused, _ = _fast_and_unfused(_attention_model(), {"qkv": qkv})
    assert np.all(np.isfinite(fast))
    _close(fast, unfused)


@pytest.mark.parametrize("change", ["softmax_axis", "scores_are_output", "vector_scale", "key_perm", "zero_dim"])
def test_attention_chains_it_must_not_take_stay_unfused(change):
    model = _attention_model(axis=2 if change == "softmax_axis" else -1)
    init = {i.name: i for i in model.graph.initializer}
    if change == "scores_are_output":
        model.graph.output.append(tensor_info("s", None))
    elif change == "vector_scale":
        init["c"].CopyFrom(helper.make_tensor("c", 1, [5], [2.0] * 5))
    elif change == "key_perm":
        next(n for n in model.graph.node if n.output[0] == "kt").attribute[0].ints[:] = [0, 1, 2, 3]
        model.graph.node.remove(next(n for n in model.graph.node if n.op_type == "Softmax"))
        model.graph.node.insert(9, helper.make_node("Softmax", ["ss"], ["p"], axis=-1))
    elif change == "zero_dim":  # a 0 in the split shape copies a dimension: not a plain target
        init["split"].CopyFrom(helper.make_tensor("split", 7, [5], [2, 0, 3, 3, 4]))
    qkv = _qkv()
    loaded = nn_core.load_proto(model)
    if change == "key_perm":  # q (B,H,S,D) @ k (B,H,S,D) needs S == D; here it fails either way
        with pytest.raises(ModelError):
            loaded.run({"qkv": qkv})
    else:
        fast = list(loaded.run({"qkv": qkv}).values())[0]
        np.testing.assert_array_equal(fast, list(loaded.run_traced({"qkv": qkv})[0].values())[0])
    assert not any("Softmax" in op and "Gather" in op for op in loaded.plan_ops)


def test_attention_falls_back_to_the_chain_on_other_sizes():
    """A batch other than the exported one: the chain's Reshape refuses it, as the unfused graph does."""
    loaded = nn_core.load_proto(_attention_model(batch_dim="N"))
    assert len(loaded.plan_ops) == 1
    with pytest.raises(ModelError, match="Reshape"):
        loaded.run({"qkv": _qkv(batch=1)})
    with pytest.raises(ModelError):
        loaded.run_traced({"qkv": _qkv(batch=1)})
    (step,) = loaded._fast_plan().steps
    qkv = _qkv().astype(np.float64)
    np.testing.assert_array_equal(step.kernel.run(qkv), step.kernel.chain(qkv))


# ----------------------------------------------------------------------------------------------------------------
# LayerNormalization with the residual Add before it and the mean over tokens after it


def _norm_model(add="pair", mean=None, sum_read=True, bias=True, width=24, x_shape=(2, 7, 24), opset=17):
    rng = np.random.default_rng(6)
    consts = {"gamma": rng.standard_normal(width).astype(F32), "beta": rng.standard_normal(width).astype(F32),
              "pos": rng.standard_normal((1,) + tuple(x_shape[1:])).astype(F32)}
    inputs = [tensor_info("a", list(x_shape))]
    nodes, normalized = [], "a"
    if add == "pair":
        inputs.append(tensor_info("b", list(x_shape)))
        nodes.append(helper.make_node("Add", ["a", "b"], ["s"]))
        normalized = "s"
    elif add in ("constant", "transposed"):
        if add == "transposed":  # a patch embedding's (B, E, S) -> (B, S, E), then the positions
            inputs = [tensor_info("a", [x_shape[0], x_shape[2], x_shape[1]])]
            nodes.append(helper.make_node("Transpose", ["a"], ["at"], perm=[0, 2, 1]))
        nodes.append(helper.make_node("Add", ["pos", "a" if add == "constant" else "at"], ["s"]))
        normalized = "s"
    ln_inputs = [normalized, "gamma", "beta"] if bias else [normalized, "gamma"]
    nodes.append(helper.make_node("LayerNormalization", ln_inputs, ["y"], axis=-1, epsilon=1e-5))
    out = "y"
    if mean is not None:
        axes, keepdims = mean
        nodes.append(helper.make_node("ReduceMean", ["y"], ["m"], axes=axes, keepdims=keepdims))
        out = "m"
    outputs = [tensor_info(out, None)]
    if sum_read and add:  # the next residual connection reads the sum
        nodes.append(helper.make_node("Add", [normalized, out if mean is None else normalized], ["r"]))
        outputs.append(tensor_info("r", None))
    return make_model(nodes, inputs, outputs, consts, opset=opset)


@pytest.mark.parametrize("case", [{}, {"add": "constant"}, {"add": "transposed"}, {"add": None}, {"sum_read": False},
                                  {"mean": ([1], 0), "sum_read": False}, {"mean": ([-2], 1)}, {"bias": False},
                                  {"x_shape": (5, 24), "add": "constant"}])
def test_residual_add_and_layer_norm_are_one_step_equal_to_the_unfused_graph(case):
    model = _norm_model(**case)
    rng = np.random.default_rng(7)
    feeds = {i.name: (rng.standard_normal([d.dim_value for d in i.type.tensor_type.shape.dim]) * 3 + 1).astype(F32)
             for i in model.graph.input}
    loaded = nn_core.load_proto(model)
    fast, unfused = loaded.run(feeds), loaded.run_traced(feeds)[0]
    want = dict(zip([o.name for o in model.graph.output], ort_run(model, feeds)))
    assert any("LayerNormalization" in op and "+" in op for op in loaded.plan_ops) or case.get("add", 1) is None
    assert len([op for op in loaded.plan_ops if "LayerNormalization" in op]) == 1
    assert case.get("add") != "transposed" or loaded.plan_ops[0] == "Transpose+Add+LayerNormalization"
    for name, value in fast.items():
        _close(value, unfused[name])
        _close(value, want[name])


def test_layer_norm_step_falls_back_to_the_chain_on_other_inputs():
    model = _norm_model(x_shape=("N", 7, 24))
    loaded = nn_core.load_proto(model)
    (step,) = [s for s in loaded._fast_plan().steps if "LayerNormalization" in s.label]
    rng = np.random.default_rng(8)
    a = rng.standard_normal((2, 7, 24)).astype(F32)
    for b in (rng.standard_normal((1, 7, 24)).astype(F32), a.astype(np.float64)):  # broadcast, another type
        for got, want in zip(step.kernel.run(a, b), step.kernel.chain(a, b)):
            np.testing.assert_array_equal(got, want)
    with pytest.raises(ModelError):  # widths the scale does not fit: the chain's kernels say so
        loaded.run({"a": a[..., :20], "b": a[..., :20]})


def test_later_passes_do_not_take_a_fused_step_for_its_first_node():
    """A large image's convolution takes the residual Add after it (residual.py): not the Add of an Add +
    LayerNormalization step, which would lose the step's second output."""
    rng = np.random.default_rng(13)
    consts = {"w": (rng.standard_normal((4, 4, 3, 3)) * 0.2).astype(F32),
              "gamma": rng.standard_normal(96).astype(F32), "beta": rng.standard_normal(96).astype(F32)}
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Add", ["c", "x"], ["s"]),
             helper.make_node("LayerNormalization", ["s", "gamma", "beta"], ["y"], axis=-1)]
    model = make_model(nodes, [tensor_info("x", [1, 4, 96, 96])], [tensor_info("y", None), tensor_info("s", None)],
                       consts, opset=17)
    x = rng.standard_normal((1, 4, 96, 96)).astype(F32)
    loaded = nn_core.load_proto(model)
    assert loaded.plan_ops == ["Conv", "Add+LayerNormalization"]
    fast, unfused = loaded.run({"x": x}), loaded.run_traced({"x": x})[0]
    for name in ("y", "s"):
        _close(fast[name], unfused[name])


def test_reduce_mean_over_other_axes_stays_a_step_of_its_own():
    loaded = nn_core.load_proto(_norm_model(mean=([2], 0), sum_read=False))
    assert "ReduceMean" in loaded.plan_ops


def _patch_model(flatten="shape_nodes", image=(2, 2, 13, 12), kernel=4, pads=None, conv_out_is_output=False):
    rng = np.random.default_rng(9)
    batch, channels, height, width = image
    pad = pads[0] if pads else 0
    tokens, embed = ((height + 2 * pad - kernel) // kernel + 1) * ((width + 2 * pad - kernel) // kernel + 1), 6
    consts = {"w": rng.standard_normal((embed, channels, kernel, kernel)).astype(F32),
              "wb": rng.standard_normal(embed).astype(F32),
              "pos": rng.standard_normal((1, tokens, embed)).astype(F32),
              "gamma": rng.standard_normal(embed).astype(F32), "beta": rng.standard_normal(embed).astype(F32),
              "starts": np.array([0], np.int64), "ends": np.array([2], np.int64), "rest": np.array([-1], np.int64),
              "target": np.array([batch, embed, tokens], np.int64)}
    conv_attrs = {"kernel_shape": [kernel, kernel], "strides": [kernel, kernel]}
    if pads:
        conv_attrs["pads"] = pads
    nodes = [helper.make_node("Conv", ["x", "w", "wb"], ["c"], **conv_attrs)]
    if flatten == "shape_nodes":
        nodes += [helper.make_node("Shape", ["c"], ["shape"]),
                  helper.make_node("Slice", ["shape", "starts", "ends"], ["head"]),
                  helper.make_node("Concat", ["head", "rest"], ["flat_shape"], axis=0),
                  helper.make_node("Reshape", ["c", "flat_shape"], ["f"])]
    else:
        nodes.append(helper.make_node("Reshape", ["c", "target"], ["f"]))
    nodes += [helper.make_node("Transpose", ["f"], ["t"], perm=[0, 2, 1]),
              helper.make_node("Add", ["t", "pos"], ["s"]),
              helper.make_node("LayerNormalization", ["s", "gamma", "beta"], ["y"], axis=-1)]
    outputs = [tensor_info("y", None)] + ([tensor_info("c", None)] if conv_out_is_output else [])
    return make_model(nodes, [tensor_info("x", list(image))], outputs, consts, opset=17)


@pytest.mark.parametrize("case", [{}, {"flatten": "constant"}, {"image": (1, 3, 16, 16), "kernel": 8}])
def test_patch_embedding_goes_into_the_layer_norm_step(case):
    model = _patch_model(**case)
    x = np.random.default_rng(10).standard_normal(case.get("image", (2, 2, 13, 12))).astype(F32)
    fast, unfused, loaded = _fast_and_unfused(model, {"x": x})
    assert loaded.plan_ops[0].startswith("Conv+") and loaded.plan_ops[0].endswith("LayerNormalization")
    assert len(loaded.plan_ops) == 1
    _close(fast, unfused)
    _close(fast, ort_run(model, {"x": x})[0])


@pytest.mark.parametrize("case", [{"pads": [1, 1, 1, 1], "image": (2, 2, 14, 14)}, {"conv_out_is_output": True}])
def test_convolutions_that_are_not_a_plain_patch_embedding_keep_their_step(case):
    model = _patch_model(**case)
    x = np.random.default_rng(11).standard_normal(case.get("image", (2, 2, 13, 12))).astype(F32)
    loaded = nn_core.load_proto(model)
    assert "Conv" in loaded.plan_ops
    fast, unfused = loaded.run({"x": x}), loaded.run_traced({"x": x})[0]
    for name, value in fast.items():
        _close(value, unfused[name])


def test_patch_embedding_falls_back_to_the_chain_on_other_images():
    loaded = nn_core.load_proto(_patch_model(flatten="constant"))
    (step,) = loaded._fast_plan().steps
    x = np.random.default_rng(12).standard_normal((2, 2, 13, 12)).astype(F32)
    np.testing.assert_array_equal(step.kernel.run(x.astype(np.float64)), step.kernel.chain(x.astype(np.float64)))
    with pytest.raises(ModelError):  # a batch the constant reshape does not fit: its kernel refuses it
        loaded.run({"x": x[:1]})


# ----------------------------------------------------------------------------------------------------------------
# flatten


def _flatten_model(end=2, opset=13):
    consts = {"starts": np.array([0], np.int64), "ends": np.array([end], np.int64),
              "rest": np.array([-1], np.int64)}
    nodes = [helper.make_node("Shape", ["x"], ["shape"]),
             helper.make_node("Slice", ["shape", "starts", "ends"], ["head"]),
             helper.make_node("Concat", ["head", "rest"], ["target"], axis=0),
             helper.make_node("Reshape", ["x", "target"], ["y"])]
    return make_model(nodes, [tensor_info("x", ["N", "C", "H", "W"])], [tensor_info("y", None)], consts,
                      opset=opset)


def test_flatten_from_shape_nodes_is_one_reshape():
    loaded = nn_core.load_proto(_flatten_model())
    assert loaded.plan_ops == ["Shape+Slice+Concat+Reshape"]
    x = np.arange(2 * 3 * 4 * 5, dtype=F32).reshape(2, 3, 4, 5)
    np.testing.assert_array_equal(loaded.run({"x": x})["y"], x.reshape(2, 3, 20))
    empty = np.zeros((0, 3, 4, 5), F32)  # -1 cannot be inferred: the chain's Reshape says so, as unfused
    for run in (loaded.run, loaded.run_traced):
        with pytest.raises(ModelError, match="cannot reshape"):
            run({"x": empty})


def test_flatten_keeps_the_shape_nodes_another_step_reads():
    model = _flatten_model(end=3)
    model.graph.output.append(tensor_info("head", None))
    loaded = nn_core.load_proto(model)
    x = np.ones((2, 3, 4, 5), F32)
    out = loaded.run({"x": x})
    np.testing.assert_array_equal(out["y"], x.reshape(2, 3, 4, 5))
    np.testing.assert_array_equal(out["head"], [2, 3, 4])


# ----------------------------------------------------------------------------------------------------------------
# the exported Vision Transformers


@pytest.mark.parametrize("name", ["vit_l17", "vit_d20"])
def test_exported_vits_fuse_and_match_onnxruntime(name):
    import onnx

    path = ROOT / "tests" / "models" / "grad" / f"{name}.onnx"
    model = onnx.load(str(path))
    x = np.random.default_rng(5).standard_normal((2, 1, 28, 28)).astype(F32)
    fast, unfused, loaded = _fast_and_unfused(model, {"input": x})
    ops = loaded.plan_ops
    assert any("Softmax" in op and "Gather" in op for op in ops)
    assert name != "vit_l17" or any("Erf" in op for op in ops)
    assert len(ops) < len(loaded._traced.steps) // 2 or name == "vit_d20"
    _close(fast, unfused)
    _close(fast, ort_run(model, {"input": x})[0])
