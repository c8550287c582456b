"""Quantized depthwise-separable chains at batch 1: QLinearConv depthwise -> pointwise -> depthwise ... as one step.

Each QLinearConv of a QDQ model's separable chain runs on its own as the float kernels' exact integer product
(quantized._FastConv): centre the input codes into float32, convolve, requantize to 8-bit codes (and look them
up in the table of the activation after it, quantized._TableRequantizer), in NCHW between the steps. The next
layer only ever reads those codes centred again, ``code - x_zero_point``, so inside a chain they are written
as exactly that float32, straight into the buffers of the float chain (separable.SeparableChain): a layer's
epilogue is its bias, the requantization's own passes in the same order (multiply, clip, the rounding offset,
the index) and a lookup in its table of *centred* codes, or, without a table, the rounded value shifted from
the output's zero point to the next input's. The values the next layer multiplies are the same integers, so
every result is the same bit for bit (the float products are exact under _FastConv's bound, in any order).

The chain's last layer hands its exact sums to its own requantizer, which makes the step's output codes as the
layer did alone. Inputs other than one image of the first layer's code type run the QLinearConv kernels in turn.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from ..optimize import producers_and_readers
from .batch1 import epilogue_run, finisher
from .conv import Conv
from .quantized import F32, QLinearConv, _clip, _Requantizer, _TableRequantizer
from .separable import SeparableChain, _column_strided, alternating_chain, is_chain_depthwise, is_chain_pointwise

# QLinearConv's inputs after x: x_scale, x_zero_point, w, w_scale, w_zero_point, y_scale, y_zero_point, bias
_PARAMETER_INPUTS = range(1, 9)


def _float_kernel(kernel: Any) -> Conv | None:
    """The float kernel a QLinearConv of 8-bit codes runs on (its exact fast path), or None."""
    if not isinstance(kernel, QLinearConv) or kernel.fast is None or kernel.pool is not None \
            or getattr(kernel, "quantize_input", False) or type(kernel.requant) not in (_Requantizer,
                                                                                        _TableRequantizer):
        return None
    return kernel.fast.conv


def _code_type(kernel: QLinearConv) -> np.dtype:
    """The type of the codes the layer hands on: its table's, or its requantizer's."""
    requant = kernel.requant
    return requant.flat.dtype if isinstance(requant, _TableRequantizer) else requant.dtype


def centring_requantizer(requant: _Requantizer | _TableRequantizer, next_zero_point: np.float32,
                         laid_out: Callable[[Any], Any] = lambda operand: operand
                         ) -> Callable[[np.ndarray, np.ndarray], None]:
    """``centre(sums, out)``: a layer's requantization (``requant``) of its exact ``sums`` (with the bias) into
    ``out`` (C-order, their shape, ``sums`` itself allowed) as the codes the next layer multiplies,
    ``code - next_zero_point`` in float32. The passes are the requantizer's own, in its order (module
    docstring); ``laid_out`` lays a per-channel operand out against ``out``'s shape."""
    multiplier, low, high = laid_out(requant.multiplier), requant.low, requant.high
    if isinstance(requant, _TableRequantizer):
        rounder, base = laid_out(requant.rounder), requant.base
        centred_table = requant.flat.astype(F32) - next_zero_point  # exact: 8-bit codes

        def centre_looked_up(sums: np.ndarray, out: np.ndarray) -> None:
            np.multiply(sums, multiplier, out=out)
            _clip(out, low, high, out=out)
            out += rounder
            index = out.view(np.int32)
            index -= base
            # the clip keeps every index in range (as _TableRequantizer's); take reads the indices into its own
            # array before it writes
            centred_table.take(index, mode="wrap", out=out)

        return centre_looked_up
    shift = requant.zero_point - next_zero_point  # exact: both 8-bit zero points

    def centre(sums: np.ndarray, out: np.ndarray) -> None:
        np.multiply(sums, multiplier, out=out)
        np.rint(out, out=out)
        _clip(out, low, high, out=out)
        if shift:
            out += shift

    return centre


