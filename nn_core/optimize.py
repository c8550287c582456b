"""Load-time graph rewrites that make running cheap without changing any result.

Each pass takes the node list (and the constants) and returns a new node list; the kernels are built after the
passes, so a kernel sees its final weights (a BatchNormalization folded into them, say) and prepares them once.
"""

from __future__ import annotations

import heapq
from dataclasses import replace

import numpy as np

from .graph import NodeInfo
from .ops.conv import fold_batchnorm_into_conv

# single-input activations a Conv/Gemm/MatMul kernel can apply to its own output (each kernel's fuse_activation
# says which kinds it takes: the squashing curves only the dense layers)
FUSABLE_ACTIVATIONS = {"Relu": "relu", "LeakyRelu": "leaky_relu", "Clip": "clip", "Tanh": "tanh",
                       "Sigmoid": "sigmoid"}


def _use_counts(nodes: list[NodeInfo], graph_outputs: set[str]) -> dict[str, int]:
    counts: dict[str, int] = {name: 1 for name in graph_outputs}
    for node in nodes:
        for name in node.inputs:
            if name:
                counts[name] = counts.get(name, 0) + 1
    return counts


def fold_batchnorm(nodes: list[NodeInfo], constants: dict[str, np.ndarray], graph_outputs: set[str]
                   ) -> list[NodeInfo]:
    """Conv followed only by an inference BatchNormalization becomes one Conv with rescaled weights and bias."""
    uses = _use_counts(nodes, graph_outputs)
    by_input = {node.inputs[0]: node for node in nodes if node.op_type == "BatchNormalization" and node.inputs}
    removed: set[int] = set()
    result: list[NodeInfo] = []
    for node in nodes:
        if id(node) in removed:
            continue
        bn = by_input.get(node.outputs[0]) if node.op_type == "Conv" and node.outputs else None
        weight_name = node.inputs[1] if len(node.inputs) > 1 else ""
        bias_name = node.inputs[2] if len(node.inputs) > 2 else ""
        weight = constants.get(weight_name)
        bias = constants.get(bias_name) if bias_name else None
        if (bn is None or uses.get(node.outputs[0], 0) != 1 or weight is None or weight.dtype.kind != "f"
                or weight.ndim < 3 or (bias_name and (bias is None or bias.shape != weight.shape[:1]))
                or not _foldable_bn(bn, constants, weight.shape[0])):
            result.append(node)
            continue
        scale, shift, mean, var = (constants[n] for n in bn.inputs[1:5])
        epsilon = _scalar(bn.attrs.get("epsilon", 1e-5))
        new_weight, new_bias = fold_batchnorm_into_conv(weight, bias, scale, shift, mean, var, epsilon)
        w_name, b_name = f"{node.name}::bn_folded_weight", f"{node.name}::bn_folded_bias"
        constants[w_name], constants[b_name] = new_weight, new_bias
        result.append(replace(node, inputs=[node.inputs[0], w_name, b_name], outputs=[bn.outputs[0]],
                              name=f"{node.name}+{bn.name}"))
        removed.add(id(bn))
    return result


def _per_channel(value: np.ndarray | None, rank: int, channels: int, dtype: np.dtype) -> np.ndarray | None:
    """A constant that broadcasts against a rank-``rank`` NCHW tensor without growing it and varies at most
    along the channel axis, as a (channels,) vector in ``dtype``; None for anything else."""
    if value is None or value.dtype != dtype or value.ndim > rank:
        return None
    shape = (1,) * (rank - value.ndim) + value.shape
    if shape[0] != 1 or shape[1] not in (1, channels) or any(n != 1 for n in shape[2:]):
        return None
    return np.broadcast_to(value.reshape(-1), (channels,)) if value.size == 1 else value.reshape(channels)


