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
    """Pick columns of the last axis of X by index; a 1-D X gives a (1, k) result, as in onnxruntime.

    Constant indices (skl2onnx's SVC heads read 90 such columns a run) are checked once and only their range
    against each new width of X afterwards."""

    def __init__(self, node):
        super().__init__(node)
        indices = self.const(1)
        self.constant = None  # (indices, flat, lowest, highest) when the indices are an integer constant
        if indices is not None and indices.dtype.kind in "iu":
            flat = indices.reshape(-1)
            self.constant = (indices, flat, int(flat.min(initial=0)), int(flat.max(initial=-1)))

    def run(self, x, indices):
        if indices.dtype.kind not in "iu" or x.ndim == 0:
            raise self.fail(f"indices must be integers into an array, got {indices.dtype} and shape {x.shape}")
        constant = self.constant
        if constant is not None and indices is constant[0]:
            flat, lowest, highest = constant[1:]
        else:
            flat = indices.reshape(-1)
            lowest, highest = int(flat.min(initial=0)), int(flat.max(initial=-1))
        if lowest < 0 or highest >= x.shape[-1]:
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
            # each pair's two classes, for its vote: the first where the decision is positive
            self.pair_classes = np.array(self.pairs, dtype=np.int64).T.reshape(2, 1, -1)
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
        # every pair's vote at once, counted per row: one bincount over row * classes + the winning class
        classes, rows = len(self.labels), features.shape[0]
        winners = np.where(decisions > 0, self.pair_classes[0], self.pair_classes[1])
        winners += np.arange(rows, dtype=np.int64).reshape(-1, 1) * classes
        votes = np.bincount(winners.reshape(-1), minlength=rows * classes).reshape(rows, classes)
        # the most votes wins; a tie goes to the lower class index (argmax takes the first maximum)
        return self.labels[np.argmax(votes, axis=1)], self.post_transform(decisions).astype(F32)


# ----------------------------------------------------------------------------------------------------------------
# Binarizer, LabelEncoder, TreeEnsemble (ai.onnx.ml) and TfIdfVectorizer (default domain)


@register("Binarizer", 1, domain=ML_DOMAIN)
class Binarizer(Op):
    def __init__(self, node):
        super().__init__(node)
        threshold = self.attr("threshold", 0.0)
        if not isinstance(threshold, (int, float)):
            raise self.fail(f"attribute 'threshold' must be a number, got {threshold!r}")
        self.threshold = float(threshold)

    def run(self, x):
        return (x > self.threshold).astype(x.dtype)


class _Lookup:
    """A key -> value table in which a NaN key matches NaN (as onnxruntime's LabelEncoder does)."""

    def __init__(self, keys: list, values: list):
        self.table = {}
        self.nan_value = None
        for key, value in zip(keys, values):
            if isinstance(key, float) and key != key:
                self.nan_value = value
            else:
                self.table[key] = value

    def get(self, key, default):
        if isinstance(key, float) and key != key:
            return default if self.nan_value is None else self.nan_value
        return self.table.get(key, default)


@register("LabelEncoder", 2, domain=ML_DOMAIN)
class LabelEncoder(Op):
    """Map each element through ``keys_*`` -> ``values_*`` (or, from opset 4, ``keys_tensor``/``values_tensor``);
    elements with no key get the default of the values' type."""

    _DEFAULTS = {"floats": ("default_float", -0.0, np.float32), "int64s": ("default_int64", -1, np.int64),
                 "strings": ("default_string", "_Unused", object)}

    def __init__(self, node):
        super().__init__(node)
        keys, self.key_kind = self._pick("keys")
        values, value_kind = self._pick("values")
        if len(keys) != len(values):
            raise self.fail(f"{len(keys)} keys and {len(values)} values")
        if value_kind == "tensor":
            tensor = self.attr("values_tensor")
            self.dtype = tensor.dtype
            default = self.attr("default_tensor")
            if default is None:
                default = np.array(["_Unused"] if tensor.dtype.kind == "O" else [-1 if tensor.dtype.kind in "iu"
                                                                                  else -0.0]).astype(tensor.dtype)
            if not isinstance(default, np.ndarray) or default.size != 1:
                raise self.fail("attribute 'default_tensor' must hold one value")
            self.default = default.reshape(-1)[0].item() if default.dtype.kind != "O" else default.reshape(-1)[0]
        else:
            name, fallback, self.dtype = self._DEFAULTS[value_kind]
            self.default = self.attr(name, fallback)
            self.dtype = np.dtype(self.dtype)
        self.lookup = _Lookup(keys, values)
        self.max_elements = element_limit(self, 8)

    def _pick(self, prefix: str) -> tuple[list, str]:
        found = [(kind, self.attr(f"{prefix}_{kind}")) for kind in ("floats", "int64s", "strings", "tensor")
                 if self.attr(f"{prefix}_{kind}") is not None]
        if len(found) != 1:
            raise self.fail(f"exactly one of {prefix}_floats/int64s/strings/tensor must be given, got "
                            f"{[f'{prefix}_{k}' for k, _ in found] or 'none'}")
        kind, value = found[0]
        if kind == "tensor":
            if not isinstance(value, np.ndarray) or value.ndim != 1:
                raise self.fail(f"attribute '{prefix}_tensor' must be a 1-D tensor")
            return [v if value.dtype.kind == "O" else v.item() for v in value], "tensor"
        return list(value), kind

    def run(self, x):
        if x.size > self.max_elements:
            self.check_size(x.shape, self.dtype)
        if self.key_kind == "floats" or x.dtype.kind == "f":
            keys = (float(v) for v in x.flat)
        elif x.dtype.kind in "iu":
            keys = (int(v) for v in x.flat)
        else:
            keys = iter(x.flat)
        values = [self.lookup.get(k, self.default) for k in keys]
        out = np.empty(len(values), dtype=self.dtype)
        out[:] = values
        return out.reshape(x.shape)


