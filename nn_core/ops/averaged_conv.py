"""A convolution whose whole output one AveragePool window averages, as one matrix product (issue 10).

A small classifier may end in Conv -> AveragePool with the pool's window exactly the convolution's output
(torch_logsoftmax_mnist_norm: 64 -> 10 channels, 3x3 on 6x6, then a 4x4 average of the 4x4 result, with a Pad
of zeros between). Both are linear, so the pair is ``x . W' + b`` with W'[c, h, w, m] the mean over the output
positions of the kernel tap that reads input (c, h, w) there: one (N, C * H * W) @ (C * H * W, M) product instead
of the convolution's columns, GEMM and epilogue and the pooling's passes (~10 us -> ~2 us at batch 1). W' is
made per input shape (in float64, then rounded once), while it stays small (FOLD_ELEMENTS). Sums come in another
order: equal to the two kernels within rounding. An output that is not finite (an infinite input meets folded
weights that may cancel, as in no single tap) is made again by the two kernels, so those inputs get their values.
"""

from __future__ import annotations

import math
import threading
from typing import Any

import numpy as np

from ..optimize import producers_and_readers, sole_reader
from .caches import keep
from .conv import Conv
from .pool import AveragePool
from .shape import Pad

# the folded weights are made for an input shape while C * H * W * M is at most this (a 1 MB float32 matrix)
FOLD_ELEMENTS = 1 << 18


class AveragedConv:
    """``average_pool(pad(conv(x, w, b)))`` for a Conv kernel with constant weights, an optional Pad kernel of
    zero widths and an AveragePool kernel (the step's inputs: the Conv's, then the Pad's other inputs)."""

    def __init__(self, node: Any, conv: Conv, pad: Pad | None, pool: AveragePool, conv_inputs: int):
        self.node, self.conv, self.pad, self.pool, self.conv_inputs = node, conv, pad, pool, conv_inputs
        self.lock = threading.Lock()
        # (input shape, strides, dtype) -> (folded weights (M, C * H * W) in the input's storage order, bias (M,)
        # or None, whether that order is channels-last), or None: the two kernels
        self.folded: dict[tuple, tuple[np.ndarray, np.ndarray | None, bool] | None] = {}

    def run(self, *inputs: np.ndarray) -> np.ndarray:
        x = inputs[0]
        key = (x.shape, x.strides, x.dtype)  # (the strides: the weights follow the input's storage order)
        entry = self.folded.get(key, False)
        if entry is False:
            with self.lock:
                entry = self._fold(x)
                keep(self.folded, key, entry)
        if entry is not None:
            weights, bias, channels_last = entry
            rows = (x.transpose(0, 2, 3, 1) if channels_last else x).reshape(x.shape[0], weights.shape[1])
            # one image: a matrix-vector product (as a 1-row matrix product, BLAS took ~3x as long)
            y = weights.dot(rows[0]).reshape(1, -1) if x.shape[0] == 1 else rows.dot(weights.T)
            if bias is not None:
                y += bias
            flat = y.reshape(-1)
            if math.isfinite(flat.dot(flat)):  # (inf or NaN anywhere makes the sum of squares so)
                return y.reshape(*y.shape, 1, 1)
        return self._unfused(inputs)

    def _unfused(self, inputs: tuple[np.ndarray, ...]) -> np.ndarray:
        y = self.conv.run(*inputs[:self.conv_inputs])
        if self.pad is not None:
            y = self.pad.run(y, *inputs[self.conv_inputs:])
        return self.pool.run(y)

    def _fold(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray | None, bool] | None:
        """The folded weights and bias for ``x``'s shape, or None where the pooling is not one window over the
        whole output (or the input is not a float of the weight's type, or W' would be large)."""
        conv, pool = self.conv, self.pool
        weight = conv.weight
        if x.ndim != 4 or x.dtype != weight.dtype or x.dtype.kind != "f" or conv.group != 1:
            return None
        kernel, strides, dilations, begins, _, padded, out_sizes = conv._fit(x, weight.shape)
        if list(pool.kernel) != list(out_sizes) or any(pool.pads or ()) or any(d != 1 for d in pool.dilations or ()) \
                or pool.auto_pad not in ("NOTSET", "", None):
            return None
        channels, height, width = x.shape[1:]
        out_channels = weight.shape[0]
        if channels * height * width * out_channels > FOLD_ELEMENTS:
            return None
        conv.check_size((channels, *padded, out_channels), np.float64, "folded weights")
        summed = np.zeros((channels, *padded, out_channels))
        for i in range(kernel[0]):
            taken_rows = slice(i * dilations[0], i * dilations[0] + (out_sizes[0] - 1) * strides[0] + 1, strides[0])
            for j in range(kernel[1]):
                taken_cols = slice(j * dilations[1], j * dilations[1] + (out_sizes[1] - 1) * strides[1] + 1,
                                   strides[1])
                summed[:, taken_rows, taken_cols] += weight[:, :, i, j].T[:, None, None, :]
        interior = summed[:, begins[0]:begins[0] + height, begins[1]:begins[1] + width]  # padding reads zeros
        # an NCHW-shaped view of channels-last storage (the channels-last plans' outputs) is read as it lies
        channels_last = not x.flags.c_contiguous and x.transpose(0, 2, 3, 1).flags.c_contiguous
        if channels_last:
            interior = interior.transpose(1, 2, 0, 3)
        weights = (interior / (out_sizes[0] * out_sizes[1])).reshape(-1, out_channels).T
        bias = None if conv.bias is None else conv.bias.reshape(-1).astype(x.dtype)
        return np.ascontiguousarray(weights, x.dtype), bias, channels_last


