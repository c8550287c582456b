"""Issue 10's batch-1 rewrites and lean kernel paths, each against the unfused graph or the general path it
stands in for (results equal within float rounding, and the rewrite really taken)."""

from __future__ import annotations

import numpy as np
from helpers import build_kernel, make_model, tensor_info
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


# (input shape, weight shape, attributes): full-width and exact NCHW columns, channels-last columns, groups
CONV_CASES = [((1, 1, 28, 28), (12, 1, 5, 5), {"pads": [2, 2, 2, 2]}),
              ((1, 12, 14, 14), (24, 12, 5, 5), {}),
              ((1, 3, 11, 9), (4, 3, 3, 3), {"strides": [2, 2], "pads": [1, 0, 1, 1]}),
              ((1, 4, 10, 10), (6, 2, 3, 3), {"group": 2, "pads": [1, 1, 1, 1]})]


def test_single_chunk_conv_runner_is_the_general_plan_bit_for_bit():
    from nn_core.ops.conv import _ChannelsLastPlan, _Im2colPlan

    rng = np.random.default_rng(4)
    kinds = set()
    for x_shape, w_shape, attrs in CONV_CASES:
        x = rng.standard_normal(x_shape).astype(np.float32)
        w = rng.standard_normal(w_shape).astype(np.float32)
        b = rng.standard_normal(w_shape[0]).astype(np.float32)
        for pooled in (False, True):
            for act in (None, ("relu", {}), ("clip", {"min": -0.3, "max": 0.4})):
                node = helper.make_node("Conv", ["x", "w", "b"], ["y"], **attrs)
                kernel = build_kernel(node, [x, w, b], (1, 2))
                if act:
                    kernel.fuse_activation(*act)
                if pooled:
                    pool_node = helper.make_node("MaxPool", ["c"], ["p"], kernel_shape=[2, 2], strides=[2, 2])
                    pool = build_kernel(pool_node, [x], ())
                    assert kernel.fuse_pool(pool)
                first = kernel.run(x, w, b)
                second = kernel.run(x + 1, w, b)
                assert kernel.fast, (x_shape, w_shape, attrs)  # the runner was made and kept
                plan, matrix = next(iter(kernel.plans.values()))
                kinds.add(type(plan))
                for got, image in ((first, x), (second, x + 1)):
                    want = plan.run(image, matrix, kernel.act, kernel.pool) if pooled else \
                        plan.run(image, matrix, kernel.act)
                    assert got.shape == want.shape and np.array_equal(got, want), (x_shape, attrs, pooled, act)
    assert kinds == {_Im2colPlan, _ChannelsLastPlan}


def test_a_fused_activation_after_a_run_is_applied():
    x = np.random.default_rng(5).standard_normal((1, 2, 6, 6)).astype(np.float32)
    w = np.random.default_rng(6).standard_normal((3, 2, 3, 3)).astype(np.float32)
    kernel = build_kernel(helper.make_node("Conv", ["x", "w"], ["y"]), [x, w], (1,))
    plain = kernel.run(x, w)
    kernel.fuse_activation("relu", {})
    np.testing.assert_array_equal(kernel.run(x, w), np.maximum(plain, 0))


def test_runner_dispatch_in_run_leaves_other_activations_and_half_precision_to_the_general_path():
    """Conv.run goes straight to a shape's runner; run_activated with another activation (the gradient plan's
    Conv -> Relu) and a float16 input of the same shape do not take it."""
    rng = np.random.default_rng(7)
    x = rng.standard_normal((1, 2, 7, 7)).astype(np.float32)
    w = rng.standard_normal((3, 2, 3, 3)).astype(np.float32)
    kernel = build_kernel(helper.make_node("Conv", ["x", "w"], ["y"]), [x, w], (1,))
    plain = kernel.run(x, w)
    np.testing.assert_array_equal(kernel.run(x, w), plain)
    assert kernel.fast
    from nn_core.ops.conv import make_activation

    np.testing.assert_array_equal(kernel.run_activated(make_activation("relu", {}), x, w), np.maximum(plain, 0))
    half = kernel.run(x.astype(np.float16), w)
    assert half.dtype == np.float16
    np.testing.assert_allclose(half, plain, rtol=1e-2, atol=1e-2)


def _depthwise_cases(cases, rng):
    """(x, w, bias, activation, plan arguments) for each (input shape, kernel, dilations, pads, strides), with
    and without a bias and a fused ReLU."""
    from nn_core.ops.conv import make_activation

    for shape, kernel, dilations, pads, strides in cases:
        x = rng.standard_normal(shape).astype(np.float32)
        w = rng.standard_normal((shape[1], 1, *kernel)).astype(np.float32)
        for bias in (None, rng.standard_normal(shape[1]).astype(np.float32)):
            for act in (None, make_activation("relu", {})):
                yield x, w, bias, act, (x.shape, x.dtype, list(kernel), list(strides), list(dilations),
                                        list(pads[:2]), list(pads[2:]), bias is not None)


