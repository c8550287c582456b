"""Fast-plan fusions of the node chains a transformer is exported as (issue 10, batch-1 speed).

At batch 1 a small Vision Transformer's time goes to per-step overhead and to operators exported as many small
nodes, each a NumPy call or several: GELU as Div -> Erf -> Add -> Mul -> Mul, attention as Reshape -> Transpose
-> three Gathers -> Transpose -> MatMul -> Div -> Softmax -> MatMul -> Transpose -> Reshape, and ``x.flatten(2)``
as Shape -> Slice -> Concat -> Reshape. ``fuse_transformer_steps`` replaces each such chain of fast-plan steps
by one step whose kernel computes the chain in few NumPy calls.

A model file is untrusted, so a chain is only matched when every attribute, constant and reader count it relies
on is checked, and the fused kernel checks at run time what only the inputs can tell (dtype, sizes, rank); when
that check fails it runs the chain's own kernels one after the other, so every input gets what the unfused graph
computes. Only the fast plan is rewritten: the traced and gradient plans keep the original nodes.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace
from typing import Any, Protocol

import numpy as np

from .ops.activations import ErfGelu
from .ops.transformer import packed_qkv_attention


class _Step(Protocol):  # plan.Step (not imported: plan imports this module)
    node: Any
    kernel: Any
    inputs: list[str]
    outputs: list[str]
    fused: tuple[str, ...]


class _Graph:
    """Who produces and who reads each value among the steps, and what must stay visible."""

    def __init__(self, steps: list[_Step], constants: dict[str, np.ndarray], graph_outputs: set[str]):
        self.constants = constants
        self.graph_outputs = graph_outputs
        self.producer: dict[str, _Step] = {}
        self.readers: dict[str, list[_Step]] = {}
        self.order = {id(step): index for index, step in enumerate(steps)}
        for step in steps:
            for name in step.outputs:
                if name:
                    self.producer[name] = step
            for name in step.inputs:
                if name:
                    self.readers.setdefault(name, []).append(step)

    def plain(self, step: _Step | None, op_type: str, inputs: int | None = None) -> bool:
        """``step`` is an unfused default-domain ``op_type`` node with one output (and ``inputs`` inputs)."""
        return step is not None and step.node.op_type == op_type and step.node.domain in ("", "ai.onnx") \
            and not step.fused and len(step.outputs) == 1 and bool(step.outputs[0]) \
            and (inputs is None or len(step.inputs) == inputs)

    def made_by(self, name: str, op_type: str, inputs: int | None = None) -> _Step | None:
        step = self.producer.get(name)
        return step if self.plain(step, op_type, inputs) else None

    def only_reader(self, step: _Step) -> _Step | None:
        """The single step reading ``step``'s output, when it has one and the output is not a graph output."""
        name = step.outputs[0]
        users = self.readers.get(name, [])
        return users[0] if len(users) == 1 and name not in self.graph_outputs else None

    def const(self, name: str) -> np.ndarray | None:
        return self.constants.get(name) if name else None

    def scalar(self, name: str) -> float | None:
        """A finite float32 constant of one element and rank <= 1 (which broadcasts without changing a rank >= 1
        operand's shape), as a Python float."""
        value = self.const(name)
        if value is None or value.dtype != np.float32 or value.size != 1 or value.ndim > 1:
            return None
        number = float(value.reshape(-1)[0])
        return number if math.isfinite(number) else None

    def ints(self, name: str) -> list[int] | None:
        value = self.const(name)
        if value is None or value.dtype.kind not in "iu" or value.ndim > 1:
            return None
        return [int(v) for v in value.reshape(-1)]


class FusedChain:
    """A chain of steps run as one: ``fast(*inputs)`` computes its output, or returns None when the inputs are
    not what it was prepared for; then the chain's own kernels run, in order, on their own inputs."""

    def __init__(self, members: list[_Step], inputs: list[str], constants: dict[str, np.ndarray],
                 fast: Callable[..., np.ndarray | None]):
        self.members = members
        self.inputs = inputs
        self.output = members[-1].outputs[0]
        self.constants = {n: constants[n] for m in members for n in m.inputs if n and n in constants}
        self.fast = fast

    def run(self, *inputs: np.ndarray) -> Any:
        result = self.fast(*inputs)
        return self.chain(*inputs) if result is None else result

    def chain(self, *inputs: np.ndarray) -> Any:
        values: dict[str, Any] = dict(self.constants)
        values.update(zip(self.inputs, inputs))
        for member in self.members:
            values[member.outputs[0]] = member.kernel.run(*[values[n] if n else None for n in member.inputs])
        return values[self.output]


def _fused_step(members: list[_Step], inputs: list[str], graph: _Graph, fast: Callable) -> _Step:
    """One step in place of ``members`` (in plan order): named after the first, labelled with all of them."""
    ordered = sorted(members, key=lambda m: graph.order[id(m)])
    kernel = FusedChain(ordered, inputs, graph.constants, fast)
    return replace(ordered[0], kernel=kernel, inputs=list(inputs), outputs=[ordered[-1].outputs[0]],
                   fused=tuple(m.node.op_type for m in ordered[1:]))


