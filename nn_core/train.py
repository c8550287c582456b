"""`python -m nn_core train`: trains the bundled LeNet-5 on MNIST with the NumPy layers and exports it to ONNX."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from dataclasses import dataclass, field

import numpy as np

from .augment import AugmentConfig, augment_batch
from .data import batches, load_mnist, to_input
from .export import export_onnx
from .layers import (
    BatchNorm2d,
    Conv2d,
    Dropout,
    Flatten,
    Layer,
    Linear,
    MaxPool2d,
    ReLU,
    Sequential,
    SoftmaxCrossEntropy,
)
from .optim import SGD, Adam, CosineSchedule, Optimizer, Schedule, StepSchedule

DEFAULT_DATA = "/work/shared/data/mnist"
LABELS = [str(d) for d in range(10)]


def build_lenet5(
    rng: np.random.Generator,
    channels: tuple[int, int] = (12, 24),
    hidden: tuple[int, int] = (120, 84),
    batchnorm: bool = True,
    dropout: float = 0.0,
) -> Sequential:
    """LeNet-5 with ReLU and max-pooling: conv5x5(pad 2) -> pool -> conv5x5 -> pool -> dense -> dense -> dense.

    28x28 -> C1x28x28 -> C1x14x14 -> C2x10x10 -> C2x5x5 -> hidden[0] -> hidden[1] -> 10 logits.
    """
    c1, c2 = channels

    def stage(conv: Conv2d, width: int) -> list[Layer]:
        return [conv, *([BatchNorm2d(width)] if batchnorm else []), ReLU(), MaxPool2d(2)]

    layers: list[Layer] = [
        *stage(Conv2d(1, c1, 5, padding=2, rng=rng), c1),
        *stage(Conv2d(c1, c2, 5, rng=rng), c2),
        Flatten(),
        Linear(c2 * 5 * 5, hidden[0], rng=rng),
        ReLU(),
        *([Dropout(dropout, rng=rng)] if dropout else []),
        Linear(hidden[0], hidden[1], rng=rng),
        ReLU(),
        Linear(hidden[1], 10, rng=rng),
    ]
    model = Sequential(*layers)
    model.layers[0].needs_input_grad = False  # nothing upstream of the image learns
    return model


def multiply_accumulates(model: Sequential, input_shape: tuple[int, ...] = (1, 28, 28)) -> int:
    """Multiply-accumulates of one inference (convolutions and dense layers, which dominate)."""
    total, x = 0, np.zeros((1, *input_shape), np.float32)
    for layer in model:
        y = layer.forward(x, training=False)
        if isinstance(layer, Conv2d):
            total += y.size * layer.weight.value[0].size
        elif isinstance(layer, Linear):
            total += layer.weight.value.size
        x = y
    return total


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", default=DEFAULT_DATA, help=f"folder with the MNIST IDX(.gz) files ({DEFAULT_DATA})")
    parser.add_argument("--out", default="assets/lenet5.onnx", help="where to write the ONNX model")
    parser.add_argument("--epochs", type=int, default=20)  # the bundled model: 20 epochs with the full augmentation
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--optimizer", choices=["sgd", "adam"], default="sgd", help="SGD (Nesterov) or AdamW")
    parser.add_argument("--lr", type=float, default=None, help="peak learning rate (default 0.05 sgd, 0.002 adam)")
    parser.add_argument("--momentum", type=float, default=0.9)
    parser.add_argument("--weight-decay", type=float, default=5e-4)
    parser.add_argument("--schedule", choices=["cosine", "step", "constant"], default="cosine")
    parser.add_argument("--warmup-epochs", type=float, default=0.5)
    # 12/24 rather than 16/32: as accurate on MNIST, and the engine then stays within 1.5x onnxruntime's time.
    parser.add_argument("--channels", type=int, nargs=2, default=[12, 24], metavar=("C1", "C2"))
    parser.add_argument("--hidden", type=int, nargs=2, default=[120, 84], metavar=("H1", "H2"))
    parser.add_argument("--no-batchnorm", action="store_true")
    parser.add_argument("--dropout", type=float, default=0.0, help="dropout after the first dense layer")
    parser.add_argument("--label-smoothing", type=float, default=0.0)
    parser.add_argument("--no-augment", action="store_true", help="train on the images as they are")
    parser.add_argument("--clean-epochs", type=int, default=0, help="last epochs trained without augmentation")
    parser.add_argument("--limit", type=int, default=None, help="train on the first N images only (smoke runs)")
    parser.add_argument("--threads", type=int, default=1,
                        help="BLAS threads (default 1: a second one only helps on an idle machine)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


@dataclass
class TrainingResult:
    model: Sequential
    seconds: float  # time spent in the training loop (forward, backward, update, augmentation)
    images: int  # images trained on, all epochs together
    history: list[dict] = field(default_factory=list)  # per epoch: loss, test accuracy, seconds

    @property
    def images_per_second(self) -> float:
        return self.images / self.seconds if self.seconds else 0.0


def accuracy(model: Sequential, images: np.ndarray, labels: np.ndarray, batch_size: int = 1000) -> float:
    predictions = model.predict(images, batch_size).argmax(axis=1)
    return float((predictions == labels).mean())


def _make_optimizer(args: argparse.Namespace, model: Sequential) -> Optimizer:
    if args.optimizer == "adam":
        return Adam(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    return SGD(model.parameters(), lr=args.lr, momentum=args.momentum, nesterov=True,
               weight_decay=args.weight_decay)


def _make_schedule(args: argparse.Namespace, steps_per_epoch: int) -> Schedule:
    total = args.epochs * steps_per_epoch
    warmup = int(args.warmup_epochs * steps_per_epoch)
    if args.schedule == "cosine":
        return CosineSchedule(args.lr, total, warmup)
    if args.schedule == "step":  # divide by 10 at 50 % and 75 % of training, roughly
        return StepSchedule(args.lr, max(total // 3, 1), gamma=0.1, warmup_steps=warmup)
    return Schedule(args.lr, warmup)


class Progress:
    """A one-line progress bar on stderr, rewritten in place (at most ~5 times a second)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._last = 0.0

    def update(self, text: str, force: bool = False) -> None:
        now = time.perf_counter()
        if self.enabled and (force or now - self._last > 0.2):
            self._last = now
            sys.stderr.write("\r" + text.ljust(100)[:118])
            sys.stderr.flush()

    def finish_line(self, text: str) -> None:
        if self.enabled:
            sys.stderr.write("\r" + " " * 118 + "\r")
        print(text, file=sys.stderr, flush=True)


