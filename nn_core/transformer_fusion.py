"""Fast-plan fusions of the node chains a transformer is exported as (issue 10, batch-1 speed).

At batch 1 a small Vision Transformer's time goes to per-step overhead and to operators exported as many small
nodes, each a NumPy call or several: GELU as Div -> Erf -> Add -> Mul -> Mul, attention as Reshape -> Transpose
-> three Gathers -> Transpose -> MatMul -> Div -> Softmax -> MatMul -> Transpose -> Reshape, ``x.flatten(2)``
as Shape -> Slice -> Concat -> Reshape, and each LayerNormalization between a residual Add and (at the end) a
mean over the tokens. ``fuse_transformer_steps`` replaces each such chain of fast-plan steps by one step whose
kernel computes the chain in few NumPy calls.

A model file is untrusted, so a chain is only matched when every attribute, constant and reader count it relies
on is checked, and the fused kernel checks at run time what only the inputs can tell (dtype, sizes, rank); when
that check fails it runs the chain's own kernels one after the other, so every input gets what the unfused graph
computes. Only the fast plan is rewritten: the traced and gradient plans keep the original nodes.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace
from typing import Any, NamedTuple, Protocol

import numpy as np

from .ops.activations import ErfGelu, has_nan
from .ops.caches import keep
from .ops.nn import Gemm, MatMul
from .ops.norm import centered_rows, layer_norm_rows, normalized_rows, row_averager
from .ops.quantized import FUSED_DOMAIN
from .ops.transformer import UNSHIFTED_BOUND, PackedQkvAttention
from .optimize import producers_and_readers, sole_reader

# the run-time type checks compare dtypes by identity (~20 ns, == with a type ~100 ns): arrays of native float32
# share this one; float32 of another byte order is not it, and goes to the chain
_FLOAT32 = np.dtype(np.float32)
# the largest addition (elements) whose constant operand -- a dense layer's bias, a ViT's positions -- is spread to
# its shape (_spread, kept per shape): NumPy runs the addition of a broadcast operand about half as fast (a small
# ViT's (32, 72) product plus its bias: ~1.0 us against ~0.4 us); past this size the broadcast costs little beside
# the work, and a copy per shape would cost memory
_TILED_BIAS_ELEMENTS = 1 << 14


def _spread(values: np.ndarray, shape: tuple[int, ...]) -> np.ndarray | None:
    """A read-only copy of ``values`` broadcast to ``shape`` (C order), the same-shape operand of an addition;
    None past _TILED_BIAS_ELEMENTS."""
    if math.prod(shape) > _TILED_BIAS_ELEMENTS:
        return None
    spread = np.broadcast_to(values, shape).copy()
    spread.setflags(write=False)
    return spread


def _bias_adder(bias: np.ndarray) -> Callable[[np.ndarray], None]:
    """``y += bias`` in place for fresh C-contiguous 2-D float32 products ``y`` of N = bias.size columns: as one
    same-shape addition of the bias repeated over y's rows (kept per row count) while y is small, else
    broadcast. Same values bit for bit."""
    repeated: dict[int, np.ndarray | None] = {}  # row count -> the bias repeated over the rows, or None

    def add(y: np.ndarray) -> None:
        rows = repeated.get(y.shape[0], False)
        if rows is False:
            rows = keep(repeated, y.shape[0], _spread(bias, y.shape))
        if rows is None:
            y += bias
        else:
            np.add(y, rows, out=y)

    return add


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
        self.producer, self.readers = producers_and_readers(steps)
        self.order = {id(step): index for index, step in enumerate(steps)}

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
        return sole_reader(self.readers, step, self.graph_outputs)

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
    """A chain of steps run as one: ``fast(*inputs)`` computes its outputs, or returns None when the inputs are
    not what it was prepared for; then the chain's own kernels run, in order, on their own inputs.

    The fused step goes in the place of ``members[place]`` and the plan drops the members in ``removed``."""

    def __init__(self, members: list[_Step], inputs: list[str], outputs: list[str],
                 constants: dict[str, np.ndarray], fast: Callable[..., Any], place: int = -1,
                 removed: list[_Step] | None = None):
        self.members = members
        self.inputs = inputs
        self.outputs = outputs
        self.constants = {n: constants[n] for m in members for n in m.inputs if n and n in constants}
        self.fast = fast
        self.place = members[place]
        self.removed = members if removed is None else removed

    def run(self, *inputs: np.ndarray) -> Any:
        result = self.fast(*inputs)
        return self.chain(*inputs) if result is None else result

    def chain(self, *inputs: np.ndarray) -> Any:
        values: dict[str, Any] = dict(self.constants)
        values.update(zip(self.inputs, inputs))
        for member in self.members:
            values[member.outputs[0]] = member.kernel.run(*[values[n] if n else None for n in member.inputs])
        if len(self.outputs) == 1:
            return values[self.outputs[0]]
        return tuple(values[name] for name in self.outputs)


def _fused_step(members: list[_Step], inputs: list[str], graph: _Graph, fast: Callable, outputs: list[str] | None
                = None, place: int = -1, removed: list[_Step] | None = None) -> _Step:
    """One step for ``members`` (sorted here into plan order), named after the first, labelled with all of them;
    its output is the last member's unless ``outputs`` says otherwise."""
    ordered = sorted(members, key=lambda m: graph.order[id(m)])
    outputs = [ordered[-1].outputs[0]] if outputs is None else outputs
    kernel = FusedChain(ordered, inputs, outputs, graph.constants, fast, place, removed)
    # in a domain of its own: the passes after this one match steps by op type in the default domain, and a fused
    # step is not its first node (an Add + LayerNormalization step taken for the residual Add of a convolution
    # would lose its second output)
    return replace(ordered[0], node=replace(ordered[0].node, domain=FUSED_DOMAIN), kernel=kernel,
                   inputs=list(inputs), outputs=list(outputs),
                   fused=tuple(t for m in ordered[1:] for t in (m.node.op_type, *m.fused)))


