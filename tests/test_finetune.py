"""nn_core.finetune: a new model that reads a few given examples as labelled, the original untouched, refusals."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from onnx import helper

import nn_core
from nn_core.builder import GraphBuilder
from nn_core.ops.registry import Op, register

ROOT = Path(__file__).resolve().parent.parent
BUNDLED = ROOT / "assets" / "lenet5.onnx"
SAMPLE = Path(__file__).parent / "data" / "mnist_sample.npz"


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray]:
    with np.load(SAMPLE) as data:
        return (data["test_images"].astype(np.float32) / 255)[:, None], data["test_labels"].astype(np.int64)


@pytest.fixture(scope="module")
def bundled() -> nn_core.Model:
    return nn_core.load(str(BUNDLED))


def _predict(model: nn_core.Model, x: np.ndarray) -> np.ndarray:
    return model.run({model.inputs[0].name: x})[model.outputs[0].name].reshape(len(x), -1).argmax(axis=1)


def test_finetune_teaches_new_labels_and_leaves_the_original_untouched(bundled, digits):
    images, labels = digits
    # four digits given labels the model does not read them as: one person's odd way of writing them
    x = images[:4]
    wanted = (labels[:4] + 3) % 10
    weights = {k: np.array(v) for k, v in bundled.initializers.items()}
    before = _predict(bundled, images)
    tuned = nn_core.finetune(bundled, x, wanted, trainable="all", steps=150, lr=1e-3, examples_per_batch=16,
                              rivals=0.0)  # relabelling clean digits: replaying their true class would fight it
    assert isinstance(tuned, nn_core.Model) and tuned is not bundled
    np.testing.assert_array_equal(_predict(tuned, x), wanted)
    # the original: same weights, same predictions, same metadata
    for name, value in bundled.initializers.items():
        np.testing.assert_array_equal(value, weights[name])
    np.testing.assert_array_equal(_predict(bundled, images), before)
    assert "finetuned" not in bundled.metadata
    record = json.loads(tuned.metadata["finetuned"])
    assert record["examples"] == 4 and record["steps"] >= 1 and record["replay"] > 0
    assert tuned.metadata["output_kind"] == "logits" and tuned.metadata["labels"] == bundled.metadata["labels"]
    # the replayed digits keep it reading everyone else's (the shipped test digits here)
    # (relabelling clean digits fights the replayed ones: some cost is expected, a collapse is not)
    assert (_predict(tuned, images[4:]) == labels[4:]).mean() > 0.8


def test_finetune_of_examples_already_read_right_changes_nothing(bundled, digits):
    images, labels = digits
    tuned = nn_core.finetune(bundled, images[:10], labels[:10])
    assert json.loads(tuned.metadata["finetuned"])["steps"] == 0
    for name, value in bundled.initializers.items():
        np.testing.assert_array_equal(tuned.initializers[name], value)


def test_finetune_without_early_stopping_runs_its_whole_step_budget(bundled, digits):
    # its speed is measured by benchmarks/finetune_writers.py against the same run's references, not timed here
    images, labels = digits
    wanted = (labels[:10] + 1) % 10  # every example wrong
    tuned = nn_core.finetune(bundled, images[:10], wanted, early_stopping=False)
    assert json.loads(tuned.metadata["finetuned"])["steps"] == 80


def test_finetune_saved_model_round_trips(bundled, digits, tmp_path):
    images, labels = digits
    tuned = nn_core.finetune(bundled, images[:3], (labels[:3] + 5) % 10, steps=5, early_stopping=False)
    path = tmp_path / "mine.onnx"
    tuned.save(path)
    loaded = nn_core.load(str(path))
    np.testing.assert_allclose(loaded.run({"input": images[:20]})["logits"],
                               tuned.run({"input": images[:20]})["logits"], rtol=1e-5, atol=1e-5)
    assert "finetuned" in loaded.metadata


def test_finetune_an_nhwc_keras_model_with_a_softmax_output(digits):
    """Examples in the model's own layout: a Keras NHWC export ending in Softmax -> Identity."""
    from nn_core.interface import ModelAdapter

    model = nn_core.load(str(Path(__file__).parent / "models" / "keras_nhwc_unsorted.onnx"))
    adapter = ModelAdapter(model)
    images, labels = digits
    x = adapter.make_batch_feeds(images[:3, 0], adapter.scaling)[adapter.layout.input_name]
    assert x.shape == (3, 28, 28, 1)
    wanted = (labels[:3] + 2) % 10
    tuned = nn_core.finetune(model, x, wanted, trainable="all", steps=100, lr=1e-2, replay=False, anchor=0.0)
    np.testing.assert_array_equal(_predict(tuned, x), wanted)


