"""Batch 1: a convolution with few input channels whose fused MaxPool has side-by-side windows (LeNet-5's conv1)
runs as PhasePooledIm2colPlan -- every pooling phase from one matmul over space-to-depth columns, the pooling and
a fused ReLU one reduction -- and equals the general Conv then MaxPool within float rounding."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers import build_kernel
from onnx import helper

import nn_core

ASSETS = Path(__file__).resolve().parent.parent / "assets"

# (input, weight, conv attributes, pool window, whether the phase plan is expected, or "channels_last" where
# PooledChannelsLastPlan is)
CASES = [
    ((1, 1, 28, 28), (12, 1, 5, 5), {"pads": [2, 2, 2, 2]}, 2, True),  # LeNet-5's conv1: one aligned copy
    ((1, 1, 28, 28), (6, 1, 5, 5), {}, 2, True),
    ((1, 2, 13, 11), (4, 2, 5, 5), {"pads": [1, 2, 0, 1]}, 2, True),  # odd sizes and padding: per-phase copies
    ((1, 1, 17, 16), (3, 1, 5, 4), {"pads": [0, 3, 1, 0]}, 2, True),  # an even kernel width, odd pooled rows
    ((3, 1, 12, 12), (4, 1, 5, 5), {"pads": [2, 2, 2, 2]}, 2, True),  # a small batch, in one chunk
    ((1, 1, 24, 23), (4, 1, 9, 9), {"pads": [1, 0, 0, 0]}, 3, True),  # 3x3 pooling windows
    ((1, 1, 20, 20), (4, 1, 7, 7), {}, 3, False),  # ... of a 7x7 kernel: too many zero weights
    ((1, 1, 7, 7), (2, 1, 5, 5), {"pads": [1, 1, 1, 1]}, 2, True),  # one pooled row and column... and a half
    ((1, 1, 14, 14), (4, 1, 3, 3), {"pads": [1, 1, 1, 1]}, 2, False),  # 3x3: too many zero weights
    ((1, 1, 14, 14), (4, 1, 5, 5), {"strides": [2, 2]}, 2, False),  # strided convolution
    ((1, 1, 14, 14), (4, 1, 5, 5), {"dilations": [2, 1]}, 2, False),
    ((13, 1, 8, 8), (4, 1, 5, 5), {"pads": [2, 2, 2, 2]}, 2, False),  # batch above SMALL_BATCH
    # small layers with enough channels take the channels-last pooled plan (POOLED_RUN...)
    ((1, 6, 14, 14), (16, 6, 5, 5), {}, 2, "channels_last"),  # a classic LeNet-5's conv2
    ((1, 3, 14, 14), (16, 3, 5, 5), {"pads": [2, 2, 2, 2]}, 2, "channels_last"),  # 196 outputs
    ((2, 4, 11, 12), (20, 4, 5, 5), {"pads": [0, 1, 0, 0]}, 2, "channels_last"),  # odd sizes, two images
    ((1, 6, 28, 28), (16, 6, 5, 5), {"pads": [2, 2, 2, 2]}, 2, True),  # 784 outputs: the phase plan
    ((1, 6, 14, 14), (8, 6, 5, 5), {}, 2, True),  # 8 outputs
    ((1, 2, 14, 14), (16, 2, 5, 5), {}, 2, True),  # kernel rows of 10 values
]


def _conv_and_pool(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, conv_attrs: dict, window: int,
                   act: tuple | None, lean: bool):
    from nn_core.ops.batch1 import batch1_kernel

    inputs = ["x", "w", "b"] if b is not None else ["x", "w"]
    kernel = build_kernel(helper.make_node("Conv", inputs, ["c"], **conv_attrs), [x, w, b][:len(inputs)], (1, 2))
    if lean:
        kernel = batch1_kernel(kernel)
    if act is not None:
        assert kernel.fuse_activation(*act)
    pool = build_kernel(helper.make_node("MaxPool", ["c"], ["p"], kernel_shape=[window] * 2, strides=[window] * 2),
                        [x], ())
    assert kernel.fuse_pool(pool)
    return kernel


@pytest.mark.parametrize("x_shape, w_shape, conv_attrs, window, phased", CASES)
@pytest.mark.parametrize("act", [("relu", {}), ("clip", {"min": -0.5, "max": 0.5}), None])
@pytest.mark.parametrize("with_bias", [True, False])
def test_phase_pooled_conv_matches_conv_then_pool(x_shape, w_shape, conv_attrs, window, phased, act, with_bias):
    from nn_core.ops.batch1 import PhasePooledIm2colPlan, PooledChannelsLastPlan

    rng = np.random.default_rng(sum(x_shape) + sum(w_shape))
    x = rng.standard_normal(x_shape).astype(np.float32)
    w = rng.standard_normal(w_shape).astype(np.float32)
    b = rng.standard_normal(w_shape[0]).astype(np.float32) if with_bias else None
    general = _conv_and_pool(x, w, b, conv_attrs, window, act, lean=False)
    lean = _conv_and_pool(x, w, b, conv_attrs, window, act, lean=True)
    want = general.run(x, w, b)
    first = lean.run(x, w, b)
    kept = first.copy()
    second = lean.run(-x, w, b)
    plan = next(iter(lean.plans.values()))[0]
    if phased == "channels_last":
        assert type(plan) is PooledChannelsLastPlan, type(plan).__name__
    else:
        assert (type(plan) is PhasePooledIm2colPlan) == phased, type(plan).__name__
    assert first.shape == want.shape and first.dtype == want.dtype
    np.testing.assert_allclose(first, want, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(first, kept)  # the second run wrote elsewhere
    assert not np.shares_memory(first, second)
    np.testing.assert_allclose(second, general.run(-x, w, b), rtol=1e-5, atol=1e-5)
    # a strided input of the same shape (a previous step may hand one over)
    wide = np.zeros(x_shape[:-1] + (2 * x_shape[-1],), np.float32)
    wide[..., ::2] = x
    np.testing.assert_allclose(lean.run(wide[..., ::2], w, b), want, rtol=1e-5, atol=1e-5)


@pytest.mark.filterwarnings("ignore:invalid value encountered")
def test_nan_and_infinities_give_the_general_kernels_values():
    """0 * inf in the phase weights' zeros would turn an infinity into NaN: such an output is made again by the
    general path, whose values (an infinity, or a finite maximum beside it) come back as they are."""
    rng = np.random.default_rng(31)
    w = rng.standard_normal((3, 1, 5, 5)).astype(np.float32)
    b = rng.standard_normal(3).astype(np.float32)
    for poison in ((np.nan,), (np.inf,), (-np.inf, np.inf), (np.inf, np.nan)):
        x = rng.standard_normal((1, 1, 12, 12)).astype(np.float32)
        for value, (row, col) in zip(poison, ((3, 3), (8, 1)), strict=False):
            x[0, 0, row, col] = value
        for act in (("relu", {}), None):
            want = _conv_and_pool(x, w, b, {"pads": [2, 2, 2, 2]}, 2, act, lean=False).run(x, w, b)
            lean = _conv_and_pool(x, w, b, {"pads": [2, 2, 2, 2]}, 2, act, lean=True)
            np.testing.assert_array_equal(lean.run(x, w, b), want)
            # and the next finite input goes the phase way again
            finite = np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)
            general = _conv_and_pool(x, w, b, {"pads": [2, 2, 2, 2]}, 2, act, lean=False)
            np.testing.assert_allclose(lean.run(finite, w, b), general.run(finite, w, b), rtol=1e-5, atol=1e-5)


def test_bundled_lenet_takes_the_phase_plan_and_matches_the_traced_graph():
    from nn_core.ops.batch1 import PhasePooledIm2colPlan

    model = nn_core.load(str(ASSETS / "lenet5.onnx"))
    rng = np.random.default_rng(32)
    for batch in (1, 2):
        x = rng.random((batch, 1, 28, 28), dtype=np.float32)
        got = model.run({"input": x})["logits"]
        want, _ = model.run_traced({"input": x})
        np.testing.assert_allclose(got, want["logits"], rtol=1e-5, atol=1e-5)
    conv1 = model._fast_plan().steps[0].kernel.feeder  # (FedPooledHead: conv1 feeding the rest)
    assert {type(plan) for plan, _ in conv1.plans.values()} == {PhasePooledIm2colPlan}