def test_matmul_depthwise_matches_the_tap_by_tap_form():
    from nn_core.ops.batch1 import MatmulDepthwisePlan
    from nn_core.ops.conv import _FlatDepthwisePlan

    rng = np.random.default_rng(7)
    # (input shape, kernel, dilations, pads, strides)
    cases = [((1, 8, 28, 28), (3, 3), (1, 1), (1, 1, 1, 1), (1, 1)),
             ((2, 5, 9, 11), (3, 3), (2, 1), (2, 0, 1, 3), (1, 1)),
             ((1, 40, 7, 7), (5, 5), (1, 1), (2, 2, 2, 2), (1, 1)),
             ((1, 3, 6, 8), (1, 3), (1, 2), (0, 0, 0, 0), (1, 1)),
             ((1, 12, 14, 14), (3, 3), (1, 1), (1, 1, 1, 1), (2, 2)),
             ((2, 5, 9, 11), (3, 3), (2, 1), (2, 0, 1, 3), (3, 2)),
             ((1, 4, 8, 7), (2, 3), (1, 1), (0, 1, 0, 0), (1, 2))]
    for x, w, bias, act, args in _depthwise_cases(cases, rng):
        flat, mm = _FlatDepthwisePlan(*args), MatmulDepthwisePlan(*args)
        want = flat.run(x, flat.prepare(w, bias, x.shape[1], x.dtype), act)
        got = mm.run(x, mm.prepare(w, bias, x.shape[1]), act)
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_fast_plan_runs_depthwise_as_matmul_and_the_traced_plan_keeps_every_node():
    from nn_core.builder import GraphBuilder
    from nn_core.ops.batch1 import LeanConv, MatmulDepthwiseConv

    b = GraphBuilder(input=("input", [None, 6, 12, 12]), seed=0, name="dw")
    x = b.relu(b.conv(b.input, 6, 3, pads=1, groups=6))
    x = b.conv(x, 6, 3, strides=2, pads=1, groups=6)
    x = b.conv(x, 72, 1)
    x = b.conv(x, 72, 3, strides=2, pads=1, groups=72)
    model = _load(b.build([x], output_names=["y"]))
    kernels = [step.kernel for step in model._fast_plan().steps]
    assert [type(k) for k in kernels] == [MatmulDepthwiseConv, MatmulDepthwiseConv, LeanConv, MatmulDepthwiseConv]
    image = np.random.default_rng(8).standard_normal((1, 6, 12, 12)).astype(np.float32)
    fast = model.run({"input": image})["y"]
    traced, records = model.run_traced({"input": image})
    assert [r.op_type for r in records] == ["Conv", "Relu", "Conv", "Conv", "Conv"]
    np.testing.assert_allclose(fast, traced["y"], rtol=1e-5, atol=1e-5)
    plans = [type(next(iter(k.plans.values()))[0]).__name__ for k in kernels]
    # few channels: per-channel matmuls; many: channels-last einsum (strided too)
    assert plans == ["MatmulDepthwisePlan", "MatmulDepthwisePlan", "ChannelsLastPointwisePlan",
                     "ChannelsLastDepthwisePlan"]


def test_channels_last_depthwise_matches_the_tap_by_tap_form():
    from nn_core.ops.batch1 import ChannelsLastDepthwisePlan
    from nn_core.ops.conv import _FlatDepthwisePlan

    rng = np.random.default_rng(17)
    # (input shape, kernel, dilations, pads, strides): unit and strided columns, dilation, odd pads, batch 2
    cases = [((1, 24, 14, 14), (3, 3), (1, 1), (1, 1, 1, 1), (1, 1)),
             ((2, 20, 9, 11), (3, 3), (2, 1), (2, 0, 1, 3), (1, 1)),
             ((1, 40, 7, 7), (5, 5), (1, 1), (2, 2, 2, 2), (1, 1)),
             ((1, 16, 6, 8), (1, 3), (1, 2), (0, 0, 0, 0), (1, 2)),
             ((1, 72, 14, 14), (3, 3), (1, 1), (1, 1, 1, 1), (2, 2)),
             ((2, 17, 9, 11), (3, 3), (2, 2), (2, 0, 1, 3), (3, 2)),
             ((1, 32, 8, 7), (2, 3), (1, 1), (0, 1, 0, 0), (1, 3)),
             # one input column: a kernel column that reads only padding at every output column
             ((1, 16, 5, 1), (3, 3), (1, 1), (1, 2, 1, 2), (2, 2))]
    for x, w, bias, act, args in _depthwise_cases(cases, rng):
        flat, last = _FlatDepthwisePlan(*args), ChannelsLastDepthwisePlan(*args)
        kernel, strides = args[2], args[3]
        if strides[1] > 1 and x.shape[3] == 1:
            assert len(last.copies) < kernel[1]
        matrix = last.prepare(w, bias, x.shape[1])
        want = flat.run(x, flat.prepare(w, bias, x.shape[1], x.dtype), act)
        got = last.run(x, matrix, act)
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
        # an input with channels-last storage (the previous layer's output) gives the same
        again = last.run(np.ascontiguousarray(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2), matrix, act)
        np.testing.assert_array_equal(again, got)
        # the reused buffers hold nothing of the previous call
        other = rng.standard_normal(x.shape).astype(np.float32)
        np.testing.assert_allclose(last.run(other, matrix, act),
                                   flat.run(other, flat.prepare(w, bias, x.shape[1], x.dtype), act),
                                   rtol=1e-5, atol=1e-5)


