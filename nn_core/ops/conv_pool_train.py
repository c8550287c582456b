"""Training plans: Conv -> Relu -> MaxPool 2x2 (LeNet's first block) as one unit, forward and backward.

Run node by node, the block writes the convolution's whole output, reads it back to pool it, and its gradient
reads it again to find each window's maximum (a dozen passes over full-size arrays), then writes a full-size
gradient that the Conv's weight gradient reads along with columns made a second time. Here the convolution's
output positions are ordered by *pooling phase* instead: the four taps of every 2x2 window, (row parity, column
parity), are four separate planes. Then

* the pooling is elementwise maxima of whole planes, and the first maximum of each window (row-major tap
  order, as MaxPool's rule and torch route it) is comparisons of the same planes, kept as a one-hot mask of
  the four phases that is also zero where the ReLU output is 0;
* the backward multiplies the pooled gradient by that mask, which *is* the convolution's output gradient in
  the phase order, and dW is a matmul per phase with the same columns, made again chunk by chunk (the order
  of positions does not matter to dW): no full-size gradient in NCHW order, no pass over the convolution's
  output outside the cache.

The phase order comes from the input: split into its four (row, column) parity images, every (tap, phase) row
of the columns is one contiguous run of a parity image (the full-width trick of conv.py: runs span whole rows of
``wide`` = pooled width + kernel width // 2 values; the extra positions are computed and never used, and their
gradient is zero). A LeNet-5 training step (batch 128, one thread) takes 0.75-0.89 of its node-by-node time
(the two alternated in one process on a busy machine). Only unit strides and dilations, one group, 2-D, an
even output, a MaxPool of 2x2 windows at stride 2 without padding, and few input channels (where conv.py would
pick NCHW columns); anything else keeps the node-by-node path.
"""

from __future__ import annotations

import math

import numpy as np

from .conv import CHANNELS_LAST_MIN_RUN
from .windows import checked_windows

# the batch goes through in chunks of about this many bytes of columns and convolution output (LeNet step, same
# process, alternating: 512 KB and 1 MB x0.94-0.98 of 2 MB, 4 MB x1.0-1.08)
CHUNK_BYTES = 512 * 1024
# the NCHW unit's chunks, in image rows (LeNet step, alternating: 512 KB-1 MB best; 256 KB x1.03-1.10 and 128 KB
# x1.17-1.23 from call overhead, 3 MB x1.04-1.09 and 8 MB x1.15-1.23 from leaving the cache)
ROWS_CHUNK_BYTES = 512 * 1024
# the unit's batch-sized buffers may take at most this much memory (beyond it the node-by-node path runs)
MAX_BYTES = 64 * 1024 * 1024


def pool_fits(pool) -> bool:
    """Whether a MaxPool kernel pools 2x2 windows at stride 2 with no padding, dilation, ceil or Indices."""
    pads = getattr(pool, "pads", None)
    return (list(getattr(pool, "kernel", [])) == [2, 2] and list(getattr(pool, "strides", [])) == [2, 2]
            and list(getattr(pool, "dilations", [])) == [1, 1] and not getattr(pool, "ceil_mode", True)
            and not getattr(pool, "want_indices", True) and getattr(pool, "auto_pad", "") in ("NOTSET", "VALID")
            and (pads is None or not any(pads)))


def pool_relu_and_route(phases, upper, lower, top, left_top, left_bottom, positive, zeros, route) -> None:
    """ReLU(max over each 2x2 window) into ``upper``, and ``route[k]``: whether tap k (upper-left, upper-right,
    lower-left, lower-right) is its window's first maximum (row-major, so a tie goes to the upper row, then the
    left tap) where the ReLU passes the gradient. ``phases`` holds the four taps' planes, the other arguments
    are same-shaped scratch planes; elementwise passes over whole planes, in cache."""
    p0, p1, p2, p3 = phases
    np.maximum(p0, p1, out=upper)
    np.maximum(p2, p3, out=lower)
    np.greater_equal(upper, lower, out=top)  # a tie goes to the upper row, which comes first
    np.greater_equal(p0, p1, out=left_top)  # and to the left tap
    np.greater_equal(p2, p3, out=left_bottom)
    np.maximum(upper, lower, out=upper)
    np.greater(upper, 0, out=positive)  # where the ReLU passes the gradient
    np.maximum(upper, zeros, out=upper)
    np.logical_and(top, positive, out=top)
    np.greater(positive, top, out=positive)  # positive, and the maximum in the lower row
    np.logical_and(top, left_top, out=route[0])
    np.greater(top, left_top, out=route[1])
    np.logical_and(positive, left_bottom, out=route[2])
    np.greater(positive, left_bottom, out=route[3])