_TREE_MODES = {"BRANCH_LEQ": 0, "BRANCH_LT": 1, "BRANCH_GTE": 2, "BRANCH_GT": 3, "BRANCH_EQ": 4, "BRANCH_NEQ": 5,
               "BRANCH_MEMBER": 6}


def _probit_free(op: Op, code: int):
    transforms = {0: "NONE", 1: "SOFTMAX", 2: "LOGISTIC", 3: "SOFTMAX_ZERO"}
    if code not in transforms:
        raise op.fail(f"post_transform {code} is not supported (NONE, SOFTMAX, LOGISTIC, SOFTMAX_ZERO are)")
    return POST_TRANSFORMS[transforms[code]]


@register("TreeEnsemble", 5, domain=ML_DOMAIN)
class TreeEnsemble(Op):
    """Every sample walks each tree from its root (all samples at once, one level per step) to a leaf; the leaves'
    weights go to their targets, aggregated by sum / average / min / max, then ``post_transform``."""

    def __init__(self, node):
        super().__init__(node)

        def ints(name: str, required: bool = True) -> np.ndarray:
            value = self.attr(name)
            if value is None:
                if required:
                    raise self.fail(f"attribute '{name}' is missing")
                return None
            array = np.asarray(value)
            if array.dtype.kind not in "iu" and array.size or array.ndim != 1:
                raise self.fail(f"attribute '{name}' must be a list of integers")
            return array.astype(np.int64)

        def floats(name: str, required: bool = True) -> np.ndarray | None:
            value = self.attr(name)
            if value is None:
                if required:
                    raise self.fail(f"attribute '{name}' (a tensor) is missing")
                return None
            array = np.asarray(value)
            if array.dtype.kind != "f" or array.ndim != 1:
                raise self.fail(f"attribute '{name}' must be a 1-D floating-point tensor")
            return array.astype(np.float64)

        self.splits = floats("nodes_splits")
        self.features = ints("nodes_featureids")
        self.modes = ints("nodes_modes")
        self.true_ids, self.false_ids = ints("nodes_truenodeids"), ints("nodes_falsenodeids")
        self.true_leaf, self.false_leaf = ints("nodes_trueleafs").astype(bool), ints("nodes_falseleafs").astype(bool)
        self.leaf_targets, self.leaf_weights = ints("leaf_targetids"), floats("leaf_weights")
        self.roots = ints("tree_roots")
        missing = ints("nodes_missing_value_tracks_true", required=False)
        count = len(self.splits)
        for name, array in (("nodes_featureids", self.features), ("nodes_modes", self.modes),
                            ("nodes_truenodeids", self.true_ids), ("nodes_falsenodeids", self.false_ids),
                            ("nodes_trueleafs", self.true_leaf), ("nodes_falseleafs", self.false_leaf)):
            if len(array) != count:
                raise self.fail(f"attribute '{name}' has {len(array)} entries, nodes_splits {count}")
        self.missing = np.zeros(count, bool) if missing is None or not missing.size else missing.astype(bool)
        if len(self.missing) != count:
            raise self.fail(f"nodes_missing_value_tracks_true has {len(self.missing)} entries, not {count}")
        leaves = len(self.leaf_weights)
        if len(self.leaf_targets) != leaves:
            raise self.fail(f"{len(self.leaf_targets)} leaf_targetids for {leaves} leaf_weights")
        self.n_targets = int(self.attr("n_targets", 0) or 0)
        if self.n_targets < 1 or self.n_targets > 1_000_000:
            raise self.fail(f"n_targets must be a positive count, got {self.n_targets}")
        if leaves and (self.leaf_targets.min() < 0 or self.leaf_targets.max() >= self.n_targets):
            raise self.fail(f"leaf_targetids must be in [0, {self.n_targets})")
        if count and (self.modes.min() < 0 or self.modes.max() > 6):
            raise self.fail("nodes_modes must be between 0 (BRANCH_LEQ) and 6 (BRANCH_MEMBER)")
        if count and self.features.min() < 0:
            raise self.fail("nodes_featureids must not be negative")
        for ids, is_leaf, what in ((self.true_ids, self.true_leaf, "true"), (self.false_ids, self.false_leaf,
                                                                             "false")):
            bound = np.where(is_leaf, leaves, count)
            if ((ids < 0) | (ids >= bound)).any():
                raise self.fail(f"nodes_{what}nodeids point outside the nodes or leaves")
        if not len(self.roots) or ((self.roots < 0) | (self.roots >= max(count, 1))).any():
            raise self.fail("tree_roots must name nodes")
        members = floats("membership_values", required=False)
        self.member_sets: dict[int, np.ndarray] = {}
        member_nodes = np.flatnonzero(self.modes == 6)
        if member_nodes.size:
            if members is None:
                raise self.fail("BRANCH_MEMBER nodes need 'membership_values'")
            groups = np.split(members, np.flatnonzero(np.isnan(members)) + 1)
            groups = [g[~np.isnan(g)] for g in groups if g.size and np.isnan(g[-1])]
            if len(groups) != member_nodes.size:
                raise self.fail(f"membership_values hold {len(groups)} sets for {member_nodes.size} member nodes")
            self.member_sets = dict(zip(member_nodes.tolist(), groups))
        aggregate = self.attr("aggregate_function", 1)
        if aggregate not in (0, 1, 2, 3):
            raise self.fail(f"aggregate_function must be 0..3 (AVERAGE, SUM, MIN, MAX), got {aggregate!r}")
        self.aggregate = aggregate
        self.post_transform = _probit_free(self, int(self.attr("post_transform", 0)))
        # a root that is a leaf on both sides to the same leaf is a tree of one leaf
        self.root_is_leaf = (self.true_leaf[self.roots] & self.false_leaf[self.roots]
                             & (self.true_ids[self.roots] == self.false_ids[self.roots])) if count else None
        self.width = int(self.features.max()) + 1 if count else 0

    def run(self, x):
        if x.ndim != 2:
            raise self.fail(f"the input must be [N, features], got {list(x.shape)}")
        if x.shape[1] < self.width:
            raise self.fail(f"the trees read feature {self.width - 1}; the input has {x.shape[1]} features")
        samples = x.shape[0]
        self.check_size((samples, self.n_targets), x.dtype)
        self.check_work(float(samples) * len(self.roots) * (len(self.splits) + 1))
        values = x.astype(np.float64)
        rows = np.arange(samples)
        if self.aggregate in (0, 1):
            result = np.zeros((samples, self.n_targets))
        else:
            info = np.finfo(x.dtype)
            result = np.full((samples, self.n_targets), info.max if self.aggregate == 2 else info.min,
                             dtype=np.float64)
        for tree, root in enumerate(self.roots):
            if self.root_is_leaf[tree]:
                leaf = np.full(samples, self.true_ids[root])
            else:
                leaf = self._walk(values, rows, int(root))
            weights, targets = self.leaf_weights[leaf], self.leaf_targets[leaf]
            if self.aggregate == 1:
                np.add.at(result, (rows, targets), weights)
            elif self.aggregate == 0:
                np.add.at(result, (rows, targets), weights / len(self.roots))
            elif self.aggregate == 2:
                np.minimum.at(result, (rows, targets), weights)
            else:
                np.maximum.at(result, (rows, targets), weights)
        return self.post_transform(result).astype(x.dtype)

    def _walk(self, values: np.ndarray, rows: np.ndarray, root: int) -> np.ndarray:
        node = np.full(len(rows), root)
        leaf = np.full(len(rows), -1)
        active = np.ones(len(rows), bool)
        for _ in range(len(self.splits) + 1):
            if not active.any():
                return leaf
            at = node[active]
            v = values[rows[active], self.features[at]]
            split, mode = self.splits[at], self.modes[at]
            go = np.select([mode == 0, mode == 1, mode == 2, mode == 3, mode == 4, mode == 5],
                           [v <= split, v < split, v >= split, v > split, v == split, v != split], False)
            for member, allowed in self.member_sets.items():
                here = at == member
                if here.any():
                    go[here] = np.isin(v[here], allowed)
            go |= np.isnan(v) & self.missing[at]
            nxt = np.where(go, self.true_ids[at], self.false_ids[at])
            done = np.where(go, self.true_leaf[at], self.false_leaf[at])
            index = np.flatnonzero(active)
            leaf[index[done]] = nxt[done]
            node[index] = nxt
            active[index[done]] = False
        raise self.fail("a tree does not reach a leaf: its nodes form a cycle")