def test_channels_last_depthwise_buffers_are_checked_against_the_limits_before_allocation():
    import pytest

    from nn_core.errors import ModelError

    # a tall row stride: Ho = 1 from 64 padded rows, so the kernel columns' copies (3 x 64 rows x 31 x 16 channels
    # x 4 bytes = 381 KB) are far larger than the output, the padded input (262 KB) or Conv's own column buffer
    rng = np.random.default_rng(19)
    x = rng.standard_normal((1, 16, 64, 64)).astype(np.float32)
    w = rng.standard_normal((16, 1, 1, 3)).astype(np.float32)
    model = make_model([helper.make_node("Conv", ["x", "w"], ["y"], group=16, strides=[64, 2])],
                       [tensor_info("x", [1, 16, 64, 64])], [tensor_info("y", None)], {"w": w}, opset=13)
    want = nn_core.load_proto(model).run({"x": x})["y"]
    small = nn_core.Limits(max_tensor_bytes=300_000)
    with pytest.raises(ModelError, match="channels-last column buffer"):
        nn_core.load_proto(model, limits=small).run({"x": x})
    # the same layer within the limit computes the convolution
    np.testing.assert_allclose(want[0, :, 0], np.stack([
        sum(w[c, 0, 0, j] * x[0, c, 0, 2 * o + j] for j in range(3)) for c in range(16) for o in range(31)
    ]).reshape(16, 31), rtol=1e-5, atol=1e-5)


