"""MNIST reading, a short training run, the ONNX export and the train/eval commands, on the shipped digits."""

from __future__ import annotations

import argparse
import gzip
import json
from pathlib import Path

import numpy as np
import onnx
import pytest

import nn_core
from nn_core import evaluate, train
from nn_core.data import batches, load_mnist, read_idx, to_input
from nn_core.errors import ModelError, UnsupportedOperatorError
from nn_core.export import from_onnx, to_onnx
from nn_core.layers import (
    AvgPool2d,
    BatchNorm2d,
    Conv2d,
    Dropout,
    Flatten,
    Linear,
    MaxPool2d,
    ReLU,
    Sequential,
    Sigmoid,
    SoftmaxCrossEntropy,
    Tanh,
)

SAMPLE = Path(__file__).parent / "data" / "mnist_sample.npz"


@pytest.fixture(scope="module")
def sample() -> dict[str, np.ndarray]:
    with np.load(SAMPLE) as data:
        return {name: data[name] for name in data.files}


def write_idx(path: Path, array: np.ndarray, compress: bool = True) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + np.array(array.shape, ">i4").tobytes()
    payload = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(payload) if compress else payload)


@pytest.fixture()
def mnist_dir(tmp_path: Path, sample) -> Path:
    """The shipped digits laid out as MNIST IDX files (train gzip-compressed, t10k raw)."""
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", sample["train_images"])
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", sample["train_labels"])
    write_idx(tmp_path / "t10k-images-idx3-ubyte", sample["test_images"][:300], compress=False)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", sample["test_labels"][:300], compress=False)
    return tmp_path


def test_idx_files_read_back_exactly(mnist_dir, sample):
    images, labels = load_mnist(mnist_dir, "train")
    np.testing.assert_array_equal(images, sample["train_images"])
    np.testing.assert_array_equal(labels, sample["train_labels"])
    images, labels = load_mnist(mnist_dir, "t10k")
    assert images.shape == (300, 28, 28) and labels.shape == (300,)


def test_idx_reader_rejects_bad_files(tmp_path):
    bad_magic = tmp_path / "bad.idx"
    bad_magic.write_bytes(b"\x12\x34\x08\x01" + b"\x00" * 8)
    with pytest.raises(ModelError, match="bad.idx"):
        read_idx(bad_magic)
    truncated = tmp_path / "short.idx"
    truncated.write_bytes(bytes([0, 0, 8, 1]) + np.array([10], ">i4").tobytes() + b"\x00" * 5)
    with pytest.raises(ModelError, match="10"):
        read_idx(truncated)
    with pytest.raises(ModelError, match="t10k"):
        load_mnist(tmp_path, "t10k")


def test_batches_cover_every_index_once():
    seen = np.concatenate(list(batches(103, 10, np.random.default_rng(0))))
    assert sorted(seen.tolist()) == list(range(103))
    assert [len(b) for b in batches(25, 10)] == [10, 10, 5]


def _args(**overrides) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    train.add_arguments(parser)
    args = parser.parse_args(["--quiet"])
    args.lr = 0.05
    for key, value in overrides.items():
        setattr(args, key, value)
    return args


def _mean_loss(model: Sequential, images: np.ndarray, labels: np.ndarray) -> float:
    return SoftmaxCrossEntropy().forward(model.predict(images), labels)


def test_short_training_run_lowers_the_loss(sample):
    images = to_input(sample["train_images"])
    labels = sample["train_labels"].astype(np.int64)
    args = _args(epochs=4, batch_size=32, warmup_epochs=0.0, no_augment=True)
    untrained = train.build_lenet5(np.random.default_rng(np.random.SeedSequence(args.seed).spawn(3)[0]))
    result = train.fit(args, images, labels)
    before, after = _mean_loss(untrained, images, labels), _mean_loss(result.model, images, labels)
    assert after < 0.5 * before
    losses = [record["loss"] for record in result.history]
    assert losses[-1] < losses[0]
    # Generalises a little even from 400 digits: far above chance on unseen test digits.
    assert train.accuracy(result.model, to_input(sample["test_images"]), sample["test_labels"]) > 0.6
    assert result.images == 4 * len(images) and result.images_per_second > 0


def _all_layers_model(rng: np.random.Generator) -> Sequential:
    """One of every exportable layer, with batch-norm statistics that are not the identity."""
    model = Sequential(
        Conv2d(1, 4, 5, padding=2, rng=rng), BatchNorm2d(4), ReLU(), MaxPool2d(2),
        Conv2d(4, 6, 3, stride=2, padding=1, rng=rng), BatchNorm2d(6), Tanh(), BatchNorm2d(6),
        AvgPool2d(2), Sigmoid(), Flatten(), Linear(6 * 3 * 3, 12, rng=rng), ReLU(), Dropout(0.5, rng=rng),
        Linear(12, 10, rng=rng),
    )
    for layer in model:
        if isinstance(layer, BatchNorm2d):
            layer.gamma.value[:] = rng.uniform(0.5, 1.5, layer.channels)
            layer.beta.value[:] = rng.normal(size=layer.channels)
            layer.running_mean[:] = rng.normal(size=layer.channels)
            layer.running_var[:] = rng.uniform(0.5, 2.0, layer.channels)
    return model


