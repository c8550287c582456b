"""ShuffleNet's channel shuffle before a depthwise conv, moved after it.

The shuffle is Reshape (N, C, H, W) -> (N, g, C/g, H, W), Transpose (0, 2, 1, 3, 4), Reshape back to
(N, C, H, W): two views and a copy. On the channels-last output of the large-image fast plan's grouped 1x1 conv
that copy transposes into a C-contiguous NCHW array, and the depthwise conv reading it (ChannelsLastDepthwisePlan)
transposes it back into its channels-last buffer: slow both ways, and with a column stride the depthwise conv's
per-kernel-column gathers each transpose the whole input again. A depthwise conv works on each channel alone, so
it commutes with the shuffle: the depthwise conv with its weights (and bias) in the input's channel order,
reading the grouped conv's channels-last output as it is, then the shuffle of its output -- the same values, a
copy of the output's size instead of the input's (a quarter after a stride-2 layer), and no transposing copy into
the depthwise conv. ShuffledDepthwise is that pair as one step.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from ..optimize import is_default_domain, producers_and_readers, sole_reader
from .batch1 import MatmulDepthwiseConv
from .caches import keep
from .windows import stand_in

# (N, g, C / g, H, W) -> (N, C / g, g, H, W): the shuffle's transpose
SHUFFLE_PERM = (0, 2, 1, 3, 4)
_UNMADE = object()  # a groups entry not made yet (None is made: the steps in their own order)


class ShuffledDepthwise:
    """``conv(merge(transpose(split(x))))`` -- a channel shuffle, then a depthwise conv -- as one step's kernel,
    ``run(x, shape, final_shape)``. When the kernels' views are the shuffle of a 4-D ``x`` in g groups back to its
    own shape (asked of the Reshape kernels on arrays that allocate nothing, once per input shape), the depthwise
    conv runs first with its channels in ``x``'s order (``permuted``, a copy of ``conv`` with reordered weights)
    and its output is shuffled: output channel c' is input channel (c' % g) * (C / g) + c' // g either way.
    Otherwise the steps run as written."""

    def __init__(self, node: Any, split: Any, transpose: Any, merge: Any, conv: MatmulDepthwiseConv):
        self.node, self.split, self.transpose, self.merge, self.conv = node, split, transpose, merge, conv
        self.permuted: dict[int, MatmulDepthwiseConv] = {}  # per group count
        self.groups: dict[tuple, int | None] = {}  # per (input shape, dtype)

    def run(self, x: np.ndarray, shape: np.ndarray | None = None, final_shape: np.ndarray | None = None
            ) -> np.ndarray:
        key = (x.shape, x.dtype)
        groups = self.groups.get(key, _UNMADE)
        if groups is _UNMADE:
            groups = self._shuffle_groups(x.shape, x.dtype, shape, final_shape)
            keep(self.groups, key, groups)
        if groups is None:
            shuffled = self.merge.run(self.transpose.run(self.split.run(x, shape)), final_shape)
            return self.conv.run(shuffled, self.conv.weight, self.conv.bias)
        conv = self.permuted.get(groups)
        if conv is None:
            conv = self.permuted[groups] = self._permuted_conv(groups)
        y = conv.run(x, conv.weight, conv.bias)
        batch, channels, *sizes = y.shape
        return y.reshape(batch, groups, channels // groups, *sizes).transpose(SHUFFLE_PERM).reshape(y.shape)

    def _shuffle_groups(self, shape: tuple[int, ...], dtype: np.dtype, target: np.ndarray | None,
                        final_target: np.ndarray | None) -> int | None:
        """g when the three kernels shuffle an input of ``shape`` in g groups back to ``shape``, else None."""
        if len(shape) != 4 or self.transpose.perm != SHUFFLE_PERM:
            return None
        split = self.split.run(stand_in(shape, dtype), target)
        if split.shape[:1] + split.shape[3:] != shape[:1] + shape[2:] or split.shape[1] * split.shape[2] != shape[1]:
            return None
        shuffled = self.transpose.run(split)
        if self.merge.run(stand_in(shuffled.shape, dtype), final_target).shape != shape:
            return None
        return int(split.shape[1])

    def _permuted_conv(self, groups: int) -> MatmulDepthwiseConv:
        """``conv`` with its channel c' moved to input channel (c' % g) * (C / g) + c' // g (its activation and
        layout choice kept): the depthwise conv of the unshuffled input."""
        conv = self.conv
        channels = conv.weight.shape[0]
        order = np.arange(channels)
        source = (order % groups) * (channels // groups) + order // groups  # output channel c' reads source[c']
        inverse = np.empty_like(source)
        inverse[source] = order
        consts = list(conv.node.consts)
        consts[1] = conv.weight[inverse]
        if conv.bias is not None:
            consts[2] = conv.bias[inverse]
        permuted = MatmulDepthwiseConv(replace(conv.node, consts=consts))
        permuted.act = conv.act
        if conv.channels_last:
            permuted.prefer_channels_last()
        return permuted


def fuse_shuffled_depthwise(steps: list[Any], constants: dict[str, np.ndarray], graph_outputs: set[str]
                            ) -> list[Any]:
    """``steps`` with each channel shuffle (Reshape -> Transpose (perm 0, 2, 1, 3, 4) -> Reshape, default domain,
    nothing fused into them, both target shapes constants) whose only reader is a batch-1 depthwise conv without a
    fused pooling made one ShuffledDepthwise step with it, in the first Reshape's place; each step the sole reader
    of the one before. (ShuffledDepthwise keeps its group count per input shape: a target shape fed at run time
    could change it from one run to the next.)"""
    _, readers = producers_and_readers(steps)
    dropped: set[int] = set()

    def plain(step: Any, op_type: str, reads: Any = None) -> bool:
        return step is not None and step.node.op_type == op_type and is_default_domain(step.node) \
            and not step.fused and not step.before and len(step.outputs) == 1 and id(step) not in dropped \
            and (reads is None or step.inputs[0] == reads.outputs[0]) \
            and (op_type != "Reshape" or (len(step.inputs) > 1 and step.inputs[1] in constants))

    for step in steps:
        if not plain(step, "Reshape"):
            continue
        transpose = sole_reader(readers, step, graph_outputs)
        if not plain(transpose, "Transpose", step) or getattr(transpose.kernel, "perm", None) != SHUFFLE_PERM:
            continue
        merge = sole_reader(readers, transpose, graph_outputs)
        if not plain(merge, "Reshape", transpose):
            continue
        conv = sole_reader(readers, merge, graph_outputs)
        if conv is None or type(conv.kernel) is not MatmulDepthwiseConv or not conv.kernel.static \
                or conv.kernel.pool is not None or conv.inputs[0] != merge.outputs[0] or id(conv) in dropped:
            continue
        step.kernel = ShuffledDepthwise(step.node, step.kernel, transpose.kernel, merge.kernel, conv.kernel)
        step.inputs = [step.inputs[0], step.inputs[1] if len(step.inputs) > 1 else "",
                       merge.inputs[1] if len(merge.inputs) > 1 else ""]
        step.outputs = list(conv.outputs)
        step.fused = ("Transpose", "Reshape", *conv.before, conv.node.op_type, *conv.fused)
        dropped.update((id(transpose), id(merge), id(conv)))
    return [s for s in steps if id(s) not in dropped]
