"""The graph as the engine sees it: named nodes in topological order, constants, typed inputs and outputs.

Built once from the ONNX protobuf: nodes get names (exporters often leave them empty), are sorted (real models
list them out of order), and every problem that would stop a run — a missing producer, a cycle, an operator we
have no kernel for — is reported here, naming the nodes involved.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
import onnx.defs
from onnx import helper

from .errors import ModelError, UnsupportedOperatorError
from .limits import DEFAULT_LIMITS, Limits, check_tensor, human_bytes
from .ops import load_all_kernels, resolve, supported_ops
from .ops.attributes import node_attributes, sparse_to_dense, tensor_to_array
from .ops.registry import DEFAULT_DOMAIN, MAX_OPSET, ML_DOMAIN, canonical_domain

_POOLS = {"MaxPool", "AveragePool", "LpPool"}
_SINGLE = onnx.defs.OpSchema.FormalParameterOption.Single  # a required, non-variadic input
_VARIADIC = onnx.defs.OpSchema.FormalParameterOption.Variadic
# attributes whose INT value is a TensorProto element type (Cast's 'to', EyeLike's 'dtype'...); 0 is "not set"
_ELEMENT_TYPE_ATTRIBUTES = {"to", "dtype", "output_dtype"}
_KNOWN_ELEMENT_TYPES = set(onnx.TensorProto.DataType.values())
#: how deep If/Loop/Scan bodies may nest inside each other (the reader bounds it at the same depth)
MAX_SUBGRAPH_NESTING = 32
# newest opset of the other domains the kernels know
_NEWEST_OPSET = {ML_DOMAIN: 5}


@functools.lru_cache(maxsize=4096)
def op_schema(op_type: str, opset: int, domain: str) -> onnx.defs.OpSchema | None:
    """The ONNX schema of ``op_type`` at ``opset`` in ``domain`` (canonical), or None where onnx has none."""
    try:
        return onnx.defs.get_schema(op_type, opset, domain)
    except onnx.defs.SchemaError:
        return None


def formal_types(schema: onnx.defs.OpSchema, formal: onnx.defs.OpSchema.FormalParameter) -> set[str]:
    """The types (``tensor(float)``, ``seq(tensor(string))``...) a formal input or output of ``schema`` takes."""
    for constraint in schema.type_constraints:
        if constraint.type_param_str == formal.type_str:
            return set(constraint.allowed_type_strs)
    return {formal.type_str}  # (a type written out in place of a type parameter)


def input_type_problem(op_type: str, domain: str, opset: int, values: list[Any]) -> str | None:
    """Which of ``values``, given as the inputs of an ``op_type`` node, breaks the type constraints of the op's
    ONNX schema (a bool or string tensor where the op takes numbers): "input 0 ('X') is string; Conv takes
    float16, float, double" -- or None. For naming the cause when a kernel fails on such a value."""
    found = input_type_mismatch(op_type, domain, opset, values)
    return None if found is None else found[1]


def input_type_mismatch(op_type: str, domain: str, opset: int, values: list[Any]) -> tuple[int, str] | None:
    """input_type_problem's finding with the index of the input it is about."""
    schema = op_schema(op_type, opset, canonical_domain(domain))
    if schema is None or not schema.inputs:
        return None
    last = len(schema.inputs) - 1
    for index, value in enumerate(values):
        if not isinstance(value, np.ndarray):
            continue  # (absent, or a sequence or map: the kernels name those themselves)
        formal = schema.inputs[min(index, last)]
        if index > last and formal.option != _VARIADIC:
            return None
        kinds = formal_types(schema, formal)
        try:
            name = onnx.TensorProto.DataType.Name(helper.np_dtype_to_tensor_dtype(value.dtype)).lower()
        except (KeyError, TypeError, ValueError):
            continue
        if f"tensor({name})" not in kinds and not any(kind.startswith(("seq(", "optional(")) for kind in kinds):
            takes = ", ".join(kind[len("tensor("):-1] for kind in sorted(kinds) if kind.startswith("tensor("))
            return index, f"input {index} ('{formal.name}') is {name}; {op_type} takes {takes}"
    return None


def _count_range(low: int, high: int) -> str:
    if low == high:
        return str(low)
    return f"at least {low}" if high > 1_000_000 else f"{low} to {high}"


