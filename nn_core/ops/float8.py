"""Bit-exact conversions between float32 and the narrow float types ONNX defines: bfloat16, the four float8
formats (E4M3FN, E4M3FNUZ, E5M2, E5M2FNUZ), float8 E8M0 and float4 E2M1 — in plain NumPy on the bit patterns.

The arrays carry the dtypes onnx maps these element types to (``onnx.helper.tensor_dtype_to_np_dtype``); this
module only reads and writes their bytes (``view``), so the conversion rules are the ONNX specification's and
not those of whichever library provides the dtype objects:

* float32 -> float8: round to nearest, ties to even. With ``saturate`` (the default) a value past the largest
  finite one, infinities included, becomes that largest value with its sign; without, it becomes infinity
  (E5M2) or NaN (the formats without infinity). NaN stays NaN; the FNUZ formats have no negative zero.
* float32 -> bfloat16: round to nearest even on the upper 16 bits, NaN kept quiet.
* float32 -> E8M0 (a power of two, exponent only): ``round_mode`` up / down / nearest, saturating at 2^127.
* float32 -> float4 E2M1 (2 exponent bits, 1 mantissa bit, bias 1: 0, 0.5, 1, 1.5, 2, 3, 4, 6 and their
  negatives; one code per byte, sign in bit 3): round to nearest, ties to even, always saturating at 6
  (infinities included: the format has neither infinity nor NaN). NaN becomes a zero of the opposite sign, as
  ml_dtypes (onnx's reference) has it.
* narrow -> float32 is exact (a 256- or 16-entry table, or a shift for bfloat16).
"""

from __future__ import annotations

import numpy as np

# name: (exponent bits, mantissa bits, bias, largest finite code, kind) ; kind: "fn" (NaN = S.1111.111, no
# infinity), "fnuz" (NaN = 0x80, no infinity, no -0), "ieee" (infinity S.11111.00, NaN otherwise)
FLOAT8_FORMATS = {
    "float8_e4m3fn": (4, 3, 7, 0x7E, "fn"),
    "float8_e4m3fnuz": (4, 3, 8, 0x7F, "fnuz"),
    "float8_e5m2": (5, 2, 15, 0x7B, "ieee"),
    "float8_e5m2fnuz": (5, 2, 16, 0x7F, "fnuz"),
}
E8M0 = "float8_e8m0fnu"
BFLOAT16 = "bfloat16"
NARROW_FLOATS = frozenset(FLOAT8_FORMATS) | {E8M0, BFLOAT16}
# float4 E2M1 converts here too (from_float / to_float32) but is not in NARROW_FLOATS: Cast and the kernels that
# check that set leave it to its dtype's own conversion, which agrees bit for bit
FLOAT4E2M1 = "float4_e2m1fn"

_TABLES: dict[str, np.ndarray] = {}


def is_narrow_float(dtype: np.dtype) -> bool:
    return np.dtype(dtype).name in NARROW_FLOATS


def _decode_table(name: str) -> np.ndarray:
    """float32 value of each of the 256 codes of a float8 format."""
    table = _TABLES.get(name)
    if table is not None:
        return table
    codes = np.arange(256, dtype=np.int64)
    if name == FLOAT4E2M1:  # the low four bits: S.EE.M
        codes = codes & 0xF
        exponent, mantissa = (codes >> 1) & 3, codes & 1
        magnitude = np.where(exponent == 0, mantissa * 0.5, (1 + mantissa / 2.0) * np.ldexp(1.0, exponent - 1))
        table = np.where(codes & 8, -magnitude, magnitude)
    elif name == E8M0:
        table = np.ldexp(np.float64(1.0), codes - 127)
        table[255] = np.nan
    else:
        exp_bits, man_bits, bias, _, kind = FLOAT8_FORMATS[name]
        sign = np.where(codes >> 7, -1.0, 1.0)
        exponent = (codes >> man_bits) & ((1 << exp_bits) - 1)
        mantissa = codes & ((1 << man_bits) - 1)
        subnormal = mantissa * 2.0 ** (1 - bias - man_bits)
        normal = (1 + mantissa / 2.0 ** man_bits) * np.ldexp(1.0, exponent - bias)
        table = sign * np.where(exponent == 0, subnormal, normal)
        top = exponent == (1 << exp_bits) - 1
        if kind == "fn":
            table[top & (mantissa == (1 << man_bits) - 1)] = np.nan
        elif kind == "ieee":
            table[top & (mantissa == 0)] = sign[top & (mantissa == 0)] * np.inf
            table[top & (mantissa != 0)] = np.nan
        else:
            table[0x80] = np.nan
    table = table.astype(np.float32)
    _TABLES[name] = table
    return table


def _contiguous(x: np.ndarray) -> np.ndarray:
    """C-contiguous, keeping 0-d arrays 0-d (np.ascontiguousarray would make them 1-d)."""
    return x if x.flags.c_contiguous else x.copy(order="C")


def to_float32(x: np.ndarray) -> np.ndarray:
    """A narrow-float array as float32, exactly."""
    name = x.dtype.name
    if name == BFLOAT16:
        return (_contiguous(x).view(np.uint16).astype(np.uint32) << 16).view(np.float32)
    return _decode_table(name)[_contiguous(x).view(np.uint8)]