# ----------------------------------------------------------------------------------------------------------------
# GELU: x * (Erf(x / d) + offset) * factor, as torch exports it, or (x * factor) * (Erf(x / d) + offset)


def _match_gelu(erf: _Step, graph: _Graph) -> _Step | None:
    found = _gelu_chain(erf, graph)
    if found is None:
        return None
    members, x, gelu, ranks = found

    def fast(value: np.ndarray) -> np.ndarray | None:
        if type(value) is not np.ndarray or value.dtype is not _FLOAT32 or value.ndim < ranks:
            return None
        return gelu(value)

    return _fused_step(members, [x], graph, fast)


def _gelu_reading(step: _Step, graph: _Graph) -> tuple[list[_Step], str, ErfGelu, int] | None:
    """The GELU chain (_gelu_chain) or exact Gelu node whose input is ``step``'s output and that reads it alone,
    as _gelu_chain gives it."""
    x = step.outputs[0]
    readers = graph.readers.get(x, [])
    gelu = graph.only_reader(step)
    if graph.plain(gelu, "Gelu", 1) and getattr(gelu.kernel, "approximate", None) == "none":
        return [gelu], x, ErfGelu(math.sqrt(2), 1.0, 0.5), 0  # (a Gelu node, opset 20)
    for reader in [] if x in graph.graph_outputs else readers:
        erf = graph.only_reader(reader) if graph.plain(reader, "Div", 2) or graph.plain(reader, "Mul", 2) else None
        found = _gelu_chain(erf, graph)
        if found is not None and found[1] == x and {id(r) for r in readers} <= {id(m) for m in found[0]}:
            return found
    return None


def _gelu_chain(erf: _Step | None, graph: _Graph) -> tuple[list[_Step], str, ErfGelu, int] | None:
    """(its steps, the last one giving the activation; its input; the ErfGelu it computes; the largest rank of
    its constants, which an input must have so that they do not broadcast it up) for the GELU chain around
    ``erf``."""
    if not graph.plain(erf, "Erf", 1):
        return None
    scale = graph.producer.get(erf.inputs[0])
    if graph.plain(scale, "Div", 2):
        x, divisor = scale.inputs[0], graph.scalar(scale.inputs[1])
    elif graph.plain(scale, "Mul", 2):
        x, multiplier = _variable_and_scalar(scale, graph)
        divisor = 1 / multiplier if multiplier else None
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
    try:
        gelu = ErfGelu(divisor, offset, factor)
    except ValueError:  # constants whose folded forms leave float32's range: the chain computes them itself
        return None
    return members, x, gelu, max(graph.constants[n].ndim for m in members for n in m.inputs if n in graph.constants)


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


class _Attention(NamedTuple):
    """A matched attention chain: its steps, the packed projection it reads, the step giving its result, and
    what PackedQkvAttention is made of."""

    members: list[_Step]
    qkv: str
    final: _Step
    target: tuple[int, ...]
    picks: list[int]
    scale: tuple[bool, float] | None
    merge: int


def _match_attention(softmax: _Step, graph: _Graph) -> _Step | None:
    found = _attention_chain(softmax, graph)
    if found is None:
        return None
    size = math.prod(found.target)
    attention = PackedQkvAttention(found.target, found.picks, found.scale, found.merge)

    def fast(qkv: np.ndarray) -> np.ndarray | None:
        if type(qkv) is not np.ndarray or qkv.dtype is not _FLOAT32 or qkv.size != size:
            return None
        return attention(qkv)

    return _fused_step(found.members, [found.qkv], graph, fast)


def _attention_reading(projection: _Step, graph: _Graph) -> _Attention | None:
    """The attention chain whose split Reshape is the only reader of ``projection``'s output, found from its
    query's scores: the Gather whose reader is a MatMul read by the scale or by the Softmax."""
    split = graph.only_reader(projection)
    heads = graph.only_reader(split) if graph.plain(split, "Reshape", 2) else None
    for gather in [] if heads is None else graph.readers.get(heads.outputs[0], []):
        scores = graph.only_reader(gather)
        after = graph.only_reader(scores) if graph.plain(scores, "MatMul", 2) else None
        if graph.plain(after, "Div", 2) or graph.plain(after, "Mul", 2):
            after = graph.only_reader(after)
        found = _attention_chain(after, graph) if graph.plain(after, "Softmax", 1) else None
        if found is not None and found.qkv == projection.outputs[0] and any(m is split for m in found.members):
            return found
    return None