# ----------------------------------------------------------------------------------------------------------------
# GELU: x * (Erf(x / d) + offset) * factor, as torch exports it, or (x * factor) * (Erf(x / d) + offset)


def _match_gelu(erf: _Step, graph: _Graph) -> _Step | None:
    if not graph.plain(erf, "Erf", 1):
        return None
    scale = graph.producer.get(erf.inputs[0])
    if graph.plain(scale, "Div", 2):
        x, divisor = scale.inputs[0], graph.scalar(scale.inputs[1])
    elif graph.plain(scale, "Mul", 2):
        x, multiplier = _variable_and_scalar(scale, graph)
        divisor = None if not multiplier else 1 / multiplier
    else:
        return None
    if divisor is None or not divisor or x in graph.constants or graph.only_reader(scale) is not erf:
        return None
    add = graph.only_reader(erf)
    if not graph.plain(add, "Add", 2):
        return None
    inner, offset = _variable_and_scalar(add, graph)
    product = graph.only_reader(add)
    if inner != erf.outputs[0] or offset is None or not graph.plain(product, "Mul", 2):
        return None
    other = product.inputs[1] if product.inputs[0] == add.outputs[0] else product.inputs[0]
    if other == x:  # x * (erf + offset), then * factor
        last = graph.only_reader(product)
        if not graph.plain(last, "Mul", 2):
            return None
        inner, factor = _variable_and_scalar(last, graph)
        if inner != product.outputs[0]:
            return None
        members = [scale, erf, add, product, last]
    else:  # (x * factor) * (erf + offset)
        half = graph.made_by(other, "Mul", 2)
        if half is None or graph.only_reader(half) is not product:
            return None
        inner, factor = _variable_and_scalar(half, graph)
        if inner != x:
            return None
        members = [half, scale, erf, add, product]
    if factor is None or any(m.outputs[0] in graph.graph_outputs for m in members[:-1]):
        return None
    gelu = ErfGelu(divisor, offset, factor)
    ranks = max(graph.constants[n].ndim for m in members for n in m.inputs if n in graph.constants)

    def fast(value: np.ndarray) -> np.ndarray | None:
        if type(value) is not np.ndarray or value.dtype != np.float32 or value.ndim < ranks:
            return None
        return gelu(value)

    return _fused_step(members, [x], graph, fast)


def _variable_and_scalar(step: _Step, graph: _Graph) -> tuple[str, float | None]:
    """(the non-constant operand, the scalar constant) of a binary step with one of each, else ("", None)."""
    first, second = step.inputs
    if second in graph.constants and first not in graph.constants:
        return first, graph.scalar(second)
    if first in graph.constants and second not in graph.constants:
        return second, graph.scalar(first)
    return "", None


# ----------------------------------------------------------------------------------------------------------------
# Attention on one packed projection:
#   qkv -> Reshape (B, S, 3, H, D) -> Transpose [2, 0, 3, 1, 4] -> Gather 0 / 1 / 2 (q, k, v: (B, H, S, D))
#   k -> Transpose [0, 1, 3, 2];  q @ k^T -> Div (or Mul) by a scalar -> Softmax (last axis) -> @ v
#   [-> Transpose [0, 2, 1, 3] [-> Reshape (B, S, H * D)]]


