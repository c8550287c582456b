"""Training is the same engine: the builder's LeNet, losses, optimizers, training mode, fit, save, the train/eval
commands and the augmentation, on the shipped digits (nothing here needs ../shared)."""

from __future__ import annotations

import argparse
import gzip
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

import nn_core
from nn_core import evaluate, train
from nn_core.augment import (
    AugmentConfig,
    add_handwriting_styles,
    affine_transform,
    augment_batch,
    centre_of_mass,
    dilate,
    draw_segments,
    erode,
)
from nn_core.builder import DIGIT_METADATA, GraphBuilder, lenet5
from nn_core.data import batches, load_mnist, load_replay, read_idx, to_input
from nn_core.errors import ModelError
from nn_core.losses import CrossEntropy, softmax_cross_entropy
from nn_core.optim import SGD, AdamW, CosineSchedule, StepSchedule, make_schedule
from nn_core.train import parameter_roles, select_parameters

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




# ----------------------------------------------------------------------------------------------------------------
# the builder


def test_builder_lenet_has_the_bundled_shape_metadata_and_runs(sample):
    proto = lenet5(seed=1)
    onnx.checker.check_model(proto, full_check=True)
    model = nn_core.load_proto(proto)
    assert [n.op_type for n in model.nodes] == ["Conv", "Relu", "MaxPool", "Conv", "Relu", "MaxPool", "Flatten",
                                                "Gemm", "Relu", "Gemm", "Relu", "Gemm"]
    assert {k: model.metadata[k] for k in DIGIT_METADATA} == DIGIT_METADATA
    assert model.parameter_count == 90_670
    (spec,) = model.inputs
    assert spec.name == "input" and list(spec.shape) == ["N", 1, 28, 28]
    assert model.outputs[0].name == "logits" and list(model.outputs[0].shape) == ["N", 10]
    x = to_input(sample["test_images"][:16])
    logits = model.run({"input": x})["logits"]
    assert logits.shape == (16, 10) and np.isfinite(logits).all() and logits.std() > 0.01
    ort = pytest.importorskip("onnxruntime")
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(session.run(None, {"input": x})[0], logits, rtol=1e-4, atol=1e-5)
    # seeded: the same seed gives the same weights, another seed others
    again = nn_core.load_proto(lenet5(seed=1)).initializers
    np.testing.assert_array_equal(again["conv1.weight"], model.initializers["conv1.weight"])
    other = nn_core.load_proto(lenet5(seed=2)).initializers
    assert not np.array_equal(other["conv1.weight"], model.initializers["conv1.weight"])
    # He initialisation: the first layer's weights have std sqrt(2 / fan_in)
    assert model.initializers["conv1.weight"].std() == pytest.approx(np.sqrt(2 / 25), rel=0.15)
    assert not model.initializers["fc1.bias"].any()


def test_builder_tracks_shapes_through_every_layer():
    b = GraphBuilder(input=("image", [None, 3, 32, 32]), seed=0)
    x = b.conv(b.input, 8, 3, strides=2, pads=1)
    assert b.shape(x) == [None, 8, 16, 16]
    x = b.leaky_relu(b.batch_norm(x))
    x = b.avg_pool(b.conv(x, 8, 3, pads=1, groups=8, bias=False), 2)
    assert b.shape(x) == [None, 8, 8, 8]
    x = b.flatten(b.global_avg_pool(x))
    x = b.log_softmax(b.gemm(b.dropout(b.tanh(x), 0.3), 5, init="glorot"))
    proto = b.build([x], {"output_kind": "log_probabilities"})
    model = nn_core.load_proto(proto)
    out = model.run({"image": np.random.default_rng(0).random((2, 3, 32, 32), np.float32)})
    assert next(iter(out.values())).shape == (2, 5)


# ----------------------------------------------------------------------------------------------------------------
# gradients of the built graph, losses


