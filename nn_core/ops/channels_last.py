"""The fast plan's convolutions in one layout: NCHW-shaped arrays over channels-last (NHWC) storage.

A convolution computed as im2col + GEMM makes its product channels-last, (position, K) @ (K, M), or NCHW with the
operands swapped; either is as fast. Handing the output out NCHW (a transposing copy of every product) and then
copying it back to channels-last for the next convolution's columns cost ImageNet-size networks at batch 1 about
a third of their convolution time. So every convolution of the fast plan keeps channels-last outputs
(Conv.prefer_channels_last), and the kernels between them get channels-last inputs: elementwise operations keep
their operands' layout by themselves (NumPy allocates results in the input's order); Concat on axis 1 too.

The pooling operators pad through an NCHW buffer, which for a channels-last input is a transposing copy and an
NCHW result (and an Add of an NCHW and a channels-last array is many times slower than of two alike): their
channels-last inputs go through conv.py's _ChannelsLastPool here, separable passes that never read the padding.
The traced and gradient plans keep the registry's kernels and NCHW outputs. So do models of small images (the
digit models: their batch-1 kernels are tuned for NCHW arrays of a few thousand values, some of them through BLAS
calls that a strided operand would send to NumPy's slow loops).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ..optimize import producers_and_readers, sole_reader
from .affine_chains import fuse_affine_chains
from .batch1 import finisher
from .caches import keep
from .conv import Conv, _ChannelsLastPool
from .pool import AveragePool, MaxPool
from .residual import fuse_residuals
from .shape import Concat

# the rewrite is for models whose image input has at least this many pixels (ImageNet's 224x224, not MNIST's 28x28
# or CIFAR's 32x32); an input of unknown size is left alone
LARGE_IMAGE = 96 * 96


def _channels_last(x: np.ndarray) -> bool:
    """Whether ``x`` (N, C, spatial...) has channels-last storage and not also NCHW (one channel or 1x1 images
    are both)."""
    return x.ndim >= 3 and not x.flags.c_contiguous and x.transpose(0, *range(2, x.ndim), 1).flags.c_contiguous


class ChannelsLastMaxPool(MaxPool):
    """MaxPool (no Indices output) whose channels-last inputs needing padding are pooled without a padded copy;
    any other input is MaxPool's."""

    def __init__(self, node):
        super().__init__(node)
        self.separable: dict[tuple, _ChannelsLastPool | None] = {}

    def run(self, x):
        if not _channels_last(x):
            return super().run(x)
        key = (x.shape, x.dtype)
        if key not in self.separable:
            with self.lock:
                plan = self.plan(x)  # (the node's checks of this shape)
            # without padding MaxPool's passes read the input itself and keep its layout
            pooled = _ChannelsLastPool(plan, x.shape) if plan.buffer is not None and plan.axis_taps else None
            keep(self.separable, key, pooled)
        pooled = self.separable[key]
        return super().run(x) if pooled is None else pooled(x)


class ChannelsLastAveragePool(AveragePool):
    """AveragePool whose channels-last float inputs needing padding are summed without a padded copy, then divided
    by the same window counts as AveragePool's; any other input is AveragePool's."""

    def __init__(self, node):
        super().__init__(node)
        self.separable: dict[tuple, tuple[_ChannelsLastPool, Any] | None] = {}

    def run(self, x):
        if not _channels_last(x) or x.dtype.kind != "f":
            return super().run(x)
        key = (x.shape, x.dtype)
        if key not in self.separable:
            with self.lock:
                plan = self.plan(x)
            entry = None
            if plan.buffer is not None and plan.axis_taps:
                divisor = plan.window_counts(self.include_pad)  # a float, or per output position
                if not isinstance(divisor, float):
                    divisor = divisor.astype(x.dtype)
                entry = (_ChannelsLastPool(plan, x.shape, np.add), divisor)
            keep(self.separable, key, entry)
        entry = self.separable[key]
        if entry is None:
            return super().run(x)
        summed, divisor = entry
        y = summed(x)
        if isinstance(divisor, float):
            y *= y.dtype.type(1.0 / divisor)
        else:
            y /= divisor
        return y


