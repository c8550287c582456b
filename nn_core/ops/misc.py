"""Losses (NegativeLogLikelihoodLoss, SoftmaxCrossEntropyLoss) and assorted tensor operators: CumProd, Unique,
LpNormalization, Det, BitCast, TensorScatter, MaxUnpool, CenterCropPad; the Adagrad, Momentum and Adam steps of
ai.onnx.preview.training."""

from __future__ import annotations

import math

import numpy as np
from onnx import helper

from .registry import NodeSpec, Op, register
from .shape import int_attr, resolve_axis


def _acc(x: np.ndarray):
    return np.float64 if x.dtype == np.float64 else np.float32


# ----------------------------------------------------------------------------------------------------------------
# losses


class _Loss(Op):
    def __init__(self, node: NodeSpec):
        super().__init__(node)
        self.reduction = self.attr("reduction", "mean")
        if self.reduction not in ("none", "sum", "mean"):
            raise self.fail(f"reduction must be none, sum or mean, got '{self.reduction}'")
        self.ignore_index = int_attr(self, "ignore_index", None)

    def _nll(self, log_prob: np.ndarray, target: np.ndarray, weight, dtype) -> np.ndarray:
        """-log_prob[n, target[n, ...], ...] weighted and reduced; log_prob is (N, C, d...)."""
        if log_prob.ndim < 2:
            raise self.fail(f"input must be (N, C, ...), got shape {list(log_prob.shape)}")
        classes = log_prob.shape[1]
        expect = log_prob.shape[:1] + log_prob.shape[2:]
        if target.shape != expect:
            raise self.fail(f"target {list(target.shape)} must be {list(expect)} for input {list(log_prob.shape)}")
        if target.dtype.kind not in "iu":
            raise self.fail(f"target must hold integers, got {target.dtype}")
        target = target.astype(np.int64)
        ignored = np.zeros(target.shape, bool) if self.ignore_index is None else target == self.ignore_index
        safe = np.where(ignored, 0, target)
        if safe.size and (safe.min() < 0 or safe.max() >= classes):
            raise self.fail(f"target holds a class outside 0..{classes - 1}")
        picked = -np.take_along_axis(log_prob, safe[:, None], axis=1)[:, 0]
        if weight is not None:
            if weight.shape != (classes,):
                raise self.fail(f"weight {list(weight.shape)} must hold one value per class ({classes})")
            w = weight.astype(picked.dtype)[safe]
        else:
            w = np.ones(target.shape, picked.dtype)
        w = np.where(ignored, 0, w).astype(picked.dtype)
        loss = picked * w
        if self.reduction == "none":
            return loss.astype(dtype)
        if self.reduction == "sum":
            return np.asarray(loss.sum(), dtype)
        if weight is None and self.ignore_index is None:
            return np.asarray(loss.mean() if loss.size else np.nan, dtype)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.asarray(loss.sum() / w.sum(), dtype)


@register("NegativeLogLikelihoodLoss", 12)
class NegativeLogLikelihoodLoss(_Loss):
    def run(self, x, target, weight=None):
        return self._nll(x.astype(_acc(x), copy=False), target, weight, x.dtype)


@register("SoftmaxCrossEntropyLoss", 12)
class SoftmaxCrossEntropyLoss(_Loss):
    def run(self, scores, labels, weight=None):
        if scores.ndim < 2:
            raise self.fail(f"scores must be (N, C, ...), got shape {list(scores.shape)}")
        x = scores.astype(_acc(scores), copy=False)
        shifted = x - x.max(axis=1, keepdims=True)
        log_prob = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        loss = self._nll(log_prob, labels, weight, scores.dtype)
        if len(self.node.outputs) > 1:
            return loss, log_prob.astype(scores.dtype)
        return loss


# ----------------------------------------------------------------------------------------------------------------
# tensor operators


