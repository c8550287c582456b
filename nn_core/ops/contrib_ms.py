"""The ``com.microsoft`` quantized operators onnxruntime's quantizer writes into QOperator models.

Semantics follow onnxruntime's contrib operator documentation and its CPU kernels: integer products exact (see
quantized.py), requantization in float32 rounded half to even, elementwise ops and activations through a float32
dequantize -> compute -> quantize, tables of 256 entries where onnxruntime uses lookup tables. Attributes of this
domain are not covered by ONNX schemas, so every kernel checks its own at load time.
"""

from __future__ import annotations

import math

import numpy as np

from .quantized import (
    _BOUNDS,
    _F32_EXACT,
    _ZERO,
    F32,
    FUSED_DOMAIN,
    PreparedB,
    _255,
    _check_matmul,
    _clip,
    _Requantizer,
    _value_bound,
    centred_f32,
    dynamic_qparams,
    exact_matmul,
)
from .registry import NodeSpec, Op, register
from .windows import int_attr

MS_DOMAIN = "com.microsoft"


def _float_attr(op: Op, name: str, default: float) -> float:
    raw = op.attr(name, default)
    if isinstance(raw, bool) or not isinstance(raw, (int, float, np.integer, np.floating)) or not math.isfinite(raw):
        raise op.fail(f"attribute {name} {raw!r} must be a finite number")
    return float(raw)


def _scalar(op: Op, value: np.ndarray | None, what: str, default=0):
    if value is None:
        return default
    if value.size != 1:
        raise op.fail(f"{what} of shape {value.shape} must be a single value")
    return value.reshape(-1)[0]


def _scale(op: Op, value: np.ndarray | None, what: str) -> np.float32:
    if value is None:
        raise op.fail(f"{what} is required")
    scale = F32(_scalar(op, value, what))
    if not math.isfinite(scale) or scale <= 0:
        raise op.fail(f"{what} {scale} must be a positive finite number")
    return scale


def _quant_dtype(op: Op, x: np.ndarray) -> np.dtype:
    if x.dtype not in (np.uint8, np.int8):
        raise op.fail(f"input must be uint8 or int8, got {x.dtype}")
    return x.dtype


def _dequantize(x: np.ndarray, scale: np.float32, zero_point) -> np.ndarray:
    centred = np.subtract(x, F32(zero_point), dtype=F32) if zero_point else x.astype(F32)
    centred *= scale
    return centred


def _quantize(values: np.ndarray, scale: np.float32, zero_point, dtype: np.dtype) -> np.ndarray:
    """Float32 -> 8 bits as onnxruntime's MlasQuantizeLinear: divide, round half to even, add the zero point,
    saturate (in place on values)."""
    np.divide(values, scale, out=values)
    return _round_saturate(values, zero_point, dtype)


def _round_saturate(values: np.ndarray, zero_point, dtype: np.dtype) -> np.ndarray:
    """Already-scaled float32 -> 8 bits: round half to even, add the zero point, saturate (in place)."""
    np.rint(values, out=values)
    if zero_point:
        values += F32(zero_point)
    low, high = _BOUNDS[np.dtype(dtype)]
    _clip(values, low, high, out=values)
    return values.astype(dtype)


# ---------------------------------------------------------------- QGemm


