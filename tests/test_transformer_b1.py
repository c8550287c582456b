"""Batch-1 fast paths of the transformer steps (issue 10): attention's softmax without the shift when the sum of
the scores' squares bounds them, and a LayerNormalization whose scale and bias are folded into the dense layer
that reads it. Each against the unfused graph (the traced plan), onnxruntime and the general kernels, with the
fallbacks to the chain on inputs the fused kernels were not prepared for."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import make_model, ort_run, tensor_info
from onnx import helper

import nn_core
from nn_core.ops.activations import softmax_last_axis_
from nn_core.ops.transformer import _SQUARES_BOUND, _attention_softmax_

F32 = np.float32


def _close(got: np.ndarray, want: np.ndarray) -> None:
    scale = float(np.abs(want).max())
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=3e-7 * max(scale, 1.0))


# ----------------------------------------------------------------------------------------------------------------
# attention's softmax


@pytest.mark.parametrize("spread", [0.01, 1.0, 1.9, 2.1, 30.0])
def test_attention_softmax_equals_the_shifted_softmax_on_both_sides_of_the_bound(spread):
    """(2, 2, 16, 16) scores whose sum of squares is below, near and above the bound, and far past exp's range."""
    rng = np.random.default_rng(0)
    scores = (rng.standard_normal((2, 2, 16, 16)) * spread).astype(F32)
    want = softmax_last_axis_(scores.copy())
    wide = scores.astype(np.float64)
    exact = np.exp(wide - wide.max(-1, keepdims=True))
    exact /= exact.sum(-1, keepdims=True)
    got = _attention_softmax_(scores)
    assert got.dtype == F32 and got.shape == (2, 2, 16, 16)
    _close(got, want)
    _close(got, exact)


def test_attention_softmax_shifts_a_few_large_scores_among_small_ones():
    """One score past exp's range: the sum of squares is over the bound, so the shifted form runs."""
    scores = np.zeros((1, 1, 4, 8), F32)
    scores[0, 0, 1, 3] = 200.0
    got = _attention_softmax_(scores)
    assert np.all(np.isfinite(got))
    assert got[0, 0, 1, 3] == 1 and got[0, 0, 0, 0] == F32(1 / 8)


def test_attention_softmax_keeps_nan_and_infinities_to_the_shifted_form():
    for bad in (np.nan, np.inf, -np.inf):
        scores = np.zeros((1, 1, 2, 4), F32)
        scores[0, 0, 0, 1] = bad
        with np.errstate(invalid="ignore"):
            want = softmax_last_axis_(scores.copy())
            got = _attention_softmax_(scores)
        np.testing.assert_array_equal(got, want)
        np.testing.assert_array_equal(got[0, 0, 1], np.full(4, 0.25, F32))


def test_squares_bound_keeps_every_unshifted_exponential_and_sum_finite():
    edge = F32(np.sqrt(_SQUARES_BOUND))
    assert np.isfinite(np.exp(edge) * F32(1e9)) and np.exp(-edge) >= np.finfo(F32).tiny


# ----------------------------------------------------------------------------------------------------------------
# LayerNormalization folded into the dense layer after it


def _norm_dense_model(residual=True, bias=True, sum_read=True, width=24, out=40, x_shape=(2, 7, 24),
                      dense_read_twice=False, activation=None):
    rng = np.random.default_rng(1)
    consts = {"gamma": (rng.standard_normal(width) + 1).astype(F32), "beta": rng.standard_normal(width).astype(F32),
              "w": (rng.standard_normal((width, out)) / 5).astype(F32), "wb": rng.standard_normal(out).astype(F32)}
    inputs = [tensor_info("a", list(x_shape))]
    nodes, normalized = [], "a"
    if residual:
        inputs.append(tensor_info("b", list(x_shape)))
        nodes.append(helper.make_node("Add", ["a", "b"], ["s"]))
        normalized = "s"
    nodes += [helper.make_node("LayerNormalization", [normalized, "gamma", "beta"] if bias else [normalized, "gamma"],
                               ["n"], axis=-1, epsilon=1e-5),
              helper.make_node("MatMul", ["n", "w"], ["m"]),
              helper.make_node("Add", ["wb", "m"], ["y"])]
    last = "y"
    if activation:
        nodes.append(helper.make_node(activation, ["y"], ["act"]))
        last = "act"
    outputs = [tensor_info(last, None)]
    if residual and sum_read:
        nodes.append(helper.make_node("Add", [normalized, normalized], ["r"]))
        outputs.append(tensor_info("r", None))
    if dense_read_twice:
        outputs.append(tensor_info("n", None))
    return make_model(nodes, inputs, outputs, consts, opset=17)


