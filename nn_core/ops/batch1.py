"""Kernels the fast inference plan swaps in at batch 1 (``batch1_kernel``): the same operators with layouts and
per-shape preparation that suit a small batch; the traced and gradient plans keep the registry's kernels.

Depthwise 2-D convolution as im2col + one batched BLAS matmul over the channels.

A depthwise convolution does few multiply-adds per output (one per kernel tap), so the tap-by-tap form of
conv.py (_FlatDepthwisePlan: per tap, one multiply and one add over the whole image) is bound by NumPy passes over
memory: 2 * taps passes of the image, each reading and writing it. Here each chunk of channels is copied once into
columns (channel, tap, position) and reduced over the taps by one batched matmul (channel, 1, taps) @ (channel,
taps, positions), which BLAS runs from cache; the bias rides along as one more column row of ones. Measured on
MobileNet-style layers at batch 1 (one thread): about half the time of the tap-by-tap form.

With unit strides the windows run over the full padded width (each column row is one contiguous run of the padded
image, the extra positions are computed and the output is a strided view without them), as conv.py's NCHW im2col
does; strided layers take the exact positions, and only up to STRIDED_CHANNELS channels.

The sums are BLAS's, so results equal the tap-by-tap form within float rounding, not bit for bit: this kernel is
only swapped in by the fast plan (``batch1_kernel``); the traced and gradient plans keep conv.py's Conv.

The depthwise and pointwise plans here make a ``runner`` per input shape (RunnerConv keeps it, Conv.run calls it):
everything fixed per call is bound once, and the bias and fused ReLU/Clip are one ``finisher`` of same-shape
passes over the flat output. At batch 1 a MobileNet-style net is bound by memory passes and cache misses rather
than arithmetic (a layer's second call in a row takes ~30% less than its call in the run, with everything else
evicting its buffers in between), so these keep per-layer buffers small and share what can be shared.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable

import numpy as np

from .activations import has_nan
from .caches import KEPT_ENTRIES, constant_run, keep
from .conv import (
    Activation,
    Conv,
    ConvTranspose,
    _ChannelsLastPlan,
    _Clip,
    _FlatDepthwisePlan,
    _Im2colPlan,
    _PaddedScratch,
    _PointwisePlan,
    _Relu,
    _row_major_strides,
    padded_and_out_sizes,
)
from .registry import NodeSpec, Op
from .windows import WindowError, checked_windows

try:  # the C function np.einsum hands its operands to when optimize is off: the depthwise layers call it once each
    # per run, and np.einsum's Python wrapper (array-function dispatch, keyword checks) costs ~1.5 us of that call
    # (of 10-35 us at MobileNet-style sizes)
    from numpy._core.multiarray import c_einsum as tap_einsum  # NumPy 2
except ImportError:
    try:
        from numpy.core.multiarray import c_einsum as tap_einsum  # NumPy 1
    except ImportError:
        tap_einsum = np.einsum


def _private_einsum_agrees() -> bool:
    """Whether the private C function still computes what np.einsum does on the layers' form (a NumPy release
    may change it without notice): checked once at import, on a few values."""
    try:
        taps = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
        weights = np.arange(12, dtype=np.float32).reshape(3, 4)
        out = np.empty((2, 4), np.float32)
        tap_einsum("ijk,jk->ik", taps, weights, out=out)
        return bool(np.array_equal(out, np.einsum("ijk,jk->ik", taps, weights)))
    except Exception:  # noqa: BLE001 - any failure means: use the public function
        return False


if tap_einsum is not np.einsum and not _private_einsum_agrees():
    tap_einsum = np.einsum

# the column buffer of one chunk of channels is kept around this size, so the copy and the matmul stay in cache
DEPTHWISE_COLUMN_BYTES = 256 * 1024
# measured at batch 1 (the window's case); larger batches keep conv.py's form, which chunks over images. Up to 12
# images (a model exported at a fixed batch of 10, as some public digit models are): same-process A/B against 8,
# LeNet-5 with batch norm at 10 images 1.40x as fast, MobileNet-style at 10 1.66x, depthwise-separable at 12
# 1.12x, LeNet at 12 and ResNet-style at 12 within 1%; at 16 the bundled LeNet was 2% slower
SMALL_BATCH = 12
# strided layers: faster this way up to this many channels (2.5x on 8-12 channels, 1.2x on 32-64); with more,
# the per-channel matmuls of a small output cost more than the tap-by-tap form's phase images save
STRIDED_CHANNELS = 64
# from this many channels a depthwise layer runs channels-last (ChannelsLastDepthwisePlan): one einsum over the
# taps of a strided window view, whose inner loop runs over contiguous channel vectors. Below it the channel
# vectors are too short for that loop and MatmulDepthwisePlan's per-channel matmuls are cheaper. (8 and 12
# channels, the depthwise-separable fixtures dwsep_l11/d20: 1-3% faster channels-last in same-run A/B, where the
# output also reaches the pointwise conv after it without a copy)
CHANNELS_LAST_DEPTHWISE = 8
# an epilogue's bias is added over rows of at least this many elements: NumPy runs a broadcast operand of one
# short row (a channel vector) or a 0-d bound about half as fast as a same-shape one
EPILOGUE_RUN = 8192
# constant operands (ReLU's zeros, Clip's bounds) are laid out over outputs of up to this many elements and shared
# by every layer: one buffer per value, which stays in cache as each layer reads it, instead of one per layer
SHARED_CONSTANT_ELEMENTS = 1 << 18
# a convolution whose columns Conv takes channels-last runs NCHW im2col instead (conv.py's _Im2colPlan) at small
# batches when it has at most NCHW_OUT_CHANNELS outputs and images of at least NCHW_MIN_SIZE: the channels-last
# GEMM's few output columns, and the transposing copies into and out of NHWC, cost more than the NCHW columns'
# shorter runs (a U-Net's 16 -> 8 channel 14x14 conv: 16 -> 11 us alone)
NCHW_OUT_CHANNELS = 8
NCHW_MIN_SIZE = 14
# a transposed convolution runs as PhaseTransposePlan while its phase-laid weights (phases * offsets per input
# channel) are at most this many times the kernel's taps: beyond, the zeros cost more than the scatter-add saves
PHASE_DENSITY = 2
# a convolution with a fused side-by-side p x p MaxPool runs as PhasePooledIm2colPlan while its phase offsets,
# (kernel + p - 1) ** 2, are at most this many times the kernel's taps: LeNet-5's 5x5 pooled by 2 (1.44) gains
# ~4 us of its ~17 us conv1; the 3x3 convolutions of torch_avgpool_m11 (1.78) gained nothing, the zero weights'
# BLAS work and the phase copies costing what the pooling passes saved
PHASE_POOL_DENSITY = 1.5
# ... except that a small pooled layer whose kernel rows span at least POOLED_RUN values channels-last (kernel
# width * channels), with at least POOLED_OUT_CHANNELS outputs over at most POOLED_POSITIONS output positions,
# runs as PooledChannelsLastPlan: the phase layout's zero weights and full-width columns there make about twice the
# products (a classic LeNet-5's 6 -> 16 channel conv2 on 14x14: 1.3x as fast alone, and its head fuses, 1.50x ->
# 1.13x onnxruntime for the model). Measured 5x5 and 7x7 blocks: channels-last 1.1-1.65x as fast over 3-6 input
# channels, 16-32 outputs and 7x7 to 20x20 outputs; the phase plan 1.2-2.5x as fast with one or two input
# channels (LeNet's conv1), 8 outputs, or 28x28 outputs
POOLED_RUN = 15
POOLED_OUT_CHANNELS = 16
POOLED_POSITIONS = 400


def epilogue_run(size: int, period: int) -> int:
    """The row length the epilogue works in: a multiple of ``period`` (the bias repeats with it) that divides
    ``size``, at least EPILOGUE_RUN when the output allows."""
    count = size // period
    for k in range(1, count + 1):
        if count % k == 0 and k * period >= EPILOGUE_RUN:
            return k * period
    return size


def tiled_operand(values: np.ndarray, shape: tuple[int, ...], dtype: np.dtype) -> tuple[np.ndarray, tuple[int, ...]]:
    """``values`` (broadcastable to a C-contiguous float output of ``shape`` over its trailing axes) as the
    same-shape operand of an epilogue pass: one row of at least EPILOGUE_RUN elements repeating them (the whole
    output when that is one row), and the shape to view the output in for the pass (rows of that length)."""
    size = math.prod(shape)
    trailing = shape[len(shape) - values.ndim:]
    period = math.prod(trailing)
    run = epilogue_run(size, period)
    block = np.broadcast_to(values.astype(dtype, copy=False), trailing).reshape(-1)  # one period
    return np.tile(block, run // period), ((size // run, run) if run < size else (size,))


def finisher(shape: tuple[int, ...], dtype: np.dtype, bias: np.ndarray | None, act: Activation | None
             ) -> Callable[[np.ndarray], None]:
    """The in-place epilogue of a fresh C-contiguous output of ``shape``: + ``bias`` (broadcastable to ``shape``
    over its trailing axes), then ``act``. Each pass is a same-shape SIMD loop over the flat output: ReLU's zeros
    and Clip's bounds are shared runs (one per value for every layer, so they stay in cache), the bias is laid out
    over rows of at least EPILOGUE_RUN elements (over the whole output when that is one row), and a one-row
    output is worked as a 1-D array (a 2-D call costs ~0.3 us more, a third of a small layer's pass). The passes
    and their order are the activation's own (max, then min for a Clip, whose infinite bound is skipped as a
    no-op), so results are the same bit for bit."""
    size = math.prod(shape)
    floating = dtype.kind == "f" and size > 0
    shared = floating and size <= SHARED_CONSTANT_ELEMENTS
    flat_shape = (size,) if floating else shape

    def bound(value: float) -> np.ndarray:
        return constant_run(value, dtype, size) if shared else np.array(value, dtype)

    passes: list[tuple[Callable, np.ndarray | None, tuple[int, ...]]] = []
    if bias is not None:
        if floating:
            values, rows = tiled_operand(bias, shape, dtype)
            passes.append((np.add, values, rows))
        else:
            passes.append((np.add, bias.astype(dtype, copy=False), shape))
    for step in act.steps if act is not None else ():
        if floating and type(step) is _Relu:
            passes.append((np.maximum, bound(0.0), flat_shape))
        elif floating and type(step) is _Clip:
            if step.low != -np.inf:
                passes.append((np.maximum, bound(step.low), flat_shape))
            if step.high != np.inf:
                passes.append((np.minimum, bound(step.high), flat_shape))
        else:
            passes.append((step.into, None, shape))

    def finish(y: np.ndarray) -> None:
        for function, operand, view in passes:
            part = y.reshape(view)
            if operand is None:
                function(part, part)
            else:
                function(part, operand, out=part)

    return finish


class MatmulDepthwisePlan:
    """One input shape of a 2-D depthwise convolution (one input and one output channel per group)."""

    def __init__(self, x_shape: tuple[int, ...], dtype: np.dtype, kernel: list[int], strides: list[int],
                 dilations: list[int], begins: list[int], ends: list[int], has_bias: bool):
        batch, channels, height, width = x_shape
        padded, self.out_sizes = padded_and_out_sizes((height, width), kernel, strides, dilations, begins, ends)
        (kh, kw), (dh, dw) = kernel, dilations
        self.batch, self.channels, self.has_bias = batch, channels, has_bias
        self.taps = taps = kh * kw
        wp = padded[1]
        item = dtype.itemsize
        width_k = taps + has_bias
        self.full_width = all(s == 1 for s in strides)
        if self.full_width:
            # positions over whole padded rows: one contiguous run of the padded image per (channel, tap); the
            # last channel's last windows read (kw - 1) * dw past its end, into the scratch's slack
            self.computed_sizes = [self.out_sizes[0], wp]
            position_shape, position_steps, col_steps = (self.out_sizes[0] * wp,), (1,), (1,)
            slack = (kw - 1) * dw
        else:  # the exact output positions, read with the strides
            self.computed_sizes = list(self.out_sizes)
            position_shape = tuple(self.out_sizes)
            position_steps, col_steps = (strides[0] * wp, strides[1]), (self.out_sizes[1], 1)
            slack = 0
        self.positions = positions = math.prod(position_shape)
        self.scratch = _PaddedScratch(1, channels, (height, width), begins, ends, dtype, slack)
        channel = self.scratch.channel_elems
        self.block = max(1, min(channels, DEPTHWISE_COLUMN_BYTES // (width_k * positions * item)))
        self.windows = checked_windows(self.scratch.flat, (channels, kh, kw, *position_shape),
                                       tuple(v * item for v in (channel, dh * wp, dw, *position_steps)))
        self.cols = np.empty((self.block, width_k, positions), dtype)
        if has_bias:
            self.cols[:, taps] = 1
        self.cols_taps = checked_windows(self.cols, (self.block, kh, kw, *position_shape), tuple(
            v * item for v in (width_k * positions, kw * positions, positions, *col_steps)), writeable=True)
        self.valid = (Ellipsis, slice(0, self.out_sizes[1])) if self.full_width else None

    def prepare(self, weight: np.ndarray, bias: np.ndarray | None, groups: int) -> np.ndarray:
        """(C, 1, kh, kw) [+ bias] -> (C, 1, taps [+ 1]): each channel's row of the batched matmul."""
        matrix = weight.reshape(self.channels, 1, self.taps)
        if bias is not None:
            matrix = np.concatenate([matrix, bias.astype(weight.dtype, copy=False).reshape(-1, 1, 1)], axis=2)
        return np.ascontiguousarray(matrix)

    def runner(self, matrix: np.ndarray, act: Activation | None) -> Callable[[np.ndarray], np.ndarray]:
        """The convolution of an input of this plan's shape with ``matrix`` (``prepare``) and ``act``, with
        everything that is the same on every call bound once."""
        channels, positions, valid, batch = self.channels, self.positions, self.valid, self.batch
        interior, windows, cols, cols_taps = self.scratch.interior, self.windows, self.cols, self.cols_taps
        chunks = [(start, min(self.block, channels - start)) for start in range(0, channels, self.block)]
        shape = (batch, channels, *self.computed_sizes)
        finish = finisher(shape, matrix.dtype, None, act)

        def run(x: np.ndarray) -> np.ndarray:
            y = np.empty(shape, x.dtype)
            flat_out = y.reshape(batch, channels, 1, positions)
            for image in range(batch):
                interior[...] = x[image:image + 1]
                for start, count in chunks:
                    np.copyto(cols_taps[:count], windows[start:start + count])
                    np.matmul(matrix[start:start + count], cols[:count], out=flat_out[image, start:start + count])
            finish(y)
            return y[valid] if valid is not None else y

        return run

    def run(self, x: np.ndarray, matrix: np.ndarray, act: Activation | None) -> np.ndarray:
        return self.runner(matrix, act)(x)


