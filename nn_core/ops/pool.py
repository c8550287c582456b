"""Pooling kernels: MaxPool (with optional Indices), AveragePool, LpPool and their Global forms.

Max, sum and Lp pooling are separable: pooling a 2-D window is pooling along H, then along W. Each axis is a
running reduction over its kernel taps, one strided view of the (padded) input per tap folded into the result,
so a kh x kw window costs kh + kw - 2 vectorised passes and no window copy at all (2 for LeNet's 2x2 pooling,
whose views are taken straight from the input). When padding is needed, a padded scratch buffer is prepared per
input shape (its border is filled once) and only its interior is rewritten on each call. MaxPool's Indices
output needs the winning tap of the whole window, so it walks the kh * kw taps instead.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable

import numpy as np

from .activations import sigmoid
from .caches import keep
from .conv import resolve_pads
from .norm import row_averager
from .registry import NodeSpec, Op, register
from .windows import Geometry, check_fits, check_taps, effective_steps, int_attr

# pooling a large batch goes chunk by chunk of about this many input bytes (cache-sized intermediates)
POOL_CHUNK_BYTES = 1024 * 1024
# AveragePool runs as matrix products on inputs of at most MATRIX_POOL_ELEMENTS elements pooled to no side longer
# than MATRIX_POOL_OUT: each output element then costs a row of the input instead of the kernel's taps, which
# BLAS still does faster than NumPy's strided passes at these sizes (measured on (1, 4, 24, 24) and (1, 8, 8, 8)
# pooled 3x3 by 2: 2.5x and 5x faster; on (1, 16, 32, 32) as fast; larger inputs, or a stride-1 pooling to a
# 32-wide output, are slower this way)
MATRIX_POOL_ELEMENTS = 8192
MATRIX_POOL_OUT = 16
# ... and as one product with the Kronecker product of the two axes' matrices when that matrix has at most this
# many elements (an 8x8 image pooled to 4x4: 64 x 16): NumPy's batched matmul costs ~0.3 us per image plane
KRONECKER_POOL = 16384
_WIDE_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))
# the activations an AveragePool takes in before it: the functions of their kernels (activations.py)
_PREACTIVATIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {"Tanh": np.tanh, "Sigmoid": sigmoid}


def _lowest(dtype: np.dtype):
    return -np.inf if dtype.kind == "f" else np.iinfo(dtype).min


class _PoolPlan:
    """Geometry of one pooling over one input shape: output sizes, tap views over a padded scratch buffer."""

    def __init__(self, x_shape: tuple[int, ...], dtype: np.dtype, kernel: list[int], strides: list[int],
                 dilations: list[int], begins: list[int], ends: list[int], ceil_mode: bool, fill: float):
        batch, channels, *sizes = x_shape
        self.sizes, self.begins, self.strides, self.dilations, self.kernel = sizes, begins, strides, dilations, kernel
        out = []
        for n, k, s, d, b, e in zip(sizes, kernel, strides, dilations, begins, ends, strict=True):
            span = n + b + e - (k - 1) * d - 1
            count = (-(-span // s) if ceil_mode else span // s) + 1
            if ceil_mode and (count - 1) * s >= n + b:  # the last window must start inside the input or left pad
                count -= 1
            out.append(count)
        if min(out) <= 0:
            raise ValueError(f"output size {out} is empty")
        self.out = out
        self.strides, self.dilations = strides, dilations = effective_steps(out, kernel, strides, dilations)
        # the buffer must also hold the windows that ceil_mode lets run past the end padding
        geometry = zip(out, strides, kernel, dilations, sizes, begins, ends, strict=True)
        self.tails = [max(e, (o - 1) * s + (k - 1) * d + 1 - n - b) for o, s, k, d, n, b, e in geometry]
        self.ends = ends
        self.direct = not any(begins) and not any(self.tails)
        if self.direct:
            self.buffer = None
            self.interior = None
        else:
            padded = [n + b + t for n, b, t in zip(sizes, begins, self.tails, strict=True)]
            self.buffer = np.full((batch, channels, *padded), fill, dtype=dtype)
            self.interior = self.buffer[(slice(None), slice(None)) + tuple(slice(b, b + n) for b, n in
                                                                           zip(begins, sizes, strict=True))]
        # the views of every tap of the whole window (MaxPool's Indices only), made on first use
        self.tap_index: list[tuple] | None = None
        self.taps: list[np.ndarray] | None = None
        # separable form: for each spatial axis (skipping 1-wide, stride-1 ones), the index of each tap's view
        self.axis_taps = []
        for axis, (k, s, d, o) in enumerate(zip(kernel, strides, dilations, out, strict=True)):
            if k == 1 and s == 1:
                continue
            prefix = (slice(None),) * (axis + 2)
            self.axis_taps.append([prefix + (slice(t * d, t * d + (o - 1) * s + 1, s),) for t in range(k)])
        # what is left to crop when some axes were skipped (their extent may exceed the output in floor mode)
        self.crop = (slice(None), slice(None)) + tuple(slice(0, o) for o in out)
        # an axis left alone keeps its padded extent, which can exceed the output in floor mode
        padded_sizes = [n + b + t for n, b, t in zip(sizes, begins, self.tails, strict=True)]
        self.needs_crop = any(k == 1 and s == 1 and p != o
                              for k, s, p, o in zip(kernel, strides, padded_sizes, out, strict=True))
        # side-by-side windows (stride = kernel, no padding) larger than 2x2, e.g. a global pooling written as
        # MaxPool(kernel = the whole image): the input as (..., out, kernel, ...) blocks, reduced in one call
        # instead of kernel - 1 passes per axis. Only where that reduction's inner loop is long (see reduce_block)
        self.blocked = None
        self.one_window = all(o == 1 for o in out)
        if self.direct and sum(kernel) > 2 * len(kernel) and all(
                (s == k or o == 1) and (d == 1 or k == 1)
                for k, s, d, o in zip(kernel, strides, dilations, out, strict=True)):
            index = (slice(None), slice(None)) + tuple(slice(0, o * k) for o, k in zip(out, kernel, strict=True))
            tail = (channels,) + tuple(v for o, k in zip(out, kernel, strict=True) for v in (o, k))
            self.blocked = (index, tail, tuple(range(3, 2 + 2 * len(kernel), 2)))

    def whole(self) -> bool:
        """Whether the one window of each axis takes every element of the input, without padding (a global
        pooling written as a windowed one: MaxPool 28x28 on a 28x28 image). A dilated window that spans the
        input skips the elements between its taps: not whole."""
        return self.direct and all(o == 1 and (k - 1) * d + 1 == n and (d == 1 or k == 1) for o, k, d, n in
                                   zip(self.out, self.kernel, self.dilations, self.sizes, strict=True))

    def in_one_block(self, x: np.ndarray) -> bool:
        """Whether ``reduce`` would pool ``x`` in one block straight from the input (no scratch, no chunks)."""
        return self.direct and bool(self.axis_taps) and x.nbytes <= POOL_CHUNK_BYTES

    def source(self, x: np.ndarray) -> np.ndarray:
        """The array the windows read: the input itself, or the padded scratch with the input copied in."""
        if self.buffer is None:
            return x
        self.interior[...] = x
        return self.buffer

    def reduce(self, source: np.ndarray, combine: np.ufunc) -> np.ndarray:
        """Pool ``source`` with the binary ``combine`` (np.maximum, np.add), one axis at a time; a large batch
        goes through in chunks of images so that the intermediate results stay in cache."""
        if not self.axis_taps:  # nothing to reduce (1x1 window, stride 1): a copy of the cropped source
            return source[self.crop].copy()
        batch = source.shape[0]
        rows = max(1, POOL_CHUNK_BYTES * batch // max(source.nbytes, 1))
        if rows >= batch:
            return self.reduce_block(source, combine)
        first = self.reduce_block(source[:rows], combine)
        y = np.empty((batch, *first.shape[1:]), first.dtype)
        y[:rows] = first
        for start in range(rows, batch, rows):
            y[start:start + rows] = self.reduce_block(source[start:start + rows], combine)
        return y

    def reduce_block(self, source: np.ndarray, combine: np.ufunc) -> np.ndarray:
        """Pool all of ``source`` at once (a chunk small enough to stay in cache)."""
        # the blocked reduction runs its inner loop over the last axis of the reshaped blocks: a whole row of one
        # window, or the channels of a channels-last source; over the kernel's few columns of an NCHW source it
        # is ten times slower than the separable passes (MaxPool 4x4/4 of (1, 32, 26, 26): 370 us against 38)
        if self.blocked is not None and (self.one_window or (source.strides[1] == source.itemsize
                                                             and source.shape[1] > 1)):
            index, tail, axes = self.blocked
            block = source[index]
            return combine.reduce(block.reshape(block.shape[0], *tail), axis=axes)
        y = source
        for taps in self.axis_taps:
            reduced = combine(y[taps[0]], y[taps[1]]) if len(taps) > 1 else y[taps[0]].copy()
            for tap in taps[2:]:
                combine(reduced, y[tap], out=reduced)
            y = reduced
        return y[self.crop] if self.needs_crop else y

    def reduce_adjoint(self, grad: np.ndarray, source_shape: tuple[int, ...]) -> np.ndarray:
        """The gradient of ``reduce(source, np.add)`` with respect to ``source``: the separable passes walked
        backwards, each tap's strided view of a stage's input receiving the gradient of that stage's output."""
        shapes = [tuple(source_shape)]
        for taps in self.axis_taps:
            shapes.append(np.empty(shapes[-1], np.bool_)[taps[0]].shape)
        if not self.axis_taps or self.needs_crop:
            full = np.zeros(shapes[-1], grad.dtype)
            full[self.crop] = grad
            grad = full
        for taps, shape in zip(reversed(self.axis_taps), reversed(shapes[:-1]), strict=True):
            spread = np.zeros(shape, grad.dtype)
            for tap in taps:
                spread[tap] += grad
            grad = spread
        return grad

    def unpad(self, grad: np.ndarray) -> np.ndarray:
        """The part of a gradient over the (padded) source that belongs to the input itself."""
        if self.buffer is None:
            return grad
        inside = tuple(slice(b, b + n) for b, n in zip(self.begins, self.sizes, strict=True))
        return grad[(slice(None), slice(None)) + inside]

    def views(self, x: np.ndarray) -> list[np.ndarray]:
        if self.tap_index is None:
            self.tap_index = [
                tuple(slice(t * d, t * d + (o - 1) * s + 1, s)
                      for t, d, s, o in zip(tap, self.dilations, self.strides, self.out, strict=True))
                for tap in np.ndindex(*self.kernel)
            ]
            if self.buffer is not None:
                self.taps = [self.buffer[(Ellipsis,) + i] for i in self.tap_index]
        if self.buffer is None:
            return [x[(Ellipsis,) + i] for i in self.tap_index]
        self.interior[...] = x
        return self.taps  # type: ignore[return-value]

    def window_counts(self, include_pad: bool) -> np.ndarray | float:
        """How many elements each AveragePool window averages over: the real ones, plus the explicit padding
        when ``include_pad`` (the extra room ceil_mode adds is never counted)."""
        counted = []
        for n, b, e, t in zip(self.sizes, self.begins, self.ends, self.tails, strict=True):
            axis = np.zeros(n + b + t)
            axis[b:b + n] = 1
            if include_pad:
                axis[: b + n + e] = 1
            counted.append(axis)
        counts = []
        for axis, k, s, d, o in zip(counted, self.kernel, self.strides, self.dilations, self.out, strict=True):
            counts.append(sum(axis[t * d: t * d + (o - 1) * s + 1: s] for t in range(k)))
        total = counts[0]
        for c in counts[1:]:
            total = np.multiply.outer(total, c)
        return float(total.flat[0]) if np.all(total == total.flat[0]) else total