def _feeds(model, seed=2, shift=1.0):
    rng = np.random.default_rng(seed)
    return {i.name: (rng.standard_normal([d.dim_value for d in i.type.tensor_type.shape.dim]) * 3 + shift).astype(F32)
            for i in model.graph.input}


@pytest.mark.parametrize("case", [{}, {"residual": False}, {"sum_read": False}, {"bias": False},
                                  {"x_shape": (5, 24)}, {"x_shape": (1, 1, 24)}, {"width": 7, "out": 3,
                                                                                  "x_shape": (3, 7)}])
def test_layer_norm_and_the_dense_layer_after_it_are_one_step(case):
    model = _norm_dense_model(**case)
    feeds = _feeds(model)
    loaded = nn_core.load_proto(model)
    fused = [op for op in loaded.plan_ops if "LayerNormalization" in op]
    assert fused and fused[0].endswith("LayerNormalization+MatMul+Add")
    fast, unfused = loaded.run(feeds), loaded.run_traced(feeds)[0]
    want = dict(zip([o.name for o in model.graph.output], ort_run(model, feeds)))
    for name, value in fast.items():
        assert value.shape == want[name].shape and value.dtype == F32
        _close(value, unfused[name])
        _close(value, want[name])


def test_layer_norm_of_rows_with_a_large_mean_is_as_accurate_after_the_fold():
    """Rows of mean 300 and spread 3: float32 centring loses digits whichever way it is done; the folded step's
    error against float64 stays that of the unfused graph's."""
    model = _norm_dense_model(residual=False)
    feeds = _feeds(model, shift=300.0)
    loaded = nn_core.load_proto(model)
    consts = {i.name: np.frombuffer(i.raw_data, F32).reshape(i.dims) for i in model.graph.initializer}
    a = feeds["a"].astype(np.float64)
    centered = a - a.mean(-1, keepdims=True)
    normalized = centered / np.sqrt(np.square(centered).mean(-1, keepdims=True) + 1e-5)
    exact = (normalized * consts["gamma"] + consts["beta"]) @ consts["w"].astype(np.float64) + consts["wb"]
    error = np.abs(loaded.run(feeds)["y"] - exact).max()
    assert error <= 1.5 * np.abs(loaded.run_traced(feeds)[0]["y"] - exact).max() + 1e-6


@pytest.mark.parametrize("change", ["normalized_is_output", "relu_after_dense"])
def test_dense_layers_it_must_not_take_keep_their_step(change):
    model = _norm_dense_model(dense_read_twice=change == "normalized_is_output",
                              activation="Relu" if change == "relu_after_dense" else None)
    feeds = _feeds(model)
    loaded = nn_core.load_proto(model)
    assert not any(op.endswith("LayerNormalization+MatMul+Add") for op in loaded.plan_ops)
    fast, unfused = loaded.run(feeds), loaded.run_traced(feeds)[0]
    for name, value in fast.items():
        _close(value, unfused[name])


