"""Kernels that move, select or create data without arithmetic on it: reshaping, slicing, gathering, padding.

Shape-like arguments arrive either as attributes (old opsets) or as inputs (newer opsets). When an input is a
load-time constant it is parsed once in ``__init__``; otherwise it is parsed on every ``run``.
"""

from __future__ import annotations

import math
import weakref

import numpy as np
from onnx import helper

from .caches import keep
from .gradients import sum_to_shape
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


# ---------------------------------------------------------------- validation and budget helpers (shared with
# elementwise.py and nn.py): every size is a Python int, so hostile dims cannot wrap around in int64


def resolve_axis(op: Op, axis, rank: int, what: str = "axis") -> int:
    """``axis`` in [-rank, rank) as a non-negative int, else a ModelError naming it and the rank."""
    if not isinstance(axis, (int, np.integer)) or not -rank <= axis < rank:
        raise op.fail(f"{what} {axis!r} is out of range for an input of rank {rank}")
    return int(axis) % rank


def resolve_axes(op: Op, axes, rank: int, what: str = "axes") -> tuple[int, ...]:
    """Several axes, each in range and none repeated, as non-negative ints."""
    resolved = tuple(resolve_axis(op, a, rank, what) for a in axes)
    if len(set(resolved)) != len(resolved):
        raise op.fail(f"{what} {list(axes)} repeat an axis")
    return resolved


def int_attr(op: Op, name: str, default=None) -> int | None:
    """An integer attribute (a float or string one is a malformed file)."""
    value = op.attr(name, default)
    if value is None:
        return None
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool):
        raise op.fail(f"attribute '{name}' must be an integer, got {value!r}")
    return int(value)


def finite_attr(op: Op, name: str, default: float) -> float:
    """A float attribute that must be finite (alpha, beta, epsilon...)."""
    value = op.attr(name, default)
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise op.fail(f"attribute '{name}' must be a number, got {value!r}") from None
    if not math.isfinite(value):
        raise op.fail(f"attribute '{name}' must be finite, got {value}")
    return value


def broadcast_dims(op: Op, *shapes) -> tuple[int, ...]:
    """The multidirectional broadcast of ``shapes`` in pure Python (NumPy's refuses some huge dims with an
    unhelpful error), or a ModelError naming the shapes."""
    rank = max(len(s) for s in shapes)
    out = [1] * rank
    for shape in shapes:
        offset = rank - len(shape)
        for i, dim in enumerate(shape):
            have = out[offset + i]
            if dim == have or dim == 1:
                continue
            if have != 1:
                raise op.fail(f"shapes {[list(s) for s in shapes]} cannot be broadcast together")
            out[offset + i] = int(dim)
    return tuple(out)


def element_limit(op: Op, itemsize: int = 16) -> int:
    """Elements of the widest type (16 bytes) that fit the tensor budget: below it no size check is needed."""
    return op.node.limits.max_tensor_bytes // itemsize


def check_broadcast(op: Op, dtype, *arrays) -> tuple[int, ...]:
    """The broadcast shape of ``arrays``, refused when the result of ``dtype`` would be over the budget."""
    shape = broadcast_dims(op, *(a.shape for a in arrays))
    op.check_size(shape, dtype)
    return shape


def _checked_ints(op: Op, values, what: str) -> tuple[int, ...]:
    """Like ``_ints``, but a NaN, an infinity or a non-numeric value is a ModelError naming ``what``."""
    array = np.asarray(values)
    if array.dtype.kind not in "iub":
        if array.dtype.kind != "f" or not np.isfinite(array).all():
            raise op.fail(f"{what} must be integers, got {array.reshape(-1)[:16].tolist()}")
    return tuple(int(v) for v in array.reshape(-1))


def _scalar(op: Op, value: np.ndarray, what: str, finite: bool = True):
    """The single element of an input that the spec makes a scalar (or a 1-element tensor)."""
    if value.size != 1:
        raise op.fail(f"{what} must hold one value, got shape {list(value.shape)}")
    item = value.reshape(-1)[0].item()
    if finite and isinstance(item, float) and not math.isfinite(item):
        raise op.fail(f"{what} must be finite, got {item}")
    return item


class _ConstArgs(Op):
    """Base for kernels whose trailing inputs (a shape, axes...) are usually constants: parse them once."""

    def _prepared(self, index: int, parse):
        """``parse(value)`` of input ``index`` when known at load time, else None (parse at run time)."""
        value = self.const(index)
        return None if value is None else parse(value)


# ---------------------------------------------------------------- gradient helpers


def _reshaped_grad(grad: np.ndarray | None, x: np.ndarray) -> np.ndarray | None:
    """The gradient of a pure reshape (Flatten, Reshape, Squeeze, Unsqueeze...): the output's, in x's shape."""
    return None if grad is None else grad.reshape(x.shape)


def _zeros(grad: np.ndarray, x: np.ndarray) -> np.ndarray:
    """A zero gradient the shape of ``x`` in the type of ``grad`` (the computation's floating type)."""
    return np.zeros(x.shape, dtype=np.result_type(grad.dtype, x.dtype))


def _scatter_add_along(grad: np.ndarray, index: np.ndarray, axis: int, size: int) -> np.ndarray:
    """The transpose of ``np.take(x, index, axis)`` for a 1-D ``index``: sums grad's slices into ``size`` slots
    (repeated indices add up)."""
    moved = np.moveaxis(grad, axis, 0)
    out = np.zeros((size,) + moved.shape[1:], dtype=grad.dtype)
    np.add.at(out, index, moved)
    return np.moveaxis(out, 0, axis)


def _transposed_layout_grad(grad: np.ndarray, x_shape, split_shape, perm) -> np.ndarray:
    """The gradient of ``x.reshape(split_shape).transpose(perm).reshape(...)``: the same moves backwards."""
    moved_shape = tuple(split_shape[p] for p in perm)
    return grad.reshape(moved_shape).transpose(np.argsort(perm)).reshape(x_shape)


# ---------------------------------------------------------------- reshaping


@register("Flatten", 1)
class Flatten(Op):
    def __init__(self, node):
        super().__init__(node)
        self.axis = int_attr(self, "axis", 1)

    def run(self, x):
        axis = self.axis
        if axis == 1 and x.ndim and x.size:  # the usual (N, ...) -> (N, features): one reshape, no arithmetic
            return x.reshape(x.shape[0], -1)
        if not -x.ndim <= axis <= x.ndim:
            raise self.fail(f"axis {axis} is out of range for an input of rank {x.ndim}")
        if axis < 0:
            axis += x.ndim
        outer = math.prod(x.shape[:axis])
        return x.reshape(outer, math.prod(x.shape[axis:]))

    def backward(self, inputs, outputs, grads):
        return [_reshaped_grad(grads[0], inputs[0])]


