"""Convolution kernels (Conv, ConvTranspose), the padding arithmetic shared with pooling, the activations that
kernels absorb (also used by Gemm/MatMul) and the load-time folding of a BatchNormalization into a convolution.

Speed notes. A convolution is an im2col (copy every receptive field into a column) and one BLAS matmul per chunk
of the batch. What keeps it close to onnxruntime on small CNNs:

* everything that depends only on the weights or the input *shape* is done once: a per-input-shape plan holds
  a zero-padded scratch image (its border is written once), an ``as_strided`` window view over it, the column
  buffer, and the weight matrix already laid out for that plan's matmul, the bias as one more column (the
  columns get a constant row of ones) so the matmul adds it for free;
* the batch goes through in chunks of about CHUNK_BYTES of columns, so the copy and the matmul stay in cache;
* the column layout is picked per shape: channels-last columns when a kernel row spans many contiguous values
  (kernel width * channels), else NCHW columns, taken over the *full padded width* for stride-1 convolutions
  when that pays (each column row is then one contiguous run; the few extra output columns are computed and
  the output returned as a strided view without them); 1x1 convolutions are one plain matmul and depthwise
  ones a sum of shifted, scaled copies;
* a fused activation runs on the chunk in cache, and a fused MaxPool (``fuse_pool``) pools the chunk before
  anything is written out;
* the fast plan of a model of large images (ops/channels_last.py) asks for channels-last outputs
  (``prefer_channels_last``): the GEMM's (positions, M) product is then the output's storage, handed out
  NCHW-shaped, and the next convolution reads it with contiguous copies. In that mode one large image's columns
  go in blocks of output rows (BLOCK_BYTES), convolutions with no more outputs than inputs take columns along the
  kernel width only, one matmul per kernel row (_RowShiftPlan), and grouped 1x1 convolutions read their input
  in place (_GroupedPointwisePlan).
"""

from __future__ import annotations

import functools
import math
import threading
from collections.abc import Callable

import numpy as np

from .caches import keep
from .conv_grad import ConvGradPlan, ConvInputGradPlan, conv_transpose_backward
from .registry import NodeSpec, Op, register
from .windows import MAX_TAPS, Geometry, check_fits, check_taps, checked_windows, effective_steps, int_attr, ints_attr

# the column buffer of one chunk of the batch is kept around this size, so the im2col copy and the matmul that
# reads it back stay in the L2 cache
CHUNK_BYTES = 1024 * 1024
# ... and one image whose columns are larger goes through the channels-last plan in blocks of output rows of about
# this size (measured at batch 1: a 224x224 stem's 7.4 MB of columns, or 56x56x64 -> 3x3 conv's 7.2 MB, 10-15%
# faster in blocks of 0.5 MB, the GEMMs as fast)
BLOCK_BYTES = 512 * 1024
# ... unless its weight matrix is larger than this: every block's GEMM packs the whole matrix again (measured at
# batch 1, whole against blocks: ResNet-50's strided 3x3 convolutions, 128 -> 128 at 56x56 to 512 -> 512 at 14x14,
# 0.6-2.4 MB of weights, 12-24% faster whole; 192 -> 256 at 14x14 20%; up to 0.25 MB, as fast or faster in blocks)
BLOCKED_WEIGHT_BYTES = BLOCK_BYTES // 2
# a max-pooled channels-last product larger than this (about a core's L2 cache) is made and pooled in bands of
# about BLOCK_BYTES (_BandedPool): the SqueezeNet stem's 3 MB product, 12% of the layer's time; ShuffleNet's
# 1.2 MB one, which stays in cache, lost 2-4%
BANDED_POOL_BYTES = 2 * 1024 * 1024


# ... with weights of up to this when a fused MaxPool reads a product larger than BANDED_POOL_BYTES: the blocks
# are then pooled band by band while in cache (Inception-v2's 3x3 64 -> 192 at 56x56, 443 KB of weights, 2.4 MB
# of product: the whole model ~2% faster than through one GEMM and the product pooled whole)
BANDED_WEIGHT_BYTES = BLOCK_BYTES


def _blocks_pay(column_bytes: int, weight_bytes: int, pooled_bytes: int = 0) -> bool:
    """Whether one image's im2col columns and matmul go in blocks of output rows (BLOCK_BYTES); ``pooled_bytes``:
    the size of the product when a fused MaxPool reads it (0 without one)."""
    limit = BANDED_WEIGHT_BYTES if pooled_bytes > BANDED_POOL_BYTES else BLOCKED_WEIGHT_BYTES
    return column_bytes > BLOCK_BYTES and weight_bytes <= limit


# an NCHW input of at most this many channels is copied into a channels-last scratch channel by channel
_FEW_CHANNELS = 4

# ----------------------------------------------------------------------------------------------------------------
# padding / output size arithmetic (shared with pool.py)