class _Pool(Op):
    """Attribute parsing and per-shape plan cache shared by the windowed poolings."""

    fill_lowest = False
    # whether run walks every tap of the whole window (MaxPool with Indices) rather than the separable passes
    walks_taps = False

    def __init__(self, node: NodeSpec):
        super().__init__(node)
        if self.attr("kernel_shape") is None:
            raise self.fail("kernel_shape attribute is required")
        self.geometry = Geometry(self)
        self.kernel = self.geometry.kernel_attr or []
        if not self.kernel:
            raise self.fail(f"kernel_shape {self.attr('kernel_shape')!r} must list one size per spatial axis")
        rank = len(self.kernel)
        self.strides = self.geometry.strides_attr or [1] * rank
        self.dilations = self.geometry.dilations_attr or [1] * rank
        self.auto_pad = self.geometry.auto_pad
        self.pads = self.geometry.pads_attr
        self.ceil_mode = bool(int_attr(self, "ceil_mode", 0, choices=(0, 1)))
        # one Python pass per tap of each axis (separable), or per tap of the whole window (Indices)
        check_taps(self, sum(self.kernel), f"kernel_shape {self.kernel}")
        self.plans: dict[tuple, _PoolPlan] = {}
        self.lock = threading.Lock()
        # (input shape, dtype) -> a runner of that shape which needs no lock (no shared scratch buffer): the
        # lock, the plan lookup and the chunking arithmetic measured more than the pooling itself at batch 1
        self.fast: dict[tuple, Callable[[np.ndarray], np.ndarray]] = {}

    def remember(self, x: np.ndarray, runner: Callable[[np.ndarray], np.ndarray] | None) -> None:
        """Keep the lock-free ``runner`` of ``x``'s shape (if there is one) for the next calls."""
        if runner is not None:
            keep(self.fast, (x.shape, x.dtype), runner)

    def plan(self, x: np.ndarray) -> _PoolPlan:
        key = (x.shape, x.dtype)
        plan = self.plans.get(key)
        if plan is None:
            plan = self.plans[key] = self._new_plan(x)
        return plan

    def _new_plan(self, x: np.ndarray) -> _PoolPlan:
        """The plan of a new input shape, after checking that the window fits and that its buffers and work are
        within the node's Limits."""
        if x.ndim != len(self.kernel) + 2:
            raise self.fail(f"input of shape {x.shape} does not match kernel_shape {self.kernel}")
        batch, channels, *sizes = x.shape
        begins, ends = resolve_pads(self.auto_pad, x.shape[2:], self.kernel, self.strides, self.dilations,
                                    self.pads)
        if not self.ceil_mode:  # ceil_mode may start a last window in the padding; the plan sizes the buffer
            check_fits(self, sizes, begins, ends, self.kernel, self.dilations)
        # (ceil_mode's extra room is at most the dilated kernel: the last window starts inside the input)
        padded = [n + b + e + (k - 1) * d for n, b, e, k, d in zip(sizes, begins, ends, self.kernel, self.dilations,
                                                                  strict=True)]
        self.check_size((batch, channels, *padded), x.dtype, f"padded input (pads {begins + ends})")
        windows = batch * channels * math.prod(padded)
        taps = math.prod(self.kernel) if self.walks_taps else sum(self.kernel)
        if self.walks_taps:
            check_taps(self, taps, f"kernel_shape {self.kernel} (with the Indices output)")
        self.check_work(windows * taps, "the pooling")
        fill = _lowest(x.dtype) if self.fill_lowest else 0
        try:
            plan = _PoolPlan(x.shape, x.dtype, self.kernel, self.strides, self.dilations, begins, ends,
                             self.ceil_mode, fill)
        except ValueError as exc:
            raise self.fail(f"input {x.shape}: {exc}") from None
        self.check_size((batch, channels, *plan.out), x.dtype, "output")
        return plan