@register("QGemm", 1, domain=MS_DOMAIN)
class QGemm(Op):
    """A, a_scale, a_zero_point, B, b_scale, b_zero_point, C (int32 bias), y_scale, y_zero_point. With
    y_zero_point the output is requantized with ``alpha * a_scale * b_scale / y_scale``; without it the output
    is float, ``acc * alpha * a_scale * b_scale``."""

    def __init__(self, node: NodeSpec):
        super().__init__(node)
        self.alpha = _float_attr(self, "alpha", 1.0)
        self.trans_a = int_attr(self, "transA", 0, choices=(0, 1))
        self.trans_b = int_attr(self, "transB", 0, choices=(0, 1))
        b, b_zp, c = self.const(3), self.const(5), self.const(6)
        self.b = None
        if b is not None:
            if b.ndim != 2 or b.dtype not in (np.uint8, np.int8):
                raise self.fail(f"B must be a 2-D uint8/int8 matrix, got {b.dtype} {list(b.shape)}")
            n = b.shape[0] if self.trans_b else b.shape[1]
            if b_zp is not None and b_zp.size not in (1, n):
                raise self.fail(f"b_zero_point of shape {b_zp.shape} must have 1 or {n} values")
            if b_zp is not None or len(node.inputs) <= 5 or not node.inputs[5]:
                self.b = PreparedB(b.T if self.trans_b else b, b_zp)
        if c is not None and c.dtype != np.int32:
            raise self.fail(f"C must be int32, got {c.dtype}")
        self.c = None if c is None else c.astype(F32) if np.abs(c).max(initial=0) < _F32_EXACT else c.astype(
            np.float64)
        self.c_bound = 0.0 if c is None else float(np.abs(c.astype(np.float64)).max(initial=0.0))
        self.requant: _Requantizer | None = None
        consts = [self.const(i) for i in range(9)]
        if self.b is not None and all(consts[i] is not None for i in (1, 4, 7, 8)) and consts[1].size == 1:
            self.requant = _Requantizer(self._multiplier(consts[1], consts[4], consts[7]), consts[8],
                                        consts[8].dtype, -1, 2)
        # everything but A known at load time: the lean path (one check per input shape, then a conversion,
        # the matmul with its bias, and the requantization or the float scaling)
        self.lean = None
        a_zp_known = consts[2] is not None or len(node.inputs) <= 2 or not node.inputs[2]
        c_known = c is not None or len(node.inputs) <= 6 or not node.inputs[6]
        y_known = len(node.inputs) <= 8 or not node.inputs[8] or self.requant is not None
        if (self.b is not None and not self.trans_a and a_zp_known and c_known and y_known
                and consts[1] is not None and consts[1].size == 1 and consts[4] is not None):
            a_zp = consts[2]
            if a_zp is not None and a_zp.size != 1:
                raise self.fail(f"a_zero_point of shape {a_zp.shape} must be a single value")
            zp = F32(0 if a_zp is None else a_zp.reshape(-1)[0])
            scale = None if self.requant is not None else self._multiplier(consts[1], consts[4], consts[7] if (
                len(node.inputs) > 7 and node.inputs[7]) else None)
            bounds = {np.dtype(t): _value_bound(np.dtype(t), a_zp) for t in (np.uint8, np.int8)}
            self.lean = (zp, bounds, scale if scale is None or scale.size > 1 else scale[0])
        self.checked: set[tuple] = set()

    def _multiplier(self, a_scale, b_scale, y_scale) -> np.ndarray:
        scale = F32(self.alpha) * F32(_scalar(self, a_scale, "a_scale")) * b_scale.astype(F32).reshape(-1)
        if y_scale is not None:
            scale = scale / F32(_scalar(self, y_scale, "y_scale"))
        return scale.astype(F32)

    def _check_a(self, a: np.ndarray, b_centred: np.ndarray) -> None:
        if a.ndim != 2:
            raise self.fail(f"A must be 2-D, got shape {list(a.shape)}")
        if a.dtype not in (np.uint8, np.int8):
            raise self.fail(f"A must be uint8 or int8, got {a.dtype}")
        _check_matmul(self, a.T if self.trans_a else a, b_centred)

    def run(self, a, a_scale, a_zero_point, b, b_scale, b_zero_point, c=None, y_scale=None, y_zero_point=None):
        if self.lean is not None:
            zp, bounds, scale = self.lean
            key = (a.shape, a.dtype)
            if key not in self.checked:
                self._check_a(a, self.b.centred)
                self.checked.add(key)
            a_centred = np.subtract(a, zp, dtype=F32) if zp else a.astype(F32)
            acc = self.b.product(a_centred, bounds[a.dtype], self.c, self.c_bound)
            if self.requant is not None:
                return self.requant(acc)
            if acc.dtype != F32:
                acc = acc.astype(F32)
            acc *= scale
            return acc
        b_centred = self.b.centred if self.b is not None else centred_f32(b.T if self.trans_b else b, b_zero_point,
                                                                          False)
        self._check_a(a, b_centred)
        a = a.T if self.trans_a else a
        a_zp = _scalar(self, a_zero_point, "a_zero_point")
        a_centred = centred_f32(a, None if a_zero_point is None else np.asarray(a_zp), True)
        a_bound = _value_bound(a.dtype, a_zp)
        if self.b is not None and (c is None or self.c is not None):
            acc = self.b.product(a_centred, a_bound, self.c, self.c_bound)
        elif self.b is not None:  # a bias known only when run
            acc = self.b.product(a_centred, a_bound).astype(np.float64) + c.astype(np.float64)
        else:
            acc = exact_matmul(a_centred, b_centred, a_bound).astype(np.float64)
            if c is not None:
                acc = acc + c.astype(np.float64)
        if self.requant is not None:
            return self.requant(acc)
        multiplier = self._multiplier(a_scale, b_scale, y_scale)
        if y_zero_point is not None:
            return _Requantizer(multiplier, y_zero_point, y_zero_point.dtype, -1, 2)(acc)
        out = acc.astype(F32)
        out *= multiplier if multiplier.size > 1 else multiplier[0]
        return out