def test_channels_last_pointwise_matches_the_nchw_matmul_for_either_storage():
    from nn_core.ops.batch1 import ChannelsLastPointwisePlan
    from nn_core.ops.conv import _PointwisePlan, make_activation

    rng = np.random.default_rng(18)
    for shape, out in (((1, 24, 7, 7), 40), ((2, 8, 5, 6), 3)):
        x = rng.standard_normal(shape).astype(np.float32)
        w = rng.standard_normal((out, shape[1], 1, 1)).astype(np.float32)
        nhwc = np.ascontiguousarray(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
        strided = np.pad(x, ((0, 0), (0, 0), (0, 0), (0, 2)))[..., :shape[3]]  # neither layout
        for bias in (None, rng.standard_normal(out).astype(np.float32)):
            for act in (None, make_activation("relu", {})):
                general, last = _PointwisePlan(shape, out, bias is not None), \
                    ChannelsLastPointwisePlan(shape, out, bias is not None)
                want = general.run(x, general.prepare(w, bias, 1), act)
                matrix = last.prepare(w, bias, 1)
                for image in (x, nhwc, strided):
                    got = last.run(image, matrix, act)
                    assert got.shape == want.shape
                    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
                # a channels-last input stays channels-last, with no copy of it
                assert last.run(nhwc, matrix, act).transpose(0, 2, 3, 1).flags.c_contiguous
    # one input channel: contiguous both ways, the output stays NCHW for the layers around it
    x = rng.standard_normal((2, 1, 6, 5)).astype(np.float32)
    w = rng.standard_normal((4, 1, 1, 1)).astype(np.float32)
    last = ChannelsLastPointwisePlan(x.shape, 4, False)
    got = last.run(x, last.prepare(w, None, 1), None)
    assert got.flags.c_contiguous
    np.testing.assert_allclose(got, w.reshape(1, 4, 1, 1) * x, rtol=1e-6)


def test_mobilenet_style_fast_plan_equals_the_traced_graph():
    from nn_core.builder import GraphBuilder

    b = GraphBuilder(input=("input", [None, 1, 28, 28]), seed=3, name="mb")
    x = b.relu(b.batch_norm(b.conv(b.input, 16, 3, pads=1, bias=False)))
    for out, stride in ((32, 2), (64, 1), (64, 2)):
        c = b.shape(x)[1]
        x = b.relu(b.batch_norm(b.conv(x, c, 3, strides=stride, pads=1, groups=c, bias=False)))
        x = b.relu(b.batch_norm(b.conv(x, out, 1, bias=False)))
    x = b.gemm(b.flatten(b.global_avg_pool(x)), 10, init="glorot")
    model = _load(b.build([x], output_names=["logits"]))
    image = np.random.default_rng(9).standard_normal((1, 1, 28, 28)).astype(np.float32)
    fast = model.run({"input": image})["logits"]
    # the depthwise-separable blocks run as one step (ops/separable.py; tests/test_separable_b1.py)
    assert [type(step.kernel).__name__ for step in model._fast_plan().steps].count("SeparableChain") == 1
    traced, _ = model.run_traced({"input": image})
    np.testing.assert_allclose(fast, traced["logits"], rtol=1e-4, atol=1e-5)


def test_gather_of_a_constant_scalar_index_is_a_view_of_the_slice():
    x = np.random.default_rng(9).standard_normal((3, 2, 4, 5)).astype(np.float32)
    for axis in (0, 2, -1):
        for index in (0, 1, -2):
            kernel = build_kernel(helper.make_node("Gather", ["x", "i"], ["y"], axis=axis),
                             [x, np.array(index, np.int64)], (1,))
            got = kernel.run(x, np.array(index, np.int64))
            np.testing.assert_array_equal(got, np.take(x, index, axis=axis))
            assert np.shares_memory(got, x)
    kernel = build_kernel(helper.make_node("Gather", ["x", "i"], ["y"]), [x, np.array(3, np.int64)], (1,))
    try:
        kernel.run(x, np.array(3, np.int64))
    except nn_core.ModelError as exc:
        assert "out of range" in str(exc)
    else:
        raise AssertionError("an index past the axis must be refused")


def test_lean_layer_normalization_matches_the_general_path():
    rng = np.random.default_rng(10)
    for shape, axis, with_bias in (((2, 16, 24), -1, True), ((3, 4, 5), 1, False), ((1, 7), 0, True),
                                   ((2, 5, 768), 2, True)):
        x = rng.standard_normal(shape).astype(np.float32) * 3 + 1
        scale = rng.standard_normal(shape[axis:]).astype(np.float32)
        bias = rng.standard_normal(shape[axis:]).astype(np.float32) if with_bias else None
        node = helper.make_node("LayerNormalization", ["x", "s"] + (["b"] if with_bias else []), ["y"], axis=axis)
        kernel = build_kernel(node, [x, scale] + ([bias] if with_bias else []), (1, 2), opset=17)
        lean = kernel.run(x, scale, bias)
        assert any(v is not None for v in kernel.lean.values())
        kernel.lean = {key: None for key in kernel.lean}  # force the general path
        general = kernel.run(x, scale, bias)
        assert lean.shape == general.shape and lean.dtype == general.dtype
        np.testing.assert_allclose(lean, general, rtol=1e-5, atol=1e-5, err_msg=str((shape, axis)))
        # a non-contiguous input (a transposed view) normalises the same
        kernel.lean = {}
        view = np.ascontiguousarray(np.swapaxes(x, 0, -1)).swapaxes(0, -1)
        np.testing.assert_allclose(kernel.run(view, scale, bias), general, rtol=1e-5, atol=1e-5)
    # a scale that would broadcast the output beyond the input's shape is left to the general path
    x = rng.standard_normal((2, 1)).astype(np.float32)
    scale = rng.standard_normal(4).astype(np.float32)
    kernel = build_kernel(helper.make_node("LayerNormalization", ["x", "s"], ["y"]), [x, scale], (1,), opset=17)
    assert kernel.run(x, scale).shape == (2, 4) and list(kernel.lean.values()) == [None]


def test_global_average_pool_is_np_mean_bit_for_bit():
    rng = np.random.default_rng(11)
    kernel = build_kernel(helper.make_node("GlobalAveragePool", ["x"], ["y"]), [None], ())
    wide = rng.standard_normal((1, 8, 14, 16)).astype(np.float32)
    for x in (rng.standard_normal((1, 256, 7, 7)).astype(np.float32), wide[..., :14],
              rng.standard_normal((2, 3, 5)).astype(np.float64),
              rng.standard_normal((1, 2, 3, 3)).astype(np.float16)):
        want = x.mean(axis=tuple(range(2, x.ndim)), keepdims=True, dtype=x.dtype)
        got = kernel.run(x)
        assert got.dtype == want.dtype and np.array_equal(got, want)


def test_single_precision_erf_rounds_like_the_double_precision_series():
    from nn_core.ops.elementwise import erf

    rng = np.random.default_rng(12)
    x = np.concatenate([rng.uniform(-6.5, 6.5, 200_000), rng.standard_normal(100_000) * 1e-3,
                        np.exp(rng.uniform(-80, 2, 100_000)), [0.0, -0.0, 6.0, -6.0, 5.999, np.inf, -np.inf]])
    x32 = x.astype(np.float32)
    got = erf(x32)
    want = erf(x32.astype(np.float64))  # the degree-15 series, accurate to ~1e-15
    assert got.dtype == np.float32
    # rounded to the nearest float32 of the double-precision value but at the rare rounding boundary
    assert np.count_nonzero(got != want.astype(np.float32)) <= 5
    assert np.max(np.abs(got - want)) <= np.spacing(np.float32(1.0))
    assert np.isnan(erf(np.array([np.nan, -np.nan], np.float32))).all()
    assert erf(np.float32(0.5)).shape == () and np.isclose(erf(np.float32(0.5)), 0.5204998778)


def _conv_affine_model(mul_const, add_const, extra_reader=False):
    rng = np.random.default_rng(13)
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Mul", ["m", "c"], ["d"]),  # the constant first: the product commutes
             helper.make_node("Add", ["d", "a"], ["e"]),
             helper.make_node("Relu", ["e"], ["y"])]
    outputs = [tensor_info("y", None)]
    if extra_reader:
        nodes.append(helper.make_node("Neg", ["c"], ["z"]))
        outputs.append(tensor_info("z", None))
    weights = {"w": rng.standard_normal((4, 3, 3, 3)).astype(np.float32),
               "b": rng.standard_normal(4).astype(np.float32), "m": mul_const, "a": add_const}
    return _load(make_model(nodes, [tensor_info("x", [1, 3, 6, 6])], outputs, weights))