def test_finetune_a_small_non_image_classifier():
    b = GraphBuilder(input=("features", [None, 5]), seed=0)
    proto = b.build([b.gemm(b.relu(b.gemm(b.input, 8)), 3, init="glorot")])
    model = nn_core.load_proto(proto)
    x = np.random.default_rng(0).normal(size=(6, 5)).astype(np.float32)
    labels = np.array([0, 1, 2, 0, 1, 2])
    tuned = nn_core.finetune(model, x, labels, trainable="all", steps=300, lr=1e-2, anchor=0.0)
    np.testing.assert_array_equal(_predict(tuned, x), labels)


def test_finetune_refuses_a_fixed_batch_model(digits):
    model = nn_core.load(str(Path(__file__).parent / "models" / "torch_logsoftmax_mnist_norm.onnx"))
    x = np.zeros((3, 1, 28, 28), np.float32)
    with pytest.raises(nn_core.ModelError, match="fixed batch"):
        nn_core.finetune(model, x, np.array([1, 2, 3]))


@register("NoGradientForTests", 1, domain="test.finetune")
class _NoGradient(Op):
    def run(self, x):
        return x


def _model(nodes, inits, out_dims, doc="") -> nn_core.Model:
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", 1, ["N", 4])],
                              [helper.make_tensor_value_info("y", 1, out_dims)], inits)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                    helper.make_opsetid("test.finetune", 1)])
    proto.ir_version = 8
    return nn_core.load_proto(proto, "refused.onnx")


def test_finetune_refuses_what_it_cannot_train():
    x, labels = np.ones((2, 4), np.float32), np.array([0, 1])
    # an op without a gradient rule between the loss and the weights
    b = GraphBuilder(input=("x", [None, 4]), seed=0)
    hidden = b.gemm(b.input, 4)
    proto = b.build([b.gemm(hidden, 3)])
    proto.graph.node.insert(1, helper.make_node("NoGradientForTests", [hidden], ["opaque"], name="opaque",
                                                domain="test.finetune"))
    proto.graph.node[2].input[0] = "opaque"
    proto.opset_import.append(helper.make_opsetid("test.finetune", 1))
    model = nn_core.load_proto(proto, "opaque.onnx")
    with pytest.raises(nn_core.ModelError, match="opaque"):
        nn_core.finetune(model, x, labels, trainable="all")
    # no floating-point weights at all
    with pytest.raises(nn_core.ModelError, match="weights"):
        nn_core.finetune(_model([helper.make_node("Relu", ["x"], ["y"])], [], ["N", 4]), x, labels)
    # an output that is not a class vector
    w = helper.make_tensor("w", 1, [4, 1], np.ones(4, np.float32))
    with pytest.raises(nn_core.ModelError, match="class vector"):
        nn_core.finetune(_model([helper.make_node("MatMul", ["x", "w"], ["y"])], [w], ["N", 1]), x, labels)


def test_rival_replay_weights_the_classes_the_examples_are_mistaken_for():
    from nn_core.finetune import _rival_weights

    by_class = [np.arange(3)] * 10
    probs = np.full((2, 10), 0.01)
    probs[0, 7], probs[0, 1] = 0.8, 0.11  # a "1" read as 7: 7s are replayed
    probs[1, 4], probs[1, 9] = 0.95, 0.96 - 0.95  # a "4" read right: it hardly votes
    weights = _rival_weights(probs, np.array([1, 4]), by_class)
    assert weights.argmax() == 7 and weights[7] > 0.9 and weights.sum() == pytest.approx(1.0)
    assert _rival_weights(np.eye(10)[[1, 4]], np.array([1, 4]), by_class) is None  # nothing mistaken