def _encode_float8(x: np.ndarray, name: str, saturate: bool) -> np.ndarray:
    exp_bits, man_bits, bias, max_code, kind = FLOAT8_FORMATS[name]
    x = np.asarray(x, dtype=np.float32)
    bits = x.view(np.uint32).astype(np.int64)
    negative = (bits >> 31).astype(bool)
    magnitude = np.abs(x)
    shift = 23 - man_bits
    # normal numbers: round the float32 mantissa to man_bits (nearest, ties to even), then rebias the exponent
    magnitude_bits = bits & 0x7FFFFFFF
    rounded = (magnitude_bits + ((1 << (shift - 1)) - 1) + ((magnitude_bits >> shift) & 1)) >> shift
    code = rounded - ((127 - bias) << man_bits)
    # subnormals of the float8 format: multiples of 2^(1 - bias - man_bits), rounded to nearest even
    smallest_normal = np.float32(2.0 ** (1 - bias))
    tiny = magnitude < smallest_normal
    if tiny.any():
        steps = np.rint(magnitude[tiny].astype(np.float64) * 2.0 ** (bias - 1 + man_bits)).astype(np.int64)
        code[tiny] = steps  # 2^man_bits steps is the smallest normal's code: the two ranges join exactly
    nan = np.isnan(x)
    overflow = (code > max_code) | np.isinf(x)
    if saturate:
        code[overflow] = max_code
    elif kind == "ieee":
        code[overflow] = 0x7C
    else:
        code[overflow] = 0x7F if kind == "fn" else 0x80
    code = code.astype(np.uint8)
    if kind == "fnuz":
        negative &= code != 0  # no negative zero
        code = np.where(negative & (code != 0x80), code | 0x80, code)
        code[nan] = 0x80
    else:
        code = np.where(negative, code | 0x80, code)
        code[nan] = 0x7F if kind == "fn" else 0x7E
    return code.astype(np.uint8)


def _encode_float4e2m1(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    bits = x.view(np.uint32).astype(np.int64)
    magnitude_bits = bits & 0x7FFFFFFF
    # from 1 (the smallest normal) up: round the float32 mantissa to one bit (ties to even) and rebias 127 -> 1
    rounded = (magnitude_bits + ((1 << 21) - 1) + ((magnitude_bits >> 22) & 1)) >> 22
    code = rounded - (126 << 1)
    # below 1: multiples of 0.5 (the subnormal 0.5 and zero), ties to even; 2 steps is the code of 1
    magnitude = np.abs(x)
    tiny = magnitude < np.float32(1.0)
    if tiny.any():
        code[tiny] = np.rint(magnitude[tiny] * np.float32(2.0)).astype(np.int64)
    code = np.minimum(code, 7)  # saturate at 6 (infinities land far above)
    sign = (bits >> 31).astype(bool)
    nan = np.isnan(x)
    if nan.any():
        code[nan] = 0
        sign = sign ^ nan
    return np.where(sign, code | 8, code).astype(np.uint8)


def _encode_e8m0(x: np.ndarray, saturate: bool, round_mode: str) -> np.ndarray:
    bits = np.asarray(x, dtype=np.float32).view(np.uint32)
    exponent = ((bits >> 23) & 0xFF).astype(np.int64)
    special = exponent == 0xFF
    fraction = bits & 0x7FFFFF
    if round_mode == "up":
        up = fraction > 0
    elif round_mode == "nearest":
        guard = (bits & 0x400000) > 0
        up = guard & (((bits & 0x3FFFFF) > 0) | (exponent > 0))
    else:
        up = np.zeros(bits.shape, dtype=bool)
    if saturate:
        up &= exponent != 0xFE
    exponent = np.where(special, 0xFF, exponent + up)
    return np.minimum(exponent, 0xFF).astype(np.uint8)


def _encode_bfloat16(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    bits = x.view(np.uint32).astype(np.uint64)
    rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)
    nan = np.isnan(x)
    if nan.any():
        rounded[nan] = ((bits[nan] >> 16).astype(np.uint16) | 0x0040)
    return rounded


def from_float(x: np.ndarray, dtype: np.dtype, saturate: bool = True, round_mode: str = "up") -> np.ndarray:
    """A numeric array converted to the narrow float ``dtype`` (module docstring for the rules)."""
    dtype = np.dtype(dtype)
    name = dtype.name
    if x.dtype.kind not in "f" or x.dtype.itemsize > 4:
        x = x.astype(np.float32)  # integers, bool, double: through float32 (exact for the values float8 holds)
    x = _contiguous(np.asarray(x, dtype=np.float32))
    if name == BFLOAT16:
        return _encode_bfloat16(x).view(dtype)
    if name == E8M0:
        return _encode_e8m0(x, saturate, round_mode).view(dtype)
    if name == FLOAT4E2M1:
        return _encode_float4e2m1(x).view(dtype)
    return _encode_float8(x, name, saturate).view(dtype)


def cast(x: np.ndarray, dtype: np.dtype, saturate: bool = True, round_mode: str = "up") -> np.ndarray:
    """ONNX Cast of ``x`` to ``dtype`` where either side may be a narrow float."""
    dtype = np.dtype(dtype)
    if x.dtype == dtype:
        return x
    if is_narrow_float(x.dtype):
        x = to_float32(x)
    if is_narrow_float(dtype):
        return from_float(x, dtype, saturate, round_mode)
    if x.dtype.kind == "V" or dtype.kind == "V":  # int4, float4...: the dtype's own conversion
        return x.astype(dtype)
    return x.astype(dtype, copy=False)