def fold_affine_into_conv(nodes: list[NodeInfo], constants: dict[str, np.ndarray], graph_outputs: set[str]
                          ) -> tuple[list[NodeInfo], dict[str, tuple[str, ...]]]:
    """A Conv whose output goes only to a Mul by a per-channel constant and/or an Add of one (a batch
    normalization exported as its scale and shift, as in the ImageNet models of the onnx wheel) becomes one
    Conv with rescaled weights and bias, as fold_batchnorm does: the Relu after it can then be fused too.
    Returns the nodes and, by new node name, the op types absorbed (for the plan's labels)."""
    uses = _use_counts(nodes, graph_outputs)
    _, readers = producers_and_readers(nodes)
    removed: set[int] = set()
    absorbed: dict[str, tuple[str, ...]] = {}
    result: list[NodeInfo] = []
    for node in nodes:
        if id(node) in removed:
            continue
        weight = constants.get(node.inputs[1]) if node.op_type == "Conv" and len(node.inputs) > 1 else None
        bias_name = node.inputs[2] if weight is not None and len(node.inputs) > 2 else ""
        bias = constants.get(bias_name) if bias_name else None
        if (weight is None or weight.dtype.kind != "f" or weight.ndim < 3 or len(node.outputs) != 1
                or (bias_name and (bias is None or bias.shape != weight.shape[:1] or bias.dtype != weight.dtype))):
            result.append(node)
            continue
        channels, rank = weight.shape[0], weight.ndim
        output, kinds = node.outputs[0], []
        while uses.get(output, 0) == 1 and output not in graph_outputs and len(readers.get(output, [])) == 1:
            follower = readers[output][0]
            if follower.op_type not in ("Mul", "Add") or len(follower.inputs) != 2 or len(follower.outputs) != 1:
                break
            other = follower.inputs[1] if follower.inputs[0] == output else follower.inputs[0]
            if other == output:
                break
            factor = _per_channel(constants.get(other), rank, channels, weight.dtype)
            if factor is None:
                break
            if follower.op_type == "Mul":
                weight = weight * factor.reshape((channels,) + (1,) * (rank - 1))
                bias = None if bias is None else bias * factor
            else:
                bias = factor.copy() if bias is None else bias + factor
            removed.add(id(follower))
            kinds.append(follower.op_type)
            output = follower.outputs[0]
        if not kinds:
            result.append(node)
            continue
        w_name, b_name = f"{node.name}::affine_folded_weight", f"{node.name}::affine_folded_bias"
        constants[w_name] = np.ascontiguousarray(weight)
        inputs = [node.inputs[0], w_name]
        if bias is not None:
            constants[b_name] = np.ascontiguousarray(bias, dtype=weight.dtype)
            inputs.append(b_name)
        name = f"{node.name}+affine"
        absorbed[name] = tuple(kinds)
        result.append(replace(node, inputs=inputs, outputs=[output], name=name))
    return result, absorbed


def _foldable_bn(bn: NodeInfo, constants: dict[str, np.ndarray], channels: int) -> bool:
    """Only a BatchNormalization whose four parameters are constant float vectors of the conv's channel count
    folds; anything else stays a node of its own, whose kernel checks it against the data."""
    if len(bn.inputs) < 5 or any(name not in constants for name in bn.inputs[1:5]):
        return False
    if any(out for out in bn.outputs[1:]) or bn.attrs.get("training_mode", 0):
        return False
    if _scalar(bn.attrs.get("epsilon", 1e-5)) is None:
        return False
    return all(constants[name].shape == (channels,) and constants[name].dtype.kind == "f"
               for name in bn.inputs[1:5])


def remove_identities(nodes: list[NodeInfo], graph_outputs: set[str]) -> list[NodeInfo]:
    """Identity and inference-mode Dropout pass their input through: point their readers at the source. A
    Dropout's mask output that nothing reads does not keep it (exporters of opset 7-11 name it anyway; making it
    cost 10-25 us a run on the ImageNet models)."""
    read = set(_use_counts(nodes, graph_outputs))
    alias: dict[str, str] = {}
    kept: list[NodeInfo] = []
    for node in nodes:
        inputs = [alias.get(name, name) for name in node.inputs]
        passthrough = is_default_domain(node) and (node.op_type == "Identity" or (
            node.op_type == "Dropout" and not any(name in read for name in node.outputs[1:]) and len(inputs) < 3
        ))
        if passthrough and inputs and inputs[0] and node.outputs and node.outputs[0] not in graph_outputs:
            alias[node.outputs[0]] = inputs[0]
            continue
        kept.append(replace(node, inputs=inputs) if inputs != node.inputs else node)
    return _rename_into_outputs(kept, graph_outputs)


