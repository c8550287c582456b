"""Issue 10, ShuffleNet at batch 1: the grouped 1x1 convolution's channels-last plan (_GroupedPointwisePlan)
finishes its output with batch1's finisher (bias as same-shape runs, ReLU/Clip against shared constants). Each
case against the NCHW kernel it stands in for; the light ShuffleNet end to end against onnxruntime."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers import build_kernel, ort_run
from onnx import helper

import nn_core

# (input shape, weight shape, groups): ShuffleNet's 4 groups, odd sizes, a batch of 2, 3 groups of odd width
GROUPED_CASES = [((1, 24, 9, 10), (12, 6, 1, 1), 4),
                 ((1, 136, 7, 5), (136, 34, 1, 1), 4),
                 ((2, 12, 5, 6), (9, 4, 1, 1), 3),
                 ((1, 15, 1, 1), (6, 5, 1, 1), 3),
                 ((3, 8, 3, 7), (8, 4, 1, 1), 2)]
ACTIVATIONS = [None, ("relu", {}), ("clip", {"min": -0.25, "max": 0.5}), ("leaky_relu", {"alpha": 0.1})]


def _kernel(inputs: list[str], arrays: list[np.ndarray], groups: int, act, channels_last: bool):
    kernel = build_kernel(helper.make_node("Conv", inputs, ["y"], group=groups), arrays, tuple(range(1, len(inputs))))
    if act:
        assert kernel.fuse_activation(*act)
    if channels_last:
        kernel.prefer_channels_last()
    return kernel


@pytest.mark.parametrize("case", range(len(GROUPED_CASES)))
def test_grouped_pointwise_equals_the_nchw_kernel(case):
    """Same values as the NCHW kernel for NCHW and channels-last inputs, with and without a bias, under every
    activation kind; the channels-last kernel takes the grouped plan, and an output it handed out is not
    overwritten by its next run."""
    from nn_core.ops.conv import _GroupedPointwisePlan

    x_shape, w_shape, groups = GROUPED_CASES[case]
    rng = np.random.default_rng(case)
    x = rng.standard_normal(x_shape).astype(np.float32)
    w = rng.standard_normal(w_shape).astype(np.float32)
    b = rng.standard_normal(w_shape[0]).astype(np.float32)
    channels_last_x = np.ascontiguousarray(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2) * 0.5
    for inputs, arrays in ((["x", "w", "b"], [x, w, b]), (["x", "w"], [x, w])):
        for act in ACTIVATIONS:
            nchw = _kernel(inputs, arrays, groups, act, False)
            fast = _kernel(inputs, arrays, groups, act, True)
            for image in (x, channels_last_x):
                want = nchw.run(image, *arrays[1:])
                first = fast.run(image, *arrays[1:])
                kept = first.copy()
                second = fast.run(image, *arrays[1:])
                where = (case, len(inputs), act)
                np.testing.assert_allclose(first, want, rtol=1e-5, atol=1e-5, err_msg=str(where))
                np.testing.assert_array_equal(second, first, err_msg=str(where))
                np.testing.assert_array_equal(first, kept, err_msg=str(where))
            assert type(next(iter(fast.plans.values()))[0]) is _GroupedPointwisePlan, where


def test_grouped_pointwise_with_a_fused_max_pool():
    """The finished output pooled channels-last, as the NCHW kernel pools its own."""
    x_shape, w_shape, groups = GROUPED_CASES[0]
    rng = np.random.default_rng(7)
    x = rng.standard_normal(x_shape).astype(np.float32)
    w = rng.standard_normal(w_shape).astype(np.float32)
    b = rng.standard_normal(w_shape[0]).astype(np.float32)
    results = []
    for channels_last in (False, True):
        kernel = _kernel(["x", "w", "b"], [x, w, b], groups, ("relu", {}), channels_last)
        pool = build_kernel(helper.make_node("MaxPool", ["c"], ["p"], kernel_shape=[3, 3], strides=[2, 2],
                                             pads=[1, 1, 1, 1]), [x], ())
        assert kernel.fuse_pool(pool)
        results.append(kernel.run(x, w, b))
    np.testing.assert_allclose(results[1], results[0], rtol=1e-5, atol=1e-5)


def test_grouped_pointwise_keeps_nan():
    """A NaN in the input stays NaN through the bias and the ReLU passes."""
    x_shape, w_shape, groups = GROUPED_CASES[0]
    x = np.ones(x_shape, np.float32)
    x[0, 0, 2, 3] = np.nan
    w = np.ones(w_shape, np.float32)
    b = np.ones(w_shape[0], np.float32)
    y = _kernel(["x", "w", "b"], [x, w, b], groups, ("relu", {}), True).run(x, w, b)
    assert np.isnan(y[0, :w_shape[0] // groups, 2, 3]).all()
    assert not np.isnan(y[0, w_shape[0] // groups:, 2, 3]).any()


LIGHT_SHUFFLENET = Path(__import__("onnx").__file__).parent / "backend/test/data/light/light_shufflenet.onnx"


@pytest.mark.skipif(not LIGHT_SHUFFLENET.exists(), reason="the onnx wheel's light ShuffleNet is not installed")
def test_light_shufflenet_matches_onnxruntime():
    import onnx

    model = onnx.load(str(LIGHT_SHUFFLENET))
    loaded = nn_core.load(str(LIGHT_SHUFFLENET))
    name = loaded.inputs[0].name
    x = np.random.default_rng(3).random((1, 3, 224, 224), dtype=np.float32)
    want = ort_run(model, {name: x})[0]
    first = loaded.run({name: x})
    (key,) = first
    kept = first[key].copy()
    np.testing.assert_allclose(first[key], want, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(loaded.run({name: x})[key], want, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(first[key], kept)