def _match_attention(softmax: _Step, graph: _Graph) -> _Step | None:
    if not graph.plain(softmax, "Softmax", 1) or getattr(softmax.kernel, "axis", None) not in (-1, 3):
        return None  # (axis -1 and 3 of a rank-4 input are the last axis at every opset)
    members = [softmax]
    source = graph.producer.get(softmax.inputs[0])
    scale: tuple[bool, float] | None = None
    if graph.plain(source, "Div", 2) or graph.plain(source, "Mul", 2):
        divide = source.node.op_type == "Div"
        scores, number = (source.inputs[0], graph.scalar(source.inputs[1])) if divide \
            else _variable_and_scalar(source, graph)
        if number is None or graph.only_reader(source) is not softmax:
            return None
        scale = (divide, number)
        members.append(source)
        source = graph.producer.get(scores)
    if not graph.plain(source, "MatMul", 2) or graph.only_reader(source) is not members[-1]:
        return None
    first = source
    members.append(first)
    key_t = graph.made_by(first.inputs[1], "Transpose", 1)
    product = graph.only_reader(softmax)
    if key_t is None or _perm(key_t) != [0, 1, 3, 2] or graph.only_reader(key_t) is not first \
            or not graph.plain(product, "MatMul", 2) or product.inputs[0] != softmax.outputs[0]:
        return None
    members += [key_t, product]
    gathers = [graph.made_by(name, "Gather", 2) for name in (first.inputs[0], key_t.inputs[0], product.inputs[1])]
    if any(g is None or g.node.attrs.get("axis", 0) != 0 for g in gathers):
        return None
    heads = graph.made_by(gathers[0].inputs[0], "Transpose", 1)
    if heads is None or _perm(heads) != [2, 0, 3, 1, 4] \
            or any(g.inputs[0] != heads.outputs[0] or graph.only_reader(g) is None for g in gathers) \
            or len({id(g) for g in gathers}) != 3 or heads.outputs[0] in graph.graph_outputs \
            or {id(r) for r in graph.readers.get(heads.outputs[0], [])} != {id(g) for g in gathers}:
        return None
    split = graph.made_by(heads.inputs[0], "Reshape", 2)
    target = None if split is None else graph.ints(split.inputs[1])
    if target is None or len(target) != 5 or min(target) <= 0 or graph.only_reader(split) is not heads:
        return None
    picks = []
    for gather in gathers:
        index = graph.ints(gather.inputs[1])
        if index is None or graph.const(gather.inputs[1]).ndim != 0 or not -target[2] <= index[0] < target[2]:
            return None
        picks.append(index[0] % target[2])
    members += [*gathers, heads, split]
    tail: list[_Step] = []  # the heads' outputs transposed back to (B, S, H, D), then reshaped to (B, S, H * D)
    end = graph.only_reader(product)
    if graph.plain(end, "Transpose", 1) and _perm(end) == [0, 2, 1, 3]:
        tail.append(end)
        joined = graph.only_reader(end)
        if graph.plain(joined, "Reshape", 2) \
                and graph.ints(joined.inputs[1]) == [target[0], target[1], target[3] * target[4]]:
            tail.append(joined)
    merge, final = len(tail), (tail or [product])[-1]
    members += tail
    inner = [m for m in members if m is not final]
    if any(m.outputs[0] in graph.graph_outputs for m in inner) \
            or any(graph.only_reader(m) is None for m in inner if m is not heads):
        return None
    size = math.prod(target)

    def fast(qkv: np.ndarray) -> np.ndarray | None:
        if type(qkv) is not np.ndarray or qkv.dtype != np.float32 or qkv.size != size:
            return None
        return packed_qkv_attention(qkv.reshape(target), picks, scale, merge)

    return _fused_step(members, [split.inputs[0]], graph, fast)


def _perm(step: _Step) -> list[int] | None:
    perm = step.node.attrs.get("perm")
    return None if perm is None else [int(p) for p in perm]


# ----------------------------------------------------------------------------------------------------------------
# x.flatten(k): Reshape(x, Concat(Slice(Shape(x), [0], [k]), [-1]))


def _match_flatten(reshape: _Step, graph: _Graph) -> _Step | None:
    if not graph.plain(reshape, "Reshape", 2) or reshape.inputs[1] in graph.constants:
        return None
    x = reshape.inputs[0]
    concat = graph.made_by(reshape.inputs[1], "Concat", 2)
    if concat is None or concat.node.attrs.get("axis") != 0 or graph.ints(concat.inputs[1]) != [-1] \
            or graph.const(concat.inputs[1]).ndim != 1:
        return None
    head = graph.made_by(concat.inputs[0], "Slice")
    if head is None or len(head.inputs) not in (3, 4, 5) or graph.ints(head.inputs[1]) != [0] \
            or (len(head.inputs) > 3 and head.inputs[3] and graph.ints(head.inputs[3]) != [0]) \
            or (len(head.inputs) > 4 and head.inputs[4] and graph.ints(head.inputs[4]) != [1]):
        return None
    end = graph.ints(head.inputs[2])
    shape = graph.made_by(head.inputs[0], "Shape", 1)
    if end is None or len(end) != 1 or not 1 <= end[0] <= 8 or shape is None or shape.inputs[0] != x \
            or shape.node.attrs:
        return None
    keep = end[0]

    def fast(value: np.ndarray) -> np.ndarray | None:
        if type(value) is not np.ndarray or value.ndim < keep or not value.size:
            return None  # (an empty tensor: -1 could not be inferred, which the chain reports its own way)
        return value.reshape(*value.shape[:keep], -1)

    return _fused_step([shape, head, concat, reshape], [x], graph, fast)


_MATCHERS = {"Erf": _match_gelu, "Softmax": _match_attention, "Reshape": _match_flatten}


def fuse_transformer_steps(steps: list[Any], constants: dict[str, np.ndarray], graph_outputs: set[str]
                           ) -> list[Any]:
    """Each matched chain of ``steps`` replaced by one step at the place of its last member (its inputs are
    computed before its first member, its output read only after its last). Steps left without readers (a
    flatten's shape nodes) are for the plan's dead-step pass."""
    graph = _Graph(steps, constants, graph_outputs)
    replaced: dict[int, Any] = {}
    dropped: set[int] = set()
    for step in steps:
        matcher = _MATCHERS.get(step.node.op_type)
        if matcher is None or id(step) in dropped:
            continue
        fused = matcher(step, graph)
        if fused is None:
            continue
        members = fused.kernel.members
        if any(id(m) in dropped or id(m) in replaced for m in members):
            continue
        if matcher is _match_flatten:  # the shape nodes stay (their values may have other readers)
            members = members[-1:]
        replaced[id(members[-1])] = fused
        dropped.update(id(m) for m in members[:-1])
    return [replaced.get(id(s), s) for s in steps if id(s) not in dropped]