def _format_seconds(seconds: float) -> str:
    minutes, seconds = divmod(int(seconds), 60)
    return f"{minutes}m{seconds:02d}s"


def fit(
    args: argparse.Namespace,
    train_images: np.ndarray,
    train_labels: np.ndarray,
    test_images: np.ndarray | None = None,
    test_labels: np.ndarray | None = None,
) -> TrainingResult:
    """Trains a fresh LeNet-5 as the arguments say; images are float32 [N, 1, 28, 28] in [0, 1]."""
    init_seed, order_seed, augment_seed = np.random.SeedSequence(args.seed).spawn(3)
    model = build_lenet5(np.random.default_rng(init_seed), tuple(args.channels), tuple(args.hidden),
                         batchnorm=not args.no_batchnorm, dropout=args.dropout)
    order_rng, augment_rng = np.random.default_rng(order_seed), np.random.default_rng(augment_seed)
    steps_per_epoch = -(-len(train_images) // args.batch_size)
    optimizer, schedule = _make_optimizer(args, model), _make_schedule(args, steps_per_epoch)
    criterion = SoftmaxCrossEntropy(args.label_smoothing)
    augmentation = AugmentConfig()
    progress = Progress(not args.quiet)
    result = TrainingResult(model, 0.0, 0)
    step = 0
    for epoch in range(1, args.epochs + 1):
        augment = not args.no_augment and epoch <= args.epochs - args.clean_epochs
        model.train()
        started, seen, loss_sum = time.perf_counter(), 0, 0.0
        for batch_number, index in enumerate(batches(len(train_images), args.batch_size, order_rng), start=1):
            x = train_images[index]
            if augment:
                x = augment_batch(x, augmentation, augment_rng, train_labels[index])
            optimizer.lr = schedule(step)
            optimizer.zero_grad()
            loss = criterion(model.forward(x, training=True), train_labels[index])
            model.backward(criterion.backward())
            optimizer.step()
            step += 1
            seen += len(index)
            loss_sum += loss * len(index)
            elapsed = time.perf_counter() - started
            rate = seen / elapsed
            remaining = (steps_per_epoch - batch_number) * args.batch_size / rate
            remaining += (args.epochs - epoch) * len(train_images) / rate
            progress.update(f"epoch {epoch}/{args.epochs}  batch {batch_number}/{steps_per_epoch}  "
                            f"loss {loss_sum / seen:.4f}  {rate:,.0f} img/s  ETA {_format_seconds(remaining)}")
        epoch_seconds = time.perf_counter() - started
        result.seconds += epoch_seconds
        result.images += seen
        record = {"epoch": epoch, "loss": round(loss_sum / seen, 5), "seconds": round(epoch_seconds, 1),
                  "augmented": augment}
        line = (f"epoch {epoch}/{args.epochs}  loss {loss_sum / seen:.4f}  {epoch_seconds:.0f} s  "
                f"{seen / epoch_seconds:,.0f} img/s")
        if test_images is not None:
            record["test_accuracy"] = accuracy(model, test_images, test_labels)
            line += f"  test accuracy {100 * record['test_accuracy']:.2f} %"
        result.history.append(record)
        progress.finish_line(line)
    model.eval()
    return result


def _command_line(args: argparse.Namespace) -> str:
    argv = sys.argv[1:]
    if argv and argv[0] == "train":
        return "python -m nn_core " + shlex.join(argv)
    return f"python -m nn_core train --data {args.data} --out {args.out} --epochs {args.epochs} --seed {args.seed}"


def main(args: argparse.Namespace) -> int:
    if args.lr is None:
        args.lr = 0.002 if args.optimizer == "adam" else 0.05
    train_raw, train_labels = load_mnist(args.data, "train")
    test_raw, test_labels = load_mnist(args.data, "t10k")
    if args.limit:
        train_raw, train_labels = train_raw[: args.limit], train_labels[: args.limit]
    train_images, test_images = to_input(train_raw), to_input(test_raw)
    train_labels, test_labels = train_labels.astype(np.int64), test_labels.astype(np.int64)
    print(f"training on {len(train_images):,} images for {args.epochs} epochs, batch {args.batch_size}, "
          f"seed {args.seed}", file=sys.stderr)
    result = fit(args, train_images, train_labels, test_images, test_labels)
    model = result.model
    test_accuracy = accuracy(model, test_images, test_labels)
    augmentation = "none" if args.no_augment else AugmentConfig().describe()
    training = {
        "data": f"MNIST training set ({len(train_images):,} images); accuracy measured on the 10,000 t10k images",
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "optimizer": f"{args.optimizer} lr {args.lr} {args.schedule} schedule, weight decay {args.weight_decay}",
        "augmentation": augmentation,
        "augmentation_free_last_epochs": args.clean_epochs,
        "seed": args.seed,
        "command": _command_line(args),
        "seconds": round(result.seconds, 1),
        "images_per_second": round(result.images_per_second, 1),
        "test_accuracy": round(100 * test_accuracy, 2),
        "history": result.history,
    }
    metadata = {
        "labels": json.dumps(LABELS),
        "input_scale": "01",
        "input_layout": "nchw",
        "input_description": "28x28 grey digit, ink 1.0 on background 0.0 (pixel/255), MNIST-style: the digit's "
                             "bounding box scaled into 20x20 keeping its aspect, centred by centre of mass",
        "output_kind": "logits",
        "training": json.dumps(training),
        "test_accuracy": f"{100 * test_accuracy:.2f}",
    }
    doc = (f"LeNet-5 (conv {args.channels[0]}/{args.channels[1]}, dense {args.hidden[0]}/{args.hidden[1]}, ReLU, "
           f"max-pool{', batch norm folded into the convolutions' if not args.no_batchnorm else ''}) trained by "
           f"digitscope's NumPy engine on MNIST; {100 * test_accuracy:.2f} % on the MNIST test set.")
    export_onnx(model, args.out, metadata=metadata, doc_string=doc, graph_name="lenet5")
    print(f"test accuracy {100 * test_accuracy:.2f} %  ({len(test_images):,} MNIST test digits)")
    print(f"training time {result.seconds:.0f} s, {result.images_per_second:,.0f} images/s; "
          f"{multiply_accumulates(model):,} multiply-accumulates per image")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    _parser = argparse.ArgumentParser(prog="python -m nn_core.train")
    add_arguments(_parser)
    sys.exit(main(_parser.parse_args()))
