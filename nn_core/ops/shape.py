"""Kernels that move, select or create data without arithmetic on it: reshaping, slicing, gathering, padding.

Shape-like arguments arrive either as attributes (old opsets) or as inputs (newer opsets). When an input is a
load-time constant it is parsed once in ``__init__``; otherwise it is parsed on every ``run``.
"""

from __future__ import annotations

import math

import numpy as np
from onnx import helper

from .registry import Op, register

INT64 = np.int64
_INT64_MAX = int(np.iinfo(np.int64).max)


def _ints(values) -> tuple[int, ...]:
    """A 0-d or 1-d array or a list as a tuple of Python ints."""
    return tuple(int(v) for v in np.asarray(values).reshape(-1))


def _axis(axis: int, rank: int) -> int:
    return axis + rank if axis < 0 else axis


def _np_dtype(onnx_type: int) -> np.dtype:
    return np.dtype(helper.tensor_dtype_to_np_dtype(onnx_type))


class _ConstArgs(Op):
    """Base for kernels whose trailing inputs (a shape, axes...) are usually constants: parse them once."""

    def _prepared(self, index: int, parse):
        """``parse(value)`` of input ``index`` when known at load time, else None (parse at run time)."""
        value = self.const(index)
        return None if value is None else parse(value)


# ---------------------------------------------------------------- reshaping


@register("Flatten", 1)
class Flatten(Op):
    def __init__(self, node):
        super().__init__(node)
        self.axis = self.attr("axis", 1)

    def run(self, x):
        axis = _axis(self.axis, x.ndim)
        outer = math.prod(x.shape[:axis])
        return x.reshape(outer, math.prod(x.shape[axis:]))


@register("Reshape", 1)
class Reshape(_ConstArgs):
    """Target shape: 0 copies the input's dim (unless allowzero=1), -1 is inferred."""

    def __init__(self, node):
        super().__init__(node)
        self.allowzero = bool(self.attr("allowzero", 0))
        if node.opset < 5:  # opsets 1-4 carry the target shape as an attribute
            self.shape = tuple(self.attr("shape", []))
        else:
            self.shape = self._prepared(1, _ints)
        # without zeros to copy, NumPy's own -1 inference is exactly ONNX's rule
        self.copies_dims = self.shape is not None and not self.allowzero and 0 in self.shape

    def run(self, x, shape=None):
        target = self.shape
        if target is None:
            target = _ints(shape)
            if not self.allowzero and 0 in target:
                target = self._with_copied_dims(target, x.shape)
        elif self.copies_dims:
            target = self._with_copied_dims(target, x.shape)
        try:
            return x.reshape(target)
        except ValueError as exc:
            raise self.fail(f"cannot reshape input of shape {x.shape} to {list(target)}: {exc}") from None

    @staticmethod
    def _with_copied_dims(target, in_shape):
        return tuple(in_shape[i] if d == 0 else d for i, d in enumerate(target))


@register("Transpose", 1)
class Transpose(Op):
    def __init__(self, node):
        super().__init__(node)
        perm = self.attr("perm")
        self.perm = tuple(perm) if perm else None  # None: reverse the dims

    def run(self, x):
        return np.transpose(x, self.perm)


@register("Squeeze", 1)
class Squeeze(_ConstArgs):
    def __init__(self, node):
        super().__init__(node)
        if node.opset < 13:
            axes = self.attr("axes")
            self.axes = tuple(axes) if axes else None
        else:
            self.axes = self._prepared(1, _ints)
        self.axes_from_input = node.opset >= 13 and self.axes is None

    def run(self, x, axes=None):
        chosen = self.axes
        if self.axes_from_input and axes is not None:
            chosen = _ints(axes)
        if not chosen:  # no axes: drop every dim of size 1
            return np.squeeze(x)
        try:
            return np.squeeze(x, axis=tuple(_axis(a, x.ndim) for a in chosen))
        except ValueError:
            raise self.fail(f"cannot squeeze axes {list(chosen)} of shape {x.shape}") from None