def test_lenet_vjp_matches_float64_finite_differences(sample):
    model = nn_core.load_proto(lenet5(seed=3, batchnorm=True, dtype=np.float64))
    rng = np.random.default_rng(4)
    # a little noise breaks the exact ties of max-pooling over blank background, where the gradient is a kink
    x = to_input(sample["test_images"][:3]).astype(np.float64) + rng.normal(0, 0.01, (3, 1, 28, 28))
    labels = sample["test_labels"][:3]
    loss = CrossEntropy(label_smoothing=0.1).bind(model)
    plan = model.gradient_plan(training=True)
    params = {name: np.array(value) for name, value in model.initializers.items()}

    def loss_at(p):
        return loss(plan.forward({"input": x}, p).values, labels)[0]

    tape = plan.forward({"input": x}, params)
    _, cotangents = loss(tape.values, labels)
    grads = plan.backward(tape, cotangents)
    checked = 0
    for name, count in (("conv1.weight", 3), ("conv1.bias", 2), ("bn1.weight", 2), ("bn2.bias", 2),
                        ("conv2.weight", 3), ("fc1.weight", 3), ("fc2.bias", 2), ("fc3.weight", 3)):
        for _ in range(count):
            index = tuple(int(rng.integers(0, d)) for d in params[name].shape)
            eps = 1e-6
            params[name][index] += eps
            up = loss_at(params)
            params[name][index] -= 2 * eps
            down = loss_at(params)
            params[name][index] += eps
            assert grads[name][index] == pytest.approx((up - down) / (2 * eps), rel=1e-4, abs=1e-8), (name, index)
            checked += 1
    assert checked == 20
    # Model.vjp, inference mode: the same gradient of a logit's sum as the plan's
    vjp = model.vjp({"input": x}, {"logits": np.eye(10)[labels]})
    assert set(vjp) >= {"input", "conv1.weight", "fc3.bias"} and vjp["input"].shape == x.shape


def test_loss_gradient_label_smoothing_and_stability():
    rng = np.random.default_rng(5)
    logits, labels = rng.normal(size=(4, 10)), np.array([1, 0, 9, 3])
    loss, grad = softmax_cross_entropy(logits, labels, 0.1)
    numeric = np.zeros_like(logits)
    for index in np.ndindex(logits.shape):
        bumped = logits.copy()
        bumped[index] += 1e-6
        numeric[index] = (softmax_cross_entropy(bumped, labels, 0.1)[0] - loss) / 1e-6
    np.testing.assert_allclose(grad, numeric, atol=1e-5)
    naive = -np.mean(np.log(np.exp(logits) / np.exp(logits).sum(1, keepdims=True))[np.arange(4), labels])
    assert softmax_cross_entropy(logits, labels)[0] == pytest.approx(naive)
    huge, _ = softmax_cross_entropy(np.array([[1e4, -1e4, 0.0]]), np.array([1]))
    assert np.isfinite(huge) and huge == pytest.approx(2e4)


def _classifier(tail: str | None, kind: str | None) -> nn_core.Model:
    b = GraphBuilder(input=("x", [None, 6]), seed=6, dtype=np.float64)
    out = b.gemm(b.input, 4, init="glorot")
    if tail == "Softmax":
        out = b.softmax(out)
    elif tail == "LogSoftmax":
        out = b.log_softmax(out)
    return nn_core.load_proto(b.build([out], {"output_kind": kind} if kind else {}))


@pytest.mark.parametrize("tail, kind", [(None, None), ("Softmax", "probabilities"), ("LogSoftmax", None)])
def test_loss_differentiates_through_probability_and_log_probability_outputs(tail, kind):
    """The same cross-entropy and the same weight gradient whatever the model outputs."""
    rng = np.random.default_rng(7)
    x, labels = rng.normal(size=(5, 6)), np.array([0, 3, 2, 1, 3])
    reference = _classifier(None, None)
    model = _classifier(tail, kind)
    results = []
    for m in (reference, model):
        bound = CrossEntropy(0.05).bind(m)
        plan = m.gradient_plan()
        tape = plan.forward({"x": x}, m.initializers)
        loss, cotangents = bound(tape.values, labels)
        results.append((loss, plan.backward(tape, cotangents)["fc1.weight"]))
    assert results[1][0] == pytest.approx(results[0][0])
    np.testing.assert_allclose(results[1][1], results[0][1], rtol=1e-9, atol=1e-12)


def test_loss_of_a_probability_output_without_a_softmax_node():
    model = _classifier(None, "probabilities")
    bound = CrossEntropy().bind(model)
    assert bound.kind == "probabilities"
    probs = np.array([[0.7, 0.1, 0.1, 0.1]])
    loss, cot = bound({bound.value: probs}, np.array([0]))
    assert loss == pytest.approx(-np.log(0.7)) and cot[bound.value][0, 0] == pytest.approx(-1 / 0.7)