class PooledConcat:
    """Concat on the channel axis -> MaxPool as one step: each part pooled, then the pooled parts concatenated (a
    maximum over a window of one channel's values does not see the other channels). SqueezeNet's Fire modules
    concatenate two 55x55x64 maps only to pool them: the full-size channels-last concatenation (a copy with an
    inner loop of one pixel's channels, to a 1.5 MB array read back by the pooling) becomes one of the 4x smaller
    pooled parts. Parts that are not same-sized images go through the two kernels in the graph's order (the
    Concat's checks and error first)."""

    def __init__(self, concat: Concat, pool: ChannelsLastMaxPool):
        self.node, self.concat, self.pool = concat.node, concat, pool

    def run(self, *inputs):
        parts = [x for x in inputs if x is not None]
        first = parts[0] if parts else None
        if first is None or first.ndim < 3 or any(x.shape[0] != first.shape[0] or x.shape[2:] != first.shape[2:]
                                                  or x.dtype != first.dtype for x in parts):
            return self.pool.run(self.concat.run(*inputs))
        return self.concat.run(*[self.pool.run(x) for x in parts])


def _concat_into_reader(steps: list[Any], graph_outputs: set[str], merge: Callable[[Any, Any], bool]) -> list[Any]:
    """``steps`` with each Concat on axis 1 and the step that alone reads its output made one step in the
    Concat's place (the reader's outputs, its ops recorded as fused) where ``merge(concat, reader)`` sets that
    step's kernel (and inputs) and returns True."""
    _, readers = producers_and_readers(steps)
    dropped: set[int] = set()
    for step in steps:
        if type(step.kernel) is not Concat or step.kernel.axis != 1:
            continue
        user = sole_reader(readers, step, graph_outputs)
        if user is None or len(user.outputs) != 1 or not merge(step, user):
            continue
        step.outputs = list(user.outputs)
        step.fused = (*step.fused, user.node.op_type, *user.fused)
        dropped.add(id(user))
    return [s for s in steps if id(s) not in dropped]


def _pool_concats(steps: list[Any], graph_outputs: set[str]) -> list[Any]:
    """``steps`` with each Concat on axis 1 whose output only a ChannelsLastMaxPool (no Indices) reads made one
    PooledConcat step."""
    def merge(concat: Any, user: Any) -> bool:
        if type(user.kernel) is not ChannelsLastMaxPool:
            return False
        concat.kernel = PooledConcat(concat.kernel, user.kernel)
        return True

    return _concat_into_reader(steps, graph_outputs, merge)


class ConcatPointwise:
    """Concat on the channel axis -> 1x1 convolution as one step, without the concatenation: the convolution of
    the concatenated channels is the sum of each part's rows times its block of the weights, so each part is
    multiplied where it is (channels-last rows, a view) and the products summed into the output, whose bias and
    activation are added after. SqueezeNet's Fire modules concatenate their two expand convolutions' 64-256
    channels only for the next squeeze convolution to project them to 16-64: the concatenation copied them all
    (its inner loop one pixel's channels); the sums are over the 4x smaller output. Parts that are not
    channels-last float images of one size and the weights' type, or whose channels do not add up to the
    weights', go through the two kernels in the graph's order."""

    def __init__(self, concat: Concat, conv: Conv, conv_inputs: int):
        """``conv_inputs``: how many inputs of the step, at its end, are the convolution's weight and bias."""
        self.node, self.concat, self.conv, self.conv_inputs = concat.node, concat, conv, conv_inputs
        self.blocks: dict[tuple, tuple[list[np.ndarray], Any]] = {}  # per (part channels, shape, dtype)

    def run(self, *inputs):
        parts = inputs[:len(inputs) - self.conv_inputs]
        present = [x for x in parts if x is not None]
        first = present[0] if present else None
        weight = self.conv.weight
        if first is None or first.ndim != 4 or first.dtype != weight.dtype or first.dtype.kind != "f" \
                or first.dtype.itemsize < 4 \
                or sum(x.shape[1] for x in present) != weight.shape[1] \
                or any(x.ndim != 4 or x.shape[0] != first.shape[0] or x.shape[2:] != first.shape[2:]
                       or x.dtype != first.dtype or not _channels_last(x) for x in present):
            return self.conv.run(self.concat.run(*parts), *inputs[len(parts):])
        batch, _, height, width = first.shape
        key = (tuple(x.shape[1] for x in present), batch, height, width, first.dtype)
        entry = self.blocks.get(key)
        if entry is None:
            matrix = weight.reshape(weight.shape[0], -1).T  # (C, M)
            starts = np.cumsum([0, *key[0]])
            entry = ([np.ascontiguousarray(matrix[a:b]) for a, b in zip(starts[:-1], starts[1:], strict=True)],
                     finisher((batch * height * width, weight.shape[0]), weight.dtype, self.conv.bias,
                              self.conv.act))
            keep(self.blocks, key, entry)
        blocks, finish = entry
        rows = [x.transpose(0, 2, 3, 1).reshape(-1, x.shape[1]) for x in present]
        y = np.matmul(rows[0], blocks[0])
        for part, block in zip(rows[1:], blocks[1:], strict=True):
            y += np.matmul(part, block)
        finish(y)
        return y.reshape(batch, height, width, -1).transpose(0, 3, 1, 2)