@register("Reshape", 1)
class Reshape(_ConstArgs):
    """Target shape: 0 copies the input's dim (unless allowzero=1), -1 is inferred."""

    def __init__(self, node):
        super().__init__(node)
        self.allowzero = bool(self.attr("allowzero", 0))
        if node.opset < 5:  # opsets 1-4 carry the target shape as an attribute
            self.shape = tuple(self.attr("shape", []))
        else:
            self.shape = self._prepared(1, lambda v: _checked_ints(self, v, "the target shape"))
        if self.shape is not None:
            self._validate(self.shape)
        # without zeros to copy, NumPy's own -1 inference is exactly ONNX's rule
        self.copies_dims = self.shape is not None and not self.allowzero and 0 in self.shape
        # a run-time target shape (computed from Shape at run time: the same few vectors again and again) ->
        # the parsed and validated target
        self.targets: dict[tuple, tuple[int, ...]] = {}

    def _validate(self, target) -> None:
        if len(target) > self.node.limits.max_rank:
            raise self.fail(f"target shape has rank {len(target)}, over the limit of {self.node.limits.max_rank}")
        if sum(1 for d in target if d == -1) > 1 or any(d < -1 for d in target):
            raise self.fail(f"target shape {list(target)} may hold at most one -1 and no other negative value")
        if self.allowzero and 0 in target and -1 in target:
            raise self.fail(f"target shape {list(target)} has both 0 and -1 with allowzero=1")

    def run(self, x, shape=None):
        target = self.shape
        if target is None:
            key = (shape.dtype, shape.shape, shape.tobytes()) if type(shape) is np.ndarray else None
            target = self.targets.get(key) if key is not None else None
            if target is None:
                target = _checked_ints(self, shape, "the target shape")
                self._validate(target)
                if key is not None:
                    keep(self.targets, key, target)
            if not self.allowzero and 0 in target:
                target = self._with_copied_dims(target, x.shape)
        elif self.copies_dims:
            target = self._with_copied_dims(target, x.shape)
        try:
            return x.reshape(target)
        except (ValueError, TypeError, OverflowError) as exc:
            raise self.fail(f"cannot reshape input of shape {x.shape} to {list(target)}: {exc}") from None

    def backward(self, inputs, outputs, grads):
        return [_reshaped_grad(grads[0], inputs[0])] + [None] * (len(inputs) - 1)

    def _with_copied_dims(self, target, in_shape):
        if len(target) > len(in_shape) and 0 in target[len(in_shape):]:
            raise self.fail(f"target shape {list(target)} copies (0) a dim the input of shape {in_shape} lacks")
        return tuple(in_shape[i] if d == 0 else d for i, d in enumerate(target))


@register("Transpose", 1)
class Transpose(Op):
    def __init__(self, node):
        super().__init__(node)
        perm = self.attr("perm")
        self.perm = tuple(perm) if perm else None  # None: reverse the dims
        if self.perm is not None and sorted(self.perm) != list(range(len(self.perm))):
            raise self.fail(f"perm {list(self.perm)} is not a permutation of 0..{len(self.perm) - 1}")

    def run(self, x):
        if self.perm is not None and len(self.perm) != x.ndim:
            raise self.fail(f"perm {list(self.perm)} does not match an input of rank {x.ndim}")
        # the method, not np.transpose: the same view without the function wrapper's overhead (~0.5 us)
        return x.transpose(self.perm) if self.perm is not None else x.transpose()

    def backward(self, inputs, outputs, grads):
        grad = grads[0]
        if grad is None:
            return [None]
        perm = self.perm if self.perm is not None else tuple(range(grad.ndim - 1, -1, -1))
        return [np.transpose(grad, np.argsort(perm))]


@register("Squeeze", 1)
class Squeeze(_ConstArgs):
    def __init__(self, node):
        super().__init__(node)
        if node.opset < 13:
            axes = self.attr("axes")
            self.axes = tuple(axes) if axes else None
        else:
            self.axes = self._prepared(1, _ints)
        if self.axes and len(set(self.axes)) != len(self.axes):
            raise self.fail(f"axes {list(self.axes)} repeat an axis")
        self.axes_from_input = node.opset >= 13 and self.axes is None
        self.shapes: dict[tuple[int, ...], tuple[int, ...]] = {}  # input shape -> output, for constant axes

    def run(self, x, axes=None):
        chosen = self.axes
        if self.axes_from_input and axes is not None:
            chosen = _ints(axes)
        elif chosen:
            shape = self.shapes.get(x.shape)
            if shape is not None:  # (a shape seen before: its checks passed; the method, not the function)
                return x.reshape(shape)
        if not chosen:  # no axes: drop every dim of size 1
            return np.squeeze(x)
        resolved = resolve_axes(self, chosen, x.ndim)
        if any(x.shape[a] != 1 for a in resolved):
            raise self.fail(f"cannot squeeze axes {list(chosen)} of shape {x.shape}: not all of size 1")
        y = np.squeeze(x, axis=resolved)
        if chosen is self.axes:
            keep(self.shapes, x.shape, y.shape)
        return y

    def backward(self, inputs, outputs, grads):
        return [_reshaped_grad(grads[0], inputs[0])] + [None] * (len(inputs) - 1)


@register("Unsqueeze", 1)
class Unsqueeze(_ConstArgs):
    def __init__(self, node):
        super().__init__(node)
        if node.opset < 13:
            self.axes = tuple(self.attr("axes", []))
        else:
            self.axes = self._prepared(1, _ints)
        if self.axes is not None:
            self._validate(self.axes)
        self.shapes: dict[tuple[int, ...], tuple[int, ...]] = {}  # input shape -> output, for constant axes

    def _validate(self, axes) -> None:
        if len(axes) > self.node.limits.max_rank:
            raise self.fail(f"{len(axes)} axes to insert, over the rank limit of {self.node.limits.max_rank}")
        if len(set(axes)) != len(axes):
            raise self.fail(f"axes {list(axes)} repeat an axis")

    def run(self, x, axes=None):
        chosen = self.axes
        if chosen is None:
            chosen = _ints(axes)
            self._validate(chosen)
        else:
            shape = self.shapes.get(x.shape)
            if shape is not None:  # (a shape seen before: its checks passed; the method, not the function)
                return x.reshape(shape)
        # np.expand_dims resolves negative axes against the output rank, as ONNX does
        resolve_axes(self, chosen, x.ndim + len(chosen))
        y = np.expand_dims(x, chosen)
        if chosen is self.axes:
            keep(self.shapes, x.shape, y.shape)
        return y

    def backward(self, inputs, outputs, grads):
        return [_reshaped_grad(grads[0], inputs[0])] + [None] * (len(inputs) - 1)


@register("Concat", 1)
class Concat(Op):
    def __init__(self, node):
        super().__init__(node)
        self.axis = int_attr(self, "axis", 1)  # required from opset 4; opset 1 defaulted to 1
        self.max_elements = element_limit(self)

    def run(self, *inputs):
        parts = [x for x in inputs if x is not None]
        if not parts:
            raise self.fail("has no inputs to concatenate")
        # (the common in-range axis without resolve_axis's call, the sizes without a generator: a U-Net's
        # batch-1 Concat of two maps spent as long on these as on np.concatenate)
        axis = self.axis
        if type(axis) is not int or not 0 <= axis < parts[0].ndim:
            axis = resolve_axis(self, self.axis, parts[0].ndim)
        total = sum([p.size for p in parts])
        if total > self.max_elements:
            self.check_size((total,), parts[0].dtype)
        try:
            return np.concatenate(parts, axis=axis)
        except ValueError as exc:
            shapes = [list(p.shape) for p in parts]
            raise self.fail(f"cannot concatenate shapes {shapes} on axis {self.axis}: {exc}") from None

    def backward(self, inputs, outputs, grads):
        grad = grads[0]
        if grad is None:
            return [None] * len(inputs)
        axis = resolve_axis(self, self.axis, grad.ndim)
        result: list[np.ndarray | None] = []
        start = 0
        for x in inputs:
            if x is None:
                result.append(None)
                continue
            stop = start + x.shape[axis]
            index = [slice(None)] * grad.ndim
            index[axis] = slice(start, stop)
            result.append(grad[tuple(index)])
            start = stop
        return result


