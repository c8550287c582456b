"""nn_core.interface: a 28x28 drawing fitted to any model's input, and its scores turned into probabilities."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import nn_core
from nn_core.errors import ModelError
from nn_core.interface import (
    SCALINGS,
    ModelAdapter,
    auto_detect_scaling,
    detect_layout,
    detect_output_kind,
    folded_calibration,
    load_samples,
    parse_labels,
    resolve_scaling,
    scale_pixels,
    to_probabilities,
)

MODELS = Path(__file__).resolve().parent / "models"
RNG = np.random.default_rng(7)


def identity_model(shape, elem_type=TensorProto.FLOAT, metadata=None) -> nn_core.Model:
    """A real one-node model that returns its input: shows exactly what the adapter feeds."""
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "identity",
                              [helper.make_tensor_value_info("x", elem_type, shape)],
                              [helper.make_tensor_value_info("y", elem_type, shape)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    for key, value in (metadata or {}).items():
        model.metadata_props.add(key=key, value=value)
    return nn_core.load_proto(model, "identity")


def digit() -> np.ndarray:
    image = np.zeros((28, 28), np.float32)
    image[4:24, 12:16] = 1.0  # a "1"
    image[4:7, 9:12] = 0.5
    return image


@pytest.mark.parametrize("shape, kind, feed, size, channels, dynamic", [
    (["N", 1, 28, 28], "nchw", (1, 1, 28, 28), 28, 1, True),
    ([10, 1, 28, 28], "nchw", (10, 1, 28, 28), 28, 1, False),
    (["N", 28, 28, 1], "nhwc", (1, 28, 28, 1), 28, 1, True),
    ([None, 3, 28, 28], "nchw", (1, 3, 28, 28), 28, 3, True),
    (["batch", 28, 28], "nhw", (1, 28, 28), 28, 1, True),
    ([1, 28, 28], "nhw", (1, 28, 28), 28, 1, False),
    (["N", 784], "flat", (1, 784), 28, 1, True),
    ([1, 196], "flat", (1, 196), 14, 1, False),
    ([1, 1, 784], "flat", (1, 1, 784), 28, 1, False),
    ([784], "flat", (784,), 28, 1, False),
    ([28, 28], "hw", (28, 28), 28, 1, False),
    ([10, 1, 32, 32], "nchw", (10, 1, 32, 32), 32, 1, False),
    ([3, 28, 28], "chw", (3, 28, 28), 28, 3, False),
])
def test_layouts_are_recognised(shape, kind, feed, size, channels, dynamic):
    layout = detect_layout("x", shape, np.float32)
    assert (layout.kind, layout.feed_shape, layout.height, layout.channels, layout.dynamic_batch) == \
        (kind, feed, size, channels, dynamic)


@pytest.mark.parametrize("shape, dtype", [(["N", 3], np.float32), (["N", 10, 5], np.float32),
                                          ([1, 1, 4, 4], np.float32), ([1, 5, 28, 28], np.float32),
                                          (["N", 784], np.str_), ([1, 2, 3, 4, 5], np.float32)])
def test_non_image_inputs_are_rejected_with_the_input_named(shape, dtype):
    with pytest.raises(ModelError, match="'features'"):
        detect_layout("features", shape, dtype)


def test_nchw_nhwc_and_flat_feeds_hold_the_same_picture():
    image = digit()
    fed = {}
    for name, shape in {"nchw": [1, 1, 28, 28], "nhwc": ["N", 28, 28, 1], "nhw": ["N", 28, 28],
                        "flat": ["N", 784], "hw": [28, 28], "flat3d": [1, 1, 784]}.items():
        adapter = ModelAdapter(identity_model(shape))
        fed[name] = adapter.model.run(adapter.make_feeds(image))["y"]
    np.testing.assert_array_equal(fed["nchw"][0, 0], image)
    np.testing.assert_array_equal(fed["nhwc"][0, :, :, 0], image)
    np.testing.assert_array_equal(fed["nhw"][0], image)
    np.testing.assert_array_equal(fed["flat"].reshape(28, 28), image)
    np.testing.assert_array_equal(fed["hw"], image)
    np.testing.assert_array_equal(fed["flat3d"].reshape(28, 28), image)


def test_fixed_batch_gets_copies_and_rgb_gets_grey_in_every_channel():
    image = digit()
    batch = ModelAdapter(identity_model([4, 1, 28, 28]))
    fed = batch.make_feeds(image)["x"]
    assert fed.shape == (4, 1, 28, 28) and all(np.array_equal(fed[i, 0], image) for i in range(4))
    rgb = ModelAdapter(identity_model(["N", 28, 28, 3]))
    fed = rgb.make_feeds(image)["x"]
    assert fed.shape == (1, 28, 28, 3) and all(np.array_equal(fed[0, :, :, c], image) for c in range(3))


def test_32x32_is_padded_like_lenet5_and_14x14_is_area_resampled():
    image = digit()
    padded = ModelAdapter(identity_model([1, 1, 32, 32])).make_feeds(image)["x"][0, 0]
    np.testing.assert_array_equal(padded[2:30, 2:30], image)
    assert padded.sum() == pytest.approx(image.sum())
    small = ModelAdapter(identity_model([1, 196])).make_feeds(image)["x"].reshape(14, 14)
    # a 2x box filter keeps the mean brightness and the stroke's place
    assert small.mean() == pytest.approx(image.mean(), rel=1e-5)
    assert small[2:12, 6:8].min() > 0.9 and small[:, :4].max() == 0


def test_dtypes_follow_the_model():
    image = digit()
    double = ModelAdapter(identity_model([1, 1, 28, 28], TensorProto.DOUBLE)).make_feeds(image)["x"]
    assert double.dtype == np.float64
    raw = ModelAdapter(identity_model([1, 784], TensorProto.UINT8))
    fed = raw.make_feeds(image, scaling="255")["x"]
    assert fed.dtype == np.uint8 and fed.max() == 255 and fed.reshape(28, 28)[5, 10] == 128


@pytest.mark.parametrize("code, ink, background", [("01", 1.0, 0.0), ("255", 255.0, 0.0),
                                                   ("mnist_norm", (1 - 0.1307) / 0.3081, -0.1307 / 0.3081),
                                                   ("m11", 1.0, -1.0), ("inv01", 0.0, 1.0)])
def test_scaling_codes(code, ink, background):
    values = scale_pixels(np.array([1.0, 0.0]), code)
    assert values == pytest.approx([ink, background])


def test_unknown_scaling_is_an_error():
    with pytest.raises(ValueError, match="bogus"):
        scale_pixels(np.zeros(3), "bogus")


def test_scaling_comes_from_metadata_then_memory_then_default():
    assert resolve_scaling({"input_scale": "m11"}, "255") == ("m11", "metadata")
    assert resolve_scaling({"input_scale": "nonsense"}, "255") == ("255", "remembered")
    assert resolve_scaling({}, None) == ("01", "default")
    adapter = ModelAdapter(identity_model([1, 1, 28, 28], metadata={"input_scale": "mnist_norm"}), "255")
    assert (adapter.scaling, adapter.scaling_source) == ("mnist_norm", "metadata")


def test_output_kinds_are_detected():
    logits = RNG.normal(size=10) * 5
    probs = np.exp(logits) / np.exp(logits).sum()
    assert detect_output_kind(probs) == "probabilities"
    assert detect_output_kind(np.log(probs)) == "log_probabilities"
    assert detect_output_kind(logits) == "logits"
    assert detect_output_kind(np.full(10, 0.9)) == "scores01"  # independent sigmoids


def test_every_kind_becomes_the_same_distribution():
    logits = RNG.normal(size=10) * 5
    probs = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    for scores in (logits, probs, np.log(probs), logits + 1000.0):
        np.testing.assert_allclose(to_probabilities(scores), probs, rtol=1e-6, atol=1e-12)


def test_extreme_log_probabilities_stay_finite():
    scores = np.array([-145.0, 0.0, -200.0, -1e-7])
    probs = to_probabilities(scores)
    assert np.all(np.isfinite(probs)) and probs.sum() == pytest.approx(1.0)


def test_declared_output_kind_wins_over_detection():
    # values that look like probabilities, declared as logits: must be soft-maxed
    scores = np.array([0.7, 0.2, 0.1])
    assert to_probabilities(scores, "logits") == pytest.approx(np.exp(scores) / np.exp(scores).sum())


def test_labels_from_metadata_or_counting():
    assert parse_labels({"labels": '["zero", "one"]'}) == ["zero", "one"]
    assert parse_labels({"labels": "a, b, c"}) == ["a", "b", "c"]
    assert parse_labels({}) is None
    adapter = ModelAdapter(identity_model([1, 1, 28, 28], metadata={"labels": '["a", "b"]'}))
    assert adapter.labels(2) == ["a", "b"]
    assert adapter.labels(3) == ["0", "1", "2"]  # labels that do not match the output are ignored


def test_deeply_nested_metadata_json_is_ignored_not_fatal():
    # a hostile file's metadata: json's parser would raise RecursionError and the model could not open
    nested = "[" * 100_000
    assert parse_labels({"labels": nested}) is None
    assert folded_calibration({"calibration": nested}) is None
    adapter = ModelAdapter(identity_model([1, 1, 28, 28], metadata={"labels": nested, "calibration": nested}))
    assert adapter.labels(2) == ["0", "1"]


def test_the_class_score_output_is_picked_among_several():
    adapter = ModelAdapter(identity_model([1, 1, 28, 28]))
    outputs = {"label": np.array(["7"]), "hidden": RNG.normal(size=(1, 1568)).astype(np.float32),
               "scores": RNG.normal(size=(1, 10)).astype(np.float32)}
    assert adapter.scores(outputs).shape == (10,)
    assert adapter.output_name == "scores"


def template_classifier(batch: int, side: int) -> onnx.ModelProto:
    """A 10-class "classifier" whose class k is a Conv filter equal to sample digit k: fixed batch, side x side."""
    images, labels = load_samples()
    weights = np.zeros((10, 1, side, side), np.float32)
    pad = (side - 28) // 2
    for k in range(10):
        template = images[labels == k][0]
        weights[k, 0, pad:pad + 28, pad:pad + 28] = template - template.mean()
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["c"]), helper.make_node("Flatten", ["c"], ["scores"])],
        "templates", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 1, side, side])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, [batch, 10])],
        [numpy_helper.from_array(weights, "w")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


@pytest.mark.parametrize("batch", [3, "N"])
def test_padded_fixed_batch_model_end_to_end(batch):
    model = nn_core.load_proto(template_classifier(batch, 32), "templates")
    adapter = ModelAdapter(model)
    images, labels = load_samples()
    for k in (1, 4, 7):
        probs = adapter.predict(images[labels == k][0])
        assert probs.shape == (10,) and int(np.argmax(probs)) == k
    many = adapter.predict_many(images[:12], "01")
    assert many.shape == (12, 10)
    np.testing.assert_allclose(many[3], adapter.predict(images[3]), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("file, expected", [("torch_logsoftmax_mnist_norm.onnx", "mnist_norm"),
                                            ("torch_avgpool_m11.onnx", "m11"),
                                            ("keras_nhwc_unsorted.onnx", "01")])
def test_auto_detect_finds_the_scaling_each_model_was_trained_with(file, expected):
    model = nn_core.load(MODELS / file)
    images, labels = load_samples()
    subset = np.concatenate([np.nonzero(labels == k)[0][:3] for k in range(10)])  # 30 digits keep this quick
    report = auto_detect_scaling(model, samples=(images[subset], labels[subset]))
    assert report.best == expected
    assert set(report.accuracy) == set(SCALINGS) and report.samples == 30
    assert report.accuracy[expected] >= 0.85
    assert report.accuracy["inv01"] < 0.5  # an inverted image is not something these models can read


def test_samples_are_balanced_mnist_digits():
    images, labels = load_samples()
    assert images.shape == (50, 28, 28) and images.dtype == np.float32
    assert 0.0 == images.min() and images.max() == 1.0
    assert np.bincount(labels, minlength=10).tolist() == [5] * 10
