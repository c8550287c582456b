"""Issue 10, the ViT and Keras fixtures at small batches: a dense layer's absorbed Softmax over a few rows skips
the shift by the maximum only when every row's exponentials are safe -- within float rounding of the unfused
graph and of onnxruntime."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import make_model, ort_run, tensor_info
from onnx import helper

import nn_core


def _gemm_softmax(width: int = 12) -> tuple[object, nn_core.Model]:
    rng = np.random.default_rng(20)
    w = rng.standard_normal((width, 10)).astype(np.float32)
    b = rng.standard_normal(10).astype(np.float32)
    nodes = [helper.make_node("Gemm", ["x", "w", "b"], ["h"]), helper.make_node("Softmax", ["h"], ["y"])]
    proto = make_model(nodes, [tensor_info("x", ["N", width])], [tensor_info("y", None)], {"w": w, "b": b})
    model = nn_core.load_proto(proto)
    assert model.plan_ops == ["Gemm+Softmax"]
    return proto, model


@pytest.mark.parametrize("batch", [1, 2, 8, 9])
def test_absorbed_softmax_of_a_few_rows_matches_the_unfused_graph(batch):
    proto, model = _gemm_softmax()
    rng = np.random.default_rng(batch)
    x = (rng.standard_normal((batch, 12)) * 3).astype(np.float32)
    if batch > 1:
        x[1] *= 40  # one row whose exponentials overflow (a sum of inf) or all underflow: it needs the shift
    got = model.run({"x": x})["y"]
    traced, _ = model.run_traced({"x": x})
    np.testing.assert_allclose(got, traced["y"], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(got, ort_run(proto, {"x": x})[0], rtol=1e-5, atol=1e-7)
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got.sum(axis=1), 1.0, rtol=1e-5)


def test_absorbed_softmax_keeps_a_nan_row_to_itself():
    _, model = _gemm_softmax()
    x = np.random.default_rng(3).standard_normal((2, 12)).astype(np.float32)
    clean = model.run({"x": x})["y"].copy()
    x[0, 4] = np.nan
    got = model.run({"x": x})["y"]
    assert np.isnan(got[0]).all()
    np.testing.assert_allclose(got[1], clean[1], rtol=1e-6)

