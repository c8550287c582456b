"""The batch-1 fast paths of issue 10 against the general kernels they stand in for."""

from __future__ import annotations

import numpy as np
import pytest

from nn_core.ops import conv as conv_ops

GEOMETRIES = [((kh, kw), (sh, sw), (dh, dw), pads)
              for kh, kw in [(3, 3), (1, 3), (2, 2), (5, 5)]
              for sh, sw in [(1, 1), (2, 2), (1, 2), (3, 2)]
              for dh, dw in [(1, 1), (2, 1)]
              for pads in [(0, 0, 0, 0), (1, 1, 1, 1), (2, 0, 1, 3)]]


def _both(x, w, bias, kernel, strides, dilations, pads):
    args = (x.shape, x.dtype, list(kernel), list(strides), list(dilations), list(pads[:2]), list(pads[2:]),
            bias is not None)
    general, flat = conv_ops._DepthwisePlan(*args), conv_ops._FlatDepthwisePlan(*args)
    want = general.run(x, general.prepare(w, bias, x.shape[1]), None)
    got = flat.run(x, flat.prepare(w, bias, x.shape[1], x.dtype), None)
    return want, got, flat


@pytest.mark.parametrize("shape", [(1, 3, 7, 9), (2, 5, 10, 8), (3, 4, 5, 5)])
def test_flat_depthwise_matches_the_per_tap_sum_bit_for_bit(shape):
    rng = np.random.default_rng(0)
    for kernel, strides, dilations, pads in GEOMETRIES:
        h, w_ = shape[2] + pads[0] + pads[2], shape[3] + pads[1] + pads[3]
        if h < (kernel[0] - 1) * dilations[0] + 1 or w_ < (kernel[1] - 1) * dilations[1] + 1:
            continue
        x = rng.standard_normal(shape).astype(np.float32)
        w = rng.standard_normal((shape[1], 1, *kernel)).astype(np.float32)
        for bias in (None, rng.standard_normal(shape[1]).astype(np.float32)):
            want, got, _ = _both(x, w, bias, kernel, strides, dilations, pads)
            assert got.shape == want.shape
            assert np.array_equal(got, want), (kernel, strides, dilations, pads)


def test_flat_depthwise_in_chunks_and_without_tiled_weights(monkeypatch):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((7, 3, 9, 9)).astype(np.float32)
    w = rng.standard_normal((3, 1, 3, 3)).astype(np.float32)
    monkeypatch.setattr(conv_ops, "CHUNK_BYTES", 2000)
    for strides in ((1, 1), (2, 2)):
        want, got, plan = _both(x, w, None, (3, 3), strides, (1, 1), (1, 1, 1, 1))
        assert plan.rows < 7 and np.array_equal(got, want)
    monkeypatch.setattr(conv_ops, "DEPTHWISE_TILE_BYTES", 0)
    want, got, plan = _both(x[:1], w, None, (3, 3), (1, 1), (1, 1), (1, 1, 1, 1))
    assert not plan.tile and plan.stacked is None and np.array_equal(got, want)


@pytest.mark.parametrize("shape, kernel", [((2, 3, 28, 28), [28, 28]), ((2, 3, 9, 10), [3, 3]),
                                           ((1, 2, 8, 9), [4, 2]), ((1, 2, 7, 7), [3, 3])])
def test_side_by_side_pooling_windows_reduce_as_blocks(shape, kernel):
    from nn_core.ops.pool import _PoolPlan

    x = np.random.default_rng(2).standard_normal(shape).astype(np.float32)
    plan = _PoolPlan(x.shape, x.dtype, kernel, kernel, [1, 1], [0, 0], [0, 0], False, -np.inf)
    assert plan.blocked is not None
    got_max, got_sum = plan.reduce(x, np.maximum), plan.reduce(x, np.add)
    plan.blocked = None
    assert np.array_equal(got_max, plan.reduce(x, np.maximum))
    np.testing.assert_allclose(got_sum, plan.reduce(x, np.add), rtol=1e-5, atol=1e-5)


def test_constant_pad_with_load_time_pads_matches_np_pad():
    import onnx
    from onnx import helper

    import nn_core

    pads = [0, 1, 2, 0, 0, 3, 1, 2]
    node = helper.make_node("Pad", ["x", "pads", "value"], ["y"], mode="constant")
    x_info = helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [2, 3, 4, 5])
    graph = helper.make_graph([node], "pad", [x_info],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)],
                              [helper.make_tensor("pads", onnx.TensorProto.INT64, [8], pads),
                               helper.make_tensor("value", onnx.TensorProto.FLOAT, [], [1.5])])
    model = nn_core.load_proto(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]))
    x = np.random.default_rng(3).standard_normal((2, 3, 4, 5)).astype(np.float32)
    want = np.pad(x, list(zip(pads[:4], pads[4:])), constant_values=1.5)
    for _ in range(2):  # the second run uses the cached layout
        np.testing.assert_array_equal(model.run({"x": x})["y"], want)