def _attention_chain(softmax: _Step, graph: _Graph) -> _Attention | None:
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
    # (a size no tensor can have: the Reshape itself refuses it at run time, and the kernel's buffers, sized from
    # the target at load, are never made)
    if math.prod(target) * 4 > split.kernel.node.limits.max_tensor_bytes:
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
    return _Attention(members, split.inputs[0], final, tuple(target), picks, scale, merge)


def _perm(step: _Step) -> list[int] | None:
    perm = step.node.attrs.get("perm")
    return None if perm is None else [int(p) for p in perm]


# ----------------------------------------------------------------------------------------------------------------
# x.flatten(k): Reshape(x, Concat(Slice(Shape(x), [0], [k]), [-1]))


def _flatten_chain(reshape: _Step, graph: _Graph) -> tuple[list[_Step], int] | None:
    """([Shape, Slice, Concat, Reshape], k) when ``reshape`` is x.flatten(k) from its shape nodes."""
    if not graph.plain(reshape, "Reshape", 2) or reshape.inputs[1] in graph.constants:
        return None
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
    if end is None or len(end) != 1 or not 1 <= end[0] <= 8 or shape is None \
            or shape.inputs[0] != reshape.inputs[0] or shape.node.attrs:
        return None
    return [shape, head, concat, reshape], end[0]


def _match_flatten(reshape: _Step, graph: _Graph) -> _Step | None:
    chain = _flatten_chain(reshape, graph)
    if chain is None:
        return None
    members, keep = chain

    def fast(value: np.ndarray) -> np.ndarray | None:
        if type(value) is not np.ndarray or value.ndim < keep or not value.size:
            return None  # (an empty tensor: -1 could not be inferred, which the chain reports its own way)
        return value.reshape(*value.shape[:keep], -1)

    # the shape nodes stay: their values may have other readers (else the dead-step pass drops them)
    return _fused_step(members, [reshape.inputs[0]], graph, fast, removed=[reshape])


# ----------------------------------------------------------------------------------------------------------------
# LayerNormalization over the last axis, with the residual Add before it and a mean over the tokens after it:
#   [s = Add(a, b) ->] LayerNormalization(s, scale, bias) [-> ReduceMean over axis 1 of (B, S, E)]
# The Add's sum stays an output of the step when something else reads it (the next residual connection).


