"""Teach a classifier one person's handwriting from a few drawings, without forgetting everyone else's.

    better = nn_core.finetune(model, x, labels)        # x in the model's own input layout and scaling
    better.save("mine.onnx")

With one to three drawings per digit, plain training would memorise them and drift away from MNIST. So every
step trains on a batch of (1) randomly distorted copies of the few examples (rotation, scale, shear, shift,
stroke thickness — the digit stays the same digit) and (2) digits replayed from a small MNIST subset shipped in
the package (``nn_core/replay_digits.npz``), converted to the model's layout and scaling; the weights are pulled
towards where they started (L2-SP anchor); normalisation keeps its running statistics (inference mode); by default
only the dense layers at the end learn, so the convolutions' features stay MNIST's; and it stops early once every
example is read right with a clear margin. The given model is never changed: a new one is returned.

The defaults (dense layers, AdamW 1.5e-4, 8 examples + 56 replayed digits per step, half of those from the classes
the examples are mistaken for, stop at probability 0.85, at most 80 steps: about 0.6 s of one core at the most)
were chosen with benchmarks/finetune_writers.py on its tuning writers 400-415 and are quoted on the held-out
writers 200-239.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Collection

import numpy as np

from .augment import AugmentConfig, augment_batch
from .data import load_replay
from .errors import ModelError, UnsupportedOperatorError
from .interface import ModelAdapter
from .losses import CrossEntropy
from .model import Model, load_proto
from .optim import AdamW, Optimizer
from .scaling import scale_pixels
from .train import Trainer, parameter_roles

#: milder than training from scratch: a person's drawing distorted, still clearly the same digit
FINETUNE_AUGMENT = AugmentConfig(rotation_degrees=12.0, scale_range=(0.85, 1.1), shear=0.2, translation_pixels=2.0,
                                 dilate_probability=0.2, erode_probability=0.15, flag_probability=0.0,
                                 crossbar_probability=0.0)


def _unscale(x: np.ndarray, code: str) -> np.ndarray:
    """The inverse of ``scale_pixels``: model-scaled pixels back to ink = 1.0 on 0.0."""
    x = x.astype(np.float32, copy=False)
    if code == "01":
        return x
    if code == "255":
        return x / np.float32(255)
    if code == "mnist_norm":
        return x * np.float32(0.3081) + np.float32(0.1307)
    if code == "m11":
        return (x + np.float32(1)) / np.float32(2)
    if code == "inv01":
        return np.float32(1) - x
    raise ValueError(f"unknown input scaling {code!r}")


class _Images:
    """Converts between the model's input format and (N, H, W) grey images with ink = 1.0 on 0.0."""

    def __init__(self, model: Model):
        self.adapter = ModelAdapter(model)
        self.layout = self.adapter.layout
        self.scaling = self.adapter.scaling
        if not self.layout.dynamic_batch:
            raise ModelError(f"{model.name}: its input {self.layout.describe()} takes a fixed batch; fine-tuning "
                             "needs a model whose batch axis is free")

    def to_grey(self, x: np.ndarray) -> np.ndarray:
        layout = self.layout
        x = _unscale(np.asarray(x), self.scaling)
        n = x.shape[0]
        if layout.channels > 1:
            x = x.reshape(n, *layout.feed_shape[1:]).mean(axis=-1 if layout.channels_last else 1)
        return x.reshape(n, layout.height, layout.width)

    def from_grey(self, grey: np.ndarray) -> np.ndarray:
        layout = self.layout
        x = scale_pixels(grey.astype(np.float32, copy=False), self.scaling)
        if layout.channels > 1:
            axis = -1 if layout.channels_last else 1
            x = np.repeat(np.expand_dims(x, axis), layout.channels, axis=axis)
        return np.ascontiguousarray(x.reshape(len(grey), *layout.feed_shape[1:]), dtype=layout.dtype)

    def from_mnist(self, images: np.ndarray) -> np.ndarray:
        """uint8 28x28 MNIST digits at the model's size, layout and scaling."""
        grey = images.astype(np.float32) / np.float32(255)
        if (self.layout.height, self.layout.width) != grey.shape[1:]:
            grey = np.stack([self.adapter.model_image(image) for image in grey])
        return self.from_grey(grey)


def _check_trainable(model: Model) -> None:
    """ModelError with the reason when the engine cannot fine-tune ``model``."""
    if not model.initializers:
        raise ModelError(f"{model.name}: cannot fine-tune a model without floating-point weights")
    roles = parameter_roles(model)
    if not any(role in ("weight", "bias") for role in roles.values()):
        raise ModelError(f"{model.name}: cannot fine-tune: no learnable floating-point weights")