@register("CumProd", 26)
class CumProd(Op):
    def __init__(self, node: NodeSpec):
        super().__init__(node)
        self.exclusive = bool(int_attr(self, "exclusive", 0))
        self.reverse = bool(int_attr(self, "reverse", 0))

    def run(self, x, axis):
        axis_value = np.asarray(axis)
        if axis_value.size != 1 or axis_value.dtype.kind not in "iu":
            raise self.fail(f"axis must be one integer, got {axis_value.tolist()}")
        a = resolve_axis(self, int(axis_value.reshape(-1)[0]), x.ndim)
        data = np.flip(x, a) if self.reverse else x
        out = np.cumprod(data, axis=a, dtype=x.dtype)
        if self.exclusive:
            ones = np.ones_like(np.take(out, [0], axis=a))
            out = np.concatenate([ones, np.take(out, np.arange(out.shape[a] - 1), axis=a)], axis=a)
        return np.flip(out, a) if self.reverse else out


@register("Unique", 11)
class Unique(Op):
    def __init__(self, node: NodeSpec):
        super().__init__(node)
        self.axis = int_attr(self, "axis", None)
        self.sorted = bool(int_attr(self, "sorted", 1))

    def run(self, x):
        if self.axis is None:
            flat = x.reshape(-1)
            values, first, inverse, counts = np.unique(flat, return_index=True, return_inverse=True,
                                                       return_counts=True)
            axis = 0
        else:
            axis = resolve_axis(self, self.axis, x.ndim)
            values, first, inverse, counts = np.unique(x, return_index=True, return_inverse=True,
                                                       return_counts=True, axis=axis)
        inverse = inverse.reshape(-1)
        if not self.sorted:  # in order of first occurrence
            order = np.argsort(first, kind="stable")
            rank = np.empty_like(order)
            rank[order] = np.arange(order.size)
            values = np.take(values, order, axis=axis)
            first, counts, inverse = first[order], counts[order], rank[inverse]
        outputs = (values, first.astype(np.int64), inverse.astype(np.int64), counts.astype(np.int64))
        outputs = outputs[: len(self.node.outputs)]
        return outputs[0] if len(outputs) == 1 else outputs


@register("LpNormalization", 1)
class LpNormalization(Op):
    def __init__(self, node: NodeSpec):
        super().__init__(node)
        self.axis = int_attr(self, "axis", -1)
        self.p = int_attr(self, "p", 2)
        if self.p not in (1, 2):
            raise self.fail(f"p must be 1 or 2, got {self.p}")

    def run(self, x):
        axis = resolve_axis(self, self.axis, x.ndim)
        acc = x.astype(_acc(x), copy=False)
        norm = np.abs(acc).sum(axis=axis, keepdims=True) if self.p == 1 else \
            np.sqrt((acc * acc).sum(axis=axis, keepdims=True))
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(norm == 0, 0, acc / norm).astype(x.dtype)


@register("Det", 11)
class Det(Op):
    def run(self, x):
        if x.ndim < 2 or x.shape[-1] != x.shape[-2]:
            raise self.fail(f"input must end in square matrices, got shape {list(x.shape)}")
        self.check_work(float(x.size) * x.shape[-1])
        return np.linalg.det(x.astype(_acc(x))).astype(x.dtype)


@register("BitCast", 26)
class BitCast(Op):
    def __init__(self, node: NodeSpec):
        super().__init__(node)
        try:
            self.dtype = np.dtype(helper.tensor_dtype_to_np_dtype(int(self.attr("to", 0))))
        except (KeyError, TypeError, ValueError):
            raise self.fail(f"attribute 'to' ({self.attr('to')}) is not a known type") from None
        if self.dtype.kind in "OUS":
            raise self.fail("BitCast to strings is not defined")

    def run(self, x):
        if x.dtype.itemsize != self.dtype.itemsize or x.dtype.kind in "OUS":
            raise self.fail(f"BitCast needs types of one width: {x.dtype} to {self.dtype}")
        return (x if x.flags.c_contiguous else x.copy()).view(self.dtype)


