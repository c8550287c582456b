"""Quantized dense layers in a row: QGemm -> QGemm -> ... (a classifier's head) as one step.

Each QGemm alone centres its 8-bit input codes into float32, multiplies exactly (PreparedB.product), then
requantizes to codes: multiply, round, clip, shift by the zero point, convert to 8 bits. The next layer only
ever reads those codes centred again, ``code - a_zero_point``, so between two layers of a chain the sums are
requantized straight into that float32 (separable_int8.centring_requantizer: the same passes in the same order,
the shift from the output's zero point to the next input's instead of the conversion): the same integers, so the
same output codes bit for bit, two NumPy calls fewer per layer and one step, on vectors where each call's cost
is most of the work (LeNet's 120- and 84-wide layers).

One row (batch 1) also drops each layer's bias pass: every layer reads its centred input from a buffer of the
chain's own ending in a constant 1 and multiplies it by its weights with the bias as one more row (as DenseChain
does for float layers). The sums are integers whose every partial sum the layer's bound keeps below 2**24, so
float32 adds them exactly in any order: the same sums bit for bit.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

from ..optimize import producers_and_readers, sole_reader
from .contrib_ms import QGemm
from .quantized import F32, _Requantizer
from .separable_int8 import centring_requantizer

# QGemm's inputs after A: a_scale, a_zero_point, B, b_scale, b_zero_point, C, y_scale, y_zero_point
_PARAMETER_INPUTS = range(1, 9)
_CODES = (np.dtype(np.uint8), np.dtype(np.int8))


def _lean_layer(kernel: Any) -> bool:
    """A QGemm whose weights, bias and parameters are constants (its lean path)."""
    return type(kernel) is QGemm and kernel.lean is not None


def _coding_layer(kernel: Any) -> bool:
    """A lean QGemm with an 8-bit requantized output (the last layer of a chain may also give floats)."""
    return _lean_layer(kernel) and type(kernel.requant) is _Requantizer and kernel.requant.dtype in _CODES


class QuantizedGemmChain:
    """QGemm layers, each reading only the codes of the one before, as one step's kernel (module docstring).
    Inputs the first layer's lean path does not take (not 2-D 8-bit codes) run the layers' kernels in turn."""

    def __init__(self, node: Any, layers: list[QGemm]):
        self.node = node
        self.layers = layers
        self.parameters = [[layer.const(i) for i in _PARAMETER_INPUTS] for layer in layers]
        self.centres = [centring_requantizer(layer.requant, after.lean[0])
                        for layer, after in zip(layers, layers[1:])]
        self.checked: set[tuple] = set()  # the input shapes and types whose every layer's shapes were checked
        # per input type: None, or each layer's weights with the bias row below them (_one_row_layers)
        self.one_row: dict[np.dtype, list[np.ndarray] | None] = {}
        # each layer's (1, K + 1) input row ending in 1, shared by calls (the GUI runs models on worker threads)
        self.rows = [np.ones((1, layer.b.centred.shape[-2] + 1), F32) for layer in layers]
        self.lock = threading.Lock()

    def run(self, a: np.ndarray, *_constants: np.ndarray | None) -> np.ndarray:
        if a.ndim != 2 or a.dtype not in _CODES:
            for layer, parameters in zip(self.layers, self.parameters, strict=True):
                a = layer.run(a, *parameters)
            return a
        key = (a.shape, a.dtype)
        if key not in self.checked:
            self._check(a)
        if a.shape[0] == 1:
            extended = self.one_row.get(a.dtype, False)
            if extended is False:
                extended = self.one_row[a.dtype] = self._one_row_layers(a.dtype)
            if extended is not None:
                return self._one_row(a, extended)
        first = self.layers[0]
        zero_point, bounds, _ = first.lean
        centred = np.subtract(a, zero_point, dtype=F32) if zero_point else a.astype(F32)
        sums = first.b.product(centred, bounds[a.dtype], first.c, first.c_bound)
        for centre, layer, before in zip(self.centres, self.layers[1:], self.layers[:-1], strict=True):
            if sums.dtype != F32:
                sums = sums.astype(F32)  # exact integers from a float64 product: one float32 rounding, as alone
            centre(sums, sums)
            sums = layer.b.product(sums, layer.lean[1][before.requant.dtype], layer.c, layer.c_bound)
        last = self.layers[-1]
        if last.requant is not None:
            return last.requant(sums)
        # the float output, as the layer's lean path gives it
        if sums.dtype != F32:
            sums = sums.astype(F32)
        sums *= last.lean[2]
        return sums

    def _one_row_layers(self, dtype: np.dtype) -> list[np.ndarray] | None:
        """Each layer's weights with its bias as one more row, when every layer's sums from a ``dtype`` input are
        exact in one float32 product (a single slice) and its bias is one float32 value per output; else None."""
        extended = []
        for layer, before in zip(self.layers, [None, *self.layers[:-1]], strict=True):
            weights, bias = layer.b.centred, layer.c
            columns = weights.shape[-1]
            if weights.ndim != 2 or bias is not None and (bias.dtype != F32 or bias.size != columns):
                return None
            slices = layer.b.slices(layer.lean[1][dtype if before is None else before.requant.dtype], layer.c_bound)
            if slices is None or len(slices) != 1:
                return None
            row = np.zeros((1, columns), F32) if bias is None else bias.reshape(1, columns)
            extended.append(np.ascontiguousarray(np.concatenate([weights, row])))
        return extended

    def _one_row(self, a: np.ndarray, extended: list[np.ndarray]) -> np.ndarray:
        """The chain on one row of codes through its input rows (module docstring); only the output is fresh."""
        zero_point = self.layers[0].lean[0]
        rows = self.rows
        with self.lock:
            np.subtract(a, zero_point, dtype=F32, out=rows[0][:, :-1])
            for index, centre in enumerate(self.centres):
                centre(np.matmul(rows[index], extended[index]), rows[index + 1][:, :-1])
            sums = np.matmul(rows[-1], extended[-1])
        last = self.layers[-1]
        if last.requant is not None:
            return last.requant(sums)
        sums *= last.lean[2]
        return sums

    def _check(self, a: np.ndarray) -> None:
        """Each layer's checks of its input (the kernel's own), on the codes' shape and type it would be given."""
        for layer, before in zip(self.layers, [None, *self.layers[:-1]], strict=True):
            codes = a if before is None else np.empty((a.shape[0], before.b.centred.shape[-1]), before.requant.dtype)
            layer._check_a(codes, layer.b.centred)
        self.checked.add((a.shape, a.dtype))


def fuse_quantized_gemm_chains(steps: list[Any], graph_outputs: set[str]) -> list[Any]:
    """``steps`` with each run of lean QGemm layers, every one the sole reader of the codes of the one before and
    of its input's type, made one QuantizedGemmChain step in the first one's place."""
    _, readers = producers_and_readers(steps)
    dropped: set[int] = set()
    for step in steps:
        if id(step) in dropped or not _coding_layer(step.kernel) or step.fused:
            continue
        chain = [step]
        while True:
            reader = sole_reader(readers, chain[-1], graph_outputs)
            if reader is None or id(reader) in dropped or not _lean_layer(reader.kernel) or reader.fused \
                    or reader.before or reader.inputs[0] != chain[-1].outputs[0]:
                break
            chain.append(reader)
            if not _coding_layer(reader.kernel):
                break
        if len(chain) < 2:
            continue
        step.kernel = QuantizedGemmChain(step.node, [s.kernel for s in chain])
        step.outputs = list(chain[-1].outputs)
        step.fused = tuple(s.node.op_type for s in chain[1:])
        dropped.update(id(s) for s in chain[1:])
    return [s for s in steps if id(s) not in dropped]