def test_loss_refuses_an_output_that_is_not_a_class_vector():
    b = GraphBuilder(input=("x", [None, 6]), seed=0)
    proto = b.build([b.relu(b.input)])
    proto.graph.output[0].type.tensor_type.shape.dim[1].dim_value = 1
    with pytest.raises(ModelError, match="class vector"):
        CrossEntropy().bind(nn_core.load_proto(proto))


# ----------------------------------------------------------------------------------------------------------------
# optimizers and schedules over named arrays


@pytest.mark.parametrize("make", [lambda: SGD(lr=0.1, momentum=0.9), lambda: SGD(lr=0.1, momentum=0.9, nesterov=True),
                                  lambda: AdamW(lr=0.1, weight_decay=0.0)])
def test_optimizers_minimise_a_quadratic(make):
    params = {"w": np.array([[3.0, -2.0]]), "b": np.array([1.5])}
    optimizer = make()
    for _ in range(300):
        optimizer.step(params, {name: 2 * value for name, value in params.items()})
    assert np.abs(params["w"]).max() < 1e-2 and abs(params["b"][0]) < 1e-2


def test_weight_decay_only_on_weights_of_rank_two_or_more():
    for optimizer in (SGD(lr=0.1, momentum=0.0, weight_decay=0.5), AdamW(lr=0.1, weight_decay=0.5)):
        params = {"w": np.ones((2, 2)), "b": np.ones(2)}
        optimizer.step(params, {"w": np.zeros((2, 2)), "b": np.zeros(2)})
        assert (params["w"] < 1).all() and (params["b"] == 1).all()
    # without a gradient a name is left alone entirely
    params = {"w": np.ones((2, 2))}
    SGD(lr=0.1, weight_decay=0.5).step(params, {})
    assert (params["w"] == 1).all()


def test_sgd_nesterov_matches_torch_formula():
    params, grad = {"w": np.array([1.0])}, {"w": np.array([0.5])}
    optimizer = SGD(lr=0.1, momentum=0.9, nesterov=True)
    optimizer.step(params, grad)  # v = g; w -= lr (g + m v)
    assert params["w"][0] == pytest.approx(1 - 0.1 * (0.5 + 0.9 * 0.5))
    optimizer.step(params, grad)  # v = m v + g
    assert params["w"][0] == pytest.approx(1 - 0.1 * 0.95 - 0.1 * (0.5 + 0.9 * 0.95))


def test_learning_rate_schedules():
    cosine = CosineSchedule(1.0, total_steps=110, warmup_steps=10)
    assert cosine(0) == pytest.approx(0.1) and cosine(9) == pytest.approx(1.0)
    assert cosine(60) == pytest.approx(0.5) and cosine(110) == pytest.approx(0.0)
    step = StepSchedule(1.0, step_size=10, gamma=0.5)
    assert [step(i) for i in (0, 9, 10, 25)] == [1.0, 1.0, 0.5, 0.25]
    assert make_schedule("constant", 0.3, 100)(50) == 0.3
    with pytest.raises(ValueError):
        make_schedule("linear", 0.3, 100)


def test_parameter_roles_and_selection():
    model = nn_core.load_proto(lenet5(batchnorm=True, dropout=0.3))
    roles = parameter_roles(model)
    assert roles["conv1.weight"] == "weight" and roles["fc1.bias"] == "bias" and roles["bn1.weight"] == "bias"
    assert roles["bn1.running_mean"] == roles["bn2.running_var"] == "state"
    assert roles["dropout1.ratio"] == "constant"
    assert select_parameters(model, "last:1") == ["fc3.weight", "fc3.bias"]
    assert "bn1.running_mean" not in select_parameters(model)
    with pytest.raises(ModelError, match="nope"):
        select_parameters(model, ["nope"])


# ----------------------------------------------------------------------------------------------------------------
# training mode