@register("TensorScatter", 24)
class TensorScatter(Op):
    def __init__(self, node: NodeSpec):
        super().__init__(node)
        self.mode = self.attr("mode", "linear")
        if self.mode not in ("linear", "circular"):
            raise self.fail(f"mode must be linear or circular, got '{self.mode}'")
        self.axis = int_attr(self, "axis", -2)

    def run(self, past, update, write_indices=None):
        axis = resolve_axis(self, self.axis, past.ndim)
        if axis == 0 or update.ndim != past.ndim or any(
                u != p for i, (u, p) in enumerate(zip(update.shape, past.shape)) if i != axis) \
                or update.shape[axis] > past.shape[axis]:
            raise self.fail(f"update {list(update.shape)} does not fit the cache {list(past.shape)} on axis {axis}")
        batch, length, size = past.shape[0], update.shape[axis], past.shape[axis]
        starts = np.zeros(batch, np.int64) if write_indices is None else \
            np.asarray(write_indices).astype(np.int64).reshape(-1)
        if starts.shape != (batch,):
            raise self.fail(f"write_indices must give one start per batch entry ({batch})")
        positions = starts[:, None] + np.arange(length)[None, :]
        if self.mode == "circular":
            positions %= size
        elif positions.size and (positions.min() < 0 or positions.max() >= size):
            raise self.fail(f"writing {length} entries at {starts.tolist()} runs past the cache length {size}")
        out = np.array(past, copy=True)
        moved_out = np.moveaxis(out, axis, 1)  # (batch, seq, ...) view of out
        moved_up = np.moveaxis(update, axis, 1)
        for b in range(batch):
            moved_out[b, positions[b]] = moved_up[b]
        return out


@register("MaxUnpool", 9)
class MaxUnpool(Op):
    def __init__(self, node: NodeSpec):
        super().__init__(node)
        self.kernel = [int(k) for k in self.attr("kernel_shape", [])]
        if not self.kernel or any(k <= 0 for k in self.kernel):
            raise self.fail(f"kernel_shape {self.kernel} must list positive sizes")
        dims = len(self.kernel)
        self.strides = [int(s) for s in self.attr("strides", [1] * dims)]
        self.pads = [int(p) for p in self.attr("pads", [0] * 2 * dims)]
        if len(self.strides) != dims or len(self.pads) != 2 * dims or any(s <= 0 for s in self.strides) \
                or any(p < 0 for p in self.pads):
            raise self.fail("strides and pads must fit kernel_shape")

    def run(self, x, indices, output_shape=None):
        dims = len(self.kernel)
        if x.ndim != dims + 2 or indices.shape != x.shape:
            raise self.fail(f"X {list(x.shape)} and indices {list(indices.shape)} must be (N, C, {dims} dims)")
        inferred = list(x.shape[:2]) + [(x.shape[2 + i] - 1) * self.strides[i] - self.pads[i] - self.pads[dims + i]
                                        + self.kernel[i] for i in range(dims)]
        shape = inferred if output_shape is None else [int(s) for s in np.asarray(output_shape).reshape(-1)]
        if len(shape) != x.ndim or shape[:2] != list(x.shape[:2]) or any(d <= 0 for d in inferred):
            raise self.fail(f"output_shape {shape} must keep N and C of X {list(x.shape)}")
        self.check_size(shape, x.dtype)
        self.check_size(inferred, x.dtype)
        # indices count over the whole (N, C, spatial) unpooled tensor of the inferred shape
        unpooled = np.zeros(int(np.prod(inferred)), x.dtype)
        flat = np.asarray(indices).astype(np.int64).reshape(-1)
        if flat.size and (flat.min() < 0 or flat.max() >= unpooled.size):
            raise self.fail(f"indices reach outside the {unpooled.size} positions of the unpooled tensor")
        unpooled[flat] = x.reshape(-1)
        out = np.zeros(shape, x.dtype)
        region = tuple(slice(0, min(a, b)) for a, b in zip(inferred, shape))
        out[region] = unpooled.reshape(inferred)[region]
        return out