def _concat_pointwise(steps: list[Any], graph_outputs: set[str]) -> list[Any]:
    """``steps`` with each Concat on axis 1 whose output only a 1x1, stride-1, unpadded convolution of constant
    weights (one group, no fused pooling) reads, as its image, made one ConcatPointwise step."""
    def merge(concat: Any, user: Any) -> bool:
        if user.inputs[0] != concat.outputs[0] or user.inputs.count(concat.outputs[0]) != 1 \
                or not _pointwise(user.kernel) or user.kernel.group != 1:
            return False
        concat.kernel = ConcatPointwise(concat.kernel, user.kernel, len(user.inputs) - 1)
        concat.inputs = [*concat.inputs, *user.inputs[1:]]
        return True

    return _concat_into_reader(steps, graph_outputs, merge)


class PooledPointwise:
    """AveragePool -> 1x1 convolution as one step, the convolution first: both are linear per pixel and the
    pooling's weights sum to one (window counts over the input only, or no padding), so the average of the
    convolved pixels (bias included) is the convolution of the averaged ones, up to float rounding; the fused
    activation (ReLU after a folded BatchNormalization) then runs on the pooled output. Inception's pool branches
    average 192-1024 channels only to project them to 32-128: the pooling's passes run over 4-8x fewer."""

    def __init__(self, pool: ChannelsLastAveragePool, conv: Conv):
        self.node, self.pool, self.act = pool.node, pool, conv.act
        # the convolution without its activation: a kernel built afresh from the node (the same weights and checks;
        # Conv.run_activated with another activation than the kernel's own takes the general path every call,
        # 1.5-2x the fast runner's time on these layers)
        self.linear = type(conv)(conv.node)
        if conv.channels_last:
            self.linear.prefer_channels_last()

    def run(self, x, w, b=None):
        y = self.pool.run(self.linear.run(x, w, b))
        if self.act is not None:
            self.act(y)
        return y


def _pointwise(conv: Any) -> bool:
    """Whether ``conv`` is a 1x1, stride-1, unpadded convolution of constant weights without a fused pooling (or
    Flatten)."""
    if not isinstance(conv, Conv) or not conv.static or conv.pool is not None or getattr(conv, "flattened", False) \
            or conv.weight.ndim < 3 or any(k != 1 for k in conv.weight.shape[2:]):
        return False
    geometry = conv.geometry  # (any auto_pad pads a 1x1 stride-1 window by nothing)
    return not any(s != 1 for s in geometry.strides_attr or ()) and not any(geometry.pads_attr or ())


def _pointwise_first(pool: Any, conv: Any) -> bool:
    """Whether ``conv`` (reading ``pool``'s output) is _pointwise and ``pool`` an average whose weights sum to
    one."""
    if not _pointwise(conv):
        return False
    padded = any(pool.geometry.pads_attr or ()) or pool.geometry.auto_pad not in ("NOTSET", "VALID") \
        or pool.ceil_mode
    return not (pool.include_pad and padded)


def _pool_pointwise_first(pool: Any, conv: Any) -> bool:
    """Whether the convolution reading an AveragePool's output is better run first (_pointwise_first holds, and
    the pooling keeps the image size, so the convolution's work is the same, and it has fewer output channels
    than input ones, which the pooling then averages)."""
    return _pointwise_first(pool, conv) and not any(s != 1 for s in pool.geometry.strides_attr or ()) \
        and conv.weight.shape[0] < conv.weight.shape[1] * conv.group