class QuantizedSeparableChain(SeparableChain):
    """The QLinearConv kernels of a depthwise-separable chain (module docstring) as one step's kernel: ``run(x)``
    takes the first layer's input codes and returns the last layer's output codes."""

    def __init__(self, node: Any, layers: list[QLinearConv]):
        super().__init__(node, [layer.fast.conv for layer in layers])
        self.layers = layers
        self.parameters = [[layer.const(i) for i in _PARAMETER_INPUTS] for layer in layers]
        # a layer's float kernel -> (the layer, the layer reading its output)
        self.neighbours = {id(layer.fast.conv): (layer, after) for layer, after in zip(layers, layers[1:])}

    def run(self, x: np.ndarray, *_constants: np.ndarray | None) -> np.ndarray:
        first = self.layers[0].fast
        if x.dtype == first.x_dtype:
            zero_point = first.x_zero_point
            codes = self.run_centred(np.subtract(x, zero_point, dtype=F32) if zero_point else x.astype(F32))
            if codes is not None:
                return codes
        for layer, parameters in zip(self.layers, self.parameters, strict=True):
            x = layer.run(x, *parameters)
        return x

    def run_centred(self, centred: np.ndarray) -> np.ndarray | None:
        """The last layer's codes for the first layer's input codes given centred (``code - zero_point`` as
        float32, as a convolution before the chain may requantize into: qconv_pair); None for an input the
        chain's buffers do not take (then ``run`` on the codes is the way)."""
        sums = self.through_buffers(centred)
        return None if sums is None else self.layers[-1].requant(sums)

    def _carried_bounds(self, depthwise: Conv) -> None:
        """Never: a depthwise layer's bias is part of the sums it requantizes, so it cannot be carried past them."""
        return None

    def _finisher(self, kernel: Conv, shape: tuple[int, ...], dtype: np.dtype, inside: bool
                  ) -> Callable[[np.ndarray], None]:
        """The bias; inside the chain, then the requantization into the next layer's centred input codes."""
        add_bias = finisher(shape, dtype, kernel.bias, kernel.act)
        if not inside:
            return add_bias  # the exact sums, requantized by the last layer itself (run)
        layer, after = self.neighbours[id(kernel)]
        size, channels = math.prod(shape), shape[-1]
        run = epilogue_run(size, channels)
        rows = (size // run, run)

        def tiled(value: np.ndarray | np.float32) -> np.ndarray | np.float32:
            """A per-channel operand laid out over a row of the channels-last output (NumPy runs a same-shape
            operand twice as fast as a broadcast channel vector)."""
            return np.tile(np.reshape(value, -1), run // channels) if np.ndim(value) else value

        centre = centring_requantizer(layer.requant, after.fast.x_zero_point, tiled)

        def requantize(y: np.ndarray) -> None:
            add_bias(y)
            flat = y.reshape(rows)
            centre(flat, flat)

        return requantize


def _takes(reader: Any, before: Any, pointwise: bool) -> bool:
    """A QLinearConv whose float kernel is a chain layer of the wanted kind, reading codes of ``before``'s type."""
    kernel = _float_kernel(reader.kernel)
    return kernel is not None and (is_chain_pointwise if pointwise else is_chain_depthwise)(kernel) \
        and _code_type(before.kernel) == reader.kernel.fast.x_dtype


def fuse_quantized_separable_chains(steps: list[Any], graph_outputs: set[str]) -> list[Any]:
    """``steps`` with each run of QLinearConv depthwise -> pointwise (-> depthwise -> pointwise ...) whose float
    kernels make a separable chain (separable.fuse_separable_chains' rules), every one the sole reader of the
    codes of the one before and of their type, made one QuantizedSeparableChain step in the first one's place."""
    _, readers = producers_and_readers(steps)
    dropped: set[int] = set()
    for step in steps:
        start = _float_kernel(step.kernel)
        if id(step) in dropped or start is None or not is_chain_depthwise(start) or _column_strided(start):
            continue
        chain = alternating_chain(step, readers, graph_outputs, dropped, _takes)
        if len(chain) < 2:
            continue
        step.kernel = QuantizedSeparableChain(step.node, [s.kernel for s in chain])
        step.outputs = list(chain[-1].outputs)
        step.fused = (*step.fused, *(t for s in chain[1:] for t in (*s.before, s.node.op_type, *s.fused)))
        dropped.update(id(s) for s in chain[1:])
    return [s for s in steps if id(s) not in dropped]