@register("CenterCropPad", 18)
class CenterCropPad(Op):
    def run(self, x, shape):
        sizes = [int(s) for s in np.asarray(shape).reshape(-1)]
        axes = self.attr("axes")
        axes = list(range(x.ndim)) if axes is None else [resolve_axis(self, a, x.ndim) for a in axes]
        if len(axes) != len(sizes) or any(s < 0 for s in sizes):
            raise self.fail(f"shape {sizes} must give one non-negative size per axis {axes}")
        new_shape = list(x.shape)
        source = [slice(None)] * x.ndim
        target = [slice(None)] * x.ndim
        for axis, size in zip(axes, sizes):
            dim = x.shape[axis]
            new_shape[axis] = size
            if size < dim:
                start = (dim - size) // 2
                source[axis] = slice(start, start + size)
            elif size > dim:
                start = (size - dim) // 2
                target[axis] = slice(start, start + dim)
        self.check_size(new_shape, x.dtype)
        out = np.zeros(new_shape, x.dtype)
        out[tuple(target)] = x[tuple(source)]
        return out


# ----------------------------------------------------------------------------------------------------------------
# Optimizers of the ai.onnx.preview.training domain: one update step of several tensors, as ONNX specifies them

TRAINING_DOMAIN = "ai.onnx.preview.training"


class _Optimizer(Op):
    """Inputs R (learning rate), T (step count), then ``per`` groups of n tensors (X..., G..., states...);
    outputs the n new X, then the new states group by group."""

    per = 3  # tensor groups per optimized tensor, including X and G
    required: tuple[str, ...] = ()
    defaults: dict[str, float] = {}

    def __init__(self, node: NodeSpec):
        super().__init__(node)
        tensors = len(node.inputs) - 2
        if tensors <= 0 or tensors % self.per:
            raise self.fail(f"takes R, T and {self.per} groups of tensors; got {len(node.inputs)} inputs")
        self.n = tensors // self.per
        if len(node.outputs) > self.n * (self.per - 1):
            raise self.fail(f"declares {len(node.outputs)} outputs for {self.n} optimized tensors")
        self.values = {}
        for name in self.required:
            if self.attr(name) is None:
                raise self.fail(f"missing attribute '{name}'")
        for name in (*self.required, *self.defaults):
            value = self.attr(name, self.defaults.get(name))
            if not isinstance(value, (int, float)) or not math.isfinite(value):
                raise self.fail(f"attribute '{name}' must be a finite number, got {value!r}")
            self.values[name] = float(value)

    def run(self, r, t, *tensors):
        r = float(np.asarray(r).reshape(-1)[0]) if np.size(r) == 1 else None
        t = int(np.asarray(t).reshape(-1)[0]) if np.size(t) == 1 else None
        if r is None or t is None:
            raise self.fail("R and T must be scalars")
        groups = [tensors[k * self.n:(k + 1) * self.n] for k in range(self.per)]
        results = [[] for _ in range(self.per - 1)]
        for i in range(self.n):
            items = [group[i] for group in groups]
            shape = items[0].shape
            if any(item.shape != shape for item in items[1:]):
                raise self.fail(f"tensor {i}: X, G and the states must share X's shape {list(shape)}")
            outs = self.step(r, t, *(item.astype(np.float64) for item in items))
            for k, out in enumerate(outs):
                results[k].append(out.astype(items[0 if k == 0 else k + 1].dtype))
        flat = [value for group in results for value in group][: len(self.node.outputs)]
        return flat[0] if len(flat) == 1 else tuple(flat)


@register("Adagrad", 1, domain=TRAINING_DOMAIN)
class Adagrad(_Optimizer):
    per = 3
    defaults = {"decay_factor": 0.0, "epsilon": 0.0, "norm_coefficient": 0.0}

    def step(self, r, t, x, g, h):
        p = self.values
        rate = r / (1 + t * p["decay_factor"])
        g = p["norm_coefficient"] * x + g
        h = h + g * g
        return x - rate * g / (np.sqrt(h) + p["epsilon"]), h


@register("Momentum", 1, domain=TRAINING_DOMAIN)
class Momentum(_Optimizer):
    per = 3
    required = ("alpha", "beta", "norm_coefficient")

    def __init__(self, node: NodeSpec):
        super().__init__(node)
        self.mode = self.attr("mode")
        if self.mode not in ("standard", "nesterov"):
            raise self.fail(f"mode must be 'standard' or 'nesterov', got {self.mode!r}")

    def step(self, r, t, x, g, v):
        p = self.values
        g = p["norm_coefficient"] * x + g
        v = p["alpha"] * v + (p["beta"] if t > 0 else 1.0) * g
        return (x - r * v if self.mode == "standard" else x - r * (g + p["alpha"] * v)), v