def test_batchnorm_training_mode_uses_batch_statistics_and_updates_running_ones():
    b = GraphBuilder(input=("x", [None, 3, 4, 4]), seed=0)
    y = b.batch_norm(b.input, momentum=0.8)
    model = nn_core.load_proto(b.build([y]))
    x = np.random.default_rng(8).normal(2.0, 3.0, (5, 3, 4, 4)).astype(np.float32)
    plan = model.gradient_plan(training=True)
    tape = plan.forward({"x": x}, model.initializers)
    out = tape.outputs[y]
    np.testing.assert_allclose(out.mean(axis=(0, 2, 3)), 0, atol=1e-5)
    np.testing.assert_allclose(out.std(axis=(0, 2, 3)), 1, atol=1e-3)
    stats = plan.running_statistics(tape)
    np.testing.assert_allclose(stats["bn1.running_mean"], 0.2 * x.mean(axis=(0, 2, 3)), rtol=1e-5)
    np.testing.assert_allclose(stats["bn1.running_var"], 0.8 + 0.2 * x.var(axis=(0, 2, 3)), rtol=1e-5)
    # inference mode still uses the running statistics (the identity here)
    np.testing.assert_allclose(model.run({"x": x})[y], x / np.sqrt(1 + 1e-5), rtol=1e-5)


def test_fit_updates_batchnorm_running_statistics(sample):
    model = nn_core.load_proto(lenet5(seed=0, batchnorm=True))
    before = {k: np.array(v) for k, v in model.initializers.items()}
    images, labels = to_input(sample["train_images"][:64]), sample["train_labels"][:64]
    nn_core.fit(model, images, labels, epochs=1, batch_size=32, lr=0.01)
    after = model.initializers
    for name in ("bn1.running_mean", "bn1.running_var", "bn2.running_mean", "conv1.weight", "bn1.weight"):
        assert not np.array_equal(after[name], before[name]), name
    assert (after["bn1.running_var"] > 0).all()


def test_dropout_drops_in_training_mode_only_and_is_seeded():
    b = GraphBuilder(input=("x", [None, 1000]), seed=0)
    y = b.dropout(b.input, 0.25)
    model = nn_core.load_proto(b.build([y]))
    x = np.ones((4, 1000), np.float32)
    np.testing.assert_array_equal(model.run({"x": x})[y], x)
    plan = model.gradient_plan(training=True)
    plan.rng = np.random.default_rng(9)
    first = plan.forward({"x": x}, model.initializers).outputs[y]
    assert set(np.unique(first)) <= {0.0, np.float32(1 / 0.75)}
    assert abs((first == 0).mean() - 0.25) < 0.03
    second = plan.forward({"x": x}, model.initializers).outputs[y]
    assert not np.array_equal(first, second)  # a new mask every step
    plan.rng = np.random.default_rng(9)
    np.testing.assert_array_equal(plan.forward({"x": x}, model.initializers).outputs[y], first)


# ----------------------------------------------------------------------------------------------------------------
# fit and save


def test_a_few_hundred_steps_on_the_replay_digits_learn_to_read(sample):
    images, labels = load_replay()
    x, y = to_input(images), labels
    model = nn_core.load_proto(lenet5(seed=0))
    untrained_loss = softmax_cross_entropy(model.run({"input": x[:500]})["logits"], y[:500])[0]
    seen = []
    history = nn_core.fit(model, x, y, epochs=4, batch_size=32, lr=0.05, warmup_epochs=0.2, seed=1,
                          val=(to_input(sample["test_images"]), sample["test_labels"]), callback=seen.append)
    assert len(history) == 4 and seen == history.epochs and history.images == 4 * len(x)  # 252 steps
    assert history.loss[-1] < 0.5 * history.loss[0] and history.loss[-1] < 0.3 * untrained_loss
    assert history[-1]["val_accuracy"] > 0.9, history.epochs
    assert history.images_per_second > 0


def test_fit_callback_can_stop_and_augmentation_runs(sample):
    model = nn_core.load_proto(lenet5(seed=0))
    x, y = to_input(sample["train_images"][:64]), sample["train_labels"][:64]
    history = nn_core.fit(model, x, y, epochs=5, batch_size=32, augment=True, optimizer="adamw",
                          callback=lambda record: record["epoch"] == 2)
    assert len(history) == 2 and history[0]["augmented"]


def test_save_and_load_round_trip_keeps_metadata_and_weights(tmp_path, sample):
    model = nn_core.load_proto(lenet5(seed=0, batchnorm=True))
    x, y = to_input(sample["train_images"][:32]), sample["train_labels"][:32]
    nn_core.fit(model, x, y, epochs=1, batch_size=16)
    path = tmp_path / "trained.onnx"
    model.save(path, metadata={"test_accuracy": "12.34", "training": json.dumps({"epochs": 1})})
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)
    loaded = nn_core.load(str(path))
    for key, value in DIGIT_METADATA.items():
        assert loaded.metadata[key] == value
    assert loaded.metadata["test_accuracy"] == "12.34" and json.loads(loaded.metadata["training"]) == {"epochs": 1}
    for name, value in model.initializers.items():
        np.testing.assert_array_equal(loaded.initializers[name], value)
    np.testing.assert_allclose(loaded.run({"input": x})["logits"], model.run({"input": x})["logits"], rtol=1e-5,
                               atol=1e-5)
    assert [n.op_type for n in loaded.nodes] == [n.op_type for n in model.nodes]  # the same graph, BN kept