def _zero_pad(kernel: Any) -> bool:
    """Whether a Pad kernel adds nothing: constant mode, widths known at load time and all zero."""
    return type(kernel) is Pad and kernel.mode == "constant" and kernel.pads is not None and kernel.axes is None \
        and not any(kernel.pads)


def fuse_averaged_convs(steps: list[Any], graph_outputs: set[str]) -> list[Any]:
    """``steps`` with each Conv (constant weights and bias, one group, nothing fused) whose only reader is a 2-D
    AveragePool (nothing fused, no padding, undilated) -- directly or through a Pad of zero widths -- made one
    AveragedConv step; whether the pool's window is the whole output is decided per input shape."""
    _, readers = producers_and_readers(steps)
    dropped: set[int] = set()
    for step in steps:
        conv = step.kernel
        if not isinstance(conv, Conv) or conv.act is not None or conv.pool is not None or not conv.static \
                or conv.weight is None or conv.weight.ndim != 4 or conv.group != 1 \
                or getattr(conv, "flattened", False):
            continue
        reader = sole_reader(readers, step, graph_outputs)
        pad = None
        if reader is not None and _zero_pad(reader.kernel) and reader.inputs[0] == step.outputs[0] \
                and not reader.fused and not reader.before:
            pad, reader = reader, sole_reader(readers, reader, graph_outputs)
        if reader is None or type(reader.kernel) is not AveragePool or reader.fused or reader.before \
                or reader.kernel.pre is not None or len(reader.kernel.kernel) != 2 or any(id(s) in dropped
                                                                                        for s in (reader, pad)):
            continue
        step.kernel = AveragedConv(step.node, conv, None if pad is None else pad.kernel, reader.kernel,
                                   len(step.inputs))
        step.inputs = [*step.inputs, *([] if pad is None else pad.inputs[1:])]
        step.outputs = list(reader.outputs)
        step.fused = (*step.fused, *(("Pad",) if pad is not None else ()), "AveragePool")
        dropped.update(id(s) for s in (pad, reader) if s is not None)
    return [s for s in steps if id(s) not in dropped]

