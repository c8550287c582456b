"""Issue 10, the ViT and Keras fixtures at small batches: a dense layer's absorbed Softmax over a few rows skips
the shift by the maximum only when every row's exponentials are safe, and a ViT's patch embedding gathers its
patches and adds the Conv's bias with the positions -- all within float rounding of the unfused graph and of
onnxruntime."""

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


@pytest.mark.filterwarnings("error::RuntimeWarning")  # (no overflow warning from exponentials tried unshifted)
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


def _with_positions(model, shape: tuple[int, ...]):
    """``model`` (test_transformer_fusion's patch model) with positions of ``shape``."""
    from onnx import numpy_helper

    for index, tensor in enumerate(model.graph.initializer):
        if tensor.name == "pos":
            values = np.random.default_rng(4).standard_normal(shape).astype(np.float32)
            model.graph.initializer[index].CopyFrom(numpy_helper.from_array(values, "pos"))
    return model


@pytest.mark.parametrize("case", [{}, {"image": (3, 1, 28, 28), "kernel": 7}, {"image": (1, 3, 16, 16), "kernel": 8}])
def test_patch_embedding_gathers_patches_and_adds_its_bias_with_the_positions(case):
    from test_transformer_fusion import _close, _fast_and_unfused, _patch_model

    model = _patch_model(**case)
    x = np.random.default_rng(6).standard_normal(case.get("image", (2, 2, 13, 12))).astype(np.float32)
    fast, unfused, loaded = _fast_and_unfused(model, {"x": x})
    assert len(loaded.plan_ops) == 1 and loaded.plan_ops[0].startswith("Conv+")
    _close(fast, unfused)
    _close(fast, ort_run(model, {"x": x})[0])
    # a strided image (no contiguous rows to take from) and a second run: the same values
    wide = np.zeros(x.shape[:3] + (2 * x.shape[3],), np.float32)
    wide[..., ::2] = x
    _close(loaded.run({"x": wide[..., ::2]})["y"], unfused)


def test_patch_embedding_whose_positions_the_bias_would_grow_stays_unfused():
    from test_transformer_fusion import _close, _fast_and_unfused, _patch_model

    # (13 // 4) * (12 // 4) = 9 tokens, each position one value: adding the 6-value bias would grow it
    model = _with_positions(_patch_model(), (1, 9, 1))
    x = np.random.default_rng(7).standard_normal((2, 2, 13, 12)).astype(np.float32)
    fast, unfused, loaded = _fast_and_unfused(model, {"x": x})
    assert "Conv" in loaded.plan_ops
    _close(fast, unfused)
    _close(fast, ort_run(model, {"x": x})[0])