def test_save_of_a_loaded_file_keeps_everything_else(tmp_path):
    bundled = Path(__file__).resolve().parent.parent / "assets" / "lenet5.onnx"
    model = nn_core.load(str(bundled))
    weights = {k: np.array(v) for k, v in model.initializers.items()}
    weights["fc3.bias"] += 1.0
    model.set_initializers(weights)
    path = tmp_path / "copy.onnx"
    model.save(path)
    original, written = onnx.load(str(bundled)), onnx.load(str(path))
    assert written.metadata_props == original.metadata_props and written.doc_string == original.doc_string
    assert [n.SerializeToString() for n in written.graph.node] == [n.SerializeToString() for n in original.graph.node]
    written_weights = {t.name: numpy_helper.to_array(t) for t in written.graph.initializer}
    np.testing.assert_array_equal(written_weights["fc3.bias"], weights["fc3.bias"])


# ----------------------------------------------------------------------------------------------------------------
# the commands


def _args(**overrides) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    train.add_arguments(parser)
    args = parser.parse_args(["--quiet"])
    for key, value in overrides.items():
        setattr(args, key, value)
    return args


def test_train_and_eval_commands_end_to_end(mnist_dir, tmp_path, capsys):
    out = tmp_path / "lenet.onnx"
    args = _args(data=str(mnist_dir), out=str(out), epochs=1, batch_size=50)
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


def test_train_with_pen_data_holdout_and_calibration(mnist_dir, tmp_path, sample):
    """--pen-data adds drawn copies of training digits (split by their MNIST index, so a held-out digit is never
    trained on in any form), --holdout keeps the last N out, --calibrate folds the fitted temperature into fc3."""
    images, labels = sample["train_images"], sample["train_labels"]
    pen = tmp_path / "pen.npz"
    np.savez(pen, images=255 - images, labels=labels, indices=np.arange(len(images), dtype=np.int32))
    out = tmp_path / "lenet.onnx"
    holdout = 100
    assert train.main(_args(data=str(mnist_dir), out=str(out), epochs=1, batch_size=50, pen_data=[str(pen)],
                            holdout=holdout, calibrate=True, calibration_data=[str(pen)])) == 0
    meta = nn_core.load(str(out)).metadata
    training = json.loads(meta["training"])
    kept = len(images) - holdout
    assert f"{kept:,} MNIST digits and {kept:,} of them drawn" in training["data"]
    calibration = json.loads(meta["calibration"])
    assert calibration["folded_into"] == "fc3" and calibration["temperature"] > 0
    assert f"{2 * holdout:,} held-out" in calibration["fitted_on"]
    assert f"+ {len(images):,} drawings from pen.npz" in calibration["fitted_on"]
    assert 0 <= calibration["ece_after"] <= 100 and 0 <= calibration["ece_before"] <= 100


def test_temperature_fit_recovers_the_temperature_of_the_labels():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, (4000, 10))
    # labels drawn from softmax(logits / 2.5): the NLL-optimal temperature is 2.5
    probs = evaluate.softmax(logits, 2.5)
    labels = (probs.cumsum(axis=1) > rng.random((len(probs), 1))).argmax(axis=1)
    assert evaluate.fit_temperature(logits, labels) == pytest.approx(2.5, rel=0.1)
    assert evaluate.expected_calibration_error(evaluate.softmax(logits, 2.5), labels) < 0.03
    assert evaluate.expected_calibration_error(evaluate.softmax(logits), labels) > 0.1


def test_expected_calibration_error_of_simple_cases():
    sure_and_right = np.eye(10)[[0, 1, 2, 3]]
    assert evaluate.expected_calibration_error(sure_and_right, np.array([0, 1, 2, 3])) == 0.0
    assert evaluate.expected_calibration_error(sure_and_right, np.array([1, 1, 2, 3])) == pytest.approx(0.25)