def test_layer_norm_dense_step_falls_back_to_the_chain_on_other_inputs():
    model = _norm_dense_model(x_shape=("N", 7, 24))
    loaded = nn_core.load_proto(model)
    (step,) = [s for s in loaded._fast_plan().steps if "LayerNormalization" in s.label]
    rng = np.random.default_rng(3)
    a = rng.standard_normal((2, 7, 24)).astype(F32)
    for b in (rng.standard_normal((1, 7, 24)).astype(F32), a.astype(np.float64)):  # broadcast, another type
        for got, want in zip(step.kernel.run(a, b), step.kernel.chain(a, b)):
            np.testing.assert_array_equal(got, want)
    one = rng.standard_normal((1, 7, 24)).astype(F32)  # batch 1 takes the fast path
    for got, want in zip(step.kernel.run(one, one), step.kernel.chain(one, one)):
        _close(got, want)


def _mean_head_model(alpha=1.0, beta=1.0, trans_b=1, c_shape=(10,), keepdims=0, trans_a=0, tokens=16):
    rng = np.random.default_rng(4)
    consts = {"gamma": (rng.standard_normal(24) + 1).astype(F32), "beta": rng.standard_normal(24).astype(F32),
              "w": (rng.standard_normal((10, 24) if trans_b else (24, 10)) / 5).astype(F32),
              "c": rng.standard_normal(c_shape).astype(F32)}
    nodes = [helper.make_node("Add", ["a", "b"], ["s"]),
             helper.make_node("LayerNormalization", ["s", "gamma", "beta"], ["n"], axis=-1, epsilon=1e-5),
             helper.make_node("ReduceMean", ["n"], ["m"], axes=[1], keepdims=keepdims)]
    head_input = "m"
    if trans_a:
        nodes.append(helper.make_node("Transpose", ["m"], ["mt"], perm=[1, 0]))
        head_input = "mt"
    nodes.append(helper.make_node("Gemm", [head_input, "w", "c"], ["y"], alpha=alpha, beta=beta, transB=trans_b,
                                  transA=trans_a))
    inputs = [tensor_info("a", [3, tokens, 24]), tensor_info("b", [3, tokens, 24])]
    return make_model(nodes, inputs, [tensor_info("y", None)], consts, opset=17)


@pytest.mark.parametrize("case", [{}, {"alpha": 0.5, "beta": 2.0}, {"trans_b": 0}, {"c_shape": (1, 10)},
                                  {"tokens": 7}, {"tokens": 500}])
def test_layer_norm_token_mean_and_the_classifier_head_are_one_step(case):
    """(3 images of 500 tokens: the means' block matrix would pass the size kept; the batched product runs.)"""
    model = _mean_head_model(**case)
    feeds = _feeds(model)
    loaded = nn_core.load_proto(model)
    assert loaded.plan_ops == ["Add+LayerNormalization+ReduceMean+Gemm"]
    fast, unfused = loaded.run(feeds)["y"], loaded.run_traced(feeds)[0]["y"]
    assert fast.shape == (3, 10)
    _close(fast, unfused)
    _close(fast, ort_run(model, feeds)[0])


def test_heads_it_must_not_take_keep_their_step():
    """A C of one row per image is not a bias to fold."""
    model = _mean_head_model(c_shape=(3, 10))
    feeds = _feeds(model)
    loaded = nn_core.load_proto(model)
    assert loaded.plan_ops == ["Add+LayerNormalization+ReduceMean", "Gemm"]
    _close(loaded.run(feeds)["y"], loaded.run_traced(feeds)[0]["y"])


def test_a_kept_token_axis_leaves_the_head_to_the_chain():
    """keepdims=1 gives the Gemm a 3-D A: the step does not fold the normalisation into it, and its fused head
    hands such an A to the chain (Gemm's A is a matrix), whose kernels compute what the unfused graph does."""
    model = _mean_head_model(keepdims=1, c_shape=(1, 10))
    feeds = _feeds(model)
    loaded = nn_core.load_proto(model)
    (step,) = loaded._fast_plan().steps
    assert step.kernel.fast(feeds["a"], feeds["b"]) is None
    np.testing.assert_array_equal(loaded.run(feeds)["y"], loaded.run_traced(feeds)[0]["y"])


# ----------------------------------------------------------------------------------------------------------------
# a dense layer reading a fused step's only output


