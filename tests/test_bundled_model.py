"""The bundled assets/lenet5.onnx: a valid, documented model that reads MNIST digits well, through the engine."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

import nn_core

BUNDLED = Path(__file__).resolve().parent.parent / "assets" / "lenet5.onnx"
SAMPLE = Path(__file__).parent / "data" / "mnist_sample.npz"


@pytest.fixture(scope="module")
def model():
    return nn_core.load(str(BUNDLED))


@pytest.fixture(scope="module")
def test_digits() -> tuple[np.ndarray, np.ndarray]:
    with np.load(SAMPLE) as data:
        images = (data["test_images"].astype(np.float32) / 255)[:, None]
        return images, data["test_labels"].astype(np.int64)


def test_file_passes_the_full_onnx_check():
    proto = onnx.load(str(BUNDLED))
    onnx.checker.check_model(proto, full_check=True)
    assert proto.producer_name == "digitscope" and proto.producer_version
    assert proto.doc_string


def test_interface_is_nchw_images_in_and_ten_logits_out(model):
    (spec,) = model.inputs
    assert spec.name == "input" and list(spec.shape) == ["N", 1, 28, 28] and spec.dtype == np.float32
    (out,) = model.outputs
    assert out.name == "logits" and list(out.shape) == ["N", 10] and out.dtype == np.float32


def test_metadata_describes_input_output_and_training(model):
    meta = model.metadata
    assert json.loads(meta["labels"]) == [str(d) for d in range(10)]
    assert meta["input_scale"] == "01" and meta["input_layout"] == "nchw" and meta["output_kind"] == "logits"
    assert meta["input_description"]
    training = json.loads(meta["training"])
    assert training["data"].startswith("MNIST training set")
    assert training["command"].startswith("python -m nn_core train")
    assert training["epochs"] >= 1 and training["seconds"] > 0 and training["images_per_second"] > 0
    # The full 10,000-digit test accuracy recorded at training time (measured by `python -m nn_core eval`).
    assert float(meta["test_accuracy"]) == pytest.approx(training["test_accuracy"])
    assert float(meta["test_accuracy"]) >= 99.3


def test_reads_the_shipped_test_digits_through_the_engine(model, test_digits):
    images, labels = test_digits
    logits = model.run({"input": images})["logits"]
    accuracy = float((logits.argmax(axis=1) == labels).mean())
    assert accuracy >= 0.99, f"bundled model scores {100 * accuracy:.2f} % on the shipped test digits"


def test_engine_agrees_with_onnxruntime(model, test_digits):
    ort = pytest.importorskip("onnxruntime")
    images = test_digits[0][:200]
    session = ort.InferenceSession(str(BUNDLED), providers=["CPUExecutionProvider"])
    expected = session.run(["logits"], {"input": images})[0]
    np.testing.assert_allclose(model.run({"input": images})["logits"], expected, rtol=1e-4, atol=1e-4)
    single = model.run({"input": images[:1]})["logits"]
    np.testing.assert_allclose(single, expected[:1], rtol=1e-4, atol=1e-4)


def test_small_enough_for_fast_single_digit_inference(model, test_digits):
    """LeNet-5 shape (two conv stages, three dense layers) and under 2 M multiply-accumulates per digit."""
    weights = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(BUNDLED)).graph.initializer}
    _, records = model.run_traced({"input": test_digits[0][:1]})
    macs = 0
    for record in records:
        node = next(n for n in model.nodes if n.name == record.name)
        if record.op_type == "Conv":
            output = next(iter(record.outputs.values()))
            macs += output.size * weights[node.inputs[1]][0].size
        elif record.op_type == "Gemm":
            macs += weights[node.inputs[1]].size
    ops = [record.op_type for record in records]
    assert ops.count("Conv") == 2 and ops.count("Gemm") == 3 and ops.count("MaxPool") == 2
    assert 100_000 < macs < 2_000_000


def test_calibrated_by_a_temperature_folded_into_the_last_layer(model, test_digits):
    """Its probabilities mean what they say: a temperature fitted on held-out digits is folded into fc3 (the
    output stays logits; nothing downstream applies it again), and on the shipped test digits the expected
    calibration error is small."""
    from nn_core.evaluate import expected_calibration_error, softmax

    calibration = json.loads(model.metadata["calibration"])
    assert calibration["folded_into"] == "fc3" and calibration["temperature"] > 0
    assert "do not apply it again" in calibration["note"]
    images, labels = test_digits
    probabilities = softmax(model.run({"input": images})["logits"])
    assert expected_calibration_error(probabilities, labels) < 0.03