def test_conv_then_per_channel_mul_and_add_fold_into_the_conv():
    rng = np.random.default_rng(14)
    image = rng.standard_normal((1, 3, 6, 6)).astype(np.float32)
    per_channel = rng.standard_normal((4, 1, 1)).astype(np.float32)
    for mul, add in ((per_channel, rng.standard_normal((1, 4, 1, 1)).astype(np.float32)),
                     (np.array(0.5, np.float32), rng.standard_normal(1).astype(np.float32))):
        model = _conv_affine_model(mul, add)
        (step,) = model._fast_plan().steps
        assert step.label == "Conv+Mul+Add+Relu"
        traced, records = model.run_traced({"x": image})
        assert [r.op_type for r in records] == ["Conv", "Mul", "Add", "Relu"]
        np.testing.assert_allclose(model.run({"x": image})["y"], traced["y"], rtol=1e-5, atol=1e-5)


def test_affine_after_conv_is_left_alone_when_it_is_not_per_channel_or_not_the_only_reader():
    rng = np.random.default_rng(15)
    image = rng.standard_normal((1, 3, 6, 6)).astype(np.float32)
    per_channel = rng.standard_normal((4, 1, 1)).astype(np.float32)
    for model in (_conv_affine_model(rng.standard_normal((1, 1, 6)).astype(np.float32), per_channel),  # per column
                  _conv_affine_model(rng.standard_normal((2, 4, 1, 1)).astype(np.float32), per_channel),  # grows
                  _conv_affine_model(per_channel.astype(np.float64), per_channel),  # another dtype
                  _conv_affine_model(per_channel, per_channel, extra_reader=True)):
        steps = model._fast_plan().steps
        assert not any("::affine_folded" in name for step in steps for name in step.inputs)  # weights untouched
        traced, _ = model.run_traced({"x": image})
        for name, value in model.run({"x": image}).items():
            np.testing.assert_allclose(value, traced[name], rtol=1e-5, atol=1e-5)


def test_lean_conv_transpose_matches_the_general_kernel():
    from nn_core.ops.batch1 import LeanConvTranspose, batch1_kernel

    rng = np.random.default_rng(20)
    cases = [((1, 8, 7, 7), (8, 8, 2, 2), {"strides": [2, 2]}),
             ((2, 8, 14, 14), (8, 4, 3, 3), {"strides": [2, 2], "pads": [1, 1, 1, 1], "output_padding": [1, 1]}),
             ((1, 4, 5, 6), (4, 3, 2, 3), {"strides": [2, 3], "pads": [1, 0, 0, 2]}),
             ((1, 4, 5), (4, 2, 3), {"strides": [1], "dilations": [2]}),
             ((1, 6, 4, 4), (6, 2, 2, 2), {"strides": [2, 2], "group": 3}),
             ((1, 2, 3, 3), (2, 2, 3, 3), {"strides": [2, 2], "output_shape": [6, 6]}),
             ((1, 2, 3, 3), (2, 2, 2, 2), {"strides": [2, 2], "pads": [1, 0, 0, 1]})]
    for x_shape, w_shape, attrs in cases:
        x = rng.standard_normal(x_shape).astype(np.float32)
        w = rng.standard_normal(w_shape).astype(np.float32)
        out_channels = w_shape[1] * attrs.get("group", 1)
        for bias in (None, rng.standard_normal(out_channels).astype(np.float32)):
            names = ["x", "w"] + (["b"] if bias is not None else [])
            inputs = [x, w] + ([bias] if bias is not None else [])
            node = helper.make_node("ConvTranspose", names, ["y"], **attrs)
            general = build_kernel(node, inputs, (1, 2))
            lean = batch1_kernel(general)
            assert type(lean) is LeanConvTranspose
            for kernel in (general, lean):
                kernel.fuse_activation("relu", {})
            for _ in range(2):
                want, got = general.run(*inputs), lean.run(*inputs)
                assert got.shape == want.shape, (x_shape, attrs, bias is None)
                np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5, err_msg=str((x_shape, attrs)))