def _attr_type_name(kind: int) -> str:
    return onnx.AttributeProto.AttributeType.Name(kind) if kind in onnx.AttributeProto.AttributeType.values() \
        else f"type {kind}"


def _preview(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


@dataclass
class ValueSpec:
    """A graph input or output: name, shape (ints; strings for symbolic dims; None when unknown), dtype.

    ``kind``: what the value is — "tensor" (an array), "sequence" (a list of values), "optional" (a value or
    None), "map", "sparse_tensor", or "unknown" (no type declared). Only tensors are checked and converted as
    arrays at the model's boundary; the other kinds pass through as Python objects. For a sequence or an
    optional, ``dtype`` and ``shape`` describe its tensor elements when the declaration says.
    """

    name: str
    shape: list[int | str | None] | None
    dtype: np.dtype | None
    kind: str = "tensor"

    def describe_shape(self) -> str:
        if self.shape is None:
            return "[?]"
        return "[" + ",".join("?" if d is None else str(d) for d in self.shape) + "]"


@dataclass
class NodeInfo:
    """One node of the original graph."""

    name: str
    op_type: str
    domain: str
    inputs: list[str]
    outputs: list[str]
    attrs: dict[str, Any] = field(default_factory=dict)
    parameters: int = 0  # elements of the constant tensors it reads (weights, biases)

    def describe(self) -> str:
        return f"node '{self.name}' ({self.op_type})"


_VALUE_KINDS = {"tensor_type": "tensor", "sequence_type": "sequence", "optional_type": "optional",
                "map_type": "map", "sparse_tensor_type": "sparse_tensor"}


def value_spec(info: onnx.ValueInfoProto) -> ValueSpec:
    kind = _VALUE_KINDS.get(info.type.WhichOneof("value"), "unknown")
    if kind != "tensor":
        element = info.type
        for _ in range(MAX_SUBGRAPH_NESTING):  # the innermost tensor of a sequence/optional, for its dtype
            inner = element.WhichOneof("value")
            if inner not in ("sequence_type", "optional_type"):
                break
            element = getattr(element, inner).elem_type
        if kind in ("sequence", "optional") and element.WhichOneof("value") == "tensor_type":
            spec = _tensor_spec(info.name, element.tensor_type)
            return ValueSpec(info.name, spec.shape if kind == "optional" else None, spec.dtype, kind)
        return ValueSpec(info.name, None, None, kind)
    return _tensor_spec(info.name, info.type.tensor_type)


def _tensor_spec(name: str, tensor_type: onnx.TypeProto.Tensor) -> ValueSpec:
    dtype = None
    if tensor_type.elem_type:
        try:
            dtype = np.dtype(helper.tensor_dtype_to_np_dtype(tensor_type.elem_type))
        except (KeyError, TypeError, ValueError):
            dtype = None
    if not tensor_type.HasField("shape"):
        return ValueSpec(name, None, dtype)
    shape: list[int | str | None] = []
    for dim in tensor_type.shape.dim:
        if dim.HasField("dim_value"):
            shape.append(int(dim.dim_value))
        elif dim.HasField("dim_param") and dim.dim_param:
            shape.append(dim.dim_param)
        else:
            shape.append(None)
    return ValueSpec(name, shape, dtype)


def free_variables(graph: onnx.GraphProto, depth: int = 0) -> list[str]:
    """The names a subgraph reads (its nodes, its nested subgraphs, its outputs) that it does not define itself
    (inputs, initializers, node outputs): the outer-scope values it needs, in first-read order."""
    if depth > MAX_SUBGRAPH_NESTING:
        raise ModelError(f"subgraph '{graph.name}' nests subgraphs more than {MAX_SUBGRAPH_NESTING} levels deep")
    defined = {v.name for v in graph.input} | {t.name for t in graph.initializer}
    defined |= {s.values.name for s in graph.sparse_initializer}
    defined |= {name for node in graph.node for name in node.output}
    free: dict[str, None] = {}
    for node in graph.node:
        reads = list(node.input)
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                reads += free_variables(attr.g, depth + 1)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for sub in attr.graphs:
                    reads += free_variables(sub, depth + 1)
        free.update((name, None) for name in reads if name and name not in defined)
    free.update((v.name, None) for v in graph.output if v.name and v.name not in defined)
    return list(free)


class Subgraph:
    """A node's graph attribute (an If branch, a Loop or Scan body), compiled like the main graph.

    ``graph`` is a nested ``Graph`` whose inputs are the body's own inputs followed by ``outer``, the values it
    reads from the enclosing scope; the enclosing node receives those as implicit extra inputs (after its
    declared ones), so the plan orders and keeps them like any other input.
    """

    def __init__(self, proto: onnx.GraphProto, parent: Graph, label: str):
        self.proto = proto
        self.outer = free_variables(proto, parent.depth + 1)
        self.graph = Graph(proto, label, parent.limits, parent=parent, outer=self.outer)
        self.formal = [v.name for v in proto.input]
        self.output_specs = list(self.graph.outputs)


def implicit_inputs(attrs: dict[str, Any]) -> list[str]:
    """The outer-scope names every subgraph of a node reads, in a fixed order: the node's implicit inputs."""
    names: dict[str, None] = {}
    for value in attrs.values():
        for sub in (value if isinstance(value, list) else [value]):
            if isinstance(sub, Subgraph):
                names.update((name, None) for name in sub.outer)
    return list(names)


def standalone_subgraph(proto: onnx.GraphProto, opset: int, source: str = "subgraph",
                        limits: Limits = DEFAULT_LIMITS) -> Subgraph:
    """A body compiled without its enclosing graph (a kernel built outside the loader, as in tests): it may
    read no outer-scope values."""
    model = helper.make_model(onnx.GraphProto(), opset_imports=[helper.make_opsetid("", opset)])
    root = Graph.__new__(Graph)
    root.source, root.limits, root.depth, root.opsets = source, limits, 0, Graph._opsets(root, model)
    return Subgraph(proto, root, source)


class Graph:
    """Nodes in execution order, constant values, graph inputs (without weights) and outputs.

    A subgraph (``parent`` given, ``model`` a GraphProto) shares its parent's opsets and limits; ``outer`` names
    the enclosing-scope values it reads, which become inputs after its own.
    """

    def __init__(self, model: onnx.ModelProto | onnx.GraphProto, source: str = "model",
                 limits: Limits = DEFAULT_LIMITS, parent: Graph | None = None, outer: list[str] | None = None):
        load_all_kernels()
        self.source = source
        self.limits = limits
        if parent is None:
            graph = model.graph
            self.depth = 0
            self.opsets = self._opsets(model)
        else:
            graph = model
            self.depth = parent.depth + 1
            if self.depth > MAX_SUBGRAPH_NESTING:
                raise ModelError(f"{source}: subgraphs nest more than {MAX_SUBGRAPH_NESTING} levels deep")
            self.opsets = parent.opsets
        if len(graph.node) > limits.max_nodes:
            raise ModelError(f"{source}: the graph has {len(graph.node):,} nodes, over the limit of"
                             f" {limits.max_nodes:,} (nn_core.Limits.max_nodes)")
        self.constants: dict[str, np.ndarray] = {}
        total = 0
        for tensor in graph.initializer:
            self._add_constant(tensor.name, tensor_to_array(tensor, source, limits))
            total += self.constants[tensor.name].nbytes
        for sparse in graph.sparse_initializer:
            self._add_constant(sparse.values.name, sparse_to_dense(sparse, source, limits))
            total += self.constants[sparse.values.name].nbytes
        if total > limits.max_constant_bytes:
            raise ModelError(f"{source}: the initializers take {human_bytes(total)}, over the"
                             f" {human_bytes(limits.max_constant_bytes)} limit (nn_core.Limits.max_constant_bytes)")
        # initializers listed as graph inputs are weights with defaults, not something the user feeds
        self.inputs = [value_spec(v) for v in graph.input if v.name not in self.constants]
        own = {v.name for v in graph.input}
        self.inputs += [ValueSpec(name, None, None, "unknown") for name in outer or () if name not in own
                        and name not in self.constants]
        self.outputs = [value_spec(v) for v in graph.output]
        if not self.outputs:
            raise ModelError(f"{source}: the graph declares no outputs")
        self._check_declared_values()
        # the graph inputs and initializers of type bool, and what each is (_check_bool_inputs)
        self._bool_values = {spec.name: "graph input" for spec in self.inputs
                             if spec.dtype is not None and spec.dtype.kind == "b"}
        self._bool_values.update((name, "initializer") for name, value in self.constants.items()
                                 if value.dtype.kind == "b")
        self.nodes = self._sorted_nodes(graph)
        self._check_supported()
        for node in self.nodes:
            node.parameters = sum(int(self.constants[name].size) for name in node.inputs if name in self.constants)

    def _opsets(self, model: onnx.ModelProto) -> dict[str, int]:
        """The opset of each domain, refusing what no reader could interpret unambiguously.

        Like onnxruntime, a default-domain opset newer than the kernels know (``MAX_OPSET``) is refused: its
        operators may mean something else. A model that imports no opset at all is read as opset 1 only for
        IR versions before 3, which predate ``opset_import``.
        """
        if model.ir_version > onnx.IR_VERSION:
            raise ModelError(f"{self.source}: IR version {model.ir_version} is newer than this engine reads"
                             f" ({onnx.IR_VERSION}); re-export the model with an older onnx")
        opsets: dict[str, int] = {}
        for entry in model.opset_import:
            domain = canonical_domain(entry.domain)
            if domain in opsets:
                raise ModelError(f"{self.source}: opset_import lists domain '{entry.domain or 'ai.onnx'}' twice")
            opsets[domain] = int(entry.version)
        if DEFAULT_DOMAIN not in opsets:
            uses_default = any(canonical_domain(n.domain) == DEFAULT_DOMAIN for n in model.graph.node)
            if model.ir_version >= 3 and uses_default:
                raise ModelError(f"{self.source}: the model uses operators of the default ONNX domain but does not"
                                 " say which opset (no opset_import entry for 'ai.onnx')")
            opsets[DEFAULT_DOMAIN] = 1
        for domain, version in opsets.items():
            newest = MAX_OPSET if domain == DEFAULT_DOMAIN else _NEWEST_OPSET.get(domain, 10_000)
            if not 1 <= version <= newest:
                raise ModelError(f"{self.source}: opset {version} of domain '{domain or 'ai.onnx'}' is outside the"
                                 f" versions this engine knows (1..{newest})")
        return opsets

    def _add_constant(self, name: str, value: np.ndarray) -> None:
        if name in self.constants:
            raise ModelError(f"{self.source}: two initializers are named '{name}'")
        self.constants[name] = value

    def _check_declared_values(self) -> None:
        seen: set[str] = set()
        for spec in self.inputs:
            if spec.name in seen:
                raise ModelError(f"{self.source}: two graph inputs are named '{spec.name}'")
            seen.add(spec.name)
            if spec.shape is None:
                continue
            if any(isinstance(d, int) and d < 0 for d in spec.shape):
                raise ModelError(f"{self.source}: input '{spec.name}' declares a negative dimension"
                                 f" {spec.describe_shape()}")
            fixed = [d for d in spec.shape if isinstance(d, int)]
            check_tensor(self.limits, self.source, f"declared input '{spec.name}'", fixed, spec.dtype or np.float32)

    def _check_window_padding(self, proto: onnx.NodeProto, where: str, attrs: dict[str, Any]) -> None:
        """Pads within ``limits.max_pad``; for pooling, smaller than the kernel (as onnxruntime requires: a window
        made only of padding has no maximum or average to take)."""
        pads = attrs.get("pads")
        if not isinstance(pads, list) or not all(isinstance(p, int) for p in pads):
            return  # absent, or of the wrong type: the attribute-type check reports it
        if any(p > self.limits.max_pad for p in pads):
            raise ModelError(f"{where}: pads {pads} exceed the limit of {self.limits.max_pad} per side"
                             " (nn_core.Limits.max_pad)")
        kernel = attrs.get("kernel_shape")
        if proto.op_type in _POOLS and isinstance(kernel, list) and len(pads) == 2 * len(kernel):
            if any(p >= kernel[i % len(kernel)] for i, p in enumerate(pads)):
                raise ModelError(f"{where}: pads {pads} must be smaller than the kernel {kernel}: a window of padding"
                                 " alone has nothing to pool")

    def opset_for(self, domain: str) -> int:
        return self.opsets.get(canonical_domain(domain), 1)

    def _check_against_schema(self, proto: onnx.NodeProto, name: str, attrs: dict[str, Any]) -> None:
        """Input/output counts and attribute types as the ONNX schema of the node's op and version says.

        An INT where the schema wants a FLOAT is taken as that float (the intent is plain); any other mismatch,
        a FLOAT where an INT belongs (2.5 strides) or a STRING alpha, is refused rather than truncated or coerced.
        """
        domain = canonical_domain(proto.domain)
        if domain not in (DEFAULT_DOMAIN, ML_DOMAIN):
            return
        schema = op_schema(proto.op_type, self.opset_for(domain), domain)
        if schema is None:
            return
        where = f"{self.source}: node '{name}' ({proto.op_type})"
        inputs, outputs = len(proto.input), len(proto.output)
        if not schema.min_input <= inputs <= schema.max_input:
            raise ModelError(f"{where} has {inputs} inputs; opset {schema.since_version} of {proto.op_type} takes"
                             f" {_count_range(schema.min_input, schema.max_input)}")
        if not schema.min_output <= outputs <= schema.max_output:
            raise ModelError(f"{where} has {outputs} outputs; opset {schema.since_version} of {proto.op_type}"
                             f" gives {_count_range(schema.min_output, schema.max_output)}")
        # an empty name means "not given", which only an optional input may be (a kernel would get None)
        for index, (given, formal) in enumerate(zip(proto.input, schema.inputs)):
            if not given and formal.option == _SINGLE:
                raise ModelError(f"{where}: input {index} ('{formal.name}') is required, but its name is empty")
        self._check_window_padding(proto, where, attrs)
        self._check_bool_inputs(proto, where)
        for name in _ELEMENT_TYPE_ATTRIBUTES & set(attrs):
            value = attrs[name]
            if isinstance(value, int) and value not in _KNOWN_ELEMENT_TYPES:
                raise ModelError(f"{where}: attribute '{name}' names element type {value}, unknown to ONNX")
        for attr in proto.attribute:
            declared = schema.attributes.get(attr.name)
            if declared is None:
                continue  # exporters leave harmless extras behind; kernels read only what they know
            want = int(declared.type)
            if attr.type == want:
                continue
            if want == onnx.AttributeProto.FLOAT and attr.type == onnx.AttributeProto.INT:
                attrs[attr.name] = float(attrs[attr.name])
            elif want == onnx.AttributeProto.FLOATS and attr.type == onnx.AttributeProto.INTS:
                attrs[attr.name] = [float(v) for v in attrs[attr.name]]
            else:
                raise ModelError(f"{where}: attribute '{attr.name}' is {_attr_type_name(attr.type)}"
                                 f" {_preview(attrs[attr.name])}; the ONNX spec says {_attr_type_name(want)}")

    def _check_bool_inputs(self, proto: onnx.NodeProto, where: str) -> None:
        """Refuse a bool graph input or initializer where the node's schema does not take bool (a bool image into
        a Conv): a kernel would run it into garbage or fail a step later, far from the cause. Numbers of another
        type than the schema's are left to the kernels, which take them as real models need (an int32 zero
        point of a quantizer's export); strings are string_guard's."""
        if not any(name in self._bool_values for name in proto.input):
            return
        values = [np.empty(0, bool) if name in self._bool_values else None for name in proto.input]
        found = input_type_mismatch(proto.op_type, proto.domain, self.opset_for(canonical_domain(proto.domain)),
                                    values)
        if found is not None:
            index, problem = found
            name = proto.input[index]
            raise ModelError(f"{where}: {problem} (the {self._bool_values[name]} '{name}' it reads is declared so)")

    def _sorted_nodes(self, graph: onnx.GraphProto) -> list[NodeInfo]:
        """Kahn's algorithm, stable with respect to file order; names every node that has no name."""
        nodes: list[NodeInfo] = []
        used_names: set[str] = set()
        for index, proto in enumerate(graph.node):
            # (a string field with bytes that are not UTF-8 comes back from protobuf as bytes, not str)
            texts = [proto.name, proto.op_type, proto.domain, *proto.input, *proto.output]
            if not all(isinstance(text, str) for text in texts):
                raise ModelError(f"{self.source}: node {index} has a name, operator or value name that is not"
                                 f" UTF-8 text: {next(t for t in texts if not isinstance(t, str))[:60]!r}")
            name = proto.name or f"{proto.op_type}_{index}"
            if name in used_names:
                name = f"{name}_{index}"
            used_names.add(name)
            attrs = node_attributes(proto, f"{self.source}: node '{name}' ({proto.op_type})", self.limits)
            self._check_against_schema(proto, name, attrs)
            implicit = self._compile_subgraphs(name, proto.op_type, attrs)
            nodes.append(NodeInfo(name, proto.op_type, canonical_domain(proto.domain), list(proto.input) + implicit,
                                  list(proto.output), attrs))
        available = {v.name for v in self.inputs} | set(self.constants) | {""}
        producer: dict[str, int] = {}
        for index, node in enumerate(nodes):
            for out in node.outputs:
                if not out:
                    continue
                if out in producer:
                    raise ModelError(f"{self.source}: {node.describe()} and {nodes[producer[out]].describe()} both"
                                     f" produce '{out}'; every value must have one producer")
                if out in available:
                    what = "a graph input" if out in {v.name for v in self.inputs} else "an initializer"
                    raise ModelError(f"{self.source}: {node.describe()} overwrites '{out}', which is {what}")
                producer[out] = index
        missing = []
        for node in nodes:
            for name in node.inputs:
                if name not in available and name not in producer:
                    missing.append(f"{node.describe()} reads '{name}'")
        for out in self.outputs:
            if out.name not in available and out.name not in producer:
                missing.append(f"graph output '{out.name}'")
        if missing:
            raise ModelError(
                f"{self.source}: dangling input: {'; '.join(missing[:5])}"
                f"{' ...' if len(missing) > 5 else ''} — no node produces it and it is neither a graph input nor"
                " an initializer"
            )
        waiting = [0] * len(nodes)
        consumers: dict[int, list[int]] = {i: [] for i in range(len(nodes))}
        for index, node in enumerate(nodes):
            for src in {producer[n] for n in node.inputs if n in producer and n not in available}:
                waiting[index] += 1
                consumers[src].append(index)
        ready = [i for i, count in enumerate(waiting) if count == 0]
        order: list[int] = []
        import heapq

        heapq.heapify(ready)
        while ready:
            index = heapq.heappop(ready)
            order.append(index)
            for nxt in consumers[index]:
                waiting[nxt] -= 1
                if waiting[nxt] == 0:
                    heapq.heappush(ready, nxt)
        if len(order) != len(nodes):
            stuck = [nodes[i].name for i in range(len(nodes)) if waiting[i] > 0]
            raise ModelError(
                f"{self.source}: the graph has a cycle: nodes {', '.join(stuck[:8])}"
                f"{' ...' if len(stuck) > 8 else ''} depend on each other"
            )
        return [nodes[i] for i in order]

    def _compile_subgraphs(self, name: str, op_type: str, attrs: dict[str, Any]) -> list[str]:
        """Replace each graph attribute by its compiled ``Subgraph``; return the node's implicit inputs."""
        found = False
        for key, value in attrs.items():
            if isinstance(value, onnx.GraphProto):
                attrs[key] = Subgraph(value, self, f"{self.source}: node '{name}' ({op_type}) {key}")
                found = True
            elif isinstance(value, list) and value and all(isinstance(v, onnx.GraphProto) for v in value):
                attrs[key] = [Subgraph(v, self, f"{self.source}: node '{name}' ({op_type}) {key}[{i}]")
                              for i, v in enumerate(value)]
                found = True
        return implicit_inputs(attrs) if found else []

    def _check_supported(self) -> None:
        missing: dict[tuple[str, str, int], list[str]] = {}
        for node in self.nodes:
            opset = self.opset_for(node.domain)
            if resolve(node.op_type, opset, node.domain) is None:
                missing.setdefault((node.op_type, node.domain or "ai.onnx", opset), []).append(node.name)
        if missing:
            parts = []
            for (op, domain, opset), names in missing.items():
                shown = ", ".join(names[:4]) + (f" and {len(names) - 4} more" if len(names) > 4 else "")
                parts.append(f"{op} ({domain}, opset {opset}) at nodes {shown}")
            known = ", ".join(sorted(supported_ops()))
            raise UnsupportedOperatorError(
                f"{self.source}: unsupported operators: {'; '.join(parts)} — supported: {known}"
            )

    def consumers(self) -> dict[str, list[NodeInfo]]:
        table: dict[str, list[NodeInfo]] = {}
        for node in self.nodes:
            for name in node.inputs:
                if name:
                    table.setdefault(name, []).append(node)
        return table
