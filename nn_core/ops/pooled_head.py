"""A convolution block's pooled, flattened output read only by a classifier head's dense layers, as one step:
PooledHead (issue 10).

LeNet's conv2 block pools channels-last -- (pooled position, channel) -- and Flatten wants (channel, position):
handing the head a fresh array in the model's order costs a transposing copy, and the head then adds its first
layer's bias in a pass of its own. Fused, for one image, the pooling reduces straight into the head's input
buffer in its own order, a buffer that ends in a constant 1, and the head's first layer multiplies it by weights
whose rows are permuted to that order and end in the bias row (DenseChain.fed): no copy, no bias pass, one step
fewer (LeNet's conv2 block and head: ~28.4 -> ~26.4 us). Sums come in another order than the two kernels' (the
bias inside the product): equal within rounding. Every other input runs the two kernels in turn.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ..optimize import producers_and_readers, sole_reader
from .batch1 import LeanConv, PooledChannelsLastPlan
from .dense_chain import DenseChain


class PooledHead:
    """``chain(conv(x, w, b))`` for a LeanConv that absorbed the Flatten after it and the DenseChain that reads
    its output (the step's inputs: the conv's, then the chain's other inputs)."""

    def __init__(self, node: Any, conv: LeanConv, chain: DenseChain, conv_inputs: int):
        self.node, self.conv, self.chain, self.conv_inputs = node, conv, chain, conv_inputs

    def run(self, *inputs: np.ndarray | None) -> np.ndarray:
        split = self.conv_inputs
        return self.chain.run(self.conv.run(*inputs[:split]), *inputs[split:])

    def specialize(self, *inputs: np.ndarray | None) -> Callable[..., np.ndarray] | None:
        """For one image whose convolution runs as a PooledChannelsLastPlan: the pooling into the chain's fed
        input, then the chain; inputs of any other shape or dtype through ``run``."""
        x = inputs[0]
        conv, chain = self.conv, self.chain
        entry = conv.plans.get((x.shape, x.dtype))
        if x.shape[0] != 1 or x.dtype is not chain.dtype or entry is None:
            return None
        plan, matrix = entry
        if type(plan) is not PooledChannelsLastPlan or not plan.flatten or (x.shape, x.dtype) not in conv.fast:
            return None
        _, _, positions, channels = plan.stages.shape
        if positions * channels != chain.width:
            return None
        # pooled value (position p, channel c) is the flattened input c * positions + p
        order = np.arange(chain.width).reshape(channels, positions).T.reshape(-1)
        fed_input, buffers = chain.fed(order)
        pool = plan.single_chunk(matrix, conv.act, conv.pool,
                                 into=fed_input[:, :-1].reshape(1, positions, channels))
        through_buffers, lock, shape, dtype, general = chain.through_buffers, conv.lock, x.shape, x.dtype, self.run

        def run(*inputs: np.ndarray | None) -> np.ndarray:
            x = inputs[0]
            if x.shape != shape or x.dtype is not dtype:
                return general(*inputs)
            with lock:  # (the conv's buffers and the fed input: the chain's lock is taken inside, always after)
                pool(x)
                return through_buffers(fed_input, buffers)

        return run


def fuse_pooled_heads(steps: list[Any], graph_outputs: set[str]) -> list[Any]:
    """``steps`` with each LeanConv that absorbed a Flatten and whose only reader is a DenseChain (as its input)
    made one PooledHead step with it."""
    _, readers = producers_and_readers(steps)
    dropped: set[int] = set()
    for step in steps:
        conv = step.kernel
        if type(conv) is not LeanConv or not conv.flattened or not conv.static:
            continue
        reader = sole_reader(readers, step, graph_outputs)
        if reader is None or type(reader.kernel) is not DenseChain or id(reader) in dropped \
                or reader.inputs[0] != step.outputs[0] or step.outputs[0] in reader.inputs[1:]:
            continue
        step.kernel = PooledHead(step.node, conv, reader.kernel, len(step.inputs))
        step.inputs = [*step.inputs, *reader.inputs[1:]]
        step.outputs = list(reader.outputs)
        step.fused = (*step.fused, *reader.before, reader.node.op_type, *reader.fused)
        dropped.add(id(reader))
    return [s for s in steps if id(s) not in dropped]