def test_lean_conv_transpose_of_an_infinite_input_gives_the_general_kernels_values():
    # the phase weights hold zeros where a tap does not reach a phase: 0 * inf would be NaN at outputs the
    # scatter-add never adds the infinity to
    from nn_core.ops.batch1 import LeanConvTranspose, batch1_kernel

    rng = np.random.default_rng(25)
    x = rng.standard_normal((1, 4, 5, 5)).astype(np.float32)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    node = helper.make_node("ConvTranspose", ["x", "w"], ["y"], strides=[2, 2], pads=[1, 1, 1, 1])
    general = build_kernel(node, [x, w], (1,))
    lean = batch1_kernel(general)
    assert type(lean) is LeanConvTranspose
    x[0, 1, 2, 3] = np.inf
    with np.errstate(invalid="ignore"):
        want, got = general.run(x, w), lean.run(x, w)
    assert np.isfinite(want).sum() > np.isfinite(want).size // 2
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    finite = rng.standard_normal(x.shape).astype(np.float32)  # and the phase plan still serves finite inputs
    np.testing.assert_allclose(lean.run(finite, w), general.run(finite, w), rtol=1e-5, atol=1e-5)


def test_resize_by_interpolation_matrices_matches_the_tap_by_tap_form():
    rng = np.random.default_rng(21)
    x = rng.standard_normal((1, 3, 9, 12)).astype(np.float32)
    cases = [({"mode": "linear"}, [1, 1, 2, 2]), ({"mode": "cubic"}, [1, 1, 1.5, 0.75]),
             ({"mode": "linear", "coordinate_transformation_mode": "align_corners"}, [1, 1, 2.5, 1]),
             ({"mode": "cubic", "antialias": 1}, [1, 1, 0.5, 0.4]), ({"mode": "linear"}, [1, 2, 2, 1])]
    for attrs, scales in cases:
        scales = np.array(scales, np.float32)
        kernel = build_kernel(helper.make_node("Resize", ["x", "", "s"], ["y"], **attrs), [x, None, scales], (1, 2),
                         opset=18)
        got = kernel.run(x, None, scales)
        plans = kernel.plans_for(x, (None, scales))
        assert all(plan.dense() for plan in plans)
        want = x
        for plan in plans:
            want = plan.apply(want, 0.0)
        assert got.dtype == np.float32
        np.testing.assert_allclose(got, want.astype(np.float32), rtol=1e-6, atol=1e-6)
    # positions outside a crop take the extrapolation value: the tap-by-tap form
    roi = np.array([0, 0, -0.2, 0.1, 1, 1, 1.1, 0.9], np.float32)
    node = helper.make_node("Resize", ["x", "r", "s"], ["y"], mode="linear",
                            coordinate_transformation_mode="tf_crop_and_resize", extrapolation_value=7.0)
    scales = np.array([1, 1, 2, 2], np.float32)
    kernel = build_kernel(node, [x, roi, scales], (1, 2), opset=18)
    got = kernel.run(x, roi, scales)
    assert not all(plan.dense() for plan in kernel.plans_for(x, (roi, scales))) and (got == 7.0).any()


def test_softmax_maximum_over_a_transposed_copy_is_the_same():
    from nn_core.ops.activations import _trailing_max

    rng = np.random.default_rng(22)
    for shape, axes in [((2, 2, 16, 16), 3), ((64, 10), 1), ((1, 10), 1), ((40, 5, 6), (1, 2)), ((40, 5, 6), 1),
                        ((40, 5, 6), 0), ((3, 40), (1,)), ((40,), 0)]:
        x = rng.standard_normal(shape).astype(np.float32)
        x.flat[3] = np.nan
        x.flat[-1] = np.inf
        want = np.maximum.reduce(x, axis=axes, keepdims=True)
        got = _trailing_max(x, axes)
        assert got.shape == want.shape and np.array_equal(got, want, equal_nan=True), (shape, axes)
    x = rng.standard_normal((2, 2, 16, 16)).astype(np.float32)
    for opset in (11, 13):
        for op_type in ("Softmax", "LogSoftmax"):
            kernel = build_kernel(helper.make_node(op_type, ["x"], ["y"], axis=-1), [x], (), opset=opset)
            shifted = x - x.max(axis=-1, keepdims=True)
            want = np.exp(shifted) / np.exp(shifted).sum(axis=-1, keepdims=True) if op_type == "Softmax" else \
                shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
            np.testing.assert_allclose(kernel.run(x), want, rtol=1e-6, atol=1e-7)