def _gelu_dense_model(batch=2, rows_in=48, out=24, trans=False):
    rng = np.random.default_rng(5)
    consts = {"d": np.array(np.sqrt(2), F32), "one": np.array(1.0, F32), "half": np.array(0.5, F32),
              "w": (rng.standard_normal((rows_in, out)) / 5).astype(F32), "wb": rng.standard_normal(out).astype(F32)}
    nodes = [helper.make_node("Div", ["x", "d"], ["z"]), helper.make_node("Erf", ["z"], ["e"]),
             helper.make_node("Add", ["e", "one"], ["p"]), helper.make_node("Mul", ["x", "p"], ["t"]),
             helper.make_node("Mul", ["t", "half"], ["g"]), helper.make_node("MatMul", ["g", "w"], ["m"]),
             helper.make_node("Add", ["m", "wb"], ["y"])]
    return make_model(nodes, [tensor_info("x", [batch, 16, rows_in] if batch else ["N", rows_in])],
                      [tensor_info("y", None)], consts, opset=17)


@pytest.mark.parametrize("batch", [2, 1])
def test_gelu_and_the_dense_layer_after_it_are_one_step(batch):
    model = _gelu_dense_model(batch=batch)
    feeds = _feeds(model)
    loaded = nn_core.load_proto(model)
    assert loaded.plan_ops == ["Div+Erf+Add+Mul+Mul+MatMul+Add"]
    fast, unfused = loaded.run(feeds)["y"], loaded.run_traced(feeds)[0]["y"]
    assert fast.shape == (batch, 16, 24)
    _close(fast, unfused)
    _close(fast, ort_run(model, feeds)[0])


def test_fused_step_with_a_dense_reader_falls_back_to_the_chain_on_other_inputs():
    loaded = nn_core.load_proto(_gelu_dense_model(batch=0))
    (step,) = loaded._fast_plan().steps
    x = np.random.default_rng(6).standard_normal((3, 48))
    np.testing.assert_array_equal(step.kernel.run(x), step.kernel.chain(x))  # float64: the chain
    _close(step.kernel.run(x.astype(F32)), step.kernel.chain(x.astype(F32)))
    with pytest.raises(nn_core.ModelError):  # a width the weights do not fit: the chain's MatMul says so
        loaded.run({"x": np.ones((3, 40), F32)})


@pytest.mark.parametrize("name", ["vit_l17", "vit_d20"])
def test_the_vits_encoder_is_three_steps(name):
    """The exported ViTs: the patch embedding, its LayerNormalization, the packed projection, attention and the
    projection back to the width are one step; then the MLP with its normalisation (GELU as an Erf chain in
    vit_l17, a Gelu node in vit_d20), and the head with the last normalisation and the tokens' mean."""
    import onnx
    from helpers import ROOT

    model = onnx.load(str(ROOT / "tests" / "models" / "grad" / f"{name}.onnx"))
    loaded = nn_core.load_proto(model)
    assert len(loaded.plan_ops) == 3
    assert loaded.plan_ops[1].startswith("Add+LayerNormalization+MatMul+Add+")
    assert loaded.plan_ops[1].endswith("+MatMul+Add")
    assert "LayerNormalization+MatMul+Add+Reshape" in loaded.plan_ops[0]
    assert loaded.plan_ops[0].endswith("Softmax+MatMul+Transpose+Reshape+MatMul+Add")
    x = np.random.default_rng(7).standard_normal((2, 1, 28, 28)).astype(F32)
    fast = loaded.run({"input": x})["output"]
    _close(fast, loaded.run_traced({"input": x})[0]["output"])
    _close(fast, ort_run(model, {"input": x})[0])


# ----------------------------------------------------------------------------------------------------------------
# LayerNormalization, the packed projection and attention as one step (the scores' scale in the query's weights)