# ---------------------------------------------------------------- float-output integer matmuls


@register("MatMulIntegerToFloat", 1, domain=MS_DOMAIN)
class MatMulIntegerToFloat(Op):
    """A, B, a_scale, b_scale, a_zero_point, b_zero_point, bias -> (A - a_zp)(B - b_zp) * a_scale * b_scale + bias."""

    def __init__(self, node: NodeSpec):
        super().__init__(node)
        b, b_zp = self.const(1), self.const(5)
        self.b = None
        if b is not None and (b_zp is not None or len(node.inputs) <= 5 or not node.inputs[5]):
            if b.dtype not in (np.uint8, np.int8) or b.ndim < 1:
                raise self.fail(f"B must be uint8/int8 of rank >= 1, got {b.dtype} {list(b.shape)}")
            self.b = PreparedB(b, b_zp)

    def product(self, a, a_zero_point, b, b_zero_point) -> np.ndarray:
        if a.dtype not in (np.uint8, np.int8):
            raise self.fail(f"A must be uint8 or int8, got {a.dtype}")
        b_centred = self.b.centred if self.b is not None else centred_f32(b, b_zero_point, False)
        _check_matmul(self, a, b_centred)
        a_zp = None if a_zero_point is None else np.asarray(_scalar(self, a_zero_point, "a_zero_point"))
        a_centred = centred_f32(a, a_zp, True)
        if self.b is not None:
            return self.b.product(a_centred, _value_bound(a.dtype, a_zp))
        return exact_matmul(a_centred, b_centred, _value_bound(a.dtype, a_zp))

    @staticmethod
    def to_float(acc: np.ndarray, a_scale: np.float32, b_scale: np.ndarray, bias: np.ndarray | None) -> np.ndarray:
        scale = (a_scale * b_scale.astype(F32).reshape(-1)).astype(F32)
        out = acc.astype(F32)
        out *= scale if scale.size > 1 else scale[0]
        if bias is not None:
            out += bias.astype(F32)
        return out

    def run(self, a, b, a_scale, b_scale, a_zero_point=None, b_zero_point=None, bias=None):
        acc = self.product(a, a_zero_point, b, b_zero_point)
        return self.to_float(acc, F32(_scalar(self, a_scale, "a_scale")), b_scale, bias)