@register("TfIdfVectorizer", 9)
class TfIdfVectorizer(Op):
    """Count the pool's n-grams (with up to ``max_skip_count`` tokens skipped between their items) in each row;
    TF counts, IDF weights what occurs, TFIDF weights the counts."""

    def __init__(self, node):
        super().__init__(node)
        self.min_n, self.max_n = int(self.attr("min_gram_length", 0)), int(self.attr("max_gram_length", 0))
        self.max_skip = int(self.attr("max_skip_count", 0))
        if not 1 <= self.min_n <= self.max_n or self.max_n > 64 or not 0 <= self.max_skip <= 1024:
            raise self.fail(f"gram lengths {self.min_n}..{self.max_n} (1..64) and max_skip_count {self.max_skip}"
                            " (0..1024) are out of range")
        self.mode = self.attr("mode")
        if self.mode not in ("TF", "IDF", "TFIDF"):
            raise self.fail(f"mode must be TF, IDF or TFIDF, got {self.mode!r}")
        ints, strings = self.attr("pool_int64s"), self.attr("pool_strings")
        if (ints is None) == (strings is None):
            raise self.fail("exactly one of pool_int64s and pool_strings must be given")
        pool = list(ints if ints is not None else strings)
        self.strings = strings is not None
        counts = [int(c) for c in self.attr("ngram_counts") or []]
        indexes = [int(i) for i in self.attr("ngram_indexes") or []]
        if not counts or counts[0] != 0 or any(b < a for a, b in zip(counts, counts[1:])) or counts[-1] > len(pool):
            raise self.fail(f"ngram_counts {counts[:8]} must start at 0 and rise within the pool of {len(pool)}")
        self.grams: dict[tuple, int] = {}
        position = 0
        for level, start in enumerate(counts):
            n = level + 1
            end = counts[level + 1] if level + 1 < len(counts) else len(pool)
            if (end - start) % n:
                raise self.fail(f"the pool's {n}-grams ({end - start} items) do not divide into {n}-grams")
            for k in range(start, end, n):
                if position >= len(indexes):
                    raise self.fail(f"ngram_indexes has {len(indexes)} entries, fewer than the pool's n-grams")
                self.grams[tuple(pool[k: k + n])] = indexes[position]
                position += 1
        if position != len(indexes):
            raise self.fail(f"ngram_indexes has {len(indexes)} entries for {position} n-grams")
        if indexes and min(indexes) < 0:
            raise self.fail("ngram_indexes must not be negative")
        self.width = max(indexes) + 1 if indexes else 0
        weights = self.attr("weights")
        self.weights = np.ones(self.width, np.float32) if not weights else np.asarray(weights, np.float32)
        if len(self.weights) < self.width:
            raise self.fail(f"{len(self.weights)} weights for {self.width} outputs")

    def run(self, x):
        if x.ndim not in (1, 2):
            raise self.fail(f"the input must be [C] or [N, C], got {list(x.shape)}")
        rows = x.reshape(1, -1) if x.ndim == 1 else x
        self.check_size((rows.shape[0], self.width), np.float32)
        self.check_work(float(rows.size) * (self.max_skip + 1) * self.max_n * 100, "counting n-grams")
        out = np.zeros((rows.shape[0], self.width), np.float32)
        for r, row in enumerate(rows):
            tokens = [str(t) for t in row] if self.strings else [int(t) for t in row]
            length = len(tokens)
            for n in range(self.min_n, self.max_n + 1):
                for skip in range(self.max_skip + 1 if n > 1 else 1):
                    step = skip + 1
                    for start in range(length - (n - 1) * step):
                        index = self.grams.get(tuple(tokens[start: start + (n - 1) * step + 1: step]))
                        if index is not None:
                            out[r, index] += 1
        if self.mode == "IDF":
            out = (out > 0).astype(np.float32) * self.weights[: self.width]
        elif self.mode == "TFIDF":
            out = out * self.weights[: self.width]
        return out.reshape(-1) if x.ndim == 1 else out
