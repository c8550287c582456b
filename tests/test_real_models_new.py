"""Real models exported by torch (tools/export_new_models.py) run by nn_core and matched against the outputs
onnxruntime gave on the same file and inputs (stored beside each model; the test imports neither torch nor
onnxruntime)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import nn_core

MODELS = Path(__file__).resolve().parent / "models" / "new"

# model -> the operators it exists to exercise
EXPECTED_OPS = {
    "stroke_lstm": {"LSTM"},
    "stn_mnist": {"AffineGrid", "GridSample"},
    "tiny_yolo": {"NonMaxSuppression", "GatherND"},
    "transformer23": {"Attention", "RMSNormalization"},
}


def _reference(name: str) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    with np.load(MODELS / f"{name}.npz") as data:
        feeds = {k[3:]: data[k] for k in data.files if k.startswith("in_")}
        outputs = {k[4:]: data[k] for k in data.files if k.startswith("out_")}
    return feeds, outputs


@pytest.mark.parametrize("name", sorted(EXPECTED_OPS))
def test_real_model_matches_onnxruntime(name):
    model = nn_core.load(MODELS / f"{name}.onnx")
    assert EXPECTED_OPS[name] <= set(model.op_counts()), f"{name} no longer exercises {EXPECTED_OPS[name]}"
    feeds, want = _reference(name)
    got = model.run(feeds)
    assert set(got) == set(want)
    for key, expected in want.items():
        assert got[key].shape == expected.shape, key
        assert got[key].dtype == expected.dtype, key
        if expected.dtype.kind in "iu":  # selected box indices: exactly the same boxes, in the same order
            np.testing.assert_array_equal(got[key], expected)
        else:
            np.testing.assert_allclose(got[key], expected, rtol=1e-4, atol=1e-5, err_msg=key)


def test_stroke_lstm_takes_any_batch_and_the_traced_run_agrees():
    model = nn_core.load(MODELS / "stroke_lstm.onnx")
    feeds, want = _reference("stroke_lstm")
    points = feeds["points"]
    single = model.run({"points": points[:, :1]})["logits"]
    np.testing.assert_allclose(single, want["logits"][:1], rtol=1e-4, atol=1e-5)
    outputs, records = model.run_traced({"points": points})
    np.testing.assert_allclose(outputs["logits"], want["logits"], rtol=1e-4, atol=1e-5)
    assert any(r.op_type == "LSTM" for r in records)


def test_detector_keeps_boxes_that_do_not_overlap_much():
    model = nn_core.load(MODELS / "tiny_yolo.onnx")
    feeds, _ = _reference("tiny_yolo")
    got = model.run(feeds)
    selected, boxes = got["selected"], got["boxes"]
    assert len(selected) > 0
    for (b, c, i) in selected:
        for (b2, c2, j) in selected:
            if (b, c) == (b2, c2) and i < j:
                y1, x1 = np.maximum(boxes[b, i, :2], boxes[b, j, :2])
                y2, x2 = np.minimum(boxes[b, i, 2:], boxes[b, j, 2:])
                inter = max(y2 - y1, 0) * max(x2 - x1, 0)
                area_i, area_j = (np.prod(boxes[b, k, 2:] - boxes[b, k, :2]) for k in (i, j))
                assert inter / (area_i + area_j - inter) <= 0.45 + 1e-6