def column_gathers(columns: np.ndarray, rows: slice, left: int, width: int, dw: int, sw: int
                   ) -> list[tuple[np.ndarray, tuple]]:
    """(target, input columns) per kernel column j of a column-strided depthwise conv: the padded columns j reads
    at each output column (wo * sw + j * dw), to gather from an NCHW input of ``width`` columns (``left`` of side
    padding) into the image ``rows`` of ``columns[j]``, zeros of shape (kw, N, Hp, Wo, C), as runs: the output
    columns whose source is padding are left zero. The targets are NCHW-shaped views, to be written with
    ``target[...] = x[columns]``."""
    out_width = columns.shape[3]
    copies = []
    for j in range(columns.shape[0]):
        first = max(0, -(-(left - j * dw) // sw))
        last = min(out_width - 1, (left + width - 1 - j * dw) // sw)
        if last < first:
            continue
        start = first * sw + j * dw - left
        target = columns[j][:, rows, first:last + 1, :].transpose(0, 3, 1, 2)
        copies.append((target, (Ellipsis, slice(start, start + (last - first) * sw + 1, sw))))
    return copies


# ChannelsLastDepthwisePlan's zero-padded input buffers with their locks, per (N, Hp, Wp, C, dtype, pads): the
# layers of one shape (ShuffleNet's 3-7 units of a stage) share one, which is then still in cache when the next
# of them copies its input in (each layer's own buffer had been evicted since its last call); every sharer writes
# the same interior, so the padding stays zero
_shared_pads: dict[tuple, tuple[np.ndarray, threading.Lock]] = {}
# ChannelsLastDepthwisePlan lays its weights over the fewest output columns (a divisor of the output width) whose
# channels make at least this many elements, and its einsum reads them again for each such band of a row: the
# inner loop keeps runs as long, and each layer's weights shrink from Wo copies to a few (28x28x136: 152 -> 76 KB,
# read from beyond L2 on each call in the model)
DEPTHWISE_WEIGHT_RUN = 1024


class ChannelsLastDepthwisePlan:
    """One input shape of a 2-D depthwise convolution computed channels-last, for many channels.

    With a unit column stride the input is copied once into a zero-padded (N, Hp, Wp, C) buffer (when it already
    has channels-last storage, as a previous layer of this kind or a channels-last pointwise conv hands it over,
    that copy is contiguous); one output row's (Wo, C) values of a tap are then one contiguous run of it, so a
    strided view (kh, kw, N, Ho, Wo * C) holds every tap without copying. With a column stride s, the columns
    each kernel column reads are copied from the input into their own zero-padded (N, Hp, Wo * C) buffer (kw
    copies of about 1/s of the input each, and no padded copy of the whole input) to get the same runs. One
    ``einsum`` then reduces the view, in bands of a row (DEPTHWISE_WEIGHT_RUN), against the weights laid out over
    a band, (kh, kw, band * C): a single NumPy call whose inner loop multiplies and accumulates runs of band * C
    values, instead of 2 * taps passes over the
    image (_FlatDepthwisePlan) or one small matmul per channel (MatmulDepthwisePlan). The output is NCHW-shaped
    over channels-last storage.

    Sums are einsum's, so results equal the tap-by-tap form within float rounding, not bit for bit."""

    def __init__(self, x_shape: tuple[int, ...], dtype: np.dtype, kernel: list[int], strides: list[int],
                 dilations: list[int], begins: list[int], ends: list[int], has_bias: bool):
        batch, channels, height, width = x_shape
        padded, self.out_sizes = padded_and_out_sizes((height, width), kernel, strides, dilations, begins, ends)
        (kh, kw), (dh, dw), (sh, sw) = kernel, dilations, strides
        (hp, wp), (ho, wo) = padded, self.out_sizes
        self.channels, self.has_bias, self.taps = channels, has_bias, kh * kw
        self.kernel = (kh, kw)
        # output columns per band of a row the weights are laid over
        self.band = band = next(q for q in range(1, wo + 1) if wo % q == 0 and
                                (q * channels >= DEPTHWISE_WEIGHT_RUN or q == wo))
        self.run_length = run = band * channels
        item = dtype.itemsize
        # (target, input columns): NCHW-shaped views written with the input's columns on each call
        self.copies: list[tuple[np.ndarray, tuple]] = []
        rows = slice(begins[0], begins[0] + height)
        # held while the input is copied in and read (a buffer shared with other layers' plans)
        self.lock = threading.Lock()
        if sw == 1:
            key = (batch, hp, wp, channels, dtype.str, tuple(begins), tuple(ends))
            shared = _shared_pads.get(key)
            if shared is None:
                shared = keep(_shared_pads, key, (np.zeros((batch, hp, wp, channels), dtype), self.lock))
            self.pad, self.lock = shared
            interior = self.pad[:, rows, begins[1]:begins[1] + width, :]
            self.copies.append((interior.transpose(0, 3, 1, 2), (Ellipsis,)))
            row = wp * channels
            self.windows = checked_windows(self.pad, (kh, kw, batch, ho, wo // band, run), tuple(
                v * item for v in (dh * row, dw * channels, hp * row, sh * row, run, 1)))
        else:
            self.columns = np.zeros((kw, batch, hp, wo, channels), dtype)
            self.copies.extend(column_gathers(self.columns, rows, begins[1], width, dw, sw))
            out_row = wo * channels
            self.windows = checked_windows(self.columns, (kh, kw, batch, ho, wo // band, run), tuple(
                v * item for v in (dh * out_row, batch * hp * out_row, hp * out_row, sh * out_row, run, 1)))
        self.nhwc = (batch, ho, wo, channels)

    def prepare(self, weight: np.ndarray, bias: np.ndarray | None, groups: int) -> np.ndarray:
        """(C, 1, kh, kw) [+ bias] -> (taps [+ 1], band * C): each tap's channel vector repeated for every output
        column of a band, then the bias's."""
        rows = weight.reshape(self.channels, self.taps).T
        if bias is not None:
            rows = np.concatenate([rows, bias.astype(weight.dtype, copy=False).reshape(1, -1)], axis=0)
        return np.ascontiguousarray(np.tile(rows, (1, self.band)))

    def runner(self, matrix: np.ndarray, act: Activation | None) -> Callable[[np.ndarray], np.ndarray]:
        """The convolution of an input of this plan's shape with ``matrix`` (``prepare``) and ``act``, with
        everything that is the same on every call bound once."""
        copies, windows, nhwc, lock = self.copies, self.windows, self.nhwc, self.lock
        bands = nhwc[2] // self.band
        # the same band of weights for every band of a row
        weights = np.broadcast_to(matrix[:self.taps].reshape(*self.kernel, 1, self.run_length),
                                  (*self.kernel, bands, self.run_length))
        finish = finisher((nhwc[0], nhwc[1], bands, self.run_length), matrix.dtype,
                          matrix[self.taps] if self.has_bias else None, act)

        def run(x: np.ndarray) -> np.ndarray:
            with lock:
                for target, columns in copies:
                    target[...] = x[columns]
                y = tap_einsum("ijnhqk,ijqk->nhqk", windows, weights)
            finish(y)
            return y.reshape(nhwc).transpose(0, 3, 1, 2)

        return run

    def run(self, x: np.ndarray, matrix: np.ndarray, act: Activation | None) -> np.ndarray:
        return self.runner(matrix, act)(x)


class ChannelsLastPointwisePlan(_PointwisePlan):
    """1x1 convolution (stride 1, no padding, one group) that keeps a channels-last input channels-last: when the
    NCHW-shaped input has channels-last storage only (a ChannelsLastDepthwisePlan's output), its (N * H * W, C) rows
    are a view and one matmul by the (C, M) weights makes the (N * H * W, M) output, again NCHW-shaped over
    channels-last storage, with no copy on either side. Any other input takes _PointwisePlan's NCHW matmul."""

    def __init__(self, x_shape: tuple[int, ...], out_channels: int, has_bias: bool):
        super().__init__(x_shape, out_channels, has_bias)
        batch, channels, *sizes = x_shape
        self.rows_shape = (batch * math.prod(sizes), channels)
        self.nhwc_shape = (batch, *sizes, out_channels)

    @staticmethod
    def prepare(weight: np.ndarray, bias: np.ndarray | None, groups: int) -> np.ndarray:
        """(M, C, 1, 1) [+ bias] -> (C [+ 1], M): the weights transposed, then the bias row."""
        rows = weight.reshape(weight.shape[0], -1).T
        if bias is not None:
            rows = np.concatenate([rows, bias.astype(weight.dtype, copy=False).reshape(1, -1)], axis=0)
        return np.ascontiguousarray(rows)

    def runner(self, matrix: np.ndarray, act: Activation | None) -> Callable[[np.ndarray], np.ndarray]:
        """The convolution of an input of this plan's shape with ``matrix`` (``prepare``) and ``act``; each
        storage's epilogue is made when an input of that storage first comes."""
        channels, rows_shape, nhwc_shape, out_shape = self.channels, self.rows_shape, self.nhwc_shape, self.out_shape
        # one image's (C, H * W) block as a 2-D operand, for ndarray.dot: np.matmul on the stacked (N, C, H * W)
        # form takes ~0.3 us more a call on small shapes, and with one input channel (K = 1, a size-1 axis BLAS
        # does not take) it falls back to NumPy's own loop: 4.7 us where dot takes 1.2 on a 28x28 image
        flat_in = (channels, math.prod(self.flat_in[2:])) if self.flat_in[0] == 1 else self.flat_in
        product = np.ndarray.dot if self.flat_in[0] == 1 else np.matmul
        weights = matrix[:channels]
        weights_t = weights.T
        bias = matrix[channels] if self.has_bias else None
        finishes: dict[bool, Callable[[np.ndarray], None]] = {}

        def finish(y: np.ndarray, rows: bool) -> None:
            done = finishes.get(rows)
            if done is None:
                done = finishes[rows] = finisher(y.shape, matrix.dtype,
                                                 bias if rows or bias is None else bias.reshape(-1, 1), act)
            done(y)

        def run(x: np.ndarray) -> np.ndarray:
            # an input contiguous both ways (one channel, or 1x1 images) stays NCHW, as the layers around expect;
            # and a contiguous NCHW input goes straight to the NCHW matmul without making the transposed view
            if not x.flags.c_contiguous:
                last = x.transpose(0, 2, 3, 1)
                if last.flags.c_contiguous:
                    y = np.matmul(last.reshape(rows_shape), weights)
                    finish(y, True)
                    return y.reshape(nhwc_shape).transpose(0, 3, 1, 2)
            y = product(weights_t, x.reshape(flat_in))
            finish(y, False)
            return y.reshape(out_shape)

        return run

    def run(self, x: np.ndarray, matrix: np.ndarray, act: Activation | None) -> np.ndarray:
        return self.runner(matrix, act)(x)


class PooledChannelsLastPlan(_ChannelsLastPlan):
    """_ChannelsLastPlan for a convolution whose fused MaxPool has side-by-side p x p windows (LeNet's conv2
    block), one chunk: the column rows (output positions) are laid out by pooling phase -- (image, row phase,
    column phase, pooled row, pooled column) -- so the matmul's channels-last product holds each phase as one
    contiguous block, and the pooling is p * p - 1 elementwise maxima of contiguous blocks instead of strided
    passes over an NCHW view. The product's blocks sit in a stage buffer followed by one block of zeros, so the
    pooling is a single maximum.reduce over the blocks, which with a fused ReLU takes the zeros in as one more
    candidate (max(max(blocks), 0)); other activations run on the pooled result. That result is a fresh array,
    handed back as an NCHW view of channels-last storage, or -- with ``flatten`` (a Flatten(axis=1) absorbed by
    the node) -- copied into a contiguous (N, C * pooled rows * pooled columns) array, the flattened NCHW order,
    by one transposing copy of the small pooled result (reducing straight into that array through a transposed
    view wrote it element by element: LeNet's 600 values 2.6 -> 2.2 us). Only the positions the pooling
    reads are computed (floor mode drops a last odd row or column). The im2col copy reads the same runs of
    kernel width * channels values as the parent's."""

    def __init__(self, x_shape: tuple[int, ...], dtype: np.dtype, out_channels: int, kernel: list[int],
                 strides: list[int], dilations: list[int], begins: list[int], ends: list[int], has_bias: bool,
                 window: int, flatten: bool = False):
        super().__init__(x_shape, dtype, out_channels, kernel, strides, dilations, begins, ends, has_bias)
        self.flatten = flatten
        batch, channels, *sizes = x_shape
        if len(sizes) != 2 or batch != self.rows:
            raise ValueError("pooling-phase columns need 2-D images in one chunk")
        p = window
        pooled = [n // p for n in self.out_sizes]
        if min(pooled) < 1:
            raise ValueError(f"output {self.out_sizes} is smaller than the pooling window {p}")
        padded = [n + b + e for n, b, e in zip(sizes, begins, ends, strict=True)]
        elem = [e * channels for e in _row_major_strides(padded)]
        item = dtype.itemsize
        self.pooled_sizes, self.window = pooled, p
        taps = p * p
        positions = taps * pooled[0] * pooled[1]
        shape = (batch, p, p, *pooled, *self.tap_shape)
        tap_strides = [d * e for d, e in zip(dilations, elem, strict=True)]
        if dilations[-1] == 1:
            tap_strides[-1] = 1
        else:
            tap_strides.append(1)
        steps = (math.prod(padded) * channels, strides[0] * elem[0], strides[1] * elem[1],
                 p * strides[0] * elem[0], p * strides[1] * elem[1], *tap_strides)
        self.windows = checked_windows(self.scratch, shape, tuple(v * item for v in steps))
        width = self.cols_matrix.shape[1]
        self.cols_matrix = np.empty((batch * positions, width), dtype)
        if has_bias:
            self.cols_matrix[:, width - 1] = 1
        block = pooled[0] * pooled[1]
        col_steps = (positions * width, p * block * width, block * width, pooled[1] * width, width,
                     *_row_major_strides(self.tap_shape))
        self.cols = checked_windows(self.cols_matrix, shape, tuple(v * item for v in col_steps), writeable=True)
        # (image, pooling phase, pooled position, M); the last phase is the zeros a fused ReLU pools with
        self.stages = np.zeros((batch, taps + 1, block, out_channels), dtype)
        self.product = self.stages[:, :taps].reshape(batch, positions, out_channels)

    def single_chunk(self, matrix: np.ndarray, act: Activation | None, pool: Op | None,
                     into: np.ndarray | None = None):
        """The runner; with ``into`` (a C-contiguous (batch, pooled rows * pooled columns, channels) array: the
        pooling's own order) it pools into that array and hands it back, for a fused reader that takes it so."""
        interior, windows, cols, to_channels_last = self.interior, self.windows, self.cols, self.to_channels_last
        batch, phases, block, channels = self.stages.shape
        # one image: 2-D operands (a batch of one 2-D product through NumPy's batched matmul costs ~0.5 us more)
        product = self.product[0] if batch == 1 else self.product
        cols_matrix = self.cols_matrix
        if batch > 1:
            cols_matrix = cols_matrix.reshape(batch, -1, cols_matrix.shape[1])
        # after pooling: the fusable activations are monotonic; a ReLU alone is the zero phase of the reduce
        relu = act is not None and len(act.steps) == 1 and type(act.steps[0]) is _Relu \
            and matrix.dtype.kind == "f"
        stages = self.stages if relu else self.stages[:, :phases - 1]
        rest = None if relu else act
        flatten, nhwc, flat = self.flatten, (batch, *self.pooled_sizes, channels), (batch, channels * block)

        def run(x: np.ndarray) -> np.ndarray:
            interior[...] = x.transpose(to_channels_last)
            np.copyto(cols, windows)
            np.matmul(cols_matrix, matrix, out=product)
            y = np.maximum.reduce(stages, axis=1, out=into)
            if rest is not None:
                rest(y)
            if into is not None:
                return y
            return y.transpose(0, 2, 1).reshape(flat) if flatten else y.reshape(nhwc).transpose(0, 3, 1, 2)

        return run

    def run(self, x: np.ndarray, matrix: np.ndarray, act: Activation | None, pool: Op | None = None
            ) -> np.ndarray:
        return self.single_chunk(matrix, act, pool)(x)


class PhasePooledIm2colPlan(_Im2colPlan):
    """_Im2colPlan of a 2-D convolution (one group, unit strides and dilations) whose fused MaxPool has
    side-by-side p x p windows, at small batches in one chunk: the pooling becomes part of the matmul's layout.

    Pooled position (P, Q) takes the maximum over the p * p phases (a, b) of the convolution at (p P + a,
    p Q + b), which reads padded[p P + a + i, p Q + b + j] through tap (i, j): every phase reads the same
    (kernel + p - 1)^2 offsets s = a + i, t = b + j of a stride-p window. So the columns are those offsets at the
    pooled positions only, one weight row per (phase, output channel) holds the kernel at its phase's offsets
    (zeros elsewhere, the bias in the ones row's column), and one matmul makes every phase as a contiguous block
    of a stage buffer that ends in a block of zeros: the pooling (and a fused ReLU, the zeros as one more
    candidate) is one maximum.reduce over the blocks -- instead of the full convolution, strided pooling passes
    over it and a ReLU pass. The padded input is stored space-to-depth, (row phase, column phase, row // p,
    column // p), so that offset (s, t) = (p s' + sb, p t' + tb) at (P, Q) is element (P + s', Q + t') of
    phase image (sb, tb): each column row is then one contiguous run over whole phase-image rows (full width:
    the few positions past the pooled width are computed and left out of the output view, as _Im2colPlan's
    full-width columns). Only the rows the pooling reads are computed (floor mode drops a last odd row or
    column). Sums are BLAS's: equal to the general path's within float rounding.

    An output with a NaN (an infinite or NaN input: the zero weights make 0 * inf) is made again by
    _Im2colPlan's path (``run``), so non-finite inputs give the general kernels' values. Raises ValueError when
    the phase offsets outnumber the kernel's taps by more than PHASE_POOL_DENSITY, or the pooled output is
    empty."""

    def __init__(self, x_shape: tuple[int, ...], dtype: np.dtype, out_channels: int, kernel: list[int],
                 strides: list[int], dilations: list[int], begins: list[int], ends: list[int], has_bias: bool,
                 window: int, check_size: Callable[[tuple, np.dtype, str], None]):
        batch, channels, *sizes = x_shape
        (kh, kw), p = kernel, window
        if any(v != 1 for v in (*strides, *dilations)):
            raise ValueError("phase pooling needs unit strides and dilations")
        if (kh + p - 1) * (kw + p - 1) > PHASE_POOL_DENSITY * kh * kw:
            raise ValueError(f"phase offsets of kernel {kernel} pooled by {p} are mostly zeros")
        super().__init__(x_shape, dtype, 1, out_channels, kernel, strides, dilations, begins, ends, has_bias)
        if batch != self.rows:
            raise ValueError("phase pooling runs one chunk")
        pooled = [n // p for n in self.out_sizes]
        if min(pooled) < 1:
            raise ValueError(f"output {self.out_sizes} is smaller than the pooling window {p}")
        offsets = (kh + p - 1, kw + p - 1)  # s and t, of the stride-p window
        runs = [-(-o // p) for o in offsets]  # s' and t'; the last few may be past the offsets (zero weights)
        # phase-image sizes: every padded row and column, and every window (the zeros past the padding too)
        split = [max(-(-n // p), q + r - 1) for n, q, r in zip(self.padded, pooled, runs, strict=True)]
        positions = pooled[0] * split[1]  # whole phase-image rows
        k_phase = channels * p * runs[0] * p * runs[1]
        phases = p * p
        plane = split[0] * split[1]
        slack = (runs[0] - 1) * split[1] + runs[1] - 1  # the last windows' reach past the last phase image
        # its own buffers, before any is allocated (the node checked the general plan's)
        check_size((batch * channels * phases * plane + slack,), dtype, "space-to-depth padded input")
        check_size((batch, k_phase + 1, positions), dtype, "phase column buffer")
        check_size((phases * out_channels, k_phase + 1), dtype, "phase weights")
        check_size((batch, phases + 1, out_channels, positions), dtype, "phase stage buffer")
        self.window, self.kernel_shape, self.channels, self.runs, self.k_phase = p, (kh, kw), channels, runs, \
            k_phase
        self.depth = np.zeros(batch * channels * phases * plane + slack, dtype)
        phase_images = self.depth[:batch * channels * phases * plane].reshape(batch, channels, p, p, *split)
        # per (row phase, column phase): the input's rows and columns that land there, and where; or, when the
        # padding and the sizes are multiples of p, the input's (row // p, row % p, column // p, column % p) view
        # in one copy
        self.copies: list[tuple[np.ndarray, tuple]] = []
        self.aligned: tuple[np.ndarray, tuple, tuple] | None = None
        if all(b % p == 0 and n % p == 0 for b, n in zip(begins, sizes, strict=True)):
            interior = tuple(slice(b // p, (b + n) // p) for b, n in zip(begins, sizes, strict=True))
            self.aligned = (phase_images[(Ellipsis, *interior)], (batch, channels, sizes[0] // p, p, sizes[1] // p,
                                                                  p), (0, 1, 3, 5, 2, 4))
        for sb in range(p if self.aligned is None else 0):
            for tb in range(p):
                index, target = [], [slice(None), slice(None), sb, tb]
                for n, b, phase in zip(sizes, begins, (sb, tb), strict=True):
                    first = (phase - b) % p
                    count = len(range(first, n, p))
                    start = (b + first) // p
                    index.append(slice(first, n, p))
                    target.append(slice(start, start + count))
                if all(t.stop > t.start for t in target[4:]):
                    self.copies.append((phase_images[tuple(target)], (Ellipsis, *index)))
        item = dtype.itemsize
        shape = (batch, channels, p, runs[0], p, runs[1], positions)
        self.phase_windows = checked_windows(self.depth, shape, tuple(v * item for v in (
            channels * phases * plane, phases * plane, p * plane, split[1], plane, 1, 1)))
        self.phase_cols = np.empty((batch, k_phase + 1, positions), dtype)
        self.phase_cols[:, k_phase] = 1  # the bias row (zero weights without a bias)
        self.phase_cols_windows = checked_windows(self.phase_cols, shape, tuple(v * item for v in (
            (k_phase + 1) * positions, *(v * positions for v in _row_major_strides([channels, p, runs[0], p,
                                                                                     runs[1]])), 1)),
            writeable=True)
        # (image, phase, output channel, position); the last phase is the zeros a fused ReLU pools with
        self.stages = np.zeros((batch, phases + 1, out_channels, positions), dtype)
        self.computed_pooled = (batch, out_channels, pooled[0], split[1])
        self.pooled_valid = (Ellipsis, slice(0, pooled[1])) if pooled[1] != split[1] else None

    def phase_weights(self, matrix: np.ndarray) -> np.ndarray:
        """_Im2colPlan's (1, M, C * kh * kw [+ 1]) weights -> (p * p * M, phase columns + 1): phase (a, b)'s rows
        hold tap (i, j) at offset (a + i, b + j), in the (channel, s % p, s // p, t % p, t // p) order of the
        columns."""
        (kh, kw), p, channels, (runs_s, runs_t) = self.kernel_shape, self.window, self.channels, self.runs
        out_channels = matrix.shape[1]
        taps = matrix[0, :, :channels * kh * kw].reshape(out_channels, channels, kh, kw)
        laid = np.zeros((p, p, out_channels, channels, runs_s * p, runs_t * p), matrix.dtype)
        for a in range(p):
            for b in range(p):
                laid[a, b, :, :, a:a + kh, b:b + kw] = taps
        laid = laid.reshape(p, p, out_channels, channels, runs_s, p, runs_t, p).transpose(0, 1, 2, 3, 5, 4, 7, 6)
        weights = np.zeros((p * p * out_channels, self.k_phase + 1), matrix.dtype)
        weights[:, :self.k_phase] = laid.reshape(p * p * out_channels, self.k_phase)
        if self.has_bias:
            weights[:, self.k_phase] = np.tile(matrix[0, :, -1], p * p)
        return weights

    def single_chunk(self, matrix: np.ndarray, act: Activation | None, pool: Op | None, checked: bool = True
                     ) -> Callable[[np.ndarray], np.ndarray] | None:
        """The runner; ``checked=False`` leaves out the NaN check (and redo) for a fused reader that makes it
        later, where any NaN of this output that matters has reached every value it checks."""
        if pool is None:
            return super().single_chunk(matrix, act, pool)
        copies, aligned, windows, cols_windows = self.copies, self.aligned, self.phase_windows, \
            self.phase_cols_windows
        weights = self.phase_weights(matrix)
        batch, phases, channels, positions = self.stages.shape
        product = self.stages[:, :phases - 1].reshape(batch, (phases - 1) * channels, positions)
        cols = self.phase_cols
        if batch == 1:  # 2-D operands (NumPy's batched matmul of one costs more)
            product, cols = product[0], cols[0]
        # after pooling: the fusable activations are monotonic; a ReLU alone is the zero phase of the reduce
        relu = act is not None and len(act.steps) == 1 and type(act.steps[0]) is _Relu \
            and matrix.dtype.kind == "f"
        stages = self.stages if relu else self.stages[:, :phases - 1]
        rest = None if relu else act
        shape, valid = self.computed_pooled, self.pooled_valid

        def run(x: np.ndarray) -> np.ndarray:
            if aligned is not None:
                target, split_shape, order = aligned
                target[...] = x.reshape(split_shape).transpose(order)
            for target, source in copies:
                target[...] = x[source]
            np.copyto(cols_windows, windows)
            np.matmul(weights, cols, out=product)
            y = np.maximum.reduce(stages, axis=1)
            if rest is not None:
                rest(y)
            # an infinite input meets the zero weights of the phases that do not read it (0 * inf: NaN), and a
            # NaN survives the maxima: then the general path's columns and pooling give the values to hand back
            if checked and has_nan(y):
                return self.run(x, matrix, act, pool)
            y = y.reshape(shape)
            return y if valid is None else y[valid]

        return run


def _side_by_side_window(pool: Op | None) -> int | None:
    """p when ``pool`` is a 2-D MaxPool over side-by-side p x p windows (kernel = strides, no padding, no
    dilation, floor mode, no Indices output), else None."""
    if pool is None or getattr(pool, "op_type", "") != "MaxPool" or getattr(pool, "want_indices", True):
        return None
    kernel, strides, dilations = list(pool.kernel), list(pool.strides), list(pool.dilations)
    pads = pool.pads or []
    if len(kernel) != 2 or kernel[0] != kernel[1] or strides != kernel or any(d != 1 for d in dilations) \
            or any(pads) or pool.auto_pad not in ("NOTSET", "", None) or pool.ceil_mode or kernel[0] < 2:
        return None
    return kernel[0]


class RunnerConv(Conv):
    """Conv whose plans with a ``runner`` (this module's) are cached per input shape as that runner, which
    Conv.run calls straight away (under the lock, as its own runners): without Conv.run_activated's checks and
    plan look-up each call (~3 us a layer). Only for the node's own activation and constant weights; a fused
    MaxPool pools the runner's output, then the activation is applied, as Conv does for these plans. Everything
    else, and the first call's checks and plan, are Conv's."""

    def __init__(self, node: NodeSpec):
        super().__init__(node)
        # input shapes whose plan is Conv's own (no runner here): straight to Conv, without a second look-up
        self.general: set[tuple] = set()

    def run_activated(self, act: Activation | None, x, w, b=None):
        key = (x.shape, x.dtype)
        if act is self.act and self.static and x.dtype != np.float16 and key not in self.general:
            with self.lock:
                # (a float16 input comes here as float32 on every call, through Conv's widening)
                fast = self.fast.get(key)
                if fast is None:
                    plan, matrix = self._entry(x, self.weight, self.bias)
                    make = getattr(plan, "runner", None)
                    if make is None:
                        if len(self.general) > KEPT_ENTRIES:
                            self.general.clear()
                        self.general.add(key)
                    else:
                        fast = make(matrix, act) if self.pool is None else \
                            _pooled(make(matrix, None), self.pool, act)
                        keep(self.fast, key, fast)
                if fast is not None:
                    return fast(x)
        return super().run_activated(act, x, w, b)


def _pooled(runner: Callable[[np.ndarray], np.ndarray], pool: Op, act: Activation | None
            ) -> Callable[[np.ndarray], np.ndarray]:
    """``runner``'s output pooled, then activated: Conv's order for a plan that does not pool its chunks."""

    def run(x: np.ndarray) -> np.ndarray:
        y = pool.run(runner(x))
        if act is not None:
            act(y)
        return y

    return run


class LeanConv(RunnerConv):
    """Conv whose channels-last shapes with a fused side-by-side MaxPool run as PooledChannelsLastPlan (at
    small batches, in one chunk), its NCHW-column shapes with such a pooling as PhasePooledIm2colPlan (where
    the phase offsets are few enough, PHASE_POOL_DENSITY), and whose other channels-last shapes with few output
    channels run NCHW columns (NCHW_OUT_CHANNELS); every other shape, and all the checks, are Conv's. It can
    absorb the Flatten(axis=1) that is its output's only reader (fuse_flatten): the pooled plan then reduces
    straight into the flattened array, and any other plan's output is flattened by ``run``."""

    def __init__(self, node: NodeSpec):
        super().__init__(node)
        self.flattened = False

    def fuse_flatten(self) -> bool:
        """Hand back the output flattened to (N, rest), as the Flatten(axis=1) reading it would."""
        self.flattened = True
        self.plans.clear()
        self.fast.clear()
        return True

    @property
    def run(self) -> Callable[..., np.ndarray]:
        """Conv.run, or ``run_flattened`` once a Flatten is absorbed. The fast plan takes each kernel's ``run``
        once, after the fusions: a LeanConv that flattens nothing then runs Conv.run itself, a call frame and a
        test fewer (~0.2 us a convolution). (A property, not a bound method kept on the kernel, which would be a
        reference cycle.)"""
        return self.run_flattened if self.flattened else super().run

    def run_flattened(self, x, w, b=None):
        y = super().run(x, w, b)
        if y.ndim == 2:  # (the pooled plan's runner flattens itself)
            return y
        return y.reshape(y.shape[0], math.prod(y.shape[1:]))  # (not -1: an empty batch has no size to infer)

    def specialize(self, x, w, b=None) -> Callable[..., np.ndarray] | None:
        fast = self.fast.get((x.shape, x.dtype))
        if fast is None or 0 in x.shape:  # (an empty output has no size to infer)
            return None
        if not self.flattened or self._flattens_itself(x):
            return self._guarded(fast, x)
        flat = (x.shape[0], -1)
        return self._guarded(lambda x: fast(x).reshape(flat), x)

    def _flattens_itself(self, x: np.ndarray) -> bool:
        entry = self.plans.get((x.shape, x.dtype))
        return entry is not None and type(entry[0]) is PooledChannelsLastPlan and entry[0].flatten

    def _plan(self, x: np.ndarray, weight_shape: tuple[int, ...], has_bias: bool):
        plan = super()._plan(x, weight_shape, has_bias)
        if type(plan) is _PointwisePlan:
            return ChannelsLastPointwisePlan(x.shape, weight_shape[0], has_bias)
        window = _side_by_side_window(self.pool)
        if type(plan) is _ChannelsLastPlan and window is None and x.shape[0] <= SMALL_BATCH and x.ndim == 4 \
                and not self.channels_last and weight_shape[0] <= NCHW_OUT_CHANNELS \
                and min(x.shape[2:]) >= NCHW_MIN_SIZE:
            kernel, strides, dilations, begins, ends, _, _ = self._fit(x, weight_shape)
            try:
                nchw = _Im2colPlan(x.shape, x.dtype, 1, weight_shape[0], kernel, strides, dilations, begins, ends,
                                   has_bias)
            except ValueError as exc:
                raise self.fail(f"input {x.shape}, kernel {kernel}: {exc}") from None
            self.check_size((x.shape[0], weight_shape[0], *nchw.computed_sizes), x.dtype, "output")
            return nchw
        if type(plan) is _Im2colPlan and window is not None and x.shape[0] <= SMALL_BATCH and x.ndim == 4 \
                and self.group == 1 and not self.channels_last:
            kernel, strides, dilations, begins, ends, _, out_sizes = self._fit(x, weight_shape)
            if kernel[1] * x.shape[1] >= POOLED_RUN and weight_shape[0] >= POOLED_OUT_CHANNELS \
                    and math.prod(out_sizes) <= POOLED_POSITIONS:
                try:
                    return PooledChannelsLastPlan(x.shape, x.dtype, weight_shape[0], kernel, strides, dilations,
                                                  begins, ends, has_bias, window, self.flattened)
                except ValueError:
                    pass
            try:
                return PhasePooledIm2colPlan(x.shape, x.dtype, weight_shape[0], kernel, strides, dilations, begins,
                                             ends, has_bias, window, self.check_size)
            except WindowError as exc:
                raise self.fail(f"input {x.shape}, kernel {kernel}: {exc}") from None
            except ValueError:
                return plan
        if type(plan) is not _ChannelsLastPlan or window is None or x.shape[0] != plan.rows \
                or x.shape[0] > SMALL_BATCH or x.ndim != 4:
            return plan
        kernel, strides, dilations, begins, ends, _, _ = self._fit(x, weight_shape)
        try:
            return PooledChannelsLastPlan(x.shape, x.dtype, weight_shape[0], kernel, strides, dilations, begins,
                                          ends, has_bias, window, self.flattened)
        except ValueError:
            return plan


class MatmulDepthwiseConv(RunnerConv):
    """Conv whose 2-D depthwise shapes run as MatmulDepthwisePlan; every other shape, and all the checks of an
    input against the weight and the Limits, are Conv's."""

    def _plan(self, x: np.ndarray, weight_shape: tuple[int, ...], has_bias: bool):
        plan = super()._plan(x, weight_shape, has_bias)  # the checks, and which strategy the shape gets
        if not isinstance(plan, _FlatDepthwisePlan) or x.dtype.kind != "f" or x.dtype.itemsize < 4:
            return plan
        kernel, strides, dilations, begins, ends, padded, out_sizes = self._fit(x, weight_shape)
        if x.shape[0] > SMALL_BATCH:
            return plan
        if x.shape[1] >= CHANNELS_LAST_DEPTHWISE:
            # its own buffers, before they are allocated: a strided layer's per-kernel-column copies (Hp / Ho
            # times the output per kernel tap, so a tall stride can make them far larger than anything Conv
            # checked) and the weights laid out over an output row
            if strides[1] != 1:
                self.check_size((kernel[1], x.shape[0], padded[0], out_sizes[1], x.shape[1]), x.dtype,
                                "channels-last column buffer")
            self.check_size((math.prod(kernel) + 1, out_sizes[1] * x.shape[1]), x.dtype, "row-tiled weights")
        try:
            if x.shape[1] >= CHANNELS_LAST_DEPTHWISE:
                return ChannelsLastDepthwisePlan(x.shape, x.dtype, kernel, strides, dilations, begins, ends,
                                                 has_bias)
            if any(s != 1 for s in strides) and x.shape[1] > STRIDED_CHANNELS:
                return plan
            return MatmulDepthwisePlan(x.shape, x.dtype, kernel, strides, dilations, begins, ends, has_bias)
        except ValueError as exc:
            raise self.fail(f"input {x.shape}, kernel {kernel}: {exc}") from None


class PhaseTransposePlan:
    """ConvTranspose of one input shape (float, constant weights) as one convolution over the input followed by
    a depth-to-space interleave, instead of the scatter-add of kernel patches.

    Along an axis with stride s, output o = s * j + r (phase r) reads input j + (begin + r - t * d) / s through
    each tap t for which that division is exact: every phase is a small correlation of the input over the same
    few offsets (offsets omin..omax, about (k - 1) * d / s + 1 of them). So the columns are the zero-padded input
    at those offsets (one window copy, like a Conv's im2col), one matmul by the weights laid out per (phase,
    output channel) -- zeros where a tap does not reach that phase, the bias as one more column against a row of
    ones -- gives every phase at once, and one transposed copy interleaves the phases into the output. The
    columns run over whole padded rows of the last axis (full width, as _Im2colPlan's: one contiguous run of the
    padded input per channel and offset), and the interleave leaves the extra positions out. For a
    U-Net's 3x3 stride-2 up-convolution at batch 1 this replaces nine strided adds over a zeroed canvas, a crop
    and a bias pass. The sums are BLAS's: equal to the scatter-add's within float rounding, not bit for bit.

    Raises ValueError when the phase layout would be mostly zeros (dilations larger than the strides), where
    the scatter-add does less work."""

    def __init__(self, x_shape: tuple[int, ...], dtype: np.dtype, weight: np.ndarray, bias: np.ndarray | None,
                 group: int, kernel: list[int], strides: list[int], dilations: list[int], begins: list[int],
                 out: list[int], check_size: Callable[[tuple, np.dtype, str], None]):
        batch, channels, *sizes = x_shape
        rank = len(sizes)
        cg, mg = channels // group, weight.shape[1]
        # per axis: the offset (input index - j) of each (phase, tap) that meets, None where it does not
        reach: list[list[list[int | None]]] = []
        for s, k, d, b in zip(strides, kernel, dilations, begins, strict=True):
            reach.append([[(b + r - t * d) // s if (b + r - t * d) % s == 0 else None for t in range(k)]
                          for r in range(s)])
        lows = [min(o for phase in axis for o in phase if o is not None) for axis in reach]
        highs = [max(o for phase in axis for o in phase if o is not None) for axis in reach]
        window = [h - lo + 1 for h, lo in zip(highs, lows, strict=True)]
        if math.prod(strides) * math.prod(window) > PHASE_DENSITY * math.prod(kernel):
            raise ValueError(f"phase layout of {window} offsets over strides {strides} is mostly zeros")
        steps = [-(-o // s) for o, s in zip(out, strides, strict=True)]  # outputs per phase (the last may crop)
        before = [max(0, -lo) for lo in lows]
        after = [max(0, j + h - n) for j, h, n in zip(steps, highs, sizes, strict=True)]
        padded = [n + a + z for n, a, z in zip(sizes, before, after, strict=True)]
        # full width: the positions run over whole padded rows of the last axis (one contiguous run of the padded
        # input per (channel, offset), instead of a run per output row); the interleave leaves out the rest
        wide = [*steps[:-1], padded[-1]]
        item, k_group, positions = dtype.itemsize, cg * math.prod(window), math.prod(wide)
        width = k_group + (bias is not None)
        # its own buffers, before any is allocated (the node checked the general kernel's, not these)
        check_size((batch, channels, *padded), dtype, "zero-padded input")
        check_size((batch, group, width, positions), dtype, "phase column buffer")
        check_size((batch, group, math.prod(strides) * mg, positions), dtype, "phase product")
        check_size((group, math.prod(strides) * mg, width), dtype, "phase weights")
        check_size((batch, group * mg, *(j * s for j, s in zip(steps, strides, strict=True))), dtype,
                   "phase-interleaved output")
        # the last channel's full-width windows read past its last row: by the start's offset and the offsets
        image, rows = math.prod(padded), _row_major_strides(padded)
        first = sum((a + lo) * r for a, lo, r in zip(before, lows, rows, strict=True))
        slack = before[-1] + lows[-1] + window[-1] - 1
        flat = np.zeros(batch * channels * image + slack, dtype)
        self.scratch = flat[:batch * channels * image].reshape(batch, channels, *padded)
        self.interior = self.scratch[(slice(None), slice(None)) +
                                     tuple(slice(a, a + n) for a, n in zip(before, sizes, strict=True))]
        shape = (batch, group, cg, *window, *wide)
        self.windows = checked_windows(flat[first:], shape, tuple(v * item for v in (
            channels * image, cg * image, image, *rows, *rows)))
        self.cols = np.empty((batch, group, width, positions), dtype)
        if bias is not None:
            self.cols[:, :, k_group] = 1
        self.cols_windows = checked_windows(self.cols, shape, tuple(v * item for v in (
            group * width * positions, width * positions, math.prod(window) * positions,
            *(w * positions for w in _row_major_strides(window)), *_row_major_strides(wide))), writeable=True)
        # weights (group, phase..., M/group, width): tap t of a phase sits at its offset's column
        matrix = np.zeros((group, *strides, mg, cg, *window), dtype)
        grouped = weight.reshape(group, cg, mg, *kernel)
        for phase in np.ndindex(*strides):
            for tap in np.ndindex(*kernel):
                offsets = [reach[a][phase[a]][tap[a]] for a in range(rank)]
                if all(o is not None for o in offsets):
                    at = tuple(o - lo for o, lo in zip(offsets, lows, strict=True))
                    matrix[(slice(None), *phase, slice(None), slice(None), *at)] = \
                        grouped[(slice(None), slice(None), slice(None), *tap)].transpose(0, 2, 1)
        matrix = matrix.reshape(group, math.prod(strides) * mg, k_group)
        if bias is not None:
            column = np.broadcast_to(bias.astype(dtype).reshape(group, 1, mg), (group, math.prod(strides), mg))
            matrix = np.concatenate([matrix, column.reshape(group, -1, 1)], axis=2)
        self.matrix = np.ascontiguousarray(matrix)
        # product (batch, group, phase..., M/group, j...) -> output (batch, group, M/group, j0, r0, j1, r1, ...),
        # the full-width positions past steps[-1] left out: one view per phase of the last axis, made once over
        # the plan's product buffer
        self.product = np.empty((batch, group, math.prod(strides) * mg, positions), dtype)
        order = (0, 1, 2 + rank) + tuple(a for axis in range(rank) for a in (3 + rank + axis, 2 + axis))
        phases = self.product.reshape(batch, group, *strides, mg, *wide).transpose(order)[..., :steps[-1], :]
        self.phase_sources = [phases[..., phase] for phase in range(strides[-1])]
        self.interleaved = (batch, group, mg) + tuple(v for j, s in zip(steps, strides, strict=True)
                                                      for v in (j, s))
        self.full = (batch, group * mg, *(j * s for j, s in zip(steps, strides, strict=True)))
        whole = all(j * s == o for j, s, o in zip(steps, strides, out, strict=True))
        self.crop = None if whole else (slice(None), slice(None)) + tuple(slice(0, o) for o in out)
        # An infinite input meets the zeros the layout adds (0 * inf: NaN where the scatter-add never reads the
        # value), so outputs are checked for NaN -- unless every phase reaches every offset of the window along
        # every axis (a 2x2 stride-2 up-convolution) and the weights are finite: then the only zeros are the
        # padding's, which finite weights turn into zeros, and a NaN comes only where the scatter-add makes one
        covered = all(sorted(o for o in phase if o is not None) == list(range(lo, hi + 1))
                      for axis, lo, hi in zip(reach, lows, highs, strict=True) for phase in axis)
        self.checks_nan = not (covered and bool(np.isfinite(weight).all()))

    def runner(self) -> Callable[[np.ndarray], np.ndarray | None]:
        """The transposed convolution of an input of this plan's shape (before any fused activation), or None
        for an input whose output the layout's zeros made NaN (the general kernel's then); it fills the plan's
        buffers, so the caller serializes calls."""
        interior, windows, cols, cols_windows, matrix, product, sources = \
            self.interior, self.windows, self.cols, self.cols_windows, self.matrix, self.product, \
            self.phase_sources
        interleaved, full, crop, checks_nan = self.interleaved, self.full, self.crop, self.checks_nan
        # (group, phases * M/group, width) @ (batch, group, width, j); one image of one group as 2-D operands for
        # np.dot, which costs ~0.4 us less a call than np.matmul on these small products (1.2 -> 0.8 us at 7x7)
        single = cols.shape[0] * cols.shape[1] == 1
        product_operands = (matrix[0], cols[0, 0], product[0, 0]) if single else (matrix, cols, product)
        multiply = np.dot if single else np.matmul

        def run(x: np.ndarray) -> np.ndarray:
            interior[...] = x
            np.copyto(cols_windows, windows)
            multiply(*product_operands[:2], out=product_operands[2])
            y = np.empty(full, product.dtype)
            laid = y.reshape(interleaved)
            # one copy per phase of the last axis: NumPy's loop then runs along output rows, not over the
            # 2-element (last stride) innermost axis (3x3 stride-2 up-convolution at 28x28: 6.4 -> 4.0 us)
            for phase, source in enumerate(sources):
                np.copyto(laid[..., phase], source)
            if crop is not None:
                y = y[crop]
            return None if checks_nan and has_nan(y) else y

        return run


class LeanConvTranspose(ConvTranspose):
    """ConvTranspose with constant weights whose float inputs (of the weight's type) run as a PhaseTransposePlan,
    made once per input shape after the general kernel's geometry checks; other inputs, and layouts the phase
    form would fill mostly with zeros, take the general kernel."""

    def __init__(self, node: NodeSpec):
        super().__init__(node)
        self.kernel_weight = self.const(1)  # (C, M/group, k...): the phase plan lays it out its own way
        # per (input shape, dtype): the phase plan's runner, or None for the general kernel
        self.runners: dict[tuple, Callable[[np.ndarray], np.ndarray | None] | None] = {}

    def _runner(self, x: np.ndarray) -> Callable[[np.ndarray], np.ndarray | None] | None:
        """The phase plan's runner for ``x``'s shape, or None; call with the lock held."""
        key = (x.shape, tuple(self.weight_shape))
        geometry = self.geometries.get(key)
        if geometry is None:
            geometry = self.geometries[key] = self._geometry(x.shape, tuple(self.weight_shape))
        if x.dtype != self.weight.dtype or x.dtype.kind != "f":
            return None
        kernel, strides, dilations, begins, out, _, _ = geometry
        bias = None if self.bias is None else self.bias.reshape(-1)
        try:
            plan = PhaseTransposePlan(x.shape, x.dtype, self.kernel_weight, bias, self.group, kernel, strides,
                                      dilations, begins, out, self.check_size)
        except WindowError as exc:
            raise self.fail(f"input {x.shape}, kernel {kernel}: {exc}") from None
        except ValueError:
            return None  # a sparse phase layout: the scatter-add
        return plan.runner()

    def run(self, x, w, b=None):
        if self.weight is None or (b is not None and self.bias is None):
            return super().run(x, w, b)  # run-time weights or bias: the general kernel
        key = (x.shape, x.dtype)
        with self.lock:
            if key in self.runners:
                runner = self.runners[key]
            else:
                runner = self._runner(x)
                keep(self.runners, key, runner)
            y = None if runner is None else runner(x)  # (the plan's buffers are shared by calls)
        if y is None:
            return super().run(x, w, b)
        if self.act is not None:
            self.act(y)
        return y


def batch1_kernel(kernel: Op) -> Op:
    """The kernel the fast plan runs for a node: a constant-weight 2-D depthwise Conv becomes a
    MatmulDepthwiseConv, a constant-weight ConvTranspose a LeanConvTranspose (built afresh from the same node,
    so with the same checks); anything else stays."""
    if type(kernel) is ConvTranspose and kernel.weight is not None and kernel.act is None:
        return LeanConvTranspose(kernel.node)
    if type(kernel) is not Conv or kernel.weight is None or kernel.act is not None or kernel.pool is not None:
        return kernel
    weight = kernel.weight
    if weight.ndim != 4 or weight.shape[1] != 1 or kernel.group < 2 or weight.shape[0] != kernel.group:
        return LeanConv(kernel.node) if weight.ndim == 4 and kernel.group == 1 else kernel
    return MatmulDepthwiseConv(kernel.node)
