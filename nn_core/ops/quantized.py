"""Quantized kernels: (de)quantization and the integer convolution / matmul families.

Integer products are accumulated exactly in floating point, which runs on BLAS unlike NumPy's integer matmul:
float32 when a bound on the partial sums shows they stay below 2**24 (so every float32 addition of these
integers is exact), float64 otherwise (exact up to 2**53). Requantization follows onnxruntime: the
combined scale ``a_scale * b_scale / y_scale`` is formed in float32, applied in float32, rounded half to even,
shifted by the zero point and saturated to the output type.
"""

from __future__ import annotations

import math

import numpy as np
import onnx
from onnx import helper

from ..errors import ModelError
from ..optimize import is_default_domain, producers_and_readers
from . import float8
from .activations import has_nan
from .batch1 import epilogue_run
from .caches import keep
from .conv import resolve_pads
from .registry import MAX_OPSET, NodeSpec, Op, register, resolve
from .shape import check_broadcast
from .windows import Geometry, check_fits, checked_windows, effective_steps, int_attr

F32 = np.float32
# the clip ufunc itself: np.clip's Python wrapper costs several times the work on a small tensor
_clip = getattr(np, "_core", getattr(np, "core", None)).umath.clip


def _shifted_codes(values: np.ndarray, zero_point: np.float32, dtype: np.dtype) -> np.ndarray:
    """Rounded ``values`` already clipped to ``[min - zero_point, max - zero_point]`` (float32 scratch, changed in
    place) as codes of ``dtype``: shifted in place (exact: integers within the type's range), then converted in
    their own memory order. (The shift fused into the conversion, one pass fewer, is a casting loop slower than
    both on small tensors, and on a transposed (channels-last) input it wrote a C-order array through strides:
    6x the time on a 64x28x28 layer.)"""
    if zero_point:
        values += zero_point
    return values.astype(dtype)