class PointwiseOfPooled:
    """1x1 convolution (no fused activation) -> strided AveragePool as one step, the pooling first: the same
    linearity as PooledPointwise's, the other way round. DenseNet's transitions convolve a whole 56x56 (28x28,
    14x14) map, 205 MFLOP each, only to average it 2x2 by 2: the convolution of the pooled map is 4x smaller."""

    def __init__(self, conv: Conv, pool: ChannelsLastAveragePool):
        self.node, self.conv, self.pool = conv.node, conv, pool

    def run(self, x, w, b=None):
        return self.conv.run(self.pool.run(x), w, b)


def _convolve_before_pooling(steps: list[Any], graph_outputs: set[str]) -> list[Any]:
    """``steps`` with each ChannelsLastAveragePool whose output only a 1x1 convolution reads, or that only reads
    one's, made one step that runs the two in the cheaper order (PooledPointwise: the convolution first, at the
    pooling's place, the convolution's other inputs being constants; PointwiseOfPooled: the pooling first)."""
    _, readers = producers_and_readers(steps)
    dropped: set[int] = set()
    for step in steps:
        if id(step) in dropped or len(step.outputs) != 1:
            continue
        user = sole_reader(readers, step, graph_outputs)
        if user is None or len(user.outputs) != 1 or user.inputs[0] != step.outputs[0] \
                or user.inputs.count(step.outputs[0]) != 1:
            continue
        if type(step.kernel) is ChannelsLastAveragePool and _pool_pointwise_first(step.kernel, user.kernel):
            step.kernel = PooledPointwise(step.kernel, user.kernel)
            step.inputs = [step.inputs[0], *user.inputs[1:]]
        elif type(user.kernel) is ChannelsLastAveragePool and _pointwise_first(user.kernel, step.kernel) \
                and step.kernel.act is None and any(s > 1 for s in user.kernel.geometry.strides_attr or ()):
            step.kernel = PointwiseOfPooled(step.kernel, user.kernel)
        else:
            continue
        step.outputs = list(user.outputs)
        step.fused = (*step.fused, user.node.op_type, *user.fused)
        dropped.add(id(user))
    return [s for s in steps if id(s) not in dropped]


def _large_images(graph: Any) -> bool:
    """Whether some input of ``graph`` is a batch of images (rank 4, or 5 for volumes) of LARGE_IMAGE pixels."""
    for value in graph.inputs:
        shape = value.shape
        if shape and len(shape) in (4, 5) and all(isinstance(n, int) for n in shape[2:]) \
                and int(np.prod(shape[2:])) >= LARGE_IMAGE:
            return True
    return False


def prefer_channels_last(steps: list[Any], graph: Any) -> list[Any]:
    """The fast plan's steps of a model of large images (``graph``'s inputs) with every convolution handing out
    channels-last outputs and the poolings taking channels-last inputs without a padded NCHW copy (kernels built
    afresh from the same node: the same checks), each BatchNormalization -> per-channel Mul/Add -> ReLU chain
    made one step (affine_chains.py), each residual sum (and ReLU) taken into the convolution before it
    (residual.py), each channel Concat that only a MaxPool reads pooled part by part (PooledConcat) and each one
    that only a 1x1 convolution reads left out (ConcatPointwise), and each AveragePool next to a 1x1 convolution
    run in the cheaper order with it (PooledPointwise, PointwiseOfPooled)."""
    if not _large_images(graph):
        return steps
    for step in steps:
        kernel = step.kernel
        if isinstance(kernel, Conv):
            kernel.prefer_channels_last()
        elif type(kernel) is MaxPool and not kernel.want_indices:
            step.kernel = ChannelsLastMaxPool(kernel.node)
        elif type(kernel) is AveragePool:
            step.kernel = ChannelsLastAveragePool(kernel.node)
    outputs = {value.name for value in graph.outputs}
    steps = _pool_concats(fuse_residuals(fuse_affine_chains(steps, outputs), outputs), outputs)
    return _concat_pointwise(_convolve_before_pooling(steps, outputs), outputs)
