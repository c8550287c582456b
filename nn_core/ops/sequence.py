"""Sequences and optionals: SequenceConstruct/Empty/At/Insert/Erase/Length, SplitToSequence, ConcatFromSequence,
SequenceMap, Optional, OptionalHasElement, OptionalGetElement.

A sequence is a Python list of arrays and an empty optional is None; the plan passes them between kernels as
opaque values and the model hands them out as they are (``ValueSpec.kind``). Kernels never modify a list they
are given (a value may be read by several nodes): inserting or erasing builds a new list.

Budgets: a sequence may not hold more than ``Limits.max_loop_iterations`` items (a Loop inserting once per
iteration reaches that at most), and SplitToSequence / ConcatFromSequence / SequenceMap are checked like the
tensors and loops they stand for.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .control import _bodies
from .registry import NodeSpec, Op, register
from .shape import int_attr, resolve_axis


def _sequence(op: Op, value: Any, what: str = "the input sequence") -> list:
    if not isinstance(value, list):
        kind = "an empty optional" if value is None else f"a tensor of shape {list(np.shape(value))}"
        raise op.fail(f"{what} must be a sequence, got {kind}")
    return value


def _position(op: Op, value: Any, length: int, inserting: bool = False) -> int:
    array = np.asarray(value)
    if array.size != 1 or array.dtype.kind not in "iu":
        raise op.fail(f"the position must be one integer, got {array.dtype} of shape {list(array.shape)}")
    position = int(array.reshape(-1)[0])
    high = length if inserting else length - 1
    if not -length <= position <= high:
        raise op.fail(f"position {position} is outside [{-length}, {high}] for a sequence of {length} items")
    return position + length if position < 0 else position


def _check_length(op: Op, length: int) -> None:
    limit = op.node.limits.max_loop_iterations
    if length > limit:
        raise op.fail(f"a sequence of {length:,} items is over the limit of {limit:,} "
                      "(nn_core.Limits.max_loop_iterations)")


class _SequenceOp(Op):
    # a folded value must be an array; sequences and empty optionals are computed at run time
    foldable = False


@register("SequenceEmpty", 11)
class SequenceEmpty(_SequenceOp):
    def run(self):
        return []


@register("SequenceConstruct", 11)
class SequenceConstruct(_SequenceOp):
    def __init__(self, node: NodeSpec):
        super().__init__(node)
        _check_length(self, len(node.inputs))

    def run(self, *tensors):
        items = list(tensors)
        if any(t is None or isinstance(t, list) for t in items):
            raise self.fail("every input must be a tensor")
        dtypes = {t.dtype for t in items}
        if len(dtypes) > 1:
            raise self.fail(f"the tensors of a sequence must share one element type, got {sorted(map(str, dtypes))}")
        return items


@register("SequenceAt", 11)
class SequenceAt(_SequenceOp):
    def run(self, sequence, position):
        sequence = _sequence(self, sequence)
        return sequence[_position(self, position, len(sequence))]


@register("SequenceLength", 11)
class SequenceLength(_SequenceOp):
    def run(self, sequence):
        return np.array(len(_sequence(self, sequence)), dtype=np.int64)


@register("SequenceInsert", 11)
class SequenceInsert(_SequenceOp):
    def run(self, sequence, tensor, position=None):
        sequence = _sequence(self, sequence)
        if tensor is None or isinstance(tensor, list):
            raise self.fail("the value to insert must be a tensor")
        if sequence and sequence[0].dtype != tensor.dtype:
            raise self.fail(f"inserting a {tensor.dtype} tensor into a sequence of {sequence[0].dtype}")
        _check_length(self, len(sequence) + 1)
        at = len(sequence) if position is None else _position(self, position, len(sequence), inserting=True)
        return sequence[:at] + [tensor] + sequence[at:]


@register("SequenceErase", 11)
class SequenceErase(_SequenceOp):
    def run(self, sequence, position=None):
        sequence = _sequence(self, sequence)
        if not sequence:
            raise self.fail("cannot erase from an empty sequence")
        at = len(sequence) - 1 if position is None else _position(self, position, len(sequence))
        return sequence[:at] + sequence[at + 1:]


@register("SplitToSequence", 11)
class SplitToSequence(_SequenceOp):
    def __init__(self, node: NodeSpec):
        super().__init__(node)
        self.axis = int_attr(self, "axis", 0)
        self.keepdims = int_attr(self, "keepdims", 1)
        if self.keepdims not in (0, 1):
            raise self.fail(f"keepdims must be 0 or 1, got {self.keepdims}")

    def run(self, x, split=None):
        axis = resolve_axis(self, self.axis, x.ndim)
        dim = x.shape[axis]
        if split is None:
            _check_length(self, dim)
            parts = [np.take(x, [i], axis=axis) for i in range(dim)]
            return [np.squeeze(p, axis=axis) for p in parts] if not self.keepdims else parts
        split = np.asarray(split)
        if split.dtype.kind not in "iu" or split.ndim > 1:
            raise self.fail(f"split must be an integer scalar or 1-D tensor, got {split.dtype} {list(split.shape)}")
        if split.ndim == 0:
            size = int(split)
            if size <= 0:
                raise self.fail(f"split size {size} must be positive")
            sizes = [size] * (dim // size) + ([dim % size] if dim % size else [])
        else:
            sizes = [int(s) for s in split]
            if any(s < 0 for s in sizes) or sum(sizes) != dim:
                raise self.fail(f"split sizes {sizes} do not add up to dim {dim} along axis {axis}")
        _check_length(self, len(sizes))
        return list(np.split(x, np.cumsum(sizes[:-1]), axis=axis)) if sizes else []


@register("ConcatFromSequence", 11)
class ConcatFromSequence(Op):
    def __init__(self, node: NodeSpec):
        super().__init__(node)
        if self.attr("axis") is None:
            raise self.fail("missing attribute 'axis'")
        self.axis = int_attr(self, "axis")
        self.new_axis = int_attr(self, "new_axis", 0)
        if self.new_axis not in (0, 1):
            raise self.fail(f"new_axis must be 0 or 1, got {self.new_axis}")

    def run(self, sequence):
        sequence = _sequence(self, sequence)
        if not sequence:
            raise self.fail("cannot concatenate an empty sequence")
        first = sequence[0]
        rank = first.ndim + self.new_axis
        axis = resolve_axis(self, self.axis, rank)
        shape = list(first.shape)
        if self.new_axis:
            shape.insert(axis, len(sequence))
        else:
            if first.ndim == 0:
                raise self.fail("cannot concatenate scalars without new_axis")
            shape[axis] = sum(int(t.shape[axis]) if t.ndim == first.ndim else 0 for t in sequence)
        self.check_size(shape, first.dtype)
        try:
            return np.stack(sequence, axis=axis) if self.new_axis else np.concatenate(sequence, axis=axis)
        except ValueError as exc:
            raise self.fail(f"the tensors of the sequence do not fit together: {exc}") from None


@register("SequenceMap", 17)
class SequenceMap(_SequenceOp):
    """The body once per item of the first input; further inputs are sequences of the same length (item by item)
    or tensors (whole, every time). Each body output becomes a sequence."""

    def __init__(self, node: NodeSpec):
        super().__init__(node)
        (self.body,), self.declared = _bodies(self, ("body",))
        if self.body.formal_count != self.declared:
            raise self.fail(f"the body takes {self.body.formal_count} inputs, the node gives {self.declared}")
        if self.body.output_count != len(node.outputs):
            raise self.fail(f"the body gives {self.body.output_count} outputs, the node declares "
                            f"{len(node.outputs)}")
        self.single = len(node.outputs) == 1

    def run(self, *args):
        declared, outer = args[: self.declared], args[self.declared:]
        first = _sequence(self, declared[0])
        length = len(first)
        for k, value in enumerate(declared[1:], 1):
            if isinstance(value, list) and len(value) != length:
                raise self.fail(f"input {k} is a sequence of {len(value)} items, the first of {length}")
        results: list[list[Any]] = [[] for _ in range(self.body.output_count)]
        for i in range(length):
            formal = [v[i] if isinstance(v, list) else v for v in declared]
            for k, value in enumerate(self.body(formal, outer)):
                results[k].append(value)
        return results[0] if self.single else tuple(results)


@register("Optional", 15)
class Optional(_SequenceOp):
    def __init__(self, node: NodeSpec):
        super().__init__(node)
        if not (node.inputs and node.inputs[0]) and self.attr("type") is None:
            raise self.fail("an Optional without input needs its 'type' attribute")

    def run(self, value=None):
        return value


@register("OptionalHasElement", 15)
class OptionalHasElement(_SequenceOp):
    def run(self, value=None):
        return np.array(value is not None)


@register("OptionalGetElement", 15)
class OptionalGetElement(_SequenceOp):
    def run(self, value):
        if value is None:
            raise self.fail("the optional is empty: it has no element to get")
        return value
