"""Training is the same engine: a loaded graph's initializers updated with gradients of its own gradient plan.

    model = nn_core.load_proto(nn_core.builder.lenet5(seed=0))      # or nn_core.load("any.onnx")
    history = nn_core.fit(model, images, labels, epochs=20, batch_size=128, optimizer="sgd", lr=0.05)
    model.save("lenet5.onnx", metadata={...})

``fit`` runs the model's training-mode ``GradientPlan`` (BatchNormalization on batch statistics with its running
statistics updated, Dropout dropping), computes the loss on the model's class vector (``losses.CrossEntropy``),
back-propagates through the same kernels' gradient rules and steps an optimizer over the initializers; the model
is changed in place. ``python -m nn_core train`` is a thin command-line wrapper that trains the bundled LeNet-5.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .augment import AugmentConfig, augment_batch
from .autodiff import GradientPlan
from .data import batches, load_mnist, to_input
from .errors import ModelError
from .losses import BoundLoss, CrossEntropy
from .model import Model, load_proto
from .optim import SGD, AdamW, Optimizer, make_schedule

DEFAULT_DATA = "/work/shared/data/mnist"


# ----------------------------------------------------------------------------------------------------------------
# what is trained


def parameter_roles(model: Model) -> dict[str, str]:
    """The role of each floating-point initializer: ``weight`` (rank >= 2: decayed), ``bias`` (the rest that
    learns: biases, normalisation scales and shifts), ``state`` (BatchNormalization running statistics: updated
    by training mode, not by gradients) or ``constant`` (hyper-parameters stored as tensors: a Dropout ratio,
    scalars)."""
    roles: dict[str, str] = {}
    for name, value in model.initializers.items():
        roles[name] = "weight" if value.ndim >= 2 else ("constant" if value.ndim == 0 else "bias")
    for node in model.nodes:
        if node.op_type == "BatchNormalization":
            for name in node.inputs[3:5]:
                if name in roles:
                    roles[name] = "state"
        elif node.op_type == "Dropout":
            for name in node.inputs[1:]:
                if name in roles:
                    roles[name] = "constant"
    return roles


def select_parameters(model: Model, trainable: str | Collection[str] | Callable[[str], bool] | None = None
                      ) -> list[str]:
    """Names of the initializers to train: all that learn (``None``/``"all"``), a collection of names, a
    predicate, or ``"last:K"`` — those read by the last K nodes that have learnable weights."""
    roles = parameter_roles(model)
    learnable = [name for name, role in roles.items() if role in ("weight", "bias")]
    if trainable is None or trainable == "all":
        return learnable
    if isinstance(trainable, str):
        if not trainable.startswith("last:"):
            raise ValueError(f"trainable: 'all', 'last:K', names or a predicate, got {trainable!r}")
        count = int(trainable.split(":", 1)[1])
        layers = [node for node in model.nodes if any(name in learnable for name in node.inputs)]
        chosen = {name for node in layers[-count:] for name in node.inputs if name in learnable}
        return [name for name in learnable if name in chosen]
    if callable(trainable):
        return [name for name in learnable if trainable(name)]
    unknown = [name for name in trainable if name not in roles]
    if unknown:
        raise ModelError(f"{model.name}: no floating-point initializer named {', '.join(map(repr, unknown))}")
    return [name for name in roles if name in set(trainable)]


# ----------------------------------------------------------------------------------------------------------------
# one step


class Trainer:
    """The training step of one model: the training-mode plan, the loss bound to the model's output, the
    parameters (copies of the initializers, written back by ``commit``) and an optimizer over them."""

    def __init__(self, model: Model, optimizer: Optimizer, loss: CrossEntropy | None = None,
                 trainable: str | Collection[str] | Callable[[str], bool] | None = None,
                 seed: int | np.random.Generator | None = 0, training: bool = True,
                 anchor: float = 0.0) -> None:
        if len(model.inputs) != 1:
            raise ModelError(f"{model.name}: training needs a model with one input, it has {len(model.inputs)}")
        self.model = model
        self.plan: GradientPlan = model.gradient_plan(training=training)
        self.plan.rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
        self.loss: BoundLoss = (loss or CrossEntropy()).bind(model)
        self.optimizer = optimizer
        self.input_name = model.inputs[0].name
        self.input_dtype = model.inputs[0].dtype or np.dtype(np.float32)
        self.params = {name: np.array(value) for name, value in model.initializers.items()}
        self.trainable = frozenset(select_parameters(model, trainable))
        if not self.trainable:
            raise ModelError(f"{model.name}: nothing to train (no floating-point weights selected)")
        # anchor > 0 pulls the trained weights towards where they started (L2-SP): fine-tuning forgets less
        self.anchor = anchor
        self.start = {name: self.params[name].copy() for name in self.trainable} if anchor else {}
        if optimizer.decay is None:
            roles = parameter_roles(model)
            optimizer.decay = {name for name in self.trainable if roles[name] == "weight"}
        self.steps = 0

    def step(self, x: np.ndarray, labels: np.ndarray, lr: float | None = None) -> tuple[float, np.ndarray]:
        """One forward/backward/update on a batch; returns (loss, predicted classes)."""
        if lr is not None:
            self.optimizer.lr = lr
        x = np.asarray(x, dtype=self.input_dtype)
        tape = self.plan.forward({self.input_name: x}, self.params, wrt=self.trainable)
        loss, cotangents = self.loss(tape.values, labels)
        grads = self.plan.backward(tape, cotangents, wrt=self.trainable)
        grads = {name: grads[name] for name in self.trainable if name in grads}
        if self.anchor:
            for name, grad in grads.items():
                grads[name] = grad + np.asarray(self.anchor, grad.dtype) * (self.params[name] - self.start[name])
        self.optimizer.step(self.params, grads)
        for name, value in self.plan.running_statistics(tape).items():
            self.params[name][...] = value
        self.steps += 1
        return loss, self.loss.predictions(tape.values)

    def commit(self) -> None:
        """Write the trained parameters into the model's initializers (its fast plan rebuilds on next run)."""
        self.model.set_initializers(self.params)


