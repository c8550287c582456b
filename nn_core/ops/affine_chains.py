"""A BatchNormalization followed by constant per-channel Mul/Add nodes and a ReLU, as one step.

DenseNet's pre-activation (in the onnx wheel's export: BatchNormalization -> Mul -> Add -> Relu on every
concatenated feature map, 62 times) cannot fold into the convolution after it (the ReLU is in between) and ran as
three steps of five passes and three fresh arrays over the whole map. All of it is one affine map per channel,
``x * factor + shift``, then the ReLU: one step of three passes over one array (ChannelAffine). The factors are
combined in float64 once; the result equals the node-by-node one within float32 rounding.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..optimize import producers_and_readers, sole_reader
from .norm import BatchNormalization


def _per_channel(value: np.ndarray | None, channels: int) -> tuple[np.ndarray, int] | None:
    """A constant operand that broadcasts one value per channel (axis 1) of an input of some rank, as (channels,)
    values and that rank: shaped (C, 1, ...) or (1, C, 1, ...); or a single value (rank 0: any rank)."""
    if value is None or value.dtype.kind != "f":
        return None
    if value.size == 1:
        return np.full(channels, float(value.reshape(-1)[0])), 0
    shape = value.shape
    if len(shape) >= 2 and shape[0] == channels and all(n == 1 for n in shape[1:]):
        return value.reshape(-1).astype(np.float64), len(shape) + 1
    if len(shape) >= 3 and shape[0] == 1 and shape[1] == channels and all(n == 1 for n in shape[2:]):
        return value.reshape(-1).astype(np.float64), len(shape)
    return None


class ChannelAffine:
    """The steps of a BatchNormalization -> Mul/Add by per-channel constants [-> ReLU] chain, as one kernel:
    ``max(x * factor + shift, 0)``. An input of another rank (``rank``, 0 for any), channel count or type than the
    chain was made for runs through the original kernels, one after the other."""

    def __init__(self, node: Any, factor: np.ndarray, shift: np.ndarray, relu: bool, rank: int,
                 chain: list[tuple[Any, list]]):
        self.node = node
        self.relu, self.rank, self.channels = relu, rank, factor.size
        self.factor64, self.shift64 = factor, shift
        self.laid_out: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}
        self.chain = chain  # (kernel, inputs with None where the running value goes)
        # the Mul/Add constants' types: another than the input's would promote the result (float64 * float32)
        self.operand_types = {value.dtype for _, inputs in chain[1:] for value in inputs if value is not None}

    def run(self, x: np.ndarray) -> np.ndarray:
        if x.ndim < 2 or (self.rank and x.ndim != self.rank) or x.shape[1] != self.channels \
                or x.dtype not in (np.float32, np.float64) or any(t != x.dtype for t in self.operand_types):
            y = x
            for kernel, inputs in self.chain:
                y = kernel.run(*[y if value is None else value for value in inputs])
            return y
        pair = self.laid_out.get((x.dtype, x.ndim))
        if pair is None:
            shape = (self.channels,) + (1,) * (x.ndim - 2)
            pair = self.laid_out[(x.dtype, x.ndim)] = (self.factor64.astype(x.dtype).reshape(shape),
                                             self.shift64.astype(x.dtype).reshape(shape))
        y = np.multiply(x, pair[0])  # (in x's layout: a channels-last map stays channels-last)
        y += pair[1]
        if self.relu:
            np.maximum(y, x.dtype.type(0), out=y)
        return y


def fuse_affine_chains(steps: list[Any], graph_outputs: set[str]) -> list[Any]:
    """``steps`` with each BatchNormalization (inference, constant parameters) whose output goes only through
    Mul/Add nodes by per-channel constants, and possibly a ReLU, made one ChannelAffine step."""
    _, readers = producers_and_readers(steps)
    dropped: set[int] = set()
    for step in steps:
        kernel = step.kernel
        if type(kernel) is not BatchNormalization or kernel.training or kernel.factors is None \
                or kernel.output_count != 1 or kernel.factors[0].size < 2 or id(step) in dropped:
            continue
        factor, shift = (v.astype(np.float64) for v in kernel.factors)
        channels, rank = factor.size, 0
        chain = [(kernel, [None] + [kernel.const(i) for i in range(1, 5)])]
        last, relu, absorbed = step, False, []
        while not relu:
            user = sole_reader(readers, last, graph_outputs)
            if user is None:
                break
            op = user.node.op_type
            if op == "Relu" and user.node.domain in ("", "ai.onnx"):
                relu = True
            elif op in ("Mul", "Add") and type(user.kernel).__name__ == op and user.node.domain in ("", "ai.onnx") \
                    and len(user.inputs) == 2 and user.inputs.count(last.outputs[0]) == 1:
                position = user.inputs.index(last.outputs[0])
                operand = _per_channel(user.kernel.const(1 - position), channels)
                if operand is None or (rank and operand[1] and operand[1] != rank):
                    break
                values, rank = operand[0], rank or operand[1]
                if op == "Mul":
                    factor, shift = factor * values, shift * values
                else:
                    shift = shift + values
                    relu = bool(getattr(user.kernel, "relu", False))
                inputs: list = [None, None]
                inputs[1 - position] = user.kernel.const(1 - position)
                chain.append((user.kernel, inputs))
            else:
                break
            if op == "Relu":
                chain.append((user.kernel, [None]))
            absorbed.append(user)
            last = user
        if not absorbed:
            continue
        step.kernel = ChannelAffine(step.node, factor, shift, relu, rank, chain)
        step.inputs = step.inputs[:1]
        step.outputs = list(last.outputs)
        step.fused = (*step.fused, *(label for user in absorbed for label in (user.node.op_type, *user.fused)))
        dropped.update(id(user) for user in absorbed)
    return [s for s in steps if id(s) not in dropped]
