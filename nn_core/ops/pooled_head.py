"""A convolution block's pooled, flattened output read only by a classifier head's dense layers, as one step:
PooledHead (issue 10).

LeNet's conv2 block pools channels-last -- (pooled position, channel) -- and Flatten wants (channel, position):
handing the head a fresh array in the model's order costs a transposing copy, and the head then adds its first
layer's bias in a pass of its own. Fused, for one image, the pooling reduces straight into the head's input
buffer in its own order, a buffer that ends in a constant 1, and the head's first layer multiplies it by weights
whose rows are permuted to that order and end in the bias row (DenseChain.fed): no copy, no bias pass, one step
fewer (LeNet's conv2 block and head: ~28.4 -> ~26.4 us). The head may be one dense layer (a DenseChain of one).
Sums come in another order than the two kernels' (the bias inside the product): equal within rounding. Every
other input runs the two kernels in turn: a shape the fused path does not take runs as Parts, the kernels' own
specialized runners called from the plan's line as separate steps would be.

The convolution block before it, when only the head reads it, joins the step too (FedPooledHead: LeNet is then
one step), and its phase-pooled plan's NaN check moves to one value of the head's output.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ..optimize import producers_and_readers, sole_reader
from .batch1 import LeanConv, PhasePooledIm2colPlan, PooledChannelsLastPlan
from .dense_chain import DenseChain, chainable
from .registry import Parts


class PooledHead:
    """``chain(conv(x, w, b))`` for a LeanConv that absorbed the Flatten after it and the DenseChain (possibly of
    one layer) that reads its output (the step's inputs: the conv's, then the chain's other inputs)."""

    def __init__(self, node: Any, conv: LeanConv, chain: DenseChain, conv_inputs: int):
        self.node, self.conv, self.chain, self.conv_inputs = node, conv, chain, conv_inputs

    def run(self, *inputs: np.ndarray | None) -> np.ndarray:
        split = self.conv_inputs
        return self.chain.run(self.conv.run(*inputs[:split]), *inputs[split:])

    def specialize(self, *inputs: np.ndarray | None) -> Callable[..., np.ndarray] | Parts:
        """For one image whose convolution runs as a PooledChannelsLastPlan: the pooling into the chain's fed
        input, then the chain (inputs of any other shape or dtype through ``run``); any other shape: Parts."""
        fused = self.fused(inputs[0])
        if fused is None:
            return _composed(self.conv, self.chain, self.conv_inputs, inputs)
        lock, pool, head = fused
        x = inputs[0]
        shape, dtype, general = x.shape, x.dtype, self.run

        def run(*inputs: np.ndarray | None) -> np.ndarray:
            x = inputs[0]
            if x.shape != shape or x.dtype is not dtype:
                return general(*inputs)
            with lock:
                pool(x)
                return head()

        return run

    def fused(self, x: np.ndarray) -> tuple[Any, Callable[[np.ndarray], Any], Callable[[], np.ndarray]] | None:
        """(the lock to hold, the pooling of an input of ``x``'s shape and dtype into the chain's fed input, the
        chain's run from it), or None where that shape does not run as one image of a PooledChannelsLastPlan.
        Under the conv's lock: its buffers and the fed input (the chain takes its own lock inside, always after
        the conv's)."""
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
        through_buffers = chain.through_buffers
        return conv.lock, pool, lambda: through_buffers(fed_input, buffers)


class FedPooledHead:
    """``head(feeder(x, w, b), ...)`` for a LeanConv (the feeder) whose output only a PooledHead reads (the
    step's inputs: the feeder's, then the head's other inputs): LeNet's two convolution blocks and its dense
    layers. For one image whose feeder runs as a PhasePooledIm2colPlan, the specialized runner runs the feeder's
    plan into the head without the feeder's own NaN check (has_nan over its whole output) and checks one value
    of the head's output instead: a NaN that the phase layout's zero weights made (an infinite input) and that
    the head reads reaches every value of the head's output (the conv's products sum every channel of a
    position, the pooling and the activations keep a NaN, every dense unit sums every input), so that value is
    NaN exactly when the output may differ from the kernels'; then the input runs through the kernels."""

    def __init__(self, node: Any, feeder: LeanConv, head: PooledHead, feeder_inputs: int):
        self.node, self.feeder, self.head, self.feeder_inputs = node, feeder, head, feeder_inputs

    def run(self, *inputs: np.ndarray | None) -> np.ndarray:
        split = self.feeder_inputs
        return self.head.run(self.feeder.run(*inputs[:split]), *inputs[split:])

    def specialize(self, *inputs: np.ndarray | None) -> Callable[..., np.ndarray] | Parts:
        x, feeder = inputs[0], self.feeder
        key = (x.shape, x.dtype)
        entry, fast = feeder.plans.get(key), feeder.fast.get(key)
        fused = feed = None
        if entry is not None and fast is not None and type(entry[0]) is PhasePooledIm2colPlan:
            plan, matrix = entry
            feed = plan.single_chunk(matrix, feeder.act, feeder.pool, checked=False)
            with feeder.lock:
                fused = self.head.fused(fast(x))  # (the feeder's output, for its shape)
        if feed is None or fused is None:
            return _composed(feeder, self.head, self.feeder_inputs, inputs)
        head_lock, pool, head = fused
        feeder_lock, shape, dtype, general = feeder.lock, x.shape, x.dtype, self.run

        def run(*inputs: np.ndarray | None) -> np.ndarray:
            x = inputs[0]
            if x.shape != shape or x.dtype is not dtype:
                return general(*inputs)
            with feeder_lock, head_lock:
                pool(feed(x))
                y = head()
            first = y[0, 0]
            return general(*inputs) if first != first else y

        return run


def _composed(first: Any, second: Any, split: int, inputs: tuple) -> Parts:
    """``second.run(first.run(*inputs[:split]), *inputs[split:])`` as Parts: each kernel through what it
    specializes for these inputs (its ``run`` where nothing), the Parts of either spliced in."""
    own, rest = inputs[:split], inputs[split:]
    y = first.run(*own)
    second.run(y, *rest)  # (specialize is asked right after a run of its inputs)
    runs: list[tuple[Callable[..., Any], int]] = []
    for kernel, arguments, count in ((first, own, split), (second, (y, *rest), len(rest) + 1)):
        special = kernel.specialize(*arguments)
        if isinstance(special, Parts):
            runs += special.runs
        else:
            runs.append((special or kernel.run, count))
    return Parts(tuple(runs))


def fuse_pooled_heads(steps: list[Any], constants: dict[str, np.ndarray], graph_outputs: set[str]) -> list[Any]:
    """``steps`` with each LeanConv that absorbed a Flatten and whose only reader is a DenseChain or one dense
    layer with constant weights (as its input) made one PooledHead step with it, and that step taken into a
    LeanConv whose output only it reads (as its input), as a FedPooledHead."""
    _, readers = producers_and_readers(steps)
    dropped: set[int] = set()
    for step in steps:
        conv = step.kernel
        if type(conv) is not LeanConv or not conv.flattened or not conv.static:
            continue
        reader = _image_reader(readers, step, graph_outputs, dropped)
        if reader is None:
            continue
        chain = reader.kernel
        if type(chain) is not DenseChain:
            if not chainable(reader, constants):
                continue
            chain = DenseChain(reader.node, [chain], [[constants[n] if n else None for n in reader.inputs[1:]]])
        step.kernel = PooledHead(step.node, conv, chain, len(step.inputs))
        _absorb(step, reader)
        dropped.add(id(reader))
    steps = [s for s in steps if id(s) not in dropped]
    _, readers = producers_and_readers(steps)
    for step in steps:
        feeder = step.kernel
        if type(feeder) is not LeanConv or feeder.flattened or not feeder.static:
            continue
        reader = _image_reader(readers, step, graph_outputs, dropped)
        if reader is None or type(reader.kernel) is not PooledHead:
            continue
        step.kernel = FedPooledHead(step.node, feeder, reader.kernel, len(step.inputs))
        _absorb(step, reader)
        dropped.add(id(reader))
    return [s for s in steps if id(s) not in dropped]


def _image_reader(readers: dict, step: Any, graph_outputs: set[str], dropped: set[int]) -> Any:
    """The step that alone reads ``step``'s output, as its first input only, not yet taken in; or None."""
    reader = sole_reader(readers, step, graph_outputs)
    if reader is None or id(reader) in dropped or reader.inputs[0] != step.outputs[0] \
            or step.outputs[0] in reader.inputs[1:]:
        return None
    return reader


def _absorb(step: Any, reader: Any) -> None:
    """``step`` takes in ``reader``, which reads its output as its first input: the reader's other inputs, its
    outputs and its op types."""
    step.inputs = [*step.inputs, *reader.inputs[1:]]
    step.outputs = list(reader.outputs)
    step.fused = (*step.fused, *reader.before, reader.node.op_type, *reader.fused)