def test_softmax_without_the_shift_in_the_safe_range_matches_the_shifted_form():
    from nn_core.ops.activations import _exp_is_safe

    rng = np.random.default_rng(24)
    kernel = build_kernel(helper.make_node("Softmax", ["x"], ["y"], axis=-1), [None], (), opset=13)

    def reference(x):
        wide = x.astype(np.float64)
        exps = np.exp(wide - wide.max(axis=-1, keepdims=True))
        return exps / exps.sum(axis=-1, keepdims=True)

    for dtype in (np.float32, np.float64):
        for x in (rng.standard_normal((2, 2, 16, 16)), rng.uniform(-79, 79, (2, 2, 16, 16))):
            x = x.astype(dtype)
            assert _exp_is_safe(x, x.shape[-1])
            np.testing.assert_allclose(kernel.run(x), reference(x), rtol=2e-6, atol=1e-30)
        edge = np.array([[80.0, -80.0, 79.5], [-80.0, -79.0, -80.0]], dtype)
        assert _exp_is_safe(edge, edge.shape[-1])
        np.testing.assert_allclose(kernel.run(edge), reference(edge), rtol=2e-6, atol=1e-30)
    # the bound falls with the number of values summed: 10,000 exponentials of 80 would overflow the sum
    assert not _exp_is_safe(np.full((1, 10_000), 80.0, np.float32), 10_000)
    assert _exp_is_safe(np.full((1, 10_000), 78.0, np.float32), 10_000)
    # past the bound (a row that would overflow, a row that would underflow), NaN and infinities: the shifted form
    for x in (np.array([[81.0, 0.0], [1.0, 2.0]], np.float32), np.array([[-100.0, -101.0], [0.0, 1.0]], np.float32)):
        assert not _exp_is_safe(x, x.shape[-1])
        got = kernel.run(x)
        assert np.isfinite(got).all()
        np.testing.assert_allclose(got, reference(x), rtol=2e-6)
    for bad in (np.nan, np.inf, -np.inf):
        x = np.array([[bad, 0.0], [1.0, 2.0]], np.float32)
        assert not _exp_is_safe(x, x.shape[-1])
        with np.errstate(invalid="ignore"):  # inf - inf in the row with an infinity, on both sides
            np.testing.assert_allclose(kernel.run(x)[1], reference(x)[1], rtol=2e-6)


def test_reshape_to_a_run_time_shape_is_validated_once_per_shape_and_still_refuses():
    x = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    kernel = build_kernel(helper.make_node("Reshape", ["x", "s"], ["y"]), [x, None], ())
    for target, want in (([2, 12], (2, 12)), ([0, -1], (2, 12)), ([4, 0, 2], (4, 3, 2)), ([2, 12], (2, 12))):
        shape = np.array(target, np.int64)
        for _ in range(2):
            got = kernel.run(x, shape)
            assert got.shape == want and np.array_equal(got.reshape(-1), x.reshape(-1))
    assert len(kernel.targets) == 3
    for bad in ([-1, -1], [5, 5], [1.5, 16]):
        for _ in range(2):
            try:
                kernel.run(x, np.array(bad))
            except nn_core.ModelError:
                pass
            else:
                raise AssertionError(f"{bad} must be refused")


def test_pooling_phase_channels_last_conv_matches_conv_then_pool():
    from nn_core.ops.batch1 import LeanConv, PooledChannelsLastPlan, batch1_kernel
    from nn_core.ops.conv import _ChannelsLastPlan

    rng = np.random.default_rng(23)
    # (input, weight, conv attributes, pool attributes, the phase plan expected)
    cases = [((1, 12, 14, 14), (24, 12, 5, 5), {}, {"kernel_shape": [2, 2], "strides": [2, 2]}, True),
             ((1, 16, 11, 13), (8, 16, 3, 3), {"pads": [1, 0, 1, 2]}, {"kernel_shape": [2, 2], "strides": [2, 2]},
              True),
             ((2, 12, 15, 15), (6, 12, 3, 3), {"strides": [2, 2], "pads": [1, 1, 1, 1]},
              {"kernel_shape": [3, 3], "strides": [3, 3]}, True),
             ((1, 16, 9, 9), (4, 16, 3, 3), {"dilations": [2, 1]}, {"kernel_shape": [2, 2], "strides": [2, 2]}, True),
             ((1, 12, 10, 10), (4, 12, 3, 3), {}, {"kernel_shape": [2, 2], "strides": [1, 1]}, False),
             ((1, 12, 10, 10), (4, 12, 3, 3), {}, {"kernel_shape": [2, 2], "strides": [2, 2], "ceil_mode": 1}, False),
             ((1, 12, 10, 10), (4, 12, 3, 3), {}, {"kernel_shape": [2, 2], "strides": [2, 2], "pads": [1, 1, 0, 0]},
              False)]
    for x_shape, w_shape, conv_attrs, pool_attrs, phased in cases:
        x = rng.standard_normal(x_shape).astype(np.float32)
        w = rng.standard_normal(w_shape).astype(np.float32)
        b = rng.standard_normal(w_shape[0]).astype(np.float32)
        for act in (("relu", {}), ("clip", {"min": -0.5, "max": 0.5})):
            general = build_kernel(helper.make_node("Conv", ["x", "w", "b"], ["c"], **conv_attrs), [x, w, b], (1, 2))
            lean = batch1_kernel(general)
            assert type(lean) is LeanConv
            outs = []
            for kernel in (general, lean):
                kernel.fuse_activation(*act)
                pool = build_kernel(helper.make_node("MaxPool", ["c"], ["p"], **pool_attrs), [x], ())
                assert kernel.fuse_pool(pool)
                outs.append([kernel.run(x, w, b), kernel.run(x + 0.5, w, b)])
            plan = next(iter(lean.plans.values()))[0]
            assert (type(plan) is PooledChannelsLastPlan) == phased, (x_shape, pool_attrs)
            assert phased or type(plan) is _ChannelsLastPlan
            for want, got in zip(*outs):
                assert got.shape == want.shape
                np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_bench_reads_onnxruntime_per_node_times_for_the_profile():
    import pytest

    ort = pytest.importorskip("onnxruntime")
    from helpers import BUNDLED

    from nn_core.bench import reference_node_times

    x = np.random.default_rng(24).random((1, 1, 28, 28)).astype(np.float32)
    times = reference_node_times(ort, str(BUNDLED), 1, {"input": x}, 0.05)
    ops = {op for _, op in times}
    assert "Conv" in ops and any(op.endswith("Gemm") for op in ops), ops
    assert all(t >= 0 for t in times.values())


