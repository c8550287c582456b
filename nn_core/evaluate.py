"""`python -m nn_core eval MODEL`: a model's accuracy and confusion matrix on the MNIST test digits.

The model runs through the engine (``nn_core.load``), so this measures what the app will actually compute.
Pixels are scaled as the model's ``input_scale`` metadata says (default ``01``: ink 1.0 on 0.0).
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from .data import load_mnist, to_input
from .errors import ModelError
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


# ----------------------------------------------------------------------------------------------------------------
# calibration: does "90 %" mean right 90 % of the time?


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Row-wise softmax of ``logits / temperature`` in float64."""
    z = np.asarray(logits, np.float64).reshape(len(logits), -1) / temperature
    z = np.exp(z - z.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


def expected_calibration_error(probabilities: np.ndarray, labels: np.ndarray, bins: int = 15) -> float:
    """ECE (Guo et al., 2017): the gap between confidence (top probability) and accuracy, averaged over
    ``bins`` equal-width confidence bins weighted by how many predictions fall in each; 0 is perfect."""
    probabilities = np.asarray(probabilities, np.float64)
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == np.asarray(labels)
    which = np.minimum((confidence * bins).astype(np.int64), bins - 1)
    total = 0.0
    for b in range(bins):
        mask = which == b
        if mask.any():
            total += mask.sum() * abs(confidence[mask].mean() - correct[mask].mean())
    return float(total / max(len(labels), 1))


def fit_temperature(logits: np.ndarray, labels: np.ndarray, low: float = 0.05, high: float = 20.0) -> float:
    """Temperature scaling (Guo et al., 2017): the T > 0 minimising the negative log-likelihood of
    ``softmax(logits / T)`` on held-out digits, by golden-section search on log T (the NLL is unimodal in it)."""
    logits = np.asarray(logits, np.float64).reshape(len(logits), -1)
    rows, labels = np.arange(len(logits)), np.asarray(labels, np.int64)

    def nll(log_t: float) -> float:
        z = logits / np.exp(log_t)
        z = z - z.max(axis=1, keepdims=True)
        return float(np.mean(np.log(np.exp(z).sum(axis=1)) - z[rows, labels]))

    a, b = np.log(low), np.log(high)
    ratio = (np.sqrt(5) - 1) / 2
    c, d = b - ratio * (b - a), a + ratio * (b - a)
    fc, fd = nll(c), nll(d)
    for _ in range(60):
        if fc < fd:
            b, d, fd = d, c, fc
            c = b - ratio * (b - a)
            fc = nll(c)
        else:
            a, c, fc = c, d, fd
            d = a + ratio * (b - a)
            fd = nll(d)
    return float(np.exp((a + b) / 2))


def fold_temperature(model: Model, temperature: float) -> str:
    """Divides the logits of ``model`` by ``temperature`` for good, by scaling the weight and bias of the Gemm
    that produces its output (``(W x + b) / T``): every consumer of the file gets calibrated probabilities and
    the output stays logits. Returns the Gemm's name; ModelError when the output is not a Gemm's with
    initializer weights."""
    output = model.outputs[0].name
    node = next((n for n in model.nodes if output in n.outputs), None)
    weights = model.initializers
    if node is None or node.op_type != "Gemm" or node.inputs[1] not in weights:
        raise ModelError(f"{model.name}: its output '{output}' is not computed by a Gemm with stored weights")
    if sum(node.inputs[1] in n.inputs for n in model.nodes) != 1:
        raise ModelError(f"{model.name}: the weights of {node.describe()} are shared; not folding")
    scale = np.float32(1.0 / temperature)
    update = {node.inputs[1]: weights[node.inputs[1]] * scale}
    if len(node.inputs) > 2 and node.inputs[2]:
        if node.inputs[2] not in weights:
            raise ModelError(f"{model.name}: the bias of {node.describe()} is not a stored tensor; not folding")
        update[node.inputs[2]] = weights[node.inputs[2]] * scale
    model.set_initializers(update)
    return node.name


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
