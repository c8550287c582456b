"""Gradient rules of the convolutions (reverse mode): Conv and ConvTranspose.

Conv's backward for one input shape is a plan, like its forward, holding reusable buffers. The batch goes through
in chunks of images (cache-sized columns), and per chunk:

* the input's columns are made again (im2col, one strided copy) and ``dW += dY @ columns^T`` is one matmul per
  group over all the chunk's output positions at once;
* ``dcolumns = W^T @ dY`` is one matmul per group, and col2im scatters it back into a zero-padded image with one
  vectorised strided add per kernel tap (never a loop over pixels); the interior of that image is dX.

Two column layouts, picked per shape like the forward's: NCHW ("group major": rows are (group, channel, tap),
columns run over (image, position)) for few input channels or several groups, and channels-last for one group
with many channels, where the per-tap blocks of dcolumns are whole (position, channel) rows and the adds into the
NHWC image run over long contiguous stretches.
"""

from __future__ import annotations

import math

import numpy as np

from .windows import checked_windows

# the columns of one chunk of the batch are kept around this size
GRAD_CHUNK_BYTES = 2 * 1024 * 1024


def _row_major(shape) -> list[int]:
    strides, step = [], 1
    for size in reversed(list(shape)):
        strides.append(step)
        step *= size
    return strides[::-1]


def _tap_slices(tap, dilations, strides, out_sizes) -> tuple[slice, ...]:
    return tuple(slice(t * d, t * d + (o - 1) * s + 1, s) for t, d, s, o in zip(tap, dilations, strides, out_sizes,
                                                                                 strict=True))


