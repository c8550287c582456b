"""Models outside the digit world: ImageNet-size topologies from the onnx wheel, with seeded random weights."""

from __future__ import annotations

import sys

import numpy as np
import onnx
import pytest
from helpers import ROOT, ort_run

import nn_core

sys.path.insert(0, str(ROOT / "benchmarks"))
from light_models import light_model_path, materialize  # noqa: E402


@pytest.mark.parametrize("name", ["resnet50", "inception_v1", "squeezenet", "shufflenet"])
def test_imagenet_model_matches_onnxruntime(name, tmp_path):
    if not light_model_path(name).exists():
        pytest.skip(f"the onnx wheel has no light_{name}.onnx")
    proto = materialize(name, seed=3)
    path = tmp_path / f"{name}.onnx"
    onnx.save(proto, str(path))
    model = nn_core.load(path)
    spec = model.inputs[0]
    x = np.random.default_rng(0).random([d if isinstance(d, int) else 1 for d in spec.shape]).astype(np.float32)
    got = list(model.run({spec.name: x}).values())[0]
    want = ort_run(proto, {spec.name: x})[0]
    assert got.shape == want.shape
    scale = float(np.abs(want).max())
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-3 * scale)
    assert got.argmax() == want.argmax()