def test_export_round_trips_through_onnxruntime_and_the_engine(tmp_path, sample):
    ort = pytest.importorskip("onnxruntime")
    model = _all_layers_model(np.random.default_rng(12)).eval()
    proto = to_onnx(model, metadata={"output_kind": "logits"}, doc_string="test model")
    onnx.checker.check_model(proto, full_check=True)
    assert [n.op_type for n in proto.graph.node].count("BatchNormalization") == 1  # the other two are folded
    assert "Dropout" not in [n.op_type for n in proto.graph.node]
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "N"
    path = tmp_path / "model.onnx"
    onnx.save_model(proto, str(path))

    x = to_input(sample["test_images"][:64])
    expected = model.forward(x, training=False)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(session.run(["logits"], {"input": x})[0], expected, rtol=1e-4, atol=1e-5)
    loaded = nn_core.load(str(path))
    np.testing.assert_allclose(loaded.run({"input": x})["logits"], expected, rtol=1e-4, atol=1e-5)
    assert loaded.metadata["output_kind"] == "logits"


def test_train_and_eval_commands_end_to_end(mnist_dir, tmp_path, capsys):
    out = tmp_path / "lenet.onnx"
    args = _args(data=str(mnist_dir), out=str(out), epochs=1, batch_size=50, lr=None)
    assert train.main(args) == 0
    model = nn_core.load(str(out))
    meta = model.metadata
    assert json.loads(meta["labels"]) == [str(d) for d in range(10)]
    assert meta["input_scale"] == "01" and meta["input_layout"] == "nchw" and meta["output_kind"] == "logits"
    training = json.loads(meta["training"])
    for key in ("data", "epochs", "augmentation", "seed", "command", "seconds", "images_per_second",
                "test_accuracy"):
        assert key in training
    assert training["epochs"] == 1 and training["images_per_second"] > 0
    assert float(meta["test_accuracy"]) == pytest.approx(training["test_accuracy"])
    assert [n.op_type for n in model.nodes] == ["Conv", "Relu", "MaxPool", "Conv", "Relu", "MaxPool", "Flatten",
                                                "Gemm", "Relu", "Gemm", "Relu", "Gemm"]
    capsys.readouterr()

    parser = argparse.ArgumentParser()
    evaluate.add_arguments(parser)
    assert evaluate.main(parser.parse_args([str(out), "--data", str(mnist_dir)])) == 0
    printed = capsys.readouterr().out
    assert f"accuracy {meta['test_accuracy']} %" in printed  # the same 300 digits, scored through the engine
    matrix_rows = [line for line in printed.splitlines() if line.strip()[:1].isdigit()]
    assert len(matrix_rows) == 10
    assert sum(int(v) for row in matrix_rows for v in row.split()[1:11]) == 300


def test_confusion_matrix_counts_true_against_predicted():
    counts = evaluate.confusion_matrix(np.array([0, 1, 1, 2]), np.array([0, 1, 2, 2]), classes=3)
    np.testing.assert_array_equal(counts, [[1, 0, 0], [0, 1, 1], [0, 0, 1]])


def test_exported_model_imports_back_into_trainable_layers(sample):
    original = _all_layers_model(np.random.default_rng(13)).eval()
    imported = from_onnx(to_onnx(original))
    x = to_input(sample["test_images"][:16])
    np.testing.assert_allclose(imported.forward(x), original.forward(x, training=False), rtol=1e-4, atol=1e-5)
    assert not any(isinstance(layer, Dropout) for layer in imported)


def test_saliency_of_an_imported_model_matches_finite_differences(sample):
    """Back-propagation through a model read from ONNX: gradient of one logit with respect to the pixels."""
    rng = np.random.default_rng(14)
    model = from_onnx(to_onnx(_all_layers_model(rng).eval())).astype(np.float64)
    # A little noise breaks the exact ties of max-pooling over blank background, where the gradient is a kink.
    x = to_input(sample["test_images"][:1]).astype(np.float64) + rng.normal(0, 0.01, (1, 1, 28, 28))
    target = 3
    model.forward(x)
    one_hot = np.zeros((1, 10))
    one_hot[0, target] = 1.0
    saliency = model.backward(one_hot)
    assert saliency.shape == x.shape
    for pixel in [(0, 0, 14, 14), (0, 0, 10, 17), (0, 0, 20, 8)]:
        eps = 1e-6
        x[pixel] += eps
        up = model.forward(x)[0, target]
        x[pixel] -= 2 * eps
        down = model.forward(x)[0, target]
        x[pixel] += eps
        assert saliency[pixel] == pytest.approx((up - down) / (2 * eps), rel=1e-4, abs=1e-9)


def test_import_rejects_graphs_that_are_not_plain_chains():
    model = to_onnx(Sequential(Flatten(), Linear(784, 10)))
    softmax = onnx.helper.make_node("Softmax", ["logits"], ["probs"], name="softmax")
    model.graph.node.append(softmax)
    with pytest.raises(UnsupportedOperatorError, match="softmax"):
        from_onnx(model)
    branchy = to_onnx(Sequential(Flatten(), Linear(784, 10)))
    branchy.graph.node.append(onnx.helper.make_node("Add", ["logits", "input"], ["sum"], name="skip"))
    with pytest.raises(UnsupportedOperatorError, match="single chain"):
        from_onnx(branchy)
