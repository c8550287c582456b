"""The few ``ai.onnx.ml`` operators that scikit-learn exports (skl2onnx) of digit classifiers use.

Behaviour follows onnxruntime's implementations, which are the de-facto definition of this domain: labels are
int64 or string tensors, scores are float32 after the ``post_transform``.
"""

from __future__ import annotations

import numpy as np

from .registry import ML_DOMAIN, Op, register
from .shape import element_limit

F32 = np.float32


def _softmax(scores: np.ndarray) -> np.ndarray:
    shifted = np.exp(scores - scores.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def _softmax_zero(scores: np.ndarray) -> np.ndarray:
    """Softmax that leaves exact zeros at zero (onnxruntime's SOFTMAX_ZERO)."""
    shifted = np.where(scores == 0, 0.0, np.exp(scores - scores.max(axis=1, keepdims=True)))
    total = shifted.sum(axis=1, keepdims=True)
    return np.divide(shifted, total, out=np.zeros_like(shifted), where=total != 0)


POST_TRANSFORMS = {
    "NONE": lambda s: s,
    "SOFTMAX": _softmax,
    "LOGISTIC": lambda s: 1.0 / (1.0 + np.exp(-s)),
    "SOFTMAX_ZERO": _softmax_zero,
}


class _Classifier(Op):
    """Shared parsing of class labels and the score post-transform."""

    def __init__(self, node):
        super().__init__(node)
        ints, strings = self.attr("classlabels_ints"), self.attr("classlabels_strings")
        self.labels = np.array(ints, dtype=np.int64) if ints else np.array(strings or [], dtype=object)
        transform = self.attr("post_transform", "NONE")
        if transform not in POST_TRANSFORMS:
            raise self.fail(f"post_transform '{transform}' is not supported")
        self.post_transform = POST_TRANSFORMS[transform]

    @staticmethod
    def _features(x: np.ndarray) -> np.ndarray:
        x = x.astype(np.float64, copy=False)
        return x.reshape(1, -1) if x.ndim == 1 else x.reshape(x.shape[0], -1)


@register("LinearClassifier", 1, domain=ML_DOMAIN)
class LinearClassifier(_Classifier):
    def __init__(self, node):
        super().__init__(node)
        coefficients = np.array(self.attr("coefficients", []), dtype=np.float64)
        intercepts = self.attr("intercepts")
        self.rows = max(len(intercepts) if intercepts else len(self.labels), 1)
        if not len(self.labels) or coefficients.size % self.rows or not coefficients.size:
            raise self.fail(f"{coefficients.size} coefficients and {len(self.labels)} class labels do not make "
                            f"{self.rows} rows of weights")
        if self.rows != len(self.labels) and not (self.rows == 1 and len(self.labels) == 2):
            raise self.fail(f"{self.rows} score rows do not match {len(self.labels)} class labels")
        if not np.isfinite(coefficients).all():
            raise self.fail("coefficients must be finite")
        self.weights = coefficients.reshape(self.rows, -1).T
        self.intercepts = np.zeros(self.rows) if not intercepts else np.array(intercepts, dtype=np.float64)

    def run(self, x):
        features = self._features(x)
        if features.shape[1] != self.weights.shape[0]:
            raise self.fail(f"input of shape {list(x.shape)} has {features.shape[1]} features, the coefficients "
                            f"{self.weights.shape[0]}")
        scores = features @ self.weights + self.intercepts
        if self.rows == 1 and len(self.labels) == 2:
            # binary: one score for the positive class. onnxruntime reports [1 - p, p], where p is the logistic
            # of the score under LOGISTIC and the raw score otherwise (a softmax over one column would be 1)
            label = self.labels[(scores[:, 0] > 0).astype(np.int64)]
            positive = self.post_transform(scores) if self.post_transform is POST_TRANSFORMS["LOGISTIC"] else scores
            return label, np.concatenate([1.0 - positive, positive], axis=1).astype(F32)
        label = self.labels[np.argmax(scores, axis=1)]
        return label, self.post_transform(scores).astype(F32)


@register("Normalizer", 1, domain=ML_DOMAIN)
class Normalizer(Op):
    def __init__(self, node):
        super().__init__(node)
        self.norm = self.attr("norm", "MAX")
        if self.norm not in ("MAX", "L1", "L2"):
            raise self.fail(f"unknown norm '{self.norm}'")

    def run(self, x):
        rows = x.astype(F32, copy=False)
        rows = rows.reshape(1, -1) if rows.ndim == 1 else rows
        if self.norm == "MAX":
            norm = rows.max(axis=1, keepdims=True)
        elif self.norm == "L1":
            norm = np.abs(rows).sum(axis=1, keepdims=True)
        else:
            norm = np.sqrt((rows * rows).sum(axis=1, keepdims=True))
        # an all-zero row stays as it is instead of becoming NaN
        return np.divide(rows, norm, out=rows.copy(), where=norm != 0).astype(F32)


@register("ArrayFeatureExtractor", 1, domain=ML_DOMAIN)
class ArrayFeatureExtractor(Op):
    """Pick columns of the last axis of X by index; a 1-D X gives a (1, k) result, as in onnxruntime."""

    def run(self, x, indices):
        if indices.dtype.kind not in "iu" or x.ndim == 0:
            raise self.fail(f"indices must be integers into an array, got {indices.dtype} and shape {x.shape}")
        flat = indices.reshape(-1)
        if flat.size and (flat.max() >= x.shape[-1] or flat.min() < 0):
            raise self.fail(f"index out of range for last dim {x.shape[-1]} of shape {x.shape}")
        picked = np.take(x, flat, axis=-1)
        return picked.reshape(1, -1) if x.ndim == 1 else picked


@register("SVMClassifier", 1, domain=ML_DOMAIN)
class SVMClassifier(_Classifier):
    """Support-vector classifier: one-vs-one voting over kernel machines (SVC), or a linear machine per class.

    Without probability coefficients the scores output holds the raw decision values: one per class pair
    (i, j), i < j, in that order, for SVC; one per class for the linear form.
    """

    def __init__(self, node):
        super().__init__(node)
        params = self.attr("kernel_params") or [0.0, 0.0, 0.0]
        if len(params) != 3 or not np.isfinite(params).all():
            raise self.fail(f"kernel_params {params} must be 3 finite values (gamma, coef0, degree)")
        self.gamma, self.coef0, self.degree = float(params[0]), float(params[1]), float(params[2])
        self.kernel = self.attr("kernel_type", "LINEAR")
        if self.kernel not in ("LINEAR", "POLY", "RBF", "SIGMOID"):
            raise self.fail(f"unknown kernel_type '{self.kernel}'")
        if self.attr("prob_a"):
            raise self.fail("probability estimates (prob_a/prob_b) are not supported")
        classes = len(self.labels)
        self.rho = np.array(self.attr("rho", []), dtype=np.float64)
        coefficients = np.array(self.attr("coefficients", []), dtype=np.float64)
        per_class = self.attr("vectors_per_class")
        self.is_svc = bool(per_class)
        if self.is_svc:
            vectors = np.array(self.attr("support_vectors") or [], dtype=np.float64)
            total = sum(per_class)
            pairs = classes * (classes - 1) // 2
            if (classes < 2 or len(per_class) != classes or min(per_class) < 0 or not total
                    or vectors.size % total or coefficients.size != (classes - 1) * total
                    or len(self.rho) != pairs):
                raise self.fail(f"vectors_per_class {per_class[:16]}, {vectors.size} support vector values, "
                                f"{coefficients.size} coefficients and {len(self.rho)} rho do not fit "
                                f"{classes} classes")
            # one weight column per class pair over all support vectors
            self.check_size((total, pairs), np.float64, "pairwise weight table")
            self.check_work(total * pairs, "building the pairwise weight table")
            self.vectors = vectors.reshape(total, -1)
            self.vector_norms = (self.vectors ** 2).sum(axis=1)
            self.pairs, self.pair_weights = self._pair_weights(per_class, coefficients.reshape(classes - 1, -1))
        else:
            if not classes or not coefficients.size or coefficients.size % classes or not len(self.rho):
                raise self.fail(f"{coefficients.size} coefficients and {len(self.rho)} rho do not fit "
                                f"{classes} classes")
            self.weights = coefficients.reshape(classes, -1)
        self.width = (self.vectors if self.is_svc else self.weights).shape[1]
        # per input row: one kernel value per support vector, one decision per pair (or a score per class)
        self.columns = max(len(self.pairs), len(self.vectors)) if self.is_svc else classes
        self.max_rows = element_limit(self, 8) // max(self.columns, 1)

    @staticmethod
    def _pair_weights(per_class: list[int], coefficients: np.ndarray) -> tuple[list[tuple[int, int]], np.ndarray]:
        """One weight column per class pair (i, j) over all support vectors, so decisions are one matmul.

        libsvm's layout: the dual coefficient of a vector of class i against class j sits in row j-1 when
        j > i, row j when j < i.
        """
        starts = np.concatenate([[0], np.cumsum(per_class)])
        pairs, columns = [], []
        for i in range(len(per_class)):
            for j in range(i + 1, len(per_class)):
                column = np.zeros(coefficients.shape[1])
                column[starts[i]:starts[i + 1]] = coefficients[j - 1, starts[i]:starts[i + 1]]
                column[starts[j]:starts[j + 1]] = coefficients[i, starts[j]:starts[j + 1]]
                pairs.append((i, j))
                columns.append(column)
        return pairs, np.stack(columns, axis=1)

    def _kernel(self, x: np.ndarray, vectors: np.ndarray, norms: np.ndarray | None = None) -> np.ndarray:
        dots = x @ vectors.T
        if self.kernel == "LINEAR":
            return dots
        if self.kernel == "POLY":
            return (self.gamma * dots + self.coef0) ** self.degree
        if self.kernel == "SIGMOID":
            return np.tanh(self.gamma * dots + self.coef0)
        distances = (x * x).sum(axis=1, keepdims=True) + norms - 2.0 * dots
        return np.exp(-self.gamma * np.maximum(distances, 0.0))

    def run(self, x):
        features = self._features(x)
        if features.shape[1] != self.width:
            raise self.fail(f"input of shape {list(x.shape)} has {features.shape[1]} features, the model "
                            f"{self.width}")
        if features.shape[0] > self.max_rows:
            self.check_size((features.shape[0], self.columns), np.float64, "scores")
        if not self.is_svc:
            scores = self._kernel(features, self.weights) + self.rho[0]
            return self.labels[np.argmax(scores, axis=1)], self.post_transform(scores).astype(F32)
        decisions = self._kernel(features, self.vectors, self.vector_norms) @ self.pair_weights + self.rho
        votes = np.zeros((features.shape[0], len(self.labels)), dtype=np.int64)
        rows = np.arange(features.shape[0])
        for column, (i, j) in enumerate(self.pairs):
            winner = np.where(decisions[:, column] > 0, i, j)
            np.add.at(votes, (rows, winner), 1)
        # the most votes wins; a tie goes to the lower class index (argmax takes the first maximum)
        return self.labels[np.argmax(votes, axis=1)], self.post_transform(decisions).astype(F32)