@register("MaxPool", 1)
class MaxPool(_Pool):
    fill_lowest = True

    def __init__(self, node: NodeSpec):
        super().__init__(node)
        self.want_indices = self.walks_taps = len(node.outputs) > 1 and bool(node.outputs[1])
        self.scratch: dict[tuple, _TwoByTwoScratch] = {}
        self.column_major = bool(int_attr(self, "storage_order", 0, choices=(0, 1)))

    def run(self, x):
        fast = self.fast.get((x.shape, x.dtype))
        if fast is not None:
            return fast(x)
        with self.lock:
            plan = self.plan(x)
            if not self.want_indices:
                self.remember(x, self._runner(plan, x))
                return plan.reduce(plan.source(x), np.maximum)
            views = plan.views(x)
            y = views[0].copy()
            best_tap = np.zeros(y.shape, dtype=np.int64)
            for tap, view in enumerate(views[1:], start=1):
                best_tap[view > y] = tap
                np.maximum(y, view, out=y)
        return y, self._flat_indices(plan, x.shape, best_tap)

    @staticmethod
    def _runner(plan: _PoolPlan, x: np.ndarray) -> Callable[[np.ndarray], np.ndarray] | None:
        """A lock-free runner for ``x``'s shape: one reduction over the spatial axes for a window covering the
        whole input, the separable passes straight from the input when they need no scratch; else None."""
        if plan.whole():
            axes = tuple(range(2, x.ndim))
            return lambda x: np.maximum.reduce(x, axis=axes, keepdims=True)
        if not plan.in_one_block(x):
            return None
        if x.ndim == 4 and plan.kernel == [2, 2] and plan.strides == [2, 2] and plan.dilations == [1, 1] \
                and x.shape[3] == 2 * plan.out[1]:
            batch, channels, (out_h, out_w) = x.shape[0], x.shape[1], plan.out

            def pooled(x: np.ndarray) -> np.ndarray:
                # the row pairs (contiguous rows, a vectorised pass), then the column pairs of the (fresh,
                # contiguous) result as the two columns of an (n, 2) view: a 1-D strided pass, which NumPy runs
                # faster than the (..., 0::2) / (..., 1::2) views of the general passes
                rows = np.maximum(x[:, :, 0:2 * out_h:2], x[:, :, 1:2 * out_h:2])
                pairs = rows.reshape(-1, 2)
                return np.maximum(pairs[:, 0], pairs[:, 1]).reshape(batch, channels, out_h, out_w)

            return pooled
        return lambda x: plan.reduce_block(x, np.maximum)

    def backward(self, inputs, outputs, grads):
        """Each window's output gradient goes to its first maximum (row-major tap order, like torch and the
        Indices output): the taps are walked in order, each taking the gradient still unclaimed where it
        equals the window's maximum. Ties, and windows over the padding only, route it at most once."""
        x, dy = inputs[0], grads[0] if grads else None
        if dy is None or x is None or x.dtype.kind != "f":
            return [None]
        check_taps(self, math.prod(self.kernel), f"kernel_shape {self.kernel} (gradient)")
        with self.lock:
            plan = self.plan(x)
            y = outputs[0] if outputs and outputs[0] is not None else plan.reduce(plan.source(x), np.maximum)
            if _tiles_two_by_two(plan, x) and dy.dtype == x.dtype == y.dtype and bool(np.isfinite(dy).all()):
                scratch = self.scratch.get((x.shape, x.dtype))
                if scratch is None:
                    scratch = self.scratch[(x.shape, x.dtype)] = _TwoByTwoScratch(x.shape, x.dtype)
                return [_two_by_two_backward(x, y, dy, scratch)]
            views = plan.views(x)  # the windows' taps over the input or its padded copy
            source = plan.buffer if plan.buffer is not None else x
            geometry = list(zip(plan.kernel, plan.strides, plan.dilations, plan.out, plan.sizes, strict=True))
            # windows that never overlap (stride >= the dilated kernel, each axis) assign instead of adding; when
            # they also tile the input exactly, every element is written once and nothing needs zeroing
            disjoint = all(s >= (k - 1) * d + 1 or o == 1 for k, s, d, o, _ in geometry)
            tiled = plan.buffer is None and all(k == s and o * s == n and (d == 1 or k == 1)
                                                for k, s, d, o, n in geometry)
            # the products remaining * hit below would turn an infinite gradient into NaN where hit is False
            finite = bool(np.isfinite(dy).all())
            # (an infinite gradient is added only where hit: then every other element must start at zero)
            grad = (np.empty if tiled and disjoint and finite else np.zeros)(source.shape, dy.dtype)
            index_views = [(Ellipsis,) + where for where in plan.tap_index]
            batch = dy.shape[0]
            rows = max(1, min(batch, POOL_CHUNK_BYTES * batch // max(1, source.nbytes)))
            hit_buffer = np.empty((rows, *y.shape[1:]), np.bool_)
            share_buffer = np.empty((rows, *y.shape[1:]), dy.dtype)
            last = len(views) - 1
            for start in range(0, batch, rows):
                stop = min(batch, start + rows)
                y_chunk, grad_chunk = y[start:stop], grad[start:stop]
                remaining = np.array(dy[start:stop], copy=True)
                hit, share = hit_buffer[: stop - start], share_buffer[: stop - start]
                for tap, (where, view) in enumerate(zip(index_views, views, strict=True)):
                    np.equal(view[start:stop], y_chunk, out=hit)
                    target = grad_chunk[where]
                    if not finite:
                        np.add(target, remaining, out=target, where=hit)
                        if tap != last:
                            np.copyto(remaining, 0, where=hit)
                        continue
                    if disjoint:
                        np.multiply(remaining, hit, out=target)
                        if tap != last:
                            remaining -= target
                    else:
                        np.multiply(remaining, hit, out=share)
                        target += share
                        if tap != last:
                            remaining -= share
        return [plan.unpad(grad).astype(x.dtype, copy=False)]

    def _flat_indices(self, plan: _PoolPlan, shape: tuple[int, ...], best_tap: np.ndarray) -> np.ndarray:
        """Position of each maximum in the flattened input (row-major, or column-major over the spatial axes
        when storage_order=1), from the winning tap and the window position."""
        sizes = list(shape[2:])
        rank = len(sizes)
        taps = np.unravel_index(best_tap, plan.kernel)
        coords = []
        for axis in range(rank):
            grid_shape = [1] * (rank + 2)
            grid_shape[axis + 2] = plan.out[axis]
            start = (np.arange(plan.out[axis]) * plan.strides[axis] - plan.begins[axis]).reshape(grid_shape)
            coords.append(start + taps[axis] * plan.dilations[axis])
        spatial = 0
        if self.column_major:
            for axis in reversed(range(rank)):
                spatial = spatial * sizes[axis] + coords[axis]
        else:
            for axis in range(rank):
                spatial = spatial * sizes[axis] + coords[axis]
        planes = np.arange(shape[0] * shape[1]).reshape(shape[0], shape[1], *([1] * rank))
        return (planes * math.prod(sizes) + spatial).astype(np.int64)


def _tiles_two_by_two(plan: _PoolPlan, x: np.ndarray) -> bool:
    """2x2 windows at stride 2 tiling the 2-D input exactly (no padding, no dilation): LeNet's pooling."""
    return (x.ndim == 4 and plan.buffer is None and list(plan.kernel) == [2, 2] and list(plan.strides) == [2, 2]
            and list(plan.dilations) == [1, 1] and x.shape[2] == 2 * plan.out[0] and x.shape[3] == 2 * plan.out[1]
            and x.dtype.kind == "f" and np.little_endian)


_PAIR = np.uint64(0x100000001)


def _widen_into(a: np.ndarray, out: np.ndarray) -> None:
    """Each element of ``a`` twice along the last axis, into ``out`` (..., 2n). A float32 array goes through its
    bits: one uint64 per element with equal low and high halves, a single vectorised multiply."""
    if a.dtype.itemsize == 4 and a.flags.c_contiguous:
        np.multiply(a.view(np.uint32), _PAIR, out=out.view(np.uint64))
    else:
        pairs = out.reshape(*a.shape, 2)
        pairs[..., 0] = a
        pairs[..., 1] = a


class _TwoByTwoScratch:
    """Cache-sized buffers of MaxPool 2x2's gradient, for one input shape: the batch goes through in chunks so
    the widened maxima and gradient and the comparison never leave the cache."""

    def __init__(self, shape: tuple[int, ...], dtype: np.dtype):
        batch, channels, height, width = shape
        rows, half = height // 2, width // 2
        self.rows = max(1, min(batch, POOL_CHUNK_BYTES // max(1, channels * height * width * dtype.itemsize)))
        self.wide_y = np.empty((self.rows, channels, rows, width), dtype)
        self.wide_dy = np.empty((self.rows, channels, rows, width), dtype)
        self.hits = np.empty((self.rows, channels, rows, 2, width), np.bool_)
        self.later = np.empty((self.rows, channels, rows, 2, half), np.uint16)
        self.top_free = np.empty((self.rows, channels, rows, half), np.bool_)


def _two_by_two_backward(x: np.ndarray, y: np.ndarray, dy: np.ndarray, scratch: _TwoByTwoScratch) -> np.ndarray:
    """MaxPool 2x2 stride 2's gradient in a few whole-chunk passes instead of a walk over the four taps: each
    row pair of the input is compared with its windows' maxima widened to the input's width, the first
    maximum of each window (row-major tap order) is kept by bit operations on the comparison viewed as one
    uint16 per horizontal pair (left tap in the low byte), and the widened output gradient is multiplied by
    that mask. (A finite ``dy`` is required: the multiply would turn an infinite one into NaN off the mask.)"""
    batch, channels, height, width = x.shape
    rows = height // 2
    y, dy = np.ascontiguousarray(y), np.ascontiguousarray(dy)
    grad = np.empty((batch, channels, rows, 2, width), dy.dtype)
    x_pairs = x.reshape(batch, channels, rows, 2, width)  # (a view of a strided x too: one axis is split)
    for start in range(0, batch, scratch.rows):
        stop = min(batch, start + scratch.rows)
        count = stop - start
        wide_y, wide_dy, hits = scratch.wide_y[:count], scratch.wide_dy[:count], scratch.hits[:count]
        _widen_into(y[start:stop], wide_y)
        np.equal(x_pairs[start:stop], wide_y[:, :, :, None, :], out=hits)
        pairs = hits.view(np.uint16)  # (count, channels, rows, 2, width / 2): 1 = left tap, 256 = right tap
        top_free = scratch.top_free[:count]
        np.equal(pairs[:, :, :, 0], 0, out=top_free)
        np.multiply(pairs[:, :, :, 1], top_free, out=pairs[:, :, :, 1])  # the top row wins first
        later = scratch.later[:count]
        np.left_shift(pairs, 8, out=later)  # a left hit, moved onto its right neighbour's byte
        np.invert(later, out=later)
        np.bitwise_and(pairs, later, out=pairs)  # the left tap wins over the right one
        _widen_into(dy[start:stop], wide_dy)
        np.multiply(hits, wide_dy[:, :, :, None, :], out=grad[start:stop])
    return grad.reshape(x.shape)


@register("AveragePool", 1)
class AveragePool(_Pool):
    # a Tanh or Sigmoid whose only reader is this pooling, absorbed by the fast plan (fuse_preactivation): its
    # kernel's own function applied to the input first (a Sigmoid through tanh where a runner pools: equal
    # within rounding, see _activated_runner), one step fewer
    pre: Callable[[np.ndarray], np.ndarray] | None = None

    def __init__(self, node: NodeSpec):
        super().__init__(node)
        self.include_pad = bool(int_attr(self, "count_include_pad", 0, choices=(0, 1)))
        self.divisors: dict[tuple, np.ndarray | float] = {}

    def fuse_preactivation(self, op_type: str) -> bool:
        """Absorb the ``op_type`` activation node whose output only this pooling reads. Not in subclasses,
        whose own ``run`` would pool the input before the activation."""
        if type(self) is not AveragePool or self.pre is not None or op_type not in _PREACTIVATIONS:
            return False
        self.pre = _PREACTIVATIONS[op_type]
        return True

    def run(self, x):
        fast = self.fast.get((x.shape, x.dtype))  # (a runner applies the fused activation itself)
        if fast is not None:
            return fast(x)
        with self.lock:
            plan = self.plan(x)
            divisor = self.divisors.get(x.shape)
            if divisor is None:
                divisor = self.divisors[x.shape] = plan.window_counts(self.include_pad)
            runner = self._activated_runner(plan, x, divisor)
            self.remember(x, runner)
            if runner is not None:
                return runner(x)
            if self.pre is not None:
                x = self.pre(x)
            y = plan.reduce(plan.source(x), np.add)
        if isinstance(divisor, float):
            y *= y.dtype.type(1.0 / divisor)
        else:
            y /= divisor.astype(y.dtype)
        return y

    def _activated_runner(self, plan: _PoolPlan, x: np.ndarray, divisor: np.ndarray | float
                          ) -> Callable[[np.ndarray], np.ndarray] | None:
        """``_runner`` with the fused activation (``pre``) applied to its input first, or None.

        A fused Sigmoid goes through tanh: sigmoid(x) = 1/2 + tanh(x / 2) / 2 and the pooling P is linear, so
        P(sigmoid(x)) = P(tanh(x / 2) / 2) + P(1/2), the last a constant array of the output's shape made here
        once. Three passes over the input (halve, tanh, the pooling, whose weights take the other 1/2) and one
        add over the smaller output, against sigmoid's eight NumPy passes with their temporaries (lenet_avgpool's
        (1, 8, 8, 8) Sigmoid+AveragePool: ~10 -> ~3.5 us alone). tanh never overflows; the results equal
        sigmoid's within a few float rounding steps of 1/2, absolute (not relative in the far tails, which
        average away next to the window's other values)."""
        pre = self.pre
        if pre is not sigmoid:
            pooling = self._runner(plan, x, divisor)
            if pooling is None or pre is None:
                return pooling
            return lambda x: pooling(pre(x))
        pooling = self._runner(plan, x, divisor, gain=0.5)
        if pooling is None:
            return None
        offset = pooling(np.ones(x.shape, x.dtype))  # P(1/2): the pooling of ones with half its weights
        half = x.dtype.type(0.5)

        def pooled(x: np.ndarray) -> np.ndarray:
            halved = np.multiply(x, half)
            y = pooling(np.tanh(halved, out=halved))
            y += offset
            return y

        return pooled

    def _runner(self, plan: _PoolPlan, x: np.ndarray, divisor: np.ndarray | float, gain: float = 1.0
                ) -> Callable[[np.ndarray], np.ndarray] | None:
        """A lock-free runner for ``x``'s shape, or None (then the separable passes over the scratch run); its
        averages are multiplied by ``gain`` (folded into the divisor or the pooling matrices).

        The separable passes need no scratch when there is no padding: they then run straight from the input.

        A window covering the whole input is one product per plane with a column of 1 / divisor. A small float
        2-D pooling is two matrix products, ``Ah @ x @ Aw.T``: row ``o`` of an axis's matrix holds, at the input
        positions of window ``o``, 1 over that axis's share of the divisor (the divisor is the product of
        per-axis counts, ``window_counts``), so padding and ceil_mode's overhang are columns that are simply
        absent and no padded copy is made. Two BLAS calls instead of a copy into the scratch, kh + kw - 2
        strided passes and a divide (lenet_avgpool's 3x3/2 ceil_mode pooling of a (1, 4, 24, 24) image: ~10 ->
        ~3 us). The sums run in another order: equal within rounding."""
        if x.dtype not in _WIDE_FLOATS:
            return None
        if plan.whole() and isinstance(divisor, float):
            # each plane's mean as one BLAS product with a column of 1 / divisor (~0.3 us; the reduction over
            # the spatial axes and the scaling ~1.5 us at batch 1)
            planes, size = x.shape[0] * x.shape[1], math.prod(x.shape[2:])
            column, shape = np.full((size, 1), gain / divisor, x.dtype), x.shape[:2] + (1,) * (x.ndim - 2)
            return lambda x: x.reshape(planes, size).dot(column).reshape(shape)
        if x.ndim != 4 or x.size > MATRIX_POOL_ELEMENTS or max(plan.out) > MATRIX_POOL_OUT:
            if not plan.in_one_block(x):
                return None
            scale = x.dtype.type(gain / divisor) if isinstance(divisor, float) else None
            divisor = None if scale is not None else (divisor / gain).astype(x.dtype)

            def pooled(x: np.ndarray) -> np.ndarray:  # the separable passes, straight from the input
                y = plan.reduce_block(x, np.add)
                if scale is not None:
                    y *= scale
                else:
                    y /= divisor
                return y

            return pooled
        rows, cols = (_window_matrix(plan, axis, self.include_pad, x.dtype) for axis in (0, 1))
        rows = (rows * gain).astype(x.dtype, copy=False)
        batch, channels, height, width = x.shape
        planes, (out_h, out_w) = batch * channels, plan.out
        if rows.size * cols.size <= KRONECKER_POOL:
            # y[p, (i, j)] = sum over (h, w) of x[p, (h, w)] rows[i, h] cols[j, w]: one product
            both = np.ascontiguousarray(np.einsum("ih,jw->hwij", rows, cols).reshape(height * width, out_h * out_w))
            return lambda x: np.matmul(x.reshape(planes, height * width), both).reshape(batch, channels, out_h,
                                                                                      out_w)
        cols = np.ascontiguousarray(cols.T)

        def pooled(x: np.ndarray) -> np.ndarray:
            across = np.matmul(x.reshape(planes * height, width), cols).reshape(planes, height, out_w)
            return np.matmul(rows, across).reshape(batch, channels, out_h, out_w)

        return pooled

    def backward(self, inputs, outputs, grads):
        """Each window spreads its output gradient evenly (over its divisor) to the elements it averaged."""
        if self.pre is not None:
            raise self.fail("has a fused activation: differentiate the unfused graph (GradientPlan)")
        x, dy = inputs[0], grads[0] if grads else None
        if dy is None or x is None or x.dtype.kind != "f":
            return [None]
        with self.lock:
            plan = self.plan(x)
            divisor = self.divisors.get(x.shape)
            if divisor is None:
                divisor = self.divisors[x.shape] = plan.window_counts(self.include_pad)
            share = dy / (divisor if isinstance(divisor, float) else divisor.astype(dy.dtype))
            source_shape = x.shape if plan.buffer is None else plan.buffer.shape
            grad = plan.unpad(plan.reduce_adjoint(share, source_shape))
        return [grad.astype(x.dtype, copy=False)]


def _window_matrix(plan: _PoolPlan, axis: int, include_pad: bool, dtype: np.dtype) -> np.ndarray:
    """(out, n) along one spatial axis: 1 / (the window's count along this axis) at the input positions each
    output window averages, 0 elsewhere (the count as ``window_counts`` takes it: the explicit padding too when
    ``include_pad``, never ceil_mode's extra room)."""
    n, begin, end = plan.sizes[axis], plan.begins[axis], plan.ends[axis]
    kernel, stride, dilation, out = plan.kernel[axis], plan.strides[axis], plan.dilations[axis], plan.out[axis]
    starts = np.arange(out)[:, None] * stride + np.arange(kernel)[None, :] * dilation - begin  # (out, taps)
    inside = (starts >= 0) & (starts < n)
    counted = (starts >= -begin) & (starts < n + end) if include_pad else inside
    weights = np.zeros((out, n), np.float64)
    for tap in range(kernel):
        hit = inside[:, tap]
        weights[np.nonzero(hit)[0], starts[hit, tap]] += 1.0
    return (weights / counted.sum(axis=1, keepdims=True)).astype(dtype)


@register("LpPool", 1)
class LpPool(_Pool):
    def __init__(self, node: NodeSpec):
        super().__init__(node)
        self.p = _norm_order(self)

    def run(self, x):
        with self.lock:
            plan = self.plan(x)
            powered = np.abs(plan.source(x)) ** self.p
            y = plan.reduce(powered, np.add)
        return (y ** (1.0 / self.p)).astype(x.dtype, copy=False)

    def backward(self, inputs, outputs, grads):
        """y = S ** (1/p) with S the window sums of |x| ** p: dS = dy * y ** (1 - p) / p, spread over the
        windows, times p |x| ** (p - 1) sign(x). A window whose norm is 0 passes no gradient."""
        x, dy = inputs[0], grads[0] if grads else None
        if dy is None or x is None or x.dtype.kind != "f":
            return [None]
        y = outputs[0] if outputs and outputs[0] is not None else self.run(x)
        with self.lock:
            plan = self.plan(x)
            source_shape = x.shape if plan.buffer is None else plan.buffer.shape
            spread = plan.unpad(plan.reduce_adjoint(_norm_share(dy, y, self.p), source_shape))
        return [(spread * _abs_power_slope(x, self.p)).astype(x.dtype, copy=False)]


def _norm_share(dy: np.ndarray, y: np.ndarray, p: float) -> np.ndarray:
    """dy * y ** (1 - p), zero where the norm y is zero (the derivative of an Lp norm at 0 is not defined)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        share = dy * np.where(y != 0, y, 1) ** (1.0 - p)
    return np.where(y != 0, share, 0)


def _abs_power_slope(x: np.ndarray, p: float) -> np.ndarray:
    """|x| ** (p - 1) * sign(x), the derivative of |x| ** p over p."""
    if p == 2.0:
        return x
    if p == 1.0:
        return np.sign(x)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.abs(x) ** (p - 1.0) * np.sign(x)


def _norm_order(op: Op) -> float:
    """LpPool's ``p`` (an INT in the spec; a float is accepted), which must be a positive finite number."""
    p = op.attr("p", 2)
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not math.isfinite(p) or p <= 0:
        raise op.fail(f"p {p!r} must be a positive number")
    return float(p)


def _spatial_axes(op: Op, x: np.ndarray) -> tuple[int, ...]:
    if x.ndim < 3 or 0 in x.shape[2:]:
        raise op.fail(f"input of shape {x.shape} has no spatial axis or an empty one to pool over")
    return tuple(range(2, x.ndim))


@register("GlobalAveragePool", 1)
class GlobalAveragePool(Op):
    # a following Flatten(axis=1) absorbed by the fast plan (fuse_flatten): a CNN's pooled features handed to
    # its classifier as (N, C) means, one BLAS product per image with a column of 1 / count instead of the
    # reduction and the division (~0.6 us against ~2.4 on (1, 8, 14, 14)); equal to the mean within rounding
    flattened = False

    def fuse_flatten(self) -> bool:
        if self.flattened:
            return False
        self.flattened = True
        return True

    def run(self, x):
        return self._flat_means(x) if self.flattened else self._plain_means(x)

    def _flat_means(self, x: np.ndarray) -> np.ndarray:
        """The means (N, C, 1, ...) flattened to (N, C), as the absorbed Flatten would."""
        _spatial_axes(self, x)  # (refuses an input without spatial axes, or with an empty one)
        dtype = x.dtype
        if dtype is not _WIDE_FLOATS[0] and dtype is not _WIDE_FLOATS[1]:
            return self._plain_means(x).reshape(x.shape[0], -1)
        size = math.prod(x.shape[2:])
        return x.reshape(x.shape[0] * x.shape[1], size).dot(row_averager(size, dtype)).reshape(x.shape[:2])

    def _plain_means(self, x: np.ndarray) -> np.ndarray:
        # what x.mean(axis, keepdims=True, dtype=x.dtype) computes (the same sum, divided in place), without
        # np.mean's Python-level overhead, which dominated at batch 1 (~4 us of a 5 us call)
        total = np.add.reduce(x, axis=_spatial_axes(self, x), dtype=x.dtype, keepdims=True)
        return np.true_divide(total, math.prod(x.shape[2:]), out=total, casting="unsafe")

    def backward(self, inputs, outputs, grads):
        x, dy = inputs[0], grads[0] if grads else None
        if self.flattened:
            raise self.fail("has a fused Flatten: differentiate the unfused graph (GradientPlan)")
        if dy is None or x is None or x.dtype.kind != "f":
            return [None]
        count = math.prod(x.shape[2:])
        return [np.broadcast_to(dy / dy.dtype.type(count), x.shape).astype(x.dtype)]


@register("GlobalMaxPool", 1)
class GlobalMaxPool(Op):
    def run(self, x):
        return x.max(axis=_spatial_axes(self, x), keepdims=True)

    def backward(self, inputs, outputs, grads):
        """The gradient of each channel goes to its first maximum (np.argmax order)."""
        x, dy = inputs[0], grads[0] if grads else None
        if dy is None or x is None or x.dtype.kind != "f":
            return [None]
        flat = x.reshape(x.shape[0], x.shape[1], -1)
        grad = np.zeros(flat.shape, x.dtype)
        np.put_along_axis(grad, flat.argmax(axis=2)[..., None], dy.reshape(flat.shape[0], flat.shape[1], 1), 2)
        return [grad.reshape(x.shape)]


@register("GlobalLpPool", 2)
class GlobalLpPool(Op):
    def __init__(self, node: NodeSpec):
        super().__init__(node)
        self.p = _norm_order(self)

    def run(self, x):
        total = (np.abs(x) ** self.p).sum(axis=_spatial_axes(self, x), keepdims=True)
        return (total ** (1.0 / self.p)).astype(x.dtype, copy=False)

    def backward(self, inputs, outputs, grads):
        x, dy = inputs[0], grads[0] if grads else None
        if dy is None or x is None or x.dtype.kind != "f":
            return [None]
        y = outputs[0] if outputs and outputs[0] is not None else self.run(x)
        return [(_norm_share(dy, y, self.p) * _abs_power_slope(x, self.p)).astype(x.dtype, copy=False)]