def _saturate(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Clip already-rounded ``values`` into ``dtype``'s range (in place: pass a scratch array), then convert."""
    low, high = _BOUNDS[np.dtype(dtype)]
    return _clip(values, low, high, out=values).astype(dtype)


_BOUNDS = {np.dtype(t): (np.iinfo(t).min, np.iinfo(t).max) for t in (np.uint8, np.int8, np.uint16, np.int16,
                                                                      np.int32, np.uint32, np.int64, np.uint64)}
# the 4- and 2-bit integers (ml_dtypes' dtypes, one value per byte), by the names onnx maps them to
_BOUNDS.update({np.dtype(helper.tensor_dtype_to_np_dtype(getattr(onnx.TensorProto, name))): bounds
                for name, bounds in (("INT4", (-8, 7)), ("UINT4", (0, 15)), ("INT2", (-2, 1)), ("UINT2", (0, 3)))
                if hasattr(onnx.TensorProto, name)})


def _is_float_code(dtype: np.dtype) -> bool:
    """A float8 format or float4 E2M1: quantized values that are floats, converted by nn_core.ops.float8."""
    return dtype.name in float8.FLOAT8_FORMATS or dtype.name == float8.FLOAT4E2M1


def _along_axis(param: np.ndarray, axis: int, ndim: int, block_size: int = 0, dim: int = 0) -> np.ndarray:
    """A scale or zero point shaped to broadcast against an input of rank ``ndim``.

    Scalars (or one-element vectors) apply to the whole tensor. A 1-D parameter applies per slice of ``axis``;
    this is honoured even for opsets 10-12, whose spec had no ``axis`` yet, because the intent is unambiguous.
    With ``block_size`` (opset 21) the parameter has the input's rank and each entry covers a block of ``axis``.
    """
    if param.size == 1 and block_size == 0:
        return param.reshape(())
    if block_size:
        return np.repeat(param, block_size, axis=axis)[(slice(None),) * axis + (slice(0, dim),)]
    shape = [1] * ndim
    shape[axis] = param.size
    return param.reshape(shape)


def _zero_point_or_zero(zero_point: np.ndarray | None, dtype: np.dtype) -> np.ndarray:
    return np.zeros((), dtype) if zero_point is None else zero_point


class _PerAxis(Op):
    def __init__(self, node):
        super().__init__(node)
        self.axis = self.attr("axis", 1)
        self.block_size = self.attr("block_size", 0)

    def _shape_param(self, param: np.ndarray, x: np.ndarray) -> np.ndarray:
        if not self.block_size and (param.size == 1 or param.ndim > 1):
            return param.reshape(()) if param.size == 1 else param  # per-tensor, or already broadcastable
        axis = self.axis + x.ndim if self.axis < 0 else self.axis
        if param.size > 1 and not self.block_size and param.size != x.shape[axis]:
            raise self.fail(f"scale/zero point of length {param.size} does not match axis {axis} of input "
                            f"shape {x.shape}")
        return _along_axis(param, axis, x.ndim, self.block_size, x.shape[axis])


@register("QuantizeLinear", 10)
class QuantizeLinear(_PerAxis):
    def __init__(self, node):
        super().__init__(node)
        self.saturate = bool(self.attr("saturate", 1))
        output_dtype = self.attr("output_dtype", 0)
        self.default_dtype = np.dtype(helper.tensor_dtype_to_np_dtype(output_dtype)) if output_dtype else None

        # a per-tensor scale and zero point known at load time: divide, round, clip to [min - zp, max - zp] and
        # shift into the output type in one conversion (4 passes)
        self.lean = None
        scale, zero_point = self.const(1), self.const(2)
        zp_known = zero_point is not None or len(node.inputs) <= 2 or not node.inputs[2]
        if scale is not None and scale.size == 1 and zp_known and (zero_point is None or zero_point.size == 1):
            dtype = zero_point.dtype if zero_point is not None else self.default_dtype or np.dtype(np.uint8)
            if dtype in (np.uint8, np.int8):
                zp = F32(0 if zero_point is None else zero_point.reshape(-1)[0])
                low, high = _BOUNDS[dtype]
                self.lean = (F32(scale.reshape(-1)[0]), zp, F32(low) - zp, F32(high) - zp, dtype)

    def run(self, x, scale, zero_point=None):
        if self.lean is not None and x.dtype == F32:
            scale, zp, low, high, dtype = self.lean
            scaled = np.divide(x, scale)
            np.rint(scaled, out=scaled)
            _clip(scaled, low, high, out=scaled)
            return _shifted_codes(scaled, zp, dtype)
        if zero_point is not None:
            dtype = zero_point.dtype  # int32 is accepted too, though the spec lists only 8/16-bit types
        else:
            dtype = self.default_dtype or np.dtype(np.uint8)
        if _is_float_code(dtype):
            return self._to_float_code(x, scale, zero_point, dtype)
        # divide (not multiply by 1/scale) and round before adding the zero point, as onnxruntime does
        scaled = np.divide(x, self._shape_param(scale.astype(F32, copy=False), x), dtype=F32)
        np.rint(scaled, out=scaled)
        if zero_point is not None:
            if dtype.itemsize >= 4:  # an int32 zero point is not exact in float32
                scaled = scaled.astype(np.float64)
            scaled += self._shape_param(zero_point, x).astype(scaled.dtype)
        return _saturate(scaled, dtype)

    def _to_float_code(self, x, scale, zero_point, dtype):
        """float8 / float4 output: x / scale + zero point in float32 (no rounding to integers), then converted
        to nearest even (float8 saturating as the ``saturate`` attribute says, float4 always)."""
        scaled = np.divide(x, self._shape_param(scale.astype(F32, copy=False), x), dtype=F32)
        if zero_point is not None:
            scaled += self._shape_param(float8.to_float32(zero_point), x)
        return float8.from_float(scaled, dtype, self.saturate)


@register("DequantizeLinear", 10)
class DequantizeLinear(_PerAxis):
    def __init__(self, node):
        super().__init__(node)
        # a per-tensor float32 scale and 8/16-bit zero point known at load time: one subtraction into float32 and
        # one multiplication, none of the per-call parameter shaping (most of a small tensor's time)
        self.lean = None
        scale, zero_point = self.const(1), self.const(2)
        zp_known = zero_point is not None or len(node.inputs) <= 2 or not node.inputs[2]
        if (scale is not None and scale.size == 1 and scale.dtype == F32 and zp_known and not self.block_size
                and (zero_point is None or zero_point.size == 1 and zero_point.dtype.kind in "iu"
                     and zero_point.itemsize <= 2)):
            self.lean = (scale.reshape(()), None if zero_point is None else zero_point.dtype,
                         F32(0 if zero_point is None else zero_point.reshape(-1)[0]))

    def run(self, x, scale, zero_point=None):
        if self.lean is not None:
            lean_scale, zp_dtype, zp = self.lean
            # x's type must be the zero point's (a mismatch goes to the checks below)
            if x.dtype.kind in "iu" and x.itemsize <= 2 and x.ndim and (zp_dtype is None or x.dtype == zp_dtype):
                centred = np.subtract(x, zp, dtype=F32) if zp else x.astype(F32)
                centred *= lean_scale
                return centred
        if _is_float_code(x.dtype):  # float8 / float4: decoded exactly, the product formed in float32
            centred = float8.to_float32(x)
            if zero_point is not None:
                centred = centred - self._shape_param(float8.to_float32(zero_point), x)
            centred = centred * self._shape_param(scale, x)
            return centred.astype(scale.dtype, copy=False)
        if x.itemsize <= 2 and scale.dtype == F32:  # 8/16-bit values and their differences are exact in float32
            centred = x.astype(F32)
            if zero_point is not None:
                centred -= self._shape_param(zero_point, x).astype(F32)
        else:
            centred = x.astype(np.int64)
            if zero_point is not None:
                centred -= self._shape_param(zero_point, x).astype(np.int64)
            centred = centred.astype(scale.dtype)
        centred *= self._shape_param(scale, x)
        return centred


def dynamic_qparams(x: np.ndarray, relu_first: bool = False) -> tuple[np.float32, np.float32]:
    """DynamicQuantizeLinear's scale and zero point for float32 ``x`` (both float32): [min(x, 0), max(x, 0)]
    spans 0..255. ``relu_first``: those of ``relu(x)``, whose minimum is never below 0 (one reduction, not two)."""
    if not x.size:
        return _ONE, _ZERO
    high = np.maximum.reduce(x, axis=None)
    low = _ZERO if relu_first else np.minimum.reduce(x, axis=None)
    if low.dtype != F32:
        low, high = F32(low), F32(high)
    # min(low, 0) and max(high, 0) (a NaN stays)
    if low > _ZERO:
        low = _ZERO
    if high < _ZERO:
        high = _ZERO
    if high == low:  # an all-zero input would give scale 0; onnxruntime uses 1, which quantizes everything to 0
        return _ONE, _ZERO
    scale = (high - low) / _255
    # the zero point rounded half to even (Python's round on the exact float32 value), saturated
    zero_point = round(float(_ZERO - low / scale))
    return scale, (_ZERO if zero_point <= 0 else _255 if zero_point >= 255 else F32(zero_point))


@register("DynamicQuantizeLinear", 11)
class DynamicQuantizeLinear(Op):
    """x -> uint8 with a scale and zero point chosen so that [min(x, 0), max(x, 0)] spans 0..255."""

    def run(self, x):
        scale, zero_point = dynamic_qparams(x)
        y = np.divide(x, scale)
        np.rint(y, out=y)
        _clip(y, -zero_point, _255 - zero_point, out=y)
        return _shifted_codes(y, zero_point, np.uint8), np.array(scale, F32), np.array(zero_point, np.uint8)


# ---------------------------------------------------------------- integer convolution


class _ConvShape:
    """The geometry of an integer convolution resolved and checked for one input and weight shape."""

    def __init__(self, kernel: list[int], strides: list[int], dilations: list[int],
                 widths: list[tuple[int, int]], out_spatial: tuple[int, ...], group: int):
        self.kernel, self.strides, self.dilations = tuple(kernel), tuple(strides), tuple(dilations)
        self.widths, self.out_spatial, self.group = widths, out_spatial, group


def integer_conv(x: np.ndarray, w: np.ndarray, geometry: _ConvShape) -> np.ndarray:
    """Convolution of zero-centred integer data held in floats: x (N, C, *S), w (M, C/group, *K).

    im2col through a strided view, then one matmul per group. Padding is with 0, i.e. with the zero point
    of the original quantized input. ``geometry`` was checked against these shapes (``_ConvBase._shape``).
    """
    n, channels = x.shape[:2]
    spatial_rank = x.ndim - 2
    padded = np.pad(x, [(0, 0), (0, 0)] + [tuple(p) for p in geometry.widths])
    kernel, strides, dilations = geometry.kernel, geometry.strides, geometry.dilations
    out_spatial = geometry.out_spatial
    step = padded.strides
    windows = checked_windows(
        padded,
        (n, channels) + out_spatial + kernel,
        step[:2]
        + tuple(st * s for st, s in zip(step[2:], strides, strict=True))
        + tuple(st * d for st, d in zip(step[2:], dilations, strict=True)),
    )
    group = geometry.group
    per_group_in = channels // group
    per_group_out = w.shape[0] // group
    positions = math.prod(out_spatial)
    # (N, *out, C, *K): each output position's receptive field made contiguous per group
    fields = np.moveaxis(windows, 1, 1 + spatial_rank)
    outputs = []
    for g in range(group):
        cols = fields[(slice(None),) * (1 + spatial_rank) + (slice(g * per_group_in, (g + 1) * per_group_in),)]
        cols = cols.reshape(n * positions, -1)
        weights = w[g * per_group_out:(g + 1) * per_group_out].reshape(per_group_out, -1)
        outputs.append(cols @ weights.T)
    result = np.concatenate(outputs, axis=1) if group > 1 else outputs[0]
    result = result.reshape((n,) + out_spatial + (w.shape[0],))
    return np.moveaxis(result, -1, 1)


def _centred(values: np.ndarray, zero_point: np.ndarray | None, channel_shape: tuple[int, ...] = ()) -> np.ndarray:
    """``values - zero_point`` as float32 (exact for the 8/16-bit types these ops take); a per-channel zero
    point is reshaped to ``channel_shape``."""
    centred = values.astype(F32)
    if zero_point is not None:
        zp = zero_point.astype(F32)
        centred -= zp.reshape(()) if zp.size == 1 else zp.reshape(channel_shape)
    return centred


# float32 adds integers exactly while every partial sum stays below this
_F32_EXACT = 2.0 ** 24


class _ConvBase(Op):
    """Shared by ConvInteger and QLinearConv: geometry and zero-centred weights, prepared once when constant."""

    WEIGHT_INPUT = 1
    WEIGHT_ZERO_POINT_INPUT = 3

    def __init__(self, node):
        super().__init__(node)
        self.group = int_attr(self, "group", 1, minimum=1)
        weights = self.const(self.WEIGHT_INPUT)
        if weights is not None:
            self._check_weight(weights, self.const(self.WEIGHT_ZERO_POINT_INPUT))
        self.geometry = Geometry(self, kernel=None if weights is None else weights.shape[2:])
        self.shapes: dict[tuple, _ConvShape] = {}  # the checked geometry of each input and weight shape seen
        zero_point_known = len(node.inputs) <= self.WEIGHT_ZERO_POINT_INPUT or not node.inputs[
            self.WEIGHT_ZERO_POINT_INPUT] or self.const(self.WEIGHT_ZERO_POINT_INPUT) is not None
        self.prepared = None
        if weights is not None and zero_point_known:
            self.prepared = self._prepare_weights(weights, self.const(self.WEIGHT_ZERO_POINT_INPUT))

    def _check_weight(self, w: np.ndarray, zero_point: np.ndarray | None) -> None:
        if w.ndim < 3:
            raise self.fail(f"weight of shape {w.shape} must have rank >= 3 (M, C/group, kernel...)")
        if w.shape[0] % self.group:
            raise self.fail(f"weight of shape {w.shape}: {w.shape[0]} output channels are not divisible by "
                            f"group={self.group}")
        if zero_point is not None and zero_point.size not in (1, w.shape[0]):
            raise self.fail(f"weight zero point of shape {zero_point.shape} must have 1 or {w.shape[0]} values")

    @staticmethod
    def _prepare_weights(w: np.ndarray, zero_point: np.ndarray | None) -> tuple[np.ndarray, float]:
        """Zero-centred weights and the largest sum of |weights| feeding one output (to bound partial sums)."""
        centred = _centred(w, zero_point, (w.shape[0],) + (1,) * (w.ndim - 1))
        return centred, float(np.abs(centred).reshape(w.shape[0], -1).sum(axis=1).max(initial=0.0))

    def _shape(self, x: np.ndarray, w: np.ndarray) -> _ConvShape:
        """The geometry for these input and weight shapes, checked once per new pair of shapes: the channels
        match, the kernel fits the padded input, and the padded copy, the output and the work are in budget."""
        key = (x.shape, w.shape)
        shape = self.shapes.get(key)
        if shape is not None:
            return shape
        rank = x.ndim - 2
        if rank < 1 or x.ndim != w.ndim or x.shape[1] != w.shape[1] * self.group:
            raise self.fail(f"input shape {x.shape} does not match weights {w.shape} with group {self.group}")
        kernel, strides, dilations, pads = self.geometry.resolve(rank, w.shape[2:])
        batch, channels, *sizes = x.shape
        begins, ends = resolve_pads(self.geometry.auto_pad, tuple(sizes), kernel, strides, dilations, pads)
        check_fits(self, sizes, begins, ends, kernel, dilations)
        padded = [n + b + e for n, b, e in zip(sizes, begins, ends, strict=True)]
        out_spatial = tuple((p - (k - 1) * d - 1) // s + 1
                            for p, k, s, d in zip(padded, kernel, strides, dilations, strict=True))
        strides, dilations = effective_steps(out_spatial, kernel, strides, dilations, padded)
        self.check_size((batch, channels, *padded), np.float64, f"padded input (pads {begins + ends})")
        self.check_size((batch, *out_spatial, channels, *kernel), np.float64, "column buffer")
        self.check_size((batch, w.shape[0], *out_spatial), np.float64, "output")
        self.check_work(batch * w.shape[0] * math.prod(out_spatial) * w.shape[1] * math.prod(kernel),
                        "the convolution")
        shape = self.shapes[key] = _ConvShape(kernel, strides, dilations, list(zip(begins, ends, strict=True)),
                                              out_spatial, self.group)
        return shape

    def _convolve(self, x: np.ndarray, x_zero_point, w: np.ndarray, w_zero_point) -> np.ndarray:
        """The exact integer convolution, returned as float32 or float64 holding integers."""
        if self.prepared is None:
            self._check_weight(w, w_zero_point)
        geometry = self._shape(x, w)
        if x_zero_point is not None and x_zero_point.size != 1:
            raise self.fail(f"input zero point of shape {x_zero_point.shape} must be a single value")
        centred_w, weight_sum = self.prepared or self._prepare_weights(w, w_zero_point)
        centred_x = _centred(x, x_zero_point)
        if float(np.abs(centred_x).max(initial=0.0)) * weight_sum >= _F32_EXACT:
            # partial sums could leave float32's exact-integer range: accumulate in float64 instead
            centred_x, centred_w = centred_x.astype(np.float64), centred_w.astype(np.float64)
        try:
            return integer_conv(centred_x, centred_w, geometry)
        except ValueError as exc:
            raise self.fail(str(exc)) from None


def _value_bound(dtype: np.dtype, zero_point: np.ndarray | None) -> float:
    """The largest ``|x - zero_point|`` an input of ``dtype`` can reach (the bound needs no pass over x)."""
    low, high = _BOUNDS[np.dtype(dtype)]
    zp = 0.0 if zero_point is None else float(np.asarray(zero_point).reshape(-1)[0])
    return max(zp - low, high - zp)


_ZERO, _ONE, _255 = F32(0), F32(1), F32(255)
_DTYPE_BOUND = {np.dtype(np.uint8): 255.0, np.dtype(np.int8): 128.0}


def _laid_over(cache: dict, value: np.ndarray | np.float32, acc: np.ndarray) -> np.ndarray | np.float32:
    """A per-channel ``value`` (broadcastable against ``acc``) spelled out over ``acc``'s shape in acc's memory
    order (C order for C-contiguous sums or NCHW rows with gaps, a convolution's valid columns; channels-last for
    the small convolutions' NHWC sums): NumPy runs a same-shape operand of the same layout two to three times as
    fast as a channel vector broadcast along short image rows (6 x 28 x 28 sums: 7.8 -> 6.2 us a requantization;
    channels-last 24 x 10 x 10: 2.3 -> 1.4 us a multiply). Made once per shape and strides (``cache``, bounded),
    the size of an output the convolution already checked; a scalar is handed back as it is. The answer is
    remembered, so a repeated call is one dictionary lookup: testing the layout on every call cost ~0.6 us, as
    much as laying out saves on LeNet's small sums."""
    key = (acc.shape, acc.strides)
    laid = cache.get(key)
    if laid is None:
        laid = value
        if np.ndim(value) != 0 and acc.ndim >= 3 and 0 not in acc.strides:
            laid = np.empty_like(acc, dtype=value.dtype, order="K")
            laid[...] = value
        keep(cache, key, laid)
    return laid


class _Requantizer:
    """``saturate(rint(acc * multiplier) + zero_point)`` as onnxruntime's output processors do it: the multiplier
    formed in float32, the product rounded half to even *before* the zero point is added (adding first could
    round a value just past a half the wrong way), then clipped into the output type. Works in place on acc.

    Five passes: multiply, round, clip to ``[min - zp, max - zp]`` (integers, so clipping the rounded value is
    saturating the shifted one), then the shift by the zero point and the conversion to 8 bits
    (``_shifted_codes``)."""

    def __init__(self, multiplier: np.ndarray, zero_point: np.ndarray | None, dtype: np.dtype, channel_axis: int,
                 ndim: int):
        multiplier = np.asarray(multiplier, F32).reshape(-1)
        if multiplier.size == 1:
            self.multiplier = F32(multiplier[0])
        else:
            shape = [1] * ndim
            shape[channel_axis] = multiplier.size
            self.multiplier = multiplier.reshape(shape)
        self.dtype = np.dtype(dtype)
        self.zero_point = F32(0 if zero_point is None else np.asarray(zero_point).reshape(-1)[0])
        info = np.iinfo(self.dtype)
        self.low, self.high = F32(info.min) - self.zero_point, F32(info.max) - self.zero_point
        self.laid_multipliers: dict[tuple, np.ndarray] = {}  # per shape and strides of the sums (_laid_over)

    def __call__(self, acc: np.ndarray) -> np.ndarray:
        if acc.dtype != F32:
            acc = acc.astype(F32)  # exact integers from a float64 accumulation: one float32 rounding, as ORT
        multiplier = _laid_over(self.laid_multipliers, self.multiplier, acc)
        if acc.flags.c_contiguous:
            np.multiply(acc, multiplier, out=acc)
        else:  # a strided view (a convolution's valid part): the passes run three times faster on a copy
            acc = np.multiply(acc, multiplier)
        np.rint(acc, out=acc)
        _clip(acc, self.low, self.high, out=acc)
        return _shifted_codes(acc, self.zero_point, self.dtype)


# memory-order axis permutations of the array layouts seen (a handful: one per layer shape and plan), None for
# a layout with gaps
_MEMORY_ORDERS: dict[tuple, tuple[tuple[int, ...], tuple[int, ...]] | None] = {}


def _memory_order(array: np.ndarray) -> tuple[tuple[int, ...], tuple[int, ...]] | None:
    """(axes in memory order, its inverse) when ``array`` is a transposed view of a contiguous buffer (a
    convolution's output is often one of a channels-last buffer), else None."""
    key = (array.shape, array.strides)
    orders = _MEMORY_ORDERS.get(key, False)
    if orders is False:  # (a local result: another thread may clear the cache meanwhile)
        order = np.argsort([-abs(step) for step in array.strides], kind="stable")
        if len(_MEMORY_ORDERS) > 64:
            _MEMORY_ORDERS.clear()
        dense = array.transpose(order).flags.c_contiguous
        orders = _MEMORY_ORDERS[key] = (tuple(order.tolist()), tuple(np.argsort(order).tolist())) if dense else None
    return orders


def _take(table: np.ndarray, index: np.ndarray) -> np.ndarray:
    """``table[index]`` for in-range indices, in the indices' memory order: np.take would first copy a
    transposed view into C order, a strided pass that costs more than the lookup. The result has the indices'
    layout."""
    if index.flags.c_contiguous or index.ndim < 2:
        return table.take(index, mode="wrap")
    orders = _memory_order(index)
    if orders is None:
        return table.take(index, mode="wrap")
    return table.take(index.transpose(orders[0]), mode="wrap").transpose(orders[1])


# x + 1.5 * 2**23 in float32, for |x| <= 2**22, is x rounded half to even to an integer (the sum's spacing is 1),
# held in the low bits of the sum: its bits are this plus the integer
_ROUNDER = F32(1.5 * 2 ** 23)
_ROUNDER_BITS = int(np.array(_ROUNDER).view(np.int32))


class _TableRequantizer:
    """``_Requantizer``'s multiply and clip, then the value's entry in a QLinearLookup table (per channel,
    axis 1, for a 2-D table) in place of the shift into 8 bits: what requantizing and the lookup did in two
    steps, without the codes between. The rows are reordered once by code (entry i is code min + i).

    The rounding and the index come from one float32 addition: clipped values are within +-255, so adding
    1.5 * 2**23 + an even row offset rounds them half to even (the offset is even, so ties go where they would
    without it), and the sum's bits, less a constant, are the index (int32, in place): four passes where
    multiply, round, clip, offset, conversion to an integer type took five, one of them writing 8-byte
    integers."""

    def __init__(self, requant: _Requantizer, table: np.ndarray, ndim: int):
        self.multiplier, self.low, self.high = requant.multiplier, requant.low, requant.high
        by_code = np.roll(table, -128, axis=-1) if requant.dtype == np.int8 else table
        # (in float64: 8-bit codes' differences would wrap, a dequantizing table's are floats)
        self.monotonic = bool(np.all(np.diff(by_code.astype(np.float64), axis=-1) >= 0))
        self.flat = np.ascontiguousarray(by_code).reshape(-1)
        # the clipped, rounded value r has index r + zero_point - min (+ 256 per row); an odd shift is taken
        # as the even one below it and the 1 back from the bits' constant
        shift = int(requant.zero_point) - int(_BOUNDS[requant.dtype][0])
        odd = shift & 1
        rows = np.arange(table.shape[0] if table.ndim == 2 else 1, dtype=np.int64) * 256 + shift - odd
        rounder = (rows + int(_ROUNDER)).astype(F32)  # exact: below 2**24 (at most _TABLE_CHANNELS rows)
        self.rounder = rounder.reshape((-1,) + (1,) * (ndim - 2)) if table.ndim == 2 else rounder[0]
        self.base = np.int32(_ROUNDER_BITS - odd)
        # per (shape, strides) of the sums: None, or how a channels-last layout is worked as rows (_channel_rows)
        self.layouts: dict[tuple, tuple | None] = {}
        # per shape and strides of the sums: the multiplier and the rounder laid over them (_laid_over)
        self.laid_multipliers: dict[tuple, np.ndarray] = {}
        self.laid_rounders: dict[tuple, np.ndarray] = {}

    def _channel_rows(self, acc: np.ndarray) -> tuple | None:
        """For sums stored channels-last (channels the fastest axis in memory, as the depthwise and pointwise
        plans hand them out) with a per-channel multiplier or table: (memory orders, rows shape, multiplier,
        rounder) to work them as rows of at least EPILOGUE_RUN values in memory order, with the per-channel
        operands tiled over a row: NumPy runs a same-shape operand twice as fast as a channel vector broadcast
        along the image (64 channels of 28x28: 11 -> 5 us a pass). Else None."""
        key = (acc.shape, acc.strides)
        entry = self.layouts.get(key, False)
        if entry is not False:
            return entry
        entry = None
        orders = _memory_order(acc)
        channels = acc.shape[1] if acc.ndim > 2 else 0
        per_channel = [np.ndim(v) > 0 for v in (self.multiplier, self.rounder)]
        if orders is not None and channels > 1 and acc.size and orders[0][-1] == 1 and any(per_channel):
            run = epilogue_run(acc.size, channels)
            multiplier, rounder = (np.tile(np.reshape(v, -1), run // channels) if wide else v
                                   for v, wide in zip((self.multiplier, self.rounder), per_channel, strict=True))
            entry = (orders, (acc.size // run, run), multiplier, rounder)
        keep(self.layouts, key, entry)
        return entry

    def __call__(self, acc: np.ndarray) -> np.ndarray:
        if acc.dtype != F32:
            acc = acc.astype(F32)
        rows = None if acc.flags.c_contiguous else self._channel_rows(acc)
        if rows is not None:  # the same passes, in place, over the memory-order rows
            orders, rows_shape, multiplier, rounder = rows
            stored = acc.transpose(orders[0])
            flat = stored.reshape(rows_shape)  # (a view: acc is dense in this order)
            np.multiply(flat, multiplier, out=flat)
            _clip(flat, self.low, self.high, out=flat)
            flat += rounder
            index = flat.view(np.int32)
            index -= self.base
            return self.flat.take(index, mode="wrap").reshape(stored.shape).transpose(orders[1])
        multiplier = _laid_over(self.laid_multipliers, self.multiplier, acc)
        if acc.flags.c_contiguous or _memory_order(acc) is not None:
            # in place, also in a transposed buffer: a new array of a large layer's size is fresh pages from the
            # system on every call, whose faults cost as much as the passes
            np.multiply(acc, multiplier, out=acc)
        else:  # a view with gaps (the valid part of full-width rows): the passes run faster on a copy
            acc = np.multiply(acc, multiplier)
        _clip(acc, self.low, self.high, out=acc)  # (clipping to integers commutes with rounding)
        acc += _laid_over(self.laid_rounders, self.rounder, acc)
        index = acc.view(np.int32)
        index -= self.base
        # the clip keeps every index in range, so take's "wrap" never wraps and spares the bounds check
        return _take(self.flat, index)


def _scalar_param(op: Op, value: np.ndarray | None, what: str) -> None:
    if value is not None and value.size != 1:
        raise op.fail(f"{what} of shape {value.shape} must be a single value")


class _FastConv:
    """The integer convolution run by the float Conv kernel (its im2col plans, BLAS, fused MaxPool) on
    zero-centred float32 values, when a load-time bound proves every partial sum (bias included) stays below
    2**24 so float32 adds the integers exactly."""

    def __init__(self, op: _ConvBase, w: np.ndarray, w_zero_point, x_dtype: np.dtype | None, x_zero_point,
                 bias: np.ndarray | None):
        """``x_dtype`` None: the input's type and zero point are known only when run (an 8-bit input whose zero
        point comes from DynamicQuantizeLinear): the bound is then the widest an 8-bit ``x - zp`` reaches, 255."""
        from .batch1 import batch1_kernel
        from .conv import Conv
        from .registry import NodeSpec

        centred, weight_sum = op.prepared or op._prepare_weights(w, w_zero_point)
        bias_bound = 0.0 if bias is None else float(np.abs(bias.astype(np.float64)).max(initial=0.0))
        x_bound = 255.0 if x_dtype is None else _value_bound(x_dtype, x_zero_point)
        self.ok = x_bound * weight_sum + bias_bound < _F32_EXACT
        self.x_dtype = None if x_dtype is None else np.dtype(x_dtype)
        self.x_zero_point = F32(0 if x_zero_point is None else np.asarray(x_zero_point).reshape(-1)[0])
        if not self.ok:
            return
        node = op.node
        self.weight = centred.astype(F32)
        self.bias = None if bias is None else bias.astype(F32).reshape(-1)
        spec = NodeSpec(op_type=node.op_type, name=node.name, domain="", inputs=["x", "w", "b" if bias is not None
                                                                                     else ""],
                        outputs=list(node.outputs), attrs=node.attrs, opset=11,
                        consts=[None, self.weight, self.bias], source=node.source, limits=node.limits)
        # the fast plan's small-batch kernels (depthwise and channels-last layouts): any order of summing these
        # integers is exact under the bound above, so they give the same values as Conv
        self.conv = batch1_kernel(Conv(spec))

    def __call__(self, x: np.ndarray, zero_point=None) -> np.ndarray:
        zp = self.x_zero_point if zero_point is None else zero_point
        centred = np.subtract(x, zp, dtype=F32) if zp else x.astype(F32)
        return self.conv.run(centred, self.weight, self.bias)


@register("ConvInteger", 10)
class ConvInteger(_ConvBase):
    def __init__(self, node):
        super().__init__(node)
        self.fast = None
        self.dynamic = False  # the input's zero point arrives with it (DynamicQuantizeLinear)
        x_zero_point = self.const(2)
        x_zp_known = len(node.inputs) <= 2 or not node.inputs[2] or x_zero_point is not None
        if self.prepared is not None and x_zp_known and (x_zero_point is None or x_zero_point.size == 1):
            x_dtype = np.uint8 if x_zero_point is None else x_zero_point.dtype
            fast = _FastConv(self, self.const(1), self.const(3), x_dtype, x_zero_point, None)
            self.fast = fast if fast.ok else None
        elif self.prepared is not None and not x_zp_known:
            fast = _FastConv(self, self.const(1), self.const(3), None, None, None)
            self.fast, self.dynamic = (fast, True) if fast.ok else (None, False)

    def run(self, x, w, x_zero_point=None, w_zero_point=None):
        if self.dynamic and x.dtype.itemsize == 1 and x.dtype.kind in "iu" and (
                x_zero_point is None or (x_zero_point.size == 1 and x_zero_point.dtype == x.dtype)):
            zp = F32(0) if x_zero_point is None else F32(x_zero_point.reshape(-1)[0])
            return self.fast(x, zp).astype(np.int32)
        if self.fast is not None and x.dtype == self.fast.x_dtype:
            return self.fast(x).astype(np.int32)
        return self._convolve(x, x_zero_point, w, w_zero_point).astype(np.int32)


@register("DynamicQuantizeConv", 1, domain="ai.nn_core.fused")
class DynamicQuantizeConv(Op):
    """x (float32), W, w_zero_point, w_scale, bias; the convolution's attributes. The chain
    ``DynamicQuantizeLinear(x) -> ConvInteger(., W, x_zero_point, w_zero_point) -> Cast(float) -> Mul(.,
    Mul(x_scale, w_scale)) [-> Add(., bias)]`` (``fuse_dynamic_matmuls`` writes it) as one kernel, with a fused
    Relu and MaxPool.

    Lean path (W and its zero point constant, the integer sums provably below 2**24, w_scale and the bias
    constants with one value per output channel, w_scale positive): x's scale and zero point from its min and
    max, then x quantized straight to the zero-centred float32 the convolution multiplies,
    ``clip(rint(x / scale), -zp, 255 - zp)`` (q - zp, never stored as uint8: three passes instead of the five of
    quantizing and centring), the float Conv kernel on it (exact integer sums, pooled chunk by chunk while in
    cache when a MaxPool follows), and only then the scale, bias and Relu on the (pooled) output: with a positive
    scale each is non-decreasing per channel, so pooling first gives the same values and 4x fewer are touched.
    Otherwise the chain runs as written, node by node."""

    def __init__(self, node):
        super().__init__(node)
        from .registry import NodeSpec

        if len(node.inputs) < 4 or not node.inputs[3]:
            raise self.fail("takes x, W, w_zero_point, w_scale and an optional bias")
        # the chain quantizes relu(x) (the Relu before it was absorbed, see fuse_dynamic_matmuls)
        self.relu_input = bool(int_attr(self, "relu_input", 0, choices=(0, 1)))
        w, w_zp = self.const(1), self.const(2)
        spec = NodeSpec(op_type="ConvInteger", name=node.name, domain="",
                        inputs=["x", node.inputs[1], "x_zero_point", node.inputs[2]], outputs=list(node.outputs),
                        attrs={k: v for k, v in node.attrs.items() if k in _CONV_ATTRS}, opset=10,
                        consts=[None, w, None, w_zp], source=node.source, limits=node.limits)
        # the unfused graph's integer convolution: its checks, its exact paths (and the lean path's Conv)
        self.integer = ConvInteger(spec)
        self.relu = False
        self.pool: Op | None = None
        self.lean = None
        w_scale, bias = self.const(3), self.const(4)
        bias_known = len(node.inputs) <= 4 or not node.inputs[4] or bias is not None
        if self.integer.dynamic and w is not None and w_scale is not None and bias_known:
            channels, rank = w.shape[0], w.ndim
            if (w_scale.dtype == F32 and _channel_shaped(w_scale.shape, channels, rank, 1)
                    and bool(np.all(w_scale > 0)) and bool(np.all(np.isfinite(w_scale)))
                    and (bias is None or bias.dtype == F32 and _channel_shaped(bias.shape, channels, rank, 1))):
                self.lean = (w_scale.reshape(()) if w_scale.size == 1 else w_scale.reshape((channels,) + (1,) * (
                    rank - 2)), None if bias is None else bias.reshape(()) if bias.size == 1 else bias.reshape(
                    (channels,) + (1,) * (rank - 2)))

    def fuse_activation(self, kind: str, params: dict[str, float]) -> bool:
        if kind != "relu" or self.relu or self.pool is not None:
            return False
        self.relu = True
        return True

    def fuse_pool(self, pool: Op) -> bool:
        """Absorb the MaxPool reading only this node (lean path only: its scale is positive, see the class)."""
        if self.lean is None or self.pool is not None or getattr(pool, "op_type", "") != "MaxPool" \
                or getattr(pool, "want_indices", True) or not self.integer.fast.conv.fuse_pool(pool):
            return False
        self.pool = pool
        return True

    def run(self, x, w, w_zero_point=None, w_scale=None, bias=None):
        if x.dtype != F32:
            raise self.fail(f"x must be float32, got {x.dtype}")
        if self.lean is not None:
            x_scale, zp = dynamic_qparams(x, self.relu_input)
            if 0 < x_scale < np.inf:  # (not with a NaN or infinite input: then the chain as written)
                w_scale, bias = self.lean
                centred = np.divide(x, x_scale)
                np.rint(centred, out=centred)
                _clip(centred, -zp, _255 - zp, out=centred)  # (with relu_input: a negative x lands on 0)
                y = self.integer.fast.conv.run(centred, self.integer.fast.weight, None)
                if y.flags.c_contiguous:  # the scale product formed in float32, as the Mul
                    np.multiply(y, x_scale * w_scale, out=y)
                else:  # a strided view (the valid part of full-width rows): the passes run 5x faster on a copy
                    y = np.multiply(y, x_scale * w_scale)
                if bias is not None:
                    y += bias
                if self.relu:
                    np.maximum(y, _ZERO, out=y)
                return y
        if self.relu_input:
            x = np.maximum(x, _ZERO)
        q, x_scale, x_zp = DynamicQuantizeLinear.run(self, x)
        if self.pool is not None:  # the fast convolution pools: the exact unpooled sums here
            acc = self.integer._convolve(q, x_zp, w, w_zero_point).astype(np.int32)
        else:
            acc = self.integer.run(q, w, x_zp, w_zero_point)
        y = acc.astype(F32) * np.multiply(x_scale, w_scale)
        if bias is not None:
            y = y + bias
        if self.relu:
            y = np.maximum(y, y.dtype.type(0))
        return y if self.pool is None else self.pool.run(y)


@register("QLinearConv", 10)
class QLinearConv(_ConvBase):
    WEIGHT_INPUT = 3
    WEIGHT_ZERO_POINT_INPUT = 5
    BIAS_INPUT = 8

    def __init__(self, node):
        super().__init__(node)
        weights, bias, w_scale = self.const(self.WEIGHT_INPUT), self.const(self.BIAS_INPUT), self.const(4)
        if weights is not None:
            self._check_params(weights.shape[0], w_scale, bias)
        self.fast: _FastConv | None = None
        self.requant: _Requantizer | None = None
        self.pool: Op | None = None
        consts = [self.const(i) for i in range(9)]
        bias_known = len(node.inputs) <= 8 or not node.inputs[8] or bias is not None
        x_scale, x_zp, _, w_scale, _, y_scale, y_zp = consts[1], consts[2], *consts[3:8]
        if (self.prepared is not None and bias_known and all(v is not None for v in (x_scale, x_zp, w_scale,
                                                                                         y_scale, y_zp))):
            for value, what in ((x_scale, "x_scale"), (x_zp, "x_zero_point"), (y_scale, "y_scale"),
                                (y_zp, "y_zero_point")):
                _scalar_param(self, value, what)
            if y_zp.dtype.kind not in "iu" or y_zp.dtype.itemsize != 1:
                raise self.fail(f"y_zero_point must be int8 or uint8, got {y_zp.dtype}")
            fast = _FastConv(self, weights, consts[5], x_zp.dtype, x_zp, bias)
            if fast.ok:
                self.fast = fast
                multiplier = (x_scale.astype(F32) * w_scale.astype(F32) / y_scale.astype(F32)).reshape(-1)
                self.requant = _Requantizer(multiplier, y_zp, y_zp.dtype, 1, weights.ndim)
                self.multiplier_positive = bool(np.all(multiplier > 0))

    def fuse_pool(self, pool: Op) -> bool:
        """Absorb the MaxPool reading only this node: requantization is monotonic (positive scales), so the
        maximum of the integer accumulators, requantized, is the maximum of the requantized values — and four
        times fewer values are requantized."""
        if self.fast is None or self.pool is not None or not self.multiplier_positive:
            return False
        if getattr(pool, "op_type", "") != "MaxPool" or getattr(pool, "want_indices", True):
            return False
        if not self.fast.conv.fuse_pool(pool):
            return False
        self.pool = pool
        return True

    def _check_params(self, out_channels: int, w_scale: np.ndarray | None, bias: np.ndarray | None) -> None:
        if w_scale is not None and w_scale.size not in (1, out_channels):
            raise self.fail(f"weight scale of shape {w_scale.shape} must have 1 or {out_channels} values")
        if bias is not None and bias.size != out_channels:
            raise self.fail(f"bias of shape {bias.shape} has {bias.size} values for {out_channels} output channels")

    def exact_sums(self, x: np.ndarray) -> np.ndarray | None:
        """The fast path's exact sums of ``x`` (bias included) before requantization; None when x does not take
        it (then ``run`` is the way)."""
        return self.fast(x) if self.fast is not None and x.dtype == self.fast.x_dtype else None

    def run(self, x, x_scale, x_zero_point, w, w_scale, w_zero_point, y_scale, y_zero_point, bias=None):
        if self.fast is not None and x.dtype == self.fast.x_dtype:
            return self.requant(self.fast(x))
        acc = self._convolve(x, x_zero_point, w, w_zero_point)
        self._check_params(w.shape[0], w_scale, bias)
        if x_scale.size != 1 or y_scale.size != 1 or (y_zero_point is not None and y_zero_point.size != 1):
            raise self.fail(f"x_scale {x_scale.shape}, y_scale {y_scale.shape} and y_zero_point must be single "
                            "values")
        if bias is not None:  # added in float64 so the sum is exact, as onnxruntime's int32 accumulator
            acc = acc.astype(np.float64) + bias.astype(np.float64).reshape((1, -1) + (1,) * (acc.ndim - 2))
        multiplier = (x_scale.astype(F32) * w_scale.astype(F32) / y_scale.astype(F32)).reshape(-1)
        dtype = x.dtype if y_zero_point is None else y_zero_point.dtype
        y = self._looked_up(_Requantizer(multiplier, y_zero_point, dtype, 1, acc.ndim)(acc))
        return self.pool.run(y) if self.pool is not None else y

    def _looked_up(self, y: np.ndarray) -> np.ndarray:
        """The requantized output as this node hands it on (the fused variant's table)."""
        return y


@register("QLinearConv", 1, domain="ai.nn_core.fused")
class QuantizingQLinearConv(QLinearConv):
    """QLinearConv with attribute ``quantize_input=1``: x arrives as float and is quantized on entry with
    x_scale and x_zero_point — the QuantizeLinear whose only reader was this convolution (``fuse_qdq``; a QDQ
    model's first layer). On the fast path x goes straight to the zero-centred float32 the convolution
    multiplies, ``clip(rint(x / x_scale), min - zp, max - zp)`` (three passes, where quantizing to 8 bits and
    centring again took five, and one kernel call fewer); otherwise through the QuantizeLinear kernel.

    An optional constant input 9 is a QLinearLookup table the output codes go through (``fuse_lookups``: the
    lookup that was the only reader of this convolution). On the fast path the requantized sums index the table
    directly (``_TableRequantizer``), the 8-bit codes between are never made."""

    def __init__(self, node):
        super().__init__(node)
        self.quantize_input = bool(int_attr(self, "quantize_input", 0, choices=(0, 1)))
        spec = NodeSpec(op_type="QuantizeLinear", name=node.name, domain="", inputs=["x", *node.inputs[1:3]],
                        outputs=["q"], attrs={}, opset=13, consts=[None, self.const(1), self.const(2)],
                        source=node.source, limits=node.limits)
        self.quantize = QuantizeLinear(spec)
        self.entry = None
        if self.fast is not None:  # x_scale and x_zero_point are per-tensor constants (QLinearConv checked)
            low, high = _BOUNDS[self.fast.x_dtype]
            zp = self.fast.x_zero_point
            self.entry = (F32(self.const(1).reshape(-1)[0]), F32(low) - zp, F32(high) - zp)
        if len(node.inputs) > 10:
            raise self.fail(f"takes at most 10 inputs, got {len(node.inputs)}")
        self.table = self.lookup = None
        if len(node.inputs) == 10 and node.inputs[9]:
            table = self.const(9)
            if table is None:
                raise self.fail("the lookup table (input 9) must be a constant")
            self.lookup = QLinearLookup(NodeSpec(op_type="QLinearLookup", name=node.name, domain=FUSED_DOMAIN,
                                                 inputs=["y", node.inputs[9]], outputs=list(node.outputs),
                                                 consts=[None, table], source=node.source, limits=node.limits))
            self.table = table
            weights = self.const(self.WEIGHT_INPUT)
            if table.ndim == 2 and weights is not None and table.shape[0] != weights.shape[0]:
                raise self.fail(f"lookup table of {table.shape[0]} rows for {weights.shape[0]} output channels")
            if table.ndim == 2 and table.shape[0] > _TABLE_CHANNELS:  # (fuse_lookups writes no wider one)
                raise self.fail(f"lookup table of {table.shape[0]} rows: at most {_TABLE_CHANNELS}")
            if self.requant is not None:
                self.requant = _TableRequantizer(self.requant, table, weights.ndim)

    def fuse_pool(self, pool: Op) -> bool:
        """As QLinearConv's; with a table only when it is non-decreasing in the code (per channel), so that
        pooling before the lookup gives what pooling after it does."""
        if self.table is not None and not (isinstance(self.requant, _TableRequantizer) and self.requant.monotonic):
            return False
        return super().fuse_pool(pool)

    def _looked_up(self, y: np.ndarray) -> np.ndarray:
        return y if self.lookup is None else self.lookup.run(y, self.table)

    def exact_sums(self, x: np.ndarray) -> np.ndarray | None:
        if not self.quantize_input:
            return super().exact_sums(x)
        if self.entry is not None and x.dtype == F32:
            scale, low, high = self.entry
            centred = np.divide(x, scale)
            np.rint(centred, out=centred)
            _clip(centred, low, high, out=centred)
            # a NaN survives the clip and would spread over its window's sums: then the QuantizeLinear kernel's
            # codes, as the unfused graph has them (one BLAS dot finds it; the codes' squares cannot overflow)
            if not has_nan(centred.ravel(order="K")):
                return self.fast.conv.run(centred, self.fast.weight, self.fast.bias)
        return None

    def run(self, x, x_scale, x_zero_point, *rest):
        sums = self.exact_sums(x)
        if sums is not None:
            return self.requant(sums)
        rest = rest[:6]  # (input 9, the table, is the kernel's own)
        if not self.quantize_input:
            return super().run(x, x_scale, x_zero_point, *rest)
        return super().run(self.quantize.run(x, x_scale, x_zero_point), x_scale, x_zero_point, *rest)


def _requantize(scaled: np.ndarray, zero_point: np.ndarray | None, fallback: np.dtype) -> np.ndarray:
    dtype = fallback if zero_point is None else zero_point.dtype
    rounded = np.rint(scaled, out=scaled)
    if zero_point is not None:
        rounded += zero_point.astype(F32)
    return _saturate(rounded, dtype)


# ---------------------------------------------------------------- integer matmul


def _row_param(param: np.ndarray | None, rows_axis: bool) -> np.ndarray | None:
    """A per-row (of A) or per-column (of B) parameter shaped to broadcast over the matmul operand."""
    if param is None or param.size == 1:
        return None if param is None else param.reshape(())
    return param.reshape(-1, 1) if rows_axis else param.reshape(-1)


def centred_f32(values: np.ndarray, zero_point: np.ndarray | None, rows_axis: bool) -> np.ndarray:
    """``values - zero_point`` in float32 (exact for 8/16-bit integers); per-row/per-column zero points."""
    zp = _row_param(zero_point, rows_axis)
    if zp is None or (zp.ndim == 0 and not zp):
        return values.astype(F32)
    return np.subtract(values, zp.astype(F32), dtype=F32)


def exact_matmul(a: np.ndarray, b: np.ndarray, a_bound: float | None = None,
                 b_column_sum: float | None = None) -> np.ndarray:
    """``a @ b`` of integer-valued float32 operands, exactly, at float32 BLAS speed.

    A float32 sum of integers is exact while every partial sum stays below 2**24: with |a| <= a_bound and each
    column of b summing to at most b_column_sum in absolute value, one float32 product suffices when
    a_bound * b_column_sum < 2**24. Otherwise K is split into slices short enough that each slice's product is
    exact, and the slices are summed in float64 (exact to 2**53)."""
    if a_bound is None:
        a_bound = float(np.abs(a).max(initial=0.0))
    if b_column_sum is None:
        b_column_sum = float(np.abs(b).sum(axis=-2).max(initial=0.0))
    if a_bound * b_column_sum < _F32_EXACT:
        return np.matmul(a, b)
    b_max = float(np.abs(b).max(initial=0.0))
    k = a.shape[-1]
    step = max(1, int((_F32_EXACT - 1) // max(a_bound * b_max, 1.0)))
    total = None
    for start in range(0, k, step):
        part = np.matmul(a[..., start:start + step], b[..., start:start + step, :]).astype(np.float64)
        total = part if total is None else total + part
    return total


class PreparedB:
    """A constant right operand, zero-centred once. For each bound on |a| (and on a bias added to the sums) the
    slices of K whose products stay exact in float32 are found once from the operand's cumulative column sums,
    so a long K costs a few float32 matmuls, not a float64 one or a slice per couple of hundred rows."""

    def __init__(self, b: np.ndarray, zero_point: np.ndarray | None):
        self.dtype = b.dtype
        # row-major whatever b's layout (QGemm's transB hands a transposed view): a single-row product with a
        # column-major operand runs ~25% slower in OpenBLAS
        self.centred = np.ascontiguousarray(centred_f32(b, zero_point, False))
        self.column_sum = float(np.abs(self.centred).sum(axis=-2).max(initial=0.0)) if self.centred.size else 0.0
        self._slices: dict[tuple[float, float], list[slice] | None] = {}

    def slices(self, a_bound: float, bias_bound: float = 0.0) -> list[slice] | None:
        """K split so that a_bound * (a column's |b| sum over the slice) (+ bias_bound for the first slice)
        stays below 2**24; None when a single row of b already reaches that (then float64 is needed)."""
        key = (a_bound, bias_bound)
        if key in self._slices:
            return self._slices[key]
        k = self.centred.shape[-2] if self.centred.ndim > 1 else self.centred.shape[0]
        if a_bound * self.column_sum + bias_bound < _F32_EXACT or k == 0:
            result: list[slice] | None = [slice(0, k)]
        else:
            rows = np.abs(self.centred.astype(np.float64))
            rows = rows.reshape(-1, *rows.shape[-2:]).max(axis=0) if rows.ndim > 2 else rows.reshape(k, -1)
            cumulative = np.concatenate([np.zeros((1, rows.shape[1])), np.cumsum(rows, axis=0)])
            result, start, extra = [], 0, bias_bound
            while start < k:
                longest = (cumulative[start + 1:] - cumulative[start]).max(axis=1)  # non-decreasing in length
                count = int(np.searchsorted(longest * a_bound + extra, _F32_EXACT, side="left"))
                if count == 0:
                    result = None
                    break
                result.append(slice(start, start + count))
                start, extra = start + count, 0.0
        self._slices[key] = result
        return result

    def product(self, a: np.ndarray, a_bound: float, bias: np.ndarray | None = None, bias_bound: float = 0.0
                ) -> np.ndarray:
        """``a @ centred (+ bias)`` exactly for zero-centred integer-valued float32 ``a`` with ``|a| <= a_bound``:
        float32 when one slice suffices, else float64 (the sum of exact float32 slices)."""
        slices = self.slices(a_bound, bias_bound)
        b = self.centred
        if slices is not None and len(slices) == 1:
            acc = np.matmul(a, b)
            if bias is not None:
                acc += bias
            return acc
        if slices is None:
            acc = np.matmul(a.astype(np.float64), b.astype(np.float64))
        else:
            acc = None
            for part in slices:
                piece = np.matmul(a[..., part], b[..., part, :] if b.ndim > 1 else b[part])
                acc = piece.astype(np.float64) if acc is None else np.add(acc, piece, out=acc)
        if bias is not None:
            acc += bias
        return acc


def _check_matmul(op: Op, a: np.ndarray, b: np.ndarray) -> None:
    if a.ndim < 1 or b.ndim < 1:
        raise op.fail(f"MatMul operands must have rank >= 1, got {a.shape} and {b.shape}")
    k_a = a.shape[-1]
    k_b = b.shape[0] if b.ndim == 1 else b.shape[-2]
    if k_a != k_b:
        raise op.fail(f"A {list(a.shape)} and B {list(b.shape)} do not share an inner dimension")
    rows = math.prod(a.shape[:-1])
    cols = b.shape[-1] if b.ndim > 1 else 1
    batch = max(math.prod(a.shape[:-2]) if a.ndim > 2 else 1, math.prod(b.shape[:-2]) if b.ndim > 2 else 1)
    op.check_size((batch * rows, cols), np.float64)
    op.check_work(batch * rows * k_a * cols, "the integer matmul")


class _IntegerMatMul(Op):
    """MatMulInteger-like: A (input 0) times B (input ``B_INPUT``), zero points at ``A_ZP`` and ``B_ZP``."""

    B_INPUT, A_ZP, B_ZP = 1, 2, 3

    def __init__(self, node):
        super().__init__(node)
        b = self.const(self.B_INPUT)
        b_zp = self.const(self.B_ZP)
        b_zp_known = len(node.inputs) <= self.B_ZP or not node.inputs[self.B_ZP] or b_zp is not None
        self.b = None
        if b is not None and b_zp_known:
            if b.ndim < 1 or b.dtype.kind not in "iu":
                raise self.fail(f"B must be an integer tensor of rank >= 1, got {b.dtype} {b.shape}")
            if b_zp is not None and b_zp.size not in (1, b.shape[-1]):
                raise self.fail(f"B's zero point of shape {b_zp.shape} must have 1 or {b.shape[-1]} values")
            self.b = PreparedB(b, b_zp)
        self.checked: set[tuple] = set()

    def product(self, a, a_zero_point, b, b_zero_point) -> np.ndarray:
        """The exact integer product, float32 or float64 holding integers."""
        key = (a.shape, a.dtype, None if a_zero_point is None else a_zero_point.shape,
               None if self.b is not None else b.shape)
        if key not in self.checked:
            _check_matmul(self, a, b if self.b is None else self.b.centred)
            if a_zero_point is not None and a_zero_point.size not in (1, a.shape[-2] if a.ndim > 1 else 1):
                raise self.fail(f"A's zero point of shape {a_zero_point.shape} must be a single value or one per "
                                "row")
            self.checked.add(key)
        if a.dtype.itemsize == 1 and (a_zero_point is None or a_zero_point.size == 1):
            if a_zero_point is None or not a_zero_point.any():
                a_centred, a_bound = a.astype(F32), _DTYPE_BOUND[a.dtype]
            else:
                zp = F32(a_zero_point.reshape(-1)[0])
                a_centred, a_bound = np.subtract(a, zp, dtype=F32), _value_bound(a.dtype, a_zero_point)
        else:
            a_centred = centred_f32(a, a_zero_point, True)
            a_bound = float(np.abs(a_centred).max(initial=0.0))
        if self.b is not None:
            return self.b.product(a_centred, a_bound)
        return exact_matmul(a_centred, centred_f32(b, b_zero_point, False), a_bound)


@register("MatMulInteger", 10)
class MatMulInteger(_IntegerMatMul):
    def run(self, a, b, a_zero_point=None, b_zero_point=None):
        return self.product(a, a_zero_point, b, b_zero_point).astype(np.int32)


@register("QLinearMatMul", 10)
class QLinearMatMul(_IntegerMatMul):
    B_INPUT, A_ZP, B_ZP = 3, 2, 5

    def __init__(self, node):
        super().__init__(node)
        a_scale, b_scale, y_scale, y_zp = self.const(1), self.const(4), self.const(6), self.const(7)
        self.requant = None
        if all(v is not None for v in (a_scale, b_scale, y_scale, y_zp)) and a_scale.size == 1:
            _scalar_param(self, y_scale, "y_scale")
            _scalar_param(self, y_zp, "y_zero_point")
            multiplier = a_scale.astype(F32).reshape(()) * b_scale.astype(F32).reshape(-1) / y_scale.astype(
                F32).reshape(())
            self.requant = _Requantizer(multiplier, y_zp, y_zp.dtype, -1, 1)

    def run(self, a, a_scale, a_zero_point, b, b_scale, b_zero_point, y_scale, y_zero_point):
        acc = self.product(a, a_zero_point, b, b_zero_point)
        if self.requant is not None:
            return self.requant(acc)
        multiplier = (_row_param(a_scale.astype(F32), True) * _row_param(b_scale.astype(F32), False)
                      / y_scale.astype(F32).reshape(()))
        return _requantize(acc.astype(F32) * multiplier, y_zero_point, a.dtype)


# ---------------------------------------------------------------- QDQ -> integer ops


_PASS_THROUGH = {"MaxPool", "Flatten", "Reshape", "Transpose", "Squeeze", "Unsqueeze"}


def _same_param(constants: dict[str, np.ndarray], a: str, b: str) -> bool:
    if a == b:
        return True
    x, y = constants.get(a), constants.get(b)
    return x is not None and y is not None and x.dtype == y.dtype and x.shape == y.shape and bool(np.all(x == y))


#: the private domain of the kernels the fast plan's rewrites introduce (not ONNX operators; a file that names one
#: gets the same kernel, which checks its inputs like any other)
FUSED_DOMAIN = "ai.nn_core.fused"

_CONV_ATTRS = ("auto_pad", "dilations", "group", "kernel_shape", "pads", "strides")


def _channel_shaped(shape: tuple[int, ...], channels: int, rank: int, axis: int) -> bool:
    """Whether a value of ``shape`` broadcast against an output of rank ``rank`` gives one value for the whole
    output or one per slice of ``axis`` (whose length is ``channels``), and never enlarges the output."""
    if len(shape) > rank:
        return False
    padded = (1,) * (rank - len(shape)) + tuple(shape)
    return all(d == 1 for d in padded) or all(d == (channels if i == axis else 1) for i, d in enumerate(padded))


# ---------------------------------------------------------------- lookup tables


def _byte_index(x: np.ndarray) -> np.ndarray:
    """An 8-bit tensor's bytes, the index into a table of 256 entries (an int8 code c is entry c & 0xFF)."""
    return x.view(np.uint8)


@register("QLinearLookup", 1, domain=FUSED_DOMAIN)
class QLinearLookup(Op):
    """x, table or a, b, table: 8-bit codes through a table (``fuse_lookups`` writes it for ``DequantizeLinear
    -> elementwise float ops -> QuantizeLinear``, computed once by running those ops on every code, so the
    results are theirs bit for bit). A float32 table is such a chain without the QuantizeLinear: the ops' float
    values themselves.

    One input: ``table`` (256,) indexed by x's byte, or (C, 256) with one row per channel (axis 1) of x. Two
    inputs: ``table`` (65536,) indexed by ``a's byte * 256 + b's byte`` (a and b broadcast)."""

    def __init__(self, node: NodeSpec):
        super().__init__(node)
        if len(node.inputs) not in (2, 3) or not all(node.inputs):
            raise self.fail("takes x and a table, or a, b and a table")
        self.binary = len(node.inputs) == 3
        self.offsets: dict[int, np.ndarray] = {}  # per rank: each channel's first entry in the flat table
        table = self.const(len(node.inputs) - 1)
        if table is not None:
            self._check_table(table)

    def _check_table(self, table: np.ndarray) -> None:
        if table.dtype not in (np.uint8, np.int8, np.float32):
            raise self.fail(f"table must be uint8, int8 or float32, got {table.dtype}")
        if self.binary and table.shape != (65536,) or not self.binary and (
                table.ndim not in (1, 2) or table.shape[-1] != 256 or table.ndim == 1 and table.size != 256):
            wanted = "[65536]" if self.binary else "[256] or [C, 256]"
            raise self.fail(f"table of shape {list(table.shape)} must be {wanted}")

    def _check_codes(self, x: np.ndarray) -> None:
        if x.dtype.kind not in "iu" or x.dtype.itemsize != 1:
            raise self.fail(f"inputs must be 8-bit integers, got {x.dtype}")

    def run(self, *args: np.ndarray):
        *codes, table = args
        if table is not self.const(len(args) - 1):
            self._check_table(table)
        for x in codes:
            self._check_codes(x)
        # indices as 16-bit integers where they fit (np.take widens them as it reads, one pass fewer than
        # widening first); every index is in range, so "wrap" never wraps and spares the bounds check
        if self.binary:
            a, b = _byte_index(codes[0]), _byte_index(codes[1])
            if a.shape != b.shape:
                check_broadcast(self, np.uint16, a, b)
                return table.take(np.bitwise_or(np.left_shift(a, 8, dtype=np.uint16), b), mode="wrap")
            index = a.astype(np.uint16)
            index <<= 8
            index |= b
            return table.take(index, mode="wrap")
        x = _byte_index(codes[0])
        if table.ndim == 1:
            return table.take(x, mode="wrap")
        channels = table.shape[0]
        if x.ndim < 2 or x.shape[1] != channels:
            raise self.fail(f"input of shape {list(x.shape)} does not have the table's {channels} channels on axis 1")
        offsets = self.offsets.get(x.ndim)
        if offsets is None or offsets.size != channels:
            wide = np.uint16 if channels <= 256 else np.intp
            offsets = self.offsets[x.ndim] = (np.arange(channels, dtype=wide) * wide(256)).reshape(
                (channels,) + (1,) * (x.ndim - 2))
        index = x.astype(offsets.dtype)
        index += offsets
        return table.reshape(-1).take(index, mode="wrap")


def fuse_dynamic_matmuls(nodes: list, constants: dict[str, np.ndarray], graph_outputs: set[str], make_node,
                         private: bool = True) -> list:
    """The chains ``quantize_dynamic`` (onnxruntime's, and ``nn_core quantize --dynamic``) writes for a MatMul /
    Gemm / Conv: ``DynamicQuantizeLinear(x) -> MatMulInteger or ConvInteger(., W) -> Cast(float) -> Mul(.,
    Mul(x_scale, w_scale)) [-> Add(., bias)]``, each rewritten as one node computing the same float32 values
    (the exact integer product cast to float32, times the float32 product of the two scales, plus the bias):

    - MatMulInteger -> ``com.microsoft`` DynamicQuantizeMatMul (x, W, w_scale, w_zero_point, bias), which is
      what onnxruntime fuses it into; W, its zero point, w_scale and the bias must be constants, w_scale and the
      bias scalars or one value per column.
    - ConvInteger -> DynamicQuantizeConv (``FUSED_DOMAIN``; onnxruntime has no such op, it runs the chain node
      by node): x, W, w_zero_point, w_scale, bias, the convolution's attributes. W and its zero point must be
      constants; w_scale and the bias may be any value already computed where the ConvInteger stands (a bias
      reshaped by a node of its own is folded into a constant only later); the kernel takes its lean path when
      they turn out to be per-channel constants, and computes the chain as written otherwise.

    A Relu whose only reader is the chain's DynamicQuantizeLinear (itself read only by the chain) is absorbed
    too: the fused node reads the Relu's input with ``relu_input=1`` (the private DynamicQuantizeMatMul of
    ``FUSED_DOMAIN`` for a matmul) and quantizes relu(x) from x's maximum alone. The DynamicQuantizeLinear and
    the scale Mul are dropped when nothing else reads them. Arguments as ``fuse_qdq``'s; without ``private``
    only the MatMulInteger chains, as com.microsoft DynamicQuantizeMatMul, with no Relu absorbed."""
    producer, readers = producers_and_readers(nodes)
    position = {id(node): i for i, node in enumerate(nodes)}

    def only_reader(name: str, op_type: str):
        users = readers.get(name, [])
        if len(users) != 1 or name in graph_outputs:
            return None
        user = users[0]
        return user if user.op_type == op_type and is_default_domain(user) and len(user.inputs) >= 1 else None

    def other_input(node, name: str) -> str | None:
        if len(node.inputs) != 2 or node.inputs[0] == node.inputs[1] or name not in node.inputs:
            return None
        return node.inputs[1] if node.inputs[0] == name else node.inputs[0]

    def per_column(name: str | None, n: int) -> bool:
        value = constants.get(name) if name else None
        return value is not None and value.dtype == F32 and value.ndim <= 1 and value.size in (1, n)

    def ready_before(name: str | None, node) -> bool:
        """A value the fused node can read where ``node`` stands: a constant, a graph input or computed earlier."""
        if not name:
            return False
        made_by = producer.get(name)
        return name in constants or made_by is None or position[id(made_by)] < position[id(node)]

    replaced: dict[int, object] = {}
    removed: set[int] = set()
    droppable: set[int] = set()
    for node in nodes:
        if node.op_type not in ("MatMulInteger", "ConvInteger" if private else "MatMulInteger") \
                or not is_default_domain(node) \
                or not 3 <= len(node.inputs) <= 4:
            continue
        conv = node.op_type == "ConvInteger"
        a, b, a_zp = node.inputs[:3]
        b_zp = node.inputs[3] if len(node.inputs) > 3 else ""
        dql = producer.get(a)
        if (dql is None or dql.op_type != "DynamicQuantizeLinear" or not is_default_domain(dql)
                or len(dql.outputs) < 3 or dql.outputs[0] != a or dql.outputs[2] != a_zp or not a_zp):
            continue
        weight = constants.get(b)
        if weight is None or weight.dtype not in (np.uint8, np.int8) or weight.ndim != 2 and not conv \
                or conv and weight.ndim < 3:
            continue
        n = weight.shape[0] if conv else weight.shape[1]
        if b_zp:
            zp = constants.get(b_zp)
            if zp is None or zp.dtype != weight.dtype or zp.ndim > 1 or zp.size not in (1, n):
                continue
        cast = only_reader(node.outputs[0], "Cast")
        if cast is None or int(cast.attrs.get("to", 0)) != onnx.TensorProto.FLOAT:
            continue
        mul = only_reader(cast.outputs[0], "Mul")
        scale_name = None if mul is None else other_input(mul, cast.outputs[0])
        scale_mul = producer.get(scale_name) if scale_name else None
        if scale_mul is None or scale_mul.op_type != "Mul" or not is_default_domain(scale_mul):
            continue
        b_scale = other_input(scale_mul, dql.outputs[1])
        if not (ready_before(b_scale, node) if conv else per_column(b_scale, n)):
            continue
        last, bias = mul, ""
        add = only_reader(mul.outputs[0], "Add")
        add_other = None if add is None else other_input(add, mul.outputs[0])
        if add is not None and (ready_before(add_other, node) if conv else per_column(add_other, n)):
            last, bias = add, add_other
        x, attrs = dql.inputs[0], {}
        relu = producer.get(x) if private else None
        if (relu is not None and relu.op_type == "Relu" and is_default_domain(relu) and len(relu.inputs) == 1
                and relu.inputs[0] and x not in graph_outputs and readers.get(x) == [dql]
                and readers.get(dql.outputs[0]) == readers.get(a_zp) == [node]
                and readers.get(dql.outputs[1]) == [scale_mul] and readers.get(scale_name) == [mul]):
            # the quantization of relu(y) is that of y with its minimum taken as 0 (a negative y rounds to a
            # value clipped to the zero point, 0): the Relu pass and one reduction go
            x, attrs = relu.inputs[0], {"relu_input": 1}
            removed.add(id(relu))
        if conv:
            attrs.update((k, v) for k, v in node.attrs.items() if k in _CONV_ATTRS)
            fused = make_node(node, node.name, "DynamicQuantizeConv", FUSED_DOMAIN, [x, b, b_zp, b_scale, bias],
                              [last.outputs[0]], attrs)
        else:
            fused = make_node(node, node.name, "DynamicQuantizeMatMul", FUSED_DOMAIN if attrs else "com.microsoft",
                              [x, b, b_scale, b_zp, bias], [last.outputs[0]], attrs)
        replaced[id(node)] = fused
        removed.update(id(n_) for n_ in (cast, mul, last))
        droppable.update((id(dql), id(scale_mul)))
    if not replaced:
        return nodes
    result = [replaced.get(id(node), node) for node in nodes if id(node) not in removed]
    while True:  # the quantizations and scale products no reader is left for
        read = {name for node in result for name in node.inputs} | graph_outputs
        kept = [node for node in result if id(node) not in droppable or any(o in read for o in node.outputs if o)]
        if len(kept) == len(result):
            return kept
        result = kept


def fuse_qdq(nodes: list, constants: dict[str, np.ndarray], graph_outputs: set[str], make_node,
             private: bool = True) -> list:
    """QDQ groups around Conv / Gemm / MatMul rewritten as the integer ops onnxruntime fuses them into.

    ``DQ(x) -> Conv(DQ(w), DQ(bias)) [-> Relu] -> Q`` becomes ``QLinearConv``; MatMul becomes ``QLinearMatMul``;
    Gemm becomes ``QGemm`` (com.microsoft; with float output when no Q follows). A Relu between is absorbed only
    when the Q's zero point is its type's minimum (then Q(relu(v)) = Q(v) exactly). ``DQ -> MaxPool/Flatten/
    Reshape/... -> Q`` with the same scale and zero point runs on the integers. Results are those of onnxruntime,
    which does the same fusions. ``nodes`` are objects with name/op_type/domain/inputs/outputs/attrs (graph
    NodeInfo, or the quantizer's own); ``make_node(template, name, op_type, domain, inputs, outputs, attrs)``
    builds one; new constants (zero points) are added to ``constants``. DequantizeLinear nodes left without
    readers are dropped.

    The fast plan can call it right after ``remove_identities`` (before constants are folded, which would turn
    the weights' DequantizeLinear into float weights). Dynamically quantized matmuls are fused first
    (``fuse_dynamic_matmuls``). ``private`` (the fast plan) also allows the engine's own rewrites, whose ops
    are not ONNX or onnxruntime operators (``FUSED_DOMAIN``: the input's QuantizeLinear done by the first
    QLinearConv, dynamic convolutions, Relus absorbed by dynamic quantization); a file written from the result
    (``nn_core quantize --format qoperator``) must pass False. (The batch flatten, a general pass, is
    ``nn_core.optimize.flatten_batch_reshapes``, which the fast plan runs before this.)"""
    nodes = fuse_dynamic_matmuls(nodes, constants, graph_outputs, make_node, private)
    producer, readers = producers_and_readers(nodes)

    def dq(name: str):
        """(q, scale, zero point) names of the DequantizeLinear producing ``name``, if its parameters are
        constant; the zero point may be '' (absent)."""
        node = producer.get(name)
        if node is None or node.op_type != "DequantizeLinear" or node.domain not in ("", "ai.onnx"):
            return None
        scale = node.inputs[1]
        zp = node.inputs[2] if len(node.inputs) > 2 else ""
        if scale not in constants or (zp and zp not in constants):
            return None
        return node.inputs[0], scale, zp, node

    def only_reader(name: str):
        users = readers.get(name, [])
        return users[0] if len(users) == 1 and name not in graph_outputs else None

    def q_after(name: str, allow_relu: bool):
        """The QuantizeLinear reading ``name`` (through an absorbable Relu), or None."""
        user = only_reader(name)
        relu = None
        if user is not None and user.op_type == "Relu" and allow_relu:
            relu, user = user, only_reader(user.outputs[0])
        if user is None or user.op_type != "QuantizeLinear" or len(user.inputs) < 3:
            return None
        scale, zp = user.inputs[1], user.inputs[2]
        if scale not in constants or zp not in constants or constants[scale].size != 1 or constants[zp].size != 1:
            return None
        zp_value = constants[zp]
        if zp_value.dtype not in (np.uint8, np.int8):
            return None
        if relu is not None and zp_value.reshape(-1)[0] != np.iinfo(zp_value.dtype).min:
            return None
        return user, relu, scale, zp

    replaced: dict[int, object] = {}
    removed: set[int] = set()

    def entry_quantize(codes: str, reader, scale: str, zero_point: str):
        """The QuantizeLinear making ``codes``, read only by ``reader``, with this scale and zero point: a
        QLinearConv reading them does it on entry (QuantizingQLinearConv). Not one an earlier rewrite took as its
        own output (its output now comes from there)."""
        quantize = producer.get(codes)
        if (quantize is None or quantize.op_type != "QuantizeLinear" or not is_default_domain(quantize)
                or id(quantize) in removed or len(quantize.inputs) != 3 or codes in graph_outputs
                or any(name not in constants or constants[name].size != 1 for name in (scale, zero_point))
                or [id(n) for n in readers.get(codes, [])] != [id(reader)]
                or set(quantize.attrs) - {"axis", "saturate"}
                or not _same_param(constants, quantize.inputs[1], scale)
                or not _same_param(constants, quantize.inputs[2], zero_point)):
            return None
        return quantize

    for node in nodes:
        if node.domain not in ("", "ai.onnx") or id(node) in removed:
            continue
        if private and node.op_type == "QLinearConv" and 8 <= len(node.inputs) <= 9:
            # a QOperator file's first layer: QuantizeLinear -> QLinearConv
            quantize = entry_quantize(node.inputs[0], node, node.inputs[1], node.inputs[2])
            if quantize is not None:
                replaced[id(node)] = make_node(node, node.name, "QLinearConv", FUSED_DOMAIN,
                                               [quantize.inputs[0], *node.inputs[1:]], list(node.outputs),
                                               {**node.attrs, "quantize_input": 1})
                removed.add(id(quantize))
            continue
        if node.op_type in _PASS_THROUGH:
            x = dq(node.inputs[0]) if node.inputs else None
            if x is None or not x[2] or (node.op_type == "MaxPool" and len(node.outputs) > 1 and node.outputs[1]):
                continue
            after = q_after(node.outputs[0], allow_relu=False)
            if after is None or id(after[0]) in removed:
                continue
            q, _, scale, zp = after
            if not (_same_param(constants, x[1], scale) and _same_param(constants, x[2], zp)):
                continue
            replaced[id(node)] = make_node(node, node.name, node.op_type, node.domain, [x[0], *node.inputs[1:]],
                                           [q.outputs[0]], dict(node.attrs))
            removed.add(id(q))
            continue
        if node.op_type not in ("Conv", "Gemm", "MatMul") or len(node.inputs) < 2:
            continue
        x, w = dq(node.inputs[0]), dq(node.inputs[1])
        if x is None or w is None or not x[2] or x[0] in constants or w[0] not in constants:
            continue
        if constants[x[1]].size != 1 or constants[x[2]].size != 1:
            continue
        weight, w_scale = constants[w[0]], constants[w[1]]
        if weight.dtype not in (np.int8, np.uint8) or weight.ndim < 2:
            continue
        # per-channel weights must be quantized along the output channel
        out_axis = 0 if node.op_type == "Conv" or (node.op_type == "Gemm" and node.attrs.get("transB", 0)) else 1
        if w_scale.size > 1:
            axis = w[3].attrs.get("axis", 1)
            if axis % weight.ndim != out_axis or node.op_type == "MatMul" and weight.ndim != 2:
                continue
        bias_name = node.inputs[2] if len(node.inputs) > 2 else ""
        bias = None
        if bias_name:
            bias = dq(bias_name)
            if bias is None or bias[0] not in constants or constants[bias[0]].dtype != np.int32:
                continue
            if bias[2] and np.any(constants[bias[2]]):
                continue
            expected = (constants[x[1]].astype(np.float64) * w_scale.astype(np.float64)).reshape(-1)
            got = constants[bias[1]].astype(np.float64).reshape(-1)
            if got.size not in (1, expected.size) or not np.allclose(got, expected, rtol=1e-5, atol=0):
                continue
        if node.op_type == "Gemm":
            if node.attrs.get("transA", 0) or weight.ndim != 2:
                continue
            if bias is not None and (float(node.attrs.get("beta", 1.0)) != 1.0 or constants[bias[0]].ndim > 1):
                continue
        if node.op_type == "MatMul" and weight.ndim != 2:
            continue
        after = q_after(node.outputs[0], allow_relu=True)
        w_zp = w[2]
        if not w_zp:  # the integer ops take the weights' zero point as an input
            w_zp = f"{w[0]}::zero_point"
            if w_zp not in constants:
                constants[w_zp] = np.zeros(w_scale.shape, weight.dtype)
        if after is None:
            if node.op_type != "Gemm":
                continue
            inputs = [x[0], x[1], x[2], w[0], w[1], w_zp, bias[0] if bias else ""]
            outputs = [node.outputs[0]]
        else:
            q, relu, y_scale, y_zp = after
            if q is None or id(q) in removed:
                continue
            outputs = [q.outputs[0]]
            if node.op_type == "Gemm":
                inputs = [x[0], x[1], x[2], w[0], w[1], w_zp, bias[0] if bias else "", y_scale, y_zp]
            elif node.op_type == "Conv":
                inputs = [x[0], x[1], x[2], w[0], w[1], w_zp, y_scale, y_zp] + ([bias[0]] if bias else [])
            else:
                inputs = [x[0], x[1], x[2], w[0], w[1], w_zp, y_scale, y_zp]
            removed.add(id(q))
            if relu is not None:
                removed.add(id(relu))
        if node.op_type == "Conv":
            op_type, domain = "QLinearConv", ""
            attrs = {k: v for k, v in node.attrs.items() if k in ("auto_pad", "dilations", "group", "kernel_shape",
                                                                   "pads", "strides")}
            quantize = entry_quantize(x[0], x[3], x[1], x[2]) if private and x[3].outputs[0] not in graph_outputs \
                and [id(n) for n in readers.get(x[3].outputs[0], [])] == [id(node)] else None
            if quantize is not None:
                inputs[0], domain, attrs["quantize_input"] = quantize.inputs[0], FUSED_DOMAIN, 1
                removed.add(id(quantize))
        elif node.op_type == "MatMul":
            op_type, domain, attrs = "QLinearMatMul", "", {}
        else:
            op_type, domain = "QGemm", "com.microsoft"
            attrs = {k: v for k, v in node.attrs.items() if k in ("alpha", "transB")}
        replaced[id(node)] = make_node(node, node.name, op_type, domain, inputs, outputs, attrs)
    result = [replaced.get(id(node), node) for node in nodes if id(node) not in removed]
    # the DequantizeLinear nodes the fused ops no longer need (so a MaxPool after a QLinearConv is its only
    # reader, and fuses)
    while True:
        read = {name for node in result for name in node.inputs} | graph_outputs
        kept = [node for node in result if node.op_type != "DequantizeLinear" or node.outputs[0] in read]
        if len(kept) == len(result):
            return fuse_lookups(result, constants, graph_outputs, make_node) if private else result
        result = kept


#: the elementwise ops a lookup table may stand for: float32 arithmetic where each result is correctly rounded
#: operations on that element alone (no exp or tanh, whose vector and scalar paths may differ in the last
#: place), so a table computed on the codes holds exactly what the ops compute on any tensor
_TABLE_UNARY = {"BatchNormalization", "Relu", "LeakyRelu", "Clip", "HardSigmoid", "HardSwish"}
_TABLE_BINARY = {"Add", "Sub", "Mul"}
#: a per-channel table is computed on channels x 256 codes (float32 intermediates): wider layers keep their ops
_TABLE_CHANNELS = 4096
#: the output zero point's input of the ops whose codes a table may read
_ZERO_POINT_INPUT = {"QLinearConv": 7, "QGemm": 8, "QLinearMatMul": 7, "QuantizeLinear": 2}


def _table_kernel(node, opset: int, consts: list[np.ndarray | None]) -> Op:
    cls = resolve(node.op_type, opset, "")
    if cls is None:
        raise ValueError(f"no kernel for {node.op_type}")
    return cls(NodeSpec(op_type=node.op_type, name=node.name, inputs=list(node.inputs), outputs=list(node.outputs),
                        attrs=dict(node.attrs), opset=opset, consts=consts))


def _chain_table(starts: list, ops: list, quantize, constants: dict[str, np.ndarray], channels: int
                 ) -> np.ndarray | None:
    """The table of ``starts`` (one or two DequantizeLinear) -> ``ops`` -> ``quantize`` (None: the ops' float32
    values), computed by the kernels the unfused plan runs, on every code (per channel when ``channels``), in
    QLinearLookup's layout; None when a kernel refuses the nodes (the unfused plan then reports it, naming the
    file)."""
    def consts(node) -> list[np.ndarray | None]:
        return [constants.get(name) if name else None for name in node.inputs]

    codes = [np.arange(256, dtype=np.uint8).view(constants[dq.inputs[2]].dtype) for dq in starts]
    if len(starts) == 2:  # every pair: a down the rows, b along them
        values = [codes[0].reshape(256, 1), codes[1].reshape(1, 256)]
    else:
        values = [np.tile(codes[0], (1, channels, 1)) if channels else codes[0]]
    try:
        with np.errstate(all="ignore"):
            values = [DequantizeLinear(NodeSpec(op_type=dq.op_type, name=dq.name, inputs=list(dq.inputs),
                                                outputs=list(dq.outputs), attrs=dict(dq.attrs), opset=MAX_OPSET,
                                                consts=consts(dq))).run(v, *consts(dq)[1:])
                      for dq, v in zip(starts, values, strict=True)]
            for node in ops:
                # Clip's bounds are attributes before opset 11 and inputs from it; the others read the same at
                # every opset the graph's checks let through (BatchNormalization only in inference, see
                # fuse_lookups)
                opset = 1 if node.op_type == "Clip" and {"min", "max"} & set(node.attrs) else MAX_OPSET
                kernel = _table_kernel(node, opset, consts(node))
                values = [kernel.run(*values, *consts(node)[len(values):])]
            q = quantize
            table = values[0] if q is None else QuantizeLinear(NodeSpec(
                op_type=q.op_type, name=q.name, inputs=list(q.inputs), outputs=list(q.outputs), attrs=dict(q.attrs),
                opset=MAX_OPSET, consts=consts(q))).run(values[0], *consts(q)[1:])
    except (ModelError, ArithmeticError, TypeError, ValueError):
        return None
    wanted = (65536,) if len(starts) == 2 else (channels, 256) if channels else (256,)
    typed = table.dtype == F32 if quantize is None else table.dtype.itemsize == 1
    if not isinstance(table, np.ndarray) or table.size != math.prod(wanted) or not typed:
        return None
    return np.ascontiguousarray(table.reshape(wanted))


def fuse_lookups(nodes: list, constants: dict[str, np.ndarray], graph_outputs: set[str], make_node) -> list:
    """``DequantizeLinear -> elementwise float ops -> QuantizeLinear`` (per-tensor 8-bit parameters, each value
    read only by the next node) rewritten as one QLinearLookup (``FUSED_DOMAIN``) through a table computed here
    by the ops' own kernels: unary chains (BatchNormalization in inference with constant statistics, Relu,
    LeakyRelu, Clip, HardSigmoid, HardSwish) over 256 codes, or over 256 codes per channel with a
    BatchNormalization (only when the codes come from a QLinearConv or QGemm whose constant weights give the
    channel count); ``DequantizeLinear x2 -> Add/Sub/Mul -> unary ops -> QuantizeLinear`` (a residual sum) over
    all 65536 pairs. onnxruntime runs these as QLinearAdd or node by node; the table gives the unfused plan's
    values bit for bit, in one pass instead of one per node. A lookup whose codes come only from a QLinearConv
    is then done by that convolution on its requantized sums (``FUSED_DOMAIN`` QLinearConv, the table as input
    9). A chain whose last op's value is read as float (no QuantizeLinear after it: a model's tail of
    DequantizeLinear -> BatchNormalization -> Relu -> GlobalAveragePool) becomes a lookup in a table of those
    float32 values. Arguments as ``fuse_qdq``'s (the fast plan's private rewrite)."""
    producer, readers = producers_and_readers(nodes)

    def single_reader(name: str, node) -> bool:
        users = readers.get(name, [])
        return name not in graph_outputs and len(users) == 1 and users[0] is node

    def per_tensor(scale_name: str, zp_name: str) -> bool:
        scale, zp = constants.get(scale_name), constants.get(zp_name)
        return (scale is not None and zp is not None and scale.size == 1 and zp.size == 1 and scale.dtype == F32
                and zp.dtype in (np.uint8, np.int8))

    def code_type(name: str) -> np.dtype | None:
        """The type of the codes ``name`` when its producer's constant zero point says it."""
        node = producer.get(name)
        index = _ZERO_POINT_INPUT.get(node.op_type) if node is not None else None
        if index is None or len(node.inputs) <= index or node.outputs[0] != name:
            return None
        zp = constants.get(node.inputs[index])
        return None if zp is None else zp.dtype

    def start(name: str, reader):
        """The DequantizeLinear producing ``name``, read only by ``reader``, with per-tensor parameters, whose
        codes are known to be of its zero point's type (the table is indexed by their bytes)."""
        node = producer.get(name)
        if (node is None or node.op_type != "DequantizeLinear" or not is_default_domain(node) or len(node.inputs) != 3
                or set(node.attrs) - {"axis"} or not single_reader(name, reader)
                or not per_tensor(node.inputs[1], node.inputs[2])
                or code_type(node.inputs[0]) != constants[node.inputs[2]].dtype):
            return None
        return node

    def constant(name: str) -> bool:
        """Whether ``name`` is a constant, or a DequantizeLinear of constants (a QDQ model's BatchNormalization
        scale), whose value is then put in ``constants`` now, as folding the node later does."""
        node = producer.get(name)
        if name in constants or node is None:
            return name in constants
        if (node.op_type != "DequantizeLinear" or not is_default_domain(node) or len(node.outputs) != 1
                or not all(i in constants for i in node.inputs if i)):
            return False
        values = [constants.get(i) if i else None for i in node.inputs]
        try:
            with np.errstate(all="ignore"):
                constants[name] = DequantizeLinear(NodeSpec(
                    op_type=node.op_type, name=node.name, inputs=list(node.inputs), outputs=list(node.outputs),
                    attrs=dict(node.attrs), opset=MAX_OPSET, consts=values)).run(*values)
        except (ModelError, ArithmeticError, TypeError, ValueError):
            return False
        return True

    def unary(node) -> int | None:
        """The channels of an op the table may take in (0: the same for every channel), or None."""
        if node.op_type not in _TABLE_UNARY or len(node.outputs) != 1 or not node.inputs or not node.inputs[0] \
                or not all(constant(name) for name in node.inputs[1:] if name):
            return None
        if node.op_type != "BatchNormalization":
            return 0
        params = [constants.get(name) for name in node.inputs[1:5]] if len(node.inputs) == 5 else []
        if len(params) != 4 or any(p is None or p.ndim != 1 for p in params) or node.attrs.get("training_mode", 0) \
                or len({p.size for p in params}) != 1 or not 0 < params[0].size <= _TABLE_CHANNELS:
            return None
        return params[0].size

    def channels_of(codes: str) -> int:
        """The channel count (axis 1) of the integer op making ``codes``, from its constant weights, or 0."""
        node = producer.get(codes)
        if node is None or node.op_type not in ("QLinearConv", "QGemm") or len(node.inputs) < 4:
            return 0
        weight = constants.get(node.inputs[3])
        if weight is None or weight.ndim < 2:
            return 0
        if node.op_type == "QLinearConv":
            return weight.shape[0]
        return weight.shape[0] if node.attrs.get("transB", 0) else weight.shape[1]

    def read_as_float(node) -> bool:
        """A table op none of whose readers could take its value into a table of their own."""
        if node.op_type not in _TABLE_UNARY | _TABLE_BINARY or not is_default_domain(node) or len(node.outputs) != 1:
            return False
        users = readers.get(node.outputs[0], [])
        return all(user.op_type not in _TABLE_UNARY | _TABLE_BINARY | {"QuantizeLinear", "QLinearConv"}
                   for user in users)

    replaced: dict[int, list] = {}
    removed: set[int] = set()
    for end in nodes:
        if (end.op_type == "QuantizeLinear" and is_default_domain(end) and len(end.inputs) == 3
                and not set(end.attrs) - {"axis", "saturate"}):
            q = end
        elif read_as_float(end):
            q = None
        elif end.op_type == "QLinearConv" and end.domain == FUSED_DOMAIN and end.attrs.get("quantize_input") == 1:
            # fuse_qdq gave the chain's QuantizeLinear to the convolution reading it: taken back, the codes
            # come from the table
            q = make_node(end, end.name, "QuantizeLinear", "", end.inputs[:3], [f"{end.inputs[0]}::codes"], {})
        else:
            continue
        if q is not None and not per_tensor(q.inputs[1], q.inputs[2]):
            continue
        # from the value the QuantizeLinear reads, or from the float end itself (whose readers may be any)
        ops, starts, channels = [], [], 0
        name, reader = (q.inputs[0], end) if q is not None else (end.outputs[0], None)
        while not starts:
            node = producer.get(name)
            if node is None or reader is not None and not single_reader(name, reader) or not is_default_domain(node) \
                    or id(node) in removed:
                break
            if node.op_type == "DequantizeLinear":
                starts = [n for n in [start(name, reader)] if n is not None]
                break
            if node.op_type in _TABLE_BINARY and len(node.inputs) == 2 and not node.attrs and not channels \
                    and node.inputs[0] != node.inputs[1] and len(node.outputs) == 1:
                pair = [start(node.inputs[0], node), start(node.inputs[1], node)]
                starts = pair if all(pair) else []
                ops.append(node)
                break
            wide = unary(node)
            if wide is None or wide and channels and wide != channels:
                break
            channels = channels or wide
            ops.append(node)
            name, reader = node.inputs[0], node
        if not starts or channels and channels_of(starts[0].inputs[0]) != channels:
            continue
        ops.reverse()
        table = _chain_table(starts, ops, q, constants, channels)
        if table is None:
            continue
        last = q if q is not None else end
        table_name = f"{last.outputs[0]}::lookup"
        constants[table_name] = table
        replaced[id(end)] = [make_node(last, last.name, "QLinearLookup", FUSED_DOMAIN,
                                       [dq.inputs[0] for dq in starts] + [table_name], [last.outputs[0]], {})]
        if q is not None and end is not q:
            attrs = {k: v for k, v in end.attrs.items() if k != "quantize_input"}
            replaced[id(end)].append(make_node(end, end.name, end.op_type, end.domain,
                                               [q.outputs[0], *end.inputs[1:]], list(end.outputs), attrs))
        removed.update(id(n) for n in (*starts, *ops) if n is not end)
    if not replaced:
        return nodes
    result = [new for node in nodes if id(node) not in removed for new in replaced.get(id(node), [node])]
    return _lookups_into_convolutions(result, graph_outputs, make_node)


def _lookups_into_convolutions(nodes: list, graph_outputs: set[str], make_node) -> list:
    """A one-input QLinearLookup whose codes are read only by it, from a QLinearConv: the convolution looks its
    requantized values up itself (``FUSED_DOMAIN`` QLinearConv with the table as input 9)."""
    producer, readers = producers_and_readers(nodes)
    replaced: dict[int, object] = {}
    removed: set[int] = set()
    for lookup in nodes:
        if lookup.op_type != "QLinearLookup" or lookup.domain != FUSED_DOMAIN or len(lookup.inputs) != 2:
            continue
        codes = lookup.inputs[0]
        conv = producer.get(codes)
        if (conv is None or conv.op_type != "QLinearConv" or conv.domain not in ("", "ai.onnx", FUSED_DOMAIN)
                or not 8 <= len(conv.inputs) <= 9 or codes in graph_outputs or len(readers.get(codes, [])) != 1):
            continue
        inputs = list(conv.inputs) + [""] * (9 - len(conv.inputs)) + [lookup.inputs[1]]
        replaced[id(conv)] = make_node(conv, conv.name, "QLinearConv", FUSED_DOMAIN, inputs, [lookup.outputs[0]],
                                       dict(conv.attrs))
        removed.add(id(lookup))
    return [replaced.get(id(node), node) for node in nodes if id(node) not in removed]