# ----------------------------------------------------------------------------------------------------------------
# fit


@dataclass
class History:
    """What ``fit`` did: one record per epoch (loss, accuracy on the trained batches, validation accuracy...)."""

    epochs: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0  # time in the training loop (augmentation, forward, backward, update)
    images: int = 0  # images trained on, all epochs together

    @property
    def images_per_second(self) -> float:
        return self.images / self.seconds if self.seconds else 0.0

    @property
    def loss(self) -> list[float]:
        return [record["loss"] for record in self.epochs]

    def __len__(self) -> int:
        return len(self.epochs)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.epochs[index]


def make_optimizer(optimizer: str | Optimizer, lr: float | None, momentum: float = 0.9, nesterov: bool = True,
                   weight_decay: float | None = None) -> Optimizer:
    if isinstance(optimizer, Optimizer):
        return optimizer
    if optimizer == "sgd":
        return SGD(lr=0.05 if lr is None else lr, momentum=momentum, nesterov=nesterov,
                   weight_decay=5e-4 if weight_decay is None else weight_decay)
    if optimizer in ("adamw", "adam"):
        return AdamW(lr=0.002 if lr is None else lr, weight_decay=0.01 if weight_decay is None else weight_decay)
    raise ValueError(f"unknown optimizer {optimizer!r} (sgd, adamw or an nn_core.optim.Optimizer)")


def accuracy(model: Model, images: np.ndarray, labels: np.ndarray, batch_size: int = 1000) -> float:
    """Share of ``images`` (in the model's input format) whose top class is the label, through ``model.run``."""
    name, output = model.inputs[0].name, model.outputs[0].name
    correct = 0
    for start in range(0, len(images), batch_size):
        scores = model.run({name: images[start:start + batch_size]})[output]
        correct += int((scores.reshape(len(scores), -1).argmax(axis=1) == labels[start:start + batch_size]).sum())
    return correct / max(len(images), 1)