#: elementwise ops of one tensor (any other input a scalar: Clip's bounds) that commute with inserting or removing
#: axes of size 1
_AXIS_FREE_ELEMENTWISE = {"Relu", "LeakyRelu", "PRelu", "Sigmoid", "HardSigmoid", "Tanh", "Elu", "Selu", "Celu",
                          "Softplus", "Softsign", "HardSwish", "Mish", "Gelu", "ThresholdedRelu", "Clip", "Abs",
                          "Neg", "Exp", "Log", "Sqrt", "Erf"}


def cancel_squeeze_pairs(nodes: list[NodeInfo], constants: dict[str, np.ndarray], graph_outputs: set[str]
                         ) -> list[NodeInfo]:
    """A Squeeze whose only reader is the Unsqueeze of the same axes (or the other way round) gives back its
    input: the pair goes, its readers read that input. With one elementwise op between them (Squeeze -> ReLU ->
    Unsqueeze: PyTorch's export of a model run on one unbatched image wraps every layer so) the op runs on the
    input and writes the pair's output. The layers then meet and fuse as in a batched model (a dynamo-exported
    CNN: 212 -> 127 us a run). Only explicit, non-negative axes (the same list on both) are matched.

    The pairs go smallest position first, each rewrite looking again only at the nodes it may have given a new
    match (the producer of the value the pair now hands on, whose readers changed, and the node before it): the
    pairs, and their order, of rescanning from the first node after every rewrite, without its quadratic time
    (50,000 pairs: under a second, where rescanning took 1.7 s for 2,000 and grew with the square)."""
    current = list(nodes)
    alive = [True] * len(current)
    producer, _ = producers_and_readers(nodes)  # (the axes' Constant nodes, which no rewrite touches)
    made_by = {name: index for index, node in enumerate(current) for name in node.outputs if name}
    readers: dict[str, dict[int, int]] = {}  # value -> {reading node: how many of its inputs}

    def count_reads(index: int, step: int) -> None:
        for name in current[index].inputs:
            if name:
                counts = readers.setdefault(name, {})
                counts[index] = counts.get(index, 0) + step
                if not counts[index]:
                    del counts[index]

    def sole_reader_of(index: int) -> int | None:  # (optimize.sole_reader over the live nodes)
        outputs = current[index].outputs
        if len(outputs) != 1 or outputs[0] in graph_outputs:
            return None
        counts = readers.get(outputs[0], {})
        return next(iter(counts)) if len(counts) == 1 and next(iter(counts.values())) == 1 else None

    def match(index: int) -> tuple[int | None, int] | None:
        """(the elementwise op between or None, the inverse) for a pair starting at ``index``, or None."""
        first = current[index]
        if first.op_type not in ("Squeeze", "Unsqueeze") or not is_default_domain(first):
            return None
        axes = _squeeze_axes(first, constants, producer)
        inverse = "Unsqueeze" if first.op_type == "Squeeze" else "Squeeze"
        middle, last = None, sole_reader_of(index)
        if last is not None:
            op = current[last]
            if op.op_type in _AXIS_FREE_ELEMENTWISE and is_default_domain(op) and op.inputs[0] == first.outputs[0] \
                    and first.outputs[0] not in op.inputs[1:] \
                    and (op.op_type != "PRelu" or _is_scalar(op.inputs[1], constants)):
                middle, last = last, sole_reader_of(last)
        if axes is None or last is None:
            return None
        end = current[last]
        if end.op_type != inverse or not is_default_domain(end) \
                or end.inputs[0] != current[index if middle is None else middle].outputs[0] \
                or _squeeze_axes(end, constants, producer) != axes \
                or (middle is None and end.outputs[0] in graph_outputs):
            return None
        return middle, last

    for index in range(len(current)):
        count_reads(index, 1)
    waiting = list(range(len(current)))  # (a heap: already in order)
    while waiting:
        index = heapq.heappop(waiting)
        found = match(index) if alive[index] else None
        if found is None:
            continue
        middle, last = found
        source, target = current[index].inputs[0], current[last].outputs[0]
        for gone in (index, last):
            count_reads(gone, -1)
            alive[gone] = False
        if middle is not None:
            count_reads(middle, -1)
            current[middle] = replace(current[middle], inputs=[source, *current[middle].inputs[1:]],
                                      outputs=[target])
            count_reads(middle, 1)
            made_by[target] = middle
        else:
            for reader in list(readers.get(target, {})):
                count_reads(reader, -1)
                current[reader] = replace(current[reader], inputs=[source if name == target else name
                                                                    for name in current[reader].inputs])
                count_reads(reader, 1)
        # the value handed on has other readers now: the pairs that may start at its producer, or at the node
        # before that (the producer being their op between), are looked at again
        before = made_by.get(source)
        if before is not None and alive[before]:
            heapq.heappush(waiting, before)
            ahead = made_by.get(current[before].inputs[0]) if current[before].inputs else None
            if ahead is not None and alive[ahead]:
                heapq.heappush(waiting, ahead)
    return [node for index, node in enumerate(current) if alive[index]]


