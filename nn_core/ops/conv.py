"""Convolution kernels (Conv, ConvTranspose), the padding arithmetic shared with pooling, fused activations and
the load-time folding of a BatchNormalization into a convolution.

Speed notes. A convolution is an im2col (copy every receptive field into a column) followed by one BLAS matmul
per group. Three things keep it close to onnxruntime on small CNNs:

* everything that depends only on the weights or the input *shape* is done once: the weight is stored as the
  (groups, out/groups, in/groups * kernel) matrix the matmul wants, and a per-input-shape "plan" holds a
  zero-padded scratch image, an ``as_strided`` window view over it and the column buffer;
* the batch is processed in chunks sized to stay in cache, instead of one huge column matrix;
* for stride-1 convolutions the columns are taken over the *full padded width* (the "full-width trick"): each
  column row is then one contiguous run of memory, which makes the im2col copy several times faster at the cost
  of computing a few output columns that are thrown away.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable

import numpy as np
from numpy.lib.stride_tricks import as_strided

from .registry import NodeSpec, Op, register

# the column buffer of one chunk of the batch is kept around this size, so the im2col copy and the matmul that
# reads it back stay in the L2 cache
CHUNK_BYTES = 512 * 1024

Activation = Callable[[np.ndarray], None]


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


def make_activation(kind: str, params: dict[str, float]) -> Activation | None:
    """An in-place activation function for ``kind`` (relu, leaky_relu, clip), or None if unknown."""
    if kind == "relu":
        return lambda y: np.maximum(y, 0, out=y)
    if kind == "leaky_relu":
        alpha = float(params.get("alpha", 0.01))
        if 0.0 <= alpha <= 1.0:  # then leaky_relu(y) == max(y, alpha * y)
            return lambda y: np.maximum(y, y * y.dtype.type(alpha), out=y)
        return lambda y: np.copyto(y, y * y.dtype.type(alpha), where=y < 0)
    if kind == "clip":
        low, high = params.get("min"), params.get("max")
        low = -np.inf if low is None else float(low)
        high = np.inf if high is None else float(high)
        return lambda y: np.clip(y, y.dtype.type(low), y.dtype.type(high), out=y)
    return None


def chain_activation(first: Activation | None, second: Activation) -> Activation:
    if first is None:
        return second

    def both(y: np.ndarray) -> None:
        first(y)
        second(y)

    return both


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
    new_weight = (weight.astype(np.float64) * factor.reshape(shape)).astype(weight.dtype)
    old_bias = np.zeros(weight.shape[0]) if bias is None else bias.astype(np.float64)
    new_bias = (old_bias - mean.astype(np.float64)) * factor + b.astype(np.float64)
    return new_weight, new_bias.astype(weight.dtype)


# ----------------------------------------------------------------------------------------------------------------
# Conv


def conv_out_sizes(padded: list[int], kernel: list[int], dilations: list[int], strides: list[int]) -> list[int]:
    return [(p - (k - 1) * d - 1) // s + 1 for p, k, d, s in zip(padded, kernel, dilations, strides, strict=True)]


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
                 dtype: np.dtype, slack: int, fill: float = 0.0):
        self.padded = [s + b + e for s, b, e in zip(sizes, begins, ends, strict=True)]
        self.channel_elems = math.prod(self.padded)
        self.flat = np.full(rows * channels * self.channel_elems + slack, fill, dtype=dtype)
        block = self.flat[: rows * channels * self.channel_elems].reshape(rows, channels, *self.padded)
        window = tuple(slice(b, b + s) for b, s in zip(begins, sizes, strict=True))
        self.interior = block[(slice(None), slice(None)) + window]
        self.elem = _row_major_strides(self.padded)  # element strides inside one channel


class _Im2colPlan:
    """Conv of one input shape: chunked im2col + one batched matmul (all groups at once) per chunk."""

    def __init__(self, x_shape: tuple[int, ...], dtype: np.dtype, groups: int, out_channels: int,
                 kernel: list[int], strides: list[int], dilations: list[int], begins: list[int], ends: list[int]):
        batch, channels, *sizes = x_shape
        self.out_channels = out_channels
        cg = channels // groups
        padded = [s + b + e for s, b, e in zip(sizes, begins, ends, strict=True)]
        self.out_sizes = conv_out_sizes(padded, kernel, dilations, strides)
        if min(self.out_sizes) <= 0:
            raise ValueError(f"output size {self.out_sizes} is empty")
        self.full_width = all(s == 1 for s in strides)
        if self.full_width:  # positions over the whole padded width of every row but the first axis
            positions = self.out_sizes[0] * math.prod(padded[1:])
        else:
            positions = math.prod(self.out_sizes)
        k_group = cg * math.prod(kernel)
        item = dtype.itemsize
        per_image = groups * k_group * positions * item
        self.rows = max(1, min(batch, CHUNK_BYTES // max(per_image, 1)))
        elem = _row_major_strides(padded)
        # the full-width windows of the last channel reach this far past its end
        slack = sum((k - 1) * d * e for k, d, e in zip(kernel, dilations, elem, strict=True))
        slack = slack if self.full_width else 0
        self.scratch = _PaddedScratch(self.rows, channels, tuple(sizes), begins, ends, dtype, slack)
        chan = self.scratch.channel_elems
        head_shape = (self.rows, groups, cg, *kernel)
        head_strides = (channels * chan * item, cg * chan * item, chan * item, *(d * e * item for d, e in
                                                                                 zip(dilations, elem, strict=True)))
        if self.full_width:
            shape, step = head_shape + (positions,), head_strides + (item,)
        else:
            shape = head_shape + tuple(self.out_sizes)
            step = head_strides + tuple(s * e * item for s, e in zip(strides, elem, strict=True))
        self.windows = as_strided(self.scratch.flat, shape, step, writeable=False)
        self.cols = np.empty(shape, dtype)
        self.cols_matrix = self.cols.reshape(self.rows, groups, k_group, positions)
        self.groups = groups
        self.positions = positions
        if self.full_width:
            self.product = np.empty((self.rows, groups, out_channels // groups, positions), dtype)
            wide = self.product.reshape(self.rows, out_channels, self.out_sizes[0], *padded[1:])
            self.product_valid = wide[(Ellipsis,) + tuple(slice(0, o) for o in self.out_sizes[1:])]

    def run(self, x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None, act: Activation | None) -> np.ndarray:
        batch = x.shape[0]
        y = np.empty((batch, self.out_channels, *self.out_sizes), x.dtype)
        rows = self.rows
        interior, windows, cols, cols_matrix = self.scratch.interior, self.windows, self.cols, self.cols_matrix
        for start in range(0, batch, rows):
            count = min(rows, batch - start)
            if count != rows:  # last, partial chunk
                interior, windows, cols, cols_matrix = interior[:count], windows[:count], cols[:count], \
                    cols_matrix[:count]
            interior[...] = x[start:start + count]
            np.copyto(cols, windows)
            target = y[start:start + count]
            if self.full_width:
                product = self.product[:count] if count != rows else self.product
                np.matmul(weight, cols_matrix, out=product)
                valid = self.product_valid[:count] if count != rows else self.product_valid
                if bias is None:
                    np.copyto(target, valid)
                else:
                    np.add(valid, bias, out=target)
            else:
                np.matmul(weight, cols_matrix, out=target.reshape(count, self.groups, -1, self.positions))
                if bias is not None:
                    target += bias
            if act is not None:
                act(target)
        return y


class _PointwisePlan:
    """1x1 convolution, stride 1, no padding, one group: a plain batched matmul, no copy of the input."""

    def __init__(self, x_shape: tuple[int, ...], out_channels: int):
        batch, channels, *sizes = x_shape
        self.flat_in = (batch, channels, math.prod(sizes))
        self.out_shape = (batch, out_channels, *sizes)

    def run(self, x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None, act: Activation | None) -> np.ndarray:
        y = np.matmul(weight[0], x.reshape(self.flat_in)).reshape(self.out_shape)
        if bias is not None:
            y += bias
        if act is not None:
            act(y)
        return y


class _DepthwisePlan:
    """One input and one output channel per group: a sum over kernel taps of shifted, scaled copies."""

    def __init__(self, x_shape: tuple[int, ...], dtype: np.dtype, kernel: list[int], strides: list[int],
                 dilations: list[int], begins: list[int], ends: list[int]):
        batch, channels, *sizes = x_shape
        padded = [s + b + e for s, b, e in zip(sizes, begins, ends, strict=True)]
        self.out_sizes = conv_out_sizes(padded, kernel, dilations, strides)
        self.scratch = _PaddedScratch(batch, channels, tuple(sizes), begins, ends, dtype, 0)
        block = self.scratch.flat.reshape(batch, channels, *padded)
        self.taps = []
        for offsets in np.ndindex(*kernel):
            index = tuple(slice(o * d, o * d + (n - 1) * s + 1, s)
                          for o, d, s, n in zip(offsets, dilations, strides, self.out_sizes, strict=True))
            self.taps.append(block[(slice(None), slice(None)) + index])
        self.weight_shape = (channels,) + (1,) * len(sizes)

    def run(self, x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None, act: Activation | None) -> np.ndarray:
        self.scratch.interior[...] = x
        w = weight.reshape(weight.shape[0], -1)
        y = self.taps[0] * w[:, 0].reshape(self.weight_shape)
        tmp = np.empty_like(y)
        for index in range(1, len(self.taps)):
            np.multiply(self.taps[index], w[:, index].reshape(self.weight_shape), out=tmp)
            y += tmp
        if bias is not None:
            y += bias
        if act is not None:
            act(y)
        return y


@register("Conv", 1)
class Conv(Op):
    """N-D convolution with groups, strides, dilations, padding (explicit or auto_pad) and optional bias."""

    def __init__(self, node: NodeSpec):
        super().__init__(node)
        self.auto_pad = self.attr("auto_pad", "NOTSET")
        self.group = int(self.attr("group", 1))
        self.kernel_attr = self.attr("kernel_shape")
        self.strides_attr = self.attr("strides")
        self.dilations_attr = self.attr("dilations")
        self.pads_attr = self.attr("pads")
        self.act: Activation | None = None
        self.plans: dict[tuple, object] = {}
        self.lock = threading.Lock()
        weight, bias = self.const(1), self.const(2)
        self.weight = None if weight is None else self._weight_matrix(weight)
        self.weight_shape = None if weight is None else weight.shape
        # with the weight known the bias is stored in its broadcast shape, otherwise it is shaped per call
        self.bias = None if bias is None or weight is None else self._bias_column(bias, weight.ndim)

    def fuse_activation(self, kind: str, params: dict[str, float]) -> bool:
        act = make_activation(kind, params)
        if act is None:
            return False
        self.act = chain_activation(self.act, act)
        self.plans.clear()
        return True

    def _weight_matrix(self, weight: np.ndarray) -> np.ndarray:
        # (M, C/g, k...) -> (g, M/g, C/g * prod(k)): the left operand of one batched matmul over all groups
        out_channels = weight.shape[0]
        if out_channels % self.group:
            raise self.fail(f"weight has {out_channels} output channels, not divisible by group={self.group}")
        return np.ascontiguousarray(weight.reshape(self.group, out_channels // self.group, -1))

    @staticmethod
    def _bias_column(bias: np.ndarray, weight_rank: int) -> np.ndarray:
        return bias.reshape((-1,) + (1,) * (weight_rank - 2))

    def _plan(self, x: np.ndarray, weight_shape: tuple[int, ...]):
        rank = x.ndim - 2
        if rank < 1:
            raise self.fail(f"input of shape {x.shape} has no spatial axis")
        kernel = as_int_list(self.kernel_attr, rank, 0) if self.kernel_attr else list(weight_shape[2:])
        strides = as_int_list(self.strides_attr, rank, 1)
        dilations = as_int_list(self.dilations_attr, rank, 1)
        if x.shape[1] != weight_shape[1] * self.group:
            raise self.fail(f"input has {x.shape[1]} channels but the weight {tuple(weight_shape)} with "
                            f"group={self.group} expects {weight_shape[1] * self.group}")
        begins, ends = resolve_pads(self.auto_pad, x.shape[2:], kernel, strides, dilations, self.pads_attr)
        out_channels = weight_shape[0]
        no_padding = not any(begins) and not any(ends)
        try:
            if self.group == 1 and all(k == 1 for k in kernel) and all(s == 1 for s in strides) and no_padding:
                return _PointwisePlan(x.shape, out_channels)
            if self.group > 1 and self.group == x.shape[1] == out_channels:
                return _DepthwisePlan(x.shape, x.dtype, kernel, strides, dilations, begins, ends)
            return _Im2colPlan(x.shape, x.dtype, self.group, out_channels, kernel, strides, dilations, begins, ends)
        except ValueError as exc:
            raise self.fail(f"input {x.shape}, kernel {kernel}: {exc}") from None

    def run(self, x, w, b=None):
        weight, bias = self.weight, self.bias
        if weight is None:
            weight, weight_shape = self._weight_matrix(w), w.shape
        else:
            weight_shape = self.weight_shape
        if bias is None and b is not None:
            bias = self._bias_column(b, len(weight_shape))
        key = (x.shape, x.dtype, weight_shape)
        with self.lock:
            plan = self.plans.get(key)
            if plan is None:
                plan = self.plans[key] = self._plan(x, weight_shape)
            return plan.run(x, weight, bias, self.act)


# ----------------------------------------------------------------------------------------------------------------
# ConvTranspose


@register("ConvTranspose", 1)
class ConvTranspose(Op):
    """Transposed convolution as matmul (input pixels -> kernel-sized patches) then a scatter-add of the
    patches into the output (col2im), one strided add per kernel tap."""

    def __init__(self, node: NodeSpec):
        super().__init__(node)
        self.auto_pad = self.attr("auto_pad", "NOTSET")
        self.group = int(self.attr("group", 1))
        self.act: Activation | None = None
        weight, bias = self.const(1), self.const(2)
        self.weight = None if weight is None else self._weight_matrix(weight)
        self.weight_shape = None if weight is None else weight.shape
        self.bias = None if bias is None or weight is None else bias.reshape((-1,) + (1,) * (weight.ndim - 2))

    def fuse_activation(self, kind: str, params: dict[str, float]) -> bool:
        act = make_activation(kind, params)
        if act is None:
            return False
        self.act = chain_activation(self.act, act)
        return True

    def _weight_matrix(self, weight: np.ndarray) -> np.ndarray:
        # (C, M/g, k...) -> (g, M/g * prod(k), C/g): maps one group's input channels to its output patches
        channels = weight.shape[0]
        if channels % self.group:
            raise self.fail(f"weight has {channels} input channels, not divisible by group={self.group}")
        grouped = weight.reshape(self.group, channels // self.group, -1)
        return np.ascontiguousarray(grouped.transpose(0, 2, 1))

    def _geometry(self, in_sizes: tuple[int, ...], kernel: list[int]):
        rank = len(in_sizes)
        strides = as_int_list(self.attr("strides"), rank, 1)
        dilations = as_int_list(self.attr("dilations"), rank, 1)
        extra = as_int_list(self.attr("output_padding"), rank, 0)
        # the size of the output before cropping by the pads
        full = [s * (n - 1) + op + (k - 1) * d + 1 for s, n, op, k, d in zip(strides, in_sizes, extra, kernel,
                                                                          dilations, strict=True)]
        output_shape = self.attr("output_shape")
        if output_shape:
            out = [int(v) for v in output_shape[-rank:]]
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
            pads = self.attr("pads") if self.auto_pad != "VALID" else None
            pads = as_int_list(pads, 2 * rank, 0)
            begins = pads[:rank]
            out = [f - b - e for f, b, e in zip(full, begins, pads[rank:], strict=True)]
        return strides, dilations, full, begins, out

    def run(self, x, w, b=None):
        weight, weight_shape = self.weight, self.weight_shape
        if weight is None:
            weight, weight_shape = self._weight_matrix(w), w.shape
        bias = self.bias
        if bias is None and b is not None:
            bias = b.reshape((-1,) + (1,) * (len(weight_shape) - 2))
        batch, channels, *in_sizes = x.shape
        kernel = as_int_list(self.attr("kernel_shape"), 0, 0) or list(weight_shape[2:])
        strides, dilations, full, begins, out = self._geometry(tuple(in_sizes), kernel)
        groups, mg = self.group, weight_shape[1]
        patches = np.matmul(weight, x.reshape(batch, groups, channels // groups, -1))
        patches = patches.reshape(batch, groups * mg, *kernel, *in_sizes)
        # room for the un-cropped output and for any crop window (negative pads, output_shape beyond it)
        room = [max(f, b + o) + max(0, -b) for f, b, o in zip(full, begins, out, strict=True)]
        shift = [max(0, -b) for b in begins]
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