def fit(model: Model, images: np.ndarray, labels: np.ndarray, *, epochs: int = 1, batch_size: int = 128,
        optimizer: str | Optimizer = "sgd", lr: float | None = None, momentum: float = 0.9, nesterov: bool = True,
        weight_decay: float | None = None, schedule: str | Callable[[int], float] = "cosine",
        warmup_epochs: float = 0.0, label_smoothing: float = 0.0,
        augment: bool | AugmentConfig | Callable[[np.ndarray, np.ndarray, np.random.Generator], np.ndarray]
        | None = None, clean_epochs: int = 0, val: tuple[np.ndarray, np.ndarray] | None = None,
        trainable: str | Collection[str] | Callable[[str], bool] | None = None,
        callback: Callable[[dict[str, Any]], bool | None] | None = None, seed: int = 0) -> History:
    """Train ``model`` in place on ``images`` (in its input format) and integer ``labels``; returns the History.

    ``optimizer``: "sgd" (Nesterov momentum, lr 0.05, weight decay 5e-4 by default), "adamw" (lr 0.002, decoupled
    decay 0.01) or an ``nn_core.optim`` optimizer; weight decay only on weights of rank >= 2. ``schedule``:
    cosine, step, constant or a callable step -> lr, after ``warmup_epochs`` of linear warm-up. ``augment``:
    True or an ``AugmentConfig`` (random affine, stroke thickness, continental 1s and 7s; for [N, 1, H, W]
    images in 0..1) or a function (images, labels, rng) -> images; not in the last ``clean_epochs`` epochs.
    ``val`` = (images, labels) is scored after every epoch. ``callback(record)`` gets every epoch's record and
    may return True to stop. ``trainable`` chooses the initializers to train (see ``select_parameters``).
    """
    images, labels = np.asarray(images), np.asarray(labels).astype(np.int64)
    if len(images) != len(labels) or not len(images):
        raise ValueError(f"{len(images)} images and {len(labels)} labels")
    order_seed, augment_seed, dropout_seed = np.random.SeedSequence(seed).spawn(3)
    order_rng, augment_rng = np.random.default_rng(order_seed), np.random.default_rng(augment_seed)
    opt = make_optimizer(optimizer, lr, momentum, nesterov, weight_decay)
    trainer = Trainer(model, opt, CrossEntropy(label_smoothing), trainable, np.random.default_rng(dropout_seed))
    steps_per_epoch = -(-len(images) // batch_size)
    lr_at = make_schedule(schedule, opt.lr, epochs * steps_per_epoch, int(warmup_epochs * steps_per_epoch))
    augmenter = _augmenter(augment)
    history = History()
    for epoch in range(1, epochs + 1):
        distort = augmenter is not None and epoch <= epochs - clean_epochs
        started, seen, loss_sum, correct = time.perf_counter(), 0, 0.0, 0
        for index in batches(len(images), batch_size, order_rng):
            x, y = images[index], labels[index]
            if distort:
                x = augmenter(x, y, augment_rng)
            loss, predicted = trainer.step(x, y, lr_at(trainer.steps))
            seen += len(index)
            loss_sum += loss * len(index)
            correct += int((predicted == y).sum())
        seconds = time.perf_counter() - started
        history.seconds += seconds
        history.images += seen
        trainer.commit()
        record: dict[str, Any] = {"epoch": epoch, "loss": round(loss_sum / seen, 5),
                                  "train_accuracy": round(correct / seen, 5), "seconds": round(seconds, 2),
                                  "images_per_second": round(seen / seconds, 1) if seconds else 0.0,
                                  "augmented": distort}
        if val is not None:
            record["val_accuracy"] = round(accuracy(model, val[0], np.asarray(val[1])), 5)
        history.epochs.append(record)
        if callback is not None and callback(record):
            break
    return history


def _augmenter(augment) -> Callable[[np.ndarray, np.ndarray, np.random.Generator], np.ndarray] | None:
    if augment is None or augment is False:
        return None
    if augment is True or isinstance(augment, AugmentConfig):
        config = AugmentConfig() if augment is True else augment
        return lambda x, y, rng: augment_batch(x, config, rng, y)
    if callable(augment):
        return augment
    raise ValueError("augment: True, an AugmentConfig or a function (images, labels, rng) -> images")


# ----------------------------------------------------------------------------------------------------------------
# python -m nn_core train


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", default=DEFAULT_DATA, help=f"folder with the MNIST IDX(.gz) files ({DEFAULT_DATA})")
    parser.add_argument("--out", default="assets/lenet5.onnx", help="where to write the ONNX model")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--optimizer", choices=["sgd", "adamw"], default="sgd", help="SGD (Nesterov) or AdamW")
    parser.add_argument("--lr", type=float, default=None, help="peak learning rate (default 0.05 sgd, 0.002 adamw)")
    parser.add_argument("--momentum", type=float, default=0.9)
    parser.add_argument("--weight-decay", type=float, default=None, help="default 5e-4 sgd, 0.01 adamw")
    parser.add_argument("--schedule", choices=["cosine", "step", "constant"], default="cosine")
    parser.add_argument("--warmup-epochs", type=float, default=0.5)
    parser.add_argument("--channels", type=int, nargs=2, default=[12, 24], metavar=("C1", "C2"))
    parser.add_argument("--hidden", type=int, nargs=2, default=[120, 84], metavar=("H1", "H2"))
    parser.add_argument("--batchnorm", action="store_true", help="BatchNormalization after each convolution "
                        "(kept in the file; the engine folds it into the convolution when it runs)")
    parser.add_argument("--dropout", type=float, default=0.0, help="dropout after the first dense layer")
    parser.add_argument("--label-smoothing", type=float, default=0.0)
    parser.add_argument("--no-augment", action="store_true", help="train on the images as they are")
    parser.add_argument("--clean-epochs", type=int, default=0, help="last epochs trained without augmentation")
    parser.add_argument("--limit", type=int, default=None, help="train on the first N images only (smoke runs)")
    parser.add_argument("--pen-data", action="append", default=[], metavar="NPZ",
                        help="also train on MNIST training digits drawn through the app's rasteriser (an npz of "
                        "images/labels/indices from `python tools/stroke_digits.py pen-mnist`); repeatable")
    parser.add_argument("--holdout", type=int, default=0,
                        help="keep the last N MNIST training digits (and their --pen-data drawings) out of "
                        "training, to fit the temperature on")
    parser.add_argument("--calibrate", action="store_true",
                        help="fit a temperature on the held-out digits (--holdout) and fold it into the last Gemm")
    parser.add_argument("--calibration-data", action="append", default=[], metavar="NPZ",
                        help="more digits (uint8 images/labels, never trained on: e.g. pen drawings from "
                        "`python tools/stroke_digits.py writers`) to fit the temperature on; repeatable")
    parser.add_argument("--threads", type=int, default=1,
                        help="BLAS threads (default 1: a second one only helps on an idle machine)")
    parser.add_argument("--quiet", action="store_true", help="no per-epoch lines")


def _load_pen(path: str, keep: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Pen drawings of MNIST training digits: (trained images, labels, held-out images, labels), split by the
    original digit's index so no held-out digit is trained on in any form."""
    with np.load(path) as data:
        images, labels, index = data["images"], data["labels"], data["indices"]
    train = index < keep
    return images[train], labels[train], images[~train], labels[~train]


def _load_digits(path: str) -> tuple[np.ndarray, np.ndarray]:
    with np.load(path) as data:
        return data["images"], data["labels"]


def _command_line(args: argparse.Namespace) -> str:
    argv = sys.argv[1:]
    if argv and argv[0] == "train":
        return "python -m nn_core " + shlex.join(argv)
    return f"python -m nn_core train --data {args.data} --out {args.out} --epochs {args.epochs} --seed {args.seed}"


def main(args: argparse.Namespace) -> int:
    from .builder import lenet5

    train_raw, train_labels = load_mnist(args.data, "train")
    test_raw, test_labels = load_mnist(args.data, "t10k")
    if args.limit:
        train_raw, train_labels = train_raw[: args.limit], train_labels[: args.limit]
    keep = len(train_raw) - args.holdout
    held_raw, held_labels = train_raw[keep:], train_labels[keep:]
    train_raw, train_labels = train_raw[:keep], train_labels[:keep]
    pen_sets = [_load_pen(path, keep) for path in args.pen_data]
    if pen_sets:
        train_raw = np.concatenate([train_raw] + [p[0] for p in pen_sets])
        train_labels = np.concatenate([train_labels] + [p[1] for p in pen_sets])
        held_raw = np.concatenate([held_raw] + [p[2] for p in pen_sets])
        held_labels = np.concatenate([held_labels] + [p[3] for p in pen_sets])
    train_images, test_images = to_input(train_raw), to_input(test_raw)
    train_labels, test_labels = train_labels.astype(np.int64), test_labels.astype(np.int64)
    if args.calibrate and not len(held_raw):
        raise SystemExit("--calibrate needs held-out digits: give --holdout N")
    model = load_proto(lenet5(args.seed, tuple(args.channels), tuple(args.hidden), args.batchnorm, args.dropout),
                       "lenet5")
    print(f"training on {len(train_images):,} images for {args.epochs} epochs, batch {args.batch_size}, "
          f"seed {args.seed}", file=sys.stderr)

    def report(record: dict) -> None:
        if not args.quiet:
            line = (f"epoch {record['epoch']}/{args.epochs}  loss {record['loss']:.4f}  {record['seconds']:.0f} s  "
                    f"{record['images_per_second']:,.0f} img/s")
            if "val_accuracy" in record:
                line += f"  test accuracy {100 * record['val_accuracy']:.2f} %"
            print(line, file=sys.stderr, flush=True)

    history = fit(model, train_images, train_labels, epochs=args.epochs, batch_size=args.batch_size,
                  optimizer=args.optimizer, lr=args.lr, momentum=args.momentum, weight_decay=args.weight_decay,
                  schedule=args.schedule, warmup_epochs=args.warmup_epochs, label_smoothing=args.label_smoothing,
                  augment=not args.no_augment, clean_epochs=args.clean_epochs, val=(test_images, test_labels),
                  callback=report, seed=args.seed)
    calibration = None
    if args.calibrate:
        from .evaluate import expected_calibration_error, fit_temperature, fold_temperature, softmax

        extra = [_load_digits(path) for path in args.calibration_data]
        held_raw = np.concatenate([held_raw] + [e[0] for e in extra])
        held_labels = np.concatenate([held_labels] + [e[1] for e in extra]).astype(np.int64)
        held = to_input(held_raw)
        logits = model.run({model.inputs[0].name: held})[model.outputs[0].name]
        temperature = fit_temperature(logits, held_labels)
        before = expected_calibration_error(softmax(logits), held_labels)
        after = expected_calibration_error(softmax(logits, temperature), held_labels)
        layer = fold_temperature(model, temperature)
        fitted_on = (f"{len(held_raw) - sum(len(e[0]) for e in extra):,} held-out MNIST training digits (the last "
                     f"{args.holdout:,}" + (" and their pen drawings)" if pen_sets else ")"))
        for path, (images, _) in zip(args.calibration_data, extra, strict=True):
            fitted_on += f" + {len(images):,} drawings from {Path(path).name}"
        calibration = {"temperature": round(temperature, 4), "folded_into": layer, "fitted_on": fitted_on,
                       "ece_before": round(100 * before, 2), "ece_after": round(100 * after, 2),
                       "note": "the logits in this file are already divided by the temperature: do not apply it "
                               "again"}
        print(f"temperature {temperature:.3f} folded into {layer}: ECE on the held-out digits "
              f"{100 * before:.2f} % -> {100 * after:.2f} %", file=sys.stderr)
    test_accuracy = accuracy(model, test_images, test_labels)
    optimizer = make_optimizer(args.optimizer, args.lr, weight_decay=args.weight_decay)
    training = {
        "data": f"MNIST training set ({len(train_images):,} images"
                + (f": {keep:,} MNIST digits and {len(train_images) - keep:,} of them drawn through the app's "
                   "rasteriser" if pen_sets else "") + (f"; {args.holdout:,} held out" if args.holdout else "")
                + "); accuracy measured on the 10,000 t10k images",
        "engine": "nn_core.fit: the graph's own initializers trained through its gradient plan",
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "optimizer": f"{args.optimizer} lr {optimizer.lr} {args.schedule} schedule, weight decay "
                     f"{optimizer.weight_decay}, label smoothing {args.label_smoothing}",
        "augmentation": "none" if args.no_augment else AugmentConfig().describe(),
        "augmentation_free_last_epochs": args.clean_epochs,
        "seed": args.seed,
        "command": _command_line(args),
        "seconds": round(history.seconds, 1),
        "images_per_second": round(history.images_per_second, 1),
        "test_accuracy": round(100 * test_accuracy, 2),
        "history": history.epochs,
    }
    doc = (f"LeNet-5 (conv {args.channels[0]}/{args.channels[1]}, dense {args.hidden[0]}/{args.hidden[1]}, ReLU, "
           f"max-pool{', batch norm' if args.batchnorm else ''}) trained by digitscope's NumPy engine on MNIST; "
           f"{100 * test_accuracy:.2f} % on the MNIST test set.")
    metadata = {"training": json.dumps(training), "test_accuracy": f"{100 * test_accuracy:.2f}"}
    if calibration is not None:
        metadata["calibration"] = json.dumps(calibration)
        doc += (f" Calibrated: logits divided by the temperature {calibration['temperature']} (folded into the "
                "weights).")
    model.save(args.out, metadata=metadata, doc_string=doc)
    print(f"test accuracy {100 * test_accuracy:.2f} %  ({len(test_images):,} MNIST test digits)")
    print(f"training time {history.seconds:.0f} s, {history.images_per_second:,.0f} images/s")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    _parser = argparse.ArgumentParser(prog="python -m nn_core.train")
    add_arguments(_parser)
    sys.exit(main(_parser.parse_args()))