def _norm_attention_model(scale="div", picks=(0, 1, 2), merge=2, tokens=5, heads=3, depth=4, width=10,
                          out_columns=None, factor=None, batch_dim=None, weight_scale=1.0):
    from test_transformer_fusion import _attention_model

    model = _attention_model(batch=2, tokens=tokens, heads=heads, depth=depth, scale=scale, picks=picks,
                             merge=merge, batch_dim=batch_dim, opset=17)
    rng = np.random.default_rng(9)
    columns = out_columns or 3 * heads * depth
    consts = {"gamma": (rng.standard_normal(width) + 1).astype(F32), "beta": rng.standard_normal(width).astype(F32),
              "wq": (rng.standard_normal((width, columns)) * weight_scale / np.sqrt(width)).astype(F32),
              "bq": rng.standard_normal(columns).astype(F32)}
    if factor is not None:
        next(i for i in model.graph.initializer if i.name == "c").CopyFrom(helper.make_tensor("c", 1, [], [factor]))
    front = [helper.make_node("Add", ["a", "b"], ["res"]),
             helper.make_node("LayerNormalization", ["res", "gamma", "beta"], ["n"], axis=-1, epsilon=1e-5),
             helper.make_node("MatMul", ["n", "wq"], ["m"]), helper.make_node("Add", ["m", "bq"], ["qkv"])]
    nodes = front + list(model.graph.node)
    shape = [batch_dim or 2, tokens, width]
    inputs = [tensor_info("a", shape), tensor_info("b", shape)]
    graph = helper.make_graph(nodes, "norm_attention", inputs, list(model.graph.output) + [tensor_info("res", None)],
                              list(model.graph.initializer) + [helper.make_tensor(k, 1, v.shape, v.reshape(-1))
                                                               for k, v in consts.items()])
    built = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    built.ir_version = 8
    return built


@pytest.mark.parametrize("case", [{}, {"scale": "mul"}, {"scale": "none"}, {"picks": (2, 0, 1)}, {"merge": 0},
                                  {"merge": 1}, {"tokens": 16, "heads": 2, "depth": 12, "width": 24}])
def test_layer_norm_projection_and_attention_are_one_step(case):
    model = _norm_attention_model(**case)
    feeds = _feeds(model)
    loaded = nn_core.load_proto(model)
    assert len(loaded.plan_ops) == 1 and "LayerNormalization+MatMul+Add+Reshape" in loaded.plan_ops[0]
    fast, unfused = loaded.run(feeds), loaded.run_traced(feeds)[0]
    want = dict(zip([o.name for o in model.graph.output], ort_run(model, feeds)))
    for name, value in fast.items():
        _close(value, unfused[name])
        _close(value, want[name])


@pytest.mark.parametrize("case", [{"out_columns": 40}, {"factor": 0.0}, {"factor": 1e-45}])
def test_projections_attention_does_not_read_as_packed_stay_apart(case):
    """A projection wider than the split's P * H * D columns (its rows are not the tokens), and scales whose
    factor on the query would be infinite or not a float32: the attention stays a step of its own."""
    model = _norm_attention_model(**case)
    if case.get("out_columns"):  # a split of 2 x 5 x 3 x 3 x 4 = 360 = 2 x 5 x 36 values from 2 x 5 x 40: refused
        loaded = nn_core.load_proto(model)
        assert not any("LayerNormalization+MatMul+Add+Reshape" in op for op in loaded.plan_ops)
        return
    feeds = _feeds(model)
    loaded = nn_core.load_proto(model)
    assert not any("LayerNormalization+MatMul+Add+Reshape" in op for op in loaded.plan_ops)
    with np.errstate(all="ignore"):
        fast, unfused = loaded.run(feeds), loaded.run_traced(feeds)[0]
    for name, value in fast.items():
        np.testing.assert_allclose(value, unfused[name], rtol=1e-5, atol=1e-6)


