"""nn_core.ops.float8 converts bit-exactly as ONNX specifies (checked against onnx's own helpers)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from nn_core.ops import float8


def _dtype(name: str) -> np.dtype:
    return np.dtype(helper.tensor_dtype_to_np_dtype(getattr(onnx.TensorProto, name)))


VALUES = np.concatenate([np.random.default_rng(0).standard_normal(5000).astype(np.float32) * scale
                         for scale in (1e-5, 1e-2, 1, 30, 500, 1e4, 1e6)]
                        + [np.array([0, -0.0, np.inf, -np.inf, np.nan, 448, 449, 464, 465, 240, 57344, 61440],
                                    np.float32)])


@pytest.mark.parametrize("name", ["FLOAT8E4M3FN", "FLOAT8E4M3FNUZ", "FLOAT8E5M2", "FLOAT8E5M2FNUZ"])
@pytest.mark.parametrize("saturate", [True, False])
def test_float8_round_trip_matches_onnx(name, saturate):
    dtype = _dtype(name)
    ours = float8.from_float(VALUES, dtype, saturate)
    reference = numpy_helper.saturate_cast(VALUES, dtype) if saturate else VALUES.astype(dtype)
    assert ours.dtype == dtype
    np.testing.assert_array_equal(float8.to_float32(ours), reference.astype(np.float32))
    codes = np.arange(256, dtype=np.uint8).view(dtype)
    np.testing.assert_array_equal(float8.to_float32(codes), codes.astype(np.float32))


def test_bfloat16_rounds_to_nearest_even():
    dtype = _dtype("BFLOAT16")
    ours = float8.from_float(VALUES, dtype)
    assert np.array_equal(ours.view(np.uint16)[~np.isnan(VALUES)],
                          VALUES.astype(dtype).view(np.uint16)[~np.isnan(VALUES)])
    assert np.isnan(float8.to_float32(ours)[np.isnan(VALUES)]).all()
    assert float8.to_float32(float8.from_float(np.float32(1.0), dtype)).shape == ()


@pytest.mark.parametrize("mode", ["up", "down", "nearest"])
@pytest.mark.parametrize("saturate", [True, False])
def test_e8m0_matches_onnx(mode, saturate):
    ours = float8.from_float(VALUES, _dtype("FLOAT8E8M0"), saturate, mode)
    want = numpy_helper.to_float8e8m0(VALUES, saturate, mode)
    assert np.array_equal(ours.view(np.uint8), want.view(np.uint8))
