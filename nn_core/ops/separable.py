"""Depthwise-separable chains at batch 1: depthwise conv -> pointwise conv -> depthwise conv -> ... as one step.

Run layer by layer (MatmulDepthwiseConv, LeanConv), every depthwise conv copies its input, the pointwise conv's
fresh output, into a zero-padded channels-last buffer, and each layer is a step of its own. Inside one step the
values between the layers are nobody else's, so they live in buffers reused on every call (SeparableChain), laid
out for the layer that reads them: a depthwise conv's input buffer is its image's rows, channels-last and
without side padding, between zero rows for the top and bottom padding (and a row of slack where a window runs
past the first or last row). The pointwise conv before it writes its product straight into those rows (one
contiguous (H * W, M) block, the GEMM's ``out``) and adds its bias and applies its activation there in place.
A depthwise conv with a column stride reads kernel-column buffers instead, which the pointwise conv before it
writes one column phase at a time where the image allows (_PhaseColumns).

Read as one flat run, the left neighbours of a row's first columns are the end of the row above and the right
neighbours of its last columns the start of the row below, so an output row's values of one kernel tap are still
one contiguous run of the buffer (the einsum of ChannelsLastDepthwisePlan over (kh, kw, Ho, Wo * C)): the side
padding is in the weights instead, laid out over an output row with zeros at the output columns whose source for
that tap would be padding. Those zeros multiply finite values to exactly 0, so results equal the layer by layer
kernels' within float rounding (the sums are BLAS's and einsum's). A non-finite value in a row's first or last
columns would also reach, as NaN (0 x inf), the output at the other end of the next or previous row, where zero
padding keeps it out; NaN survives every later layer of the chain (activations and products propagate it), so a
NaN in the chain's output (``has_nan``) sends that input through the layers' own kernels.

Biases move down the chain where the activations allow (SeparableChain._carries): a layer leaves its output short
by its bias, clamped to its activation's bounds less the bias, and the next layer adds what that leaves out of its
own sums to its own bias, so most layers' epilogues are one pass, the activation's, instead of two.

Only one image of a float dtype runs this way; other inputs run the layers' own kernels one after the other.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from typing import Any

import numpy as np

from ..optimize import producers_and_readers, sole_reader
from .activations import has_nan
from .batch1 import (
    CHANNELS_LAST_DEPTHWISE,
    LeanConv,
    MatmulDepthwiseConv,
    _side_by_side_window,
    column_gathers,
    finisher,
    tap_einsum,
    tiled_operand,
)
from .caches import keep
from .conv import Conv, _Clip, _Relu
from .norm import row_averager
from .pool import GlobalAveragePool
from .windows import WindowError, checked_windows, stand_in

_UNBUILT = object()  # a runners entry not made yet (None is made: the kernels in turn)


def _chainable(kernel: Any) -> bool:
    return isinstance(kernel, Conv) and kernel.static and kernel.weight.ndim == 4 and kernel.weight.dtype.kind == "f"


def is_chain_depthwise(kernel: Any) -> bool:
    """A batch-1 depthwise conv with constant float weights and no fused pooling, of enough channels to run
    channels-last on its own (CHANNELS_LAST_DEPTHWISE; fewer run faster as per-channel matmuls)."""
    return type(kernel) is MatmulDepthwiseConv and _chainable(kernel) and kernel.pool is None \
        and kernel.weight.shape[0] >= CHANNELS_LAST_DEPTHWISE


def _pointwise(kernel: Any) -> bool:
    return type(kernel) is LeanConv and _chainable(kernel) and not kernel.flattened and kernel.group == 1 \
        and kernel.weight.shape[2:] == (1, 1)


def is_chain_pointwise(kernel: Any) -> bool:
    """A batch-1 1x1 conv (one group) with constant float weights, no fused pooling, not flattened."""
    return _pointwise(kernel) and kernel.pool is None


def _is_pooled_pointwise(kernel: Any) -> bool:
    """A 1x1 conv as is_chain_pointwise's but with a fused MaxPool over side-by-side windows and an activation
    that commutes with it (non-decreasing): pooled in the chain's buffers, into the next layer's input rows or
    the chain's output."""
    return _pointwise(kernel) and _side_by_side_window(kernel.pool) is not None \
        and (kernel.act is None or kernel.act.monotonic)


def _is_head(kernel: Any) -> bool:
    """A batch-1 dense 2-D conv (one group) with constant float weights, no fused pooling, not flattened."""
    return type(kernel) is LeanConv and _chainable(kernel) and kernel.pool is None and not kernel.flattened \
        and kernel.group == 1


def _is_chain_or_pooled_pointwise(kernel: Any) -> bool:
    return is_chain_pointwise(kernel) or _is_pooled_pointwise(kernel)


def _column_strided(kernel: Conv) -> bool:
    """Whether a conv has a column stride (separable_int8's chains do not start at such a depthwise conv)."""
    strides = kernel.geometry.strides_attr
    return bool(strides) and len(strides) == 2 and strides[1] != 1


