"""Transformer steps on values at the edges of float32: what they compute equals the unfused graph's.

- LayerNormalization + tokens' mean + dense head: the means of a few images are one product by a (B, B*S) block
  matrix whose zeros meet every image's rows; a NaN or infinite token in one image must not make the other
  images' outputs NaN (0 * NaN) -- the unfused graph keeps them finite.
- The bounds that let attention skip the softmax's shift rest on a normalised row having length at most
  sqrt(width). In float32 with a tiny (legal, positive) epsilon and tiny inputs the squares' mean underflows,
  the deviation is sqrt(epsilon) and the row is many times longer: such a model keeps the tested softmax.
"""

import numpy as np
import pytest
from onnx import helper, numpy_helper
from test_transformer_b1 import _feeds, _mean_head_model, _norm_attention_model

import nn_core


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_a_non_finite_token_stays_in_its_own_image(bad):
    model = _mean_head_model()
    feeds = _feeds(model)
    feeds["a"][2, 3, 5] = bad
    loaded = nn_core.load_proto(model)
    assert loaded.plan_ops == ["Add+LayerNormalization+ReduceMean+Gemm"]
    with np.errstate(all="ignore"):
        fast, unfused = loaded.run(feeds)["y"], loaded.run_traced(feeds)[0]["y"]
    assert np.isfinite(unfused[:2]).all()
    np.testing.assert_allclose(fast[:2], unfused[:2], rtol=1e-5, atol=1e-5)


F32 = np.float32


def _model(epsilon):
    model = _norm_attention_model(scale="none", tokens=16, heads=2, depth=12, width=24)
    width, span, depth = 24, 24, 12
    u = np.where(np.arange(width) % 2 == 0, 1.0, -1.0) / np.sqrt(width)  # zero-mean unit direction
    v = np.zeros(span)
    v[:depth] = 1 / np.sqrt(depth)  # head 0 only
    alpha = np.sqrt(2.3)  # bound: alpha^2 * width * 1.002 = 55.3 <= 0.9 * 64
    wq = np.zeros((width, 3 * span))
    wq[:, :span] = alpha * np.outer(u, v)  # query block
    wq[:, span:2 * span] = alpha * np.outer(u, v)  # key block: q parallel to k
    wq[:, 2 * span:] = np.random.default_rng(0).standard_normal((width, span)) * 0.1
    replace = {"wq": wq.astype(F32), "bq": np.zeros(3 * span, F32), "gamma": np.ones(width, F32),
               "beta": np.zeros(width, F32)}
    for init in model.graph.initializer:
        if init.name in replace:
            init.CopyFrom(numpy_helper.from_array(replace[init.name], init.name))
    norm = next(n for n in model.graph.node if n.op_type == "LayerNormalization")
    del norm.attribute[:]
    norm.attribute.extend([helper.make_attribute("axis", -1), helper.make_attribute("epsilon", epsilon)])
    return model, u


def test_scores_of_a_tiny_epsilon_and_tiny_rows_keep_the_unfused_softmax():
    model, u = _model(1e-45)
    loaded = nn_core.load_proto(model)
    assert any("LayerNormalization+MatMul+Add+Reshape" in op for op in loaded.plan_ops)
    a = np.broadcast_to((u * np.sqrt(24) * 1e-22).astype(F32), (2, 16, 24)).copy()  # entries +-1e-22
    feeds = {"a": a, "b": np.zeros_like(a)}
    with np.errstate(all="ignore"):
        unfused = loaded.run_traced(feeds)[0]["y"]
        fast = loaded.run(feeds)["y"]
    assert np.isfinite(unfused).all()
    np.testing.assert_allclose(fast, unfused, rtol=1e-4, atol=1e-6)
