"""Batch-1 kernels of the small digit models (issue 10): the Softmax of a classifier's few scores
(activations.small_softmax_rows) against the general path and onnxruntime, at ordinary and extreme logits."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import build_kernel, make_model, ort_run, tensor_info
from onnx import helper

from nn_core.ops.activations import SMALL_SOFTMAX

# rows of ordinary logits, all negative, overflowing, underflowing, NaN and infinities
EXTREME_ROWS = [[1.0, 2.0, 3.0, 4.0], [-300.0, -310.0, -200.0, -250.0], [90.0, 95.0, 80.0, -5.0],
                [-120.0, 0.5, -90.0, -1.0], [np.nan, 1.0, 2.0, 3.0], [np.inf, 1.0, 2.0, 3.0],
                [-np.inf, 1.0, 2.0, 3.0], [-0.2, -0.1, -0.4, -3.0], [80.0, -30.0, 0.0, 79.5]]


def _softmax(opset: int, axis: int | None):
    attrs = {} if axis is None else {"axis": axis}
    return build_kernel(helper.make_node("Softmax", ["x"], ["y"], **attrs), [None], opset=opset)


def _general(kernel, x: np.ndarray) -> np.ndarray:
    """The kernel's general path for ``x``: the same values tiled past SMALL_SOFTMAX along a leading axis."""
    copies = SMALL_SOFTMAX // x.size + 1
    tiled = np.concatenate([x[None]] * copies)
    return kernel.run(tiled)[0]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_small_softmax_at_the_extremes_is_the_general_path(dtype):
    kernel = _softmax(13, -1)
    for row in EXTREME_ROWS:
        x = np.array([row], dtype)
        with np.errstate(invalid="ignore", over="ignore"):
            got, want = kernel.run(x), _general(kernel, x)
        assert got.dtype == dtype and got.shape == x.shape
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-30)
    x = np.array(EXTREME_ROWS[:4] + EXTREME_ROWS[7:], dtype)  # several rows at once, one of them shifted
    np.testing.assert_allclose(kernel.run(x), _general(kernel, x), rtol=1e-6, atol=1e-30)


@pytest.mark.parametrize("opset, axis, shape", [(13, None, (1, 10)), (13, -1, (2, 3, 10)), (13, 2, (2, 3, 5)),
                                                (13, 1, (1, 10, 3)), (11, 1, (1, 10)), (11, 1, (2, 3, 4)),
                                                (11, None, (1, 2, 5)), (11, 0, (3, 4)), (13, 0, (10,))])
def test_small_softmaxes_match_onnxruntime(opset, axis, shape):
    """Trailing axes (and, before opset 13, the flattened ones from ``axis`` on) take the small path; any other
    axis keeps the general one: both as onnxruntime, including a row whose scores underflow to 0 and its Log."""
    rng = np.random.default_rng(7)
    x = (rng.standard_normal(shape) * 4).astype(np.float32)
    x.reshape(-1)[0] = -150.0  # its exponential underflows beside the others
    attrs = {} if axis is None else {"axis": axis}
    model = make_model([helper.make_node("Softmax", ["x"], ["p"], **attrs), helper.make_node("Log", ["p"], ["y"])],
                       [tensor_info("x", list(shape))], [tensor_info("p", None), tensor_info("y", None)],
                       opset=opset)
    want_p, want_log = ort_run(model, {"x": x})
    kernel = _softmax(opset, axis)
    got = kernel.run(x)
    np.testing.assert_allclose(got, want_p, rtol=1e-5, atol=1e-30)
    with np.errstate(divide="ignore"):
        got_log = np.log(got)
    np.testing.assert_allclose(got_log, want_log, rtol=1e-5, atol=1e-5)  # (-inf where a score underflows)
    assert np.array_equal(np.isneginf(got_log), np.isneginf(want_log))


def test_a_small_softmax_is_fresh_and_leaves_its_input_alone():
    kernel = _softmax(13, -1)
    x = np.arange(10, dtype=np.float32)[None]
    kept = x.copy()
    first = kernel.run(x)
    second = kernel.run(x)
    assert first is not second and not np.shares_memory(first, x)
    np.testing.assert_array_equal(x, kept)
    np.testing.assert_array_equal(first, second)
    strided = np.arange(20, dtype=np.float32).reshape(1, 20)[:, ::2]  # a strided view: reshaped by a copy
    np.testing.assert_allclose(kernel.run(strided), kernel.run(np.ascontiguousarray(strided)), rtol=1e-7)