def _match_layer_norm(norm: _Step, graph: _Graph) -> _Step | None:
    if not graph.plain(norm, "LayerNormalization") or len(norm.inputs) not in (2, 3) \
            or getattr(norm.kernel, "axis", None) != -1:
        return None
    scale = graph.const(norm.inputs[1])
    bias = graph.const(norm.inputs[2]) if len(norm.inputs) == 3 and norm.inputs[2] else None
    if scale is None or scale.dtype != np.float32 or scale.ndim != 1 or not scale.size \
            or (len(norm.inputs) == 3 and norm.inputs[2] and (bias is None or bias.shape != scale.shape
                                                            or bias.dtype != np.float32)):
        return None
    width = scale.shape[0]
    epsilon = float(norm.kernel.epsilon)
    averager = row_averager(width, _FLOAT32)
    members, x = [norm], norm.inputs[0]
    add = graph.made_by(x, "Add", 2)
    operands: list[str | None] = []  # the Add's operands: names of inputs, None for the constant one
    if add is not None and x not in graph.constants:
        operands = [None if n in graph.constants else n for n in add.inputs]
        if all(n is None for n in operands) or operands[0] == operands[1]:
            operands = []
    # a Transpose before an Add of a constant (a ViT's patch tokens plus their positions), perhaps of the patch
    # embedding itself: the function of the step's input that gives the Add's variable operand
    prepare = None
    if operands:
        members.insert(0, add)
        constant = next((graph.constants[n] for n in add.inputs if n in graph.constants), None)
        if constant is not None and constant.dtype != np.float32:
            return None
        inputs = [n for n in operands if n is not None]
        turned = graph.made_by(inputs[0], "Transpose", 1) if constant is not None else None
        order = None if turned is None else _perm(turned)
        if order is not None and sorted(order) == list(range(len(order))) and graph.only_reader(turned) is add:
            patches = _match_patch_embedding(turned, graph) if order == [0, 2, 1] else None
            if patches is not None:
                embedding, image, prepare, conv_bias = patches
                members[:0] = [*embedding, turned]
                inputs = [image]
                if conv_bias is not None:  # tokens + bias + positions: one broadcast add of the two constants
                    if not _broadcasts_into(conv_bias, constant):
                        return None  # (a constant the bias would grow, or not broadcast with: left unfused)
                    constant = constant + conv_bias
            else:
                members.insert(0, turned)
                prepare, inputs = _transposer(tuple(order)), [turned.inputs[0]]
    else:
        inputs = [x]
    mean, keepdims = None, False  # the ReduceMean over the tokens after the normalisation, if any
    user = graph.only_reader(norm)
    if graph.plain(user, "ReduceMean") and getattr(user.kernel, "static_axes", None) in ([1], [-2]):
        mean, keepdims = user, bool(user.kernel.keepdims)
        members.append(user)
    dense = _dense_reading(mean or norm, graph, width) if not keepdims else None
    attention, columns = None, None  # attention on the dense layer's output as a packed projection
    mlp = None  # or GELU and a second dense layer after it
    if dense is not None:
        dense_step, weight, dense_bias, limit = dense
        members.append(dense_step)
        attention = _attention_reading(dense_step, graph) if mean is None else None
        if attention is not None and math.prod(attention.target[2:]) == weight.shape[1]:
            columns = _query_scale(attention, weight.shape[1])
        if columns is None:
            attention = None
        else:
            members += attention.members
        weight, dense_bias = _folded_affine(scale, bias, weight, dense_bias, columns)
        mlp = _mlp_reading(dense_step, graph, weight, dense_bias, epsilon) \
            if mean is None and attention is None else None
        if mlp is not None:
            members += mlp.members
            hidden, tail = weight.shape[1], mlp.second.shape[1:]
            weight, dense_bias = mlp.weight, mlp.bias
    outputs = [(attention.final if attention is not None else members[-1]).outputs[0]]
    if operands and (len(graph.readers.get(x, [])) > 1 or x in graph.graph_outputs):
        outputs.insert(0, x)  # the sum, for its other readers
    total = _residual_sum(operands, constant if operands else None, width, prepare)
    tokens: dict[int, np.ndarray] = {}  # token count -> the (1, S) row of 1/S whose product is the tokens' mean
    # (images, tokens) -> the (B, B * S) matrix whose product with the (B * S, width) rows is each image's mean of
    # its tokens (1/S in an image's columns), for a few images (its size grows with their square); else None
    block_means: dict[tuple[int, int], np.ndarray | None] = {}

    def token_averages(images: int, count: int) -> np.ndarray | None:
        averages = block_means.get((images, count), False)
        if averages is False:
            averages = keep(block_means, (images, count), np.kron(np.eye(images, dtype=np.float32), np.full(
                (1, count), 1.0 / count, np.float32)) if images * images * count <= _BLOCK_MEANS else None)
        return averages

    both = len(outputs) == 2
    if dense is not None and mlp is None:
        tail = weight.shape[1:]
    if dense is not None:
        add_bias = _bias_adder(dense_bias)
    if mlp is not None:  # (read once here: a NamedTuple's fields and a bound method cost ~50 ns a look-up)
        mlp_ranks, mlp_limit, second = mlp.ranks, mlp.limit, mlp.second
        odd_part = mlp.gelu.row_odd_part if mlp.bounded else mlp.gelu.odd_part
    # the epsilon as the rows' float32 (what NumPy converts a Python float to on each addition, ~0.1 us)
    with np.errstate(over="ignore"):
        row_epsilon = np.float32(epsilon) if np.isfinite(np.float32(epsilon)) else epsilon
    if attention is not None:  # (the scores' scale is in the query's columns of the weights)
        heads = PackedQkvAttention(attention.target, attention.picks, None, attention.merge,
                                   _scores_bounded(weight, dense_bias, attention, width, epsilon))
        size = math.prod(attention.target)

    def fast(*values: np.ndarray) -> Any:
        summed = total(*values)
        if summed is None or (dense is not None and summed.size > limit):
            return None  # (a product over the budgets: the chain's dense layer says so)
        if mean is None:
            if dense is None:
                y = layer_norm_rows(summed, averager, row_epsilon, scale, bias)
            else:  # (the scale and bias are in the dense layer's weights)
                y = normalized_rows(summed, averager, row_epsilon).dot(weight)
                add_bias(y)
                if mlp is not None:
                    if summed.ndim < mlp_ranks or summed.size // width * hidden > mlp_limit:
                        return None  # (constants that would broadcast the input up; a product over the budgets)
                    # the GELU's odd part of the first columns, then the second layer's product of GELU's linear
                    # part and its bias, from the last ones
                    product = odd_part(y[:, :hidden]).dot(second)
                    product += y[:, hidden:]
                    y = product.reshape(summed.shape[:-1] + tail)
                elif attention is None:
                    y = y.reshape(summed.shape[:-1] + tail)
                elif y.size == size:
                    y = heads(y)
                else:
                    return None  # (other tokens than the split's: its Reshape says so)
            return (summed, y) if both else y
        if summed.ndim != 3 or not summed.shape[1]:
            return None
        if dense is not None:  # (not with keepdims)
            averages = token_averages(summed.shape[0], summed.shape[1])
            if averages is not None:  # the mean's weights divided by each row's deviation, not the rows
                centered, deviation = centered_rows(summed, averager, row_epsilon)
                y = np.divide(averages, deviation.reshape(1, -1)).dot(centered).dot(weight)
                add_bias(y)
                # the block matrix's zeros meet every image's rows: a non-finite token would make every image
                # NaN (0 * inf), where the mean image by image keeps the others finite
                if not has_nan(y):
                    return (summed, y) if both else y
        if dense is None:
            y = layer_norm_rows(summed, averager, row_epsilon, scale, bias)
        else:
            y = normalized_rows(summed, averager, row_epsilon).reshape(summed.shape)
        count = summed.shape[1]
        row = tokens.get(count)
        if row is None:
            row = keep(tokens, count, np.full((1, count), 1.0 / count, np.float32))
        y = np.matmul(row, y)
        if not keepdims:
            y = y.reshape(y.shape[0], width)
        if dense is not None:  # (not with keepdims: the mean is (B, width))
            y = y.dot(weight)
            add_bias(y)
        return (summed, y) if both else y

    return _fused_step(members, inputs, graph, fast, outputs, place=0)