def _squeeze_axes(node: NodeInfo, constants: dict[str, np.ndarray], producer: dict) -> list[int] | None:
    """The sorted axes of a Squeeze or Unsqueeze (attribute before opset 13, constant input after), or None when
    absent, not constant or negative."""
    if len(node.inputs) > 1 and node.inputs[1]:
        value = constant_value(node.inputs[1], constants, producer)
        axes = None if value is None or value.dtype.kind not in "iu" else value.reshape(-1).tolist()
    else:
        axes = node.attrs.get("axes")
        axes = None if axes is None else [int(a) for a in np.asarray(axes).reshape(-1)]
    if not axes or min(axes) < 0 or len(set(axes)) != len(axes):
        return None
    return sorted(axes)


def _is_scalar(name: str, constants: dict[str, np.ndarray]) -> bool:
    value = constants.get(name)
    return value is not None and value.size == 1


def _rename_into_outputs(nodes: list[NodeInfo], graph_outputs: set[str]) -> list[NodeInfo]:
    """An Identity that only renames a node's output as a graph output (TensorFlow exporters end a graph so):
    the node then writes the graph output itself, when nothing else reads the value it wrote."""
    uses = _use_counts(nodes, graph_outputs)
    producer = {name: index for index, node in enumerate(nodes) for name in node.outputs if name}
    result: list[NodeInfo | None] = list(nodes)
    for index, node in enumerate(nodes):
        if node.op_type != "Identity" or not is_default_domain(node) or len(node.inputs) != 1 \
                or len(node.outputs) != 1 or node.outputs[0] not in graph_outputs:
            continue
        source, target = node.inputs[0], node.outputs[0]
        at = producer.get(source)
        if at is None or uses.get(source) != 1 or result[at] is None:
            continue
        made = result[at]
        result[at] = replace(made, outputs=[target if name == source else name for name in made.outputs])
        result[index] = None
    return [node for node in result if node is not None]


def _scalar(value: object) -> float | None:
    """A finite-or-infinite real scalar as a float, or None for anything else (strings, vectors, NaN)."""
    array = np.asarray(value)
    if array.size != 1 or array.dtype.kind not in "biuf":
        return None
    number = float(array.reshape(-1)[0])
    return None if np.isnan(number) else number


def activation_params(node: NodeInfo, constants: dict[str, np.ndarray]) -> dict[str, float] | None:
    """The parameters of a fusable activation node, or None when they are not known at load time (or are not
    plain numbers, in which case the node is left to its own kernel, which reports the problem)."""
    kind = FUSABLE_ACTIVATIONS.get(node.op_type)
    if kind in ("relu", "tanh", "sigmoid"):
        return {}
    if kind == "leaky_relu":
        alpha = _scalar(node.attrs.get("alpha", 0.01))
        return None if alpha is None else {"alpha": alpha}
    if kind == "clip":
        bounds = [node.attrs.get("min", -np.inf), node.attrs.get("max", np.inf)]
        if len(node.inputs) > 1:  # input form (opset 11+): an omitted bound means no bound
            bounds = [-np.inf, np.inf]
            for index in (1, 2):
                if len(node.inputs) > index and node.inputs[index]:
                    if node.inputs[index] not in constants:
                        return None
                    bounds[index - 1] = constants[node.inputs[index]]
        low, high = _scalar(bounds[0]), _scalar(bounds[1])
        return None if low is None or high is None else {"min": low, "max": high}
    return None


def is_default_domain(node) -> bool:
    return node.domain in ("", "ai.onnx")


def producers_and_readers(nodes: list) -> tuple[dict[str, object], dict[str, list]]:
    """The node producing each value, and the nodes reading it (in order), for graph rewrites."""
    producer = {out: node for node in nodes for out in node.outputs if out}
    readers: dict[str, list] = {}
    for node in nodes:
        for name in node.inputs:
            if name:
                readers.setdefault(name, []).append(node)
    return producer, readers