@register("DynamicQuantizeMatMul", 1, domain=MS_DOMAIN)
class DynamicQuantizeMatMul(MatMulIntegerToFloat):
    """A (float), B, b_scale, b_zero_point, bias: A quantized to uint8 like DynamicQuantizeLinear, then an exact
    integer product scaled back to float.

    With B, its zero point, b_scale and the bias constant (the chain ``fuse_dynamic_matmuls`` rewrites, or
    onnxruntime's own fused op) everything but A's quantization parameters is prepared at load time: B
    zero-centred in float32, b_scale and the bias as float32 vectors, the slices of K whose float32 products
    stay exact for each bound on the centred A. Per run: A's min and max (its scale and zero point), then per
    block of rows: the zero-centred quantized block ``clip(rint(a / scale), -zp, 255 - zp)`` (that is q - zp,
    never stored as uint8), its product with B in float32 BLAS, times ``a_scale * b_scale`` (formed in float32),
    plus the bias, and a fused Relu, written into the output — the values of the unfused onnxruntime graph."""

    ROW_BLOCK = 256  # rows quantized and multiplied at a time: the block stays in cache between the passes

    def __init__(self, node: NodeSpec):
        # inputs: A, B, b_scale, b_zero_point, bias -> the parent's B at 1 and b_zero_point at 3
        super().__init__(node)
        b, b_zp = self.const(1), self.const(3)
        self.b = None
        if b is not None and (b_zp is not None or len(node.inputs) <= 3 or not node.inputs[3]):
            if b.dtype not in (np.uint8, np.int8) or b.ndim < 1:
                raise self.fail(f"B must be uint8/int8 of rank >= 1, got {b.dtype} {list(b.shape)}")
            if b_zp is not None and b_zp.size not in (1, b.shape[-1]):
                raise self.fail(f"b_zero_point of shape {b_zp.shape} must have 1 or {b.shape[-1]} values")
            self.b = PreparedB(b, b_zp)
        self.relu = False
        self.relu_input = False
        self.lean = None
        self.one_slice = False
        b_scale, bias = self.const(2), self.const(4)
        bias_known = len(node.inputs) <= 4 or not node.inputs[4] or bias is not None
        if self.b is not None and self.b.centred.ndim == 2 and b_scale is not None and bias_known:
            n = self.b.centred.shape[1]
            if b_scale.size in (1, n) and b_scale.ndim <= 1 and (bias is None or (bias.size in (1, n)
                                                                                  and bias.ndim <= 1)):
                scale = b_scale.astype(F32).reshape(-1)
                self.lean = (scale[0] if scale.size == 1 else scale,
                             None if bias is None else bias.astype(F32).reshape(-1), n)
                # the K slices for each zero point of A: |q - zp| <= max(zp, 255 - zp)
                self.plans: dict[float, list[slice] | None] = {}
                slices = self.b.slices(255.0)  # whatever the zero point: one float32 product is exact
                self.one_slice = slices is not None and len(slices) == 1
        self.checked: set[tuple] = set()

    def fuse_activation(self, kind: str, params: dict[str, float]) -> bool:
        if self.lean is None or kind != "relu" or self.relu:
            return False
        self.relu = True
        return True

    def run(self, a, b, b_scale, b_zero_point=None, bias=None):
        if a.dtype != F32:
            raise self.fail(f"A must be float32, got {a.dtype}")
        if self.lean is not None:
            return self._lean(a)
        from .quantized import DynamicQuantizeLinear

        a_q, a_scale, a_zp = DynamicQuantizeLinear.run(self, a)
        acc = self.product(a_q, a_zp, b, b_zero_point)
        out = self.to_float(acc, F32(a_scale), b_scale, bias)
        return np.maximum(out, 0, out=out) if self.relu else out

    def _lean(self, a: np.ndarray) -> np.ndarray:
        b_scale, bias, n = self.lean
        shape = a.shape
        if shape not in self.checked:
            _check_matmul(self, a, self.b.centred)
            self.checked.add(shape)
        a_scale, zp = dynamic_qparams(a, self.relu_input)
        scale = a_scale * b_scale  # float32, as the unfused graph's Mul of the two scales
        rows = a.reshape(-1, shape[-1]) if a.ndim != 2 else a
        count = rows.shape[0]
        if count <= self.ROW_BLOCK and self.one_slice:  # one row block (batch 1): the fewest calls, no lookups
            centred = np.divide(rows, a_scale)
            np.rint(centred, out=centred)
            _clip(centred, -zp, _255 - zp, out=centred)
            out = np.matmul(centred, self.b.centred)
            out *= scale
            if bias is not None:
                out += bias
            if self.relu:
                np.maximum(out, _ZERO, out=out)
            return out.reshape(shape[:-1] + (n,)) if a.ndim != 2 else out
        low, high = -zp, _255 - zp
        bound = float(max(zp, high))
        slices = self.plans.get(bound, False)
        if slices is False:
            slices = self.plans[bound] = self.b.slices(bound)
        weights = self.b.centred
        out = np.empty((count, n), F32)
        block = self.ROW_BLOCK
        for start in range(0, count, block):
            part = rows[start:start + block] if count > block else rows
            target = out[start:start + block] if count > block else out
            centred = np.divide(part, a_scale)
            np.rint(centred, out=centred)
            _clip(centred, low, high, out=centred)
            if slices is not None and len(slices) == 1:
                np.matmul(centred, weights, out=target)
            else:  # exact integers from float32 slices summed in float64, rounded once to float32 (the Cast)
                target[...] = self.b.product(centred, bound)
            target *= scale
            if bias is not None:
                target += bias
            if self.relu:
                np.maximum(target, _ZERO, out=target)
        return out.reshape(shape[:-1] + (n,)) if a.ndim != 2 else out