def test_fold_temperature_divides_the_logits_and_refuses_other_outputs(sample):
    model = nn_core.load_proto(lenet5(seed=1))
    x = to_input(sample["test_images"][:8])
    before = model.run({"input": x})["logits"]
    assert evaluate.fold_temperature(model, 2.0) == "fc3"
    np.testing.assert_allclose(model.run({"input": x})["logits"], before / 2, rtol=1e-5, atol=1e-6)
    b = GraphBuilder(input=("input", [None, 4]))
    proto = b.build([b.relu(b.gemm(b.input, 3))], {})
    with pytest.raises(ModelError, match="not computed by a Gemm"):
        evaluate.fold_temperature(nn_core.load_proto(proto), 2.0)


def test_confusion_matrix_counts_true_against_predicted():
    counts = evaluate.confusion_matrix(np.array([0, 1, 1, 2]), np.array([0, 1, 2, 2]), classes=3)
    np.testing.assert_array_equal(counts, [[1, 0, 0], [0, 1, 1], [0, 0, 1]])


def test_replay_set_is_shipped_small_and_balanced():
    images, labels = load_replay()
    assert images.dtype == np.uint8 and images.shape[1:] == (28, 28) and 1000 <= len(images) <= 5000
    assert np.bincount(labels, minlength=10).min() >= 100
    path = Path(nn_core.__file__).with_name("replay_digits.npz")
    assert path.stat().st_size < 600_000


# ----------------------------------------------------------------------------------------------------------------
# augmentation


def _digit_like_batch() -> np.ndarray:
    images = np.zeros((4, 28, 28), np.float32)
    images[:, 6:22, 12:16] = 1.0  # a thick vertical bar, like a "1"
    return images


def test_affine_identity_and_shift():
    images = np.random.default_rng(10).random((3, 28, 28)).astype(np.float32)
    identity = np.tile(np.eye(2), (3, 1, 1))
    np.testing.assert_allclose(affine_transform(images, identity, np.zeros((3, 2))), images, atol=1e-6)
    shifted = affine_transform(images, identity, np.tile([2.0, -1.0], (3, 1)))  # right 2, up 1
    np.testing.assert_allclose(shifted[:, :-1, 2:], images[:, 1:, :-2], atol=1e-6)
    assert np.all(shifted[:, :, :2] == 0) and np.all(shifted[:, -1, :] == 0)


def test_affine_rotation_by_90_degrees_turns_a_bar():
    bar = _digit_like_batch()[:1]
    rotation = np.array([[[0.0, -1.0], [1.0, 0.0]]])
    turned = affine_transform(bar, rotation, np.zeros((1, 2)))
    np.testing.assert_allclose(turned[0], np.rot90(bar[0]), atol=1e-5)


def test_dilation_and_erosion_change_stroke_thickness():
    images = _digit_like_batch()
    assert dilate(images).sum() > images.sum() > erode(images).sum() > 0
    assert np.all(dilate(images) >= images) and np.all(erode(images) <= images)


def test_augmented_batch_keeps_shape_range_and_the_digit_near_the_centre():
    images = _digit_like_batch()[:, None]
    out = augment_batch(images, AugmentConfig(), np.random.default_rng(11))
    assert out.shape == images.shape and out.dtype == np.float32
    assert out.min() >= 0 and out.max() <= 1 + 1e-6
    assert not np.allclose(out, images)
    ys, xs = np.mgrid[0:28, 0:28]
    for image in out[:, 0]:
        mass = image.sum()
        assert mass > 0.4 * images[0].sum()
        centre = np.array([(image * ys).sum(), (image * xs).sum()]) / mass
        assert np.abs(centre - 13.5).max() < 6


def test_drawn_segment_is_an_anti_aliased_pen_line():
    line = draw_segments(np.zeros((1, 28, 28), np.float32), np.array([[5.0, 10.0]]), np.array([[20.0, 10.0]]),
                         np.array([2.0]))[0]
    assert line.dtype == np.float32
    np.testing.assert_allclose(line[8:13, 12], [0.0, 0.5, 1.0, 0.5, 0.0])  # width 2: soft one-pixel edges
    assert line[10, 5] == 1.0 and line[10, 20] == 1.0 and line[10, 3] == 0.0  # rounded ends
    assert not line[:8].any() and not line[13:].any()


