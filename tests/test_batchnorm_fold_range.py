"""BatchNormalization folded into a Conv's weights must keep the unfused graph's values, also where the factor
scale / sqrt(var + epsilon) is outside float32's normal range (a legal file's constants)."""

import numpy as np
import pytest
from onnx import helper

from nn_core.ops.conv import fold_batchnorm_into_conv
from nn_core.ops.testing import run_node


@pytest.mark.parametrize("scale_value,weight_value", [(1e38, 1e-10), (1e-40, 1e30)], ids=["huge", "subnormal"])
def test_fold_batchnorm_keeps_factors_outside_float32_normal_range(scale_value, weight_value):
    x = np.ones((1, 2, 3, 3), np.float32)
    w = np.full((2, 2, 1, 1), weight_value, np.float32)
    scale = np.array([scale_value, 1.0], np.float32)
    shift, mean = np.zeros(2, np.float32), np.zeros(2, np.float32)
    var = np.array([0.0, 1.0], np.float32)
    epsilon = 1e-5
    new_w, new_b = fold_batchnorm_into_conv(w, None, scale, shift, mean, var, epsilon)
    conv = helper.make_node("Conv", ["x", "w", "b"], ["y"])
    (got,) = run_node(conv, [x, new_w, new_b], 13)
    factor = scale.astype(np.float64) / np.sqrt(var.astype(np.float64) + epsilon)
    want = (x.astype(np.float64).sum(axis=1, keepdims=True) * weight_value) * factor.reshape(1, -1, 1, 1)
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got, want.astype(np.float32), rtol=1e-6)