@register("DynamicQuantizeMatMul", 1, domain=FUSED_DOMAIN)
class DynamicQuantizeReluMatMul(DynamicQuantizeMatMul):
    """com.microsoft's DynamicQuantizeMatMul with attribute ``relu_input``: A is quantized as relu(A) (the Relu
    before a quantize_dynamic chain absorbed by ``fuse_dynamic_matmuls``: its minimum is taken as 0, one
    reduction and the Relu pass fewer)."""

    def __init__(self, node: NodeSpec):
        super().__init__(node)
        self.relu_input = bool(int_attr(self, "relu_input", 0, choices=(0, 1)))

    def run(self, a, b, b_scale, b_zero_point=None, bias=None):
        if self.lean is None and self.relu_input and a.dtype == F32:
            a = np.maximum(a, _ZERO)
        return super().run(a, b, b_scale, b_zero_point, bias)


# ---------------------------------------------------------------- elementwise


class _Binary(Op):
    """A, A_scale, A_zero_point, B, B_scale, B_zero_point, C_scale, C_zero_point (zero points optional)."""

    def run(self, a, a_scale, a_zero_point, b, b_scale, b_zero_point, c_scale, c_zero_point=None):
        dtype = _quant_dtype(self, a)
        if b.dtype != dtype:
            raise self.fail(f"A is {a.dtype} but B is {b.dtype}")
        try:
            shape = np.broadcast_shapes(a.shape, b.shape)
        except ValueError:
            raise self.fail(f"shapes {list(a.shape)} and {list(b.shape)} do not broadcast") from None
        self.check_size(shape, F32)
        values = self.combine(a, _scale(self, a_scale, "A_scale"), _scalar(self, a_zero_point, "A_zero_point"),
                              b, _scale(self, b_scale, "B_scale"), _scalar(self, b_zero_point, "B_zero_point"),
                              _scale(self, c_scale, "C_scale"))
        return _round_saturate(values, _scalar(self, c_zero_point, "C_zero_point"), dtype)


@register("QLinearAdd", 1, domain=MS_DOMAIN)
class QLinearAdd(_Binary):
    @staticmethod
    def combine(a, sa, za, b, sb, zb, sc):
        return (_dequantize(a, sa, za) + _dequantize(b, sb, zb)) / sc


@register("QLinearMul", 1, domain=MS_DOMAIN)
class QLinearMul(_Binary):
    @staticmethod
    def combine(a, sa, za, b, sb, zb, sc):
        product = np.subtract(a, F32(za), dtype=F32) * np.subtract(b, F32(zb), dtype=F32)
        product *= F32(sa * sb / sc)
        return product


