"""`python -m nn_core eval MODEL`: a model's accuracy and confusion matrix on the MNIST test digits.

The model runs through the engine (``nn_core.load``), so this measures what the app will actually compute.
Pixels are scaled as the model's ``input_scale`` metadata says (default ``01``: ink 1.0 on 0.0).
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from .data import load_mnist, to_input
from .model import Model, load

DEFAULT_DATA = "/work/shared/data/mnist"

_SCALINGS = {
    "01": lambda x: x,
    "255": lambda x: x * np.float32(255),
    "mnist_norm": lambda x: (x - np.float32(0.1307)) / np.float32(0.3081),
    "m11": lambda x: x * np.float32(2) - np.float32(1),
    "inv01": lambda x: np.float32(1) - x,
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="path to an .onnx file")
    parser.add_argument("--data", default=DEFAULT_DATA, help=f"folder with the MNIST IDX(.gz) files ({DEFAULT_DATA})")
    parser.add_argument("--split", choices=["t10k", "train"], default="t10k", help="which MNIST split to score")
    parser.add_argument("--limit", type=int, default=None, help="score only the first N digits")
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--scale", choices=sorted(_SCALINGS), default=None,
                        help="pixel scaling (default: the model's input_scale metadata, else 01)")
    parser.add_argument("--threads", type=int, default=None, help="BLAS threads (set before NumPy loads)")


def predict(model: Model, images: np.ndarray, scale: str | None = None, batch_size: int = 500) -> np.ndarray:
    """Predicted class of every image (float32 [N, 1, 28, 28] in [0, 1]) through the engine."""
    spec = model.inputs[0]
    scaling = _SCALINGS[scale or model.metadata.get("input_scale", "01")]
    # Fit the images to the declared input rank: [N, 1, 28, 28], [N, 28, 28] or flat [N, 784].
    rank = len(spec.shape) if spec.shape else 4
    predictions = []
    for start in range(0, len(images), batch_size):
        x = scaling(images[start : start + batch_size])
        x = x.reshape(len(x), *((1, 28, 28), (28, 28), (784,))[{4: 0, 3: 1, 2: 2}.get(rank, 0)])
        scores = model.run({spec.name: x.astype(spec.dtype, copy=False)})[model.outputs[0].name]
        predictions.append(np.asarray(scores).reshape(len(x), -1).argmax(axis=1))
    return np.concatenate(predictions)


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, classes: int = 10) -> np.ndarray:
    """counts[true, predicted]."""
    counts = np.zeros((classes, classes), np.int64)
    np.add.at(counts, (labels.astype(np.int64), predictions.astype(np.int64)), 1)
    return counts


def format_confusion(counts: np.ndarray) -> str:
    width = max(5, len(str(counts.max())) + 1)
    header = "true\\pred" + "".join(f"{c:>{width}}" for c in range(len(counts))) + "   recall"
    lines = [header]
    for true, row in enumerate(counts):
        recall = row[true] / row.sum() if row.sum() else 0.0
        lines.append(f"{true:>9}" + "".join(f"{n:>{width}}" for n in row) + f"  {100 * recall:6.2f}%")
    return "\n".join(lines)


def main(args: argparse.Namespace) -> int:
    model = load(args.model)
    images, labels = load_mnist(args.data, args.split)
    if args.limit:
        images, labels = images[: args.limit], labels[: args.limit]
    predictions = predict(model, to_input(images), args.scale, args.batch_size)
    counts = confusion_matrix(labels, predictions)
    correct = int(np.trace(counts))
    print(f"{args.model}: accuracy {100 * correct / len(labels):.2f} % ({correct:,} of {len(labels):,} MNIST "
          f"{args.split} digits, {len(labels) - correct} errors)")
    print(format_confusion(counts))
    return 0


if __name__ == "__main__":
    _parser = argparse.ArgumentParser(prog="python -m nn_core.evaluate")
    add_arguments(_parser)
    sys.exit(main(_parser.parse_args()))