# the largest (images, images x tokens) matrix of the tokens' means kept (elements); larger batches take the
# batched product by a row of 1/S
_BLOCK_MEANS = 1 << 12


class _Mlp(NamedTuple):
    """GELU and a second dense layer after a LayerNormalization's dense layer: ``weight`` and ``bias`` give the
    first layer's output and, after it, the second layer's product of the GELU's linear part (plus its bias);
    ``second`` is the second layer's weights, which the GELU's odd part is multiplied by."""

    members: list[_Step]
    weight: np.ndarray
    bias: np.ndarray
    gelu: ErfGelu
    second: np.ndarray
    limit: int
    ranks: int
    bounded: bool  # the first layer's outputs are proven small: it gives GELU's table rows (row_odd_part)


def _mlp_reading(first: _Step, graph: _Graph, weight: np.ndarray, bias: np.ndarray, epsilon: float
                 ) -> _Mlp | None:
    """The GELU chain reading the dense layer ``first`` (its weights and bias as folded), and the dense layer
    reading the GELU, as an _Mlp. GELU(x) = linear x + odd(x), so the second layer's
    GELU(x) @ W2 + b2 = odd(x) @ W2 + (x @ linear W2 + b2), and with x = n @ W1 + b1 the bracket is
    n @ (linear W1 W2) + (linear b1 W2 + b2): the same product of the normalised rows n gives x and it, two
    NumPy calls fewer than the GELU's linear part and the second bias. Only while W1 W2 is no larger than the
    two layers' weights together (a transformer's MLP: width x width against 8 x width^2)."""
    found = _gelu_reading(first, graph)
    second = None if found is None else _dense_reading(found[0][-1], graph, weight.shape[1])
    if second is None or weight.shape[0] * second[1].shape[1] > weight.size + second[1].size:
        return None
    gelu_members, _, gelu, ranks = found
    second_step, second_weight, second_bias, limit = second
    linear = float(gelu.linear)
    wide, after = weight.astype(np.float64), second_weight.astype(np.float64)
    joint = np.concatenate([wide, linear * (wide @ after)], axis=1)
    shift = bias.astype(np.float64)
    joint_bias = np.concatenate([shift, linear * (shift @ after) + second_bias.astype(np.float64)])
    # a normalised row has length at most sqrt(width) (_rows_bounded), so |x_j| <= |W1[:, j]| sqrt(width) +
    # |b1_j|: within what the GELU's table rows hold exactly, it needs no clamp (margins for float32 rounding)
    # (then the first layer gives the table rows x * scale, the factor in its weights: ErfGelu.row_odd_part)
    largest = float((np.linalg.norm(wide, axis=0) * math.sqrt(weight.shape[0]) * 1.001 + np.abs(shift)).max())
    bounded = _rows_bounded(epsilon) and gelu.rows_exact_to(2 * largest)
    if bounded:
        hidden = weight.shape[1]
        joint[:, :hidden] *= float(gelu.scale)
        joint_bias[:hidden] *= float(gelu.scale)
    return _Mlp([*gelu_members, second_step], joint.astype(np.float32), joint_bias.astype(np.float32), gelu,
                second_weight, limit, ranks, bounded)


def _dense_reading(step: _Step, graph: _Graph, width: int | None = None, output: int = 0
                   ) -> tuple[_Step, np.ndarray, np.ndarray, int] | None:
    """The dense layer that is the only reader of ``step``'s output (its ``output``-th; the step's only one
    unless given), when it is one fast-plan step with constant
    float32 weights (of ``width`` rows, when given) and a bias, as (its step, its (rows, N) weights, its (N,)
    bias, the largest input within its budgets): a MatMul whose only other node is the Add of the bias
    (fuse_biases), or a Gemm whose C is the bias (alpha and transB are in its prepared weights; beta in its C)."""
    name = step.outputs[output]
    readers = graph.readers.get(name, [])
    dense = readers[0] if len(readers) == 1 and name not in graph.graph_outputs \
        and (output or len(step.outputs) == 1) else None
    if dense is None or type(dense.kernel) not in (MatMul, Gemm) or dense.node.domain not in ("", "ai.onnx") \
            or len(dense.outputs) != 1 or not dense.outputs[0] or dense.inputs[0] != name or name in dense.inputs[1:]:
        return None
    kernel = dense.kernel
    matmul = type(kernel) is MatMul
    weight, bias = kernel.b, (kernel.bias if matmul else kernel.c)
    if weight is None or bias is None or weight.ndim != 2 or weight.shape[0] != (width or weight.shape[0]) \
            or dense.fused != (("Add",) if matmul else ()) or (not matmul and kernel.trans_a) \
            or kernel.act is not None or kernel.curve is not None or kernel.normalizer is not None \
            or weight.dtype != np.float32 or bias.dtype != np.float32 \
            or bias.shape not in (weight.shape[1:], (1,) + weight.shape[1:]):
        return None
    return dense, weight, bias.reshape(weight.shape[1:]), kernel.a_limit


