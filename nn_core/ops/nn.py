"""Neural-network kernels. Importing this module registers Conv and ConvTranspose (conv.py), the poolings
(pool.py), the normalizations (norm.py) and the operators defined here: the matrix products Gemm, MatMul and
Einsum, and the resamplers Resize and Upsample.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from . import conv, norm, pool  # noqa: F401  (importing registers their kernels)
from .activations import SMALL_SOFTMAX, ones_column, sigmoid, small_softmax_rows
from .caches import keep
from .conv import FusableOp, fold_batchnorm_into_conv
from .float8 import NARROW_FLOATS
from .float8 import cast as narrow_cast
from .gradients import sum_to_shape
from .registry import NodeSpec, Op, register
from .shape import broadcast_dims, element_limit, finite_attr, resolve_axes

__all__ = ["fold_batchnorm_into_conv"]


# ----------------------------------------------------------------------------------------------------------------
# matrix products


_FLOAT32, _FLOAT64 = np.dtype(np.float32), np.dtype(np.float64)
# the activations a dense layer applies by their kernels' own functions (optimize.FUSABLE_ACTIVATIONS kinds)
_CURVES: dict[str, Callable[[np.ndarray], np.ndarray]] = {"tanh": np.tanh, "sigmoid": sigmoid}


class _DenseActivation(FusableOp):
    """A dense layer's fused activation. A lone ReLU on the small vectors of a batch-1 dense layer is applied
    as one np.maximum against a 0-d zero of the output's type (the Activation object's dispatch cost more than
    the separate Relu kernel it replaces); anything else, and large outputs, go through the Activation. The
    same values."""

    relu_zero: np.ndarray | None = None  # set when the fused activations are exactly one ReLU
    # a following Tanh or Sigmoid (an MLP's squashing), absorbed: its kernel's own function, applied after the
    # other fused activations
    curve: Callable[[np.ndarray], np.ndarray] | None = None

    def fuse_activation(self, kind: str, params: dict[str, float]) -> bool:
        if self.normalizer is not None or self.curve is not None:  # they run after any other activation
            return False
        if kind in _CURVES:
            self.curve = _CURVES[kind]
            return True
        fused = super().fuse_activation(kind, params)
        if fused:
            only_relu = kind == "relu" and self.relu_zero is None and len(self.act.steps) == 1
            self.relu_zero = np.zeros((), np.float32) if only_relu else None
        return fused

    # a following Softmax / LogSoftmax kernel absorbed by ``fuse_normalizer``: a classifier's last layer and its
    # normalisation in one step, the normalisation done in place on the fresh product
    normalizer: Op | None = None

    def fuse_normalizer(self, kernel: Op) -> bool:
        """Absorb the Softmax or LogSoftmax ``kernel`` that is the only reader of this layer's output (after any
        fused activation). Return True if absorbed."""
        if self.normalizer is not None or kernel.op_type not in ("Softmax", "LogSoftmax"):
            return False
        self.normalizer = kernel
        self.softmax = kernel.op_type == "Softmax"
        return True

    softmax = False  # the absorbed normaliser is a Softmax (else a LogSoftmax)
    # the rank whose last axis the absorbed normaliser was found to normalise (its axes depend on the rank alone)
    last_axis_rank = -1

    def normalize(self, y: np.ndarray) -> np.ndarray:
        """The absorbed normaliser applied to the fresh product ``y``, over its last axis when that is the
        normaliser's axis and ``y`` is float32/float64 (other axes and types go to the kernel itself).

        Row sums are one BLAS product with a column of ones (~0.3 us; np.add.reduce costs ~0.7 us on a row of
        ten). LogSoftmax is ``y - max - log(sum(exp(y - max)))``, as its kernel. A small Softmax (a few rows of
        a few scores) is the Softmax kernel's own small-input form (activations.small_softmax_rows, which skips
        the shift by the maximum where the rows allow it); otherwise ``exp(y - max) / sum``. A NaN row is NaN
        either way. Sums in another order: equal within rounding. (A batch-1 classifier head
        spends ~2 us in this arithmetic: the checks around it are kept to a rank comparison.)"""
        dtype = y.dtype
        if (dtype is not _FLOAT32 and dtype is not _FLOAT64) or type(y) is not np.ndarray or not y.size:
            return self.normalizer.run(y)
        if y.ndim != self.last_axis_rank:
            last = y.ndim - 1
            if last < 0 or self.normalizer.axes(y) not in (last, (last,)):  # type: ignore[attr-defined]
                return self.normalizer.run(y)
            self.last_axis_rank = y.ndim
        width = y.shape[-1]
        rows = y if y.ndim == 2 else y.reshape(-1, width)
        ones = ones_column(width, dtype)  # row sums by BLAS
        softmax = self.softmax
        if softmax and rows.size <= SMALL_SOFTMAX:
            exps = small_softmax_rows(rows)
            return exps if exps.shape == y.shape else exps.reshape(y.shape)
        rows -= np.maximum.reduce(rows, axis=1, keepdims=True)
        if softmax:
            np.exp(rows, out=rows)
            rows /= rows.dot(ones)
        else:
            rows -= np.log(np.exp(rows).dot(ones))
        return rows.reshape(y.shape)

    def finish(self, y: np.ndarray) -> np.ndarray:
        """The fresh product ``y`` (bias added) through the fused activation, curve and normaliser."""
        if self.act is not None:
            self.activate(y)
        if self.curve is not None:
            y = self.curve(y)
        return y if self.normalizer is None else self.normalize(y)

    def activate(self, y: np.ndarray) -> None:
        zero = self.relu_zero
        if zero is None or type(y) is not np.ndarray or not y.ndim or y.size >= 4096:
            self.act(y)  # (large outputs: its same-shape zeros take NumPy's vectorised loop)
            return
        if zero.dtype is not y.dtype:  # (a 0-d zero of another type would promote y)
            zero = self.relu_zero = np.zeros((), y.dtype)
        np.maximum(y, zero, out=y)


@register("Gemm", 1)
class Gemm(_DenseActivation):
    """alpha * A' @ B' + beta * C. With a constant B (the usual weight) alpha and the transpose are applied
    once at load time; with a constant C, beta too. C always broadcasts: the legacy ``broadcast=0`` attribute
    of opsets < 7 only forbade what a well-formed model never needs."""

    def __init__(self, node: NodeSpec):
        super().__init__(node)
        self.alpha = finite_attr(self, "alpha", 1.0)
        self.beta = finite_attr(self, "beta", 1.0)
        self.trans_a = bool(self.attr("transA", 0))
        self.trans_b = bool(self.attr("transB", 0))
        b, c = self.const(1), self.const(2)
        if b is not None and b.ndim != 2:
            raise self.fail(f"B must be 2-D, got shape {list(b.shape)}")
        self.b = None if b is None else self._prepare_b(b)
        self.c = None if c is None else self._prepare_c(c)
        self.a_limit = _left_size_limit(self, self.b)
        self.product_limit = _product_limit(self)

    def check(self, a: np.ndarray, b: np.ndarray) -> None:
        """Refuse malformed operands, and a product over the size or work budget."""
        if a.ndim != 2 or b.ndim != 2:
            raise self.fail(f"A and B must be 2-D, got shapes {list(a.shape)} and {list(b.shape)}")
        m, k = a.shape[::-1] if self.trans_a else a.shape
        if b.shape[0] != k:
            raise self.fail(f"A {list(a.shape)} (transA={int(self.trans_a)}) and B (transB={int(self.trans_b)}) "
                            f"do not share an inner dimension")
        n = b.shape[1]
        self.check_size((m, n), a.dtype)
        self.check_work(m * k * n, f"the [{m}x{k}] @ [{k}x{n}] product")

    def _prepare_b(self, b: np.ndarray) -> np.ndarray:
        b = b.T if self.trans_b else b
        if self.alpha != 1.0:
            b = b * b.dtype.type(self.alpha) if b.dtype.kind == "f" else b * self.alpha
        return np.ascontiguousarray(b)

    def _prepare_c(self, c: np.ndarray) -> np.ndarray | None:
        if self.beta == 0.0:
            return None
        if self.beta == 1.0:
            return c
        return c * (c.dtype.type(self.beta) if c.dtype.kind == "f" else self.beta)

    def run(self, a, b, c=None):
        scale = None
        if self.b is not None:
            b = self.b
            if a.size > self.a_limit:
                self.check(a, b)
        else:
            # a run-time B (weights being trained) is used as it comes: BLAS reads a transposed view as is,
            # and alpha scales the (usually smaller) product instead of a copy of B
            b = b.T if self.trans_b else b
            scale = self.alpha if self.alpha != 1.0 else None
            size = a.size * b.size
            if size > self.product_limit or not size:
                self.check(a, b)
        if self.c is not None:
            c = self.c
        elif c is not None:
            c = self._prepare_c(c)
        # a constant B is 2-D: ndarray.dot is then matmul's product with ~0.35 us less dispatch per call
        y = (a.T if self.trans_a else a).dot(b) if self.b is not None else (a.T if self.trans_a else a) @ b
        if scale is not None:
            y *= y.dtype.type(scale) if y.dtype.kind == "f" else scale
        if c is not None:
            y += c
        if y.dtype != a.dtype:
            y = y.astype(a.dtype)
        return self.finish(y)

    def backward(self, inputs, outputs, grads):
        a, b = inputs[0], inputs[1]
        c = inputs[2] if len(inputs) > 2 else None
        g = grads[0]
        if g is None:
            return [None] * len(inputs)
        if self.act is not None or self.curve is not None or self.normalizer is not None:
            raise self.fail("has a fused activation: differentiate the unfused graph (GradientPlan)")
        g_ab = g * g.dtype.type(self.alpha) if self.alpha != 1.0 else g
        # Y = A' @ B' with A' = A.T if transA, B' = B.T if transB: two products, on transposed views (BLAS reads
        # them without a copy)
        b_used = b.T if self.trans_b else b
        da = b_used @ g_ab.T if self.trans_a else g_ab @ b_used.T
        a_used = a.T if self.trans_a else a
        db = g_ab.T @ a_used if self.trans_b else a_used.T @ g_ab
        result = [da.astype(a.dtype, copy=False), db.astype(b.dtype, copy=False)]
        if len(inputs) > 2:
            if c is None or c.dtype.kind != "f":
                result.append(None)
            else:
                dc = sum_to_shape(g, c.shape)
                if self.beta != 1.0:
                    dc = dc * dc.dtype.type(self.beta)
                result.append(dc.astype(c.dtype, copy=False))
        return result


@register("MatMul", 1)
class MatMul(_DenseActivation):
    """NumPy matmul semantics (batched, broadcast, 1-D promotion); a constant 2-D right operand is stored
    contiguous and a batched left operand is folded into one 2-D matmul."""

    def __init__(self, node: NodeSpec):
        super().__init__(node)
        b = self.const(1)
        self.b = None if b is None else np.ascontiguousarray(b)
        # a constant 2-D B bounds the work by the size of A alone; otherwise by the product of both sizes
        self.a_limit = _left_size_limit(self, self.b) if self.b is not None and self.b.ndim == 2 else -1
        self.product_limit = _product_limit(self)
        self.bias: np.ndarray | None = None  # a following Add of a constant row, absorbed (fuse_bias)

    def fuse_bias(self, bias: np.ndarray) -> bool:
        """Absorb the Add of a constant ``bias`` that is the only reader of this product (the bias of a dense
        layer exported as MatMul + Add): a 1-D float vector of B's width and dtype, added in place to the fresh
        product, which is what the Add computes. Return True if absorbed."""
        b = self.b
        if b is None or b.ndim != 2 or self.act is not None or self.curve is not None or self.normalizer is not None \
                or self.bias is not None or bias.ndim != 1 \
                or bias.shape[0] != b.shape[1] or bias.dtype != b.dtype or b.dtype.kind != "f":
            return False
        self.bias = bias
        return True

    def check(self, a: np.ndarray, b: np.ndarray) -> None:
        """Refuse malformed operands, and a product over the size or work budget (batch dims broadcast)."""
        if a.ndim == 0 or b.ndim == 0:
            raise self.fail(f"operands must not be scalars, got shapes {list(a.shape)} and {list(b.shape)}")
        a_shape = (1,) + a.shape if a.ndim == 1 else a.shape
        b_shape = b.shape + (1,) if b.ndim == 1 else b.shape
        m, k = a_shape[-2:]
        n = b_shape[-1]
        if b_shape[-2] != k:
            raise self.fail(f"shapes {list(a.shape)} and {list(b.shape)} do not share an inner dimension")
        batch = broadcast_dims(self, a_shape[:-2], b_shape[:-2])
        out = batch + ((m,) if a.ndim > 1 else ()) + ((n,) if b.ndim > 1 else ())
        self.check_size(out, np.result_type(a, b))
        self.check_work(math.prod(batch) * m * k * n, f"the {list(a.shape)} @ {list(b.shape)} product")

    def run(self, a, b):
        if self.b is not None:
            b = self.b
            if a.size > self.a_limit:
                self.check(a, b)
        else:
            size = a.size * b.size
            if size > self.product_limit or not size:
                self.check(a, b)
        # bfloat16 (float8): float32 products and sums, rounded back once to nearest even
        if a.dtype.kind == "V" and a.dtype.name in NARROW_FLOATS:
            dtype = a.dtype
            a, b = narrow_cast(a, np.dtype(np.float32)), narrow_cast(b, np.dtype(np.float32))
        else:
            dtype = None
        if a.ndim > 2 and b.ndim == 2:  # (..., K) @ (K, N) is one (prod(...), K) @ (K, N) product
            y = a.reshape(-1, a.shape[-1]).dot(b).reshape(a.shape[:-1] + b.shape[1:])
        elif a.ndim and b.ndim == 2:  # ndarray.dot: matmul's product here, with ~0.35 us less dispatch per call
            y = a.dot(b)
        else:
            y = np.matmul(a, b)
        if self.bias is not None:
            if y.dtype == self.bias.dtype:
                y += self.bias
            else:  # (a narrower A promotes nothing in place: the Add's own result)
                y = y + self.bias
        if self.act is not None:
            self.activate(y)
        if dtype is not None:
            y = narrow_cast(y, dtype)
        if self.curve is not None:
            y = self.curve(y)
        return y if self.normalizer is None else self.normalize(y)

    def backward(self, inputs, outputs, grads):
        a, b = inputs
        g = grads[0]
        if g is None:
            return [None, None]
        if self.act is not None or self.curve is not None or self.bias is not None or self.normalizer is not None:
            raise self.fail("has a fused activation or bias: differentiate the unfused graph (GradientPlan)")
        if a.ndim >= 2 and b.ndim == 2:  # (..., M, K) @ (K, N): one 2-D product each, batch folded into M
            a2 = a.reshape(-1, a.shape[-1])
            g2 = g.reshape(-1, g.shape[-1])
            da = (g2 @ b.T).reshape(a.shape)
            db = a2.T @ g2
            return [da.astype(a.dtype, copy=False), db.astype(b.dtype, copy=False)]
        # 1-D operands are promoted (a row for A, a column for B) and the promoted axis dropped from the output
        a2 = a[None, :] if a.ndim == 1 else a
        b2 = b[:, None] if b.ndim == 1 else b
        if a.ndim == 1 and b.ndim == 1:
            g2 = g.reshape(1, 1)
        elif a.ndim == 1:
            g2 = np.expand_dims(g, -2)
        elif b.ndim == 1:
            g2 = np.expand_dims(g, -1)
        else:
            g2 = g
        da = sum_to_shape(np.matmul(g2, np.swapaxes(b2, -1, -2)), a2.shape).reshape(a.shape)
        db = sum_to_shape(np.matmul(np.swapaxes(a2, -1, -2), g2), b2.shape).reshape(b.shape)
        return [da.astype(a.dtype, copy=False), db.astype(b.dtype, copy=False)]


def _product_limit(op: Op) -> int:
    """Below this product of the operands' sizes a matrix product is within both budgets (when not empty:
    with an empty inner dimension the product of sizes is 0 whatever the size of the output)."""
    return min(element_limit(op), int(op.node.limits.max_node_work))


def _left_size_limit(op: Op, b: np.ndarray | None) -> int:
    """For a constant 2-D (K, N) right operand: the largest size of the left one within both budgets (the work
    is size(A) * N and the output size(A) / K * N), or -1 (always check) when K is 0 or B is not known."""
    if b is None or b.ndim != 2 or b.shape[0] == 0:
        return -1
    k, n = b.shape
    n = max(n, 1)
    return min(int(op.node.limits.max_node_work) // n, element_limit(op) * k // n)


_EINSUM_LABELS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


@register("Einsum", 12)
class Einsum(Op):
    """np.einsum, after the output size and the work (the product of every label's dimension) are checked."""

    def __init__(self, node: NodeSpec):
        super().__init__(node)
        self.equation = str(self.attr("equation", "")).replace(" ", "")
        lhs, arrow, rhs = self.equation.partition("->")
        self.terms = [term.replace("...", ".") for term in lhs.split(",")]
        labels = "".join(self.terms)
        if arrow:
            self.output = rhs.replace("...", ".")
        else:  # implicit output: the labels used once, sorted, after the ellipsis dims
            self.output = ("." if "." in labels else "") + "".join(
                sorted(c for c in set(labels) if c != "." and labels.count(c) == 1))
        if (any(c not in _EINSUM_LABELS and c != "." for c in labels + self.output)
                or any(t.count(".") > 1 for t in self.terms) or self.output.count(".") > 1
                or any(c not in labels for c in self.output)
                or len(set(self.output)) != len(self.output)):
            raise self.fail(f"malformed equation {self.equation!r}")

    def check(self, inputs) -> None:
        if len(inputs) != len(self.terms):
            raise self.fail(f"equation {self.equation!r} has {len(self.terms)} operands, got {len(inputs)} inputs")
        dims: dict[str, int] = {}
        ellipses = []
        for term, x in zip(self.terms, inputs):
            named = len(term) - ("." in term)
            if x.ndim < named or ("." not in term and x.ndim != named):
                raise self.fail(f"term {term!r} of equation {self.equation!r} does not fit shape {list(x.shape)}")
            before = term.index(".") if "." in term else named
            after = named - before
            ellipses.append(x.shape[before:x.ndim - after])
            for label, size in zip(term[:before] + term[before + 1:] if "." in term else term,
                                   x.shape[:before] + x.shape[x.ndim - after:]):
                have = dims.get(label, 1)
                if size != have and have != 1 and size != 1:
                    raise self.fail(f"label {label!r} of equation {self.equation!r} is both {have} and {size}")
                dims[label] = max(have, size) if min(have, size) else 0
        broadcast = broadcast_dims(self, *ellipses) if ellipses else ()
        out = tuple(d for c in self.output for d in (broadcast if c == "." else (dims[c],)))
        self.check_size(out, np.result_type(*inputs))
        work = math.prod(dims.values()) * math.prod(broadcast) * max(len(inputs) - 1, 1)
        self.check_work(work, f"equation {self.equation!r}")

    def run(self, *inputs):
        self.check(inputs)
        dtype = inputs[0].dtype
        narrow = dtype.name in NARROW_FLOATS
        if narrow:  # bfloat16/float8: exact float32 operands, float32 sums, one rounding at the end
            inputs = tuple(narrow_cast(x, np.dtype(np.float32)) for x in inputs)
        try:
            result = np.einsum(self.equation, *inputs, optimize=len(inputs) > 2)
        except (ValueError, TypeError) as exc:
            shapes = [list(x.shape) for x in inputs]
            raise self.fail(f"equation {self.equation!r} on shapes {shapes}: {exc}") from None
        if narrow:
            return narrow_cast(np.asarray(result, dtype=np.float32), dtype)
        return np.asarray(result, dtype=dtype)

    def backward(self, inputs, outputs, grads):
        g = grads[0]
        if g is None:
            return [None] * len(inputs)
        terms, output, dims = self._explicit_terms(inputs)
        # each operand broadcast to the full size of its labels (einsum's size-1 broadcasting undone later)
        full = [np.broadcast_to(x, tuple(dims[c] for c in term)) if x.ndim else x
                for x, term in zip(inputs, terms)]
        unused = iter(sorted(_EINSUM_LABELS - set("".join(terms)) - set(output)))
        result = []
        for i, (x, term) in enumerate(zip(inputs, terms)):
            if x.dtype.kind not in "fc":
                result.append(None)
                continue
            # d/dx_i of sum(g * einsum(...)) = einsum(g, the other operands -> term_i); labels the others lack are
            # broadcast by a vector of ones, a label repeated in term_i (a diagonal) becomes a fresh label tied
            # to the first by an identity matrix
            operands, subscripts = [g, *full[:i], *full[i + 1:]], [output, *terms[:i], *terms[i + 1:]]
            present = set("".join(subscripts))
            target = ""
            for c in term:
                if c in target:
                    fresh = next(unused)
                    operands.append(np.eye(dims[c], dtype=g.dtype))
                    subscripts.append(c + fresh)
                    target += fresh
                else:
                    target += c
                    if c not in present:
                        operands.append(np.ones(dims[c], dtype=g.dtype))
                        subscripts.append(c)
                        present.add(c)
            grad = np.einsum(",".join(subscripts) + "->" + target, *operands, optimize=len(operands) > 2)
            result.append(sum_to_shape(np.asarray(grad), x.shape).astype(x.dtype, copy=False))
        return result

    def _explicit_terms(self, inputs) -> tuple[list[str], str, dict[str, int]]:
        """The equation's terms with every ellipsis spelled out as fresh labels (right-aligned, as broadcasting
        aligns them), and the size of every label (the largest, where size-1 dims broadcast)."""
        free = sorted(_EINSUM_LABELS - set("".join(self.terms)) - set(self.output))
        ranks = [x.ndim - (len(t) - 1) if "." in t else 0 for t, x in zip(self.terms, inputs)]
        width = max(ranks, default=0)
        ellipsis = "".join(free[:width])
        free = free[width:]
        terms = [t.replace(".", ellipsis[width - r:] if r else "") for t, r in zip(self.terms, ranks)]
        output = self.output.replace(".", ellipsis)
        dims: dict[str, int] = {}
        for term, x in zip(terms, inputs):
            for c, size in zip(term, x.shape):
                dims[c] = max(dims.get(c, 1), size) if size else 0
        return terms, output, dims


# ----------------------------------------------------------------------------------------------------------------
# Resize / Upsample: separable, one axis at a time; each output position along an axis reads a few input
# positions (taps) with weights, all computed once per (input shape, scales/sizes) and cached.


def _cubic_kernel(a: float):
    def weight(t: np.ndarray) -> np.ndarray:
        t = np.abs(t)
        near = ((a + 2) * t - (a + 3)) * t * t + 1
        far = ((a * t - 5 * a) * t + 8 * a) * t - 4 * a
        return np.where(t <= 1, near, np.where(t < 2, far, 0.0))

    return weight


def _linear_kernel(t: np.ndarray) -> np.ndarray:
    return np.clip(1 - np.abs(t), 0, 1)


def _cubic_slope(a: float):
    """The derivative of ``_cubic_kernel(a)``."""
    def slope(t: np.ndarray) -> np.ndarray:
        u = np.abs(t)
        near = (3 * (a + 2) * u - 2 * (a + 3)) * u
        far = (3 * a * u - 10 * a) * u + 8 * a
        return np.sign(t) * np.where(u <= 1, near, np.where(u < 2, far, 0.0))

    return slope


def _linear_slope(t: np.ndarray) -> np.ndarray:
    return np.where(np.abs(t) < 1, -np.sign(t), 0.0)


#: the largest interpolation matrix (output x input length of one axis) a gradient builds
_MAX_MATRIX = 1 << 22
# the forward multiplies by the interpolation matrix up to this many entries (a 256 -> 256 axis); the matrix's
# mostly-zero work grows with the product of the lengths, the tap-by-tap form's with the output's only
_MAX_DENSE = 1 << 16


class _AxisResample:
    """Resampling along one axis: gather ``index`` (out, taps) and sum with ``weight`` (or just gather)."""

    def __init__(self, axis: int, index: np.ndarray, weight: np.ndarray | None, outside: np.ndarray | None,
                 size: int = 0):
        self.axis, self.index, self.weight, self.outside = axis, index, weight, outside
        self.size = size  # the input's length along the axis
        self.matrix: np.ndarray | None = None  # (out, size) interpolation matrix, built by the first backward
        self.matrix32: np.ndarray | None = None  # the same in float32, for float32 images (_matrices_resampler)
        self.spec: tuple = (0, 1.0, None)  # (output length, scale, crop) it was planned for
        self.is_dense: bool | None = None  # see dense()
        self.counts: int | np.ndarray | None = None  # see repeats()
        self.counted = False

    def apply(self, x: np.ndarray, extrapolation: float) -> np.ndarray:
        if self.weight is None:
            y = np.take(x, self.index[:, 0], axis=self.axis)
        else:
            shape = [1] * x.ndim
            shape[self.axis] = -1
            y = None
            for tap in range(self.index.shape[1]):
                term = np.take(x, self.index[:, tap], axis=self.axis) * self.weight[:, tap].reshape(shape)
                y = term if y is None else y + term
        if self.outside is not None and self.outside.any():
            shape = [1] * x.ndim
            shape[self.axis] = -1
            y = np.where(self.outside.reshape(shape), extrapolation, y)
        return y

    def dense(self) -> bool:
        """Whether the forward can multiply by ``interpolation_matrix`` instead: interpolating weights, no
        position outside the crop (extrapolation), and a matrix of bounded size (decided once)."""
        if self.is_dense is None:
            self.is_dense = bool(self.weight is not None and (self.outside is None or not self.outside.any())
                                 and self.index.shape[0] * self.size <= _MAX_DENSE)
        return self.is_dense

    def repeats(self) -> int | np.ndarray | None:
        """For a nearest resampling whose picked positions never decrease (any scale of every mode but a
        reversed crop) and never fall outside the crop: how many times each input position is repeated (one
        count for all when they are equal), so that ``np.repeat`` makes the same output as ``apply``'s gather
        in one call without an index array; None otherwise. Decided once."""
        if not self.counted:
            index = self.index[:, 0] if self.weight is None and self.index.ndim == 2 and self.index.shape[1] else None
            if index is not None and (self.outside is None or not self.outside.any()) \
                    and bool(np.all(index[1:] >= index[:-1])) and self.size:
                counts = np.bincount(index, minlength=self.size)
                self.counts = int(counts[0]) if bool(np.all(counts == counts[0])) else counts
            self.counted = True
        return self.counts

    def interpolation_matrix(self, dtype: np.dtype | None = None) -> np.ndarray:
        """The (out, size) matrix this resampling multiplies the axis by: the same taps and weights as ``apply``
        (clipped taps that land on one pixel add up; positions outside the crop read nothing). Float64, or
        float32 when asked (kept too)."""
        if dtype == np.float32:
            if self.matrix32 is None:
                self.matrix32 = self.interpolation_matrix().astype(np.float32)
            return self.matrix32
        if self.matrix is None:
            out, taps = self.index.shape
            matrix = np.zeros((out, self.size))
            weight = np.ones((out, taps)) if self.weight is None else self.weight
            np.add.at(matrix, (np.repeat(np.arange(out), taps), self.index.reshape(-1)), weight.reshape(-1))
            if self.outside is not None:
                matrix[self.outside] = 0.0
            self.matrix = matrix
        return self.matrix

    def transpose(self, grad: np.ndarray) -> np.ndarray:
        """The gradient with respect to the input of ``apply`` (the interpolation's transpose) from its output's."""
        if self.index.shape[0] * self.size > _MAX_MATRIX:  # a long axis: scatter-add tap by tap instead
            moved = np.moveaxis(grad, self.axis, 0)
            if self.outside is not None:
                moved = np.where(self.outside.reshape((-1,) + (1,) * (moved.ndim - 1)), 0, moved)
            out = np.zeros((self.size,) + moved.shape[1:], dtype=grad.dtype)
            for tap in range(self.index.shape[1]):
                term = moved if self.weight is None else \
                    moved * self.weight[:, tap].reshape((-1,) + (1,) * (moved.ndim - 1))
                np.add.at(out, self.index[:, tap], term)
            return np.moveaxis(out, 0, self.axis)
        matrix = self.interpolation_matrix()
        if grad.dtype != np.float64:
            matrix = matrix.astype(np.float32)
        moved = np.tensordot(grad, matrix, axes=([self.axis], [0]))  # the axis comes last
        return np.moveaxis(moved, -1, self.axis)


class _ResizeBase(Op):
    """Shared coordinate arithmetic of Resize (all opsets) and Upsample."""

    mode = "nearest"
    transform = "asymmetric"
    nearest_mode = "simple"  # legacy (Upsample, Resize-10): floor when enlarging, ceil when shrinking
    cubic_a = -0.75
    exclude_outside = False
    antialias = False
    extrapolation = 0.0

    def source_coordinates(self, out: int, size: int, scale: float, roi: tuple[float, float] | None):
        """Input coordinate of each output position along one axis, and which of them fall outside the crop."""
        # nearest: float32 arithmetic, as onnxruntime: it decides which side of a pixel boundary a coordinate
        # such as 3 / 0.6 falls on. Interpolation weights are smooth in the coordinates: float64 keeps them (and
        # their gradients with respect to the scales and the crop) exact
        wide = np.float32 if self.mode == "nearest" else np.float64
        y = np.arange(out, dtype=wide)
        scale = wide(scale)
        resized = scale * wide(size)  # the reference semantics use the un-rounded output length
        mode = self.transform
        outside = None
        if mode == "align_corners":
            x = np.zeros(out) if resized == 1 else y * (size - 1) / (resized - 1)
        elif mode == "asymmetric":
            x = y / scale
        elif mode == "pytorch_half_pixel":
            x = np.full(out, -0.5) if resized == 1 else (y + 0.5) / scale - 0.5
        elif mode == "tf_half_pixel_for_nn":
            x = (y + 0.5) / scale
        elif mode == "half_pixel_symmetric":
            offset = size / 2 * (1 - out / resized)
            x = offset + (y + 0.5) / scale - 0.5
        elif mode == "tf_crop_and_resize":
            start, end = roi if roi is not None else (0.0, 1.0)
            if resized == 1:
                x = np.full(out, (end - start) * (size - 1) / 2)
            else:
                x = y * (end - start) * (size - 1) / (resized - 1)
            x = x + start * (size - 1)
            outside = (x < 0) | (x > size - 1)
        elif mode == "half_pixel":
            x = (y + 0.5) / scale - 0.5
        else:
            raise self.fail(f"unsupported coordinate_transformation_mode '{mode}'")
        return x.astype(np.float64), outside

    def coordinate_slopes(self, out: int, size: int, scale: float, roi) -> dict[str, np.ndarray]:
        """How the input coordinate of each output position moves with the scale and the crop's start and end
        (the derivatives of ``source_coordinates``)."""
        y = np.arange(out, dtype=np.float64)
        resized = scale * size
        mode = self.transform
        zero = np.zeros(out)
        if mode == "align_corners":
            return {"scale": zero if resized == 1 else -y * (size - 1) * size / (resized - 1) ** 2}
        if mode == "asymmetric":
            return {"scale": -y / scale ** 2}
        if mode == "pytorch_half_pixel":
            return {"scale": zero if resized == 1 else -(y + 0.5) / scale ** 2}
        if mode == "half_pixel_symmetric":
            return {"scale": out / (2 * scale ** 2) - (y + 0.5) / scale ** 2}
        if mode == "tf_crop_and_resize":
            start, end = roi if roi is not None else (0.0, 1.0)
            if resized == 1:
                return {"scale": zero, "start": zero + (size - 1) / 2, "end": zero + (size - 1) / 2}
            along = y * (size - 1) / (resized - 1)
            return {"scale": -along * (end - start) * size / (resized - 1), "start": (size - 1) - along,
                    "end": along}
        return {"scale": -(y + 0.5) / scale ** 2}  # half_pixel, tf_half_pixel_for_nn

    def axis_plan(self, axis: int, size: int, out: int, scale: float, roi) -> _AxisResample:
        x, outside = self.source_coordinates(out, size, scale, roi)
        if self.mode == "nearest":
            return _AxisResample(axis, self._nearest(x, scale, size)[:, None], None, outside, size)
        # pixel left of x (strictly, so the ratio is in (0, 1]) and the taps around it
        left = np.ceil(x).astype(np.int64) - 1
        ratio = x - left
        if self.mode == "linear":
            kernel, radius = _linear_kernel, 1
        elif self.mode == "cubic":
            kernel, radius = _cubic_kernel(self.cubic_a), 2
        else:
            raise self.fail(f"unsupported mode '{self.mode}'")
        # antialiasing widens the kernel by 1/scale when shrinking
        stretch = min(scale, 1.0) if self.antialias else 1.0
        first = math.floor(-radius / stretch) + 1
        offsets = np.arange(first, 2 - first)
        index = left[:, None] + offsets[None, :]
        weight = kernel(stretch * (offsets[None, :] - ratio[:, None]))
        if self.exclude_outside:
            weight = np.where((index < 0) | (index >= size), 0.0, weight)
        total = weight.sum(axis=1, keepdims=True)
        weight = weight / np.where(total == 0, 1.0, total)
        return _AxisResample(axis, np.clip(index, 0, size - 1), weight, outside, size)

    def weight_slope(self, size: int, out: int, scale: float, roi, parameter: str) -> np.ndarray | None:
        """The derivative of ``axis_plan``'s (out, taps) weights with respect to the scale or the crop's start or
        end (None for nearest sampling, piecewise constant in them)."""
        if self.mode == "nearest":
            return None
        x, _ = self.source_coordinates(out, size, scale, roi)
        dx = self.coordinate_slopes(out, size, scale, roi)[parameter][:, None]
        left = np.ceil(x).astype(np.int64) - 1
        ratio = x - left
        if self.mode == "linear":
            kernel, slope, radius = _linear_kernel, _linear_slope, 1
        else:
            kernel, slope, radius = _cubic_kernel(self.cubic_a), _cubic_slope(self.cubic_a), 2
        stretch = min(scale, 1.0) if self.antialias else 1.0
        dstretch = 1.0 if self.antialias and scale < 1.0 and parameter == "scale" else 0.0
        first = math.floor(-radius / stretch) + 1
        offsets = np.arange(first, 2 - first)[None, :]
        index = left[:, None] + offsets
        t = stretch * (offsets - ratio[:, None])
        raw = kernel(t)
        draw = slope(t) * (dstretch * (offsets - ratio[:, None]) - stretch * dx)
        if self.exclude_outside:
            beyond = (index < 0) | (index >= size)
            raw = np.where(beyond, 0.0, raw)
            draw = np.where(beyond, 0.0, draw)
        total = raw.sum(axis=1, keepdims=True)
        safe = np.where(total == 0, 1.0, total)
        return (draw - raw / safe * draw.sum(axis=1, keepdims=True)) / safe

    def _nearest(self, x: np.ndarray, scale: float, size: int) -> np.ndarray:
        mode = self.nearest_mode
        if mode == "simple":
            picked = np.ceil(x) if scale < 1 else np.floor(x)
        elif mode == "floor":
            picked = np.floor(x)
        elif mode == "ceil":
            picked = np.ceil(x)
        elif mode == "round_prefer_ceil":
            picked = np.floor(x + 0.5)
        elif mode == "round_prefer_floor":
            picked = np.ceil(x - 0.5)
        else:
            raise self.fail(f"unsupported nearest_mode '{mode}'")
        return np.clip(picked.astype(np.int64), 0, size - 1)

    def taps(self, scale: float) -> int:
        """Input positions each output position reads along an axis (as ``axis_plan`` lays them out)."""
        if self.mode == "nearest":
            return 1
        radius = 2 if self.mode == "cubic" else 1
        stretch = min(scale, 1.0) if self.antialias else 1.0
        return 2 - 2 * (math.floor(-radius / stretch) + 1)

    def build_plans(self, shape: tuple[int, ...], dtype, specs) -> list[_AxisResample]:
        """``axis_plan`` of each (axis, output length, scale, crop), once the tables, every intermediate result
        (axes are resampled one after another) and the total work are checked against the budgets."""
        wide = dtype if self.mode == "nearest" else np.float64  # interpolation weights are float64
        current = list(shape)
        work = 0
        for axis, out, scale, _ in specs:
            if out < 0 or (out and not shape[axis]):
                raise self.fail(f"cannot resize axis {axis} of length {shape[axis]} to {out}")
            taps = self.taps(scale)
            # (a tiny antialiasing scale widens the kernel to billions of taps even for an empty output)
            self.check_size((max(out, 1), taps), np.float64, f"resampling table of axis {axis} (scale {scale:g})")
            current[axis] = out
            self.check_size(current, wide, f"resized shape {current}")
            work += math.prod(current) * taps
        self.check_work(work, "resampling")
        plans = []
        for axis, out, scale, crop in specs:
            plan = self.axis_plan(axis, shape[axis], out, scale, crop)
            plan.spec = (out, scale, crop)
            plans.append(plan)
        return plans

    def __init__(self, node: NodeSpec):
        super().__init__(node)
        # (input dtype, the plans' key) -> the resampler made for them (see resample)
        self.resamplers: dict[tuple, Callable[[np.ndarray], np.ndarray]] = {}

    def resample(self, x: np.ndarray, key: tuple, rest) -> np.ndarray:
        """``x`` resampled by the resampler kept under ``key`` (what ``plans_for(x, rest)`` depends on) and x's
        dtype, made the first time: later calls skip the plan look-up and the choice of strategy."""
        run = self.resamplers.get((x.dtype, key))
        if run is None:
            run = keep(self.resamplers, (x.dtype, key), self.resampler(x.shape, x.dtype, self.plans_for(x, rest)))
        return run(x)

    def resampler(self, shape: tuple[int, ...], dtype: np.dtype, plans: list[_AxisResample]
                  ) -> Callable[[np.ndarray], np.ndarray]:
        """The resampling by ``plans`` of an input of ``shape`` and ``dtype``, its strategy and operands chosen
        here once, so a call is only the NumPy calls of the strategy."""
        if plans and dtype.kind == "f" and all(plan.dense() for plan in plans):
            return self._matrices_resampler(shape, dtype, plans)
        if plans and all(plan.repeats() is not None for plan in plans):
            repeats = [(plan.repeats(), plan.axis) for plan in plans]

            def repeat(x: np.ndarray) -> np.ndarray:
                y = x
                for counts, axis in repeats:
                    y = y.repeat(counts, axis=axis)
                return y

            return repeat
        return lambda x: self._gather_resample(x, plans)

    def _gather_resample(self, x: np.ndarray, plans: list[_AxisResample]) -> np.ndarray:
        y = x
        for plan in plans:
            y = plan.apply(y, self.extrapolation)
        if y is x:
            return x.copy()
        if y.dtype != x.dtype:
            y = np.rint(y) if x.dtype.kind in "iu" else y
            y = y.astype(x.dtype)
        return y

    @staticmethod
    def _matrices_resampler(shape: tuple[int, ...], dtype: np.dtype, plans: list[_AxisResample]
                            ) -> Callable[[np.ndarray], np.ndarray]:
        """An interpolating resize as one matrix product per axis (the weights ``apply`` sums tap by tap, as
        the (out, size) matrix of the backward): two BLAS calls for an image instead of a gather, a multiply and
        an add per tap and axis on float64 copies, 35 -> 9 us on a (1, 4, 14, 14) bilinear upsampling. A float32
        image is multiplied in float32 (as onnxruntime does; ~3x faster again than converting it to float64 and
        back), other floats in float64: sums in another order, equal within the type's rounding. The operands
        and every intermediate shape are laid out here, for an input of ``shape``."""
        wide = np.dtype(np.float32) if dtype == np.float32 else np.dtype(np.float64)
        last = len(shape) - 1
        current = list(shape)
        # per axis: (matrix, (rows, length) to view the last axis's input in, or None, the shape after the axis)
        steps: list[tuple[np.ndarray, tuple[int, int] | None, tuple[int, ...]]] = []
        for plan in plans:
            matrix = plan.interpolation_matrix(wide)
            rows = (math.prod(current[:last]), current[last]) if plan.axis == last else None
            current[plan.axis] = matrix.shape[0]
            # (the last axis: one 2-D product over all the rows, np.matmul would loop over the leading axes)
            steps.append((np.ascontiguousarray(matrix.T) if rows else matrix, rows, tuple(current)))

        def run(x: np.ndarray) -> np.ndarray:
            y = x if x.dtype == wide else x.astype(wide)  # (every step below makes a new array: x is never written)
            for (matrix, rows, after), plan in zip(steps, plans, strict=True):
                if rows is not None:
                    y = y.reshape(rows).dot(matrix).reshape(after)
                elif plan.axis == last - 1:
                    y = np.matmul(matrix, y)
                else:
                    y = np.moveaxis(np.tensordot(matrix, y, axes=([1], [plan.axis])), 0, plan.axis)
            return y if y.dtype == x.dtype else y.astype(x.dtype)

        return run

    def plans_for(self, x: np.ndarray, rest) -> list[_AxisResample]:
        raise NotImplementedError

    def backward(self, inputs, outputs, grads):
        x, grad = inputs[0], grads[0]
        if grad is None:
            return [None] * len(inputs)
        plans = self.plans_for(x, inputs[1:])
        result: list[np.ndarray | None] = [None] * len(inputs)
        dx = grad
        for plan in reversed(plans):
            dx = plan.transpose(dx)
        result[0] = dx.astype(x.dtype, copy=False)
        # the scales and the crop (roi) place the sampling points: interpolating modes are smooth in them
        scales_at, roi_at, axes = self.coordinate_inputs(x, inputs[1:])
        if self.mode == "nearest" or (scales_at is None and roi_at is None):
            return result
        wanted = []
        if scales_at is not None and inputs[scales_at].dtype.kind == "f":
            wanted.append(("scale", scales_at, 0))
        if roi_at is not None and inputs[roi_at].dtype.kind == "f":
            wanted += [("start", roi_at, 0), ("end", roi_at, len(axes))]
        for _, at, _ in wanted:
            result[at] = np.zeros(inputs[at].shape, inputs[at].dtype)
        for k, plan in enumerate(plans):
            if plan.axis not in axes:
                continue
            out, scale, crop = plan.spec
            for parameter, at, offset in wanted:
                if parameter != "scale" and crop is None:
                    continue
                slope = self.weight_slope(x.shape[plan.axis], out, scale, crop, parameter)
                moved = _AxisResample(plan.axis, plan.index, slope, plan.outside, plan.size)
                z = x
                for other in plans[:k] + [moved] + plans[k + 1:]:
                    z = other.apply(z, 0.0)
                flat = result[at].reshape(-1)
                flat[offset + axes.index(plan.axis)] += np.sum(grad * z)
        return result

    def coordinate_inputs(self, x: np.ndarray, rest) -> tuple[int | None, int | None, list[int]]:
        """Which inputs (by position) hold the scales and the crop, and the axes they list values for."""
        return None, None, list(range(x.ndim))


@register("Resize", 10)
class Resize(_ResizeBase):
    """Resize (opset 10: X, scales; 11+: X, roi, scales, sizes; 18+: axes, keep_aspect_ratio_policy,
    antialias). Modes nearest, linear (bi/tri-linear) and cubic, every coordinate transformation mode."""

    def __init__(self, node: NodeSpec):
        super().__init__(node)
        self.mode = _choice(self, "mode", "nearest", ("nearest", "linear", "cubic"))
        if node.opset >= 11:
            self.transform = _choice(self, "coordinate_transformation_mode", "half_pixel", _TRANSFORMS)
            self.nearest_mode = _choice(self, "nearest_mode", "round_prefer_floor",
                                        ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil"))
            self.cubic_a = finite_attr(self, "cubic_coeff_a", -0.75)
            self.exclude_outside = bool(self.attr("exclude_outside", 0))
            self.extrapolation = finite_attr(self, "extrapolation_value", 0.0)
        self.antialias = bool(self.attr("antialias", 0))
        self.axes = self.attr("axes")
        if self.axes is not None and len(set(self.axes)) != len(self.axes):
            raise self.fail(f"axes {list(self.axes)} repeat an axis")
        self.policy = _choice(self, "keep_aspect_ratio_policy", "stretch", ("stretch", "not_larger", "not_smaller"))
        self.legacy = node.opset < 11
        self.plans: dict[tuple, list[_AxisResample]] = {}

    def run(self, x, *rest):
        return self.resample(x, self._inputs_key(x, rest)[0], rest)

    def _inputs_key(self, x: np.ndarray, rest) -> tuple[tuple, tuple]:
        """What the plans depend on -- the input's shape and the bytes of the scales, sizes and crop given --,
        and those (roi, scales, sizes) themselves, each None when absent or empty."""
        if self.legacy:
            roi, scales, sizes = None, rest[0], None
        else:
            roi = rest[0] if len(rest) > 0 else None
            scales = rest[1] if len(rest) > 1 else None
            sizes = rest[2] if len(rest) > 2 else None
        scales = None if scales is None or scales.size == 0 else scales
        sizes = None if sizes is None or sizes.size == 0 else sizes
        roi = None if roi is None or roi.size == 0 else roi
        return (x.shape, _bytes(scales), _bytes(sizes), _bytes(roi)), (roi, scales, sizes)

    def plans_for(self, x: np.ndarray, rest) -> list[_AxisResample]:
        key, (roi, scales, sizes) = self._inputs_key(x, rest)
        plans = self.plans.get(key)
        if plans is None:
            if len(self.plans) > 64:  # input shapes fed at run time must not grow the cache without bound
                self.plans.clear()
            plans = self.plans[key] = self._plan(x.shape, x.dtype, roi, scales, sizes)
        return plans

    def coordinate_inputs(self, x: np.ndarray, rest) -> tuple[int | None, int | None, list[int]]:
        axes = list(resolve_axes(self, self.axes, x.ndim)) if self.axes else list(range(x.ndim))
        if self.legacy:
            return (1 if rest and rest[0] is not None else None), None, axes
        present = [value is not None and value.size > 0 for value in rest] + [False] * 3
        scales_at = 2 if present[1] and not present[2] else None  # sizes win: then the scales are derived
        roi_at = 1 if present[0] and self.transform == "tf_crop_and_resize" else None
        return scales_at, roi_at, axes

    def _plan(self, shape: tuple[int, ...], dtype, roi, scales, sizes) -> list[_AxisResample]:
        rank = len(shape)
        axes = list(resolve_axes(self, self.axes, rank)) if self.axes else list(range(rank))
        if sizes is not None:
            if len(sizes) != len(axes) or sizes.dtype.kind not in "iu" or (sizes < 1).any():
                raise self.fail(f"sizes {sizes.tolist()} must be {len(axes)} positive integers for the resized "
                                f"axes of {shape}")
            if any(shape[a] == 0 for a in axes):
                raise self.fail(f"cannot resize an empty axis of {shape} to sizes {sizes.tolist()}")
            out = {a: int(s) for a, s in zip(axes, sizes, strict=True)}
            factor = {a: out[a] / shape[a] for a in axes}
            if self.policy in ("not_larger", "not_smaller"):
                pick = min if self.policy == "not_larger" else max
                common = pick(factor.values())
                factor = {a: common for a in axes}
                out = {a: int(common * shape[a] + 0.5) for a in axes}
        elif scales is not None:
            if len(scales) != len(axes):
                raise self.fail(f"scales {scales.tolist()} do not match the {len(axes)} resized axes of {shape}")
            _check_scales(self, scales.tolist())
            factor = {a: float(s) for a, s in zip(axes, scales, strict=True)}
            out = {a: _scaled_length(shape[a], factor[a]) for a in axes}
        else:
            raise self.fail("needs either scales or sizes")
        crop = {}
        if roi is not None and self.transform == "tf_crop_and_resize":
            values = roi.astype(np.float64).tolist()
            if len(values) != 2 * len(axes) or not all(math.isfinite(v) for v in values):
                raise self.fail(f"roi {values} must be {2 * len(axes)} finite values")
            crop = {a: (values[i], values[i + len(axes)]) for i, a in enumerate(axes)}
        specs = [(axis, out[axis], factor[axis], crop.get(axis)) for axis in axes
                 if out[axis] != shape[axis] or factor[axis] != 1.0 or axis in crop]  # (others are identities)
        return self.build_plans(shape, dtype, specs)


_TRANSFORMS = ("half_pixel", "half_pixel_symmetric", "pytorch_half_pixel", "align_corners", "asymmetric",
               "tf_half_pixel_for_nn", "tf_crop_and_resize")


def _choice(op: Op, name: str, default: str, allowed) -> str:
    value = op.attr(name, default)
    if value not in allowed:
        raise op.fail(f"attribute {name}={value!r} is not one of {', '.join(allowed)}")
    return value


def _scaled_length(size: int, scale: float) -> int:
    """floor(size * scale), the resized length, where a product a hair below a whole number (float32 scales
    carry a relative error near 1e-7, and onnxruntime multiplies in float32) counts as that number."""
    product = size * scale
    return int(math.floor(product + min(max(1e-9, 1e-5 * abs(product)), 1e-3)))


def _check_scales(op: Op, scales) -> None:
    if not all(isinstance(s, (int, float)) and math.isfinite(s) and s > 0 for s in scales):
        raise op.fail(f"scales {scales} must be positive and finite")


def _bytes(value: np.ndarray | None) -> bytes | None:
    return None if value is None else value.tobytes()


@register("Upsample", 7)
class Upsample(_ResizeBase):
    """Upsample (opset 7: scales attribute; 9: scales input): nearest or (bi)linear, asymmetric coordinates."""

    def __init__(self, node: NodeSpec):
        super().__init__(node)
        mode = _choice(self, "mode", "nearest", ("nearest", "linear", "bilinear"))
        self.mode = "linear" if mode in ("linear", "bilinear") else mode
        self.scales_attr = self.attr("scales")
        if self.scales_attr is not None:
            _check_scales(self, self.scales_attr)
        self.plans: dict[tuple, list[_AxisResample]] = {}

    def run(self, x, scales=None):
        # (the scales' type and bytes: plans_for reads the values from them, or from the attribute when absent)
        given = None if scales is None else (scales.dtype.str, scales.tobytes())
        return self.resample(x, (x.shape, given), (scales,))

    def coordinate_inputs(self, x: np.ndarray, rest) -> tuple[int | None, int | None, list[int]]:
        return (1 if rest and rest[0] is not None else None), None, list(range(x.ndim))

    def plans_for(self, x: np.ndarray, rest) -> list[_AxisResample]:
        scales = rest[0] if rest else None
        values = self.scales_attr if scales is None else scales.astype(np.float64).tolist()
        if values is None or len(values) != x.ndim:
            raise self.fail(f"scales {values} do not match input of shape {x.shape}")
        key = (x.shape, tuple(values))
        plans = self.plans.get(key)
        if plans is None:
            _check_scales(self, values)
            if len(self.plans) > 64:
                self.plans.clear()
            specs = [(axis, _scaled_length(size, float(s)), float(s), None)
                     for axis, (size, s) in enumerate(zip(x.shape, values, strict=True)) if s != 1.0]
            plans = self.plans[key] = self.build_plans(x.shape, x.dtype, specs)
        return plans