class _DepthwiseGeometry:
    """One depthwise conv of a chain at one input shape: its sizes, the layout of its input buffer and which
    output columns each kernel column reads from the image rather than its side padding."""

    def __init__(self, conv: Conv, shape: tuple[int, ...], dtype: np.dtype):
        kernel, strides, dilations, begins, ends, padded, out_sizes = \
            conv._fit(stand_in(shape, dtype), conv.weight.shape)
        _, self.channels, self.height, self.width = shape
        (self.kh, self.kw), (self.sh, self.sw), (self.dh, self.dw) = kernel, strides, dilations
        (self.top, self.left), (_, right) = begins, ends
        self.out_height, self.out_width = out_sizes
        conv.check_work(self.channels * math.prod(out_sizes) * math.prod(kernel), "the convolution")
        # slack rows before the padded rows for the windows that start left of the first row, after them for
        # those that end right of the last
        self.lead = -(-self.left // self.width)
        self.padded_rows = padded[0]
        self.rows = self.lead + padded[0] + -(-right // self.width)
        sources = np.arange(self.out_width)[None, :] * self.sw + np.arange(self.kw)[:, None] * self.dw - self.left
        self.inside = (sources >= 0) & (sources < self.width)  # (kw, Wo)
        self.sources = np.clip(sources, 0, self.width - 1)  # (the image column each tap reads where inside)

    def tap_columns(self, row: np.ndarray) -> np.ndarray:
        """The values of an image ``row`` ((W, C)) that each kernel column reads at each output column, 0 where it
        reads side padding: (kw, Wo, C)."""
        return row[self.sources] * self.inside[:, :, None]

    def interior(self, buffer: np.ndarray) -> np.ndarray:
        """The image's rows of this conv's input ``buffer``: one contiguous (H, W, C) block."""
        start = self.lead + self.top
        return buffer[start:start + self.height]


class _ColumnBuffers:
    """The kernel-column buffers of a column-strided depthwise conv of a chain, zeros of (kw, Hp, Wo, C) whose
    padding is never written: kernel column j's runs, the image columns it reads at each output column. As the
    chain's first layer, each call gathers them from the chain's NCHW input (``gathers``: (target, input
    columns), ChannelsLastDepthwisePlan's copies); ``shifted`` (target, source) copies, none here, run before the
    layer reads them."""

    def __init__(self, depthwise: Conv, geometry: _DepthwiseGeometry, dtype: np.dtype):
        g = geometry
        depthwise.check_size((g.kw, g.padded_rows, g.out_width * g.channels), dtype, "separable chain column buffer")
        self.columns = np.zeros((g.kw, g.padded_rows, g.out_width, g.channels), dtype)
        self.gathers: list[tuple[np.ndarray, tuple]] = []
        self.shifted: list[tuple[np.ndarray, np.ndarray]] = []

    @classmethod
    def gathered(cls, depthwise: Conv, geometry: _DepthwiseGeometry, dtype: np.dtype) -> _ColumnBuffers:
        """The buffers of the chain's first layer, gathered from its input."""
        g = geometry
        buffers = cls(depthwise, g, dtype)
        buffers.gathers = column_gathers(buffers.columns[:, None], slice(g.top, g.top + g.height), g.left, g.width,
                                         g.dw, g.sw)
        return buffers


class _PhaseColumns(_ColumnBuffers):
    """The kernel-column buffers of a column-strided depthwise conv (stride s) of a chain, written by the pointwise
    conv before it: where the image is s * Wo columns wide, the pixels of column phase r (columns s * w + r) are an
    evenly strided set of the depthwise output rows the pointwise conv multiplies, so it multiplies each phase on
    its own (a strided GEMM operand, no copy) into the buffer of a kernel column that reads that phase unshifted,
    and the kernel columns that read a phase shifted by whole output columns copy it from there. That replaces
    gathering every kernel column from a full input buffer (kw copies of the image, strided by s channel vectors)
    with fewer contiguous copies, and the input buffer with nothing. The buffers' padding rows and columns are
    zeros, never written."""

    def __init__(self, depthwise: Conv, geometry: _DepthwiseGeometry, dtype: np.dtype):
        super().__init__(depthwise, geometry, dtype)
        g = geometry
        self.sw, self.out_width = g.sw, g.out_width
        interiors = self.columns[:, g.top:g.top + g.height]
        offsets = [_phase_and_shift(g, j) for j in range(g.kw)]
        homes = {phase: j for j, (phase, shift) in reversed(list(enumerate(offsets))) if shift == 0}
        # (phase, its kernel column's image rows as (H * Wo, C) pixels)
        self.phases = [(phase, interiors[j].reshape(-1, g.channels)) for phase, j in sorted(homes.items())]
        self.shifted = []  # (target, source): a kernel column's image columns from its phase's, shifted
        for j, (phase, shift) in enumerate(offsets):
            if homes[phase] != j:
                low, high = max(0, -shift), g.out_width - max(0, shift)
                self.shifted.append((interiors[j][:, low:high], interiors[homes[phase]][:, low + shift:high + shift]))

    @staticmethod
    def fits(geometry: _DepthwiseGeometry) -> bool:
        """A column stride, an image of whole phases (s * Wo columns) and, for every phase a kernel column reads,
        one that reads it unshifted."""
        g = geometry
        if g.sw == 1 or g.width != g.sw * g.out_width:
            return False
        offsets = [_phase_and_shift(g, j) for j in range(g.kw)]
        return {phase for phase, _ in offsets} == {phase for phase, shift in offsets if shift == 0}

    def phase_products(self, pixels: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        """(the rows of ``pixels``, (H * W, C') in image order, of one column phase; where their product goes)
        for each phase read."""
        by_phase = pixels.reshape(-1, self.sw * pixels.shape[1])
        width = pixels.shape[1]
        return [(by_phase[:, phase * width:(phase + 1) * width], target) for phase, target in self.phases]


def _head(conv: Conv, shape: tuple[int, ...], dtype: np.dtype, geometry: _DepthwiseGeometry, target: np.ndarray,
          carry: bool) -> tuple[Callable[[np.ndarray], None], np.ndarray | None]:
    """The chain's head conv (absorb_head) for an input of ``shape``: the input copied into a zero-padded buffer,
    its columns (Cin * kh * kw, Ho * Wo) copied from a window view of that, and one GEMM of them, transposed, with
    the weights straight into the first depthwise conv's input rows (``target``, laid out by ``geometry``), whose
    bias and activation follow there; with ``carry`` (SeparableChain._carries) the bias is left out, the sums
    clamped to the shifted bounds, and comes back as the constant every row is short by (float64, (Wo, M)),
    else None."""
    kernel, strides, dilations, begins, _, padded, out_sizes = conv._fit(stand_in(shape, dtype), conv.weight.shape)
    channels, height, width = shape[1:]
    (kh, kw), (sh, sw), (dh, dw), (hp, wp), (ho, wo) = kernel, strides, dilations, padded, out_sizes
    taps, out_channels, item = channels * kh * kw, conv.weight.shape[0], dtype.itemsize
    conv.check_size((channels, hp, wp), dtype, "separable chain head input buffer")
    conv.check_size((taps, ho * wo), dtype, "separable chain head columns")
    conv.check_work(taps * ho * wo * out_channels, "the convolution")
    padded_input = np.zeros((channels, hp, wp), dtype)
    interior = padded_input[:, begins[0]:begins[0] + height, begins[1]:begins[1] + width]
    windows = checked_windows(padded_input, (channels, kh, kw, ho, wo), tuple(
        v * item for v in (hp * wp, dh * wp, dw, sh * wp, sw)))
    columns = np.empty((channels, kh, kw, ho, wo), dtype)
    rows = columns.reshape(taps, ho * wo).T
    matrix = np.ascontiguousarray(conv.weight.reshape(out_channels, taps).T, dtype)
    product = geometry.interior(target).reshape(ho * wo, out_channels)
    carried = None
    if carry:
        carried = np.broadcast_to(conv.bias.astype(np.float64), (wo, out_channels))
        finish = _clamping_finisher((ho * wo, out_channels), dtype, carried[0], _clamp_bounds(conv.act))
    else:
        finish = finisher((ho * wo, out_channels), dtype, conv.bias, conv.act)

    def run(x: np.ndarray) -> None:
        interior[...] = x[0]
        np.copyto(columns, windows)
        np.matmul(rows, matrix, out=product)
        finish(product)

    return run, carried


def _maximum_into(out: np.ndarray, parts: list[np.ndarray]) -> None:
    """``out`` = the elementwise maximum of two or more same-shape ``parts``."""
    np.maximum(parts[0], parts[1], out=out)
    for part in parts[2:]:
        np.maximum(out, part, out=out)


def _phase_and_shift(geometry: _DepthwiseGeometry, j: int) -> tuple[int, int]:
    """Kernel column j reads, at output column w, image column s * (w + shift) + phase."""
    shift, phase = divmod(j * geometry.dw - geometry.left, geometry.sw)
    return phase, shift


class SeparableChain:
    """The kernels of a depthwise-separable chain (depthwise, pointwise, depthwise, pointwise, ...; each layer's
    output read by the next alone) as one step's kernel: ``run(x)`` is the last pointwise conv's output, NCHW-shaped
    over channels-last storage like ChannelsLastPointwisePlan's. One image of the kernels' float dtype runs through
    the chain's buffers (module docstring), made once per input shape after the kernels' own geometry checks and
    with each buffer checked against the Limits by the layer it belongs to; anything else runs the kernels in turn.
    """

    # the GlobalAveragePool or ReduceMean over the image reading the last layer alone, absorbed (absorb_mean)
    mean: Any = None
    mean_shape: Callable[[int], tuple[int, ...]] | None = None
    # the dense conv before the first depthwise conv, absorbed (absorb_head)
    head: Conv | None = None

    def __init__(self, node: Any, kernels: list[Conv]):
        self.node = node
        self.kernels = kernels
        self.lock = threading.Lock()  # the buffers are shared by calls (the GUI runs models on worker threads)
        # per (input shape, dtype): the chain's runner, or None for the kernels in turn
        self.runners: dict[tuple, Callable[[np.ndarray], np.ndarray | None] | None] = {}

    def run(self, x: np.ndarray, *_constants: np.ndarray | None) -> np.ndarray:
        y = self.through_buffers(x)
        if y is not None:
            return y
        for kernel in self.kernels if self.head is None else [self.head, *self.kernels]:
            x = kernel.run(x, kernel.weight, kernel.bias)
        return x if self.mean is None else self.mean.run(x)

    def absorb_head(self, kernel: Conv) -> None:
        """Take the input of ``kernel``, a dense conv (_is_head) whose output the first depthwise conv alone
        reads: in the chain's buffers its product goes straight into that layer's input rows (_head), without
        its NCHW output and the transposing copy of it."""
        self.head = kernel

    def absorb_mean(self, kernel: Any, flat: bool) -> None:
        """Hand back the per-channel means over the image of the last layer's output, as ``kernel`` (a
        GlobalAveragePool or ReduceMean over the two image axes reading it alone) does: (N, M) when ``flat``,
        else (N, M, 1, 1). In the chain's buffers that is one product of the output's channels-last rows with a
        column of 1 / (H * W), as GlobalAveragePool's own flattened form, and a NaN check of M values."""
        self.mean = kernel
        self.mean_shape = (lambda m: (1, m)) if flat else (lambda m: (1, m, 1, 1))

    def through_buffers(self, x: np.ndarray) -> np.ndarray | None:
        """The chain's output for ``x`` computed in its buffers, or None where they do not apply (``_runner``)."""
        key = (x.shape, x.dtype)
        with self.lock:
            runner = self.runners.get(key, _UNBUILT)
            if runner is _UNBUILT:
                runner = self._runner(x.shape, x.dtype)
                keep(self.runners, key, runner)
            return runner(x) if runner is not None else None

    def _runner(self, shape: tuple[int, ...], dtype: np.dtype
                ) -> Callable[[np.ndarray], np.ndarray | None] | None:
        """The chain's runner for one input shape, or None where it does not apply; call with the lock held. The
        runner hands back None for an output with a NaN (which the kernels in turn may not have)."""
        head = self.head
        if len(shape) != 4 or shape[0] != 1 or 0 in shape or dtype.kind != "f" or dtype.itemsize < 4 \
                or any(kernel.weight.dtype != dtype for kernel in [*self.kernels, *([head] if head else [])]):
            return None
        pairs = list(zip(self.kernels[::2], self.kernels[1::2], strict=True))
        input_shape = shape
        if head is not None:
            out_sizes = head._fit(stand_in(shape, dtype), head.weight.shape)[-1]
            shape = (1, head.weight.shape[0], *out_sizes)
        geometries: list[_DepthwiseGeometry] = []
        for depthwise, pointwise in pairs:
            geometry = _DepthwiseGeometry(depthwise, shape, dtype)
            shape = (1, geometry.channels, geometry.out_height, geometry.out_width)
            _, _, _, begins, ends, _, out_sizes = pointwise._fit(stand_in(shape, dtype), pointwise.weight.shape)
            if any(begins) or any(ends) or list(out_sizes) != list(shape[2:]):
                return None
            window = _side_by_side_window(pointwise.pool)  # a pooled pointwise conv's (_is_pooled_pointwise)
            shape = (1, pointwise.weight.shape[0], *(size // window if window else size for size in out_sizes))
            if 0 in shape:  # (an image smaller than the pooling window: the kernels in turn decide)
                return None
            geometries.append(geometry)
        final_sizes = shape[2:]
        # a column-strided layer's kernel-column buffers are written by the pointwise conv before it, phase by
        # phase (_PhaseColumns), where its geometry allows; the chain's first layer reads the graph's input
        inputs: list[np.ndarray | _ColumnBuffers] = [
            _PhaseColumns(depthwise, geometry, dtype)
            if index and _PhaseColumns.fits(geometry) and pairs[index - 1][1].pool is None
            else _ColumnBuffers.gathered(depthwise, geometry, dtype) if geometry.sw != 1 and not index and not head
            else self._input_buffer(depthwise, geometry, dtype)
            for index, ((depthwise, _), geometry) in enumerate(zip(pairs, geometries, strict=True))]
        # one scratch for every depthwise output: the next stage finds it in cache (each stage's part was checked
        # by its layer in _stage before any view of it is used)
        between = np.empty(max(g.out_height * g.out_width * g.channels for g in geometries), dtype)
        carries = self._carries(pairs)
        first = inputs[0]
        try:
            run_head, incoming = (None, None) if head is None else \
                _head(head, input_shape, dtype, geometries[0], first, carries[0])
        except WindowError as exc:
            raise head.fail(f"input {input_shape}: {exc}") from None
        stages = []
        for index, ((depthwise, pointwise), geometry) in enumerate(zip(pairs, geometries, strict=True)):
            after = geometries[index + 1] if index + 1 < len(pairs) else None
            try:
                stage, incoming = self._stage(depthwise, pointwise, geometry, inputs[index], after,
                                              inputs[index + 1] if after is not None else None, dtype, between,
                                              incoming, carries[index + 1])
            except WindowError as exc:
                raise depthwise.fail(f"input {shape}: {exc}") from None
            stages.append(stage)
        # the input's copies into the first layer's buffer: (target, input index)
        gathers = first.gathers if isinstance(first, _ColumnBuffers) else [] if head else \
            [(geometries[0].interior(first).transpose(2, 0, 1)[None], (Ellipsis,))]
        final = stages[-1]
        pixels = math.prod(final_sizes)
        averager = row_averager(pixels, dtype) if self.mean is not None else None
        mean_shape = self.mean_shape(pairs[-1][1].weight.shape[0]) if self.mean_shape is not None else None
        # the last layer's output is short by what it carried (``carries``): its mean over the image is added back
        carried_mean = None if incoming is None else incoming.mean(axis=0).astype(dtype).reshape(mean_shape)

        def run(x: np.ndarray) -> np.ndarray | None:
            if run_head is not None:
                run_head(x)
            for target, columns in gathers:
                target[...] = x[columns]
            for stage in stages[:-1]:
                stage()
            y = final()
            if averager is not None:
                # (M, H * W) of the channels-last (H * W, M) storage, times the column of 1 / (H * W)
                y = y.reshape(y.shape[1], pixels).dot(averager).reshape(mean_shape)
                if carried_mean is not None:
                    y += carried_mean
                return None if has_nan(y) else y
            # (module docstring) then the kernels in turn decide; the channels-last storage as one flat view
            return None if has_nan(y.transpose(0, 2, 3, 1)) else y

        return run

    def _carries(self, pairs: list[tuple[Conv, Conv]]) -> list[bool]:
        """Per layer pair, and one more for the chain's end: whether the layer before the pair's depthwise conv
        (the head, or the pointwise conv of the pair before) leaves its output short by its bias, clamped to its
        activation's shifted bounds (_clamping_finisher), which drops the bias pass of every pointwise conv but
        the last: relu(P + b) = max(P, -b) + b. The depthwise conv after it reads the output short by b in every
        image row and, its padding rows filled with -b (_fill_padding_rows), in those too, so what its sums
        lack is the same for every output row (_depthwise_of_rows: only the side padding, zero weights, makes it
        differ along a row) and its carrying epilogue takes it on as a bias laid over a row, as a per-channel
        one is; the pointwise conv after that carries it on in turn. Taken where both layers around the carried
        constant carry their biases on (the depthwise one _carried_bounds) and the pointwise conv after it is
        unpooled (a constant per column does not commute with its pooling; a pooled one carries on its bias per
        channel, which does) and, at the end, into the mean over the image that the chain absorbed (the
        constant's mean added back to it)."""
        producers = [self.head, *(pointwise for _, pointwise in pairs[:-1])]
        carries = []
        for index, ((depthwise, pointwise), producer) in enumerate(zip(pairs, producers, strict=True)):
            # the head carries its own bias; a pointwise conv the depthwise bias it took on (and its own)
            leaves = producer is not None and producer.bias is not None if index == 0 \
                else self._carried_bounds(pairs[index - 1][0]) is not None
            # (a pooled pointwise conv carries on what it took on only per channel: not carried into, below)
            carries.append(leaves and _clamp_bounds(producer.act) is not None
                           and self._carried_bounds(depthwise) is not None and pointwise.pool is None)
        last_depthwise, last_pointwise = pairs[-1]
        into_mean = self.mean is not None and last_pointwise.pool is None \
            and _clamp_bounds(last_pointwise.act) is not None and self._carried_bounds(last_depthwise) is not None
        return [*carries, into_mean]

    @staticmethod
    def _input_buffer(depthwise: Conv, geometry: _DepthwiseGeometry, dtype: np.dtype) -> np.ndarray:
        """A depthwise conv's (rows, W, C) input buffer; only its interior rows are ever written."""
        shape = (geometry.rows, geometry.width, geometry.channels)
        depthwise.check_size(shape, dtype, "separable chain input buffer")
        return np.zeros(shape, dtype)

    def _stage(self, depthwise: Conv, pointwise: Conv, geometry: _DepthwiseGeometry,
               source: np.ndarray | _ColumnBuffers, after: _DepthwiseGeometry | None,
               target: np.ndarray | _ColumnBuffers | None, dtype: np.dtype,
               between_scratch: np.ndarray, incoming: np.ndarray | None = None, carry_out: bool = False
               ) -> tuple[Callable[[], np.ndarray | None], np.ndarray | None]:
        """One depthwise conv from ``source`` (its input buffer, or its kernel-column buffers) and the pointwise
        conv after it, into ``target`` (the next depthwise conv's input buffer, laid out by ``after``, or its
        kernel-column buffers) or, for the last pair, its output (fresh, or a buffer of the chain's own where only
        the chain's mean reads it). ``incoming`` (float64, (W, C)): what the layer before left out of every row
        of the input, carried into this pair (_carries). With ``carry_out`` the pointwise conv's output is left
        short by its bias too, clamped to its activation's shifted bounds (_clamping_finisher), and that
        constant (float64, (Wo, M)) comes back with the stage; else None."""
        g, item = geometry, dtype.itemsize
        channels, width_out, height_out = g.channels, g.out_width, g.out_height
        run, row = width_out * channels, g.width * channels
        copies: list[tuple[np.ndarray, np.ndarray]] = []
        if isinstance(source, _ColumnBuffers):
            copies.extend(source.shifted)
            columns = source.columns
        elif g.sw == 1:
            flat = source.reshape(-1)
            # tap (i, j) of output (h, w) reads buffer row lead + h * sh + i * dh, column w * sw + j * dw - left
            start = (g.lead * g.width - g.left) * channels
            windows = checked_windows(flat[start:], (g.kh, g.kw, height_out, run), tuple(
                v * item for v in (g.dh * row, g.dw * channels, g.sh * row, 1)))
        else:
            flat = source.reshape(-1)
            start = (g.lead * g.width - g.left) * channels
            # per kernel column j, the columns it reads at each output column, gathered into contiguous runs
            depthwise.check_size((g.kw, g.padded_rows, run), dtype, "separable chain column buffer")
            columns = np.empty((g.kw, g.padded_rows, width_out, channels), dtype)
            for j in range(g.kw):
                copies.append((columns[j], checked_windows(
                    flat[start + j * g.dw * channels:], (g.padded_rows, width_out, channels),
                    tuple(v * item for v in (row, g.sw * channels, 1)))))
        if g.sw != 1:
            windows = checked_windows(columns.reshape(-1), (g.kh, g.kw, height_out, run), tuple(
                v * item for v in (g.dh * run, g.padded_rows * run, g.sh * run, 1)))
        # the depthwise weights laid out over an output row, as ChannelsLastDepthwisePlan's, 0 where the tap's
        # source column is side padding
        taps = depthwise.weight.reshape(channels, g.kh, g.kw).transpose(1, 2, 0).astype(dtype)
        weights = np.where(g.inside[None, :, :, None], taps[:, :, None, :], dtype.type(0))
        weights = np.ascontiguousarray(weights.reshape(g.kh, g.kw, run))
        depthwise.check_size((height_out, run), dtype, "separable chain depthwise output")
        between = between_scratch[:height_out * run].reshape(height_out, run)
        rows_in = between.reshape(height_out * width_out, channels)
        out_channels = pointwise.weight.shape[0]
        matrix = np.ascontiguousarray(pointwise.weight.reshape(out_channels, channels).T, dtype)
        out_shape = (height_out * width_out, out_channels)
        pointwise.check_size(out_shape, dtype, "output")
        pointwise.check_work(math.prod(out_shape) * channels, "the convolution")
        bounds = self._carried_bounds(depthwise)
        if bounds is None:
            finish_depthwise = self._finisher(depthwise, (height_out, width_out, channels), dtype, True)
        else:
            depthwise_bias = depthwise.bias.astype(np.float64)
            if incoming is not None:
                _fill_padding_rows(source, g, incoming, dtype)
                depthwise_bias = depthwise_bias + _depthwise_of_rows(depthwise, g, incoming)
            finish_depthwise, bias = _carrying_finisher((height_out, width_out, channels), dtype, depthwise_bias,
                                                        bounds, pointwise.bias, matrix)
        # (rows of the depthwise output, where the pointwise conv writes their product): one block into the next
        # input buffer's rows, or one per column phase into the next layer's kernel-column buffers
        # or, for the last layer whose output only the chain's mean reads, a buffer of its own reused on every call
        # (a fresh one cost the product ~20% more at 7x7x256)
        internal = None
        if after is None and self.mean is not None and pointwise.pool is None:
            internal = np.empty(out_shape, dtype)  # (checked above)
        if isinstance(target, _PhaseColumns):
            products = target.phase_products(rows_in)
        elif internal is not None:
            products = [(rows_in, internal)]
        else:
            products = [] if after is None or pointwise.pool is not None else \
                [(rows_in, after.interior(target).reshape(out_shape))]
        finished = products[0][1].shape if products else out_shape  # (each phase's product is finished alone)
        nhwc = (1, height_out, width_out, out_channels)
        # a pooled last layer's views, reused on every call: the rows of each window row of its product (runs of
        # whole image rows) and, of their maximum (``rows_max``), the columns of each window column
        window_rows: list[np.ndarray] = []
        window_columns: list[np.ndarray] = []
        pooled_into = None  # the next layer's input rows (not column phases), for a pooled conv inside the chain
        window = _side_by_side_window(pointwise.pool)
        if window:
            # bias and activation after the pooling, on a quarter of the values: a per-channel bias and a
            # non-decreasing activation commute with the maximum exactly (rounding is monotonic)
            rows, columns = height_out // window, width_out // window
            full = np.empty(out_shape, dtype)
            window_rows = list(full[:rows * window * width_out].reshape(rows, window, -1).transpose(1, 0, 2))
            rows_max = np.empty((rows, width_out, out_channels), dtype)
            window_columns = list(rows_max[:, :columns * window].reshape(rows, columns, window, out_channels)
                                  .transpose(2, 0, 1, 3))
            products = [(rows_in, full)]
            finished, nhwc = (rows * columns, out_channels), (1, rows, columns, out_channels)
            if after is not None:
                pooled_into = after.interior(target).reshape(nhwc)
        carried = None
        if bounds is None:
            finishes = [self._finisher(pointwise, finished, dtype, after is not None)]
        else:
            # a constant carried per output column (Wo, M) is split as the product is, by column phase (the
            # pooled pointwise convs, _carries, take none); one per channel is the same for each phase
            parts = [(finished, bias)] if bias.ndim == 1 else [((height_out, width_out, out_channels), bias)] \
                if not isinstance(target, _PhaseColumns) else [
                    ((height_out, target.out_width, out_channels),
                     bias.reshape(target.out_width, target.sw, out_channels)[:, phase]) for phase, _ in target.phases]
            clamp = _clamp_bounds(pointwise.act) if carry_out else None
            finishes = [finisher(shape, dtype, part, pointwise.act) if clamp is None
                        else _clamping_finisher(shape, dtype, part, clamp) for shape, part in parts]
            if clamp is not None:  # (the next layer's rows: pooled ones are narrower)
                carried = np.broadcast_to(bias, (after.width if after is not None else width_out, out_channels))
        finish_pointwise = finishes[0]
        product_runs = [(pixels, product, finishes[index % len(finishes)])
                        for index, (pixels, product) in enumerate(products)]

        def stage() -> np.ndarray | None:
            for column, gathered in copies:
                np.copyto(column, gathered)
            tap_einsum("ijhk,ijk->hk", windows, weights, out=between)
            finish_depthwise(between)
            if window_rows:
                np.matmul(rows_in, matrix, out=products[0][1])
                _maximum_into(rows_max.reshape(rows, -1), window_rows)
                y = np.empty(nhwc, dtype) if pooled_into is None else pooled_into
                _maximum_into(y[0], window_columns)
                finish_pointwise(y.reshape(finished))
                return y.transpose(0, 3, 1, 2) if pooled_into is None else None
            if product_runs:
                for pixels, product, finish in product_runs:
                    np.matmul(pixels, matrix, out=product)
                    finish(product)
                return None if internal is None else internal.reshape(nhwc).transpose(0, 3, 1, 2)
            y = np.matmul(rows_in, matrix)
            finish_pointwise(y)
            return y.reshape(nhwc).transpose(0, 3, 1, 2)

        return stage, carried

    def _finisher(self, kernel: Conv, shape: tuple[int, ...], dtype: np.dtype, inside: bool
                  ) -> Callable[[np.ndarray], None]:
        """The in-place epilogue of ``kernel``'s channels-last output of ``shape`` (``inside``: a layer's output
        the next layer of the chain reads): its bias and activation (a hook for chains of other layers'
        epilogues, nn_core.ops.separable_int8)."""
        return finisher(shape, dtype, kernel.bias, kernel.act)

    def _carried_bounds(self, depthwise: Conv) -> tuple[float, float] | None:
        """The (low, high) bounds of ``depthwise``'s activation when its bias is to be carried into the pointwise
        conv's after it (_carrying_finisher): a float layer with a bias whose activation is none, a ReLU or a Clip;
        otherwise None (both layers' own epilogues, ``_finisher``)."""
        if depthwise.bias is None or depthwise.weight.dtype.kind != "f":
            return None
        return _clamp_bounds(depthwise.act)


def _clamp_bounds(act: Any) -> tuple[float, float] | None:
    """The (low, high) bounds an activation clamps to: none, a ReLU or a Clip; None for any other."""
    steps = act.steps if act is not None else []
    if not steps:
        return -math.inf, math.inf
    if len(steps) == 1 and type(steps[0]) is _Relu:
        return 0.0, math.inf
    if len(steps) == 1 and type(steps[0]) is _Clip:
        return steps[0].low, steps[0].high
    return None


def _clamping_finisher(shape: tuple[int, ...], dtype: np.dtype, carried: np.ndarray, bounds: tuple[float, float]
                       ) -> Callable[[np.ndarray], None]:
    """The in-place epilogue of an output of ``shape`` short by ``carried`` (float64, broadcastable to ``shape``
    over its trailing axes) whose activation clamps to ``bounds``: clamp(x + c, low, high) = clamp(x, low - c,
    high - c) + c, so the output is clamped to the shifted bounds (one pass, two for a Clip) and stays short by
    ``carried``, which the layer reading it takes on."""
    passes = []
    for function, bound in ((np.maximum, bounds[0]), (np.minimum, bounds[1])):
        if math.isfinite(bound):
            passes.append((function, *tiled_operand(bound - carried, shape, dtype)))

    # the views of the last output finished: the chain hands the same buffers every call, and the reshapes cost
    # as much as a small layer's pass
    last: list = [None, []]

    def finish(y: np.ndarray) -> None:
        if y is not last[0]:
            last[:] = y, [(function, operand, y.reshape(rows)) for function, operand, rows in passes]
        for function, operand, part in last[1]:
            function(part, operand, out=part)

    return finish


def _carrying_finisher(shape: tuple[int, ...], dtype: np.dtype, bias: np.ndarray, bounds: tuple[float, float],
                       pointwise_bias: np.ndarray | None, matrix: np.ndarray
                       ) -> tuple[Callable[[np.ndarray], None], np.ndarray]:
    """A depthwise conv's epilogue that leaves its ``bias`` (float64: per channel, or per output column and
    channel, (Wo, C), when it carries a constant from the layer before too: _depthwise_of_rows) to the pointwise
    conv after it (whose weights are ``matrix``, (C, M)), and that conv's bias with it. The sums are clamped to
    the shifted bounds (_clamping_finisher: one pass instead of the bias's and the activation's), and the + b
    reaches the pointwise conv's output as b @ matrix (float64, (M,) or (Wo, M)), which its epilogue adds or
    carries on. Results equal the layer by layer kernels' within float rounding (the rounding of x + b
    moves to the pointwise conv's sums)."""
    carried = bias @ matrix.astype(np.float64)
    if pointwise_bias is not None:
        carried += pointwise_bias.astype(np.float64).reshape(-1)
    return _clamping_finisher(shape, dtype, bias, bounds), carried


def _depthwise_of_rows(depthwise: Conv, geometry: _DepthwiseGeometry, row: np.ndarray) -> np.ndarray:
    """The depthwise conv (no bias) of an image whose every row, its top and bottom padding rows too, is ``row``
    (float64, (W, C)), between zero side padding: one output row (float64, (Wo, C)), every output row's. That is
    what the constant a layer before left out of the conv's input (SeparableChain._carries) adds to its sums,
    the padding rows holding minus the constant (_fill_padding_rows)."""
    g = geometry
    column_taps = depthwise.weight.reshape(g.channels, g.kh, g.kw).astype(np.float64).sum(axis=1).T  # (kw, C)
    return np.einsum("jwc,jc->wc", g.tap_columns(row), column_taps)


def _fill_padding_rows(source: np.ndarray | _ColumnBuffers, geometry: _DepthwiseGeometry, row: np.ndarray,
                       dtype: np.dtype) -> None:
    """Fill the rows of a depthwise conv's input buffer (or kernel-column buffers) outside its image, once, with
    minus the constant ``row`` ((W, C)) that the layer before left out of the image's rows: the conv then reads
    an image short by ``row`` everywhere, padding rows included, and what that leaves out of its sums is one
    output row's worth (_depthwise_of_rows). The side padding stays 0 (in the weights, or in the columns)."""
    g = geometry
    if isinstance(source, _ColumnBuffers):
        filled = (-g.tap_columns(row)).astype(dtype)
        for rows in (slice(0, g.top), slice(g.top + g.height, None)):
            source.columns[:, rows] = filled[:, None]
    else:
        filled = (-row).astype(dtype)
        start = g.lead + g.top
        for rows in (slice(0, start), slice(start + g.height, None)):
            source[rows] = filled


def _image_mean(step: Any) -> bool | None:
    """For a step that is a per-channel mean over the two image axes of a 4-D input (a GlobalAveragePool, with
    the Flatten it may have absorbed, or a ReduceMean with constant axes 2 and 3): whether its output is flat,
    (N, C) rather than (N, C, 1, 1). None for any other step."""
    kernel = step.kernel
    if step.before:
        return None
    if type(kernel) is GlobalAveragePool and set(step.fused) <= {"Flatten"}:
        return bool(kernel.flattened)
    if step.node.op_type == "ReduceMean" and not step.fused and getattr(kernel, "static_axes", None) is not None \
            and sorted(a % 4 for a in kernel.static_axes) == [2, 3] and all(-4 <= a < 4 for a in kernel.static_axes):
        return not kernel.keepdims
    return None


def alternating_chain(step: Any, readers: dict, graph_outputs: set[str], dropped: set[int],
                      takes: Callable[[Any, Any, bool], bool]) -> list[Any]:
    """``step`` (a depthwise layer) and the steps after it, each the sole reader of the one before's output as its
    image and not yet fused, while ``takes(reader, before, pointwise)`` accepts them (``pointwise``: the reader
    stands in a pointwise layer's place, the layers alternating); a chain ends at a pointwise layer, so a trailing
    depthwise one is left out."""
    chain = [step]
    while True:
        reader = sole_reader(readers, chain[-1], graph_outputs)
        if reader is None or id(reader) in dropped or reader.inputs[0] != chain[-1].outputs[0] \
                or not takes(reader, chain[-1], len(chain) % 2 == 1):
            break
        chain.append(reader)
    if len(chain) % 2:
        chain.pop()
    return chain


def fuse_separable_chains(steps: list[Any], graph_outputs: set[str]) -> list[Any]:
    """``steps`` with each run of depthwise conv -> pointwise conv (-> depthwise conv -> pointwise conv ...), every
    one the sole reader of the one before, made one SeparableChain step in the first one's place (its inputs, the
    last one's outputs). A run must hold at least one depthwise-pointwise pair and ends with a pointwise conv. One
    that starts at a depthwise conv with a column stride gathers that layer's kernel columns straight from its
    input, as the layer on its own does (_ColumnBuffers.gathered)."""
    producers, readers = producers_and_readers(steps)
    dropped: set[int] = set()
    for step in steps:
        if id(step) in dropped or not is_chain_depthwise(step.kernel):
            continue
        chain = alternating_chain(step, readers, graph_outputs, dropped, lambda reader, _before, pointwise: (
            _is_chain_or_pooled_pointwise if pointwise else is_chain_depthwise)(reader.kernel))
        if len(chain) < 2:
            continue
        step.kernel = SeparableChain(step.node, [s.kernel for s in chain])
        reader = sole_reader(readers, chain[-1], graph_outputs)
        flat = _image_mean(reader) if reader is not None and id(reader) not in dropped else None
        if flat is not None and reader.inputs[0] == chain[-1].outputs[0]:
            step.kernel.absorb_mean(reader.kernel, flat)
            chain.append(reader)
        head = producers.get(step.inputs[0])
        if head is not None and id(head) not in dropped and _is_head(head.kernel) \
                and head.outputs[0] == step.inputs[0] and sole_reader(readers, head, graph_outputs) is step:
            # the chain's step is the head's (its node and inputs), the depthwise conv's dropped with the rest
            step.kernel.absorb_head(head.kernel)
            head.kernel, step = step.kernel, head
            chain.insert(0, head)
        step.outputs = list(chain[-1].outputs)
        step.fused = (*step.fused, *(t for s in chain[1:] for t in (*s.before, s.node.op_type, *s.fused)))
        dropped.update(id(s) for s in chain[1:])
    return [s for s in steps if id(s) not in dropped]
