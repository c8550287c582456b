"""The tiny digit models' fast paths: the small Softmax (activations.small_softmax_rows) and the dense chain's
head, against the general formula and onnxruntime."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from test_dense_chain_b1 import CASES
from test_dense_chain_b1 import _head as dense_head

import nn_core
from nn_core.ops.activations import SQUARE_SUM_WIDTH, small_softmax_rows
from nn_core.ops.dense_chain import DenseChain


def reference_softmax(rows: np.ndarray) -> np.ndarray:
    shifted = np.exp(rows.astype(np.float64) - rows.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("width", [1, 2, 10, SQUARE_SUM_WIDTH, SQUARE_SUM_WIDTH + 1, 100])
@pytest.mark.parametrize("count", [1, 2, 3])
@pytest.mark.parametrize("offset", [0.0, -5.0, 60.0, 200.0])
def test_small_softmax_rows_matches_the_shifted_formula(dtype, width, count, offset):
    """Unshifted (maxima in [0, EXP_SAFE]) and shifted rows, sums by a square of ones and by a column."""
    rows = (np.random.default_rng(width * 7 + count).standard_normal((count, width)) * 3 + offset).astype(dtype)
    kept = rows.copy()
    got = small_softmax_rows(rows)
    assert got.dtype == dtype and got.shape == rows.shape
    assert got is not rows and np.array_equal(rows, kept)  # a fresh array; the input untouched
    np.testing.assert_allclose(got, reference_softmax(rows), rtol=2e-6 if dtype == np.float32 else 1e-12,
                               atol=1e-7 if dtype == np.float32 else 1e-15)


def test_small_softmax_rows_mixed_rows_take_the_shift():
    """One row in range and one below zero: both come out right (the shift is taken for all)."""
    rows = np.array([[1.0, 2.0, 3.0], [-30.0, -31.0, -29.0]], np.float32)
    np.testing.assert_allclose(small_softmax_rows(rows), reference_softmax(rows), rtol=2e-6)


def test_small_softmax_rows_nan_and_infinity():
    """A NaN row stays NaN and an infinity takes the shifted path, as in the general kernel; other rows exact."""
    rows = np.array([[np.nan, 1.0, 2.0], [0.0, np.inf, 1.0], [1.0, 2.0, 3.0]], np.float32)
    with np.errstate(invalid="ignore"):
        got = small_softmax_rows(rows)
    assert np.isnan(got[0]).all()
    np.testing.assert_allclose(got[2], reference_softmax(rows[2:])[0], rtol=2e-6)


@pytest.mark.parametrize("name", ["keras_nhwc_l12", "lenet_avgpool_l10", "cnn_bn2d_l15"])
@pytest.mark.parametrize("scale", [1.0, -1.0, 40.0])
def test_tiny_models_match_onnxruntime(name, scale):
    """The digit models whose heads end in a fused Softmax, on inputs that keep and that need the shift, twice
    (the second run through the kept buffers), the first output unchanged by the second run."""
    ort = pytest.importorskip("onnxruntime")
    path = Path(__file__).parent / "models" / "grad" / f"{name}.onnx"
    model = nn_core.load(path)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    spec = session.get_inputs()[0]
    x = (np.random.default_rng(3).random(spec.shape) * scale).astype(np.float32)
    want = session.run(None, {spec.name: x})[0]
    first = list(model.run({spec.name: x}).values())[0]
    kept = first.copy()
    second = list(model.run({spec.name: x * 0.5}).values())[0]
    np.testing.assert_allclose(first, want, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(first, kept)
    assert second is not first


@pytest.mark.parametrize("widths, layers", CASES)
@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dense_chain_on_a_strided_input_matches_the_kernels(widths, layers, batch, dtype):
    """The transposed (rows > 1) and row (one row) forms of DenseChain on an input that is a transposed view
    (BLAS reads its transpose as is), float32 and float64, against the kernels run in turn; the output fresh."""
    kernel = next(s.kernel for s in nn_core.load_proto(dense_head(widths, layers, dtype))._fast_plan().steps
                  if type(s.kernel) is DenseChain)
    x = np.asfortranarray(np.random.default_rng(4).standard_normal((batch, widths[0])).astype(dtype))
    want = x
    for layer, arguments in zip(kernel.kernels, kernel.arguments, strict=True):
        want = layer.run(want, *arguments)
    first = kernel.run(x)
    kept = first.copy()
    np.testing.assert_allclose(first, want, rtol=1e-5 if dtype == np.float32 else 1e-12, atol=1e-6)
    kernel.run(x * 2)
    np.testing.assert_array_equal(first, kept)
    assert set(kernel.buffers) == {batch}