def test_matmul_takes_in_a_following_bias_add_and_relu_bit_for_bit():
    rng = np.random.default_rng(25)
    w = rng.standard_normal((6, 5)).astype(np.float32)
    for x_shape in ((3, 6), (2, 3, 6), (6,)):
        for bias, fused in ((rng.standard_normal(5).astype(np.float32), True),
                            (rng.standard_normal((1, 5)).astype(np.float32), False),  # could grow a 1-D product
                            (rng.standard_normal(5).astype(np.float64), False)):  # another dtype
            nodes = [helper.make_node("MatMul", ["x", "w"], ["m"]), helper.make_node("Add", ["c", "m"], ["a"]),
                     helper.make_node("Relu", ["a"], ["y"])]
            model = _load(make_model(nodes, [tensor_info("x", list(x_shape))], [tensor_info("y", None)],
                                     {"w": w, "c": bias}))
            labels = [step.label for step in model._fast_plan().steps]
            assert (labels == ["MatMul+Add+Relu"]) == fused, (x_shape, bias.shape, labels)
            x = rng.standard_normal(x_shape).astype(np.float32)
            traced, _ = model.run_traced({"x": x})
            got = model.run({"x": x})["y"]
            assert got.dtype == traced["y"].dtype and np.array_equal(got, traced["y"])


def test_dense_layers_apply_other_and_chained_activations_through_the_activation():
    rng = np.random.default_rng(26)
    w, b = rng.standard_normal((4, 6)).astype(np.float32), rng.standard_normal(4).astype(np.float32)
    nodes = [helper.make_node("Gemm", ["x", "w", "b"], ["g"], transB=1),
             helper.make_node("Clip", ["g"], ["y"], min=-0.2, max=0.5)]
    model = _load(make_model(nodes, [tensor_info("x", [2, 6])], [tensor_info("y", None)], {"w": w, "b": b},
                             opset=6))
    assert [step.label for step in model._fast_plan().steps] == ["Gemm+Clip"]
    x = rng.standard_normal((2, 6)).astype(np.float32)
    np.testing.assert_array_equal(model.run({"x": x})["y"], model.run_traced({"x": x})[0]["y"])
    kernel = build_kernel(helper.make_node("Gemm", ["x", "w", "b"], ["g"], transB=1), [x, w, b], (1, 2))
    plain = kernel.run(x, w, b)
    assert kernel.fuse_activation("relu", {}) and kernel.relu_zero is not None
    np.testing.assert_array_equal(kernel.run(x, w, b), np.maximum(plain, 0))
    assert kernel.fuse_activation("clip", {"min": -0.2, "max": 0.5}) and kernel.relu_zero is None
    np.testing.assert_array_equal(kernel.run(x, w, b), np.clip(np.maximum(plain, 0), -0.2, 0.5))


def test_fused_clip_and_relu_passes_equal_numpy_clip_and_maximum():
    """The fused Clip is two passes (maximum, minimum) with bounds kept per dtype, the fused ReLU a maximum
    against a kept 0-d zero: the values of np.clip / np.maximum, NaN and reversed bounds included."""
    from nn_core.ops.conv import _Clip, _Relu

    rng = np.random.default_rng(8)
    for low, high, dtype in ((-0.3, 0.4, np.float32), (None, 6.0, np.float32), (0.5, -0.5, np.float64),
                             (None, 3, np.int32), (-2, None, np.int8), (0, 6, np.float16), (0.25, 0.75, np.float32)):
        x = (rng.standard_normal(300) * 5).astype(dtype)
        if np.dtype(dtype).kind == "f":
            x[:3] = [np.nan, np.inf, -np.inf]
        lo = -np.inf if low is None else low
        hi = np.inf if high is None else high
        if np.dtype(dtype).kind != "f":
            lo, hi = max(lo, np.iinfo(dtype).min), min(hi, np.iinfo(dtype).max)
        want = np.clip(x, np.dtype(dtype).type(lo), np.dtype(dtype).type(hi))
        clip, out = _Clip(low, high), np.empty_like(x)
        for _ in range(2):  # the bounds made on the first call, kept for the second
            clip.into(x, out)
            np.testing.assert_array_equal(out, want)
        y = x.copy()
        clip.into(y, y)
        np.testing.assert_array_equal(y, want)
    relu = _Relu()
    for dtype in (np.float32, np.float64, np.float32, np.int16):
        x = (rng.standard_normal(50) * 4).astype(dtype)
        y = x.copy()
        relu.into(y, y)
        assert y.dtype == dtype
        np.testing.assert_array_equal(y, np.maximum(x, dtype(0)))
