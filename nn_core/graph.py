"""The graph as the engine sees it: named nodes in topological order, constants, typed inputs and outputs.

Built once from the ONNX protobuf: nodes get names (exporters often leave them empty), are sorted (real models
list them out of order), and every problem that would stop a run — a missing producer, a cycle, an operator we
have no kernel for — is reported here, naming the nodes involved.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
from onnx import helper

from .errors import ModelError, UnsupportedOperatorError
from .limits import DEFAULT_LIMITS, Limits
from .ops import load_all_kernels, resolve, supported_ops
from .ops.attributes import node_attributes, tensor_to_array
from .ops.registry import DEFAULT_DOMAIN, canonical_domain


@dataclass
class ValueSpec:
    """A graph input or output: name, shape (ints; strings for symbolic dims; None when unknown), dtype."""

    name: str
    shape: list[int | str | None] | None
    dtype: np.dtype | None

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


def value_spec(info: onnx.ValueInfoProto) -> ValueSpec:
    kind = info.type.WhichOneof("value")
    if kind != "tensor_type":
        return ValueSpec(info.name, None, None)
    tensor_type = info.type.tensor_type
    dtype = None
    if tensor_type.elem_type:
        try:
            dtype = np.dtype(helper.tensor_dtype_to_np_dtype(tensor_type.elem_type))
        except (KeyError, TypeError, ValueError):
            dtype = None
    if not tensor_type.HasField("shape"):
        return ValueSpec(info.name, None, dtype)
    shape: list[int | str | None] = []
    for dim in tensor_type.shape.dim:
        if dim.HasField("dim_value"):
            shape.append(int(dim.dim_value))
        elif dim.HasField("dim_param") and dim.dim_param:
            shape.append(dim.dim_param)
        else:
            shape.append(None)
    return ValueSpec(info.name, shape, dtype)


class Graph:
    """Nodes in execution order, constant values, graph inputs (without weights) and outputs."""

    def __init__(self, model: onnx.ModelProto, source: str = "model", limits: Limits = DEFAULT_LIMITS):
        load_all_kernels()
        self.source = source
        self.limits = limits
        graph = model.graph
        self.opsets = {canonical_domain(o.domain): int(o.version) for o in model.opset_import}
        self.opsets.setdefault(DEFAULT_DOMAIN, 1 if model.opset_import else 13)
        self.constants: dict[str, np.ndarray] = {}
        for tensor in graph.initializer:
            try:
                self.constants[tensor.name] = tensor_to_array(tensor)
            except Exception as exc:  # a tensor whose raw bytes don't match its dims: a damaged file
                raise ModelError(f"{source}: initializer '{tensor.name}' cannot be read ({exc})") from None
        for sparse in graph.sparse_initializer:
            from .ops.attributes import _sparse_to_dense

            self.constants[sparse.values.name] = _sparse_to_dense(sparse)
        # initializers listed as graph inputs are weights with defaults, not something the user feeds
        self.inputs = [value_spec(v) for v in graph.input if v.name not in self.constants]
        self.outputs = [value_spec(v) for v in graph.output]
        if not self.outputs:
            raise ModelError(f"{source}: the graph declares no outputs")
        self.nodes = self._sorted_nodes(graph)
        self._check_supported()
        for node in self.nodes:
            node.parameters = sum(int(self.constants[name].size) for name in node.inputs if name in self.constants)

    def opset_for(self, domain: str) -> int:
        return self.opsets.get(canonical_domain(domain), 1)

    def _sorted_nodes(self, graph: onnx.GraphProto) -> list[NodeInfo]:
        """Kahn's algorithm, stable with respect to file order; names every node that has no name."""
        nodes: list[NodeInfo] = []
        used_names: set[str] = set()
        for index, proto in enumerate(graph.node):
            name = proto.name or f"{proto.op_type}_{index}"
            if name in used_names:
                name = f"{name}_{index}"
            used_names.add(name)
            try:
                attrs = node_attributes(proto)
            except Exception as exc:
                raise ModelError(
                    f"{self.source}: node '{name}' ({proto.op_type}) has an unreadable attribute: {exc}"
                ) from None
            nodes.append(NodeInfo(name, proto.op_type, canonical_domain(proto.domain), list(proto.input),
                                  list(proto.output), attrs))
        producer: dict[str, int] = {}
        for index, node in enumerate(nodes):
            for out in node.outputs:
                if out:
                    producer[out] = index
        available = {v.name for v in self.inputs} | set(self.constants) | {""}
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
