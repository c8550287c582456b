"""Run one ONNX node through its kernel, without a model: the harness of the per-operator tests."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx

from .attributes import node_attributes
from .registry import NodeSpec, resolve


def run_node(
    node: onnx.NodeProto,
    inputs: Sequence[np.ndarray | None],
    opset: int,
    constant_inputs: Sequence[int] = (),
) -> list[np.ndarray]:
    """Build ``node``'s kernel at ``opset`` and run it on ``inputs``; return the outputs as a list.

    ``constant_inputs`` lists input positions whose values are given to the kernel at preparation time too
    (as the loader does for initializers), so both the prepared and the dynamic paths can be tested.
    """
    from . import load_all_kernels

    load_all_kernels()
    cls = resolve(node.op_type, opset, node.domain)
    if cls is None:
        raise KeyError(f"no kernel for {node.op_type} at opset {opset}")
    consts = [inputs[i] if i in constant_inputs and i < len(inputs) else None for i in range(len(node.input))]
    spec = NodeSpec(
        op_type=node.op_type, name=node.name, domain=node.domain, inputs=list(node.input),
        outputs=list(node.output), attrs=node_attributes(node), opset=opset, consts=consts,
    )
    kernel = cls(spec)
    result = kernel.run(*inputs)
    return list(result) if isinstance(result, tuple) else [result]
