"""A quantized convolution whose codes only a residual sum's pair table reads: QLinearConv -> QLinearLookup (two
inputs, ``fuse_lookups``' table over all 65536 pairs of codes) as one step.

Alone, the convolution requantizes its sums to 8-bit codes (multiply, round, clip, shift, convert) and the
lookup builds each pair's index from the two codes (widen, shift, or) before the take. Here the index comes from
the sums as _TableRequantizer makes it: multiply, clip, and one float32 addition that rounds half to even and
lands the code in the sum's low bits, read as an integer; the other operand's codes are added in, shifted by 8
when they are the pair's second byte. The code is the one the convolution gives (the same passes as
_TableRequantizer's, whose equality with _Requantizer's codes the tests hold), so the looked-up values are too.
Only uint8 output codes are taken (an int8 code's byte is not its value plus a constant).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..optimize import producers_and_readers
from .quantized import _ROUNDER, _ROUNDER_BITS, F32, QLinearConv, QLinearLookup, _clip, _laid_over, _Requantizer


def _plain_uint8_layer(kernel: Any) -> bool:
    return isinstance(kernel, QLinearConv) and kernel.fast is not None \
        and not getattr(kernel, "quantize_input", False) and type(kernel.requant) is _Requantizer \
        and kernel.requant.dtype == np.uint8


class ConvPairLookup:
    """``lookup(codes_a, codes_b)`` with one of the two the codes of ``conv`` (module docstring): ``run(x, other)``
    takes the convolution's input and the other operand's codes."""

    def __init__(self, node: Any, conv: QLinearConv, conv_parameters: list, lookup: QLinearLookup,
                 table: np.ndarray, conv_is_first: bool):
        self.node = node
        self.conv, self.conv_parameters = conv, conv_parameters
        self.lookup, self.table, self.conv_is_first = lookup, table, conv_is_first
        requant = conv.requant
        self.multiplier, self.low, self.high = requant.multiplier, requant.low, requant.high
        # the clipped value r rounds to the code r + zero_point in the sum's low bits; an odd zero point is taken
        # as the even one below it (the rounding keeps its ties) and the 1 back from the bits' constant
        odd = int(requant.zero_point) & 1
        self.rounder = F32(int(_ROUNDER) + int(requant.zero_point) - odd)  # exact: below 2**24
        self.base = np.int32(_ROUNDER_BITS - odd)
        self.laid_multipliers: dict[tuple, np.ndarray] = {}

    def run(self, x: np.ndarray, other: np.ndarray, *_constants: np.ndarray | None) -> np.ndarray:
        if x.dtype != self.conv.fast.x_dtype or other.dtype.itemsize != 1 or other.dtype.kind not in "iu":
            return self._in_turn(x, other)
        sums = self.conv.fast(x)
        if sums.shape != other.shape:
            return self._in_turn(x, other)
        multiplier = _laid_over(self.laid_multipliers, self.multiplier, sums)
        if sums.flags.c_contiguous:
            np.multiply(sums, multiplier, out=sums)
        else:  # a view with gaps (the valid part of padded rows): the passes run faster on a copy
            sums = np.multiply(sums, multiplier)
        _clip(sums, self.low, self.high, out=sums)
        sums += self.rounder
        index = sums.view(np.int32)
        index -= self.base  # the convolution's codes, 0..255
        bytes_ = other.view(np.uint8)
        if self.conv_is_first:
            index <<= 8
            np.add(index, bytes_, out=index)
        else:
            np.add(index, np.left_shift(bytes_, 8, dtype=np.int32), out=index)
        # every index is in 0..65535, so "wrap" never wraps and spares the bounds check
        return self.table.take(index, mode="wrap")

    def _in_turn(self, x: np.ndarray, other: np.ndarray) -> np.ndarray:
        codes = self.conv.run(x, *self.conv_parameters)
        pair = (codes, other) if self.conv_is_first else (other, codes)
        return self.lookup.run(*pair, self.table)


def fuse_conv_pair_lookups(steps: list[Any], graph_outputs: set[str]) -> list[Any]:
    """``steps`` with each two-input QLinearLookup one of whose inputs is the codes of a QLinearConv
    (``_plain_uint8_layer``) read by it alone made one ConvPairLookup step in the lookup's place (the other
    operand is then ready: the lookup ran after both producers)."""
    producers, readers = producers_and_readers(steps)
    dropped: set[int] = set()
    for step in steps:
        lookup = step.kernel
        if type(lookup) is not QLinearLookup or not lookup.binary or len(step.inputs) != 3 or step.fused \
                or step.before or step.inputs[0] == step.inputs[1]:
            continue
        table = lookup.const(2)
        for position in (1, 0):
            conv_step = producers.get(step.inputs[position])
            if conv_step is None or id(conv_step) in dropped or not _plain_uint8_layer(conv_step.kernel) \
                    or conv_step.fused or conv_step.before or len(conv_step.outputs) != 1 \
                    or conv_step.outputs[0] in graph_outputs or len(readers.get(conv_step.outputs[0], [])) != 1:
                continue
            conv = conv_step.kernel
            step.kernel = ConvPairLookup(step.node, conv, [conv.const(i) for i in range(1, 9)], lookup, table,
                                         position == 0)
            step.inputs = [conv_step.inputs[0], step.inputs[1 - position]]
            step.before = ("QLinearConv",)
            dropped.add(id(conv_step))
            break
    return [s for s in steps if id(s) not in dropped]