@register("Adam", 1, domain=TRAINING_DOMAIN)
class Adam(_Optimizer):
    per = 4
    defaults = {"alpha": 0.9, "beta": 0.999, "epsilon": 0.0, "norm_coefficient": 0.0, "norm_coefficient_post": 0.0}

    def step(self, r, t, x, g, v, h):
        p = self.values
        g = p["norm_coefficient"] * x + g
        v = p["alpha"] * v + (1 - p["alpha"]) * g
        h = p["beta"] * h + (1 - p["beta"]) * g * g
        rate = r * math.sqrt(1 - p["beta"] ** t) / (1 - p["alpha"] ** t) if t > 0 else r
        x = x - rate * v / (np.sqrt(h) + p["epsilon"])
        return (1 - p["norm_coefficient_post"]) * x, v, h


# ----------------------------------------------------------------------------------------------------------------
# Random generators. Their values are not reproducible across runtimes (ONNX says so even with a seed): a seed
# makes nn_core's own runs repeatable (NumPy's PCG64 seeded with it), no more.


class _Random(Op):
    foldable = False  # a fresh draw on every run

    def __init__(self, node: NodeSpec):
        super().__init__(node)
        from .elementwise import onnx_dtype

        dtype = self.attr("dtype")
        self.dtype = onnx_dtype(dtype, self) if dtype else None
        if self.dtype is not None and self.dtype.kind not in "fiub":
            raise self.fail(f"dtype {self.dtype} is not a numeric type")
        seed = self.attr("seed")
        if seed is not None and (not isinstance(seed, (int, float)) or not math.isfinite(seed)):
            raise self.fail(f"attribute 'seed' must be a finite number, got {seed!r}")
        self.seed = None if seed is None else int(np.float64(seed).view(np.uint64))  # every float its own seed
        self.generator = np.random.default_rng(self.seed)

    def _shape_of(self, like: np.ndarray | None) -> tuple[int, ...]:
        if like is not None:
            return like.shape
        shape = self.attr("shape")
        if not isinstance(shape, list) or any(not isinstance(d, int) or d < 0 for d in shape):
            raise self.fail(f"attribute 'shape' must list non-negative sizes, got {shape!r}")
        return tuple(shape)

    def _draw(self, like: np.ndarray | None) -> np.ndarray:
        shape = self._shape_of(like)
        dtype = self.dtype or (like.dtype if like is not None else np.dtype(np.float32))
        self.check_size(shape, np.float64)
        return self.sample(shape).astype(dtype)


class _UniformMixin:
    def sample(self, shape):
        low, high = float(self.attr("low", 0.0)), float(self.attr("high", 1.0))
        return self.generator.uniform(low, high, shape)


class _NormalMixin:
    def sample(self, shape):
        return self.generator.normal(float(self.attr("mean", 0.0)), float(self.attr("scale", 1.0)), shape)


@register("RandomUniform", 1)
class RandomUniform(_UniformMixin, _Random):
    def run(self):
        return self._draw(None)


@register("RandomNormal", 1)
class RandomNormal(_NormalMixin, _Random):
    def run(self):
        return self._draw(None)


@register("RandomUniformLike", 1)
class RandomUniformLike(_UniformMixin, _Random):
    def run(self, like):
        return self._draw(like)


@register("RandomNormalLike", 1)
class RandomNormalLike(_NormalMixin, _Random):
    def run(self, like):
        return self._draw(like)


@register("Bernoulli", 15)
class Bernoulli(_Random):
    """1 with probability x, else 0, in ``dtype`` (x's type unless told)."""

    def run(self, x):
        self.check_size(x.shape, np.float64)
        draws = self.generator.random(x.shape) < x
        return draws.astype(self.dtype or x.dtype)