@register("Unsqueeze", 1)
class Unsqueeze(_ConstArgs):
    def __init__(self, node):
        super().__init__(node)
        if node.opset < 13:
            self.axes = tuple(self.attr("axes", []))
        else:
            self.axes = self._prepared(1, _ints)

    def run(self, x, axes=None):
        chosen = self.axes if self.axes is not None else _ints(axes)
        # np.expand_dims resolves negative axes against the output rank, as ONNX does
        return np.expand_dims(x, chosen)


@register("Concat", 1)
class Concat(Op):
    def __init__(self, node):
        super().__init__(node)
        self.axis = self.attr("axis", 1)  # required from opset 4; opset 1 defaulted to 1

    def run(self, *inputs):
        parts = [x for x in inputs if x is not None]
        try:
            return np.concatenate(parts, axis=_axis(self.axis, parts[0].ndim))
        except ValueError as exc:
            shapes = [list(p.shape) for p in parts]
            raise self.fail(f"cannot concatenate shapes {shapes} on axis {self.axis}: {exc}") from None


@register("Split", 1)
class Split(_ConstArgs):
    """Sizes from the ``split`` attribute (< 13) or input (13+); otherwise equal parts, the last one smaller."""

    def __init__(self, node):
        super().__init__(node)
        self.axis = self.attr("axis", 0)
        self.count = len(node.outputs)
        if node.opset >= 13 or (node.opset < 2 and len(node.inputs) > 1 and node.inputs[1]):
            self.sizes = self._prepared(1, _ints)
        else:
            split = self.attr("split")
            self.sizes = tuple(split) if split else None
        self.sizes_from_input = self.sizes is None and len(node.inputs) > 1 and bool(node.inputs[1])

    def run(self, x, split=None):
        axis = _axis(self.axis, x.ndim)
        sizes = _ints(split) if self.sizes_from_input and split is not None else self.sizes
        if not sizes:
            dim = x.shape[axis]
            chunk = -(-dim // self.count)
            sizes = (chunk,) * (self.count - 1) + (dim - chunk * (self.count - 1),)
        if sum(sizes) != x.shape[axis] or len(sizes) != self.count:
            raise self.fail(f"split sizes {list(sizes)} do not fit dim {x.shape[axis]} into {self.count} outputs")
        cuts = np.cumsum(sizes[:-1])
        return tuple(np.split(x, cuts, axis=axis))


def _slice_bounds(start: int, end: int, step: int, dim: int) -> slice:
    """ONNX Slice clamping for one axis, as a Python slice (negative indexes already resolved)."""
    if step == 0:
        raise ValueError("slice step cannot be 0")
    if step < 0 and end == _INT64_MAX:
        # exporters write INT64_MAX for "open end" whatever the direction; onnxruntime reads it so when
        # stepping backwards (through index 0) although plain clamping would select nothing. Follow it.
        end = -dim - 1
    if start < 0:
        start += dim
    if end < 0:
        end += dim
    if step > 0:
        start = min(max(start, 0), dim)
        end = min(max(end, 0), dim)
        return slice(start, end, step)
    start = min(max(start, 0), dim - 1)
    end = min(max(end, -1), dim - 1)
    # an end of -1 means "run through index 0", which a Python slice spells None
    return slice(start, None if end < 0 else end, step)


@register("Slice", 1)
class Slice(Op):
    """Opsets 1-9: ``starts``/``ends``/``axes`` attributes; 10+: inputs, plus ``steps``."""

    def __init__(self, node):
        super().__init__(node)
        self.dynamic = False
        if node.opset < 10:
            self.spec = (self.attr("starts", []), self.attr("ends", []), self.attr("axes"), None)
        else:
            present = [i for i in range(1, 5) if i < len(node.inputs) and node.inputs[i]]
            if all(self.const(i) is not None for i in present):
                self.spec = tuple(_ints(self.const(i)) if i in present else None for i in range(1, 5))
            else:
                self.dynamic = True
        self._cache: dict[tuple[int, ...], tuple[slice, ...]] = {}

    def run(self, x, starts=None, ends=None, axes=None, steps=None):
        if self.dynamic:
            spec = (_ints(starts), _ints(ends), None if axes is None else _ints(axes),
                    None if steps is None else _ints(steps))
            return x[self._index(spec, x.shape)]
        index = self._cache.get(x.shape)
        if index is None:
            index = self._cache[x.shape] = self._index(self.spec, x.shape)
        return x[index]

    def _index(self, spec, shape) -> tuple[slice, ...]:
        starts, ends, axes, steps = spec
        rank = len(shape)
        axes = range(len(starts)) if axes is None else axes
        steps = [1] * len(starts) if steps is None else steps
        index = [slice(None)] * rank
        try:
            for start, end, axis, step in zip(starts, ends, axes, steps, strict=True):
                axis = _axis(axis, rank)
                index[axis] = _slice_bounds(start, end, step, shape[axis])
        except (ValueError, IndexError) as exc:
            raise self.fail(f"bad slice {starts}:{ends} axes {list(axes)} steps {list(steps)} for shape "
                            f"{shape}: {exc}") from None
        return tuple(index)


# ---------------------------------------------------------------- gathering and scattering


@register("Gather", 1)
class Gather(Op):
    def __init__(self, node):
        super().__init__(node)
        self.axis = self.attr("axis", 0)

    def run(self, x, indices):
        try:
            return np.take(x, indices, axis=_axis(self.axis, x.ndim))  # negative indices count from the end
        except IndexError as exc:
            raise self.fail(f"{exc} (data shape {x.shape})") from None


@register("GatherElements", 11)
class GatherElements(Op):
    def __init__(self, node):
        super().__init__(node)
        self.axis = self.attr("axis", 0)

    def run(self, x, indices):
        # the index tensor may be smaller than the data on the other axes, so build the full index grid
        where = list(np.indices(indices.shape, sparse=True))
        where[_axis(self.axis, x.ndim)] = indices
        return x[tuple(where)]


@register("GatherND", 11)
class GatherND(Op):
    def __init__(self, node):
        super().__init__(node)
        self.batch_dims = self.attr("batch_dims", 0)

    def run(self, x, indices):
        b = self.batch_dims
        depth = indices.shape[-1]
        batch = math.prod(x.shape[:b])
        data = x.reshape((batch,) + x.shape[b:])
        index = indices.reshape(batch, -1, depth)
        batch_index = np.arange(batch)[:, None]
        picked = data[(batch_index,) + tuple(index[..., j] for j in range(depth))]
        return picked.reshape(indices.shape[:-1] + x.shape[b + depth:])


_REDUCTIONS = {"add": np.add, "mul": np.multiply, "max": np.maximum, "min": np.minimum}


def _scatter(op: Op, out: np.ndarray, where: tuple, updates: np.ndarray, reduction: str) -> np.ndarray:
    if reduction == "none":
        out[where] = updates
    elif reduction in _REDUCTIONS:
        _REDUCTIONS[reduction].at(out, where, updates)  # .at applies duplicates one after another
    else:
        raise op.fail(f"unknown reduction '{reduction}'")
    return out


@register("ScatterND", 11)
class ScatterND(Op):
    def __init__(self, node):
        super().__init__(node)
        self.reduction = self.attr("reduction", "none")

    def run(self, x, indices, updates):
        depth = indices.shape[-1]
        where = tuple(np.moveaxis(indices.reshape(-1, depth), -1, 0))
        flat_updates = updates.reshape((-1,) + x.shape[depth:])
        return _scatter(self, x.copy(), where, flat_updates, self.reduction)


@register("ScatterElements", 11)
class ScatterElements(Op):
    def __init__(self, node):
        super().__init__(node)
        self.axis = self.attr("axis", 0)
        self.reduction = self.attr("reduction", "none")

    def run(self, x, indices, updates):
        axis = _axis(self.axis, x.ndim)
        where = list(np.indices(indices.shape, sparse=True))
        where[axis] = np.where(indices < 0, indices + x.shape[axis], indices)
        return _scatter(self, x.copy(), tuple(where), updates, self.reduction)


@register("Scatter", 9)
class Scatter(ScatterElements):
    """The deprecated (opsets 9-10) name of ScatterElements without reduction."""


@register("Compress", 9)
class Compress(Op):
    def __init__(self, node):
        super().__init__(node)
        self.axis = self.attr("axis")

    def run(self, x, condition):
        if self.axis is None:
            return np.compress(condition, x.reshape(-1))
        return np.compress(condition, x, axis=_axis(self.axis, x.ndim))


@register("NonZero", 9)
class NonZero(Op):
    def run(self, x):
        return np.array(np.nonzero(np.atleast_1d(x)), dtype=INT64).reshape(max(x.ndim, 1), -1)


# ---------------------------------------------------------------- shape queries and broadcasting


@register("Shape", 1)
class Shape(Op):
    def __init__(self, node):
        super().__init__(node)
        self.start = self.attr("start", 0)
        self.end = self.attr("end")

    def run(self, x):
        # Python slicing clamps out-of-range start/end exactly as Shape-15 asks
        return np.array(x.shape[self.start:self.end], dtype=INT64)


@register("Size", 1)
class Size(Op):
    def run(self, x):
        return np.array(x.size, dtype=INT64)


@register("Expand", 8)
class Expand(_ConstArgs):
    def __init__(self, node):
        super().__init__(node)
        self.shape = self._prepared(1, _ints)

    def run(self, x, shape):
        target = self.shape if self.shape is not None else _ints(shape)
        try:
            full = np.broadcast_shapes(x.shape, target)  # Expand broadcasts both ways
        except ValueError:
            raise self.fail(f"cannot expand shape {x.shape} to {list(target)}") from None
        return np.array(np.broadcast_to(x, full))  # a writable copy, not a read-only view


@register("Tile", 6)
class Tile(Op):
    def run(self, x, repeats):
        return np.tile(x, _ints(repeats))


@register("Range", 11)
class Range(Op):
    def run(self, start, limit, delta):
        dtype = start.dtype
        first, last, step = start.item(), limit.item(), delta.item()
        count = max(math.ceil((last - first) / step), 0)
        return (first + np.arange(count, dtype=np.float64 if dtype.kind == "f" else INT64) * step).astype(dtype)


@register("ConstantOfShape", 9)
class ConstantOfShape(_ConstArgs):
    def __init__(self, node):
        super().__init__(node)
        value = self.attr("value")
        self.value = np.zeros(1, np.float32) if value is None else np.asarray(value).reshape(-1)[:1]
        self.shape = self._prepared(0, _ints)

    def run(self, shape):
        target = self.shape if self.shape is not None else _ints(shape)
        return np.full(target, self.value[0], dtype=self.value.dtype)


@register("EyeLike", 9)
class EyeLike(Op):
    def __init__(self, node):
        super().__init__(node)
        self.k = self.attr("k", 0)
        dtype = self.attr("dtype")
        self.dtype = None if dtype is None else _np_dtype(dtype)

    def run(self, x):
        if x.ndim != 2:
            raise self.fail(f"input must be 2-D, got shape {x.shape}")
        return np.eye(x.shape[0], x.shape[1], k=self.k, dtype=self.dtype or x.dtype)


@register("Trilu", 14)
class Trilu(Op):
    def __init__(self, node):
        super().__init__(node)
        self.upper = bool(self.attr("upper", 1))

    def run(self, x, k=None):
        diagonal = 0 if k is None else int(k.item())
        return np.triu(x, diagonal) if self.upper else np.tril(x, diagonal)


@register("OneHot", 9)
class OneHot(Op):
    def __init__(self, node):
        super().__init__(node)
        self.axis = self.attr("axis", -1)

    def run(self, indices, depth, values):
        depth = int(depth.item())
        index = indices.astype(INT64)
        index = np.where(index < 0, index + depth, index)  # -1 means depth-1; still out of range -> all "off"
        axis = _axis(self.axis, index.ndim + 1)
        positions = np.arange(depth).reshape((-1,) + (1,) * (index.ndim - axis))
        hot = np.expand_dims(index, axis) == positions
        return np.where(hot, values[1], values[0]).astype(values.dtype)


@register("CumSum", 11)
class CumSum(Op):
    def __init__(self, node):
        super().__init__(node)
        self.exclusive = bool(self.attr("exclusive", 0))
        self.reverse = bool(self.attr("reverse", 0))

    def run(self, x, axis):
        axis = _axis(int(axis.item()), x.ndim)
        data = np.flip(x, axis) if self.reverse else x
        total = np.cumsum(data, axis=axis, dtype=x.dtype)
        if self.exclusive:  # shift by one: each position sums only what precedes it
            total = np.concatenate([np.zeros_like(np.take(total, [0], axis=axis)),
                                    np.take(total, np.arange(total.shape[axis] - 1), axis=axis)], axis=axis)
        return np.flip(total, axis) if self.reverse else total


@register("TopK", 1)
class TopK(Op):
    """Sorted top-k along ``axis``; equal values keep the lower index first (as onnxruntime does)."""

    def __init__(self, node):
        super().__init__(node)
        self.axis = self.attr("axis", -1)
        self.largest = bool(self.attr("largest", 1))
        self.k = self.attr("k") if node.opset < 10 else None

    def run(self, x, k=None):
        axis = _axis(self.axis, x.ndim)
        count = self.k if self.k is not None else int(k.item())
        if count > x.shape[axis] or count < 0:
            raise self.fail(f"k={count} out of range for axis {axis} of shape {x.shape}")
        if self.largest:
            # a stable ascending sort of the reversed axis, read backwards, is descending with ties kept in
            # index order -- and needs no negation (which would wrap unsigned ints)
            n = x.shape[axis]
            order = np.argsort(np.flip(x, axis), axis=axis, kind="stable")
            order = n - 1 - np.flip(order, axis)
        else:
            order = np.argsort(x, axis=axis, kind="stable")
        indices = np.take(order, np.arange(count), axis=axis)
        return np.take_along_axis(x, indices, axis=axis), indices.astype(INT64, copy=False)


# ---------------------------------------------------------------- padding and rearranging


def _pad_widths(pads, rank: int, axes=None) -> list[tuple[int, int]]:
    """ONNX pads [b1, b2, ..., e1, e2, ...] (over ``axes`` or all dims) as per-dim (begin, end) pairs."""
    axes = range(rank) if axes is None else [_axis(a, rank) for a in axes]
    half = len(pads) // 2
    widths = [(0, 0)] * rank
    for i, axis in enumerate(axes):
        widths[axis] = (pads[i], pads[half + i])
    return widths


@register("Pad", 1)
class Pad(Op):
    """Constant / reflect / edge / wrap padding; negative pads crop."""

    MODES = {"constant": "constant", "reflect": "reflect", "edge": "edge", "wrap": "wrap"}

    def __init__(self, node):
        super().__init__(node)
        mode = self.attr("mode", "constant")
        if mode not in self.MODES:
            raise self.fail(f"unsupported pad mode '{mode}'")
        self.mode = mode
        if node.opset < 11:
            self.pads = tuple(self.attr("pads", self.attr("paddings", [])))
            self.value = self.attr("value", 0.0)
            self.axes = None
        else:
            self.pads = None if self.const(1) is None else _ints(self.const(1))
            value = self.const(2)
            self.value = None if value is None else value.item() if value.size else 0
            self.axes = None if self.const(3) is None else _ints(self.const(3))

    def run(self, x, pads=None, constant_value=None, axes=None):
        pads = self.pads if self.pads is not None else _ints(pads)
        axes = self.axes if self.axes is not None or axes is None else _ints(axes)
        value = self.value
        if value is None:
            value = constant_value.item() if constant_value is not None and constant_value.size else 0
        widths = _pad_widths(pads, x.ndim, axes)
        if any(b < 0 or e < 0 for b, e in widths):  # crop first, then pad what is left
            x = x[tuple(slice(max(-b, 0), x.shape[d] - max(-e, 0)) for d, (b, e) in enumerate(widths))]
            widths = [(max(b, 0), max(e, 0)) for b, e in widths]
        if self.mode == "constant":
            return np.pad(x, widths, mode="constant", constant_values=value)
        return np.pad(x, widths, mode=self.MODES[self.mode])


@register("DepthToSpace", 1)
class DepthToSpace(Op):
    def __init__(self, node):
        super().__init__(node)
        self.block = self.attr("blocksize")
        self.crd = self.attr("mode", "DCR") == "CRD"

    def run(self, x):
        n, c, h, w = x.shape
        b = self.block
        if self.crd:
            y = x.reshape(n, c // (b * b), b, b, h, w).transpose(0, 1, 4, 2, 5, 3)
        else:
            y = x.reshape(n, b, b, c // (b * b), h, w).transpose(0, 3, 4, 1, 5, 2)
        return y.reshape(n, c // (b * b), h * b, w * b)


@register("SpaceToDepth", 1)
class SpaceToDepth(Op):
    def __init__(self, node):
        super().__init__(node)
        self.block = self.attr("blocksize")
        self.crd = self.attr("mode", "DCR") == "CRD"  # the mode attribute exists from opset 28

    def run(self, x):
        n, c, h, w = x.shape
        b = self.block
        y = x.reshape(n, c, h // b, b, w // b, b)
        y = y.transpose(0, 1, 3, 5, 2, 4) if self.crd else y.transpose(0, 3, 5, 1, 2, 4)
        return y.reshape(n, c * b * b, h // b, w // b)


@register("ReverseSequence", 10)
class ReverseSequence(Op):
    def __init__(self, node):
        super().__init__(node)
        self.batch_axis = self.attr("batch_axis", 1)
        self.time_axis = self.attr("time_axis", 0)

    def run(self, x, sequence_lens):
        out = x.copy()
        for batch, length in enumerate(_ints(sequence_lens)):
            index = [slice(None)] * x.ndim
            index[self.batch_axis] = batch
            index[self.time_axis] = slice(0, length)
            reversed_index = list(index)
            reversed_index[self.time_axis] = slice(length - 1, None, -1) if length > 0 else slice(0, 0)
            out[tuple(index)] = x[tuple(reversed_index)]
        return out


# ---------------------------------------------------------------- constants and pass-through


@register("Constant", 1)
class Constant(Op):
    def __init__(self, node):
        super().__init__(node)
        self.value = self._decode()
        self.value.flags.writeable = False  # the same array is handed out on every run

    def _decode(self) -> np.ndarray:
        attrs = self.attrs
        if "value" in attrs or "sparse_value" in attrs:
            return np.array(attrs.get("value", attrs.get("sparse_value")))
        if "value_float" in attrs:
            return np.array(attrs["value_float"], dtype=np.float32)
        if "value_floats" in attrs:
            return np.array(attrs["value_floats"], dtype=np.float32)
        if "value_int" in attrs:
            return np.array(attrs["value_int"], dtype=INT64)
        if "value_ints" in attrs:
            return np.array(attrs["value_ints"], dtype=INT64)
        if "value_string" in attrs:
            return np.array(attrs["value_string"], dtype=object)
        if "value_strings" in attrs:
            return np.array(attrs["value_strings"], dtype=object)
        raise self.fail("has no value attribute")

    def run(self):
        return self.value


@register("Identity", 1)
class Identity(Op):
    def run(self, x):
        return x


@register("Dropout", 1)
class Dropout(Op):
    """Inference: the input passes through and the mask is all True. ``training_mode`` (12+) drops for real."""

    def __init__(self, node):
        super().__init__(node)
        self.ratio = self.attr("ratio", 0.5)
        self.want_mask = len(node.outputs) > 1 and bool(node.outputs[1])
        # the mask was the input's type before opset 10, bool since
        self.mask_is_bool = node.opset >= 10
        # a seeded Dropout draws the same mask on every run (MT19937 seeded as given, uniform >= ratio, as onnx's
        # own reference does), so seeded training runs are reproducible; without a seed, a fresh generator
        self.seed = self.attr("seed")
        self.rng = np.random.default_rng()
        # deterministic (so foldable) unless a training_mode input may turn dropping on at run time
        has_training_input = len(node.inputs) > 2 and bool(node.inputs[2])
        training = self.const(2)
        self.foldable = not has_training_input or (training is not None and not training.item())

    def run(self, x, ratio=None, training_mode=None):
        if training_mode is not None and bool(training_mode.item()):
            rate = self.ratio if ratio is None else float(ratio.item())
            if self.seed is not None:
                keep = np.random.RandomState(int(self.seed)).uniform(0.0, 1.0, x.shape) >= rate
            else:
                keep = self.rng.random(x.shape) >= rate
            scale = 1.0 / (1.0 - rate) if rate < 1 else 0.0
            out = (x * keep * scale).astype(x.dtype)
        else:
            out, keep = x, np.ones(x.shape, dtype=bool)
        if not self.want_mask:
            return out
        return out, keep if self.mask_is_bool else keep.astype(x.dtype)