def sole_reader(readers: dict[str, list], item, graph_outputs: set[str]):
    """The one node or step reading ``item``'s only output, or None: when it has more outputs or readers, or the
    output is a graph output (which must stay visible, so nothing may absorb its producer)."""
    if len(item.outputs) != 1 or item.outputs[0] in graph_outputs:
        return None
    users = readers.get(item.outputs[0], [])
    return users[0] if len(users) == 1 else None


def constant_value(name: str, constants: dict[str, np.ndarray], producer: dict) -> np.ndarray | None:
    """The value of ``name`` when it is a constant or a Constant node's ``value``/``value_int(s)`` (the passes that
    use it run before constants are folded)."""
    if name in constants:
        return constants[name]
    node = producer.get(name)
    if node is None or node.op_type != "Constant" or not is_default_domain(node) or len(node.attrs) != 1:
        return None
    key, value = next(iter(node.attrs.items()))
    if key not in ("value", "value_int", "value_ints"):
        return None
    value = np.asarray(value)
    return value if value.dtype.kind in "iu" else None


def flatten_batch_reshapes(nodes: list, constants: dict[str, np.ndarray], graph_outputs: set[str], make_node
                           ) -> list:
    """``Reshape(x, Concat(Unsqueeze(Gather(Shape(x), 0)), [-1]))`` — ``x.view(x.size(0), -1)`` as PyTorch
    exports it, five nodes computing ``x.shape[0]`` per run (most of a batch-1 MLP's time spent on shapes) — is
    ``Flatten(x, axis=1)``: the same (N, rest) for every x it accepts. The Gather may take a 1-D index [0] with no
    Unsqueeze. The shape nodes are left for the plan's dead-step pass (kept if something else reads them).
    ``make_node(template, name, op_type, domain, inputs, outputs, attrs)`` builds the Flatten.

    The fast plan runs it before ``fuse_qdq`` and before constants are folded (which would fold nothing here:
    the shape chain reads x); the dynamically quantized MLPs are where it was measured."""
    producer, _ = producers_and_readers(nodes)

    def made_by(name: str, op_type: str):
        node = producer.get(name) if name else None
        return node if node is not None and node.op_type == op_type and is_default_domain(node) else None

    def is_value(name: str, expected: list[int], ndim: int) -> bool:
        value = constant_value(name, constants, producer) if name else None
        return value is not None and value.ndim == ndim and value.reshape(-1).tolist() == expected

    replaced: dict[int, object] = {}
    for node in nodes:
        if node.op_type != "Reshape" or not is_default_domain(node) or len(node.inputs) != 2 \
                or node.attrs.get("allowzero", 0):
            continue
        x, shape = node.inputs
        concat = made_by(shape, "Concat")
        if concat is None or concat.attrs.get("axis") != 0 or len(concat.inputs) != 2 \
                or not is_value(concat.inputs[1], [-1], 1):
            continue
        first = concat.inputs[0]
        gather = made_by(first, "Gather")
        if gather is not None:  # a 1-D index [0]: already of rank 1
            index_rank = 1
        else:
            unsqueeze = made_by(first, "Unsqueeze")
            if unsqueeze is None or not unsqueeze.inputs:
                continue
            axes = unsqueeze.attrs.get("axes") if len(unsqueeze.inputs) == 1 else constant_value(
                unsqueeze.inputs[1], constants, producer)
            if axes is None or np.asarray(axes).reshape(-1).tolist() != [0]:
                continue
            gather, index_rank = made_by(unsqueeze.inputs[0], "Gather"), 0
        if gather is None or len(gather.inputs) != 2 or gather.attrs.get("axis", 0) != 0 \
                or not is_value(gather.inputs[1], [0], index_rank):
            continue
        shape_of = made_by(gather.inputs[0], "Shape")
        if shape_of is None or shape_of.inputs[:1] != [x] or shape_of.attrs.get("start", 0) != 0 \
                or "end" in shape_of.attrs:
            continue
        replaced[id(node)] = make_node(node, node.name, "Flatten", "", [x], list(node.outputs), {"axis": 1})
    return [replaced.get(id(node), node) for node in nodes] if replaced else nodes