def test_layer_norm_attention_step_falls_back_to_the_chain_on_other_inputs():
    model = _norm_attention_model(batch_dim="N")
    loaded = nn_core.load_proto(model)
    (step,) = loaded._fast_plan().steps
    rng = np.random.default_rng(10)
    a = rng.standard_normal((2, 5, 10)).astype(F32)
    for got, want in zip(step.kernel.run(a, a.astype(np.float64)), step.kernel.chain(a, a.astype(np.float64))):
        np.testing.assert_array_equal(got, want)
    with pytest.raises(nn_core.ModelError, match="Reshape"):  # a batch the split does not fit, as unfused
        loaded.run({"a": a[:1], "b": a[:1]})


def _attention_heads(loaded):
    """The PackedQkvAttention inside the first step of a LayerNormalization + attention model."""
    def cell(function, name):
        return function.__closure__[function.__code__.co_freevars.index(name)].cell_contents

    fast = loaded._fast_plan().steps[0].kernel.fast
    while "heads" not in fast.__code__.co_freevars:
        fast = cell(fast, "inner")
    return cell(fast, "heads")


def test_scores_bounded_by_the_weights_skip_the_softmax_test_and_stay_within_the_bound():
    """Normalised rows have length at most sqrt(width): rows along the weights' leading singular vectors, of
    any scale (the normalisation undoes it), give the largest scores, which stay within the bound proven."""
    from nn_core.ops.transformer import UNSHIFTED_BOUND

    model = _norm_attention_model(tokens=16, heads=2, depth=12, width=24, weight_scale=0.2)
    loaded = nn_core.load_proto(model)
    assert _attention_heads(loaded).bounded
    from onnx import numpy_helper

    weights = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    _, _, directions = np.linalg.svd(weights["wq"][:, :24].T * weights["gamma"])
    rng = np.random.default_rng(11)
    a = np.concatenate([directions[:1] * rng.choice([-1e3, 1, 1e6], (2, 16, 1)), rng.standard_normal((2, 16, 24))],
                       axis=1)[:, :16].astype(F32)
    feeds = {"a": a, "b": np.zeros_like(a)}
    traced = loaded.run_traced(feeds)[1]
    scores = next(r for r in traced if r.op_type == "Div").outputs
    assert np.abs(next(iter(scores.values()))).max() <= UNSHIFTED_BOUND
    fast, unfused = loaded.run(feeds), loaded.run_traced(feeds)[0]
    for name, value in fast.items():
        _close(value, unfused[name])


def test_scores_the_weights_do_not_bound_keep_the_softmax_test():
    model = _norm_attention_model(tokens=16, heads=2, depth=12, width=24, weight_scale=4.0)
    loaded = nn_core.load_proto(model)
    assert not _attention_heads(loaded).bounded
    feeds = _feeds(model)
    fast, unfused = loaded.run(feeds), loaded.run_traced(feeds)[0]
    assert np.all(np.isfinite(fast["y"]))
    for name, value in fast.items():
        np.testing.assert_allclose(value, unfused[name], rtol=1e-4, atol=1e-4 * float(np.abs(unfused[name]).max()))


def test_a_nan_row_stays_in_its_own_image_with_bounded_scores():
    model = _norm_attention_model(tokens=16, heads=2, depth=12, width=24, weight_scale=0.2)
    loaded = nn_core.load_proto(model)
    feeds = _feeds(model)
    feeds["a"][1, 3, 5] = np.nan
    with np.errstate(invalid="ignore"):
        fast, unfused = loaded.run(feeds)["y"], loaded.run_traced(feeds)[0]["y"]
    np.testing.assert_array_equal(np.isnan(fast), np.isnan(unfused))
    assert np.all(np.isfinite(fast[0])) and np.all(np.isnan(fast[1]))
    _close(fast[0], unfused[0])


# ----------------------------------------------------------------------------------------------------------------
# LayerNormalization, a dense layer, GELU and a second dense layer as one step (GELU's linear part in the product)