def _labelled_digits() -> tuple[np.ndarray, np.ndarray]:
    """Thin upright "1"s (rows 4-23, columns 13-14), "7"s (top bar and a slanted stem), and a few other digits."""
    images = np.zeros((12, 28, 28), np.float32)
    images[0:4, 4:24, 13:15] = 1.0
    for k in range(4, 8):
        images[k, 4:6, 8:21] = 1.0
        for row in range(6, 24):
            column = 20 - (row - 6) // 2
            images[k, row, column - 1 : column + 1] = 1.0
    images[8:] = np.random.default_rng(15).random((4, 28, 28)) * (np.random.default_rng(16).random((4, 28, 28)) > 0.8)
    labels = np.array([1, 1, 1, 1, 7, 7, 7, 7, 0, 3, 4, 8])
    return images, labels


STYLES_ALWAYS = AugmentConfig(flag_probability=1.0, serif_probability=0.0, crossbar_probability=1.0)


def test_flag_adds_ink_only_at_the_upper_left_of_ones_and_leaves_other_digits_alone():
    images, labels = _labelled_digits()
    kept_images, kept_labels = images.copy(), labels.copy()
    styled, changed = add_handwriting_styles(images, labels, STYLES_ALWAYS, np.random.default_rng(17))
    np.testing.assert_array_equal(labels, kept_labels)
    np.testing.assert_array_equal(images, kept_images)  # the input batch is not written to
    np.testing.assert_array_equal(changed, (labels == 1) | (labels == 7))
    np.testing.assert_array_equal(styled[8:], images[8:])
    for one in range(4):
        added = styled[one] - images[one]
        assert added.min() >= 0 and added.sum() > 5  # a visible stroke, nothing erased
        rows, cols = np.nonzero(added > 0)
        # Ink 20 px tall: the flag is 25-55 % of that, from the top (row 4) down to the left of the stem (col 13).
        assert rows.min() >= 3 and rows.max() <= 4 + 0.6 * 20
        assert cols.max() <= 15 and cols.min() < 11


def test_crossbar_crosses_the_stem_of_sevens_near_mid_height():
    images, labels = _labelled_digits()
    styled, _ = add_handwriting_styles(images, labels, STYLES_ALWAYS, np.random.default_rng(18))
    for seven in range(4, 8):
        added = styled[seven] - images[seven]
        rows, cols = np.nonzero(added > 0.5)
        assert 10 <= rows.min() and rows.max() <= 19  # ink spans rows 4-23: mid-height, not the top bar
        stem = 20 - (int(np.median(rows)) - 6) // 2
        assert cols.min() < stem - 2 and cols.max() > stem + 2  # sticks out on both sides


def test_serif_adds_a_foot_on_both_sides_of_the_base():
    images, labels = _labelled_digits()
    config = AugmentConfig(flag_probability=1.0, serif_probability=1.0, crossbar_probability=0.0)
    styled, _ = add_handwriting_styles(images[:4], labels[:4], config, np.random.default_rng(19))
    added = styled - images[:4]
    foot = added[:, 21:26]
    assert foot[:, :, :12].sum(axis=(1, 2)).min() > 1 and foot[:, :, 16:].sum(axis=(1, 2)).min() > 1
    assert not added[:, 17:20].any()  # nothing between the flag and the foot


def test_styles_hit_about_the_configured_share_of_the_class():
    images = np.zeros((1000, 28, 28), np.float32)
    images[:, 4:24, 13:15] = 1.0
    _, changed = add_handwriting_styles(images, np.ones(1000, int), AugmentConfig(), np.random.default_rng(20))
    assert abs(changed.mean() - AugmentConfig().flag_probability) < 0.06


def test_augmenting_with_labels_keeps_flagged_ones_centred_by_mass():
    images, labels = _labelled_digits()
    still = AugmentConfig(rotation_degrees=0.0, scale_range=(1.0, 1.0), shear=0.0, translation_pixels=0.0,
                          dilate_probability=0.0, erode_probability=0.0, flag_probability=1.0,
                          crossbar_probability=1.0)
    out = augment_batch(images[:, None], still, np.random.default_rng(21), labels)[:, 0]
    assert out.shape == images.shape
    np.testing.assert_array_equal(out[8:], images[8:])
    assert (out[:4].sum(axis=(1, 2)) > images[:4].sum(axis=(1, 2)) + 5).all()  # the flag is there
    # Recentred: the app centres drawings by centre of mass, so the training digits must stay centred too.
    np.testing.assert_allclose(centre_of_mass(out[:8]), centre_of_mass(images[:8]), atol=0.1)
