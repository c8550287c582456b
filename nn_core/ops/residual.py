"""A convolution whose only reader is a residual Add (or two-input Sum), and the ReLU after it, as one step.

ResNet's and ShuffleNet's blocks end in Conv -> Sum(conv, shortcut) -> Relu: the sum and the ReLU were two more
steps, each a pass that allocated a fresh array as large as the block's output. The convolution's own output is a
fresh array, so the shortcut is added into it and the ReLU applied in place (ResidualConv): the same two passes,
no new arrays, the same values bit for bit (the sum of two float32 values does not depend on their order). An
operand that broadcasts (of another shape) goes through the original Add/Sum and Relu kernels.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..optimize import producers_and_readers, sole_reader
from .conv import Conv


class ResidualConv:
    """``relu(conv(x, w, b) + other)`` for a Conv kernel ``conv`` (its inputs first, then ``other``)."""

    def __init__(self, node: Any, conv: Conv, add: Any, relu: Any | None, conv_inputs: int):
        self.node, self.conv, self.add, self.relu = node, conv, add, relu
        self.conv_inputs = conv_inputs
        # an Add may have absorbed the ReLU itself (the fast plan's fuse_activations)
        self.rectify = relu is not None or bool(getattr(add, "relu", False))

    def run(self, *inputs: np.ndarray) -> np.ndarray:
        other = inputs[self.conv_inputs]
        y = self.conv.run(*inputs[:self.conv_inputs])
        if type(y) is not np.ndarray or type(other) is not np.ndarray or y.shape != other.shape \
                or y.dtype != other.dtype or not y.flags.writeable:
            y = self.add.run(y, other)  # broadcasting, promotion: the Add/Sum kernel's own rules and checks
            return y if self.relu is None else self.relu.run(y)
        np.add(y, other, out=y)
        if self.rectify:
            np.maximum(y, y.dtype.type(0), out=y)
        return y


def fuse_residuals(steps: list[Any], graph_outputs: set[str]) -> list[Any]:
    """``steps`` with each Conv whose only reader is a two-input Add or Sum (and that sum's only reader a Relu,
    absorbed too) made one ResidualConv step, where the sum's other operand is already computed (a ResNet block's
    shortcut convolution comes after its main branch, so that is the one fused). The Conv must not have an
    activation or a pooling fused (the sum comes first)."""
    _, readers = producers_and_readers(steps)
    produced_at = {name: index for index, step in enumerate(steps) for name in step.outputs}
    dropped: set[int] = set()
    for index, step in enumerate(steps):
        kernel = step.kernel
        if not isinstance(kernel, Conv) or kernel.act is not None or kernel.pool is not None or id(step) in dropped:
            continue
        add = sole_reader(readers, step, graph_outputs)
        if add is None or add.node.op_type not in ("Add", "Sum") or add.node.domain not in ("", "ai.onnx") \
                or len(add.inputs) != 2 or add.inputs.count(step.outputs[0]) != 1 or id(add) in dropped:
            continue
        other = add.inputs[1 - add.inputs.index(step.outputs[0])]
        if not other or produced_at.get(other, -1) >= index:
            continue
        relu = None if getattr(add.kernel, "relu", False) else sole_reader(readers, add, graph_outputs)
        if relu is not None and (relu.node.op_type != "Relu" or relu.node.domain not in ("", "ai.onnx")
                                 or len(relu.inputs) != 1 or id(relu) in dropped):
            relu = None
        last = relu or add
        step.kernel = ResidualConv(step.node, kernel, add.kernel, None if relu is None else relu.kernel,
                                   len(step.inputs))
        step.inputs = [*step.inputs, other]
        step.outputs = list(last.outputs)
        step.fused = (*step.fused, add.node.op_type, *add.fused, *(("Relu",) if relu is not None else ()))
        dropped.update(id(s) for s in (add, relu) if s is not None)
    return [s for s in steps if id(s) not in dropped]