def finetune(model: Model, x: np.ndarray, labels: np.ndarray, *,
             trainable: str | Collection[str] | Callable[[str], bool] = "dense",
             steps: int = 80, batch_size: int = 64, examples_per_batch: int = 8, lr: float | None = None,
             optimizer: Optimizer | None = None, augment: bool | AugmentConfig = True,
             replay: bool | tuple[np.ndarray, np.ndarray] = True, anchor: float = 1e-2,
             rivals: float = 0.5, label_smoothing: float = 0.0, early_stopping: bool = True, margin: float = 0.85,
             time_budget: float | None = None, seed: int = 0,
             callback: Callable[[int, int], bool | None] | None = None) -> Model:
    """A new model, ``model`` fine-tuned so that it outputs ``labels`` for the batch ``x``.

    ``x`` is in the model's own input layout and scaling (what ``model.run`` takes), ``labels`` are class
    indices. Options: ``trainable`` — "dense" (the Gemm/MatMul layers after the last convolution; the default),
    "all", "last:K" (the last K layers with weights), names or a predicate; ``steps`` — at most this many updates
    of ``batch_size`` images, ``examples_per_batch`` of them distorted copies of the examples (``augment``), the
    rest replayed shipped MNIST digits (``replay``: True, False or (uint8 images [N, 28, 28], labels));
    ``rivals`` — the share of the replayed digits drawn from the classes the examples are mistaken for (a
    flagged "1" read as 7: MNIST 7s are replayed, so the model learns the flag, not "every 7 is a 1");
    ``lr`` — AdamW's rate (default 1.5e-4 for "dense", 1e-4 otherwise) or ``optimizer``; ``anchor`` — strength of
    the pull back to the original weights; ``early_stopping`` — stop as soon as every example's label has
    probability above ``margin`` (checked before the first step too: a model that already reads them is
    returned unchanged — with one drawing per digit, every further step trades other digits for these);
    ``time_budget`` — seconds; ``callback(step, steps)`` — called after each update (``step`` counts from 1);
    returning True stops there (progress bars, a cancel button). ``model`` is left untouched.

    Raises ModelError naming the reason when the model cannot be fine-tuned: no floating-point weights, an op
    without a gradient rule on the way to them, an output that is not a class vector, a fixed batch size.
    """
    started = time.perf_counter()
    x = np.asarray(x)
    labels = np.asarray(labels).astype(np.int64).reshape(-1)
    if len(x) != len(labels) or not len(x):
        raise ValueError(f"{len(x)} examples and {len(labels)} labels")
    _check_trainable(model)
    tuned = load_proto(model.to_proto(), model.name)
    tuned.path = None
    if tuned.inputs and tuned.inputs[0].shape and isinstance(tuned.inputs[0].shape[0], int) \
            and tuned.inputs[0].shape[0] != len(x):
        raise ModelError(f"{model.name}: cannot fine-tune: its input '{tuned.inputs[0].name}' "
                         f"{tuned.inputs[0].describe_shape()} takes a fixed batch")
    try:
        images: _Images | None = _Images(tuned)
    except ModelError:  # not an image classifier: no distortions, no replayed digits, the examples as they are
        images = None
    names = _select(tuned, trainable)
    opt = optimizer or AdamW(lr=(1.5e-4 if trainable == "dense" else 1e-4) if lr is None else lr, weight_decay=0.0)
    rng = np.random.default_rng(seed)
    try:
        trainer = Trainer(tuned, opt, CrossEntropy(label_smoothing), names, rng, training=False, anchor=anchor)
    except UnsupportedOperatorError as exc:
        raise ModelError(f"{model.name}: cannot fine-tune: {exc}") from exc
    classes = _class_count(tuned, trainer, x)
    if labels.min() < 0 or labels.max() >= classes:
        raise ValueError(f"labels must be in [0, {classes}), got {labels.min()}..{labels.max()}")

    replay_x, replay_y = _replay_set(images, replay, classes) if images is not None else (None, None)
    grey = images.to_grey(x) if images is not None else x
    config = augment if isinstance(augment, AugmentConfig) else (FINETUNE_AUGMENT if augment else None)
    if images is None:
        config = None
    per_batch = min(examples_per_batch, batch_size) if replay_x is not None else batch_size
    check_every = 2
    done_steps, reason = 0, "steps"
    by_class = [np.flatnonzero(replay_y == c) for c in range(classes)] if replay_x is not None else []
    rival_weights = None
    for step in range(steps):
        if step % check_every == 0 and (early_stopping or (rivals and replay_x is not None)):
            probs = _probabilities(trainer, x)
            if early_stopping and bool((probs[np.arange(len(labels)), labels] > margin).all()):
                reason = "early stop: every example read right"
                break
            rival_weights = _rival_weights(probs, labels, by_class)
        pick = np.concatenate([rng.permutation(len(x)) for _ in range(-(-per_batch // len(x)))])[:per_batch]
        chosen = grey[pick]
        if config is not None:
            chosen = augment_batch(chosen, config, rng)
        batch_x, batch_y = (images.from_grey(chosen) if images is not None else chosen), labels[pick]
        if replay_x is not None and batch_size > per_batch:
            count = batch_size - per_batch
            index = rng.integers(0, len(replay_x), count)
            if rivals and rival_weights is not None:
                chosen_classes = rng.choice(classes, size=int(round(rivals * count)), p=rival_weights)
                index[:len(chosen_classes)] = [by_class[c][rng.integers(len(by_class[c]))] for c in chosen_classes]
            batch_x = np.concatenate([batch_x, replay_x[index]])
            batch_y = np.concatenate([batch_y, replay_y[index]])
        try:
            trainer.step(batch_x, batch_y)
        except UnsupportedOperatorError as exc:
            raise ModelError(f"{model.name}: cannot fine-tune: {exc}") from exc
        done_steps = step + 1
        if callback is not None and callback(done_steps, steps):
            reason = "stopped by the caller"
            break
        if time_budget is not None and time.perf_counter() - started > time_budget:
            reason = "time budget"
            break
    trainer.commit()
    record = {"examples": int(len(x)), "steps": done_steps, "stopped": reason, "trained": sorted(trainer.trainable),
              "replay": 0 if replay_x is None else int(len(replay_x)),
              "seconds": round(time.perf_counter() - started, 3)}
    tuned.metadata["finetuned"] = json.dumps(record)
    return tuned


def _select(model: Model, trainable) -> list[str] | str | Collection[str] | Callable[[str], bool]:
    """ "dense": the weights of the Gemm/MatMul nodes after the last convolution (all learnable ones if the
    model has no Gemm/MatMul with weights)."""
    if trainable != "dense":
        return trainable
    roles = parameter_roles(model)
    learnable = {name for name, role in roles.items() if role in ("weight", "bias")}
    last_conv = max((i for i, node in enumerate(model.nodes) if node.op_type in ("Conv", "ConvTranspose")
                     and any(name in learnable for name in node.inputs)), default=-1)
    chosen = {name for node in model.nodes[last_conv + 1:] for name in node.inputs if name in learnable}
    has_dense = any(node.op_type in ("Gemm", "MatMul") and any(n in learnable for n in node.inputs)
                    for node in model.nodes[last_conv + 1:])
    return sorted(chosen) if has_dense else "all"


def _class_count(model: Model, trainer: Trainer, x: np.ndarray) -> int:
    """The number of classes, after checking (one forward and backward on the examples) that the output is a
    class vector and that the gradient reaches the weights to train."""
    tape = trainer.plan.forward({trainer.input_name: np.asarray(x, trainer.input_dtype)}, trainer.params)
    scores = tape.values[trainer.loss.value]
    if scores.ndim < 2 or scores.shape[0] != len(x) or scores.reshape(len(scores), -1).shape[1] < 2:
        raise ModelError(f"{model.name}: cannot fine-tune: the output is not a class vector "
                         f"(shape {list(scores.shape)})")
    classes = scores.reshape(len(scores), -1).shape[1]
    _, cotangents = trainer.loss(tape.values, np.zeros(len(x), np.int64))
    try:
        trainer.plan.backward(tape, cotangents, wrt=trainer.trainable)
    except UnsupportedOperatorError as exc:
        raise ModelError(f"{model.name}: cannot fine-tune: {exc}") from exc
    return classes


def _replay_set(images: _Images, replay, classes: int) -> tuple[np.ndarray | None, np.ndarray | None]:
    if replay is False or replay is None:
        return None, None
    raw, labels = load_replay() if replay is True else (np.asarray(replay[0]), np.asarray(replay[1]))
    keep = labels < classes
    if not keep.any():
        return None, None
    return images.from_mnist(raw[keep]), labels[keep].astype(np.int64)


def _rival_weights(probs: np.ndarray, labels: np.ndarray, by_class: list[np.ndarray]) -> np.ndarray | None:
    """Sampling weights over classes: each example votes for the class it is most mistaken for, as much as its
    label's probability falls short of 1. None when nothing is mistaken (or no replay digit of those classes)."""
    weights = np.zeros(probs.shape[1])
    rival = probs.copy()
    rival[np.arange(len(labels)), labels] = -1.0
    np.add.at(weights, rival.argmax(axis=1), 1.0 - probs[np.arange(len(labels)), labels])
    weights[[len(members) == 0 for members in by_class]] = 0.0
    total = weights.sum()
    return weights / total if total > 1e-3 else None


def _probabilities(trainer: Trainer, x: np.ndarray) -> np.ndarray:
    """Class probabilities of the examples (inference mode, current weights), (N, classes) float64."""
    tape = trainer.plan.forward({trainer.input_name: np.asarray(x, trainer.input_dtype)}, trainer.params)
    scores = tape.values[trainer.loss.value].astype(np.float64)
    scores = scores.reshape(len(scores), -1)
    kind = trainer.loss.kind
    if kind == "logits":
        scores = scores - scores.max(axis=1, keepdims=True)
        probs = np.exp(scores) / np.exp(scores).sum(axis=1, keepdims=True)
    elif kind == "log_probabilities":
        probs = np.exp(scores)
    else:
        probs = scores
    return probs