class PhaseConvPlan:
    """The unit for one input shape (and weight shape, dtype, bias or not): buffers and views, reused.

    Layouts, chosen so that every elementwise pass runs over whole contiguous arrays (NumPy's fast loops need
    that; the same pass over rows of a strided array measured three times slower) and the batch goes through
    in chunks of image rows (one pooled row of one image: ``wide`` positions), row after row, image after
    image, in cache:

    * the input's four parity images, (channel, parity, row, image, column): a parity image's row of every
      image in turn, ``wide`` values each; only the places that hold input values are ever written, the
      padding and spare entries stay zero;
    * a chunk's columns, (phase, channel * kh * kw [+ ones], image row, column): the row of one (tap, phase)
      is a single contiguous run of a parity image, so im2col is a few block copies; made again by the
      backward (keeping the batch's columns, 12 MB for LeNet's conv1 at batch 128, measured slower on a busy
      machine: they leave the cache);
    * the convolution's output of a chunk, (phase, channel, image row, column): one matmul per phase, and the
      pooling is elementwise over whole phase planes; the masks and the pooled gradient are kept per
      chunk in the same (channel, image row, column) order.
    """

    def __init__(self, x_shape, dtype, weight_shape, has_bias: bool, begins, ends):
        batch, channels, height, width = x_shape
        out_channels, _, kh, kw = weight_shape
        out_h = height + begins[0] + ends[0] - kh + 1
        out_w = width + begins[1] + ends[1] - kw + 1
        self.batch, self.channels, self.out_channels = batch, channels, out_channels
        self.pooled = qh, qw = out_h // 2, out_w // 2
        self.wide = wide = qw + kw // 2  # a phase image's row: the pooled width and the kernel's reach
        self.line = line = batch * wide  # one row of every image
        self.k = channels * kh * kw
        k1 = self.k + has_bias
        self.has_bias = has_bias
        item = np.dtype(dtype).itemsize
        # the positions go through in chunks of whole image rows (one pooled row of one image, ``wide``
        # positions; ``units`` of them, row after row): a chunk's columns and convolution output in cache
        total = qh * batch
        self.units = units = max(1, min(total, ROWS_CHUNK_BYTES // max(1, 4 * (k1 + out_channels) * wide * item)))
        self.chunks = [(start, min(total, start + units)) for start in range(0, total, units)]
        # spare rows: a last, partial chunk's views still span whole chunks, and a run's unused tail reads on
        rows = -(-len(self.chunks) * units // batch) + kh // 2 + 1
        self.phases = np.zeros((channels, 4, rows, batch, wide), dtype)
        self.fills = []  # (target view, source index) per parity
        for a in range(2):
            r0 = -((a - begins[0]) // 2)  # the first phase row holding an input row: 2 r0 + a - begin >= 0
            y0 = 2 * r0 + a - begins[0]
            count_r = len(range(y0, height, 2))
            for b in range(2):
                s0 = -((b - begins[1]) // 2)
                x0 = 2 * s0 + b - begins[1]
                count_s = len(range(x0, width, 2))
                self.fills.append((self.phases[:, 2 * a + b, r0:r0 + count_r, :, s0:s0 + count_s],
                                   (slice(None), slice(None), slice(y0, None, 2), slice(x0, None, 2))))
        run = units * wide
        self.columns = np.empty((4, k1, run), dtype)
        if has_bias:
            self.columns[:, self.k] = 1
        # im2col: for output phase (py, px) and tap parity (e, f), the taps ky = 2t + e, kx = 2u + f read parity
        # image ((py + e) % 2, (px + f) % 2) from row (py + e) // 2 + t, column (px + f) // 2 + u on. Per tap
        # parity, the phases whose sources step forward in memory as py (or px) grows share one copy (a view
        # with a phase axis; 9 copies a chunk instead of 16 for a 5x5 kernel, each call ~1 us of overhead);
        # the source views have a leading chunk axis
        self.copies = []
        flat_phases, flat_columns = self.phases.reshape(-1), self.columns.reshape(-1)

        def source_at(py: int, px: int, e: int, f: int) -> int:
            parity = 2 * ((py + e) % 2) + (px + f) % 2
            return (parity * rows + (py + e) // 2) * line + (px + f) // 2

        for e in range(2):
            for f in range(2):
                taps_h, taps_w = len(range(e, kh, 2)), len(range(f, kw, 2))
                if not taps_h or not taps_w:
                    continue
                step_y = source_at(1, 0, e, f) - source_at(0, 0, e, f)  # (the same for px = 1)
                step_x = source_at(0, 1, e, f) - source_at(0, 0, e, f)
                ys = [None] if step_y >= 0 else [0, 1]  # None: both phases through one axis
                xs = [None] if step_x >= 0 else [0, 1]
                for py in ys:
                    for px in xs:
                        axes, s_steps, t_steps = [], [], []
                        if py is None:
                            axes.append(2), s_steps.append(step_y), t_steps.append(2 * k1 * run)
                        if px is None:
                            axes.append(2), s_steps.append(step_x), t_steps.append(k1 * run)
                        begin = source_at(py or 0, px or 0, e, f)
                        source = checked_windows(flat_phases[begin:], (len(self.chunks), *axes, channels, taps_h,
                                                                       taps_w, run), tuple(v * item for v in (
                            run, *s_steps, 4 * rows * line, line, 1, 1)))
                        offset = ((2 * (py or 0) + (px or 0)) * k1 + e * kw + f) * run
                        target = checked_windows(flat_columns[offset:], (*axes, channels, taps_h, taps_w, run),
                                                 tuple(v * item for v in (*t_steps, kh * kw * run, 2 * kw * run,
                                                                           2 * run, 1)), writeable=True)
                        self.copies.append((target, source))
        self.product = np.empty((4, out_channels, run), dtype)
        self.upper = np.empty((out_channels, run), dtype)
        self.lower = np.empty((out_channels, run), dtype)
        self.zeros = np.zeros((out_channels, run), dtype)
        self.top, self.left_top, self.left_bottom, self.positive = (np.empty((out_channels, run), np.bool_)
                                                                    for _ in range(4))
        chunks = len(self.chunks)
        # per chunk, the first maximum of each window, one-hot over the phases, none where the ReLU output is 0
        self.route = np.empty((chunks, 4, out_channels, run), np.bool_)
        # per chunk, the pooled gradient (channel, image row, column): zero past the pooled width, for good
        self.pooled_grad = np.zeros((chunks, out_channels, units, wide), dtype)
        self.phased = np.empty((4, out_channels, run), dtype)
        self.source: np.ndarray | None = None  # the input of the last forward
        self.output: np.ndarray | None = None  # and its output (the gradient goes back only for these two)

    def prepare(self, w: np.ndarray, b: np.ndarray | None) -> np.ndarray:
        """(M, C, kh, kw) -> (M, C * kh * kw [+ bias column]), the columns' (channel, kernel row, kernel
        column) order."""
        matrix = w.reshape(w.shape[0], -1)
        if b is not None:
            matrix = np.concatenate([matrix, b.reshape(-1, 1)], axis=1)
        return np.ascontiguousarray(matrix)

    def _pieces(self, start: int, stop: int):
        """Image rows ``start:stop`` (row after row, image after image) as (pooled row, first image, last image
        + 1, the first one's index in the chunk) runs within one pooled row each."""
        batch = self.batch
        unit = start
        while unit < stop:
            row, image = divmod(unit, batch)
            end = min(stop, (row + 1) * batch)
            yield row, image, image + end - unit, unit - start
            unit = end

    def _im2col(self, chunk: int, count: int) -> np.ndarray:
        """The columns of chunk ``chunk`` (``count`` image rows), (phase, K, count * wide)."""
        length = count * self.wide
        for target, source in self.copies:
            np.copyto(target[..., :length], source[chunk, ..., :length])
        return self.columns[..., :length]

    def forward(self, x: np.ndarray, matrix: np.ndarray) -> np.ndarray:
        """relu(maxpool(conv(x))) with ``matrix`` the weight (M, C * kh * kw [+ bias column])."""
        for target, index in self.fills:
            np.copyto(target, x[index].transpose(1, 2, 0, 3))
        batch, m, wide = x.shape[0], self.out_channels, self.wide
        qh, qw = self.pooled
        # the output is NCHW-shaped over NHWC storage: the next convolution (LeNet's conv2, channels-last) copies
        # it into its channels-last scratch twice a step (forward and dW) and that copy is then contiguous; the
        # transposition is paid once, here (step x0.96-1.0 of NCHW storage, alternating)
        y = np.empty((batch, qh, qw, m), x.dtype).transpose(0, 3, 1, 2)
        for chunk, (start, stop) in enumerate(self.chunks):
            count = stop - start
            length = count * wide
            product = self.product[..., :length]
            np.matmul(matrix, self._im2col(chunk, count), out=product)
            upper = self.upper[:, :length]
            pool_relu_and_route(product, upper, *(a[:, :length] for a in (
                self.lower, self.top, self.left_top, self.left_bottom, self.positive, self.zeros)),
                self.route[chunk, :, :, :length])
            units = upper.reshape(m, count, wide)
            for row, first, last, at in self._pieces(start, stop):
                np.copyto(y[first:last, :, row], units[:, at:at + last - first, :qw].transpose(1, 0, 2))
        self.source, self.output = x, y
        return y

    def weight_grad(self, dy: np.ndarray, want_output_grad: bool = False
                    ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        """(dW (M, C * kh * kw), dB or None, the convolution's output gradient in NCHW order if wanted) from
        the pooled output gradient ``dy``: routed to each window's first maximum where the ReLU passed it."""
        batch, m, wide = dy.shape[0], self.out_channels, self.wide
        qh, qw = self.pooled
        finite = bool(np.isfinite(dy).all())
        product = np.zeros((m, self.columns.shape[1]), dy.dtype)
        out = np.empty((batch, m, 2 * qh, 2 * qw), dy.dtype) if want_output_grad else None
        for chunk, (start, stop) in enumerate(self.chunks):
            count = stop - start
            length = count * wide
            grad = self.pooled_grad[chunk, :, :count]
            for row, first, last, at in self._pieces(start, stop):
                np.copyto(grad[:, at:at + last - first, :qw], dy[first:last, :, row].transpose(1, 0, 2))
            flat = grad.reshape(1, m, length)
            route, phased = self.route[chunk, :, :, :length], self.phased[..., :length]
            if finite:
                np.multiply(flat, route, out=phased)
            else:  # 0 * inf would be NaN off the route
                phased.fill(0)
                np.copyto(phased, flat, where=route)
            # one matmul per phase: (channel, positions) by (positions, K)
            product += np.matmul(phased, self._im2col(chunk, count).transpose(0, 2, 1)).sum(axis=0)
            if out is not None:
                units = phased.reshape(4, m, count, wide)
                for row, first, last, at in self._pieces(start, stop):
                    blocks = out[first:last, :, 2 * row:2 * row + 2].reshape(last - first, m, 2, qw, 2)
                    for k in range(4):
                        np.copyto(blocks[:, :, k // 2, :, k % 2],
                                  units[k, :, at:at + last - first, :qw].transpose(1, 0, 2))
        dw = np.ascontiguousarray(product[:, :self.k])
        return dw, (product[:, self.k] if self.has_bias else None), out


class ChannelsLastPhasePlan:
    """The unit with channels-last columns, for many input channels (conv.py's _ChannelsLastPlan, with the
    output positions in pooling-phase order): per chunk of images, a zero-padded NHWC copy of the chunk, one
    strided copy into columns (phase, image, pooled row, pooled column) x (kh, kw * C [+ 1]) whose rows are
    kernel-row runs of kw * C contiguous values, one matmul giving the output channels-last, (phase, image,
    pooled row, pooled column, channel): each phase plane contiguous, pooled as in PhaseConvPlan. The backward
    routes the pooled gradient into the same channels-last order, makes the columns again and takes dW as a
    matmul per phase and chunk; dX (a convolution that is not the first layer) gets the output gradient
    written from that order straight into its plan's buffer."""

    def __init__(self, x_shape, dtype, weight_shape, has_bias: bool, begins, ends):
        batch, channels, height, width = x_shape
        out_channels, _, kh, kw = weight_shape
        padded = (height + begins[0] + ends[0], width + begins[1] + ends[1])
        self.pooled = qh, qw = (padded[0] - kh + 1) // 2, (padded[1] - kw + 1) // 2
        self.out_channels, self.kernel, self.channels = out_channels, (kh, kw), channels
        self.k = kh * kw * channels
        k1 = self.k + has_bias
        self.has_bias = has_bias
        item = np.dtype(dtype).itemsize
        area = qh * qw
        self.rows = rows = max(1, min(batch, CHUNK_BYTES // max(1, 4 * area * (k1 + out_channels) * item)))
        self.scratch = np.zeros((rows, *padded, channels), dtype)
        self.interior = self.scratch[:, begins[0]:begins[0] + height, begins[1]:begins[1] + width]
        hp, wp = padded
        shape = (2, 2, rows, qh, qw, kh, kw * channels)
        self.windows = checked_windows(self.scratch, shape, tuple(v * item for v in (
            wp * channels, channels, hp * wp * channels, 2 * wp * channels, 2 * channels, wp * channels, 1)))
        self.columns = np.empty((4 * rows * area, k1), dtype)
        if has_bias:
            self.columns[:, self.k] = 1
        self.targets: dict[int, np.ndarray] = {}
        self.product = np.empty((4 * rows * area, out_channels), dtype)
        plane = rows * area * out_channels
        self.upper, self.lower = np.empty(plane, dtype), np.empty(plane, dtype)
        self.zeros = np.zeros(plane, dtype)
        self.top, self.left_top, self.left_bottom, self.positive = (np.empty(plane, np.bool_) for _ in range(4))
        # the first maximum of each window, one-hot over the phases, none where the ReLU output is 0:
        # (phase, image, pooled row, pooled column, channel)
        self.route = np.empty((4, batch * area * out_channels), np.bool_)
        self.grad = np.empty((rows, qh, qw, out_channels), dtype)
        self.phased_all: np.ndarray | None = None
        self.source: np.ndarray | None = None
        self.output: np.ndarray | None = None

    def prepare(self, w: np.ndarray, b: np.ndarray | None) -> np.ndarray:
        """(M, C, kh, kw) -> (kh * kw * C [+ bias row], M), the columns' (kernel row, kernel column, channel)
        order."""
        matrix = w.transpose(2, 3, 1, 0).reshape(-1, w.shape[0])
        if b is not None:
            matrix = np.concatenate([matrix, b.reshape(1, -1)], axis=0)
        return np.ascontiguousarray(matrix)

    def _im2col(self, x: np.ndarray, start: int, count: int) -> np.ndarray:
        """The columns of images ``start:start + count`` (at most ``rows``), in the chunk buffer: (phase,
        image, pooled row, pooled column) x (kernel row, kernel column, channel [, 1])."""
        self.interior[:count] = x[start:start + count].transpose(0, 2, 3, 1)
        qh, qw = self.pooled
        columns = self.columns[: 4 * count * qh * qw]
        target = self.targets.get(count)
        if target is None:  # the columns seen with the windows' axes (the last, partial chunk has its own)
            k1, item = columns.shape[1], columns.itemsize
            target = self.targets[count] = checked_windows(columns, self.windows[:, :, :count].shape, tuple(
                v * item for v in (2 * count * qh * qw * k1, count * qh * qw * k1, qh * qw * k1, qw * k1, k1,
                                   self.windows.shape[-1], 1)), writeable=True)
        np.copyto(target, self.windows[:, :, :count])
        return columns

    def forward(self, x: np.ndarray, matrix: np.ndarray) -> np.ndarray:
        batch, m = x.shape[0], self.out_channels
        qh, qw = self.pooled
        y = np.empty((batch, m, qh, qw), x.dtype)
        for start in range(0, batch, self.rows):
            count = min(self.rows, batch - start)
            plane = count * qh * qw * m
            product = self.product[: 4 * count * qh * qw]
            np.matmul(self._im2col(x, start, count), matrix, out=product)
            upper = self.upper[:plane]
            pool_relu_and_route(product.reshape(4, plane), upper, *(a[:plane] for a in (
                self.lower, self.top, self.left_top, self.left_bottom, self.positive, self.zeros)),
                self.route[:, start * qh * qw * m:start * qh * qw * m + plane])
            np.copyto(y[start:start + count], upper.reshape(count, qh, qw, m).transpose(0, 3, 1, 2))
        self.source, self.output = x, y
        return y

    def weight_grad(self, dy: np.ndarray, want_output_grad: bool = False
                    ) -> tuple[np.ndarray, np.ndarray | None, object]:
        """(dW (M, C, kh, kw), dB or None, and if wanted a ``fill`` for Conv._input_grad that writes the
        convolution's output gradient straight from the phase order into the dX plan's buffer."""
        x = self.source
        batch, m = dy.shape[0], self.out_channels
        qh, qw = self.pooled
        area = qh * qw
        finite = bool(np.isfinite(dy).all())
        product = np.zeros((m, self.columns.shape[1]), dy.dtype)
        # the routed gradient (phase, image, pooled row, pooled column, channel) of the whole batch
        phased_all = self.phased_all
        if phased_all is None or phased_all.shape[1] != batch * area:
            phased_all = self.phased_all = np.empty((4, batch * area, m), dy.dtype)
        for start in range(0, batch, self.rows):
            count = min(self.rows, batch - start)
            plane = count * area * m
            grad = self.grad[:count]
            np.copyto(grad, dy[start:start + count].transpose(0, 2, 3, 1))
            flat = grad.reshape(1, plane)
            route = self.route[:, start * area * m:start * area * m + plane]
            phased = phased_all[:, start * area:(start + count) * area]
            if finite:
                np.multiply(flat, route, out=phased.reshape(4, plane))
            else:  # 0 * inf would be NaN off the route
                phased.fill(0)
                np.copyto(phased.reshape(4, plane), flat, where=route)
            columns = self._im2col(x, start, count).reshape(4, count * area, -1)
            product += np.matmul(phased.transpose(0, 2, 1), columns).sum(axis=0)
        kh, kw = self.kernel
        dw = np.ascontiguousarray(product[:, : self.k].reshape(m, kh, kw, self.channels).transpose(0, 3, 1, 2))

        def fill(start: int, count: int, target: np.ndarray) -> None:
            blocks = target.reshape(count, m, qh, 2, qw, 2)
            for k in range(4):
                np.copyto(blocks[:, :, :, k // 2, :, k % 2], phased_all[k, start * area:(start + count) * area]
                          .reshape(count, qh, qw, m).transpose(0, 3, 1, 2))

        return dw, (product[:, self.k] if self.has_bias else None), fill if want_output_grad else None


class ConvReluPool:
    """Conv -> Relu -> MaxPool 2x2 of a training plan: decides per input whether the phase unit applies, runs
    it, and afterwards answers the block's gradient for the arrays it produced."""

    def __init__(self, conv, pool):
        self.conv, self.pool = conv, pool
        self.plans: dict[tuple, PhaseConvPlan | ChannelsLastPhasePlan | None] = {}
        # the plan of the last forward, if it ran as a unit
        self.active: PhaseConvPlan | ChannelsLastPhasePlan | None = None

    def _plan(self, x: np.ndarray, w: np.ndarray, b: np.ndarray | None
              ) -> PhaseConvPlan | ChannelsLastPhasePlan | None:
        key = (x.shape, x.dtype, w.shape, w.dtype, b is None)
        if key in self.plans:
            return self.plans[key]
        plan = None
        conv = self.conv
        fits = (x.ndim == 4 and x.dtype in (np.float32, np.float64) and w.dtype == x.dtype
                and (b is None or b.dtype == x.dtype) and conv.group == 1 and conv.act is None and conv.pool is None)
        if fits:
            # the node's own checks, as its forward would make them (weights, geometry, sizes and work)
            conv._check_weight(w, b)
            kernel, strides, dilations, begins, ends, padded, out_sizes = conv._fit(x, w.shape)
            batch, channels = x.shape[:2]
            out_channels, k = w.shape[0], w.shape[1] * math.prod(kernel)
            conv.check_size((1, channels, *padded), x.dtype, f"padded input image (pads {begins + ends})")
            conv.check_size((batch, out_channels, *out_sizes), x.dtype, "output")
            # (a chunk holds at least one image row of NCHW columns, one image of channels-last ones)
            conv.check_size((4, k + 1, max(out_sizes[-1] + kernel[-1], math.prod(out_sizes) // 4 + 1)), x.dtype,
                            "column buffer")
            conv.check_work(batch * out_channels * math.prod(out_sizes) * k, "the convolution")
            fits = list(strides) == [1, 1] and list(dilations) == [1, 1] and all(o % 2 == 0 for o in out_sizes)
            if fits:
                (out_h, out_w), (kh, kw) = out_sizes, kernel
                # the batch-sized buffers, bounded for either layout: the parity images (NCHW columns), the
                # route (bool), the pooled and routed gradients, over rows of ``line`` >= batch * pooled width
                item, line, pooled_h = x.dtype.itemsize, batch * (out_w // 2 + kw // 2), out_h // 2
                size = (channels * 4 * (pooled_h + kh + 1) * item + out_channels * pooled_h * (5 * item + 4)) * line
                if size <= MAX_BYTES:
                    # channels-last columns (kernel rows of many channels) beat NCHW ones, as in conv.py
                    layout = ChannelsLastPhasePlan if kw * channels >= CHANNELS_LAST_MIN_RUN else PhaseConvPlan
                    plan = layout(x.shape, x.dtype, w.shape, b is not None, begins, ends)
        if len(self.plans) > 8:
            self.plans.clear()
        self.plans[key] = plan
        return plan

    def forward(self, x, w, b=None):
        """The block's forward: relu(maxpool(conv(x))) through the unit, or None when it does not apply."""
        self.active = None
        with self.conv.lock:
            plan = self._plan(x, w, b)
            if plan is None:
                return None
            y = plan.forward(x, plan.prepare(w, b))
        self.active = plan
        return y

    def backward(self, x, w, b, y, dy, want_x: bool, want_w: bool, want_b: bool) -> list:
        """[dX, dW, dB] (None where not wanted) of the block run by the last ``forward`` on ``x`` giving ``y``."""
        plan = self.active
        assert plan is not None and plan.source is x and plan.output is y
        with self.conv.lock:
            dw, db, out_grad = plan.weight_grad(dy.astype(x.dtype, copy=False), want_x)
            dx = None
            if callable(out_grad):
                dx = self.conv._input_grad(x, w, None, fill=out_grad)
            elif out_grad is not None:
                dx = self.conv._input_grad(x, w, out_grad)
        return [dx, dw.reshape(w.shape) if want_w else None,
                db.reshape(b.shape) if want_b and db is not None else None]

    def matches(self, x, y) -> bool:
        plan = self.active
        return plan is not None and plan.source is x and plan.output is y

