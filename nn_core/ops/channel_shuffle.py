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

The depthwise conv's (batch-normalized) bias is a pass of its own over the channels-last output (the einsum has
no place for it), while the grouped 1x1 conv that alone reads it adds its own bias inside its epilogue anyway:
carry_depthwise_biases moves the first bias into the second's (nothing sits between the two to make them differ).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from ..graph import NodeInfo
from ..optimize import is_default_domain, producers_and_readers, sole_reader
from .batch1 import MatmulDepthwiseConv
from .caches import keep
from .conv import constant_through
from .windows import stand_in

# (N, g, C / g, H, W) -> (N, C / g, g, H, W): the shuffle's transpose
SHUFFLE_PERM = (0, 2, 1, 3, 4)
# the shuffle of a channels-last output into NCHW is copied a band of whole rows of about this many pixels at a
# time: the copy's inner loop runs along an output row, reading one value of each pixel's channel vector, and a
# band's vectors (~450 bytes each at 112 channels and up) stay in L1 until every channel has been read from them;
# over the whole image they were reread from L2 (28x28x136: 53 -> 36 us a copy, 14x14x272: 23 -> 17 us)
SHUFFLE_BAND_PIXELS = 112
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
        self.groups: dict[tuple, tuple[int, int] | None] = {}  # (groups, band pixels) per (input shape, dtype)

    def run(self, x: np.ndarray, shape: np.ndarray | None = None, final_shape: np.ndarray | None = None
            ) -> np.ndarray:
        key = (x.shape, x.dtype)
        entry = self.groups.get(key, _UNMADE)
        if entry is _UNMADE:
            groups = self._shuffle_groups(x.shape, x.dtype, shape, final_shape)
            entry = None if groups is None else (groups, SHUFFLE_BAND_PIXELS)
            keep(self.groups, key, entry)
        if entry is None:
            shuffled = self.merge.run(self.transpose.run(self.split.run(x, shape)), final_shape)
            return self.conv.run(shuffled, self.conv.weight, self.conv.bias)
        groups, band_pixels = entry
        conv = self.permuted.get(groups)
        if conv is None:
            conv = self.permuted[groups] = self._permuted_conv(groups)
        y = conv.run(x, conv.weight, conv.bias)
        batch, channels, height, width = y.shape
        shuffled = y.reshape(batch, groups, channels // groups, height, width).transpose(SHUFFLE_PERM)
        band = max(1, band_pixels // max(width, 1))  # rows
        if band >= height or y.flags.c_contiguous:
            return shuffled.reshape(y.shape)
        out = np.empty(y.shape, y.dtype)
        target = out.reshape(shuffled.shape)
        for top in range(0, height, band):
            target[..., top:top + band, :] = shuffled[..., top:top + band, :]
        return out

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


def _unpadded(node: NodeInfo) -> bool:
    auto_pad = node.attrs.get("auto_pad", "NOTSET")
    auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
    pads = node.attrs.get("pads")
    return auto_pad in ("NOTSET", "VALID", "") and (pads is None or all(int(p) == 0 for p in pads))


def carry_depthwise_biases(nodes: list[NodeInfo], constants: dict[str, np.ndarray], graph_outputs: set[str]
                           ) -> list[NodeInfo]:
    """``nodes`` with the constant bias b of each depthwise Conv (weights (C, 1, k...), group C) whose output only
    an unpadded grouped Conv B with constant weights W reads (as its image, once) moved into B's bias: B(y + b) =
    B(y) + W b, since every output of an unpadded convolution sums all its window's taps of every channel of its
    group; computed in float64 once, B's bias (made if it had none) gains sum over its group's channels and taps
    of W * b. The depthwise Conv loses its bias input. Biases that are not finite stay (0 * inf is no zero), as do
    those whose W * b leaves the float range of the weights' type; a
    one-group reader is left alone: a depthwise -> pointwise pair is a separable chain's (separable.py), which
    carries its biases its own way."""
    _, readers = producers_and_readers(nodes)
    carried: dict[int, NodeInfo] = {}
    for node in nodes:
        if node.op_type != "Conv" or not is_default_domain(node) or len(node.inputs) < 3 or not node.inputs[2] \
                or len(node.outputs) != 1 or node.outputs[0] in graph_outputs or id(node) in carried:
            continue
        weight, bias = constants.get(node.inputs[1]), constants.get(node.inputs[2])
        if weight is None or bias is None or weight.dtype.kind != "f" or bias.dtype != weight.dtype \
                or weight.ndim < 3 or weight.shape[1] != 1 or bias.shape != weight.shape[:1] \
                or int(node.attrs.get("group", 1)) != weight.shape[0] or not np.isfinite(bias).all():
            continue
        reader = sole_reader(readers, node, graph_outputs)
        if reader is None or reader.op_type != "Conv" or not is_default_domain(reader) or id(reader) in carried \
                or len(reader.inputs) < 2 or reader.inputs[0] != node.outputs[0] \
                or node.outputs[0] in reader.inputs[1:] or not _unpadded(reader):
            continue
        groups = int(reader.attrs.get("group", 1))
        next_weight = constants.get(reader.inputs[1])
        next_bias_name = reader.inputs[2] if len(reader.inputs) > 2 else ""
        next_bias = constants.get(next_bias_name) if next_bias_name else None
        channels = weight.shape[0]
        if next_weight is None or next_weight.dtype != weight.dtype or next_weight.ndim != weight.ndim \
                or groups < 2 or next_weight.shape[0] % groups or next_weight.shape[1] * groups != channels \
                or (next_bias_name and (next_bias is None or next_bias.dtype != weight.dtype
                                        or next_bias.shape != next_weight.shape[:1])):
            continue
        added = constant_through(next_weight, bias, groups)
        total = added if next_bias is None else added + next_bias.astype(np.float64)
        if not (np.abs(total) <= np.finfo(weight.dtype).max).all():  # (past the float range: the bias can't hold it)
            continue
        total = total.astype(weight.dtype)
        name = f"{reader.name}::carried_bias"
        while name in constants:
            name += "_"
        constants[name] = total
        carried[id(node)] = replace(node, inputs=node.inputs[:2])
        carried[id(reader)] = replace(reader, inputs=[*reader.inputs[:2], name])
    return [carried.get(id(node), node) for node in nodes]