def resolve_pads(
    auto_pad: str, in_sizes: tuple[int, ...], kernel: list[int], strides: list[int], dilations: list[int],
    pads: list[int] | None,
) -> tuple[list[int], list[int]]:
    """The explicit (begin, end) padding of each spatial axis for Conv and the pooling operators."""
    rank = len(in_sizes)
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        begins, ends = [], []
        for size, k, s, d in zip(in_sizes, kernel, strides, dilations, strict=True):
            out = -(-size // s)
            total = max(0, (out - 1) * s + (k - 1) * d + 1 - size)
            small, large = total // 2, total - total // 2
            # SAME_UPPER puts the odd extra padding at the end, SAME_LOWER at the beginning
            begins.append(small if auto_pad == "SAME_UPPER" else large)
            ends.append(large if auto_pad == "SAME_UPPER" else small)
        return begins, ends
    if auto_pad == "VALID" or not pads:
        return [0] * rank, [0] * rank
    return list(pads[:rank]), list(pads[rank:2 * rank])


def as_int_list(value: object, rank: int, default: int) -> list[int]:
    if value is None:
        return [default] * rank
    return [int(v) for v in value]  # type: ignore[union-attr]


# ----------------------------------------------------------------------------------------------------------------
# fused activations (also used by Gemm and MatMul in nn.py)


class _Relu:
    def __init__(self):
        self.zeros: dict[tuple, np.ndarray] = {}
        # the 0-d zero of small outputs, kept (making a scalar of out's type each call cost ~0.1 us of a 1 us pass)
        self.zero = np.zeros((), np.float32)

    def into(self, src: np.ndarray, out: np.ndarray) -> None:
        if src is out and out.size >= 4096 and out.flags.c_contiguous:
            # NumPy only uses its SIMD loop for maximum with two same-shape contiguous operands (4x faster than
            # against a scalar 0), so keep a zero array per shape
            key = (out.shape, out.dtype)
            zeros = self.zeros.get(key)
            if zeros is None:
                if len(self.zeros) > 8:
                    self.zeros.clear()
                zeros = self.zeros[key] = np.zeros(out.shape, out.dtype)
            np.maximum(out, zeros, out=out)
        else:
            zero = self.zero
            if zero.dtype is not out.dtype:  # (a 0-d zero of another type would promote)
                zero = self.zero = np.zeros((), out.dtype)
            np.maximum(src, zero, out=out)


class _LeakyRelu:
    def __init__(self, alpha: float):
        self.alpha = alpha

    def into(self, src: np.ndarray, out: np.ndarray) -> None:
        scaled = src * out.dtype.type(self.alpha)
        if 0.0 <= self.alpha <= 1.0:  # then leaky_relu(y) == max(y, alpha * y)
            np.maximum(src, scaled, out=out)
        else:
            np.copyto(out, src)
            np.copyto(out, scaled, where=src < 0)


class _Clip:
    def __init__(self, low: float | None, high: float | None):
        self.low = -np.inf if low is None else float(low)
        self.high = np.inf if high is None else float(high)

        self.bounds: tuple[np.dtype, np.ndarray, np.ndarray] | None = None

    def into(self, src: np.ndarray, out: np.ndarray) -> None:
        bounds = self.bounds
        if bounds is None or bounds[0] is not out.dtype:
            kind = out.dtype.kind
            low = self.low if kind == "f" or np.isfinite(self.low) else np.iinfo(out.dtype).min
            high = self.high if kind == "f" or np.isfinite(self.high) else np.iinfo(out.dtype).max
            bounds = self.bounds = (out.dtype, np.array(low, out.dtype), np.array(high, out.dtype))
        # np.clip's own checks and dispatch took twice as long as these two passes; the same values, NaN
        # included (both propagate it), and min(max(x, low), high) is what np.clip computes when low > high
        np.maximum(src, bounds[1], out=out)
        np.minimum(out, bounds[2], out=out)


class Activation:
    """Elementwise activations absorbed by the kernel producing their input, applied in order.

    ``act(y)`` works in place; ``act.into(src, out)`` reads ``src`` and writes ``out``, which lets a kernel fold
    the activation into a copy it has to make anyway."""

    def __init__(self, steps: list):
        self.steps = steps
        # non-decreasing activations commute with max pooling
        self.monotonic = all(getattr(step, "alpha", 0.0) >= 0 for step in steps)

    def __call__(self, y: np.ndarray) -> None:
        for step in self.steps:
            step.into(y, y)

    def into(self, src: np.ndarray, out: np.ndarray) -> None:
        self.steps[0].into(src, out)
        for step in self.steps[1:]:
            step.into(out, out)


def make_activation(kind: str, params: dict[str, float]) -> Activation | None:
    """The activation for ``kind`` (relu, leaky_relu, clip), or None for a kind kernels cannot absorb."""
    if kind == "relu":
        return Activation([_Relu()])
    if kind == "leaky_relu":
        return Activation([_LeakyRelu(float(params.get("alpha", 0.01)))])
    if kind == "clip":
        return Activation([_Clip(params.get("min"), params.get("max"))])
    return None


def chain_activation(first: Activation | None, second: Activation) -> Activation:
    return second if first is None else Activation(first.steps + second.steps)


class FusableOp(Op):
    """A kernel that can absorb following elementwise activations, applied to its fresh output (``self.act``)."""

    act: Activation | None = None

    def fuse_activation(self, kind: str, params: dict[str, float]) -> bool:
        act = make_activation(kind, params)
        if act is None:
            return False
        self.act = chain_activation(self.act, act)
        return True


# ----------------------------------------------------------------------------------------------------------------
# BatchNormalization folding (called by the graph optimizer on constant arrays)


def fold_batchnorm_into_conv(
    weight: np.ndarray, bias: np.ndarray | None, scale: np.ndarray, b: np.ndarray, mean: np.ndarray,
    var: np.ndarray, epsilon: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Weights and bias of the one convolution equal to ``Conv(weight, bias)`` followed by an inference
    BatchNormalization(scale, b, mean, var, epsilon) over its output channels (axis 0 of ``weight``)."""
    factor = scale.astype(np.float64) / np.sqrt(var.astype(np.float64) + epsilon)
    shape = (-1,) + (1,) * (weight.ndim - 1)
    # float32 weights are scaled in float32 by the factor rounded once (within an ulp of the float64 product):
    # a float64 copy of every weight was most of the folding's time, ~0.2 s of ResNet-50's load. Only while
    # every factor is 0 or a normal float32: rounded to inf or a subnormal, it would lose what the float64
    # product keeps (a huge scale times a tiny weight is finite)
    work = np.float64
    if weight.dtype == np.float32:
        magnitude = np.abs(factor)
        if ((magnitude == 0) | ((magnitude >= np.finfo(np.float32).tiny)
                                & (magnitude <= np.finfo(np.float32).max))).all():
            work = np.float32
    new_weight = (weight.astype(work, copy=False) * factor.astype(work).reshape(shape)).astype(weight.dtype,
                                                                                              copy=False)
    old_bias = np.zeros(weight.shape[0]) if bias is None else bias.astype(np.float64)
    new_bias = (old_bias - mean.astype(np.float64)) * factor + b.astype(np.float64)
    return new_weight, new_bias.astype(weight.dtype)


def constant_through(weight: np.ndarray, constant: np.ndarray, groups: int = 1) -> np.ndarray:
    """What a per-channel ``constant`` added to the image of an unpadded convolution of ``weight`` (M, C / groups,
    k...) adds to each output channel, in float64: every output sums each channel of its group over all its taps,
    so it is ``constant`` times the weights summed over the taps, group by group. (The bias-carrying passes move
    a layer's bias into the unpadded convolution that reads it with this.)"""
    taps_summed = weight.astype(np.float64).reshape(*weight.shape[:2], -1).sum(axis=2)  # (M, C / g)
    return np.matmul(taps_summed.reshape(groups, -1, weight.shape[1]),
                     constant.astype(np.float64).reshape(groups, -1, 1)).reshape(-1)


# ----------------------------------------------------------------------------------------------------------------
# Conv


def conv_out_sizes(padded: list[int], kernel: list[int], dilations: list[int], strides: list[int]) -> list[int]:
    return [(p - (k - 1) * d - 1) // s + 1 for p, k, d, s in zip(padded, kernel, dilations, strides, strict=True)]


def padded_and_out_sizes(sizes, kernel, strides, dilations, begins, ends) -> tuple[list[int], list[int]]:
    """The padded input sizes and the output sizes of a convolution's spatial axes; an empty output is a
    ValueError (the plans that call this are made per input shape, after the node's own checks)."""
    padded = [s + b + e for s, b, e in zip(sizes, begins, ends, strict=True)]
    out_sizes = conv_out_sizes(padded, kernel, dilations, strides)
    if min(out_sizes) <= 0:
        raise ValueError(f"output size {out_sizes} is empty")
    return padded, out_sizes


def _row_major_strides(shape: list[int]) -> list[int]:
    strides, step = [], 1
    for size in reversed(shape):
        strides.append(step)
        step *= size
    return strides[::-1]


class _PaddedScratch:
    """A zero-padded copy of ``rows`` images of the input, reused across calls: only the interior is written, so
    the padding stays zero. ``slack`` extra elements at the end let the full-width windows run past the last
    image without leaving the buffer."""

    def __init__(self, rows: int, channels: int, sizes: tuple[int, ...], begins: list[int], ends: list[int],
                 dtype: np.dtype, slack: int):
        self.padded = [s + b + e for s, b, e in zip(sizes, begins, ends, strict=True)]
        self.channel_elems = math.prod(self.padded)
        self.flat = np.zeros(rows * channels * self.channel_elems + slack, dtype=dtype)
        block = self.flat[: rows * channels * self.channel_elems].reshape(rows, channels, *self.padded)
        window = tuple(slice(b, b + s) for b, s in zip(begins, sizes, strict=True))
        self.interior = block[(slice(None), slice(None)) + window]


def grouped_matrix(weight: np.ndarray, bias: np.ndarray | None, groups: int) -> np.ndarray:
    """(M, C/g, k...) -> (g, M/g, C/g * prod(k) [+ 1 bias column]): the left operand of one batched matmul over
    all groups, in the (channel, kernel...) order of NCHW columns."""
    matrix = weight.reshape(groups, weight.shape[0] // groups, -1)
    if bias is not None:
        matrix = np.concatenate([matrix, bias.astype(weight.dtype, copy=False).reshape(groups, -1, 1)], axis=2)
    return np.ascontiguousarray(matrix)


class _ChannelsLastPlan:
    """Conv of one input shape, one group, through channels-last (NHWC) columns.

    Each chunk of images is copied once into a padded NHWC scratch; a column row (one output position) is then
    made of kernel-height runs of kernel-width * channels contiguous values, much longer runs than the NCHW
    layout's output-width ones, so the im2col copy is cheap for convolutions with many input channels. The
    matmul (positions, K) @ (K, M) is also a single large GEMM per chunk; its (positions, M) result is
    transposed into the NCHW output while the activation is applied -- or, with ``channels_last`` (the fast
    plan's convolutions, see Conv.channels_last), it *is* the output's storage: the output is handed back
    NCHW-shaped over channels-last memory, no transposing copy is made, the activation runs in place over
    contiguous memory, and a next convolution of this kind (or a channels-last pointwise one) reads it with
    contiguous copies. A 1x1 convolution with strides and no padding (a ResNet shortcut) takes its columns
    straight from the input, one strided copy, without the padded scratch.
    """

    def __init__(self, x_shape: tuple[int, ...], dtype: np.dtype, out_channels: int, kernel: list[int],
                 strides: list[int], dilations: list[int], begins: list[int], ends: list[int], has_bias: bool,
                 channels_last: bool = False, pooled: bool = False):
        batch, channels, *sizes = x_shape
        self.channels_last = channels_last
        rank = len(sizes)
        padded, self.out_sizes = padded_and_out_sizes(sizes, kernel, strides, dilations, begins, ends)
        self.out_channels = out_channels
        positions = math.prod(self.out_sizes)
        k_total = channels * math.prod(kernel)
        width = k_total + has_bias
        item = dtype.itemsize
        self.rows = rows = max(1, min(batch, CHUNK_BYTES // (positions * width * item)))
        self.positions = positions
        self.to_channels_last = (0, *range(2, rank + 2), 1)
        self.to_nchw = (0, rank + 1, *range(1, rank + 1))
        self.nhwc_shape = (*self.out_sizes, out_channels)
        self.cols_matrix = np.empty((rows * positions, width), dtype)
        self.has_bias = has_bias
        if has_bias:
            self.cols_matrix[:, k_total] = 1
        # a strided 1x1 convolution without padding: its columns are the input's pixels at the strides
        self.subsample: tuple | None = None
        # (a subclass lays out its own windows over the padded scratch, so it always gets one)
        if type(self) is _ChannelsLastPlan and all(k == 1 for k in kernel) and not any(begins) and not any(ends):
            self.subsample = (slice(None),) + tuple(slice(0, (o - 1) * s + 1, s)
                                                    for o, s in zip(self.out_sizes, strides, strict=True))
            self.cols = self.cols_matrix[:, :k_total].reshape(rows, *self.out_sizes, channels)
            self.tap_shape = [channels]
        else:
            self._padded_windows(x_shape, dtype, kernel, strides, dilations, begins, padded)
        # output rows (first spatial axis) per block of one image's im2col copy and matmul
        self.block_rows = self.out_sizes[0]
        if rows == 1 and self.subsample is None \
                and _blocks_pay(positions * width * item, width * out_channels * item,
                                pooled * positions * out_channels * item):
            self.block_rows = max(1, BLOCK_BYTES * self.out_sizes[0] // (positions * width * item))
        self.product = np.empty((rows * positions, out_channels), dtype)  # the pooled path's chunk
        self.product_nchw = self.product.reshape(rows, *self.nhwc_shape).transpose(self.to_nchw)

    def _padded_windows(self, x_shape: tuple[int, ...], dtype: np.dtype, kernel: list[int], strides: list[int],
                        dilations: list[int], begins: list[int], padded: list[int]) -> None:
        """The padded NHWC scratch (``interior`` is where the input goes), its window view and the column
        buffer split the same way (``cols``), for the im2col copy."""
        batch, channels, *sizes = x_shape
        rows, item, width = self.rows, dtype.itemsize, self.cols_matrix.shape[1]
        self.scratch = np.zeros((rows, *padded, channels), dtype)
        self.interior = self.scratch[(slice(None),) + tuple(slice(b, b + n) for b, n in
                                                            zip(begins, sizes, strict=True))]
        elem = [e * channels for e in _row_major_strides(padded)]  # element strides of the padded NHWC axes
        # window axes: image, output position..., kernel offset..., channel; the last kernel axis and the
        # channel axis form one contiguous run when the last dilation is 1
        tap_shape, tap_strides = list(kernel), [d * e for d, e in zip(dilations, elem, strict=True)]
        if dilations[-1] == 1:
            tap_shape[-1] *= channels
            tap_strides[-1] = 1
        else:
            tap_shape.append(channels)
            tap_strides.append(1)
        shape = (rows, *self.out_sizes, *tap_shape)
        steps = (math.prod(padded) * channels, *(s * e for s, e in zip(strides, elem, strict=True)), *tap_strides)
        self.windows = checked_windows(self.scratch, shape, tuple(v * item for v in steps))
        self.tap_shape = tap_shape
        col_steps = (self.positions * width, *(v * width for v in _row_major_strides(self.out_sizes)),
                     *_row_major_strides(tap_shape))
        self.cols = checked_windows(self.cols_matrix, shape, tuple(v * item for v in col_steps), writeable=True)

    @staticmethod
    def prepare(weight: np.ndarray, bias: np.ndarray | None, groups: int = 1) -> np.ndarray:
        """(M, C, k...) -> (k... * C [+ 1 bias row], M), in the (kernel..., channel) order of NHWC columns."""
        rank = weight.ndim - 2
        matrix = weight.transpose(*range(2, rank + 2), 1, 0).reshape(-1, weight.shape[0])
        if bias is not None:
            matrix = np.concatenate([matrix, bias.astype(weight.dtype, copy=False).reshape(1, -1)], axis=0)
        return np.ascontiguousarray(matrix)

    def _load(self, interior: np.ndarray, source: np.ndarray) -> None:
        """Copy ``source`` (NCHW-shaped, any storage) into ``interior`` (channels-last). An NCHW image of a few
        channels (a network's RGB input) goes channel by channel, each contiguous plane into a strided one:
        NumPy's transposing copy runs its innermost loop over the 3 channels, ~3x slower (224x224: 133 -> 38 us)."""
        if source.flags.c_contiguous and source.shape[1] <= _FEW_CHANNELS:
            for channel in range(source.shape[1]):
                interior[..., channel] = source[:, channel]
        else:
            interior[...] = source.transpose(self.to_channels_last)

    def _fill(self, source: np.ndarray, count: int) -> None:
        """Copy the columns of ``count`` images (``source``, NCHW-shaped, any storage) into the column buffer."""
        if self.subsample is not None:
            np.copyto(self.cols[:count], source.transpose(self.to_channels_last)[self.subsample])
        else:
            self._load(self.interior[:count], source)
            np.copyto(self.cols[:count], self.windows[:count])

    def columns(self, x: np.ndarray, start: int, count: int) -> np.ndarray:
        """The column matrix of images ``start:start + count`` (at most ``rows``), in the chunk buffer."""
        self._fill(x if count == x.shape[0] else x[start:start + count], count)
        return self.cols_matrix[: count * self.positions]

    def _multiply(self, source: np.ndarray, count: int, matrix: np.ndarray, target: np.ndarray) -> None:
        """The product of ``count`` images (``source``) with ``matrix`` into ``target``, (count * positions, M):
        block by block of ``block_rows`` output rows when one image's columns are larger than BLOCK_BYTES, so
        that the matmul reads each block of columns back from cache."""
        rows = self.block_rows
        if rows == self.out_sizes[0]:
            self._fill(source, count)
            np.matmul(self.cols_matrix[: count * self.positions], matrix, out=target)
            return
        self._load(self.interior[:1], source)  # (blocks only with one image a chunk)
        self._product_rows(matrix, [(self.windows, self.cols)], 0, self.out_sizes[0], target)

    def _product_rows(self, matrix: np.ndarray, views: list[tuple[np.ndarray, np.ndarray]], first: int,
                      stop: int, target: np.ndarray) -> None:
        """Output rows ``first:stop`` of the loaded image (in ``interior``) times ``matrix`` into ``target``,
        ((stop - first) * width, M), in blocks of at most ``block_rows`` rows (their im2col copy by the (windows,
        columns) ``views`` of one image, indexed by output row next, then the matmul)."""
        inner = self.positions // self.out_sizes[0]
        for start in range(first, stop, self.block_rows):
            end = min(start + self.block_rows, stop)
            for windows, cols in views:
                np.copyto(cols[:1, : end - start], windows[:1, start:end])
            np.matmul(self.cols_matrix[: (end - start) * inner], matrix,
                      out=target[(start - first) * inner:(end - first) * inner])

    def run(self, x: np.ndarray, matrix: np.ndarray, act: Activation | None, pool: Op | None = None
            ) -> np.ndarray:
        batch = x.shape[0]
        rows, positions, channels_last = self.rows, self.positions, self.channels_last
        y = None
        if pool is None:
            # channels-last: the storage of the whole output, each chunk's product is written straight into it
            y = np.empty((batch * positions, self.out_channels) if channels_last else
                         (batch, self.out_channels, *self.out_sizes), x.dtype)
        for start in range(0, batch, rows):
            count = min(rows, batch - start)
            source = x if count == batch else x[start:start + count]
            if pool is not None:  # pool the chunk while it is in cache, then activate the 4x smaller result
                self._multiply(source, count, matrix, self.product[: count * positions])
                y = _store_pooled(y, _pool_chunk(pool, self.product_nchw[:count], channels_last), batch, start,
                                  act)
            elif channels_last:
                target = y[start * positions:(start + count) * positions]
                self._multiply(source, count, matrix, target)
                if act is not None:
                    act(target)
            else:
                self._multiply(source, count, matrix, self.product[: count * positions])
                target = y if count == batch else y[start:start + count]
                if act is None:
                    np.copyto(target, self.product_nchw[:count])
                else:
                    act.into(self.product_nchw[:count], target)
        if pool is not None or not channels_last:
            return y
        return y.reshape(batch, *self.nhwc_shape).transpose(self.to_nchw)

    def single_chunk(self, matrix: np.ndarray, act: Activation | None, pool: Op | None
                     ) -> Callable[[np.ndarray], np.ndarray] | None:
        """``run`` for a batch of exactly ``rows`` images with every view and buffer made once (see
        _Im2colPlan.single_chunk)."""
        cols, cols_matrix, to_channels_last = self.cols, self.cols_matrix, self.to_channels_last
        subsample, product, product_nchw = self.subsample, self.product, self.product_nchw
        if self.block_rows != self.out_sizes[0]:  # in blocks: the general path's, one call a block
            return self._blocked_chunk(matrix, act, pool)
        if subsample is None:
            interior, windows, load = self.interior, self.windows, self._load

            def fill(x: np.ndarray) -> None:  # the columns of x, through the padded channels-last scratch
                load(interior, x)
                np.copyto(cols, windows)
        else:
            def fill(x: np.ndarray) -> None:  # the columns of x: its strided positions, no padding
                np.copyto(cols, x.transpose(to_channels_last)[subsample])

        if pool is None and self.channels_last:
            out_shape, to_nchw = (self.rows, *self.nhwc_shape), self.to_nchw

            def run(x: np.ndarray) -> np.ndarray:
                fill(x)
                y = np.matmul(cols_matrix, matrix)
                if act is not None:
                    act(y)
                return y.reshape(out_shape).transpose(to_nchw)

            return run
        if pool is None:
            nchw_shape = (self.rows, self.out_channels, *self.out_sizes)

            def run_nchw(x: np.ndarray) -> np.ndarray:
                fill(x)
                np.matmul(cols_matrix, matrix, out=product)
                y = np.empty(nchw_shape, x.dtype)
                if act is None:
                    np.copyto(y, product_nchw)
                else:
                    act.into(product_nchw, y)
                return y

            return run_nchw
        pooled = _fixed_pooling(pool, product_nchw, self.channels_last)
        if pooled is None:
            return None

        def run_pooled(x: np.ndarray) -> np.ndarray:
            fill(x)
            np.matmul(cols_matrix, matrix, out=product)
            y = pooled()
            if act is not None:
                act(y)
            return y

        return run_pooled

    def _phased_views(self, phases: int) -> list[tuple[np.ndarray, np.ndarray]]:
        """(windows, columns) pairs copying one 2-D image's columns with each output row's positions in
        ``phases`` phases (see _phased_positions), for _BandedPool's phased product."""
        return _phased_positions(self.windows[:1], self.cols[:1], phases, 2)

    def _blocked_chunk(self, matrix: np.ndarray, act: Activation | None, pool: Op | None
                       ) -> Callable[[np.ndarray], np.ndarray] | None:
        """single_chunk of a plan whose one image goes in blocks (the per-call glue is small beside them)."""
        multiply, product, product_nchw = self._multiply, self.product, self.product_nchw
        banded = None
        if pool is not None and self.channels_last and len(self.out_sizes) == 2:
            phases = _column_phases(pool, product_nchw)
            compute = functools.partial(self._product_rows, matrix, self._phased_views(phases))
            banded = _banded_pooling(pool, product_nchw, lambda _: compute, phases)  # (its blocks' own buffers)
        if banded is not None:  # each band of product rows pooled while in cache, not the whole product after
            interior, load = self.interior, self._load

            def run_banded(x: np.ndarray) -> np.ndarray:
                load(interior, x)
                return banded(act)

            return run_banded
        if pool is not None:
            pooled = _fixed_pooling(pool, product_nchw, self.channels_last)
            if pooled is None:
                return None

            def run_pooled(x: np.ndarray) -> np.ndarray:
                multiply(x, 1, matrix, product)
                y = pooled()
                if act is not None:
                    act(y)
                return y

            return run_pooled
        if not self.channels_last:
            return lambda x: self.run(x, matrix, act)
        shape, to_nchw = (1, *self.nhwc_shape), self.to_nchw

        def run(x: np.ndarray) -> np.ndarray:
            y = np.empty(product.shape, x.dtype)
            multiply(x, 1, matrix, y)
            if act is not None:
                act(y)
            return y.reshape(shape).transpose(to_nchw)

        return run


class _RowShiftPlan:
    """2-D convolution with a vertical stride of 1 and no more output channels than input channels (DenseNet's
    3x3 convolutions, 128 -> 32; ResNet's), channels-last, without the full im2col copy.

    The columns are made along the kernel width only: each padded input row becomes (output column, kernel
    column, channel) runs in a (padded rows * output width, kw * C) buffer, a third of the full columns for a
    3x3 kernel. Kernel row i then reads that buffer from row i * dilation on, a contiguous slice of it, so the
    convolution is kh matmuls with K = kw * C, each (output positions, kw * C) @ (kw * C, M), summed. With few
    output channels the full columns (K = kh * kw * C per position against M outputs) are mostly copying: 128 ->
    32 channels at 56x56, 3x3, measured at 1.02x a bare GEMM of the whole product this way against 1.2-1.3x
    through full columns (ROW_SHIFT_RATIO). The bias rides on a ones column, in kernel row 0's weights. The
    output is NCHW-shaped over channels-last storage, as the channels-last plan's with ``channels_last``."""

    def __init__(self, x_shape: tuple[int, ...], dtype: np.dtype, out_channels: int, kernel: list[int],
                 strides: list[int], dilations: list[int], begins: list[int], ends: list[int], has_bias: bool):
        batch, channels, height, width = x_shape
        padded, self.out_sizes = padded_and_out_sizes((height, width), kernel, strides, dilations, begins, ends)
        (kh, kw), (hp, wp), (ho, wo) = kernel, padded, self.out_sizes
        self.rows, self.out_channels, self.kernel_rows, self.row_step = batch, out_channels, kh, dilations[0] * wo
        self.positions = ho * wo
        item = dtype.itemsize
        self.scratch = np.zeros((hp, wp, channels), dtype)
        self.interior = self.scratch[begins[0]:begins[0] + height, begins[1]:begins[1] + width]
        width_k = kw * channels + has_bias
        self.wide = np.empty((hp * wo, width_k), dtype)
        if has_bias:
            self.wide[:, -1] = 1
        shape = (hp, wo, kw, channels)
        self.windows = checked_windows(self.scratch, shape, tuple(v * item for v in (
            wp * channels, strides[1] * channels, dilations[1] * channels, 1)))
        self.wide_taps = checked_windows(self.wide, shape, tuple(v * item for v in (
            wo * width_k, width_k, channels, 1)), writeable=True)
        self.tmp = np.empty((self.positions, out_channels), dtype)
        self.nhwc_shape = (batch, ho, wo, out_channels)

    @staticmethod
    def prepare(weight: np.ndarray, bias: np.ndarray | None, groups: int = 1) -> np.ndarray:
        """(M, C, kh, kw) -> (kh, kw * C [+ 1], M): each kernel row's weights in the (kernel column, channel) order
        of the buffer's rows, then the bias in kernel row 0 (zeros in the others)."""
        out_channels, channels, kh, kw = weight.shape
        matrix = weight.transpose(2, 3, 1, 0).reshape(kh, kw * channels, out_channels)
        if bias is not None:
            extra = np.zeros((kh, 1, out_channels), weight.dtype)
            extra[0, 0] = bias
            matrix = np.concatenate([matrix, extra], axis=1)
        return np.ascontiguousarray(matrix)

    def _image(self, x: np.ndarray, matrix: np.ndarray, out: np.ndarray) -> None:
        """One image (C, H, W), NCHW-shaped of any storage, into ``out`` (positions, M)."""
        self.interior[...] = x.transpose(1, 2, 0)
        np.copyto(self.wide_taps, self.windows)
        positions, step, wide, tmp = self.positions, self.row_step, self.wide, self.tmp
        np.matmul(wide[:positions], matrix[0], out=out)
        for i in range(1, self.kernel_rows):
            np.matmul(wide[i * step:i * step + positions], matrix[i], out=tmp)
            out += tmp

    def run(self, x: np.ndarray, matrix: np.ndarray, act: Activation | None, pool: Op | None = None
            ) -> np.ndarray:
        y = np.empty((x.shape[0] * self.positions, self.out_channels), x.dtype)
        for image in range(x.shape[0]):
            self._image(x[image], matrix, y[image * self.positions:(image + 1) * self.positions])
        if pool is None:
            if act is not None:  # over the contiguous storage: on the NCHW-shaped view ReLU misses NumPy's SIMD
                act(y)           # loop (56x56x64: 41 -> 17 us)
            return y.reshape(self.nhwc_shape).transpose(0, 3, 1, 2)
        # (a monotonic activation commutes with the max pooling: on the smaller result)
        y = _pool_chunk(pool, y.reshape(self.nhwc_shape).transpose(0, 3, 1, 2), True)
        if act is not None:
            act(y)
        return y

    def single_chunk(self, matrix: np.ndarray, act: Activation | None, pool: Op | None
                     ) -> Callable[[np.ndarray], np.ndarray]:
        return lambda x: self.run(x, matrix, act, pool)


class _GroupedPointwisePlan:
    """1x1 convolution with groups (ShuffleNet's), stride 1, no padding, for a channels-last output: one batched
    matmul over the groups straight from the input -- each group's (positions, C / groups) rows are a strided
    view of a channels-last input (or the transposed view of an NCHW one), which BLAS reads as it is -- into
    each group's columns of the (positions, M) output, so no im2col copy of the input is made (the NCHW im2col
    plan copied every input value once per call for these). The bias and the activation are passes over the
    output."""

    def __init__(self, x_shape: tuple[int, ...], groups: int, out_channels: int, has_bias: bool):
        batch, channels, *sizes = x_shape
        rank = len(sizes)
        self.rows, self.groups, self.channels, self.out_channels = batch, groups, channels, out_channels
        self.has_bias = has_bias
        self.per_image = math.prod(sizes)
        self.to_channels_last = (0, *range(2, rank + 2), 1)
        self.to_nchw = (0, rank + 1, *range(1, rank + 1))
        self.nhwc_shape = (batch, *sizes, out_channels)

    @staticmethod
    def prepare(weight: np.ndarray, bias: np.ndarray | None, groups: int) -> np.ndarray:
        """(M, C / g, 1...) [+ bias] -> (g, C / g [+ 1], M / g): each group's weights transposed, then its bias."""
        out_channels = weight.shape[0]
        matrix = weight.reshape(groups, out_channels // groups, -1).transpose(0, 2, 1)
        if bias is not None:
            matrix = np.concatenate([matrix, bias.astype(weight.dtype, copy=False).reshape(groups, 1, -1)], axis=1)
        return np.ascontiguousarray(matrix)

    def run(self, x: np.ndarray, matrix: np.ndarray, act: Activation | None, pool: Op | None = None
            ) -> np.ndarray:
        return self.single_chunk(matrix, act, pool)(x)

    def single_chunk(self, matrix: np.ndarray, act: Activation | None, pool: Op | None
                     ) -> Callable[[np.ndarray], np.ndarray]:
        """The convolution of an input of this plan's shape with ``matrix`` (``prepare``), ``act`` and ``pool``,
        its epilogue made once: batch1's finisher adds the bias as same-shape runs and applies a ReLU against
        shared zeros (a broadcast bias add is NumPy's non-SIMD loop: ~10 us more on ShuffleNet's 28x28x136)."""
        from .batch1 import finisher  # batch1 builds on this module

        groups, cg, out_channels = self.groups, self.channels // self.groups, self.out_channels
        positions = self.rows * self.per_image
        weights = matrix[:, :cg]
        finish = finisher((positions, out_channels), matrix.dtype,
                          matrix[:, cg].reshape(-1) if self.has_bias else None, act)
        to_channels_last, to_nchw, nhwc_shape = self.to_channels_last, self.to_nchw, self.nhwc_shape

        def run(x: np.ndarray) -> np.ndarray:
            if x.shape[0] == 1 and x.flags.c_contiguous:  # NCHW: each group's rows are a transposed view
                operand = x.reshape(groups, cg, positions).transpose(0, 2, 1)
            else:
                last = x.transpose(to_channels_last)
                if not last.flags.c_contiguous:
                    last = np.ascontiguousarray(last)
                operand = last.reshape(positions, groups, cg).transpose(1, 0, 2)
            y = np.empty((positions, out_channels), x.dtype)
            np.matmul(operand, weights, out=y.reshape(positions, groups, -1).transpose(1, 0, 2))
            finish(y)
            y = y.reshape(nhwc_shape).transpose(to_nchw)
            if pool is not None:  # (a monotonic activation commutes with the max pooling)
                y = _pool_chunk(pool, y, True)
            return y

        return run


def _pool_chunk(pool: Op, chunk: np.ndarray, channels_last: bool) -> np.ndarray:
    """Max-pool one chunk of a convolution's output. The chunk is already cache-sized and the convolution holds
    its lock, so this goes straight to the pool plan's reduction (measured: a third of MaxPool.run's time at
    batch 1 was locking, plan lookup and re-chunking); a channels-last chunk that would need the plan's padded
    NCHW copy is pooled by _ChannelsLastPool instead."""
    plan = pool.plan(chunk)
    if channels_last and plan.buffer is not None and plan.axis_taps:
        return _ChannelsLastPool(plan, chunk.shape)(chunk)
    return plan.reduce_block(plan.source(chunk), np.maximum)  # source: the chunk, or a padded copy of it


class _ChannelsLastPool:
    """Max (or sum) pooling of a channels-last array (NCHW-shaped) without a padded copy of it.

    Separable passes, one spatial axis at a time: each kernel tap of an axis reads a strided slice of the
    previous stage and combines it into the output positions whose window holds it, so the padding (and
    ceil_mode's overhang) is never read -- as if it held ``fill`` (the lowest value for a maximum, 0 for a sum),
    which is what a position no tap reaches gets. Every pass runs over contiguous channel vectors, and the
    result is channels-last again. (The pooling operator's own padded buffer is NCHW: copying a channels-last
    array into it is a transposing copy, and its NCHW result would mix layouts with the channels-last arrays
    downstream.)"""

    def __init__(self, plan, nchw_shape: tuple[int, ...], combine: np.ufunc = np.maximum,
                 begins: list[int] | None = None, out: list[int] | None = None, phases: int = 1):
        """``plan`` is the pooling's _PoolPlan (its kernel, strides, dilations, begins and output sizes);
        ``begins`` and ``out`` replace its own (a band of rows of the input, see _BandedPool). With ``phases``
        > 1 the source's last spatial axis is stored phase by phase (see _phased_positions), its pooling stride
        ``phases``: each tap of that axis's pass then reads one phase's contiguous run instead of a strided slice
        (NumPy's maximum over runs of a few channels costs ~5x more an element than over long contiguous ones);
        the result is in the usual order."""
        self.combine = combine
        batch, channels, *sizes = nchw_shape
        rank = len(sizes)
        self.to_channels_last = (0, *range(2, rank + 2), 1)
        self.to_nchw = (0, rank + 1, *range(1, rank + 1))
        # per pass: the output shape, then (output index, input index, covers every output) per tap, the taps
        # covering every output first (the pass starts from them instead of from a filled array)
        self.stages: list[tuple[tuple[int, ...], list[tuple[tuple, tuple, bool]]]] = []
        shape = [batch, *sizes, channels]
        geometry = zip(sizes, plan.kernel, plan.strides, plan.dilations, begins or plan.begins, out or plan.out,
                       strict=True)
        for axis, (n, k, s, d, b, o) in enumerate(geometry):
            phased = phases > 1 and axis == rank - 1
            if phased and s != phases:
                raise ValueError(f"{phases} phases of positions pooled with stride {s}")
            phase_starts = _phase_starts(n, phases) if phased else []
            if k == 1 and s == 1 and b == 0 and o == n:
                continue
            prefix = (slice(None),) * (axis + 1)
            taps = []
            for t in range(k):
                low, high = max(0, -(-(b - t * d) // s)), min(o - 1, (n - 1 + b - t * d) // s)
                if low <= high:
                    first = low * s + t * d - b
                    start = phase_starts[first % s] + first // s if phased else first
                    read = slice(start, start + high - low + 1) if phased else \
                        slice(first, first + (high - low) * s + 1, s)
                    taps.append((prefix + (slice(low, high + 1),), prefix + (read,), high - low + 1 == o))
            taps.sort(key=lambda tap: not tap[2])
            shape[axis + 1] = o
            self.stages.append((tuple(shape), taps))

    def __call__(self, source: np.ndarray, into: np.ndarray | None = None) -> np.ndarray:
        """The pooled ``source``, NCHW-shaped over channels-last storage; the last pass writes into ``into``
        (channels-last, the output's shape) when given."""
        y = source.transpose(self.to_channels_last)
        if not self.stages:
            if into is None:
                return source.copy()
            np.copyto(into, y)
            return into.transpose(self.to_nchw)
        last = self.stages[-1][0]
        for shape, taps in self.stages:
            out = into if into is not None and shape is last else np.empty(shape, y.dtype)
            self._pass([y[tap[1]] for tap in taps], taps, out)
            y = out
        return y.transpose(self.to_nchw)

    def _pass(self, reads: list[np.ndarray], taps: list[tuple[tuple, tuple, bool]], out: np.ndarray) -> None:
        """One pass: the taps' input views ``reads`` combined into ``out``."""
        first = 0  # the taps combined from the second one on (into what the first ones made)
        if len(taps) > 1 and taps[1][2]:
            self.combine(reads[0], reads[1], out=out)
            first = 2
        elif taps and taps[0][2]:
            np.copyto(out, reads[0])
            first = 1
        elif self.combine is np.add:
            out.fill(0)
        else:
            out.fill(-np.inf if out.dtype.kind == "f" else np.iinfo(out.dtype).min)
        for (out_index, _, _), read in zip(taps[first:], reads[first:], strict=True):
            target = out[out_index]
            self.combine(target, read, out=target)

    def intermediate_sizes(self) -> list[int]:
        """The element counts of the passes before the last (see ``bound``)."""
        return [math.prod(shape) for shape, _ in self.stages[:-1]]

    def bound(self, source: np.ndarray, scratch: list[np.ndarray]) -> Callable[[np.ndarray], None]:
        """``__call__`` over a fixed ``source`` (NCHW-shaped over channels-last storage: a band of _BandedPool's
        buffer) with the input views of every pass made once, each pass before the last into its flat buffer of
        ``scratch``, at least ``intermediate_sizes`` (a _BandedPool's bands share them, running one after
        another). The function returned writes the last pass into its argument (channels-last, the output's
        shape). Making the views on every call cost ~3-8 us a band (SqueezeNet's and ResNet's stems: 7 bands)."""
        y = source.transpose(self.to_channels_last)
        if not self.stages:
            return lambda into: np.copyto(into, y)
        passes = []
        for index, (shape, taps) in enumerate(self.stages):
            out = scratch[index][: math.prod(shape)].reshape(shape) if index < len(self.stages) - 1 else None
            passes.append(([y[tap[1]] for tap in taps], taps, out))
            y = out
        run_pass = self._pass

        def run(into: np.ndarray) -> None:
            for reads, taps, out in passes:
                run_pass(reads, taps, into if out is None else out)

        return run


class _BandedPool:
    """Max pooling of a convolution's channels-last product made a band of rows at a time: each band of pooled
    rows has the product rows its windows read made into a buffer of about BLOCK_BYTES (the rows it shares with
    the band before, where windows overlap, are moved to the buffer's start, not computed again) and pooled into
    the output's rows while they are in cache. Pooling the whole product (3 MB for SqueezeNet's 111x111x64 stem)
    read it back from memory in every pass. The passes are _ChannelsLastPool's over the band, the pooling's
    geometry shifted to the band's first row: the same values."""

    def __init__(self, plan, nchw_shape: tuple[int, ...], dtype: np.dtype,
                 compute_for: Callable[[int], Callable[[int, int, np.ndarray], None]], phases: int = 1):
        """``plan``: the pooling's _PoolPlan of the product (one image, 2-D); ``compute_for(rows)``, given the most
        product rows a band makes, returns ``compute(first, stop, buffer)``, which writes product rows
        ``first:stop`` into ``buffer``, (rows * width, channels), each row's columns in ``phases`` phases (see
        _ChannelsLastPool)."""
        _, channels, height, width = nchw_shape
        kernel, stride, dilation, begin, out = (plan.kernel[0], plan.strides[0], plan.dilations[0], plan.begins[0],
                                                plan.out[0])
        row_bytes = width * channels * dtype.itemsize
        per_band = max(1, BLOCK_BYTES // row_bytes // stride)  # pooled rows a band
        bands: list[tuple[int, int, int, int, _ChannelsLastPool]] = []
        for first_out in range(0, out, per_band):
            stop_out = min(out, first_out + per_band)
            first = max(0, first_out * stride - begin)
            stop = min(height, (stop_out - 1) * stride - begin + (kernel - 1) * dilation + 1)
            if stop <= first:
                raise ValueError("a band of pooled rows reads no row of the product")
            pool = _ChannelsLastPool(plan, (1, channels, stop - first, width), np.maximum,
                                     [first - first_out * stride + begin, *plan.begins[1:]],
                                     [stop_out - first_out, *plan.out[1:]], phases)
            bands.append((first, stop, first_out, stop_out, pool))
        widest = max(stop - first for first, stop, *_ in bands)
        self.buffer = np.empty((widest * width, channels), dtype)
        # the passes before the last of every band's pooling share these buffers (the largest band's sizes: the
        # buffers __call__ would make for it on every call)
        sizes = [pool.intermediate_sizes() for *_, pool in bands]
        scratch = [np.empty(max(band[index] for band in sizes if index < len(band)), dtype)
                   for index in range(max(map(len, sizes)))]
        # per band: its product rows first:stop, its pooled rows first_out:stop_out, its bound pooling
        self.bands = [(first, stop, first_out, stop_out, pool.bound(
            self.buffer[: (stop - first) * width].reshape(1, stop - first, width, channels).transpose(0, 3, 1, 2),
            scratch)) for first, stop, first_out, stop_out, pool in bands]
        self.shape = (1, *plan.out, channels)
        self.width, self.compute = width, compute_for(widest)

    def __call__(self, act: Activation | None = None) -> np.ndarray:
        """The pooled product, channels-last (NCHW-shaped), a fresh array; ``act`` applied to it after pooling
        (the fusable activations are monotonic), over its contiguous storage: on the NCHW-shaped view a ReLU
        missed NumPy's SIMD loop (55x55x64, in cache: 42 us against 18)."""
        y = np.empty(self.shape, self.buffer.dtype)
        width, buffer = self.width, self.buffer
        made = made_stop = 0  # the rows of the product in the buffer: made:made_stop (from its start)
        for first, stop, first_out, stop_out, pool in self.bands:
            kept = max(0, made_stop - first)  # rows this band shares with the last one: moved, not computed again
            if kept:
                buffer[: kept * width] = buffer[(first - made) * width:(made_stop - made) * width]
            self.compute(first + kept, stop, buffer[kept * width:(stop - first) * width])
            made, made_stop = first, stop
            pool(y[:, first_out:stop_out])
        if act is not None:
            act(y)
        return y.transpose(0, 3, 1, 2)


def _banded_pooling(pool: Op, product_nchw: np.ndarray,
                    compute_for: Callable[[int], Callable[[int, int, np.ndarray], None]], phases: int = 1
                    ) -> _BandedPool | None:
    """A _BandedPool for a channels-last product of one 2-D image larger than BANDED_POOL_BYTES, or None."""
    if product_nchw.shape[0] != 1 or product_nchw.ndim != 4 or product_nchw.nbytes <= BANDED_POOL_BYTES:
        return None
    try:
        return _BandedPool(pool.plan(product_nchw), product_nchw.shape, product_nchw.dtype, compute_for, phases)
    except ValueError:
        return None


def _column_phases(pool: Op, product_nchw: np.ndarray) -> int:
    """The phases a product's columns are made in for its pooling (see _ChannelsLastPool): the pooling's column
    stride, or 1 when it is wider than the product."""
    stride = pool.plan(product_nchw).strides[-1]
    return stride if stride <= product_nchw.shape[-1] else 1


def _phase_starts(size: int, phases: int) -> list[int]:
    """Where each phase starts along an axis of ``size`` positions stored phase by phase: position j at
    ``_phase_starts[j % phases] + j // phases`` (the even positions, then the odd ones, for 2 phases)."""
    return [sum(len(range(earlier, size, phases)) for earlier in range(phase)) for phase in range(phases)]


def _phased_positions(windows: np.ndarray, cols: np.ndarray, phases: int, axis: int
                      ) -> list[tuple[np.ndarray, np.ndarray]]:
    """(windows, columns) view pairs whose copies put the columns of each row of output positions (the views'
    ``axis``, the last position axis) phase by phase (see _phase_starts): slices of a plan's own checked views."""
    before = (slice(None),) * axis
    size = cols.shape[axis]
    return [(windows[before + (slice(phase, None, phases),)],
             cols[before + (slice(start, start + len(range(phase, size, phases))),)])
            for phase, start in enumerate(_phase_starts(size, phases))]


def _store_pooled(y: np.ndarray | None, pooled: np.ndarray, batch: int, start: int, act: Activation | None
                  ) -> np.ndarray:
    """Copy one chunk's pooled convolution into the (lazily allocated) output and apply the activation there:
    max pooling commutes with the monotonic activations that can be fused, so they run on the pooled values.
    A batch that fits in one chunk needs no copy: the pooling's result is a fresh array, it becomes the output."""
    if y is None and pooled.shape[0] == batch:
        if act is not None:
            act(pooled)
        return pooled
    if y is None:
        y = np.empty((batch, *pooled.shape[1:]), pooled.dtype)
    target = y[start:start + pooled.shape[0]]
    np.copyto(target, pooled)
    if act is not None:
        act(target)
    return y


def _whole_pooling(source: np.ndarray) -> Callable[[], np.ndarray]:
    """The maximum over all spatial positions of the reused buffer ``source`` (N, C, spatial...), each image's
    and channel's, as a fresh (N, C, 1, ...) array: one reduction over the spatial axes, as MaxPool's own runner
    for a window that is the whole input."""
    axes = tuple(range(2, source.ndim))
    return lambda: np.maximum.reduce(source, axis=axes, keepdims=True)


def _fixed_pooling(pool: Op, source: np.ndarray, channels_last: bool) -> Callable[[], np.ndarray] | None:
    """Max pooling of a buffer that a convolution plan reuses on every call, with every view made once: the
    separable passes of ``reduce_block`` (same ufunc calls in the same order, so bit-identical results), the
    intermediate passes into buffers of their own and the last into a fresh array (the output). None where
    the pooling needs a padded copy or the blocked form (left to the general path) -- except that a channels-last
    ``source`` needing a padded copy is pooled by _ChannelsLastPool."""
    plan = pool.plan(source)
    if plan.whole():  # a global max written as one window (MaxPool 7x7 on 7x7): one reduction
        return _whole_pooling(source)
    if channels_last and plan.buffer is not None and plan.axis_taps:
        separable = _ChannelsLastPool(plan, source.shape)
        # (its passes before the last into buffers of their own, as __call__ would make them on every call)
        run = separable.bound(source, [np.empty(size, source.dtype) for size in separable.intermediate_sizes()])
        shape = separable.stages[-1][0] if separable.stages else source.transpose(separable.to_channels_last).shape

        def pooled_channels_last() -> np.ndarray:
            y = np.empty(shape, source.dtype)
            run(y)
            return y.transpose(separable.to_nchw)

        return pooled_channels_last
    if plan.buffer is not None or plan.blocked is not None or not plan.axis_taps:
        return None
    stages = []
    current = source
    for index, taps in enumerate(plan.axis_taps):
        views = [current[tap] for tap in taps]
        last = index == len(plan.axis_taps) - 1
        target = None if last else np.empty_like(views[0])  # (in the source's layout)
        stages.append((views, target))
        current = target if not last else None
    crop = plan.crop if plan.needs_crop else None

    def pooled() -> np.ndarray:
        for views, target in stages:
            if target is None:  # the last pass: a fresh array
                target = np.maximum(views[0], views[1]) if len(views) > 1 else views[0].copy()
            elif len(views) > 1:
                np.maximum(views[0], views[1], out=target)
            else:
                np.copyto(target, views[0])
            for view in views[2:]:
                np.maximum(target, view, out=target)
        return target if crop is None else target[crop]

    return pooled


def _full_width_pays(wide_positions: int, exact_positions: int, run_length: int, out_per_group: int) -> bool:
    """Whether full-width columns beat exact ones. Per column element, an exact im2col copy pays a per-run
    overhead (runs are ``run_length`` long) that the contiguous full-width copy does not, while the matmul pays
    in proportion to the output channels for every extra (wasted) position. Constants measured on LeNet-like
    shapes (OpenBLAS, one thread)."""
    copy, run_overhead, mac = 0.03, 5.3, 0.05
    wide_cost = wide_positions * (copy + mac * out_per_group)
    exact_cost = exact_positions * (copy + run_overhead / run_length + mac * out_per_group)
    return wide_cost < exact_cost


#: the largest product (multiply-adds) an im2col plan of one image hands to np.dot rather than np.matmul
SMALL_DOT_MACS = 65536


class _Im2colPlan:
    """Conv of one input shape: chunked NCHW im2col + one batched matmul (all groups at once) per chunk.

    With a bias, every group's column matrix gets a constant row of ones and the weight matrix the bias as
    its last column, so the matmul adds the bias for free."""

    def __init__(self, x_shape: tuple[int, ...], dtype: np.dtype, groups: int, out_channels: int,
                 kernel: list[int], strides: list[int], dilations: list[int], begins: list[int], ends: list[int],
                 has_bias: bool, exact: bool = False, channels_last: bool = False):
        batch, channels, *sizes = x_shape
        self.channels_last = channels_last
        self.out_channels, self.groups = out_channels, groups
        cg = channels // groups
        padded, self.out_sizes = padded_and_out_sizes(sizes, kernel, strides, dilations, begins, ends)
        wide_positions = self.out_sizes[0] * math.prod(padded[1:])  # whole padded rows but along the first axis
        exact_positions = math.prod(self.out_sizes)
        self.full_width = not exact and all(s == 1 for s in strides) and _full_width_pays(
            wide_positions, exact_positions, self.out_sizes[-1], out_channels // groups)
        self.positions = positions = wide_positions if self.full_width else exact_positions
        k_group = cg * math.prod(kernel)
        item = dtype.itemsize
        per_image = groups * (k_group + has_bias) * positions * item
        self.rows = rows = max(1, min(batch, CHUNK_BYTES // per_image))
        elem = _row_major_strides(padded)
        # the full-width windows of the last channel reach this far past its end
        slack = sum((k - 1) * d * e for k, d, e in zip(kernel, dilations, elem, strict=True))
        self.scratch = _PaddedScratch(rows, channels, tuple(sizes), begins, ends, dtype, slack if self.full_width
                                      else 0)
        chan = self.scratch.channel_elems
        taps_shape = (cg, *kernel)
        position_shape = (positions,) if self.full_width else tuple(self.out_sizes)
        window_strides = (channels * chan, cg * chan, chan, *(d * e for d, e in zip(dilations, elem, strict=True)))
        if self.full_width:
            position_strides: tuple[int, ...] = (1,)
        else:
            position_strides = tuple(s * e for s, e in zip(strides, elem, strict=True))
        shape = (rows, groups, *taps_shape, *position_shape)
        self.windows = checked_windows(self.scratch.flat, shape, tuple(v * item for v in window_strides +
                                                                        position_strides))
        self.cols_matrix = np.empty((rows, groups, k_group + has_bias, positions), dtype)
        self.has_bias, self.k_group, self.padded = has_bias, k_group, padded
        if has_bias:
            self.cols_matrix[:, :, k_group] = 1
        # the im2col target: the first k_group rows of each group's column matrix, split like the windows
        row_strides = [v * positions for v in _row_major_strides(list(taps_shape))]
        self.cols = checked_windows(self.cols_matrix, shape, tuple(v * item for v in (
            groups * (k_group + has_bias) * positions, (k_group + has_bias) * positions, *row_strides,
            *_row_major_strides(list(position_shape)))), writeable=True)
        # full width: the output is computed over whole padded rows and returned as a view of its valid part
        # (a strided array, which every kernel accepts), so no copy of the output is ever made
        self.computed_sizes = [self.out_sizes[0], *padded[1:]] if self.full_width else self.out_sizes
        self.valid = (Ellipsis,) + tuple(slice(0, o) for o in self.out_sizes[1:])
        rank = len(sizes)
        self.to_nchw = (0, rank + 1, *range(1, rank + 1))
        self.chunk_out: np.ndarray | None = None  # allocated when a pooling is fused

    @staticmethod
    def prepare(weight: np.ndarray, bias: np.ndarray | None, groups: int) -> np.ndarray:
        return grouped_matrix(weight, bias, groups)

    def columns(self, x: np.ndarray, start: int, count: int) -> np.ndarray:
        """The columns of images ``start:start + count`` (at most ``rows``), in the chunk buffer."""
        self.scratch.interior[:count] = x if count == x.shape[0] else x[start:start + count]
        np.copyto(self.cols[:count], self.windows[:count])
        return self.cols_matrix[:count]

    # With ``channels_last`` (the fast plan's, see Conv.channels_last) the product is made channels-last,
    # (position, K) @ (K, M / groups) per image and group -- the same GEMM with its operands swapped, as fast --
    # so that the output has the storage the channels-last plans produce and read: a network whose first
    # convolution has few channels (this plan) stays in one layout (an elementwise Add of a channels-last and
    # an NCHW array was measured 25 times slower than of two alike).

    def _storage(self, count: int, dtype: np.dtype) -> np.ndarray:
        """A buffer for the output of ``count`` images: (image, M, computed position...), or channels-last."""
        if self.channels_last:
            return np.empty((count, *self.computed_sizes, self.out_channels), dtype)
        return np.empty((count, self.out_channels, *self.computed_sizes), dtype)

    def _target(self, storage: np.ndarray) -> np.ndarray:
        """The matmul's view of an output buffer: (image, group, M / groups, position), or channels-last
        (image, group, position, M / groups)."""
        if self.channels_last:
            return storage.reshape(storage.shape[0], self.positions, self.groups, -1).transpose(0, 2, 1, 3)
        return storage.reshape(storage.shape[0], self.groups, -1, self.positions)

    def _operands(self, columns: np.ndarray, matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The two matmul operands whose product is ``_target``'s layout."""
        if self.channels_last:
            return columns.transpose(0, 1, 3, 2), matrix.transpose(0, 2, 1)
        return matrix, columns

    def _small_product(self, first: np.ndarray, second: np.ndarray
                       ) -> tuple[np.ndarray, np.ndarray, tuple[int, int]] | None:
        """For one image of one group whose product has at most SMALL_DOT_MACS multiply-adds: its two operands as
        2-D arrays and the product's 2-D shape. np.dot on 2-D operands costs ~0.3 us less a call than np.matmul on
        the stacked (1, 1, ...) forms, a quarter of a small layer's product; on larger products (at ~200K MACs
        and up) np.matmul was as fast or faster."""
        if self.rows != 1 or self.groups != 1:
            return None
        # (indexing, not reshape: a view of the live operands, never a copy of a transposed one)
        left, right = first[(0,) * (first.ndim - 2)], second[(0,) * (second.ndim - 2)]
        if left.shape[0] * left.shape[1] * right.shape[1] > SMALL_DOT_MACS:
            return None
        return left, right, (left.shape[0], right.shape[1])

    def _nchw(self, storage: np.ndarray) -> np.ndarray:
        return storage.transpose(self.to_nchw) if self.channels_last else storage

    def run(self, x: np.ndarray, matrix: np.ndarray, act: Activation | None, pool: Op | None = None
            ) -> np.ndarray:
        batch = x.shape[0]
        if pool is None:
            y = self._storage(batch, x.dtype)
        else:  # the convolution of one chunk goes to a scratch buffer, only its pooling to the output
            pooled = None
            if self.chunk_out is None:
                self.chunk_out = self._storage(self.rows, x.dtype)
        rows = self.rows
        interior, windows, cols, cols_matrix = self.scratch.interior, self.windows, self.cols, self.cols_matrix
        for start in range(0, batch, rows):
            count = min(rows, batch - start)
            if count != rows:  # the last, partial chunk
                interior, windows, cols, cols_matrix = interior[:count], windows[:count], cols[:count], \
                    cols_matrix[:count]
            interior[...] = x if count == batch else x[start:start + count]
            np.copyto(cols, windows)
            if pool is None:
                target = y if count == batch else y[start:start + count]
            else:
                target = self.chunk_out if count == self.rows else self.chunk_out[:count]
            np.matmul(*self._operands(cols_matrix, matrix), out=self._target(target))
            if pool is not None:
                chunk = self._nchw(target)
                chunk = chunk[self.valid] if self.full_width else chunk
                pooled = _store_pooled(pooled, _pool_chunk(pool, chunk, self.channels_last), batch, start, act)
            elif act is not None:
                act(target)
        if pool is not None:
            return pooled
        y = self._nchw(y)
        return y[self.valid] if self.full_width else y

    def _images_side_by_side(self, weights: np.ndarray, act: Activation | None
                             ) -> Callable[[np.ndarray], np.ndarray]:
        """single_chunk's ``run`` for a few images of one group whose whole product has at most SMALL_DOT_MACS
        multiply-adds: their columns side by side in one (K [+ 1], images * positions) matrix (a buffer the size
        of the columns this plan checked), so that one 2-D np.dot by the (M, K [+ 1]) ``weights`` makes every
        image (np.matmul of the stacked operands broadcasts the weights per image: ~0.6 us more a layer at two
        images, keras_nhwc_l12's batch). The output is that product's (M, image, ...) storage seen as
        (image, M, ...): a strided array, as the full-width outputs are (only small layers, whose readers' passes
        over a strided array cost little)."""
        rows, positions, item = self.rows, self.positions, self.cols_matrix.dtype.itemsize
        columns = np.empty((self.k_group + self.has_bias, rows * positions), self.cols_matrix.dtype)
        if self.has_bias:
            columns[self.k_group] = 1
        shape = self.cols.shape  # (image, group, channel, kernel..., position...), as the windows
        rank = len(self.out_sizes)
        taps_shape, position_shape = shape[2:3 + rank], shape[3 + rank:]
        side_by_side = checked_windows(columns, shape, tuple(v * item for v in (
            positions, 0, *(v * rows * positions for v in _row_major_strides(list(taps_shape))),
            *_row_major_strides(list(position_shape)))), writeable=True)
        interior, windows, valid, full_width = self.scratch.interior, self.windows, self.valid, self.full_width
        product_shape = (self.out_channels, rows, *self.computed_sizes)
        to_images = (1, 0, *range(2, 2 + len(self.computed_sizes)))

        def run(x: np.ndarray) -> np.ndarray:
            interior[...] = x
            np.copyto(side_by_side, windows)
            y = weights.dot(columns)
            if act is not None:
                act(y)
            y = y.reshape(product_shape).transpose(to_images)
            return y[valid] if full_width else y

        return run

    def _band_product(self, weights: np.ndarray, phases: int, band_rows: int
                      ) -> Callable[[int, int, np.ndarray], None]:
        """_BandedPool's ``compute(first, stop, band)`` for one image of one group, 2-D, channels-last: the columns
        of output rows ``first:stop`` (each row's positions in ``phases`` phases) copied into a buffer of
        ``band_rows`` rows of its own, then times ``weights`` (K [+ 1], M) into ``band``. The band-sized buffer
        stays in cache from band to band, where the plan's whole column buffer (1.4 MB for SqueezeNet's stem)
        cycled through it."""
        width, k_group = self.out_sizes[1], self.k_group
        local = np.empty((k_group + self.has_bias, band_rows, width), weights.dtype)  # (band_rows <= out_sizes[0])
        if self.has_bias:
            local[k_group] = 1
        local_cols = local[:k_group].reshape(1, 1, *self.cols.shape[2:-2], band_rows, width)
        copies = _phased_positions(self.windows, local_cols, phases, local_cols.ndim - 1)
        columns = local.reshape(len(local), band_rows * width).T  # (position, K [+ 1])

        def compute(first: int, stop: int, band: np.ndarray) -> None:
            for source, target in copies:
                np.copyto(target[..., : stop - first, :], source[..., first:stop, :])
            np.matmul(columns[: (stop - first) * width], weights, out=band)

        return compute

    def single_chunk(self, matrix: np.ndarray, act: Activation | None, pool: Op | None
                     ) -> Callable[[np.ndarray], np.ndarray] | None:
        """``run`` for a batch of exactly ``rows`` images (batch 1, the window's case) with every view and
        buffer made once: the same NumPy calls on the same data, without the per-call glue (chunk loop,
        reshapes, the pooling plan's lookup). None when the pooling needs its general path."""
        interior, windows, cols = self.scratch.interior, self.windows, self.cols
        first, second = self._operands(self.cols_matrix, matrix)
        valid, full_width = self.valid, self.full_width
        small = self._small_product(first, second)
        if pool is None and self.channels_last:
            storage_shape = (self.rows, *self.computed_sizes, self.out_channels)
            target_shape = (self.rows, self.positions, self.groups, self.out_channels // self.groups)
            to_nchw = self.to_nchw

            def run_channels_last(x: np.ndarray) -> np.ndarray:
                interior[...] = x
                np.copyto(cols, windows)
                y = np.empty(storage_shape, x.dtype)
                if small is None:
                    np.matmul(first, second, out=y.reshape(target_shape).transpose(0, 2, 1, 3))
                else:
                    np.dot(small[0], small[1], out=y.reshape(small[2]))
                if act is not None:
                    act(y)
                y = y.transpose(to_nchw)
                return y[valid] if full_width else y

            return run_channels_last
        if pool is None and self.rows > 1 and self.groups == 1 \
                and matrix.shape[1] * matrix.shape[2] * self.rows * self.positions <= SMALL_DOT_MACS:
            return self._images_side_by_side(matrix[0], act)
        if pool is None:
            out_shape = (self.rows, self.out_channels, *self.computed_sizes)

            def run(x: np.ndarray) -> np.ndarray:
                interior[...] = x
                np.copyto(cols, windows)
                y = (np.matmul(first, second) if small is None else small[0].dot(small[1])).reshape(out_shape)
                if act is not None:
                    act(y)
                return y[valid] if full_width else y

            return run
        if self.chunk_out is None:
            self.chunk_out = self._storage(self.rows, matrix.dtype)
        product = self._target(self.chunk_out)
        chunk = self._nchw(self.chunk_out)
        if self.channels_last and self.groups == 1 and not full_width and len(self.out_sizes) == 2:
            # each row's positions in the pooling's column phases, so that its column pass reads contiguous runs
            # (a product pooled whole, ShuffleNet's 1.2 MB, was not faster so: the phased copy cost what it saved)
            phases = _column_phases(pool, chunk)
            banded = _banded_pooling(pool, chunk, functools.partial(self._band_product, second[0], phases), phases)
            if banded is not None:
                def run_banded(x: np.ndarray) -> np.ndarray:
                    interior[...] = x
                    return banded(act)

                return run_banded
        pooled = _fixed_pooling(pool, chunk[valid] if full_width else chunk, self.channels_last)
        if pooled is None:
            return None

        flat_product = product.reshape(small[2]) if small is not None and product.flags.c_contiguous else None

        def run_pooled(x: np.ndarray) -> np.ndarray:
            interior[...] = x
            np.copyto(cols, windows)
            if flat_product is None:
                np.matmul(first, second, out=product)
            else:
                np.dot(small[0], small[1], out=flat_product)
            y = pooled()
            if act is not None:  # after pooling: the fusable activations are monotonic
                act(y)
            return y

        return run_pooled


class _PointwisePlan:
    """1x1 convolution, stride 1, no padding, one group: a plain batched matmul, no copy of the input."""

    def __init__(self, x_shape: tuple[int, ...], out_channels: int, has_bias: bool):
        batch, channels, *sizes = x_shape
        self.channels, self.has_bias = channels, has_bias
        self.flat_in = (batch, channels, math.prod(sizes))
        self.out_shape = (batch, out_channels, *sizes)

    @staticmethod
    def prepare(weight: np.ndarray, bias: np.ndarray | None, groups: int) -> np.ndarray:
        return grouped_matrix(weight, bias, groups)

    def run(self, x: np.ndarray, matrix: np.ndarray, act: Activation | None) -> np.ndarray:
        weights = matrix[0]
        y = np.matmul(weights[:, : self.channels], x.reshape(self.flat_in))
        if self.has_bias:
            y += weights[:, self.channels:]
        if act is not None:
            act(y)
        return y.reshape(self.out_shape)


class _DepthwisePlan:
    """One input and one output channel per group (N-D, any geometry): a sum over kernel taps of shifted, scaled
    copies. The general form, for ranks other than 2 (see _FlatDepthwisePlan)."""

    def __init__(self, x_shape: tuple[int, ...], dtype: np.dtype, kernel: list[int], strides: list[int],
                 dilations: list[int], begins: list[int], ends: list[int], has_bias: bool):
        batch, channels, *sizes = x_shape
        padded, self.out_sizes = padded_and_out_sizes(sizes, kernel, strides, dilations, begins, ends)
        self.scratch = _PaddedScratch(batch, channels, tuple(sizes), begins, ends, dtype, 0)
        block = self.scratch.flat.reshape(batch, channels, *padded)
        self.taps = []
        for offsets in np.ndindex(*kernel):
            index = tuple(slice(o * d, o * d + (n - 1) * s + 1, s)
                          for o, d, s, n in zip(offsets, dilations, strides, self.out_sizes, strict=True))
            self.taps.append(block[(slice(None), slice(None)) + index])
        self.weight_shape = (channels,) + (1,) * len(sizes)
        self.has_bias = has_bias

    @staticmethod
    def prepare(weight: np.ndarray, bias: np.ndarray | None, groups: int) -> np.ndarray:
        return grouped_matrix(weight, bias, groups)

    def run(self, x: np.ndarray, matrix: np.ndarray, act: Activation | None) -> np.ndarray:
        self.scratch.interior[...] = x
        w = matrix.reshape(matrix.shape[0], -1)  # (channels, taps [+ bias])
        y = self.taps[0] * w[:, 0].reshape(self.weight_shape)
        tmp = np.empty_like(y)
        for index in range(1, len(self.taps)):
            np.multiply(self.taps[index], w[:, index].reshape(self.weight_shape), out=tmp)
            y += tmp
        if self.has_bias:
            y += w[:, -1].reshape(self.weight_shape)
        if act is not None:
            act(y)
        return y


# per-tap weights are laid out over a whole image (one contiguous multiply per tap) up to this many bytes
DEPTHWISE_TILE_BYTES = 2 * 1024 * 1024
# ... and all taps are multiplied in one call up to this many bytes of products
STACKED_BYTES = 512 * 1024


class _FlatDepthwisePlan:
    """2-D depthwise convolution where every tap is one long contiguous multiply-accumulate.

    The input is split into stride-phase images (stride 1: just the zero-padded image; stride 2: the four
    even/odd row/column sub-images), each (C, Hq, Wq) and contiguous, so that every tap reads one phase image
    shifted by a constant offset: over the flat (C * Hq * Wq) grid of one image, output = sum over taps of
    weight[c, tap] * phase[tap][grid + shift[tap]]. The grid is a little larger than the output (whole phase
    rows, and rows past the output's), those extra values are computed and the output is a strided view
    without them. The per-channel weight of a tap is laid out over the whole grid once (when that is small,
    DEPTHWISE_TILE_BYTES), so each tap is a contiguous multiply and a contiguous add, NumPy's fastest loops;
    results are bit-identical to the per-tap sum in the same order."""

    def __init__(self, x_shape: tuple[int, ...], dtype: np.dtype, kernel: list[int], strides: list[int],
                 dilations: list[int], begins: list[int], ends: list[int], has_bias: bool):
        batch, channels, height, width = x_shape
        padded, self.out_sizes = padded_and_out_sizes((height, width), kernel, strides, dilations, begins, ends)
        (sh, sw), (dh, dw), (kh, kw) = strides, dilations, kernel
        self.channels, self.has_bias = channels, has_bias
        self.hq, self.wq = hq, wq = -(-padded[0] // sh), -(-padded[1] // sw)
        self.grid = grid = channels * hq * wq  # one image's computed values
        phases = sh * sw
        self.tap_list = []  # (phase, flat shift) of each tap, in the weight's (row, column) order
        for i in range(kh):
            for j in range(kw):
                self.tap_list.append(((i * dh % sh) * sw + j * dw % sw, (i * dh // sh) * wq + j * dw // sw))
        slack = max(shift for _, shift in self.tap_list)
        # phase images of every image: (batch, phases, C, Hq, Wq), then slack for the last image's shifted reads
        self.rows = rows = max(1, min(batch, CHUNK_BYTES // max(1, grid * dtype.itemsize * 3)))
        self.flat = np.zeros(rows * phases * grid + slack, dtype)
        self.phase_block = self.flat[: rows * phases * grid].reshape(rows, phases, channels, hq, wq)
        # where each phase's copy of the input goes, and which input rows/columns it takes
        self.copies = []
        for a in range(sh):
            r0 = max(0, -(-(begins[0] - a) // sh))
            r1 = -(-(begins[0] + height - a) // sh)
            for b in range(sw):
                c0 = max(0, -(-(begins[1] - b) // sw))
                c1 = -(-(begins[1] + width - b) // sw)
                if r1 <= r0 or c1 <= c0:
                    continue
                target = (slice(None), a * sw + b, slice(None), slice(r0, r1), slice(c0, c1))
                source = (slice(None), slice(None),
                          slice(r0 * sh + a - begins[0], (r1 - 1) * sh + a - begins[0] + 1, sh),
                          slice(c0 * sw + b - begins[1], (c1 - 1) * sw + b - begins[1] + 1, sw))
                self.copies.append((target, source))
        self.tile = grid * len(self.tap_list) * dtype.itemsize <= DEPTHWISE_TILE_BYTES
        self.tmp = np.empty((rows, grid), dtype)
        # unit strides, one image, a small grid: all taps at once, one multiply of a (kh, kw, grid) window view
        # by the tiled weights and one sum over the taps (two calls instead of 2 * taps; same order of sums)
        self.stacked = None
        if self.tile and phases == 1 and rows == 1 and grid * len(self.tap_list) * dtype.itemsize <= STACKED_BYTES:
            item = dtype.itemsize
            window = np.lib.stride_tricks.as_strided(self.flat, (kh, kw, grid), (dh * wq * item, dw * item, item),
                                                     writeable=False)
            self.stacked = (window, np.empty((kh * kw, grid), dtype))
        self.valid = (slice(None), slice(None), slice(0, self.out_sizes[0]), slice(0, self.out_sizes[1]))
        self.views: dict[int, list[np.ndarray]] = {}

    def prepare(self, weight: np.ndarray, bias: np.ndarray | None, groups: int, dtype: np.dtype) -> tuple:
        """Per tap, the weight as (C, 1) or laid out over the grid (Hq * Wq copies of each channel's value); the
        bias as (C, 1)."""
        channels, taps = weight.shape[0], len(self.tap_list)
        w = weight.reshape(channels, taps).astype(dtype, copy=False)
        bias = None if bias is None else bias.astype(dtype, copy=False)
        per_tap = []
        for t in range(taps):
            column = np.ascontiguousarray(w[:, t]).reshape(channels, 1)
            if self.tile:
                column = np.ascontiguousarray(np.broadcast_to(column, (channels, self.hq * self.wq))).reshape(-1)
            per_tap.append(column)
        if self.stacked is not None:  # (kh, kw, grid) weights for the one-call form, after the per-tap ones
            per_tap.append(np.stack(per_tap).reshape(self.stacked[0].shape))
        return per_tap, None if bias is None else np.ascontiguousarray(bias).reshape(channels, 1)

    def _tap_views(self, count: int) -> list[np.ndarray]:
        views = self.views.get(count)
        if views is None:
            item, grid, phases = self.flat.itemsize, self.grid, len(self.phase_block[0])
            views = []
            for phase, shift in self.tap_list:
                start = self.flat[phase * grid + shift:]
                view = np.lib.stride_tricks.as_strided(start, (count, grid), (phases * grid * item, item),
                                                       writeable=False)
                views.append(view if self.tile else view.reshape(count, self.channels, -1))
            self.views[count] = views
        return views

    def run(self, x: np.ndarray, prepared: tuple, act: Activation | None) -> np.ndarray:
        weights, bias = prepared
        batch = x.shape[0]
        hq, wq, channels = self.hq, self.wq, self.channels
        y = np.empty((batch, channels, hq, wq), x.dtype)
        for start in range(0, batch, self.rows):
            count = min(self.rows, batch - start)
            part = x if count == batch else x[start:start + count]
            block = self.phase_block if count == self.rows else self.phase_block[:count]
            for target, source in self.copies:
                block[target] = part[source]
            acc = y[start:start + count].reshape(count, -1)
            if self.stacked is not None and count == 1:
                window, products = self.stacked
                np.multiply(window, weights[-1], out=products.reshape(window.shape))
                np.add.reduce(products, axis=0, out=acc[0])
                self._finish(acc, bias, act)
                continue
            views = self._tap_views(count)
            tmp = self.tmp[:count]
            if not self.tile:
                acc, tmp = acc.reshape(count, channels, -1), tmp.reshape(count, channels, -1)
            np.multiply(views[0], weights[0], out=acc)
            for view, w in zip(views[1:], weights[1:len(views)]):
                np.multiply(view, w, out=tmp)
                acc += tmp
            self._finish(acc, bias, act)
        return y[self.valid]

    def _finish(self, acc: np.ndarray, bias: np.ndarray | None, act: Activation | None) -> None:
        if bias is not None:
            acc.reshape(acc.shape[0], self.channels, -1)[...] += bias
        if act is not None:
            act(acc)


def _weight_grad(plan: _Im2colPlan | _ChannelsLastPlan, x: np.ndarray, dy: np.ndarray, weight_shape,
                 groups: int) -> tuple[np.ndarray, np.ndarray | None]:
    """dW (and dB, when the columns carry the bias's row of ones) from the forward plan's own columns, made
    again chunk by chunk in its cache-sized buffer: per chunk one matmul of the output gradient with them.
    (Keeping the forward's columns of the whole batch instead was measured slower: the forward then writes a
    batch of columns out of cache, more than the backward saves.)"""
    batch, out_channels = dy.shape[0], weight_shape[0]
    rows, positions = plan.rows, plan.positions
    if isinstance(plan, _ChannelsLastPlan):
        # columns (image * position, kernel... * channel [+ 1]); dY channels-last, (image * position, M)
        rank = dy.ndim - 2
        dy_rows = np.ascontiguousarray(dy.transpose(0, *range(2, rank + 2), 1)).reshape(-1, out_channels)
        product = np.zeros((out_channels, plan.cols_matrix.shape[1]), dy.dtype)
        part = np.empty_like(product)
        for start in range(0, batch, rows):
            count = min(rows, batch - start)
            columns = plan.columns(x, start, count)
            product += np.matmul(dy_rows[start * positions:(start + count) * positions].T, columns, out=part)
        k_total = product.shape[1] - plan.has_bias
        dw = product[:, :k_total].reshape(out_channels, *weight_shape[2:], weight_shape[1])
        dw = np.ascontiguousarray(dw.transpose(0, rank + 1, *range(1, rank + 1)))
        return dw, product[:, k_total] if plan.has_bias else None
    # columns (image, group, C/g * taps [+ 1], position) over the exact positions (a full-width forward plan
    # has an exact twin for this, so dY is used as it is): per image and group one matmul, summed over images
    mg = out_channels // groups
    dy_rows = np.ascontiguousarray(dy).reshape(batch, groups, mg, positions)
    product = np.zeros((groups, mg, plan.cols_matrix.shape[2]), dy.dtype)
    for start in range(0, batch, rows):
        count = min(rows, batch - start)
        columns = plan.columns(x, start, count)
        product += np.matmul(dy_rows[start:start + count], columns.transpose(0, 1, 3, 2)).sum(axis=0)
    k_group = plan.k_group
    dw = np.ascontiguousarray(product[:, :, :k_group]).reshape(weight_shape)
    return dw, product[:, :, k_group].reshape(-1) if plan.has_bias else None


# channels-last columns pay off once a kernel row spans this many contiguous values (kernel width * channels)
CHANNELS_LAST_MIN_RUN = 32
# ... or, for a channels-last output, this many when one image's columns go in blocks (BLOCK_BYTES): an
# ImageNet stem (7x7 over 3 channels, stride 2) measured 2.9 ms that way against 4.1-7 ms through NCHW columns,
# whose runs along an output row are strided
CHANNELS_LAST_MIN_RUN_BLOCKED = 16
# a channels-last output with at most 1 / this many output channels per input channel goes through _RowShiftPlan
# (measured, 3x3 at batch 1, against _ChannelsLastPlan: 10-25% faster from 128 -> 32 to 512 -> 512 channels, as
# fast at 64 -> 64 on 56x56; 4-12% slower with 4x more outputs than inputs, a SqueezeNet expand layer)
ROW_SHIFT_RATIO = 1

_Plan = _Im2colPlan | _ChannelsLastPlan | _RowShiftPlan | _GroupedPointwisePlan | _PointwisePlan | _DepthwisePlan \
    | _FlatDepthwisePlan
# the plans that run a fused MaxPool themselves and have a single_chunk runner
_FUSING = (_Im2colPlan, _ChannelsLastPlan, _RowShiftPlan, _GroupedPointwisePlan)


def _prepare(plan: _Plan, w: np.ndarray, b: np.ndarray | None, groups: int, dtype: np.dtype):
    """The weights in the layout of ``plan``, in the input's dtype."""
    if isinstance(plan, _FlatDepthwisePlan):
        return plan.prepare(w, b, groups, dtype)
    return plan.prepare(w, b, groups).astype(dtype, copy=False)


@register("Conv", 1)
class Conv(FusableOp):
    """N-D convolution with groups, strides, dilations, padding (explicit or auto_pad) and optional bias.

    A plan is built per input shape (the layout strategy and its buffers), and with constant weights the
    weight matrix in that plan's layout is prepared along with it."""

    def __init__(self, node: NodeSpec):
        super().__init__(node)
        self.group = int_attr(self, "group", 1, minimum=1)
        self.pool: Op | None = None
        # outputs NCHW-shaped over channels-last storage (prefer_channels_last)
        self.channels_last = False
        self.plans: dict[tuple, tuple[_Plan, np.ndarray | None]] = {}
        self.lock = threading.Lock()
        # (input shape, dtype) -> the plan's single_chunk runner, for batches that fit in one chunk (inference)
        self.fast: dict[tuple, Callable[[np.ndarray], np.ndarray]] = {}
        self.grad_plans: dict[tuple, ConvGradPlan | ConvInputGradPlan | _Im2colPlan] = {}
        self.weight, self.bias = self.const(1), self.const(2)
        has_bias = len(node.inputs) > 2 and bool(node.inputs[2])
        # both known at load time (an absent bias is known too): weight matrices are prepared once per plan
        self.static = self.weight is not None and (self.bias is not None or not has_bias)
        if self.weight is not None:
            self._check_weight(self.weight, self.bias)
        self.geometry = Geometry(self, kernel=None if self.weight is None else self.weight.shape[2:])
        self.auto_pad = self.geometry.auto_pad

    def fuse_activation(self, kind: str, params: dict[str, float]) -> bool:
        """Also after a fused MaxPool (Conv -> MaxPool -> Relu, as PyTorch's classic MNIST net writes it): a
        non-decreasing activation commutes with the max pooling, f(max(a, b)) = max(f(a), f(b)), so it joins the
        activations the plans apply around their pooling; any other is refused there."""
        if self.pool is not None:
            act = make_activation(kind, params)
            if act is None or not act.monotonic:
                return False
        self.fast.clear()  # the runners made so far apply the activations fused before
        return super().fuse_activation(kind, params)

    def prefer_channels_last(self) -> None:
        """From now on, hand out the outputs of the im2col and channels-last plans NCHW-shaped over channels-last
        storage: no transposing copy of the product, and a next convolution reads it with contiguous copies.
        The fast plan asks this of every convolution (ops/channels_last.py), so that a network stays in one
        layout; the traced and gradient plans keep NCHW outputs."""
        self.channels_last = True
        self.plans.clear()
        self.fast.clear()

    def fuse_pool(self, pool: Op) -> bool:
        """Absorb the MaxPool (no Indices output) that is the only consumer of this convolution's output (after
        any fused activation): each chunk of the batch is then pooled while still in cache and only the pooled
        values are written out. Return True if absorbed."""
        if getattr(pool, "op_type", "") != "MaxPool" or getattr(pool, "want_indices", True) or self.pool:
            return False
        if self.act is not None and not self.act.monotonic:
            return False  # the activation is applied after pooling, which is only the same when monotonic
        self.pool = pool
        self.fast.clear()
        return True

    def _check_weight(self, weight: np.ndarray, bias: np.ndarray | None) -> None:
        if weight.ndim < 3:
            raise self.fail(f"weight of shape {weight.shape} must have rank >= 3 (M, C/group, kernel...)")
        out_channels = weight.shape[0]
        if out_channels % self.group:
            raise self.fail(f"weight of shape {weight.shape}: {out_channels} output channels are not divisible by "
                            f"group={self.group}")
        if bias is not None and bias.size != out_channels:
            raise self.fail(f"bias of shape {bias.shape} has {bias.size} values for {out_channels} output channels")

    def _fit(self, x: np.ndarray, weight_shape: tuple[int, ...]) -> tuple:
        """The geometry of this input against the weight, checked before anything is allocated (the forward
        and the gradient plans share it): (kernel, strides, dilations, begins, ends, padded, out_sizes)."""
        rank = x.ndim - 2
        if rank < 1 or len(weight_shape) != x.ndim:
            raise self.fail(f"input of shape {x.shape} does not match the weight {tuple(weight_shape)}")
        kernel, strides, dilations, pads = self.geometry.resolve(rank, weight_shape[2:])
        channels, sizes = x.shape[1], x.shape[2:]
        if channels != weight_shape[1] * self.group or weight_shape[0] % self.group:
            raise self.fail(f"input has {channels} channels but the weight {tuple(weight_shape)} with "
                            f"group={self.group} expects {weight_shape[1] * self.group}")
        begins, ends = resolve_pads(self.auto_pad, sizes, kernel, strides, dilations, pads)
        check_fits(self, sizes, begins, ends, kernel, dilations)
        padded = [s + b + e for s, b, e in zip(sizes, begins, ends, strict=True)]
        out_sizes = conv_out_sizes(padded, kernel, dilations, strides)
        strides, dilations = effective_steps(out_sizes, kernel, strides, dilations, padded)
        return kernel, strides, dilations, begins, ends, padded, out_sizes

    def _plan(self, x: np.ndarray, weight_shape: tuple[int, ...], has_bias: bool) -> _Plan:
        """The plan for one input shape, after checking (before anything is allocated) that the geometry fits
        this input and that its output, scratch buffers and work are within the node's Limits."""
        kernel, strides, dilations, begins, ends, padded, out_sizes = self._fit(x, weight_shape)
        rank, (batch, channels) = x.ndim - 2, x.shape[:2]
        out_channels = weight_shape[0]
        self.check_size((1, channels, *padded), x.dtype, f"padded input image (pads {begins + ends})")
        self.check_size((batch, out_channels, *out_sizes), x.dtype, "output")
        k_group = weight_shape[1] * math.prod(kernel)
        # the column buffer of one image (full-width columns, only with unit strides, span whole padded rows)
        positions = out_sizes[0] * math.prod(padded[1:]) if all(s == 1 for s in strides) else math.prod(out_sizes)
        self.check_size((self.group, k_group + 1, max(positions, math.prod(out_sizes))), x.dtype, "column buffer")
        self.check_work(batch * out_channels * math.prod(out_sizes) * k_group, "the convolution")
        no_padding = not any(begins) and not any(ends)
        geometry = (kernel, strides, dilations, begins, ends)
        try:
            if self.group == 1 and all(k == 1 for k in kernel) and all(s == 1 for s in strides) and no_padding:
                return _PointwisePlan(x.shape, out_channels, has_bias)
            if self.channels_last and 1 < self.group < channels and all(k == 1 for k in kernel) \
                    and all(s == 1 for s in strides) and no_padding:
                return _GroupedPointwisePlan(x.shape, self.group, out_channels, has_bias)
            if self.group > 1 and self.group == channels == out_channels and math.prod(kernel) <= MAX_TAPS:
                self.check_size((batch, channels, *padded), x.dtype, "padded input")
                if rank == 2:
                    return _FlatDepthwisePlan(x.shape, x.dtype, *geometry, has_bias)
                return _DepthwisePlan(x.shape, x.dtype, *geometry, has_bias)
            if self.channels_last and self.group == 1 and rank == 2 and strides[0] == 1 and kernel[0] > 1 \
                    and ROW_SHIFT_RATIO * out_channels <= channels and kernel[1] * channels >= CHANNELS_LAST_MIN_RUN:
                # its buffer spans every padded row (more than the output's with a tall dilation)
                self.check_size((padded[0] * out_sizes[1], kernel[1] * channels + 1), x.dtype, "row column buffer")
                return _RowShiftPlan(x.shape, x.dtype, out_channels, *geometry, has_bias)
            run = kernel[-1] * channels if dilations[-1] == 1 else channels
            item = x.dtype.itemsize
            blocked = self.channels_last and _blocks_pay(math.prod(out_sizes) * (k_group + 1) * item,
                                                         (k_group + 1) * out_channels * item)
            if self.group == 1 and (run >= CHANNELS_LAST_MIN_RUN or blocked and run >= CHANNELS_LAST_MIN_RUN_BLOCKED):
                return _ChannelsLastPlan(x.shape, x.dtype, out_channels, *geometry, has_bias, self.channels_last,
                                         pooled=self.channels_last and self.pool is not None)
            plan = _Im2colPlan(x.shape, x.dtype, self.group, out_channels, *geometry, has_bias,
                               channels_last=self.channels_last)
            self.check_size((batch, out_channels, *plan.computed_sizes), x.dtype, "output")
            return plan
        except ValueError as exc:
            raise self.fail(f"input {x.shape}, kernel {kernel}: {exc}") from None

    def _entry(self, x: np.ndarray, w: np.ndarray, b: np.ndarray | None) -> tuple[_Plan, np.ndarray | None]:
        """The (plan, prepared weight matrix or None) of this input shape; call with the lock held."""
        key: tuple = (x.shape, x.dtype) if self.static else (x.shape, x.dtype, w.shape, b is None)
        entry = self.plans.get(key)
        if entry is None:
            if not self.static:
                self._check_weight(w, b)
            plan = self._plan(x, w.shape, b is not None)
            matrix = _prepare(plan, w, b, self.group, x.dtype) if self.static else None
            entry = self.plans[key] = (plan, matrix)
        return entry

    def run(self, x, w, b=None):
        # a shape seen before at a batch that fits one chunk: its runner straight away (the runners exist only
        # for constant weights, this node's own activation and no float16, which is what run_activated checks
        # first; ~1 us a call of LeNet's two batch-1 convolutions)
        fast = self.fast.get((x.shape, x.dtype))
        if fast is not None:
            with self.lock:
                return fast(x)
        return self.run_activated(self.act, x, w, b)

    def specialize(self, x, w, b=None) -> Callable[..., np.ndarray] | None:
        """``run`` for inputs of ``x``'s shape and dtype as its runner straight away, any other input through
        ``run`` (FastPlan.specialize): only where ``run`` itself would take a runner (constant weights: ``w`` and
        ``b`` are the same every call)."""
        fast = self.fast.get((x.shape, x.dtype))
        return None if fast is None else self._guarded(fast, x)

    def _guarded(self, fast: Callable[[np.ndarray], np.ndarray], x: np.ndarray) -> Callable[..., np.ndarray]:
        """``fast`` under the lock for inputs of ``x``'s shape and dtype, ``run`` for any other."""
        shape, dtype, lock, general = x.shape, x.dtype, self.lock, self.run

        def run(x, w, b=None):
            if x.shape != shape or x.dtype is not dtype:
                return general(x, w, b)
            with lock:
                return fast(x)

        return run

    def run_activated(self, act: Activation | None, x, w, b=None):
        """``run`` with ``act`` applied to the output in place of the fused activation (a gradient plan's
        Conv -> Relu pair: the ReLU applied chunk by chunk while the output is in cache, no pass of its own)."""
        if x.dtype == np.float16:  # BLAS has no half precision: accumulate in float32, round once at the end
            wide = self.run_activated(act, x.astype(np.float32), w.astype(np.float32),
                                      None if b is None else b.astype(np.float32))
            return wide.astype(np.float16)
        if act is self.act and self.static:
            fast = self.fast.get((x.shape, x.dtype))
            if fast is not None:
                with self.lock:
                    return fast(x)
        if self.static:
            w, b = self.weight, self.bias
        with self.lock:
            plan, matrix = self._entry(x, w, b)
            if act is self.act and self.static and isinstance(plan, _FUSING) \
                    and x.shape[0] == plan.rows and x.dtype != np.float16:
                fast = plan.single_chunk(matrix, act, self.pool)
                if fast is not None:
                    keep(self.fast, (x.shape, x.dtype), fast)
                    return fast(x)
            if matrix is None:
                matrix = _prepare(plan, w, b, self.group, x.dtype)
            if self.pool is None:
                return plan.run(x, matrix, act)
            if isinstance(plan, _FUSING):
                return plan.run(x, matrix, act, self.pool)
            y = self.pool.run(plan.run(x, matrix, None))
        if act is not None:
            act(y)
        return y

    def backward(self, inputs, outputs, grads, wanted=None):
        """dX, dW and dB of the plain convolution; a kernel with a fused activation or pooling (the fast
        inference plan only) has no rule. Only the ``wanted`` gradients are computed (the image's dX of a
        first layer never is in training).

        dW (and dB) come from the forward plan's own columns when it has them (im2col, channels-last), made
        again chunk by chunk, one matmul per chunk over its positions. dX of a unit-stride convolution is
        ConvInputGradPlan's; the other cases (strided, depthwise, pointwise) go through ConvGradPlan (see
        conv_grad.py)."""
        if self.act is not None or self.pool is not None:
            raise self.fail("a convolution with a fused activation or pooling has no gradient rule")
        x = inputs[0]
        w = inputs[1] if len(inputs) > 1 and inputs[1] is not None else self.weight
        b = inputs[2] if len(inputs) > 2 and inputs[2] is not None else self.bias
        dy = grads[0] if grads else None
        result: list = [None] * len(inputs)
        if dy is None or x is None or w is None:
            return result

        def want(index: int) -> bool:
            return wanted is None or (index < len(wanted) and bool(wanted[index]))

        want_x = x.dtype.kind == "f" and want(0)
        want_w = w.dtype.kind == "f" and len(result) > 1 and want(1)
        want_b = b is not None and len(result) > 2 and want(2)
        if not (want_x or want_w or want_b):
            return result
        work = np.result_type(x.dtype, w.dtype, dy.dtype)
        if work.kind != "f" or work.itemsize < 4:
            work = np.dtype(np.float32)  # BLAS has no half precision
        xw, ww, dyw = (a.astype(work, copy=False) for a in (x, w, dy))
        bw = None if b is None else b.astype(work, copy=False)
        dx = dw = db = None
        with self.lock:
            if want_w or want_b:
                plan = self._entry(xw, ww, bw)[0] if x.dtype == work else None
                if isinstance(plan, _Im2colPlan) and plan.full_width:
                    plan = self._exact_twin(plan, xw, ww, bw)
                if isinstance(plan, (_Im2colPlan, _ChannelsLastPlan)):
                    dw, db = _weight_grad(plan, xw, dyw, ww.shape, self.group)
                elif want_w:
                    dw = self._fallback_plan(xw, ww.shape).run(xw, ww, dyw, False, True)[1]
            if want_x:
                dx = self._input_grad(xw, ww, dyw)
        if want_b and db is None:
            db = dyw.sum(axis=(0, *range(2, dy.ndim)))
        if want_x:
            result[0] = dx.astype(x.dtype, copy=False)
        if want_w and dw is not None:
            result[1] = dw.astype(w.dtype, copy=False)
        if want_b:
            result[2] = db.reshape(b.shape).astype(b.dtype, copy=False)
        return result

    def _exact_twin(self, plan: _Im2colPlan, x: np.ndarray, w: np.ndarray, b: np.ndarray | None) -> _Im2colPlan:
        """The forward plan's columns over the exact output positions (for dW: no padded copy of dY)."""
        key = ("exact", x.shape, x.dtype, w.shape, b is None)
        twin = self.grad_plans.get(key)
        if twin is None:
            general = self._fallback_plan(x, w.shape)  # (its checks, and the geometry)
            twin = self.grad_plans[key] = _Im2colPlan(
                x.shape, x.dtype, self.group, w.shape[0], general.kernel, general.strides, general.dilations,
                general.begins, general.ends, b is not None, exact=True)
        return twin

    def _fallback_plan(self, x: np.ndarray, weight_shape: tuple[int, ...]) -> ConvGradPlan:
        key = (x.shape, x.dtype, tuple(weight_shape))
        plan = self.grad_plans.get(key)
        if plan is None:
            plan = self.grad_plans[key] = self._grad_plan(x, weight_shape)
        return plan

    def _input_grad(self, x: np.ndarray, w: np.ndarray, dy: np.ndarray | None, fill=None) -> np.ndarray:
        """dX from ``dy``, or from ``fill(start, count, target)`` writing the output gradient of images
        ``start:start + count`` into ``target`` (see ConvInputGradPlan.run)."""
        key = ("dx", x.shape, x.dtype, w.shape)
        plan = self.grad_plans.get(key)
        if plan is None:
            general = self._fallback_plan(x, w.shape)  # (its checks, and the geometry)
            plan = general
            if all(s == 1 for s in general.strides):
                plan = ConvInputGradPlan(x.shape, x.dtype, self.group, w.shape[0], general.kernel,
                                         general.dilations, general.begins, general.ends, general.out_sizes)
            self.grad_plans[key] = plan
        if isinstance(plan, ConvInputGradPlan):
            return plan.run(w, dy, x.shape, fill)
        if dy is None:
            dy = np.empty((x.shape[0], w.shape[0], *plan.out_sizes), x.dtype)
            fill(0, x.shape[0], dy)
        return plan.run(x, w, dy, True, False)[0]

    def _grad_plan(self, x: np.ndarray, weight_shape: tuple[int, ...]) -> ConvGradPlan:
        """The backward plan of one input shape, after the same checks as the forward's."""
        kernel, strides, dilations, begins, ends, padded, out_sizes = self._fit(x, weight_shape)
        batch, channels = x.shape[:2]
        check_taps(self, math.prod(kernel), f"kernel {kernel} (gradient)")
        self.check_size((batch, channels, *padded), x.dtype, "padded input gradient")
        self.check_size((channels * math.prod(kernel), math.prod(out_sizes)), x.dtype, "column buffer")
        self.check_work(3 * batch * weight_shape[0] * math.prod(out_sizes) * weight_shape[1] * math.prod(kernel),
                        "the convolution's gradient")
        return ConvGradPlan(x.shape, x.dtype, self.group, weight_shape[0], kernel, strides, dilations, begins, ends,
                            out_sizes)


# ----------------------------------------------------------------------------------------------------------------
# ConvTranspose


@register("ConvTranspose", 1)
class ConvTranspose(FusableOp):
    """Transposed convolution as matmul (input pixels -> kernel-sized patches) then a scatter-add of the
    patches into the output (col2im), one strided add per kernel tap."""

    def __init__(self, node: NodeSpec):
        super().__init__(node)
        self.group = int_attr(self, "group", 1, minimum=1)
        weight, bias = self.const(1), self.const(2)
        if weight is not None:
            self._check_weight(weight, bias)
        self.geometry = Geometry(self, kernel=None if weight is None else weight.shape[2:])
        self.auto_pad = self.geometry.auto_pad
        self.output_padding = ints_attr(self, "output_padding", 0, "non-negative integers")
        self.output_shape = ints_attr(self, "output_shape", 1, "positive integers")
        if self.geometry.rank is not None:
            self._check_lengths(self.geometry.rank)
        self.weight = None if weight is None else self._weight_matrix(weight)
        self.weight_shape = None if weight is None else weight.shape
        self.bias = None if bias is None or weight is None else bias.reshape((-1,) + (1,) * (weight.ndim - 2))
        self.geometries: dict[tuple, tuple] = {}
        self.lock = threading.Lock()

    def _check_weight(self, weight: np.ndarray, bias: np.ndarray | None) -> None:
        if weight.ndim < 3:
            raise self.fail(f"weight of shape {weight.shape} must have rank >= 3 (C, M/group, kernel...)")
        if weight.shape[0] % self.group:
            raise self.fail(f"weight of shape {weight.shape}: {weight.shape[0]} input channels are not divisible by "
                            f"group={self.group}")
        out_channels = weight.shape[1] * self.group
        if bias is not None and bias.size != out_channels:
            raise self.fail(f"bias of shape {bias.shape} has {bias.size} values for {out_channels} output channels")

    def _check_lengths(self, rank: int) -> None:
        extra, shape = self.output_padding, self.output_shape
        if extra is not None and len(extra) != rank:
            raise self.fail(f"output_padding {extra} must have {rank} values, one per spatial axis")
        if shape is not None and len(shape) not in (rank, rank + 2):
            raise self.fail(f"output_shape {shape} must have {rank} values, one per spatial axis")
        if extra is not None:
            strides = self.geometry.strides_attr or [1] * rank
            dilations = self.geometry.dilations_attr or [1] * rank
            if any(e >= max(s, d) for e, s, d in zip(extra, strides, dilations, strict=True)):
                raise self.fail(f"output_padding {extra} must be smaller than the strides {strides} (or the "
                                f"dilations {dilations})")

    def _weight_matrix(self, weight: np.ndarray) -> np.ndarray:
        # (C, M/g, k...) -> (g, M/g * prod(k), C/g): maps one group's input channels to its output patches
        channels = weight.shape[0]
        grouped = weight.reshape(self.group, channels // self.group, -1)
        return np.ascontiguousarray(grouped.transpose(0, 2, 1))

    def _geometry(self, x_shape: tuple[int, ...], weight_shape: tuple[int, ...]) -> tuple:
        """kernel, strides, dilations, begins, output sizes and canvas room for one input shape, checked (once
        per shape) against the input and the node's Limits before anything is allocated."""
        rank = len(x_shape) - 2
        if rank < 1 or len(weight_shape) != len(x_shape):
            raise self.fail(f"input of shape {x_shape} does not match the weight {tuple(weight_shape)}")
        kernel, strides, dilations, pads = self.geometry.resolve(rank, weight_shape[2:])
        self._check_lengths(rank)
        batch, channels, *in_sizes = x_shape
        if channels != weight_shape[0]:
            raise self.fail(f"input has {channels} channels but the weight {tuple(weight_shape)} expects "
                            f"{weight_shape[0]}")
        if any(n < 1 for n in in_sizes):
            raise self.fail(f"input of shape {x_shape} has an empty spatial axis")
        check_taps(self, math.prod(kernel), f"kernel {kernel}")
        strides, dilations = effective_steps(in_sizes, kernel, strides, dilations)
        extra = self.output_padding or [0] * rank
        # the size of the output before cropping by the pads
        full = [s * (n - 1) + op + (k - 1) * d + 1 for s, n, op, k, d in zip(strides, in_sizes, extra, kernel,
                                                                          dilations, strict=True)]
        if self.output_shape:
            out = list(self.output_shape[-rank:])
            total = [f - o for f, o in zip(full, out, strict=True)]
            if self.auto_pad == "SAME_UPPER":
                begins = [t // 2 for t in total]
            else:
                begins = [t - t // 2 for t in total]
        elif self.auto_pad in ("SAME_UPPER", "SAME_LOWER"):
            out = [n * s for n, s in zip(in_sizes, strides, strict=True)]
            total = [f - o for f, o in zip(full, out, strict=True)]
            if self.auto_pad == "SAME_UPPER":
                begins = [t // 2 for t in total]
            else:
                begins = [t - t // 2 for t in total]
        else:
            all_pads = (pads if self.auto_pad != "VALID" else None) or [0] * (2 * rank)
            begins = all_pads[:rank]
            out = [f - b - e for f, b, e in zip(full, begins, all_pads[rank:], strict=True)]
        if any(o < 1 for o in out):
            raise self.fail(f"input {x_shape}, kernel {kernel}: output size {out} is empty (pads {pads})")
        # room for the un-cropped output and for any crop window (negative pads, output_shape beyond it)
        room = [max(f, b + o) + max(0, -b) for f, b, o in zip(full, begins, out, strict=True)]
        shift = [max(0, -b) for b in begins]
        out_channels = weight_shape[1] * self.group
        self.check_size((batch, out_channels, *kernel, *in_sizes), np.float64, "patch buffer")
        self.check_size((batch, out_channels, *room), np.float64,
                        f"output canvas (output sizes {out}, crop begins {begins})")
        patches = batch * out_channels * math.prod(kernel) * math.prod(in_sizes)
        self.check_work(patches * (channels // self.group) + patches, "the transposed convolution")
        return kernel, strides, dilations, begins, out, room, shift

    def run(self, x, w, b=None):
        weight, weight_shape = self.weight, self.weight_shape
        if weight is None:
            self._check_weight(w, b)
            weight, weight_shape = self._weight_matrix(w), w.shape
        bias = self.bias
        if bias is None and b is not None:
            bias = b.reshape((-1,) + (1,) * (len(weight_shape) - 2))
        key = (x.shape, tuple(weight_shape))
        with self.lock:
            geometry = self.geometries.get(key)
            if geometry is None:
                geometry = self.geometries[key] = self._geometry(x.shape, tuple(weight_shape))
        kernel, strides, dilations, begins, out, room, shift = geometry
        batch, channels, *in_sizes = x.shape
        groups, mg = self.group, weight_shape[1]
        patches = np.matmul(weight, x.reshape(batch, groups, channels // groups, -1))
        patches = patches.reshape(batch, groups * mg, *kernel, *in_sizes)
        canvas = np.zeros((batch, groups * mg, *room), dtype=np.result_type(x.dtype, weight.dtype))
        for tap in np.ndindex(*kernel):
            index = tuple(slice(sh + t * d, sh + t * d + (n - 1) * s + 1, s)
                          for sh, t, d, s, n in zip(shift, tap, dilations, strides, in_sizes, strict=True))
            canvas[(slice(None), slice(None)) + index] += patches[(slice(None), slice(None)) + tap]
        crop = tuple(slice(sh + b, sh + b + o) for sh, b, o in zip(shift, begins, out, strict=True))
        y = canvas[(slice(None), slice(None)) + crop]
        y = y + bias if bias is not None else np.ascontiguousarray(y)
        if self.act is not None:
            self.act(y)
        return y.astype(x.dtype, copy=False)

    def backward(self, inputs, outputs, grads):
        """dX, dW and dB (conv_grad.conv_transpose_backward); no rule with a fused activation."""
        if self.act is not None:
            raise self.fail("a transposed convolution with a fused activation has no gradient rule")
        x = inputs[0]
        w = inputs[1] if len(inputs) > 1 else None
        b = inputs[2] if len(inputs) > 2 else None
        dy = grads[0] if grads else None
        result: list = [None] * len(inputs)
        if dy is None or x is None or w is None:
            return result
        work = np.result_type(x.dtype, w.dtype, dy.dtype)
        if work.kind != "f" or work.itemsize < 4:
            work = np.dtype(np.float32)
        xw, ww, dyw = (a.astype(work, copy=False) for a in (x, w, dy))
        if b is not None:
            result[2] = dyw.sum(axis=(0, *range(2, dy.ndim))).reshape(b.shape).astype(b.dtype, copy=False)
        self._check_weight(w, b)
        key = (x.shape, tuple(w.shape))
        with self.lock:
            geometry = self.geometries.get(key)
            if geometry is None:
                geometry = self.geometries[key] = self._geometry(x.shape, tuple(w.shape))
        dx, dw = conv_transpose_backward(xw, ww, dyw, self.group, geometry, x.dtype.kind == "f",
                                         w.dtype.kind == "f")
        result[0] = None if dx is None else dx.astype(x.dtype, copy=False)
        if len(result) > 1:
            result[1] = None if dw is None else dw.astype(w.dtype, copy=False)
        return result