@register("Split", 1)
class Split(_ConstArgs):
    """Sizes from the ``split`` attribute (< 13) or input (13+); otherwise equal parts, the last one smaller."""

    def __init__(self, node):
        super().__init__(node)
        self.axis = int_attr(self, "axis", 0)
        self.count = len(node.outputs)
        if self.count < 1:
            raise self.fail("has no outputs")
        if node.opset >= 13 or (node.opset < 2 and len(node.inputs) > 1 and node.inputs[1]):
            self.sizes = self._prepared(1, _ints)
        else:
            split = self.attr("split")
            self.sizes = tuple(split) if split else None
        if self.sizes:
            self._validate(self.sizes)
        self.sizes_from_input = self.sizes is None and len(node.inputs) > 1 and bool(node.inputs[1])

    def _validate(self, sizes) -> None:
        if len(sizes) != self.count or any(s < 0 for s in sizes):
            raise self.fail(f"split sizes {list(sizes)} must be {self.count} non-negative values, one per output")

    def run(self, x, split=None):
        axis = resolve_axis(self, self.axis, x.ndim)
        sizes = self.sizes
        if self.sizes_from_input and split is not None:
            sizes = _ints(split)
            self._validate(sizes)
        if not sizes:
            dim = x.shape[axis]
            chunk = -(-dim // self.count)
            sizes = (chunk,) * (self.count - 1) + (dim - chunk * (self.count - 1),)
        if sum(sizes) != x.shape[axis] or len(sizes) != self.count or min(sizes) < 0:
            raise self.fail(f"split sizes {list(sizes)} do not fit dim {x.shape[axis]} into {self.count} outputs")
        cuts = np.cumsum(sizes[:-1])
        return tuple(np.split(x, cuts, axis=axis))

    def backward(self, inputs, outputs, grads):
        x = inputs[0]
        given = [g for g in grads if g is not None]
        if not given:
            return [None] * len(inputs)
        axis = resolve_axis(self, self.axis, x.ndim)
        dtype = np.result_type(*given)
        parts = [g if g is not None else np.zeros(o.shape, dtype) for g, o in zip(grads, outputs)]
        return [np.concatenate(parts, axis=axis).astype(dtype, copy=False)] + [None] * (len(inputs) - 1)


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
        return x[self._slices(x.shape, starts, ends, axes, steps)]

    def _slices(self, shape, starts=None, ends=None, axes=None, steps=None) -> tuple[slice, ...]:
        if self.dynamic:
            spec = (_ints(starts), _ints(ends), None if axes is None else _ints(axes),
                    None if steps is None else _ints(steps))
            return self._index(spec, shape)
        index = self._cache.get(shape)
        if index is None:
            index = self._cache[shape] = self._index(self.spec, shape)
        return index

    def backward(self, inputs, outputs, grads):
        x, grad = inputs[0], grads[0]
        if grad is None:
            return [None] * len(inputs)
        full = _zeros(grad, x)
        full[self._slices(x.shape, *inputs[1:])] = grad  # the slices pick distinct elements, in any direction
        return [full] + [None] * (len(inputs) - 1)

    def _index(self, spec, shape) -> tuple[slice, ...]:
        starts, ends, axes, steps = spec
        rank = len(shape)
        axes = range(len(starts)) if axes is None else axes
        steps = [1] * len(starts) if steps is None else steps
        index = [slice(None)] * rank
        lengths = {"starts": len(starts), "ends": len(ends), "axes": len(axes), "steps": len(steps)}
        if len(set(lengths.values())) > 1:
            raise self.fail("slice starts, ends, axes and steps must have one value per sliced axis; they have "
                            + ", ".join(f"{length} ({name})" for name, length in lengths.items()))
        if len(set(axes)) != len(axes) or len({_axis(a, rank) for a in axes}) != len(axes):
            raise self.fail(f"slice axes {list(axes)} repeat an axis")
        if any(not -rank <= a < rank for a in axes):
            raise self.fail(f"slice axes {list(axes)} are outside the input's {rank} axes (shape {list(shape)})")
        try:
            for start, end, axis, step in zip(starts, ends, axes, steps, strict=True):
                axis = _axis(axis, rank)
                index[axis] = _slice_bounds(start, end, step, shape[axis])
        except (ValueError, IndexError, TypeError) as exc:
            raise self.fail(f"bad slice {starts}:{ends} axes {list(axes)} steps {list(steps)} for shape "
                            f"{shape}: {exc}") from None
        return tuple(index)


# ---------------------------------------------------------------- gathering and scattering


def _bad_index(indices: np.ndarray, dim: int):
    """The first index outside [-dim, dim) (the value a message should name), or None."""
    flat = np.asarray(indices).reshape(-1)
    bad = flat[(flat < -dim) | (flat >= dim)]
    return bad[0].item() if bad.size else None


def _integer_indices(op: Op, indices: np.ndarray, what: str = "indices") -> None:
    if indices.dtype.kind not in "iu":
        raise op.fail(f"{what} must be integers, got {indices.dtype}")


@register("Gather", 1)
class Gather(Op):
    def __init__(self, node):
        super().__init__(node)
        self.axis = int_attr(self, "axis", 0)
        self.max_elements = element_limit(self)
        # a constant scalar index (a transformer's q/k/v split, a class token): the result is a view of one slice
        index = self.const(1)
        self.scalar = int(index) if index is not None and index.ndim == 0 and index.dtype.kind in "iu" else None
        self.selectors: dict[int, tuple] = {}  # input rank -> the basic index of that slice

    def run(self, x, indices):
        axis = self.axis
        if self.scalar is not None and -x.ndim <= axis < x.ndim and -x.shape[axis] <= self.scalar < x.shape[axis]:
            selector = self.selectors.get(x.ndim)
            if selector is None:
                selector = self.selectors[x.ndim] = (slice(None),) * (axis % x.ndim) + (self.scalar,)
            return x[selector]
        if not -x.ndim <= axis < x.ndim:
            raise self.fail(f"axis {axis} is out of range for data of shape {x.shape}")
        if indices.size * x.size > self.max_elements:
            axis %= x.ndim
            self.check_size(x.shape[:axis] + indices.shape + x.shape[axis + 1:], x.dtype)
        try:
            return np.take(x, indices, axis=axis)  # negative indices count from the end
        except (IndexError, TypeError):
            _integer_indices(self, indices)
            dim = x.shape[axis]
            raise self.fail(f"index {_bad_index(indices, dim)} is out of range [-{dim}, {dim - 1}] on axis "
                            f"{axis} of data shape {x.shape}") from None

    def backward(self, inputs, outputs, grads):
        x, indices = inputs
        grad = grads[0]
        if grad is None:
            return [None, None]
        axis = self.axis % x.ndim
        dim = x.shape[axis]
        flat = indices.reshape(-1).astype(INT64, copy=False)
        flat = np.where(flat < 0, flat + dim, flat)
        # the output is x.shape[:axis] + indices.shape + x.shape[axis + 1:]: fold the indices' dims into one
        folded = grad.reshape(x.shape[:axis] + (flat.size,) + x.shape[axis + 1:])
        full = _scatter_add_along(folded, flat, axis, dim)
        return [full.astype(np.result_type(grad.dtype, x.dtype), copy=False), None]


@register("GatherElements", 11)
class GatherElements(Op):
    def __init__(self, node):
        super().__init__(node)
        self.axis = int_attr(self, "axis", 0)

    def run(self, x, indices):
        axis = resolve_axis(self, self.axis, x.ndim)
        _integer_indices(self, indices)
        if indices.ndim != x.ndim:
            raise self.fail(f"indices of shape {indices.shape} must have the rank of data {x.shape}")
        # the index tensor may be smaller than the data on the other axes, so build the full index grid
        where = list(np.indices(indices.shape, sparse=True))
        where[axis] = indices
        try:
            return x[tuple(where)]
        except IndexError:
            dim = x.shape[axis]
            raise self.fail(f"index {_bad_index(indices, dim)} is out of range [-{dim}, {dim - 1}] on axis "
                            f"{axis}, or indices {indices.shape} are larger than data {x.shape}") from None

    def backward(self, inputs, outputs, grads):
        x, indices = inputs
        grad = grads[0]
        if grad is None:
            return [None, None]
        axis = resolve_axis(self, self.axis, x.ndim)
        where = list(np.indices(indices.shape, sparse=True))
        where[axis] = indices
        full = _zeros(grad, x)
        np.add.at(full, tuple(where), grad)  # repeated indices add up; negative ones count from the end
        return [full, None]


@register("GatherND", 11)
class GatherND(Op):
    def __init__(self, node):
        super().__init__(node)
        self.batch_dims = int_attr(self, "batch_dims", 0)
        if self.batch_dims < 0:
            raise self.fail(f"batch_dims {self.batch_dims} must not be negative")

    def run(self, x, indices):
        b = self.batch_dims
        _integer_indices(self, indices)
        if indices.ndim < 1 or b >= min(x.ndim, indices.ndim) or x.shape[:b] != indices.shape[:b]:
            raise self.fail(f"batch_dims {b} does not fit data {x.shape} and indices {indices.shape}")
        depth = indices.shape[-1]
        if depth > x.ndim - b:
            raise self.fail(f"index depth {depth} is over the {x.ndim - b} indexable dims of data {x.shape}")
        out_shape = indices.shape[:-1] + x.shape[b + depth:]
        self.check_size(out_shape, x.dtype)
        batch = math.prod(x.shape[:b])
        data = x.reshape((batch,) + x.shape[b:])
        index = indices.reshape(batch, -1, depth)
        batch_index = np.arange(batch)[:, None]
        try:
            picked = data[(batch_index,) + tuple(index[..., j] for j in range(depth))]
        except IndexError as exc:
            raise self.fail(f"indices out of range for data of shape {x.shape}: {exc}") from None
        return picked.reshape(out_shape)

    def backward(self, inputs, outputs, grads):
        x, indices = inputs
        grad = grads[0]
        if grad is None:
            return [None, None]
        b = self.batch_dims
        depth = indices.shape[-1]
        batch = math.prod(x.shape[:b])
        full = _zeros(grad, x)
        data = full.reshape((batch,) + x.shape[b:])  # a view: the sums land in ``full``
        index = indices.reshape(batch, -1, depth)
        where = (np.arange(batch)[:, None],) + tuple(index[..., j] for j in range(depth))
        np.add.at(data, where, grad.reshape((batch, index.shape[1]) + x.shape[b + depth:]))
        return [full, None]


_REDUCTIONS = {"add": np.add, "mul": np.multiply, "max": np.maximum, "min": np.minimum}


def _reduction_attr(op: Op) -> str:
    reduction = op.attr("reduction", "none")
    if reduction != "none" and reduction not in _REDUCTIONS:
        raise op.fail(f"unknown reduction {reduction!r}")
    return reduction


def _scatter(op: Op, out: np.ndarray, where: tuple, updates: np.ndarray, reduction: str) -> np.ndarray:
    try:
        if reduction == "none":
            out[where] = updates
        else:
            _REDUCTIONS[reduction].at(out, where, updates)  # .at applies duplicates one after another
    except (IndexError, ValueError) as exc:
        raise op.fail(f"indices or updates do not fit data of shape {out.shape}: {exc}") from None
    return out


def _scatter_backward(reduction: str, x: np.ndarray, positions: np.ndarray, updates: np.ndarray,
                      out: np.ndarray, grad: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Gradients (data, updates) of a scatter of the flat ``updates`` into the flat ``positions`` of ``x``."""
    g = grad.reshape(-1)
    u = updates.reshape(-1)
    dtype = np.result_type(grad.dtype, x.dtype)
    if reduction == "none":
        dx = g.astype(dtype, copy=True)
        dx[positions] = 0
        # with repeated positions only the update that was written last reaches the output
        written = np.full(x.size, -1, dtype=INT64)
        order = np.arange(u.size)
        written[positions] = order
        du = np.where(written[positions] == order, g[positions], 0)
    elif reduction == "add":
        dx, du = g, g[positions]
    elif reduction == "mul":
        # out = x * prod(updates at the position): each factor's gradient is the product of all the others,
        # formed without dividing by a zero factor
        zero = u == 0
        zeros = np.zeros(x.size, dtype=INT64)
        np.add.at(zeros, positions, zero.astype(INT64))
        product = np.ones(x.size, dtype=np.result_type(u.dtype, x.dtype))
        np.multiply.at(product, positions, np.where(zero, 1, u))
        rest = np.where(zeros == 0, product, 0)
        dx = g * rest
        others = np.where(zero, np.where(zeros[positions] == 1, product[positions], 0),
                          np.where(zeros[positions] == 0, product[positions] / np.where(zero, 1, u), 0))
        du = g[positions] * x.reshape(-1)[positions] * others
    else:  # max / min: the gradient goes to whichever value won
        flat_out = out.reshape(-1)
        dx = g * (x.reshape(-1) == flat_out)
        du = g[positions] * (u == flat_out[positions])
    return (np.asarray(dx, dtype).reshape(x.shape),
            np.asarray(du, np.result_type(grad.dtype, updates.dtype)).reshape(updates.shape))


@register("ScatterND", 11)
class ScatterND(Op):
    def __init__(self, node):
        super().__init__(node)
        self.reduction = _reduction_attr(self)

    def run(self, x, indices, updates):
        _integer_indices(self, indices)
        depth = indices.shape[-1] if indices.ndim else 0
        if indices.ndim < 1 or depth > x.ndim or updates.shape != indices.shape[:-1] + x.shape[depth:]:
            raise self.fail(f"indices {indices.shape} and updates {updates.shape} do not fit data {x.shape}")
        where = tuple(np.moveaxis(indices.reshape(-1, depth), -1, 0))
        flat_updates = updates.reshape((-1,) + x.shape[depth:])
        return _scatter(self, x.copy(), where, flat_updates, self.reduction)

    def backward(self, inputs, outputs, grads):
        x, indices, updates = inputs
        if grads[0] is None:
            return [None, None, None]
        depth = indices.shape[-1]
        rows = indices.reshape(-1, depth).astype(INT64, copy=False)
        dims = np.asarray(x.shape[:depth], dtype=INT64)
        rows = np.where(rows < 0, rows + dims, rows)
        inner = math.prod(x.shape[depth:])
        start = np.ravel_multi_index(tuple(rows.T), x.shape[:depth]) * inner if depth else np.zeros(len(rows), INT64)
        positions = (start[:, None] + np.arange(inner)[None, :]).reshape(-1)
        dx, du = _scatter_backward(self.reduction, x, positions, updates, outputs[0], grads[0])
        return [dx, None, du]


@register("ScatterElements", 11)
class ScatterElements(Op):
    def __init__(self, node):
        super().__init__(node)
        self.axis = int_attr(self, "axis", 0)
        self.reduction = _reduction_attr(self)

    def run(self, x, indices, updates):
        axis = resolve_axis(self, self.axis, x.ndim)
        _integer_indices(self, indices)
        if indices.ndim != x.ndim or updates.shape != indices.shape:
            raise self.fail(f"indices {indices.shape} and updates {updates.shape} do not fit data {x.shape}")
        dim = x.shape[axis]
        bad = _bad_index(indices, dim)
        if bad is not None:
            raise self.fail(f"index {bad} is out of range [-{dim}, {dim - 1}] on axis {axis}")
        where = list(np.indices(indices.shape, sparse=True))
        where[axis] = np.where(indices < 0, indices + dim, indices)
        return _scatter(self, x.copy(), tuple(where), updates, self.reduction)

    def backward(self, inputs, outputs, grads):
        x, indices, updates = inputs
        if grads[0] is None:
            return [None, None, None]
        axis = resolve_axis(self, self.axis, x.ndim)
        where = list(np.indices(indices.shape, sparse=True))
        where[axis] = np.where(indices < 0, indices + x.shape[axis], indices)
        positions = np.ravel_multi_index(tuple(np.broadcast_arrays(*where)), x.shape).reshape(-1)
        dx, du = _scatter_backward(self.reduction, x, positions, updates, outputs[0], grads[0])
        return [dx, None, du]


@register("Scatter", 9)
class Scatter(ScatterElements):
    """The deprecated (opsets 9-10) name of ScatterElements without reduction."""


@register("Compress", 9)
class Compress(Op):
    def __init__(self, node):
        super().__init__(node)
        self.axis = int_attr(self, "axis")

    def run(self, x, condition):
        try:
            if self.axis is None:
                return np.compress(condition.reshape(-1), x.reshape(-1))
            return np.compress(condition.reshape(-1), x, axis=resolve_axis(self, self.axis, x.ndim))
        except (IndexError, ValueError, TypeError) as exc:
            raise self.fail(f"condition of shape {condition.shape} does not fit data {x.shape}: {exc}") from None

    def backward(self, inputs, outputs, grads):
        x, condition = inputs
        grad = grads[0]
        if grad is None:
            return [None, None]
        picked = np.flatnonzero(condition.reshape(-1))
        full = _zeros(grad, x)
        if self.axis is None:
            full.reshape(-1)[picked] = grad
        else:
            np.moveaxis(full, resolve_axis(self, self.axis, x.ndim), 0)[picked] = \
                np.moveaxis(grad, resolve_axis(self, self.axis, x.ndim), 0)
        return [full, None]


@register("NonZero", 9)
class NonZero(Op):
    def run(self, x):
        rank = max(x.ndim, 1)
        if x.size * rank * 8 > self.node.limits.max_tensor_bytes:  # int64 coordinates may outgrow the input
            self.check_size((rank, int(np.count_nonzero(x))), INT64)
        return np.array(np.nonzero(np.atleast_1d(x)), dtype=INT64).reshape(rank, -1)


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
        self.shape = self._prepared(1, lambda v: _checked_ints(self, v, "the target shape"))
        if self.shape is not None:
            self._validate(self.shape)

    def _validate(self, target) -> None:
        # the output is at least as large as the target on every axis (or empty): refuse it before any input
        self.check_size(target, np.uint8, "target shape")

    def run(self, x, shape):
        target = self.shape
        if target is None:
            target = _checked_ints(self, shape, "the target shape")
            self._validate(target)
        full = broadcast_dims(self, x.shape, target)  # Expand broadcasts both ways
        self.check_size(full, x.dtype)
        return np.array(np.broadcast_to(x, full))  # a writable copy, not a read-only view

    def backward(self, inputs, outputs, grads):
        grad = grads[0]
        return [None if grad is None else sum_to_shape(grad, inputs[0].shape), None]


@register("Tile", 6)
class Tile(Op):
    def run(self, x, repeats):
        counts = _checked_ints(self, repeats, "repeats")
        if len(counts) != x.ndim or any(r < 0 for r in counts):
            raise self.fail(f"repeats {list(counts)} must be {x.ndim} non-negative values for input {x.shape}")
        self.check_size(tuple(d * r for d, r in zip(x.shape, counts)), x.dtype)
        return np.tile(x, counts)

    def backward(self, inputs, outputs, grads):
        x, grad = inputs[0], grads[0]
        if grad is None:
            return [None, None]
        counts = _ints(inputs[1])
        # output index k * dim + i along each axis: split every axis into (repeat, dim) and sum the repeats
        split = tuple(v for pair in zip(counts, x.shape) for v in pair)
        summed = grad.reshape(split).sum(axis=tuple(range(0, 2 * x.ndim, 2))) if x.ndim else grad
        return [summed.reshape(x.shape), None]


@register("Range", 11)
class Range(Op):
    def run(self, start, limit, delta):
        dtype = start.dtype
        first, last, step = (_scalar(self, v, name) for v, name in ((start, "start"), (limit, "limit"),
                                                                    (delta, "delta")))
        if step == 0:
            raise self.fail("delta is 0: the range would never end")
        if dtype.kind == "f":
            span = (last - first) / step
            if not math.isfinite(span):
                raise self.fail(f"range from {first} to {last} by {step} has no finite length")
            count = max(math.ceil(span), 0)
        else:
            count = max(-((first - last) // step), 0)  # exact ceiling division of Python ints
        wide = np.float64 if dtype.kind == "f" else INT64
        self.check_size((count,), wide, f"range from {first} to {last} by {step}")
        return (first + np.arange(count, dtype=wide) * step).astype(dtype)

    def backward(self, inputs, outputs, grads):
        start, limit, delta = inputs
        grad = grads[0]
        if grad is None or start.dtype.kind != "f":
            return [None, None, None]
        # start + i * delta: the length is a step function of the bounds, flat almost everywhere
        steps = np.arange(grad.size, dtype=grad.dtype)
        return [np.full(start.shape, grad.sum(), start.dtype), None,
                np.full(delta.shape, np.dot(grad, steps), delta.dtype)]


@register("ConstantOfShape", 9)
class ConstantOfShape(_ConstArgs):
    def __init__(self, node):
        super().__init__(node)
        value = self.attr("value")
        self.value = np.zeros(1, np.float32) if value is None else np.asarray(value).reshape(-1)[:1]
        if self.value.size != 1:
            raise self.fail("attribute 'value' must hold one element, it is empty")
        self.shape = self._prepared(0, lambda v: _checked_ints(self, v, "the shape"))
        if self.shape is not None:
            self.check_size(self.shape, self.value.dtype)

    def run(self, shape):
        target = self.shape
        if target is None:
            target = _checked_ints(self, shape, "the shape")
            self.check_size(target, self.value.dtype)
        return np.full(target, self.value[0], dtype=self.value.dtype)

    def backward(self, inputs, outputs, grads):
        return [None]


@register("EyeLike", 9)
class EyeLike(Op):
    def __init__(self, node):
        super().__init__(node)
        self.k = int_attr(self, "k", 0)
        dtype = self.attr("dtype")
        try:
            self.dtype = None if dtype is None else _np_dtype(dtype)
        except (KeyError, ValueError, TypeError):
            raise self.fail(f"unknown dtype {dtype!r}") from None

    def run(self, x):
        if x.ndim != 2:
            raise self.fail(f"input must be 2-D, got shape {x.shape}")
        dtype = self.dtype or x.dtype
        self.check_size(x.shape, dtype)
        return np.eye(x.shape[0], x.shape[1], k=self.k, dtype=dtype)

    def backward(self, inputs, outputs, grads):
        return [None]  # only the input's shape matters


@register("Trilu", 14)
class Trilu(Op):
    def __init__(self, node):
        super().__init__(node)
        self.upper = bool(self.attr("upper", 1))

    def run(self, x, k=None):
        if x.ndim < 2:
            raise self.fail(f"input must have rank 2 or more, got shape {x.shape}")
        diagonal = 0 if k is None else int(_scalar(self, k, "k"))
        return np.triu(x, diagonal) if self.upper else np.tril(x, diagonal)

    def backward(self, inputs, outputs, grads):
        grad = grads[0]
        if grad is None:
            return [None] * len(inputs)
        return [self.run(grad, *inputs[1:])] + [None] * (len(inputs) - 1)  # the same mask, applied to grad


@register("OneHot", 9)
class OneHot(Op):
    def __init__(self, node):
        super().__init__(node)
        self.axis = int_attr(self, "axis", -1)

    def run(self, indices, depth, values):
        depth = _scalar(self, depth, "depth")
        if depth < 1:
            raise self.fail(f"depth {depth} must be at least 1")
        depth = int(depth)
        if values.size != 2:
            raise self.fail(f"values must hold [off, on], got shape {list(values.shape)}")
        values = values.reshape(2)
        axis = resolve_axis(self, self.axis, indices.ndim + 1)
        self.check_size(indices.shape[:axis] + (depth,) + indices.shape[axis:], values.dtype)
        index = indices.astype(INT64)
        index = np.where(index < 0, index + depth, index)  # -1 means depth-1; still out of range -> all "off"
        positions = np.arange(depth).reshape((-1,) + (1,) * (index.ndim - axis))
        hot = np.expand_dims(index, axis) == positions
        return np.where(hot, values[1], values[0]).astype(values.dtype)

    def backward(self, inputs, outputs, grads):
        indices, depth, values = inputs
        grad = grads[0]
        if grad is None or values.dtype.kind != "f":
            return [None, None, None]
        depth = int(_scalar(self, depth, "depth"))
        axis = resolve_axis(self, self.axis, indices.ndim + 1)
        index = indices.astype(INT64)
        index = np.where(index < 0, index + depth, index)
        positions = np.arange(depth).reshape((-1,) + (1,) * (index.ndim - axis))
        hot = np.expand_dims(index, axis) == positions
        total_on = grad[hot].sum()
        dvalues = np.array([grad.sum() - total_on, total_on], dtype=values.dtype).reshape(values.shape)
        return [None, None, dvalues]


@register("CumSum", 11)
class CumSum(Op):
    def __init__(self, node):
        super().__init__(node)
        self.exclusive = bool(self.attr("exclusive", 0))
        self.reverse = bool(self.attr("reverse", 0))

    def run(self, x, axis):
        axis = resolve_axis(self, int(_scalar(self, axis, "axis")), x.ndim)
        return self._cumsum(x, axis, self.reverse)

    def _cumsum(self, x, axis: int, reverse: bool):
        data = np.flip(x, axis) if reverse else x
        total = np.cumsum(data, axis=axis, dtype=x.dtype)
        if self.exclusive:  # shift by one: each position sums only what precedes it
            total = np.concatenate([np.zeros_like(np.take(total, [0], axis=axis)),
                                    np.take(total, np.arange(total.shape[axis] - 1), axis=axis)], axis=axis)
        return np.flip(total, axis) if reverse else total

    def backward(self, inputs, outputs, grads):
        x, axis = inputs
        grad = grads[0]
        if grad is None:
            return [None, None]
        # the transpose of a running sum is the running sum the other way
        axis = resolve_axis(self, int(_scalar(self, axis, "axis")), x.ndim)
        return [self._cumsum(grad, axis, not self.reverse), None]


@register("TopK", 1)
class TopK(Op):
    """Sorted top-k along ``axis``; equal values keep the lower index first (as onnxruntime does)."""

    def __init__(self, node):
        super().__init__(node)
        self.axis = int_attr(self, "axis", -1)
        self.largest = bool(self.attr("largest", 1))
        self.k = int_attr(self, "k") if node.opset < 10 else None

    def run(self, x, k=None):
        axis = resolve_axis(self, self.axis, x.ndim)
        count = self.k if self.k is not None else _scalar(self, k, "k")
        if not isinstance(count, int) or count > x.shape[axis] or count < 0:
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

    def backward(self, inputs, outputs, grads):
        x, grad = inputs[0], grads[0]
        if grad is None:
            return [None] * len(inputs)
        full = _zeros(grad, x)
        np.put_along_axis(full, outputs[1], grad, axis=resolve_axis(self, self.axis, x.ndim))  # distinct indices
        return [full] + [None] * (len(inputs) - 1)


# ---------------------------------------------------------------- padding and rearranging

# np.pad grows a reflect / wrap border by at most one axis length per Python-level step: a border many
# times the axis would loop for minutes, so it is refused
_MAX_PAD_PERIODS = 1000


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
            self.value = finite_or_inf_attr(self, "value", 0.0)
            self.axes = None
        else:
            self.pads = None if self.const(1) is None else _checked_ints(self, self.const(1), "pads")
            value = self.const(2)
            omitted = len(node.inputs) < 3 or not node.inputs[2]  # no constant_value input: pad with 0
            self.value = 0 if omitted else None if value is None else value.item() if value.size == 1 else 0
            if value is not None and value.size > 1:
                raise self.fail(f"constant_value must be a scalar, got shape {list(value.shape)}")
            self.axes = None if self.const(3) is None else _ints(self.const(3))
        if self.pads is not None and len(self.pads) % 2:
            raise self.fail(f"pads {list(self.pads)} must have an even length (begins then ends)")
        self.layouts: dict[tuple, tuple | bool] = {}

    def run(self, x, pads=None, constant_value=None, axes=None):
        if self.pads is not None and self.mode == "constant" and self.value is not None and x.dtype.kind == "f" \
                and (self.axes is not None or axes is None):
            # constant pads known at load time: per input shape, the output shape and where the input goes
            # (np.pad's own Python-level work costs tens of microseconds on the small tensors of batch 1)
            key = (x.shape, x.dtype)
            entry = self.layouts.get(key)
            if entry is None:
                widths = self._widths(self.pads, x.shape, self.axes, x.dtype)
                entry = False
                if all(b >= 0 and e >= 0 for b, e in widths):
                    entry = (tuple(n + b + e for n, (b, e) in zip(x.shape, widths)), any(b or e for b, e in widths),
                             tuple(slice(b, b + n) for n, (b, _) in zip(x.shape, widths)))
                keep(self.layouts, key, entry)
            if entry:
                shape, padded, interior = entry
                if not padded:  # all pads 0 (exporters write such a Pad before an AveragePool): the input itself
                    return x
                y = np.empty(shape, x.dtype)
                if padded:
                    y.fill(self.value)
                y[interior] = x
                return y
        pads = self.pads if self.pads is not None else _checked_ints(self, pads, "pads")
        axes = self.axes if self.axes is not None or axes is None else _ints(axes)
        value = self.value
        if value is None:
            value = _scalar(self, constant_value, "constant_value", finite=False) if constant_value is not None and \
                constant_value.size else 0
        widths = self._widths(pads, x.shape, axes, x.dtype)
        if any(b < 0 or e < 0 for b, e in widths):  # crop first, then pad what is left
            x = x[tuple(slice(max(-b, 0), x.shape[d] - max(-e, 0)) for d, (b, e) in enumerate(widths))]
            widths = [(max(b, 0), max(e, 0)) for b, e in widths]
        if self.mode == "constant":
            return np.pad(x, widths, mode="constant", constant_values=value)
        for size, (b, e) in zip(x.shape, widths):
            if b or e:
                if size == 0:
                    raise self.fail(f"cannot {self.mode}-pad an empty axis of shape {x.shape}")
                if max(b, e) > _MAX_PAD_PERIODS * size:
                    raise self.fail(f"{self.mode} pads {list(pads)} are over {_MAX_PAD_PERIODS} times an axis of "
                                    f"the input's shape {x.shape}")
        return np.pad(x, widths, mode=self.MODES[self.mode])

    def backward(self, inputs, outputs, grads):
        x, grad = inputs[0], grads[0]
        rest = [None] * (len(inputs) - 1)
        if grad is None:
            return [None] + rest
        pads = self.pads if self.pads is not None else _checked_ints(self, inputs[1], "pads")
        axes_input = inputs[3] if len(inputs) > 3 else None
        axes = self.axes if self.axes is not None or axes_input is None else _ints(axes_input)
        widths = self._widths(pads, x.shape, axes, x.dtype)
        crop = tuple(slice(max(-b, 0), x.shape[d] - max(-e, 0)) for d, (b, e) in enumerate(widths))
        # the transpose of padding one axis after another: along each axis, every output position adds its
        # gradient to the input position it copied (np.pad of the positions themselves says which; -1: the
        # constant, which no input position receives)
        g = grad
        for axis, (b, e) in enumerate(widths):
            b, e = max(b, 0), max(e, 0)
            if not b and not e:
                continue
            size = crop[axis].stop - crop[axis].start
            source = np.arange(size)
            if self.mode == "constant":
                source = np.pad(source, (b, e), mode="constant", constant_values=-1)
            else:
                source = np.pad(source, (b, e), mode=self.MODES[self.mode])
            kept = source >= 0
            g = _scatter_add_along(np.compress(kept, g, axis=axis), source[kept], axis, size)
        full = _zeros(grad, x)
        full[crop] = g
        if self.mode == "constant" and len(inputs) > 2 and inputs[2] is not None and inputs[2].dtype.kind == "f" \
                and inputs[2].size:
            # every output position not copied from the input holds the constant
            rest[1] = np.full(inputs[2].shape, grad.sum() - g.sum(), dtype=inputs[2].dtype)
        return [full] + rest

    def _widths(self, pads, shape, axes, dtype) -> list[tuple[int, int]]:
        """ONNX pads [b1, b2, ..., e1, e2, ...] (over ``axes`` or all dims) as per-dim (begin, end) pairs, with
        the padded shape checked against the budget."""
        rank = len(shape)
        axes = tuple(range(rank)) if axes is None else resolve_axes(self, axes, rank)
        if len(pads) != 2 * len(axes):
            raise self.fail(f"pads {list(pads)} must have 2 values per padded axis ({len(axes)}) of input {shape}")
        half = len(axes)
        widths = [(0, 0)] * rank
        for i, axis in enumerate(axes):
            widths[axis] = (pads[i], pads[half + i])
        out = tuple(d + b + e for d, (b, e) in zip(shape, widths))
        if min(out, default=0) < 0:
            raise self.fail(f"pads {list(pads)} crop more than the input's shape {shape}")
        self.check_size(out, dtype)
        return widths


def finite_or_inf_attr(op: Op, name: str, default: float) -> float:
    """A float attribute that may be infinite (a padding or clipping value) but not NaN."""
    value = op.attr(name, default)
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise op.fail(f"attribute '{name}' must be a number, got {value!r}") from None
    if math.isnan(value):
        raise op.fail(f"attribute '{name}' is NaN")
    return value


def _blocksize(op: Op) -> int:
    block = int_attr(op, "blocksize")
    if block is None or block < 1:
        raise op.fail(f"attribute 'blocksize' must be a positive integer, got {block}")
    return block


def _crd_mode(op: Op) -> bool:
    mode = op.attr("mode", "DCR")
    if mode not in ("DCR", "CRD"):
        raise op.fail(f"mode must be 'DCR' or 'CRD', got {mode!r}")
    return mode == "CRD"


@register("DepthToSpace", 1)
class DepthToSpace(Op):
    def __init__(self, node):
        super().__init__(node)
        self.block = _blocksize(self)
        self.crd = _crd_mode(self)

    def run(self, x):
        b = self.block
        if x.ndim != 4 or x.shape[1] % (b * b):
            raise self.fail(f"input of shape {x.shape} must be 4-D with channels divisible by blocksize^2 ({b * b})")
        n, c, h, w = x.shape
        if self.crd:
            y = x.reshape(n, c // (b * b), b, b, h, w).transpose(0, 1, 4, 2, 5, 3)
        else:
            y = x.reshape(n, b, b, c // (b * b), h, w).transpose(0, 3, 4, 1, 5, 2)
        return y.reshape(n, c // (b * b), h * b, w * b)

    def backward(self, inputs, outputs, grads):
        x, grad = inputs[0], grads[0]
        if grad is None:
            return [None]
        b = self.block
        n, c, h, w = x.shape
        if self.crd:
            return [_transposed_layout_grad(grad, x.shape, (n, c // (b * b), b, b, h, w), (0, 1, 4, 2, 5, 3))]
        return [_transposed_layout_grad(grad, x.shape, (n, b, b, c // (b * b), h, w), (0, 3, 4, 1, 5, 2))]


@register("SpaceToDepth", 1)
class SpaceToDepth(Op):
    def __init__(self, node):
        super().__init__(node)
        self.block = _blocksize(self)
        self.crd = _crd_mode(self)  # the mode attribute exists from opset 28

    def run(self, x):
        b = self.block
        if x.ndim != 4 or x.shape[2] % b or x.shape[3] % b:
            raise self.fail(f"input of shape {x.shape} must be 4-D with height and width divisible by {b}")
        n, c, h, w = x.shape
        y = x.reshape(n, c, h // b, b, w // b, b)
        y = y.transpose(0, 1, 3, 5, 2, 4) if self.crd else y.transpose(0, 3, 5, 1, 2, 4)
        return y.reshape(n, c * b * b, h // b, w // b)

    def backward(self, inputs, outputs, grads):
        x, grad = inputs[0], grads[0]
        if grad is None:
            return [None]
        b = self.block
        n, c, h, w = x.shape
        perm = (0, 1, 3, 5, 2, 4) if self.crd else (0, 3, 5, 1, 2, 4)
        return [_transposed_layout_grad(grad, x.shape, (n, c, h // b, b, w // b, b), perm)]


@register("ReverseSequence", 10)
class ReverseSequence(Op):
    def __init__(self, node):
        super().__init__(node)
        self.batch_axis = int_attr(self, "batch_axis", 1)
        self.time_axis = int_attr(self, "time_axis", 0)
        if {self.batch_axis, self.time_axis} != {0, 1}:
            raise self.fail(f"batch_axis {self.batch_axis} and time_axis {self.time_axis} must be 0 and 1")

    def run(self, x, sequence_lens):
        if x.ndim < 2:
            raise self.fail(f"input must have rank 2 or more, got shape {x.shape}")
        batch, steps = x.shape[self.batch_axis], x.shape[self.time_axis]
        lengths = np.asarray(_checked_ints(self, sequence_lens, "sequence_lens"), dtype=INT64)
        if lengths.shape != (batch,) or (lengths.size and (lengths.min() < 0 or lengths.max() > steps)):
            raise self.fail(f"sequence_lens {lengths[:16].tolist()} must be {batch} lengths in [0, {steps}]")
        # source time step of every (batch, time) position: reversed within the length, unchanged after it
        t = np.arange(steps)[None, :]
        lengths = lengths[:, None]
        source = np.where(t < lengths, lengths - 1 - t, t)
        if self.batch_axis > self.time_axis:
            source = source.T
        return np.take_along_axis(x, source.reshape(source.shape + (1,) * (x.ndim - 2)), axis=self.time_axis)

    def backward(self, inputs, outputs, grads):
        grad = grads[0]
        # reversing the first ``length`` steps is its own inverse, so its transpose is itself
        return [None if grad is None else self.run(grad, inputs[1]), None]


# ---------------------------------------------------------------- constants and pass-through


#: Constant's value attributes other than a tensor, and the dtype each holds
_CONSTANT_VALUES = (("value_float", np.float32), ("value_floats", np.float32), ("value_int", INT64),
                    ("value_ints", INT64), ("value_string", object), ("value_strings", object))


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
        for name, dtype in _CONSTANT_VALUES:
            if name in attrs:
                try:
                    return np.array(attrs[name], dtype=dtype)
                except (TypeError, ValueError, OverflowError):  # (an attribute of another type under this name)
                    raise self.fail(f"attribute '{name}' holds {str(attrs[name])[:60]!r}, not the"
                                    f" {np.dtype(dtype).name if dtype is not object else 'string'} its name says"
                                    ) from None
        raise self.fail("has no value attribute")

    def run(self):
        return self.value

    def backward(self, inputs, outputs, grads):
        return []


@register("Identity", 1)
class Identity(Op):
    def run(self, x):
        return x

    def backward(self, inputs, outputs, grads):
        return [grads[0]]


@register("Dropout", 1)
class Dropout(Op):
    """Inference: the input passes through and the mask is all True. ``training_mode`` (12+) drops for real."""

    def __init__(self, node):
        super().__init__(node)
        self.ratio = finite_attr(self, "ratio", 0.5)
        if not 0 <= self.ratio <= 1:
            raise self.fail(f"ratio {self.ratio} must be in [0, 1]")
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
            rate = self.ratio if ratio is None else float(_scalar(self, ratio, "ratio"))
            if not 0 <= rate <= 1:
                raise self.fail(f"ratio {rate} must be in [0, 1]")
            if self.seed is not None:
                keep = np.random.RandomState(int(self.seed)).uniform(0.0, 1.0, x.shape) >= rate
            else:
                keep = self.rng.random(x.shape) >= rate
            scale = 1.0 / (1.0 - rate) if rate < 1 else 0.0
            out = (x * keep * scale).astype(x.dtype)
        else:
            out, keep = x, np.ones(x.shape, dtype=bool)
        if training_mode is not None and bool(training_mode.item()) and self.seed is None:
            self._remember(out, keep)
        if not self.want_mask:
            return out
        return out, keep if self.mask_is_bool else keep.astype(x.dtype)

    def _remember(self, out: np.ndarray, keep: np.ndarray) -> None:
        """Keep a random mask for the backward of this run, as long as its output lives."""
        if not hasattr(self, "masks"):
            self.masks: dict[int, np.ndarray] = {}
        key = id(out)
        self.masks[key] = keep
        weakref.finalize(out, self.masks.pop, key, None)

    def backward(self, inputs, outputs, grads):
        x, grad = inputs[0], grads[0]
        rest = [None] * (len(inputs) - 1)
        training_mode = inputs[2] if len(inputs) > 2 else None
        if grad is None:
            return [None] + rest
        if training_mode is None or not bool(training_mode.item()):
            return [grad] + rest
        ratio = inputs[1] if len(inputs) > 1 else None
        rate = self.ratio if ratio is None else float(_scalar(self, ratio, "ratio"))
        out = outputs[0]
        keep = getattr(self, "masks", {}).get(id(out))
        if keep is None:
            if len(outputs) > 1 and outputs[1] is not None:
                keep = outputs[1].astype(bool)
            elif self.seed is not None:
                keep = np.random.RandomState(int(self.seed)).uniform(0.0, 1.0, x.shape) >= rate
            else:
                raise self.fail("the random mask of this training run is gone: run the forward pass again")
        scale = 1.0 / (1.0 - rate) if rate < 1 else 0.0
        dx = (grad * keep * scale).astype(np.result_type(grad.dtype, x.dtype), copy=False)
        if ratio is not None and ratio.dtype.kind == "f":
            # out = x * keep / (1 - ratio): with the mask fixed, smooth in the ratio too
            rest[0] = np.full(ratio.shape, float(np.sum(grad * out)) * scale, dtype=ratio.dtype)
        return [dx] + rest