def _mlp_model(form="chain", width=24, hidden=48, out=24, x_shape=(2, 16, 24), gelu_read_twice=False):
    rng = np.random.default_rng(12)
    consts = {"gamma": (rng.standard_normal(width) + 1).astype(F32), "beta": rng.standard_normal(width).astype(F32),
              "w1": (rng.standard_normal((width, hidden)) / np.sqrt(width)).astype(F32),
              "b1": (rng.standard_normal(hidden) * 4).astype(F32),  # (some past GELU's table: its exact tails)
              "w2": (rng.standard_normal((hidden, out)) / np.sqrt(hidden)).astype(F32),
              "b2": rng.standard_normal(out).astype(F32),
              "d": np.array(np.sqrt(2), F32), "one": np.array(1.0, F32), "half": np.array(0.5, F32)}
    nodes = [helper.make_node("Add", ["a", "b"], ["s"]),
             helper.make_node("LayerNormalization", ["s", "gamma", "beta"], ["n"], axis=-1, epsilon=1e-5),
             helper.make_node("MatMul", ["n", "w1"], ["m1"]), helper.make_node("Add", ["m1", "b1"], ["x"])]
    if form == "chain":
        nodes += [helper.make_node("Div", ["x", "d"], ["z"]), helper.make_node("Erf", ["z"], ["e"]),
                  helper.make_node("Add", ["e", "one"], ["p"]), helper.make_node("Mul", ["x", "p"], ["t"]),
                  helper.make_node("Mul", ["t", "half"], ["g"])]
    elif form == "half_first":
        nodes += [helper.make_node("Div", ["x", "d"], ["z"]), helper.make_node("Erf", ["z"], ["e"]),
                  helper.make_node("Add", ["one", "e"], ["p"]), helper.make_node("Mul", ["half", "x"], ["h"]),
                  helper.make_node("Mul", ["h", "p"], ["g"])]
    else:
        nodes.append(helper.make_node("Gelu", ["x"], ["g"], approximate=form))
    nodes += [helper.make_node("MatMul", ["g", "w2"], ["m2"]), helper.make_node("Add", ["b2", "m2"], ["y"])]
    outputs = [tensor_info("y", None), tensor_info("s", None)] + ([tensor_info("g", None)] if gelu_read_twice else [])
    inputs = [tensor_info("a", list(x_shape)), tensor_info("b", list(x_shape))]
    return make_model(nodes, inputs, outputs, consts, opset=20)


@pytest.mark.parametrize("case", [{}, {"form": "half_first"}, {"form": "none"}, {"x_shape": (1, 5, 24)},
                                  {"width": 8, "hidden": 32, "out": 8, "x_shape": (3, 8)}])
def test_layer_norm_mlp_is_one_step(case):
    model = _mlp_model(**case)
    feeds = _feeds(model)
    loaded = nn_core.load_proto(model)
    assert len(loaded.plan_ops) == 1 and loaded.plan_ops[0].endswith("MatMul+Add")
    fast, unfused = loaded.run(feeds), loaded.run_traced(feeds)[0]
    want = dict(zip([o.name for o in model.graph.output], ort_run(model, feeds)))
    for name, value in fast.items():
        assert value.shape == want[name].shape
        _close(value, unfused[name])
        _close(value, want[name])


@pytest.mark.parametrize("case", [{"form": "tanh"}, {"gelu_read_twice": True}])
def test_mlps_it_must_not_fold_keep_the_gelu_apart(case):
    """A tanh Gelu is not the erf form; a GELU whose output is also a graph output must stay visible."""
    model = _mlp_model(**case)
    feeds = _feeds(model)
    loaded = nn_core.load_proto(model)
    assert len(loaded.plan_ops) > 1
    fast, unfused = loaded.run(feeds), loaded.run_traced(feeds)[0]
    for name, value in fast.items():
        _close(value, unfused[name])


