"""Issue 10's small digit models through the fast plan, with every batch-1 fusion they now take (dense layers
absorbing Softmax/LogSoftmax/Tanh, pooling runners, a residual Add+Relu, GlobalAveragePool+Flatten, nearest
Resize by repeats, an output Identity written by its producer): each equals the traced (unfused) graph within
float rounding, and two consecutive runs leave the first run's outputs as they were."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import nn_core

ROOT = Path(__file__).resolve().parent.parent
MODELS = [ROOT / "assets" / "lenet5.onnx", *sorted((ROOT / "tests" / "models").glob("*.onnx"))] + [
    ROOT / "tests" / "models" / "grad" / f"{name}.onnx"
    for name in ("resnet_l13", "unet_l13", "keras_nhwc_l12", "cnn_bn2d_l15", "lenet_avgpool_l10", "upsample_l13")]


@pytest.mark.parametrize("path", MODELS, ids=lambda p: p.stem)
def test_fast_plan_equals_the_traced_graph_and_keeps_earlier_outputs(path):
    model = nn_core.load(str(path))
    spec = model.inputs[0]
    shape = [1 if not isinstance(n, int) else n for n in spec.shape]
    rng = np.random.default_rng(len(path.stem))
    first_input = rng.random(shape, dtype=np.float32)
    first = model.run({spec.name: first_input})
    kept = {name: value.copy() for name, value in first.items()}
    second = model.run({spec.name: rng.random(shape, dtype=np.float32)})
    for name, value in first.items():
        np.testing.assert_array_equal(value, kept[name])  # the second run wrote elsewhere
        assert second[name] is not value and not np.shares_memory(second[name], value)
    traced, _ = model.run_traced({spec.name: first_input})
    for name, value in first.items():
        scale = max(float(np.abs(traced[name]).max()), 1.0)
        np.testing.assert_allclose(value, traced[name], rtol=1e-5, atol=1e-5 * scale)


def test_the_fusions_are_taken_in_these_models():
    labels = {label for path in MODELS for label in nn_core.load(str(path)).plan_ops}
    # (a dense head's layers are one DenseChain step: its label joins theirs)
    for fused in ("MatMul+Add+Softmax", "Gemm+Tanh", "Gemm+LogSoftmax", "Add+Relu", "GlobalAveragePool+Flatten",
                  "Sigmoid+AveragePool", "MatMul+Add+Relu+MatMul"):
        assert any(f"+{fused}+" in f"+{label}+" for label in labels), (fused, sorted(labels))
    assert "Identity" not in nn_core.load(str(ROOT / "tests" / "models" / "keras_nhwc_unsorted.onnx")).plan_ops
