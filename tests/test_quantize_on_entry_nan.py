"""A NaN input pixel: the QLinearConv that quantizes its input on entry (QDQ and QOperator first layers,
``fuse_qdq``) gives the unfused graph's codes (QuantizeLinear's code for NaN), not NaN sums over the pixel's
window."""

import numpy as np
import onnxruntime as ort
import pytest
from test_quant_fusions import qdq_conv

import nn_core
from nn_core.quantize import to_integer_ops


def _ort(model, feeds):
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


@pytest.mark.parametrize("dtype, zero_point", [(np.uint8, 128), (np.int8, -3), (np.uint8, 0)])
@pytest.mark.parametrize("qoperator", [False, True])
def test_a_nan_pixel_gives_the_unfused_codes_through_the_quantizing_convolution(dtype, zero_point, qoperator):
    model = qdq_conv(dtype, zero_point)
    if qoperator:
        model = to_integer_ops(model)
    ours = nn_core.Model(model)
    assert "QuantizeLinear" not in ours.plan_ops  # quantized on entry
    x = np.random.default_rng(3).normal(0, 1, (1, 2, 9, 9)).astype(np.float32)
    x[0, 0, 4, 4] = np.nan
    with np.errstate(invalid="ignore"):
        fast, unfused = ours.run({"x": x}), ours.run_traced({"x": x})[0]
    for name, value in fast.items():
        np.testing.assert_array_equal(value, unfused[name])
    if dtype == np.uint8:  # (an int8 NaN code is the platform's conversion of NaN, onnxruntime's the minimum)
        for value, want in zip(fast.values(), _ort(model, {"x": x}), strict=True):
            np.testing.assert_array_equal(value, want)