def test_layer_norm_mlp_step_falls_back_to_the_chain_on_other_inputs():
    model = _mlp_model(x_shape=("N", 16, 24))
    loaded = nn_core.load_proto(model)
    (step,) = loaded._fast_plan().steps
    rng = np.random.default_rng(13)
    a = rng.standard_normal((2, 16, 24)).astype(F32)
    for got, want in zip(step.kernel.run(a, a.astype(np.float64)), step.kernel.chain(a, a.astype(np.float64))):
        np.testing.assert_array_equal(got, want)
    for got, want in zip(step.kernel.run(a[:1], a[:1]), step.kernel.chain(a[:1], a[:1])):  # batch 1: fast
        _close(got, want)


def test_gelu_odd_part_from_table_rows_equals_the_odd_part_within_its_bound():
    """Rows x * scale (past the table too, finite, within rows_exact_to) give odd_part(x) within float32
    rounding of |x|; NaN stays NaN; the linear part and the odd part make the activation."""
    import math

    from nn_core.ops.activations import ErfGelu
    from nn_core.ops.elementwise import erf

    gelu = ErfGelu(math.sqrt(2), 1.0, 0.5)
    x = np.concatenate([np.linspace(-30, 30, 20001), [np.nan, 0.0, -0.0, 1e5, -1e5]]).astype(F32)
    assert gelu.rows_exact_to(1e5) and not gelu.rows_exact_to(1e20) and not gelu.rows_exact_to(math.inf)
    assert not ErfGelu(1e-30, 1.0, 0.5).rows_exact_to(1e5)  # (rows of 2e38: no longer exact integers)
    with np.errstate(invalid="ignore"):  # (NaN's cast to an index)
        got = gelu.row_odd_part(x * gelu.scale)
    want = gelu.odd_part(x)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    wide = x.astype(np.float64)
    exact = 0.5 * np.abs(wide) * erf(np.abs(wide) / math.sqrt(2))
    finite = np.isfinite(wide)
    assert np.all(np.abs(got[finite] - exact[finite]) <= 2e-7 * np.maximum(np.abs(wide[finite]), 1e-30))
    np.testing.assert_array_equal(want + gelu.linear * x, gelu(x))


def test_layer_norm_mlp_with_bounded_activations_keeps_a_nan_row_to_its_image():
    model = _mlp_model()
    loaded = nn_core.load_proto(model)
    fast = loaded._fast_plan().steps[0].kernel.fast
    assert fast.__closure__[fast.__code__.co_freevars.index("mlp")].cell_contents.bounded
    feeds = _feeds(model)
    feeds["a"][1, 2, 3] = np.nan
    with np.errstate(invalid="ignore"):
        got, want = loaded.run(feeds)["y"], loaded.run_traced(feeds)[0]["y"]
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    _close(got[0], want[0])


def test_patch_embedding_gathers_a_strided_image_as_a_contiguous_one():
    from test_transformer_fusion import _patch_model

    loaded = nn_core.load_proto(_patch_model(image=(2, 2, 12, 12)))
    (step,) = loaded._fast_plan().steps
    x = np.random.default_rng(14).standard_normal((2, 2, 12, 12)).astype(F32)
    strided = np.ascontiguousarray(x.transpose(0, 1, 3, 2)).transpose(0, 1, 3, 2)  # x's values, column-major
    assert not strided.flags.c_contiguous
    np.testing.assert_array_equal(step.kernel.run(strided), step.kernel.run(x))
    _close(step.kernel.run(x), step.kernel.chain(x))


def test_projection_weights_that_are_not_finite_leave_the_scores_to_the_softmax_test():
    model = _norm_attention_model(tokens=16, heads=2, depth=12, width=24, weight_scale=0.2)
    from onnx import numpy_helper

    init = next(i for i in model.graph.initializer if i.name == "wq")
    values = numpy_helper.to_array(init).copy()
    values[0, 3] = np.nan
    init.CopyFrom(numpy_helper.from_array(values, "wq"))
    loaded = nn_core.load_proto(model)
    assert not _attention_heads(loaded).bounded
    with np.errstate(invalid="ignore"):
        fast, unfused = loaded.run(_feeds(model))["y"], loaded.run_traced(_feeds(model))[0]["y"]
    np.testing.assert_array_equal(np.isnan(fast), np.isnan(unfused))
