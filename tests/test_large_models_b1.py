"""Issue 10, ImageNet-size topologies at batch 1 (second part): LRN keeping a channels-last map channels-last
(GoogLeNet), against the spec's formula and onnxruntime."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import build_kernel, make_model, ort_run, tensor_info
from onnx import helper


def _channels_last(x: np.ndarray) -> np.ndarray:
    """``x`` (N, C, H, W) with the same values over channels-last storage."""
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)


def _lrn_formula(x: np.ndarray, size: int, alpha: float, beta: float, bias: float) -> np.ndarray:
    """The spec's LRN in float64: the square sum over channels [c - floor((size-1)/2), c + ceil((size-1)/2)]."""
    x64, channels = x.astype(np.float64), x.shape[1]
    want = np.empty_like(x64)
    for c in range(channels):
        low, high = max(0, c - (size - 1) // 2), min(channels - 1, c + (size - 1) - (size - 1) // 2)
        square_sum = np.sum(x64[:, low:high + 1] ** 2, axis=1)
        want[:, c] = x64[:, c] / (bias + alpha / size * square_sum) ** beta
    return want


# (shape, size, beta): GoogLeNet's size 5 and beta 0.75 (the square-root form), other betas (the power), even
# sizes, one channel, windows wider than the channels, a window over more than _LRN_SHIFTED_ADDS neighbours
LRN_CASES = [((1, 12, 7, 9), 5, 0.75), ((2, 6, 5, 4), 4, 0.6), ((1, 1, 3, 3), 5, 0.75), ((1, 3, 4, 4), 9, 0.75),
             ((1, 20, 3, 5), 13, 0.5), ((1, 7, 2, 3), 1, 1.0)]


@pytest.mark.parametrize("case", LRN_CASES)
def test_lrn_keeps_the_layout_and_matches_the_formula(case):
    shape, size, beta = case
    rng = np.random.default_rng(size)
    x = (rng.standard_normal(shape) * 8).astype(np.float32)
    node = helper.make_node("LRN", ["x"], ["y"], size=size, alpha=1e-2, beta=beta, bias=1.5)
    kernel = build_kernel(node, [x])
    want = _lrn_formula(x, size, 1e-2, beta, 1.5)
    for image in (x, _channels_last(x)):
        got = kernel.run(image)
        assert got.dtype == np.float32 and got.shape == x.shape
        np.testing.assert_allclose(got, want, rtol=2e-6, atol=1e-6)
        if size <= 9:  # (shifted adds: the output in the input's layout)
            assert got.strides == image.strides or shape[1] == 1
    if size % 2:  # onnxruntime only implements odd sizes
        model = make_model([node], [tensor_info("x", list(shape))], [tensor_info("y", list(shape))])
        np.testing.assert_allclose(kernel.run(_channels_last(x)), ort_run(model, {"x": x})[0], rtol=1e-5,
                                   atol=1e-6)


def test_lrn_float16_and_float64_keep_their_type():
    x = np.random.default_rng(3).standard_normal((1, 8, 4, 4))
    node = helper.make_node("LRN", ["x"], ["y"], size=3)
    kernel = build_kernel(node, [x])
    want = _lrn_formula(x, 3, 1e-4, 0.75, 1.0)
    np.testing.assert_allclose(kernel.run(x), want, rtol=1e-12)
    got16 = kernel.run(x.astype(np.float16))
    assert got16.dtype == np.float16
    np.testing.assert_allclose(got16, want, rtol=2e-3, atol=2e-3)


@pytest.mark.parametrize("case", [((1, 16, 46, 44), (32, 16, 3, 3), True),  # small weights: in blocks of rows
                                  ((1, 64, 24, 24), (192, 64, 3, 3), False),  # 0.4 MB of weights: whole
                                  ((1, 96, 14, 14), (160, 96, 3, 3), False)])
def test_channels_last_plan_blocks_only_under_small_weights(case):
    """Columns over BLOCK_BYTES go in blocks of output rows only while the weight matrix that every block's GEMM
    packs again is small; either way the values are the NCHW kernel's, strided or not."""
    from nn_core.ops import conv

    x_shape, w_shape, blocked = case
    rng = np.random.default_rng(len(w_shape))
    x = rng.standard_normal(x_shape).astype(np.float32)
    w = (rng.standard_normal(w_shape) * 0.05).astype(np.float32)
    b = rng.standard_normal(w_shape[0]).astype(np.float32)
    for strides in ([1, 1], [2, 2]):
        node = helper.make_node("Conv", ["x", "w", "b"], ["y"], pads=[1, 1, 1, 1], strides=strides)
        want = build_kernel(node, [x, w, b], (1, 2)).run(x, w, b)
        kernel = build_kernel(node, [x, w, b], (1, 2))
        kernel.prefer_channels_last()
        for _ in range(2):
            np.testing.assert_allclose(kernel.run(_channels_last(x), w, b), want, rtol=1e-5, atol=1e-4)
        (plan, _), = kernel.plans.values()
        assert type(plan) is conv._ChannelsLastPlan
        # (a strided image's columns fit in one block)
        assert (plan.block_rows < plan.out_sizes[0]) == (blocked and strides == [1, 1]), (case, strides)