class _Table(Op):
    """X, X_scale, X_zero_point, Y_scale, Y_zero_point through a table of 256 entries: each possible input
    dequantized, the function applied in float32, the result quantized (as onnxruntime's lookup tables)."""

    def __init__(self, node: NodeSpec):
        super().__init__(node)
        self.tables: dict[tuple, np.ndarray] = {}

    def function(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def run(self, x, x_scale, x_zero_point=None, y_scale=None, y_zero_point=None):
        dtype = _quant_dtype(self, x)
        key = (dtype.str, float(_scale(self, x_scale, "X_scale")), int(_scalar(self, x_zero_point, "X_zero_point")),
               float(_scale(self, y_scale, "Y_scale")), int(_scalar(self, y_zero_point, "Y_zero_point")))
        table = self.tables.get(key)
        if table is None:
            info = np.iinfo(dtype)
            codes = np.arange(info.min, info.max + 1).astype(dtype)
            values = self.function(_dequantize(codes, F32(key[1]), key[2])).astype(F32)
            table = _quantize(values, F32(key[3]), key[4], dtype)
            if dtype == np.int8:  # index by the byte's unsigned value
                table = np.roll(table, -128)
            self.tables[key] = table
        return table[x.view(np.uint8)]


@register("QLinearLeakyRelu", 1, domain=MS_DOMAIN)
class QLinearLeakyRelu(_Table):
    def __init__(self, node: NodeSpec):
        super().__init__(node)
        self.alpha = F32(_float_attr(self, "alpha", 0.01))

    def function(self, x):
        return np.where(x >= 0, x, x * self.alpha)


@register("QLinearSigmoid", 1, domain=MS_DOMAIN)
class QLinearSigmoid(_Table):
    def function(self, x):
        return (F32(1) / (F32(1) + np.exp(-x))).astype(F32)


@register("QLinearConcat", 1, domain=MS_DOMAIN)
class QLinearConcat(Op):
    """Y_scale, Y_zero_point, then (X, X_scale, X_zero_point) per input: each input requantized to the output's
    scale and zero point (copied when they are the same) and concatenated along ``axis``."""

    def __init__(self, node: NodeSpec):
        super().__init__(node)
        if self.attr("axis") is None:
            raise self.fail("attribute axis is required")
        self.axis = int_attr(self, "axis", 0)
        if len(node.inputs) < 5 or (len(node.inputs) - 2) % 3:
            raise self.fail(f"takes Y_scale, Y_zero_point and triples (X, X_scale, X_zero_point); got "
                            f"{len(node.inputs)} inputs")

    def run(self, y_scale, y_zero_point, *triples):
        y_s = _scale(self, y_scale, "Y_scale")
        y_zp = _scalar(self, y_zero_point, "Y_zero_point")
        dtype = y_zero_point.dtype
        parts = []
        for i in range(0, len(triples), 3):
            x, s, zp = triples[i:i + 3]
            if x.dtype != dtype:
                raise self.fail(f"input {i // 3} is {x.dtype}, the output zero point {dtype}")
            x_s, x_zp = _scale(self, s, "X_scale"), _scalar(self, zp, "X_zero_point")
            if x_s == y_s and x_zp == y_zp:
                parts.append(x)
            else:
                parts.append(_quantize(_dequantize(x, x_s, x_zp), y_s, y_zp, dtype))
        rank = parts[0].ndim
        if not -rank <= self.axis < rank:
            raise self.fail(f"axis {self.axis} is out of range for rank {rank}")
        axis = self.axis % rank
        for part in parts[1:]:
            if part.ndim != rank or part.shape[:axis] + part.shape[axis + 1:] != \
                    parts[0].shape[:axis] + parts[0].shape[axis + 1:]:
                raise self.fail(f"inputs {[list(p.shape) for p in parts]} differ outside axis {axis}")
        self.check_size((sum(p.shape[axis] for p in parts),) + parts[0].shape[:axis] + parts[0].shape[axis + 1:],
                        dtype)
        return np.concatenate(parts, axis=axis)


# ---------------------------------------------------------------- pooling and softmax


@register("QLinearGlobalAveragePool", 1, domain=MS_DOMAIN)
class QLinearGlobalAveragePool(Op):
    def __init__(self, node: NodeSpec):
        super().__init__(node)
        self.channels_last = int_attr(self, "channels_last", 0, choices=(0, 1))

    def run(self, x, x_scale, x_zero_point, y_scale, y_zero_point):
        dtype = _quant_dtype(self, x)
        if x.ndim < 3:
            raise self.fail(f"input of shape {list(x.shape)} needs a batch, a channel and spatial axes")
        axes = tuple(range(1, x.ndim - 1)) if self.channels_last else tuple(range(2, x.ndim))
        size = math.prod(x.shape[a] for a in axes)
        x_zp = _scalar(self, x_zero_point, "x_zero_point")
        total = x.sum(axis=axes, keepdims=True, dtype=np.int64) - np.int64(x_zp) * size
        multiplier = F32(_scale(self, x_scale, "x_scale") / (_scale(self, y_scale, "y_scale") * F32(size)))
        y_zp = None if y_zero_point is None else np.asarray(_scalar(self, y_zero_point, "y_zero_point"),
                                                            y_zero_point.dtype)
        return _Requantizer(np.array([multiplier]), y_zp, dtype if y_zp is None else y_zp.dtype, 1,
                            total.ndim)(total.astype(np.float64))


@register("QLinearAveragePool", 1, domain=MS_DOMAIN)
class QLinearAveragePool(Op):
    """AveragePool (every attribute of the float op, plus channels_last) on dequantized values, quantized with
    the output's scale and zero point."""

    def __init__(self, node: NodeSpec):
        super().__init__(node)
        from .pool import AveragePool

        self.channels_last = int_attr(self, "channels_last", 0, choices=(0, 1))
        attrs = {k: v for k, v in node.attrs.items() if k != "channels_last"}
        spec = NodeSpec(op_type=node.op_type, name=node.name, domain="", inputs=["x"], outputs=list(node.outputs),
                        attrs=attrs, opset=19, consts=[None], source=node.source, limits=node.limits)
        self.pool = AveragePool(spec)

    def run(self, x, x_scale, x_zero_point, y_scale, y_zero_point=None):
        dtype = _quant_dtype(self, x)
        values = _dequantize(x, _scale(self, x_scale, "x_scale"), _scalar(self, x_zero_point, "x_zero_point"))
        if self.channels_last:
            values = np.ascontiguousarray(np.moveaxis(values, -1, 1))
        pooled = self.pool.run(values)
        if self.channels_last:
            pooled = np.moveaxis(pooled, 1, -1)
        y = _quantize(np.array(pooled, F32), _scale(self, y_scale, "y_scale"),
                      _scalar(self, y_zero_point, "y_zero_point"), dtype)
        return y


@register("QLinearSoftmax", 1, domain=MS_DOMAIN)
class QLinearSoftmax(Op):
    """X, X_scale, X_zero_point, Y_scale, Y_zero_point; attributes axis and opset (the ONNX Softmax semantics it
    follows: below 13 the input is coerced to 2-D at axis). As onnxruntime: exp of each code's distance to the
    row's maximum from a 256-entry float table, the sum, then ``rint(e * floor(1 / Y_scale) / sum) + Y_zp``."""

    def __init__(self, node: NodeSpec):
        super().__init__(node)
        if self.attr("opset") is None:
            raise self.fail("attribute opset is required")
        self.opset = int_attr(self, "opset", 13, minimum=1)
        self.axis = int_attr(self, "axis", -1 if self.opset >= 13 else 1)

    def run(self, x, x_scale, x_zero_point, y_scale, y_zero_point=None):
        dtype = _quant_dtype(self, x)
        if x.ndim == 0:
            raise self.fail("input must have rank >= 1")
        if not -x.ndim <= self.axis < x.ndim:
            raise self.fail(f"axis {self.axis} is out of range for rank {x.ndim}")
        axis = self.axis % x.ndim
        if self.opset < 13:
            rows = x.reshape(math.prod(x.shape[:axis]), -1)
        else:
            rows = np.moveaxis(x, axis, -1)
        reduce_len = rows.shape[-1]
        if x.size == 0:
            return x.copy()
        scale = float(_scale(self, x_scale, "X_scale"))
        # the table as onnxruntime builds it: exp((i - 255 + shift) * scale) in double, stored as float
        shift = max(0.0, math.log(np.finfo(F32).max / reduce_len) - 5) / scale
        codes = np.arange(256, dtype=np.float64)
        table = np.exp((codes - 255 + shift) * scale).astype(F32)
        wide = rows.astype(np.int32)
        offset = 255 - wide.max(axis=-1, keepdims=True)
        if dtype == np.int8:
            offset = 127 - wide.max(axis=-1, keepdims=True) + 128  # int8 values shifted so the max lands on 255
        exps = table[wide + offset]
        total = np.zeros(exps.shape[:-1] + (1,), F32)
        for i in range(reduce_len):  # sequential float32 sums, in onnxruntime's order
            total += exps[..., i:i + 1]
        y_inv = F32(math.floor(1.0 / float(_scale(self, y_scale, "Y_scale"))))
        values = np.rint((exps * y_inv) / total)
        zero_point = _scalar(self, y_zero_point, "Y_zero_point")
        values = values.astype(np.int64) + int(zero_point)
        if dtype == np.uint8:
            values = np.minimum(values, 255).astype(np.uint8)
        else:
            values = np.where(values > 255, 255, values).astype(np.int64).astype(np.int8)
        if self.opset < 13:
            return values.reshape(x.shape)
        return np.ascontiguousarray(np.moveaxis(values, -1, axis))