class ConvGradPlan:
    """Backward of one Conv over one input shape: NCHW columns in group-major order, (g, cg * taps, images *
    positions), so each chunk's dW and dcolumns are one matmul per group.

    With unit strides the columns span whole padded rows ("full width", as in the forward): position (a, b...)
    of the first output axis and *padded* later axes. The output gradient is zero at the positions past the
    real output (written once), so those columns add nothing to dW and their dcolumns are zero, and col2im is
    then, per tap, one add of long contiguous runs (a whole image plane at a time) into the padded image at the
    tap's flat offset: wrapped or overflowing entries are those zeros (the buffer has slack at its end)."""

    def __init__(self, x_shape, dtype, groups: int, out_channels: int, kernel, strides, dilations, begins, ends,
                 out_sizes):
        batch, channels, *sizes = x_shape
        self.groups, self.out_channels = groups, out_channels
        self.kernel, self.out_sizes = list(kernel), list(out_sizes)
        self.strides, self.dilations = list(strides), list(dilations)
        self.begins, self.ends = list(begins), list(ends)
        self.rank = rank = len(sizes)
        cg, mg = channels // groups, out_channels // groups
        self.cg, self.mg = cg, mg
        taps = math.prod(kernel)
        self.k_group = cg * taps
        padded = [n + b + e for n, b, e in zip(sizes, begins, ends, strict=True)]
        plane = math.prod(padded)
        elem = _row_major(padded)
        self.full_width = rank > 1 and all(s == 1 for s in strides)
        # the positions the columns run over, per image
        self.position_shape = [out_sizes[0], *padded[1:]] if self.full_width else list(out_sizes)
        self.positions = positions = math.prod(self.position_shape)
        item = np.dtype(dtype).itemsize
        self.rows = rows = max(1, min(batch, GRAD_CHUNK_BYTES // max(1, channels * taps * positions * item)))
        # how far a tap's full-width run reaches past the end of the last image plane
        slack = sum((k - 1) * d * e for k, d, e in zip(kernel, dilations, elem, strict=True)) if self.full_width \
            else 0
        # the zero-padded input of one chunk (only the interior is ever written) and its window view
        self.scratch = np.zeros(rows * channels * plane + slack, dtype)
        inside = (slice(None), slice(None)) + tuple(slice(b, b + n) for b, n in zip(begins, sizes, strict=True))
        self.interior = self.scratch[: rows * channels * plane].reshape(rows, channels, *padded)[inside]
        tap_steps = [d * e for d, e in zip(dilations, elem, strict=True)]
        position_steps = [1] if self.full_width else [s * e for s, e in zip(strides, elem, strict=True)]
        shape = (rows, groups, cg, *kernel, *([positions] if self.full_width else out_sizes))
        steps = (channels * plane, cg * plane, plane, *tap_steps, *position_steps)
        self.windows = checked_windows(self.scratch, shape, tuple(v * item for v in steps))
        self.cols_flat = np.empty(groups * self.k_group * rows * positions, dtype)
        self.dcols_flat = np.empty(groups * self.k_group * rows * positions, dtype)
        # the output gradient of a chunk, (g, mg, image, position...): zero past the real output, for good
        self.dy_flat = np.zeros(groups * mg * rows * positions, dtype)
        self.dpad_flat = np.empty(rows * channels * plane + slack, dtype)
        self.dpad_interior = self.dpad_flat[: rows * channels * plane].reshape(rows, channels, *padded)[inside]
        self.plane, self.channels, self.item, self.padded, self.slack = plane, channels, item, padded, slack
        taps_at = list(np.ndindex(*kernel))
        self.tap_offsets = [sum(t * v for t, v in zip(tap, tap_steps, strict=True)) for tap in taps_at]
        # exact positions: per tap, the strided block of the padded image it adds into
        self.tap_index = [(slice(None),) * 3 + tuple(slice(t * d, t * d + (o - 1) * s + 1, s) for t, d, s, o in
                                                     zip(tap, dilations, strides, out_sizes, strict=True))
                          for tap in taps_at]
        self.chunks: dict[int, tuple] = {}

    def _chunk(self, count: int) -> tuple:
        """The buffers of a chunk of ``count`` images, each contiguous: the output gradient (g, mg, image,
        position...) and its valid part, the columns and their gradient (g, cg, tap..., image, position...),
        the columns seen with the window view's axes (image first, the target of the im2col copy) and, per
        tap, the block of the columns' gradient seen image first with the place it adds into."""
        views = self.chunks.get(count)
        if views is not None:
            return views
        rank, kernel, groups, cg, item = self.rank, self.kernel, self.groups, self.cg, self.item
        size = groups * self.k_group * count * self.positions
        position_shape = [self.positions] if self.full_width else self.out_sizes
        shape = (groups, cg, *kernel, count, *position_shape)
        cols = self.cols_flat[:size].reshape(shape)
        dcols = self.dcols_flat[:size].reshape(shape)
        spatial = len(position_shape)
        image_first = (rank + 2, 0, 1, *range(2, rank + 2), *range(rank + 3, rank + 3 + spatial))
        dy_t = self.dy_flat[: groups * self.mg * count * self.positions].reshape(
            groups, self.mg, count, *self.position_shape)
        dy_valid = dy_t[(Ellipsis,) + tuple(slice(0, o) for o in self.out_sizes[1:])] if self.full_width \
            else dy_t
        dpad = self.dpad_flat[: count * self.channels * self.plane + self.slack]
        adds = []
        for tap, offset, index in zip(np.ndindex(*kernel), self.tap_offsets, self.tap_index, strict=True):
            block = dcols[(slice(None), slice(None)) + tap].transpose(2, 0, 1, *range(3, 3 + spatial))
            if self.full_width:
                target = checked_windows(dpad[offset:], (count, groups, cg, self.positions),
                                         (self.channels * self.plane * item, cg * self.plane * item,
                                          self.plane * item, item), writeable=True)
            else:
                target = dpad[: count * self.channels * self.plane].reshape(count, groups, cg, *self.padded)[index]
            adds.append((target, block))
        views = self.chunks[count] = (dy_t, dy_valid, cols, dcols, cols.transpose(image_first), dpad, adds)
        return views

    def run(self, x: np.ndarray, w: np.ndarray, dy: np.ndarray, want_x: bool, want_w: bool
            ) -> tuple[np.ndarray | None, np.ndarray | None]:
        batch = x.shape[0]
        groups, mg, rows, positions, k_group = self.groups, self.mg, self.rows, self.positions, self.k_group
        dw = np.zeros((groups, mg, k_group), x.dtype) if want_w else None
        product = np.empty((groups, mg, k_group), x.dtype) if want_w else None
        dx = np.empty(x.shape, x.dtype) if want_x else None
        wt = np.ascontiguousarray(w.reshape(groups, mg, k_group).transpose(0, 2, 1)) if want_x else None
        dy = dy.reshape(batch, groups, mg, *self.out_sizes)
        to_group_major = (1, 2, 0, *range(3, 3 + self.rank))
        for start in range(0, batch, rows):
            count = min(rows, batch - start)
            stop = start + count
            dy_t, dy_valid, cols, dcols, cols_view, dpad, adds = self._chunk(count)
            np.copyto(dy_valid, dy[start:stop].transpose(to_group_major))
            dy_m = dy_t.reshape(groups, mg, count * positions)
            if want_w:
                self.interior[:count] = x[start:stop]
                np.copyto(cols_view, self.windows[:count])
                np.matmul(dy_m, cols.reshape(groups, k_group, count * positions).transpose(0, 2, 1), out=product)
                dw += product
            if want_x:
                np.matmul(wt, dy_m, out=dcols.reshape(groups, k_group, count * positions))
                dpad.fill(0)
                for target, block in adds:
                    target += block
                dx[start:stop] = self.dpad_interior[:count]
        return dx, None if dw is None else dw.reshape(w.shape)


class ConvInputGradPlan:
    """dX of one unit-stride Conv over one input shape (any rank, groups, dilations, pads), chunk by chunk.

    Per chunk of images the output gradient is copied into whole padded rows ("full width": zero at the
    positions past the real output, written once) and ``dcolumns = W^T @ dY`` is one batched matmul with the
    columns' rows in (tap, channel) order; each (tap, channel) row is one padded image plane long (the matmul
    writes its first ``positions`` entries; the rest stay zero), so a tap's block of channel rows lines up with
    the padded image's channel planes. col2im is then a gather, not a scatter: padded image element ``j`` is
    the sum over taps of the tap's block at ``j - offset(tap)`` (zero out of range), and ``block(tap) -
    offset(tap)`` is linear in the tap's coordinates, so the taps form one strided view of dcolumns and col2im
    is one ``sum`` over its kernel axes per chunk (no zeroing, no overlapping writes). Reads before a block's
    start fall in the previous tap's zero tail: each row is lengthened past the plane when its tail is
    shorter than the largest offset, and without padding the sum lands straight in dX."""

    def __init__(self, x_shape, dtype, groups: int, out_channels: int, kernel, dilations, begins, ends, out_sizes):
        batch, channels, *sizes = x_shape
        self.groups, self.rank = groups, len(sizes)
        self.cg, self.mg = cg, mg = channels // groups, out_channels // groups
        self.kernel, self.out_sizes = list(kernel), list(out_sizes)
        self.taps = taps = math.prod(kernel)
        padded = [n + b + e for n, b, e in zip(sizes, begins, ends, strict=True)]
        self.plane = plane = math.prod(padded)
        elem = _row_major(padded)
        self.positions = out_sizes[0] * math.prod(padded[1:])
        item = np.dtype(dtype).itemsize
        tap_steps = [d * e for d, e in zip(dilations, elem, strict=True)]
        slack = sum((k - 1) * v for k, v in zip(kernel, tap_steps, strict=True))
        # the gather reads up to the largest tap offset back, so a row's entries from ``row - slack`` on must be
        # zero: past the last real output position, (out0 - 1, ..., out_last - 1), everything is (the padded
        # rows' extra columns too). Unit strides: out + (k - 1) * d = padded per axis, so that bound is the
        # plane, and with no padding the sum lands straight in dX
        last = sum((o - 1) * e for o, e in zip(out_sizes, elem, strict=True)) + 1
        self.row = row = max(plane, last + slack)
        self.rows = rows = max(1, min(batch, GRAD_CHUNK_BYTES // 2 // max(1, taps * channels * row * item)))
        self.channels, self.item, self.padded = channels, item, padded
        # the output gradient over whole padded rows, zero past the real output for good
        self.dy_wide = np.zeros((rows, groups * mg, out_sizes[0], *padded[1:]), dtype)
        self.dy_valid = self.dy_wide[(Ellipsis,) + tuple(slice(0, o) for o in out_sizes[1:])]
        # dcolumns (image, group, tap, channel, row): only the first ``positions`` of each row are written
        self.dcols = np.zeros((rows, groups, taps * cg, row), dtype)
        # the gather's view: (kernel..., image, group, channel * row), one tap block back by the tap's offset
        block = cg * row
        later = [math.prod(kernel[i + 1:]) for i in range(len(kernel))]
        self.gather = checked_windows(self.dcols, (*kernel, rows, groups, block), tuple(v * item for v in (
            *(n * block - t for n, t in zip(later, tap_steps, strict=True)), groups * taps * block, taps * block,
            1)))
        self.direct = row == plane and not any(begins) and not any(ends)
        inside = (slice(None), slice(None)) + tuple(slice(b, b + n) for b, n in zip(begins, sizes, strict=True))
        self.dpad = None if self.direct else np.empty((rows, channels, row), dtype)
        self.dpad_interior = None if self.dpad is None else \
            self.dpad[..., :plane].reshape(rows, channels, *padded)[inside]
        self.chunks: dict[int, tuple] = {}

    def _chunk(self, count: int) -> tuple:
        views = self.chunks.get(count)
        if views is None:
            dy = self.dy_wide[:count].reshape(count, self.groups, self.mg, self.positions)
            gather = self.gather[(slice(None),) * len(self.kernel) + (slice(0, count),)]
            dpad = None if self.dpad is None else self.dpad[:count].reshape(count, self.groups, -1)
            views = self.chunks[count] = (self.dy_valid[:count], dy, self.dcols[:count, ..., : self.positions],
                                          gather, dpad, None if self.dpad is None else self.dpad_interior[:count])
        return views

    def weight_matrix(self, w: np.ndarray) -> np.ndarray:
        """(M, C/g, k...) -> (g, taps * C/g, M/g): the rows in (tap, channel) order."""
        grouped = w.reshape(self.groups, self.mg, self.cg, self.taps)
        return np.ascontiguousarray(grouped.transpose(0, 3, 2, 1)).reshape(self.groups, self.taps * self.cg,
                                                                            self.mg)

    def run(self, w: np.ndarray, dy: np.ndarray | None, x_shape, fill=None) -> np.ndarray:
        """dX from the output gradient ``dy``, or from ``fill(start, count, target)``, which writes the output
        gradient of images ``start:start + count`` into ``target`` (count, M, out...), a view of this plan's
        buffer (a caller holding it in another layout saves a full-size NCHW copy)."""
        batch = x_shape[0]
        wt = self.weight_matrix(w)
        dx = np.empty(x_shape, self.dcols.dtype)
        flat = dx.reshape(batch, self.groups, -1)
        kernel_axes = tuple(range(len(self.kernel)))
        for start in range(0, batch, self.rows):
            count = min(self.rows, batch - start)
            dy_valid, dy_rows, dcols, gather, dpad, interior = self._chunk(count)
            if fill is None:
                np.copyto(dy_valid, dy[start:start + count])
            else:
                fill(start, count, dy_valid)
            np.matmul(wt, dy_rows, out=dcols)
            if dpad is None:
                np.sum(gather, axis=kernel_axes, out=flat[start:start + count])
            else:
                np.sum(gather, axis=kernel_axes, out=dpad)
                dx[start:start + count] = interior
        return dx


def conv_transpose_backward(x: np.ndarray, w: np.ndarray, dy: np.ndarray, groups: int, geometry: tuple,
                            want_x: bool, want_w: bool) -> tuple[np.ndarray | None, np.ndarray | None]:
    """dX and dW of ConvTranspose (see ConvTranspose.run: patches = W^T-ish matmul of X, scattered per tap into
    a canvas that is then cropped). Backwards: the output gradient is put back on the canvas, each tap gathers
    its strided view of it (im2col of the canvas) into the patches' gradient, and the two matmuls of the
    forward are transposed: dX = W @ dpatches, dW = dpatches @ X^T (summed over the batch in one matmul per
    group)."""
    kernel, strides, dilations, begins, out, room, shift = geometry
    batch, channels, *in_sizes = x.shape
    mg = w.shape[1]
    cg = channels // groups
    out_channels = groups * mg
    canvas = np.zeros((batch, out_channels, *room), dy.dtype)
    crop = tuple(slice(sh + b, sh + b + o) for sh, b, o in zip(shift, begins, out, strict=True))
    canvas[(slice(None), slice(None)) + crop] = dy
    dpatches = np.empty((batch, out_channels, *kernel, *in_sizes), dy.dtype)
    for tap in np.ndindex(*kernel):
        index = tuple(slice(sh + t * d, sh + t * d + (n - 1) * s + 1, s)
                      for sh, t, d, s, n in zip(shift, tap, dilations, strides, in_sizes, strict=True))
        dpatches[(slice(None), slice(None)) + tap] = canvas[(slice(None), slice(None)) + index]
    positions = math.prod(in_sizes)
    patch_rows = mg * math.prod(kernel)
    dp = dpatches.reshape(batch, groups, patch_rows, positions)
    dx = dw = None
    if want_x:
        # forward: patches (g, mg * taps, positions) = (g, mg * taps, cg) @ x (g, cg, positions)
        grouped = w.reshape(groups, cg, patch_rows)
        dx = np.matmul(grouped, dp).reshape(x.shape)
    if want_w:
        dp_rows = dp.transpose(1, 2, 0, 3).reshape(groups, patch_rows, batch * positions)
        x_rows = x.reshape(batch, groups, cg, positions).transpose(1, 2, 0, 3).reshape(groups, cg, batch * positions)
        dw = np.matmul(x_rows, dp_rows.transpose(0, 2, 1)).reshape(w.shape)
    return dx, dw
