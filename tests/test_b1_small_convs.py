"""Batch-1 kernels of small models (issue 10): the transposed convolution by output phase (batch1.py's
PhaseTransposePlan, run by LeanConvTranspose) against the general scatter-add kernel and onnxruntime."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from helpers import build_kernel, make_model, ort_run, tensor_info
from onnx import helper

import nn_core

# (input shape, weight shape, attributes): a U-Net's up-convolutions, odd sizes and strides, negative pads,
# groups, output_shape beyond the full size, dilations, 1-D and 3-D, batches of 2 and 3
CASES = [((1, 8, 14, 14), (8, 4, 3, 3), {"strides": [2, 2], "pads": [1, 1, 1, 1], "output_padding": [1, 1]}),
         ((1, 8, 7, 7), (8, 8, 2, 2), {"strides": [2, 2]}),
         ((2, 8, 13, 9), (8, 4, 3, 3), {"strides": [2, 2], "pads": [1, 1, 1, 1], "output_padding": [1, 0]}),
         ((3, 5, 5, 6), (5, 3, 2, 3), {"strides": [2, 3], "pads": [1, 0, 0, 2]}),
         ((1, 3, 6, 5), (3, 2, 4, 4), {"strides": [3, 2], "pads": [2, 1, 0, 3]}),
         ((2, 6, 4, 4), (6, 2, 3, 3), {"strides": [2, 2], "group": 3, "pads": [1, 1, 1, 1]}),
         ((1, 2, 3, 3), (2, 2, 3, 3), {"strides": [2, 2], "output_shape": [8, 9]}),
         ((1, 2, 3, 3), (2, 2, 2, 2), {"strides": [2, 2], "pads": [1, 0, 0, 1]}),
         ((1, 3, 5, 5), (3, 4, 3, 3), {"pads": [1, 1, 1, 1]}),
         ((1, 3, 5, 5), (3, 2, 3, 3), {"strides": [2, 2], "dilations": [2, 2]}),
         ((1, 2, 4, 4), (2, 2, 1, 1), {"strides": [3, 3]}),
         ((2, 4, 5), (4, 3, 3), {"strides": [2], "pads": [1, 0]}),
         ((1, 2, 3, 4, 3), (2, 2, 2, 3, 2), {"strides": [2, 1, 2], "pads": [0, 1, 0, 0, 1, 1]})]


def _kernel(node, inputs):
    return build_kernel(node, inputs, (1, 2))


def _case(index: int, with_bias: bool, dtype=np.float32):
    x_shape, w_shape, attrs = CASES[index]
    rng = np.random.default_rng(100 + index)
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal(w_shape).astype(dtype)
    inputs = [x, w]
    if with_bias:
        inputs.append(rng.standard_normal(w_shape[1] * attrs.get("group", 1)).astype(dtype))
    node = helper.make_node("ConvTranspose", ["x", "w", "b"][:len(inputs)], ["y"], **attrs)
    return node, inputs


@pytest.mark.parametrize("with_bias", [False, True])
@pytest.mark.parametrize("index", range(len(CASES)))
def test_phase_transpose_matches_the_general_kernel(index: int, with_bias: bool):
    from nn_core.ops.batch1 import LeanConvTranspose, batch1_kernel

    node, inputs = _case(index, with_bias)
    general = _kernel(node, inputs)
    lean = batch1_kernel(general)
    assert type(lean) is LeanConvTranspose
    want = general.run(*inputs)
    for _ in range(2):  # the second call reuses the plan's buffers
        got = lean.run(*inputs)
        assert got.shape == want.shape and got.dtype == want.dtype
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    # the output is the caller's: a next call (its product and full-width columns in the plan's buffers) leaves
    # it as it was
    kept = got.copy()
    other = lean.run(-inputs[0], *inputs[1:])
    np.testing.assert_array_equal(got, kept)
    np.testing.assert_allclose(other, general.run(-inputs[0], *inputs[1:]), rtol=1e-5, atol=1e-5)
    # a fused ReLU is applied after the bias, as in the general kernel
    for kernel in (general, lean):
        kernel.fuse_activation("relu", {})
    np.testing.assert_allclose(lean.run(*inputs), general.run(*inputs), rtol=1e-5, atol=1e-5)


def test_phase_transpose_takes_the_phase_plan_where_it_fits():
    from nn_core.ops.batch1 import LeanConvTranspose, batch1_kernel

    node, inputs = _case(0, True)
    lean = batch1_kernel(_kernel(node, inputs))
    lean.run(*inputs)
    assert isinstance(lean, LeanConvTranspose) and all(r is not None for r in lean.runners.values())
    # dilations far beyond the strides would lay out mostly zeros: the scatter-add, same results
    node = helper.make_node("ConvTranspose", ["x", "w"], ["y"], dilations=[4, 4])
    rng = np.random.default_rng(1)
    inputs = [rng.standard_normal((1, 2, 5, 5)).astype(np.float32),
              rng.standard_normal((2, 3, 3, 3)).astype(np.float32)]
    general = _kernel(node, inputs)
    lean = batch1_kernel(general)
    got = lean.run(*inputs)
    assert list(lean.runners.values()) == [None]
    assert np.array_equal(got, general.run(*inputs))


def test_phase_transpose_other_dtypes_and_batches():
    from nn_core.ops.batch1 import batch1_kernel

    node, inputs = _case(2, True, np.float64)
    general = _kernel(node, inputs)
    lean = batch1_kernel(general)
    got = lean.run(*inputs)
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, general.run(*inputs), rtol=1e-12, atol=1e-12)
    # float32 input against float64 weights: the general kernel
    x32 = inputs[0].astype(np.float32)
    assert np.array_equal(lean.run(x32, *inputs[1:]), general.run(x32, *inputs[1:]))
    # one kernel, batches of 1, 2 and 5 of the same image size
    node, inputs = _case(0, True)
    general, x = _kernel(node, inputs), inputs[0]
    lean = batch1_kernel(general)
    for batch in (1, 2, 5):
        xb = np.repeat(x, batch, axis=0) * np.arange(1, batch + 1, dtype=np.float32).reshape(-1, 1, 1, 1)
        np.testing.assert_allclose(lean.run(xb, *inputs[1:]), general.run(xb, *inputs[1:]), rtol=1e-5,
                                   atol=1e-4)


@pytest.mark.parametrize("index", [0, 2, 3, 5, 7, 9])
def test_phase_transpose_in_a_model_matches_onnxruntime(index: int):
    node, inputs = _case(index, True)
    x, w, b = inputs
    model = make_model([node], [tensor_info("x", list(x.shape))], [tensor_info("y", None)],
                       {"w": w, "b": b})
    ours = nn_core.load_proto(model).run({"x": x})["y"]
    (theirs,) = ort_run(model, {"x": x})
    assert ours.shape == theirs.shape
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-4)


def test_phase_transpose_buffers_are_held_to_the_limits():
    from nn_core.ops.batch1 import batch1_kernel

    # many input channels into one output channel: the padded input and phase columns are larger than the
    # general kernel's float64 patches and canvas (4 x 64 and 16 x 16), which the budget still allows
    rng = np.random.default_rng(3)
    x = rng.standard_normal((1, 64, 8, 8)).astype(np.float32)
    w = rng.standard_normal((64, 1, 2, 2)).astype(np.float32)
    b = np.ones(1, np.float32)
    node = helper.make_node("ConvTranspose", ["x", "w", "b"], ["y"], strides=[2, 2])
    general = _kernel(node, [x, w, b])
    limits = dataclasses.replace(nn_core.DEFAULT_LIMITS, max_tensor_bytes=4096)
    spec = dataclasses.replace(general.node, name="up", limits=limits)
    assert type(general)(spec).run(x, w, b).shape == (1, 1, 16, 16)
    with pytest.raises(nn_core.ModelError, match="node 'up'.*(zero-padded input|phase column buffer)"):
        batch1_kernel(type(general)(spec)).run(x, w, b)


# (input shape, weight shape, attributes) whose columns Conv takes channels-last: few outputs, images >= 14
NCHW_CASES = [((1, 16, 14, 14), (8, 16, 3, 3), {"pads": [1, 1, 1, 1]}),
              ((2, 12, 15, 17), (5, 12, 3, 3), {"pads": [1, 0, 2, 1]}),
              ((3, 16, 16, 14), (4, 16, 3, 3), {"strides": [2, 1]}),
              ((1, 32, 14, 14), (8, 32, 3, 3), {"dilations": [2, 1], "pads": [2, 1, 2, 1]})]


@pytest.mark.parametrize("case", NCHW_CASES)
def test_few_output_channels_take_nchw_columns_at_small_batches(case):
    from nn_core.ops.batch1 import SMALL_BATCH, LeanConv, batch1_kernel
    from nn_core.ops.conv import _ChannelsLastPlan, _Im2colPlan

    x_shape, w_shape, attrs = case
    rng = np.random.default_rng(7)
    x = rng.standard_normal(x_shape).astype(np.float32)
    w = rng.standard_normal(w_shape).astype(np.float32)
    b = rng.standard_normal(w_shape[0]).astype(np.float32)
    node = helper.make_node("Conv", ["x", "w", "b"], ["y"], **attrs)
    general = build_kernel(node, [x, w, b], (1, 2))
    lean = batch1_kernel(build_kernel(node, [x, w, b], (1, 2)))
    assert type(lean) is LeanConv
    for kernel in (general, lean):
        kernel.fuse_activation("relu", {})
    want = general.run(x, w, b)
    assert type(general.plans[(x.shape, x.dtype)][0]) is _ChannelsLastPlan
    for _ in range(2):
        got = lean.run(x, w, b)
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    assert type(lean.plans[(x.shape, x.dtype)][0]) is _Im2colPlan
    # a larger batch keeps Conv's channels-last columns
    xb = np.repeat(x, SMALL_BATCH // x.shape[0] + 1, axis=0)
    np.testing.assert_allclose(lean.run(xb, w, b), general.run(xb, w, b), rtol=1e-5, atol=1e-5)
    assert type(lean.plans[(xb.shape, xb.dtype)][0]) is _ChannelsLastPlan


@pytest.mark.parametrize("channels, out_channels", [(32, 64), (1, 4), (8, 12)])
@pytest.mark.parametrize("batch", [1, 3])
def test_a_global_max_pool_after_a_conv_is_one_reduction(channels, out_channels, batch):
    """Conv 3x3 (pad 1) -> ReLU -> MaxPool 7x7 on 7x7 (a global max written as one window), channels-last and
    NCHW plans: the conv's runner pools with one reduction; against onnxruntime and the traced graph, with a NaN
    input too, three runs each."""
    rng = np.random.default_rng(channels)
    inits = {"w": (rng.standard_normal((out_channels, channels, 3, 3)) * 0.2).astype(np.float32),
             "b": (rng.standard_normal(out_channels) * 0.1).astype(np.float32)}
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("MaxPool", ["r"], ["y"], kernel_shape=[7, 7])]
    proto = make_model(nodes, [tensor_info("x", ["N", channels, 7, 7])], [tensor_info("y", None)], inits)
    model = nn_core.load_proto(proto)
    assert model.plan_ops == ["Conv+Relu+MaxPool"]
    x = rng.standard_normal((batch, channels, 7, 7)).astype(np.float32)
    for _ in range(3):
        got = model.run({"x": x})["y"]
    assert got.shape == (batch, out_channels, 1, 1) and got.flags.c_contiguous
    np.testing.assert_allclose(got, ort_run(proto, {"x": x})[0], rtol=1e-5, atol=1e-6)
    x[0, 0, 3, 3] = np.nan
    with np.errstate(invalid="ignore"):
        for _ in range(2):
            got = model.run({"x": x})["y"]
        traced, _ = model.run_traced({"x": x})
    np.testing.assert_array_equal(np.isnan(got), np.isnan(traced["y"]))
    np.testing.assert_allclose(got[~np.isnan(got)], traced["y"][~np.isnan(got)], rtol=1e-5, atol=1e-6)
