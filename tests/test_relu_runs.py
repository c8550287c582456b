"""The in-place ReLU of fused sums (an Add that absorbed its Relu) against a shared run of zeros: the same values
as a maximum against a scalar zero, bit for bit, on every side of the run's size limits and layouts."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import build_kernel
from onnx import helper

from nn_core.ops.elementwise import RELU_RUN_MAX, RELU_RUN_MIN, relu_in_place


def _values(size: int, dtype) -> np.ndarray:
    rng = np.random.default_rng(size)
    values = (rng.standard_normal(size) * 3).astype(dtype)
    values[:: 7] = -0.0
    values[3:: 11] = np.nan
    values[5:: 13] = -np.inf
    return values


@pytest.mark.parametrize("size", [1, RELU_RUN_MIN - 1, RELU_RUN_MIN, 6272, RELU_RUN_MAX, RELU_RUN_MAX + 1])
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
def test_relu_in_place_is_the_maximum_with_zero_bit_for_bit(size, dtype):
    values = _values(size, dtype)
    want = np.maximum(values, dtype(0))
    y = values.copy()
    assert relu_in_place(y) is y
    assert np.array_equal(y.view(f"u{y.itemsize}"), want.view(f"u{want.itemsize}"))


def test_a_strided_array_takes_the_scalar_maximum():
    values = _values(2 * RELU_RUN_MIN, np.float32).reshape(2, RELU_RUN_MIN)
    strided = values.copy()[:, ::2]
    want = np.maximum(strided, np.float32(0))
    assert np.array_equal(relu_in_place(strided), want, equal_nan=True)


@pytest.mark.parametrize("shape, other", [((1, 8, 28, 28), (8, 28, 28)), ((2, 3), (3,)), ((1, 64, 40, 40), (1,))])
def test_add_with_absorbed_relu_matches_add_then_maximum(shape, other):
    rng = np.random.default_rng(1)
    a = rng.standard_normal(shape).astype(np.float32)
    b = rng.standard_normal(other).astype(np.float32)
    kernel = build_kernel(helper.make_node("Add", ["a", "b"], ["y"]), [a, b], ())
    assert kernel.fuse_activation("relu", {})
    for _ in range(2):  # the shared run is read-only: a second call sees it unchanged
        got = kernel.run(a, b)
        np.testing.assert_array_equal(got, np.maximum(a + b, np.float32(0)))
