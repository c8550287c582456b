"""Losses for classifiers: softmax cross-entropy with label smoothing, on whatever a model outputs.

A loss returns its value and its cotangent (the gradient of the loss with respect to the value it was computed
on); ``GradientPlan.backward`` takes it from there. ``CrossEntropy.bind(model)`` works out what the model's
class vector is — logits, probabilities or log-probabilities, from the output node's op (Softmax, LogSoftmax) or
the ``output_kind`` metadata — and where to start: under a final Softmax or LogSoftmax it computes on that node's
input (the logits), which is exact and stable, and the gradient never passes the normalisation at all.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import ModelError

OUTPUT_KINDS = ("logits", "probabilities", "log_probabilities")


def _targets(labels: np.ndarray, classes: int, smoothing: float, dtype) -> np.ndarray:
    """Smoothed one-hot targets: 1 - smoothing on the label, smoothing / classes spread over every class."""
    labels = np.asarray(labels).astype(np.int64, copy=False).reshape(-1)
    if labels.size and (labels.min() < 0 or labels.max() >= classes):
        raise ValueError(f"labels must be in [0, {classes}), got {labels.min()}..{labels.max()}")
    targets = np.full((labels.size, classes), smoothing / classes, dtype=dtype)
    targets[np.arange(labels.size), labels] += 1.0 - smoothing
    return targets


def softmax_cross_entropy(logits: np.ndarray, labels: np.ndarray, smoothing: float = 0.0
                          ) -> tuple[float, np.ndarray]:
    """Mean cross-entropy of softmax(logits) [N, K] against ``labels`` [N] (smoothed); returns (loss, dlogits)."""
    z = logits - logits.max(axis=1, keepdims=True)
    log_sum = np.log(np.exp(z).sum(axis=1, keepdims=True))
    log_p = z - log_sum
    targets = _targets(labels, logits.shape[1], smoothing, logits.dtype)
    n = logits.shape[0]
    loss = float(-(targets * log_p).sum() / n)
    grad = (np.exp(log_p) - targets) / np.asarray(n, logits.dtype)
    return loss, grad.astype(logits.dtype, copy=False)


def log_probability_cross_entropy(log_probs: np.ndarray, labels: np.ndarray, smoothing: float = 0.0
                                  ) -> tuple[float, np.ndarray]:
    """Cross-entropy when the model's output already is log-probabilities; returns (loss, dlog_probs)."""
    targets = _targets(labels, log_probs.shape[1], smoothing, log_probs.dtype)
    n = log_probs.shape[0]
    loss = float(-(targets * log_probs).sum() / n)
    return loss, (-targets / np.asarray(n, log_probs.dtype)).astype(log_probs.dtype, copy=False)


def probability_cross_entropy(probs: np.ndarray, labels: np.ndarray, smoothing: float = 0.0,
                              floor: float = 1e-7) -> tuple[float, np.ndarray]:
    """Cross-entropy when the model's output is probabilities (with no Softmax node to start under);
    probabilities are floored at ``floor`` so a confident mistake gives a large, finite gradient."""
    targets = _targets(labels, probs.shape[1], smoothing, probs.dtype)
    n = probs.shape[0]
    clipped = np.maximum(probs, np.asarray(floor, probs.dtype))
    loss = float(-(targets * np.log(clipped)).sum() / n)
    return loss, (-targets / (clipped * np.asarray(n, probs.dtype))).astype(probs.dtype, copy=False)


@dataclass
class BoundLoss:
    """The loss of one model: which value it is computed on, and how."""

    value: str  # the name of the value (a graph output, or the logits under a final Softmax/LogSoftmax)
    kind: str  # "logits", "probabilities" or "log_probabilities": what ``value`` holds
    output: str  # the graph output the classes are read from
    smoothing: float = 0.0

    def __call__(self, values: dict[str, np.ndarray], labels: np.ndarray) -> tuple[float, dict[str, np.ndarray]]:
        """(loss, {value name: cotangent}) for one forward run's ``values`` (a ``Tape.values``)."""
        scores = values[self.value]
        shape = scores.shape
        flat = scores.reshape(shape[0], -1) if scores.ndim != 2 else scores
        if self.kind == "logits":
            loss, grad = softmax_cross_entropy(flat, labels, self.smoothing)
        elif self.kind == "log_probabilities":
            loss, grad = log_probability_cross_entropy(flat, labels, self.smoothing)
        else:
            loss, grad = probability_cross_entropy(flat, labels, self.smoothing)
        return loss, {self.value: grad.reshape(shape)}

    def predictions(self, values: dict[str, np.ndarray]) -> np.ndarray:
        scores = values[self.value]
        return scores.reshape(scores.shape[0], -1).argmax(axis=1)


class CrossEntropy:
    """Softmax cross-entropy with label smoothing, for a classifier whatever its output is."""

    def __init__(self, label_smoothing: float = 0.0):
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        self.label_smoothing = label_smoothing

    def bind(self, model, output: str | None = None) -> BoundLoss:
        """Where and how this loss is computed for ``model`` (a ``nn_core.Model``); ModelError if its output is
        not a class vector [N, K]."""
        spec = next((o for o in model.outputs if o.name == output), None) if output else model.outputs[0]
        if spec is None:
            raise ModelError(f"{model.name}: no output named '{output}'")
        shape = spec.shape
        if shape is not None and (len(shape) < 2 or any(isinstance(d, int) and d != 1 for d in shape[2:])
                                  or (isinstance(shape[1], int) and shape[1] < 2)):
            raise ModelError(f"{model.name}: output '{spec.name}' {spec.describe_shape()} is not a class vector "
                             "[N, classes]")
        logits = _logits_under_normalisation(model, spec.name)
        if logits is not None:
            # start under the normalisation: the same loss, computed on the logits it normalises
            return BoundLoss(logits, "logits", spec.name, self.label_smoothing)
        kind = model.metadata.get("output_kind", "logits")
        if kind not in OUTPUT_KINDS:
            kind = "logits"
        return BoundLoss(spec.name, kind, spec.name, self.label_smoothing)


#: ops a class vector passes through unchanged in value (exporters end graphs with them)
_PASS_THROUGH = {"Identity", "Reshape", "Flatten", "Squeeze", "Unsqueeze"}


def _logits_under_normalisation(model, output: str) -> str | None:
    """The value a final Softmax / LogSoftmax / Log(Softmax) normalises, behind pass-through ops; None if the
    output is not produced that way (or is normalised over something other than the class axis)."""
    producers = {name: node for node in model.nodes for name in node.outputs}
    node = producers.get(output)
    while node is not None and node.op_type in _PASS_THROUGH:
        node = producers.get(node.inputs[0])
    if node is not None and node.op_type == "Log":
        inner = producers.get(node.inputs[0])
        node = inner if inner is not None and inner.op_type == "Softmax" else None
    if node is None or node.op_type not in ("Softmax", "LogSoftmax"):
        return None
    source = node.inputs[0]
    if not source or source in model.graph.constants or not _class_axis(node.attrs, model, source):
        return None
    return source


def _class_axis(attrs: dict, model, value: str) -> bool:
    """True when a Softmax/LogSoftmax with these attributes normalises over the class axis of its input: the
    last axis of a 2-D input (the only shape checked; the axis default is 1 before opset 13 and -1 after, the
    class axis of [N, K] either way)."""
    axis = attrs.get("axis")
    spec = next((v for v in model.inputs if v.name == value), None)
    rank = len(spec.shape) if spec is not None and spec.shape is not None else 2
    del spec
    if axis is None:
        return rank == 2
    return axis in (1, -1) and rank == 2
