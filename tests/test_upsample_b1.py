"""Batch-1 kernels of the upsampling models (issue 10): the 1x1 convolution of a one-image NCHW input (batch1.py's
ChannelsLastPointwisePlan, a 2-D dot) against the general pointwise kernel, and Resize's resampler kept per input
(matrix products, repeats or the tap-by-tap gather) against the gather and onnxruntime."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import build_kernel, make_model, ort_run, tensor_info
from onnx import TensorProto, helper

import nn_core

# (input shape, output channels): one input channel (the skip branch of upsample_l13), odd sizes, 1x1 images,
# batches of 2 and 3 (the stacked matmul)
POINTWISE_CASES = [((1, 1, 28, 28), 4), ((1, 1, 7, 5), 3), ((1, 3, 9, 11), 6), ((1, 5, 1, 1), 2),
                   ((2, 1, 6, 5), 4), ((3, 4, 5, 3), 7)]


@pytest.mark.parametrize("case", POINTWISE_CASES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_pointwise_nchw_input_matches_the_general_kernel(case, dtype):
    from nn_core.ops.batch1 import ChannelsLastPointwisePlan
    from nn_core.ops.conv import _PointwisePlan, make_activation

    shape, out = case
    rng = np.random.default_rng(sum(shape) + out)
    x = rng.standard_normal(shape).astype(dtype)
    w = rng.standard_normal((out, shape[1], 1, 1)).astype(dtype)
    tolerance = 1e-5 if dtype == np.float32 else 1e-12
    for bias in (None, rng.standard_normal(out).astype(dtype)):
        for act in (None, make_activation("relu", {})):
            general, plan = _PointwisePlan(shape, out, bias is not None), \
                ChannelsLastPointwisePlan(shape, out, bias is not None)
            want = general.run(x, general.prepare(w, bias, 1), act)
            run = plan.runner(plan.prepare(w, bias, 1), act)
            got = run(x)
            assert got.shape == want.shape and got.dtype == want.dtype and got.flags.c_contiguous
            np.testing.assert_allclose(got, want, rtol=tolerance, atol=tolerance)
            # the output is the caller's: the next call leaves it as it was
            kept = got.copy()
            np.testing.assert_allclose(run(-x), general.run(-x, general.prepare(w, bias, 1), act), rtol=tolerance,
                                       atol=tolerance)
            np.testing.assert_array_equal(got, kept)


# (attributes, input shape, sizes): upsample_l13's nearest and bilinear x2, odd and shrinking sizes, cubic, one
# resized axis, a crop with extrapolation (the gather), a 3-D input (the matrix product on a leading axis)
RESIZE_CASES = [({"mode": "nearest", "coordinate_transformation_mode": "asymmetric", "nearest_mode": "floor"},
                 (1, 4, 7, 7), (1, 4, 14, 14)),
                ({"mode": "linear"}, (1, 4, 14, 14), (1, 4, 28, 28)),
                ({"mode": "linear", "coordinate_transformation_mode": "align_corners"}, (2, 3, 5, 7), (2, 3, 9, 4)),
                ({"mode": "nearest"}, (1, 2, 5, 6), (1, 2, 13, 4)),
                ({"mode": "cubic", "coordinate_transformation_mode": "pytorch_half_pixel"}, (1, 3, 6, 5),
                 (1, 3, 11, 10)),
                ({"mode": "linear"}, (1, 2, 6, 5), (1, 2, 6, 9)),
                ({"mode": "linear"}, (3, 6, 5), (7, 6, 5)),
                ({"mode": "linear", "coordinate_transformation_mode": "tf_crop_and_resize",
                  "extrapolation_value": 2.0}, (1, 2, 5, 5), (1, 2, 8, 8))]


def _resize_inputs(case, dtype=np.float32):
    attrs, shape, sizes = case
    x = (np.random.default_rng(len(shape) + sum(sizes)).standard_normal(shape) * 4).astype(dtype)
    roi = np.array([0.0] * len(shape) + [1.0] * len(shape), np.float32)
    if attrs.get("coordinate_transformation_mode") == "tf_crop_and_resize":
        roi[2:4], roi[6:8] = -0.2, 1.1  # outside the image: extrapolated
    return x, roi, np.array(np.array(sizes), np.int64)


@pytest.mark.parametrize("case", RESIZE_CASES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16, np.int32])
def test_resize_resampler_matches_the_gather(case, dtype):
    x, roi, sizes = _resize_inputs(case, dtype)
    node = helper.make_node("Resize", ["x", "roi", "", "sizes"], ["y"], **case[0])
    kernel = build_kernel(node, [x, roi, None, sizes], (1, 3))
    plans = kernel.plans_for(x, (roi, None, sizes))
    want = kernel._gather_resample(x, plans)
    tolerance = {np.float16: 1e-2, np.float32: 1e-5}.get(dtype, 1e-9)
    got = kernel.run(x, roi, None, sizes)
    assert got.shape == want.shape == case[2] and got.dtype == x.dtype
    np.testing.assert_allclose(got.astype(np.float64), want.astype(np.float64), rtol=tolerance, atol=tolerance)
    # the next call (the kept resampler) leaves the first output and the input as they were
    kept, before = got.copy(), x.copy()
    again = kernel.run(x[::-1].copy(), roi, None, sizes)
    np.testing.assert_array_equal(got, kept)
    np.testing.assert_array_equal(x, before)
    np.testing.assert_allclose(again.astype(np.float64),
                               kernel._gather_resample(x[::-1].copy(), plans).astype(np.float64),
                               rtol=tolerance, atol=tolerance)
    # other sizes for the same input: their own plans and resampler
    other = sizes.copy()
    other[-1] += 1
    assert kernel.run(x, roi, None, other).shape == case[2][:-1] + (case[2][-1] + 1,)


@pytest.mark.parametrize("case", RESIZE_CASES)
def test_resize_in_a_model_matches_onnxruntime(case):
    x, roi, sizes = _resize_inputs(case)
    node = helper.make_node("Resize", ["x", "roi", "", "sizes"], ["y"], **case[0])
    model = make_model([node], [tensor_info("x", list(x.shape))], [tensor_info("y", None, TensorProto.FLOAT)],
                       {"roi": roi, "sizes": sizes})
    session = nn_core.load_proto(model)
    for image in (x, -x):
        (theirs,) = ort_run(model, {"x": image})
        ours = session.run({"x": image})["y"]
        assert ours.shape == theirs.shape
        np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("mode", ["nearest", "linear"])
def test_upsample_keeps_a_resampler_per_scales(mode):
    x = np.random.default_rng(5).standard_normal((1, 3, 4, 5)).astype(np.float32)
    node = helper.make_node("Upsample", ["x", "scales"], ["y"], mode=mode)
    kernel = build_kernel(node, [x, None], (), opset=9)
    for scales in ([1, 1, 2, 2], [1, 1, 3, 1.5], [1, 1, 2, 2]):
        values = np.array(scales, np.float32)
        want = kernel._gather_resample(x, kernel.plans_for(x, (values,)))
        got = kernel.run(x, values)
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    model = make_model([node], [tensor_info("x", list(x.shape))], [tensor_info("y", None)],
                       {"scales": np.array([1, 1, 2, 3], np.float32)}, opset=9)
    (theirs,) = ort_run(model, {"x": x})
    np.testing.assert_allclose(nn_core.load_proto(model).run({"x": x})["y"], theirs, rtol=1e-5, atol=1e-5)


# (input shape, weight shape, attributes, whether the phase layout adds zeros of its own): a U-Net's 2x2 stride-2
# up-convolution (every phase reaches its one offset), stride 1 with padding (covered; the padding's zeros meet
# finite weights), a 3x3 stride-2 one (phases reach 1 or 2 of the 2 offsets per axis), a begin pad that puts the
# two phases of a 2x2 stride-2 kernel on different offsets (groups), a stride 3 as large as the kernel
TRANSPOSE_CASES = [((1, 8, 7, 7), (8, 8, 2, 2), {"strides": [2, 2]}, False),
                   ((1, 3, 5, 6), (3, 2, 3, 3), {"pads": [1, 1, 1, 1]}, False),
                   ((1, 8, 6, 5), (8, 4, 3, 3), {"strides": [2, 2], "pads": [1, 1, 1, 1], "output_padding": [1, 1]},
                    True),
                   ((1, 4, 5, 5), (4, 3, 2, 2), {"strides": [2, 2], "group": 2, "pads": [1, 0, 0, 1]}, True),
                   ((1, 2, 4, 3), (2, 2, 3, 3), {"strides": [3, 3]}, False)]


@pytest.mark.parametrize("case", TRANSPOSE_CASES)
@pytest.mark.parametrize("infinite_weight", [False, True])
def test_phase_transpose_non_finite_values_match_the_scatter_add(case, infinite_weight):
    """Infinities and NaNs in the input give the general kernel's outputs, whether or not the plan checks for
    NaN: it checks only where its layout has zeros of its own or a weight is not finite."""
    from nn_core.ops.batch1 import LeanConvTranspose, PhaseTransposePlan, batch1_kernel

    x_shape, w_shape, attrs, adds_zeros = case
    rng = np.random.default_rng(sum(x_shape))
    x = rng.standard_normal(x_shape).astype(np.float32)
    w = rng.standard_normal(w_shape).astype(np.float32)
    if infinite_weight:
        w[0, 0, 0, 0] = np.inf
    b = rng.standard_normal(w_shape[1] * attrs.get("group", 1)).astype(np.float32)
    node = helper.make_node("ConvTranspose", ["x", "w", "b"], ["y"], **attrs)
    general = build_kernel(node, [x, w, b], (1, 2))
    lean = batch1_kernel(build_kernel(node, [x, w, b], (1, 2)))
    assert type(lean) is LeanConvTranspose
    np.testing.assert_allclose(lean.run(x, w, b), general.run(x, w, b), rtol=1e-5, atol=1e-5)
    kernel, strides, dilations, begins, out, _, _ = lean.geometries[(x.shape, w.shape)]
    plan = PhaseTransposePlan(x.shape, x.dtype, w, b, lean.group, kernel, strides, dilations, begins, out,
                              lean.check_size)
    assert plan.checks_nan == (adds_zeros or infinite_weight)
    for value in (np.inf, -np.inf, np.nan):
        bad = x.copy()
        bad[0, -1, 1, -1] = value
        bad[0, 0, 0, 0] = -value
        want = general.run(bad, w, b)
        got = lean.run(bad, w, b)
        np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
