"""Two quantized convolutions in a row (LeNet's int8 conv1 -> conv2, each with its pool) as one step.

Alone, the first convolution requantizes its sums to 8-bit codes (multiply, round, clip, shift, convert) and the
second centres those codes again into the float32 it multiplies (``code - zero_point``). Here the first one's
sums are requantized straight into that float32 (separable_int8.centring_requantizer: the requantizer's own
passes in its order, the shift from its output zero point to the second's input zero point instead of the
conversion): the same integers, so the same output codes bit for bit, two passes and one step fewer.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..optimize import producers_and_readers, sole_reader
from .caches import keep
from .quantized import F32, QLinearConv, _laid_over, _Requantizer, _TableRequantizer
from .separable_int8 import QuantizedSeparableChain, centring_requantizer


def _code_type(kernel: Any) -> np.dtype | None:
    """The 8-bit code type of a QLinearConv's fast-path output (plain codes, or looked up in an 8-bit table: a
    float table's values are no codes); None for any other kernel."""
    if not isinstance(kernel, QLinearConv) or kernel.fast is None:
        return None
    if type(kernel.requant) is _Requantizer:
        return kernel.requant.dtype
    if type(kernel.requant) is _TableRequantizer and kernel.requant.flat.dtype.itemsize == 1:
        return kernel.requant.flat.dtype
    return None


def _centred_reader(kernel: Any, codes: np.dtype) -> bool:
    """A QLinearConv whose fast path takes 8-bit ``codes`` of that type as they are (it centres them itself), or
    a quantized separable chain starting with such a layer."""
    first = kernel.layers[0] if isinstance(kernel, QuantizedSeparableChain) else kernel
    return isinstance(first, QLinearConv) and first.fast is not None and first.fast.x_dtype == codes \
        and not getattr(first, "quantize_input", False)


class CentredConvPair:
    """``first`` -> ``second`` (module docstring) as one step's kernel: ``run(x, *first's constants)``. An input
    ``first``'s fast path does not take runs the two kernels in turn."""

    def __init__(self, node: Any, first: QLinearConv, first_parameters: list,
                 second: QLinearConv | QuantizedSeparableChain, second_parameters: list):
        self.node = node
        self.first, self.second = first, second
        self.first_parameters, self.second_parameters = first_parameters, second_parameters
        self.chain = second if isinstance(second, QuantizedSeparableChain) else None
        # the QLinearConv kernels the step runs, in order (as a chain's ``layers``)
        self.layers = [first, *(self.chain.layers if self.chain is not None else [second])]
        reader = second.layers[0] if self.chain is not None else second
        self.zero_point = reader.fast.x_zero_point  # the second's input zero point
        self.codes = _code_type(first)
        # per (shape, strides) of the first one's sums: its requantization into the centred codes, with the
        # per-channel operands laid over the sums (_laid_over: NumPy runs a channel vector broadcast along the
        # image rows several times slower than a same-shape operand)
        self.centres: dict[tuple, Any] = {}

    def run(self, x: np.ndarray, *_constants: np.ndarray | None) -> np.ndarray:
        sums = self.first.exact_sums(x)
        if sums is None:
            codes = self.first.run(x, *self.first_parameters)
            return self.second.run(codes, *self.second_parameters)
        if sums.dtype != F32:
            sums = sums.astype(F32)  # exact integers from a float64 accumulation: one float32 rounding, as alone
        centred = np.empty(sums.shape, F32)  # the first convolution's output size, which its kernel checked
        self._centre(sums)(sums, centred)
        second = self.second
        if self.chain is None:
            return second.requant(second.fast.conv.run(centred, second.fast.weight, second.fast.bias))
        codes = self.chain.run_centred(centred)
        if codes is None:  # a shape the chain's buffers do not take: its layers in turn, on the codes (exact)
            centred += self.zero_point
            codes = self.chain.run(centred.astype(self.codes))
        return codes

    def _centre(self, sums: np.ndarray) -> Any:
        """The first one's centring requantizer for sums laid out as ``sums`` (made once per layout: the laid
        operands are the size of the sums, which the first convolution checked)."""
        key = (sums.shape, sums.strides)
        centre = self.centres.get(key)
        if centre is None:
            centre = centring_requantizer(self.first.requant, self.zero_point,
                                          lambda operand: _laid_over({}, operand, sums))
            keep(self.centres, key, centre)
        return centre


def fuse_centred_conv_pairs(steps: list[Any], graph_outputs: set[str]) -> list[Any]:
    """``steps`` with each QLinearConv whose 8-bit codes only a following QLinearConv reads (as its input x, on
    its fast path) made one CentredConvPair step in the first one's place."""
    _, readers = producers_and_readers(steps)
    dropped: set[int] = set()
    for step in steps:
        codes = _code_type(step.kernel)
        if id(step) in dropped or codes is None or len(step.outputs) != 1:
            continue
        reader = sole_reader(readers, step, graph_outputs)
        if reader is None or id(reader) in dropped or reader.before or reader.inputs[0] != step.outputs[0] \
                or step.outputs[0] in reader.inputs[1:] \
                or not _centred_reader(reader.kernel, codes):
            continue
        first, second = step.kernel, reader.kernel
        second_parameters = [] if isinstance(second, QuantizedSeparableChain) else [
            second.const(i) for i in range(1, len(reader.inputs))]
        step.kernel = CentredConvPair(step.node, first, [first.const(i) for i in range(1, len(step.inputs))],
                                      second, second_parameters)
        step.outputs = list(reader.outputs)
        step.fused = (*step.fused, reader.node.op_type, *reader.fused)
        dropped.add(id(reader))
    return [s for s in steps if id(s) not in dropped]