def _folded_affine(scale: np.ndarray, shift: np.ndarray | None, weight: np.ndarray, bias: np.ndarray,
                   columns: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(W', b') with normalized @ W' + b' == ((normalized * scale + shift) @ weight + bias) * columns: a
    LayerNormalization's scale and shift folded into the dense layer that reads it (two NumPy calls fewer per
    run), and a factor per output column (the attention scores' scale, on the query's columns) if given;
    computed in float64 and rounded once."""
    wide = weight.astype(np.float64)
    folded_bias = bias.astype(np.float64) + (0.0 if shift is None else shift.astype(np.float64) @ wide)
    folded = scale.astype(np.float64)[:, None] * wide
    if columns is not None:
        folded *= columns
        folded_bias *= columns
    return folded.astype(np.float32), folded_bias.astype(np.float32)


# the largest projection block (elements) whose spectral norm _scores_bounded takes at load time (an SVD)
_BOUNDED_BLOCK = 1 << 16
# the smallest LayerNormalization epsilon for which a float32 normalised row is as short as in exact arithmetic:
# squares below float32's normal range (~1.2e-38) lose digits or vanish from the variance, so with a tinier
# epsilon a row of ~1e-22 values divides by about sqrt(epsilon) and comes out many times longer than sqrt(width);
# from this epsilon on such rows come out below 1e-9
_BOUNDED_EPSILON = 1e-20


def _rows_bounded(epsilon: float) -> bool:
    """Whether the normalised rows of a LayerNormalization of ``epsilon`` have length at most sqrt(width) in
    float32 too (width var / (var + epsilon) under the root), which the bounds on what reads them rest on."""
    return epsilon >= _BOUNDED_EPSILON


def _scores_bounded(weight: np.ndarray, bias: np.ndarray, attention: _Attention, width: int, epsilon: float
                    ) -> bool:
    """Whether every score of ``attention`` on normalized @ weight + bias (the scale in the query's columns) is
    within UNSHIFTED_BOUND for any input: a normalised row has length at most sqrt(width) (its squares sum to
    width var / (var + epsilon)), so a head's query and key have lengths at most ||W||_2 sqrt(width) + |b| over
    their blocks of the weights and bias, and a score at most the product of the two. Then the softmax runs
    without testing the scores (a NaN row stays NaN, as in the shifted form). Margins cover float32 rounding."""
    span = math.prod(attention.target[3:])
    if width * span > _BOUNDED_BLOCK or not np.isfinite(weight).all() or not _rows_bounded(epsilon):
        return False  # (an SVD of NaN does not converge)

    def length(pick: int) -> float:
        block = weight[:, pick * span:(pick + 1) * span].astype(np.float64)
        shift = bias[pick * span:(pick + 1) * span].astype(np.float64)
        return float(np.linalg.norm(block, 2)) * math.sqrt(width) * 1.001 + float(np.linalg.norm(shift))

    bound = length(attention.picks[0]) * length(attention.picks[1])
    return math.isfinite(bound) and bound <= 0.9 * UNSHIFTED_BOUND


def _query_scale(attention: _Attention, width: int) -> np.ndarray | None:
    """The factor per column of a (tokens, P * H * D) packed projection that applies ``attention``'s scale to
    its scores (q @ k^T / c == (q / c) @ k^T): 1/c (or c) on the query's H * D columns, 1 elsewhere; None when
    the scale is not finite and nonzero in float32 as a factor (then the graph's own order of rounding stays)."""
    columns = np.ones(width)
    if attention.scale is not None:
        divide, number = attention.scale
        factor = 1.0 / number if divide and number else (number if not divide else math.inf)
        with np.errstate(over="ignore"):
            single = np.float32(factor) if math.isfinite(factor) else np.float32(0)
        if not np.isfinite(single) or not single:
            return None
        span = math.prod(attention.target[3:])
        columns[attention.picks[0] * span:(attention.picks[0] + 1) * span] = factor
    return columns


def _match_patch_embedding(turned: _Step, graph: _Graph
                           ) -> tuple[list[_Step], str, Callable, np.ndarray | None] | None:
    """A ViT's patch embedding before the (B, E, S) -> (B, S, E) ``turned``: a 2-D Conv whose stride is its kernel
    (no padding, dilation or groups), its output flattened to (B, E, S) -- x.flatten(2) as Shape -> Slice ->
    Concat -> Reshape, or a Reshape to a constant shape. Returns (its steps, the image's name, the function of
    the image that gives the tokens (B, S, E) without the bias or None, the Conv's bias or None): each patch is
    one row and the convolution one matrix product of the patches by the weights, with the layout the transpose
    asks for straight away. The caller adds the bias with the positions that follow.

    The patches are one gather of each image by a flat index kept per image size: a transposed copy of the
    6-D (B, C, rows, kh, cols, kw) view walks rows of kw values (~2-4 us on 28x28 in 7x7 patches, the gather
    ~1 us)."""
    flat = graph.made_by(turned.inputs[0], "Reshape", 2)
    conv = None if flat is None else graph.made_by(flat.inputs[0], "Conv")
    if conv is None or len(conv.inputs) not in (2, 3) or graph.only_reader(flat) is not turned:
        return None
    weight = graph.const(conv.inputs[1])
    bias = graph.const(conv.inputs[2]) if len(conv.inputs) == 3 and conv.inputs[2] else None
    if weight is None or weight.dtype != np.float32 or weight.ndim != 4 or not weight.size \
            or (len(conv.inputs) == 3 and conv.inputs[2]
                and (bias is None or bias.dtype != np.float32 or bias.shape != weight.shape[:1])):
        return None
    attrs = conv.node.attrs
    kernel = list(weight.shape[2:])
    if [int(v) for v in attrs.get("strides", [1, 1])] != kernel \
            or [int(v) for v in attrs.get("kernel_shape", kernel)] != kernel \
            or any(int(v) for v in attrs.get("pads", [0] * 4)) \
            or any(int(v) != 1 for v in attrs.get("dilations", [1, 1])) or int(attrs.get("group", 1)) != 1 \
            or attrs.get("auto_pad", "NOTSET") not in ("NOTSET", b"NOTSET"):
        return None
    target = graph.ints(flat.inputs[1])
    if target is None:  # x.flatten(2): its shape nodes go too, when they read nothing else
        chain = _flatten_chain(flat, graph)
        if chain is None or chain[1] != 2 or any(graph.only_reader(m) is None for m in chain[0][:-1]):
            return None
        steps = [conv, *chain[0]]
    else:
        if len(target) != 3 or target[1] != weight.shape[0]:
            return None
        steps = [conv, flat]
    readers = {id(r) for r in graph.readers.get(conv.outputs[0], [])}
    if readers != {id(m) for m in steps if conv.outputs[0] in m.inputs} \
            or any(m.outputs[0] in graph.graph_outputs for m in steps):
        return None
    channels, (kh, kw) = weight.shape[1], kernel
    matrix = np.ascontiguousarray(weight.reshape(weight.shape[0], -1).T)  # (C kh kw, E)
    # the input's shape -> (the patches of the batch as flat positions, the patches' and the tokens' shapes), or
    # None for a shape the embedding does not fit: everything but the gather and product, once
    prepared: dict[tuple[int, ...], tuple | None] = {}

    def prepare(shape: tuple[int, ...]) -> tuple | None:
        if len(shape) != 4 or shape[1] != channels:
            return None
        batch, _, height, width = shape
        rows, cols = height // kh, width // kw
        if not batch or not rows or not cols or (target is not None and target != [batch, matrix.shape[1],
                                                                                 rows * cols]):
            return None
        # (no larger than the input: the patches leave out at most the edge rows and columns)
        grid = np.arange(batch * channels * height * width).reshape(batch, channels, height, width)
        grid = grid[:, :, :rows * kh, :cols * kw].reshape(batch, channels, rows, kh, cols, kw)
        return (grid.transpose(0, 2, 4, 1, 3, 5).ravel(), (batch * rows * cols, channels * kh * kw),
                (batch, rows * cols, matrix.shape[1]))

    def tokens(x: np.ndarray) -> np.ndarray | None:
        entry = prepared.get(x.shape, False)
        if entry is False:
            entry = keep(prepared, x.shape, prepare(x.shape))
        if entry is None:
            return None
        index, patches, out = entry
        return x.take(index).reshape(patches).dot(matrix).reshape(out)

    return steps, conv.inputs[0], tokens, bias


def _broadcasts_into(small: np.ndarray, large: np.ndarray) -> bool:
    """Whether ``large + small`` has ``large``'s shape."""
    try:
        return np.broadcast_shapes(small.shape, large.shape) == large.shape
    except ValueError:
        return False


def _transposer(perm: tuple[int, ...]) -> Callable[[np.ndarray], np.ndarray | None]:
    def transpose(x: np.ndarray) -> np.ndarray | None:
        return x.transpose(perm) if x.ndim == len(perm) else None

    return transpose


def _residual_sum(operands: list[str | None], constant: np.ndarray | None, width: int,
                  prepare: Callable[[np.ndarray], np.ndarray | None] | None = None
                  ) -> Callable[..., np.ndarray | None]:
    """The function of the fused step's inputs that gives the float32 input of the normalisation whose last axis
    has ``width`` values, or None: the Add of ``operands`` (None for the constant one) when there are any, else
    the input itself; with ``prepare``, the variable operand of an Add of a constant is ``prepare(input)``.
    A sum must have the shape of each variable operand (no broadcasting that grows one, which the Add kernel
    checks against the limits); other shapes and types go to the chain."""
    last = (width,)
    if not operands:
        def single(x: np.ndarray) -> np.ndarray | None:
            ok = type(x) is np.ndarray and x.dtype is _FLOAT32 and x.shape[-1:] == last
            return x if ok else None

        return single
    if constant is None:
        def pair(a: np.ndarray, b: np.ndarray) -> np.ndarray | None:
            ok = type(a) is np.ndarray and type(b) is np.ndarray and a.dtype is _FLOAT32 \
                and b.dtype is _FLOAT32 and a.shape == b.shape and a.shape[-1:] == last
            return np.add(a, b) if ok else None

        return pair
    constant_first = operands[0] is None
    # the variable's shape -> None when it does not fit (another width, or adding the constant changes its
    # shape), else the constant as the addition's operand: broadcast to that shape while small (_bias_adder: a
    # same-shape addition runs about twice as fast as one broadcasting the constant over the batch)
    fitted: dict[tuple[int, ...], np.ndarray | None] = {}

    def fit(shape: tuple[int, ...]) -> np.ndarray | None:
        try:
            if shape[-1:] != last or np.broadcast_shapes(shape, constant.shape) != shape:
                return None
        except ValueError:
            return None
        spread = _spread(constant, shape)
        return constant if spread is None else spread

    def with_constant(x: np.ndarray) -> np.ndarray | None:
        if type(x) is not np.ndarray or x.dtype is not _FLOAT32:
            return None
        if prepare is not None:
            x = prepare(x)
            if x is None:
                return None
        operand = fitted.get(x.shape, False)
        if operand is False:
            operand = keep(fitted, x.shape, fit(x.shape))
        if operand is None:
            return None
        # (in C order: a transposed operand would otherwise give its own layout, which the rows view would copy)
        return np.add(operand, x, order="C") if constant_first else np.add(x, operand, order="C")

    return with_constant


def _with_dense_reader(fused: _Step, graph: _Graph) -> _Step:
    """``fused`` computing the dense layer that is the only reader of its (last) output as well, when there is
    one (_dense_reading): one product and the bias on the fresh output, without the MatMul kernel's own checks
    and reshapes (~1 us a run); inputs it does not fit go to the chain, whose MatMul decides."""
    last = len(fused.outputs) - 1
    found = _dense_reading(fused, graph, output=last)
    if found is None:
        return fused
    dense, weight, bias, limit = found
    rows = weight.shape[0]
    inner = fused.kernel.fast
    ranks = (2,) if type(dense.kernel) is Gemm else None  # (Gemm's A is a matrix; MatMul's of any rank >= 1)
    add_bias = _bias_adder(bias)

    def fast(*values: np.ndarray) -> Any:
        result = inner(*values)
        if result is None:
            return None
        y = result[last] if last else result
        if not y.ndim or (ranks and y.ndim not in ranks) or y.shape[-1] != rows or y.size > limit:
            return None
        product = y.reshape(-1, rows).dot(weight)
        add_bias(product)
        product = product.reshape(y.shape[:-1] + weight.shape[1:])
        return (*result[:last], product) if last else product

    members = [*fused.kernel.members, dense]
    ordered = sorted(members, key=lambda m: graph.order[id(m)])
    place = next(i for i, m in enumerate(ordered) if m is fused.kernel.place)
    return _fused_step(members, fused.inputs, graph, fast, [*fused.outputs[:last], dense.outputs[0]], place=place,
                       removed=[*fused.kernel.removed, dense])


_MATCHERS = {"LayerNormalization": _match_layer_norm, "Erf": _match_gelu, "Softmax": _match_attention,
             "Reshape": _match_flatten}


def fuse_transformer_steps(steps: list[Any], constants: dict[str, np.ndarray], graph_outputs: set[str]
                           ) -> list[Any]:
    """Each matched chain of ``steps`` replaced by one step in the place its matcher chose (where its inputs are
    computed and its outputs not yet read). Steps left without readers (a flatten's shape nodes) are for the
    plan's dead-step pass."""
    graph = _Graph(steps, constants, graph_outputs)
    placed: dict[int, Any] = {}
    taken: set[int] = set()
    dropped: set[int] = set()
    for op_type, matcher in _MATCHERS.items():  # in this order: a normalisation may take a patch embedding
        for step in steps:
            if step.node.op_type != op_type or id(step) in taken:
                continue
            fused = matcher(step, graph)
            if fused is None or any(id(m) in taken for m in fused.kernel.members):
                continue
            fused = _with_dense_reader(fused, graph)
            if any(id(m) in taken for m in fused.kernel.members):
                continue
            taken.update(id(m) for m in fused.kernel.members)
            placed[id(fused.kernel.place)] = fused
            dropped.update(id(m) for m in fused.kernel.removed if m is not fused.kernel.place)
    return [placed.get(id(s), s) for s in steps if id(s) not in dropped]
