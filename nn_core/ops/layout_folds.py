"""A channels-last flatten in front of a dense layer, folded into the layer's weights: FoldedNhwcFlatten.

Keras models exported to ONNX convolve in NCHW but flatten in NHWC order: ``Transpose(perm=[0, 2, 3, 1])``, then
``Reshape`` to (N, C*H*W) (or PyTorch's ``Flatten``), then the first dense layer. The flatten of the NHWC tensor
is a fixed permutation of the NCHW flatten: with S = H*W spatial positions, element (s, c) of the NHWC rows is
element (c, s) of the NCHW rows, and the permutation depends on S and C alone. Multiplying the NCHW flatten (a
free view of a contiguous convolution output) by the weights with their rows permuted the same way gives the same
product, without the transposing copy the Reshape makes and without two plan steps (keras_nhwc_l12, batch 2:
~1.4 us of ~30).
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np

from ..optimize import is_default_domain, producers_and_readers, sole_reader
from .dense_chain import DenseChain
from .nn import Gemm, MatMul

_NHWC_ORDER = [0, 2, 3, 1]


def _weights_of(kernel: Any) -> np.ndarray | None:
    """The (K, M) constant weights the dense kernel's input multiplies (the first layer's, for a chain)."""
    first = kernel.kernels[0] if type(kernel) is DenseChain else kernel
    if type(first) not in (Gemm, MatMul) or first.b is None or first.b.ndim != 2 or getattr(first, "trans_a", False):
        return None
    return first.b


def _with_rows_permuted(kernel: Any, channels: int) -> Any:
    """A copy of the dense ``kernel`` whose first weights take the NCHW flatten of ``channels`` channels where
    the original took the NHWC flatten: row c*S + s of the copy is row s*C + c of the original. One copy of
    weights the model's loading already checked."""
    first = kernel.kernels[0] if type(kernel) is DenseChain else kernel
    weights = first.b
    spatial = weights.shape[0] // channels
    permuted = copy.copy(first)
    permuted.b = np.ascontiguousarray(
        weights.reshape(spatial, channels, weights.shape[1]).transpose(1, 0, 2).reshape(weights.shape))
    if type(kernel) is DenseChain:
        return DenseChain(kernel.node, [permuted, *kernel.kernels[1:]], kernel.arguments)
    return permuted


def _batch_rows(shape: np.ndarray, width: int) -> int | None | bool:
    """What the Reshape's constant ``shape`` makes of an (N, C, H, W)-sized input with C*H*W == ``width``: None
    when (N, width) for every N, the one N it does so for when it names the row count, False when it is not such
    a flatten."""
    if shape.ndim != 1 or shape.size != 2 or shape.dtype.kind not in "iu":
        return False
    rows, columns = (int(v) for v in shape)
    if columns not in (width, -1) or (rows, columns) == (-1, -1):
        return False
    if rows in (-1, 0):
        return None
    return rows if rows > 0 else False


class FoldedNhwcFlatten:
    """``dense(reshape(transpose(x)))`` for an NCHW ``x``: a 4-D array whose C*H*W is the dense layer's input
    width (and whose N is the Reshape's row count, when it names one) multiplies its own flatten by weights with
    their rows permuted for its C (module docstring; built on the first such call and on a change of C). Anything
    else runs the three kernels in turn, with their checks."""

    def __init__(self, transpose: Any, reshape: Any, reshape_arguments: list[Any], dense: Any, rows: int | None):
        self.transpose = transpose
        self.reshape = reshape
        self.reshape_arguments = reshape_arguments
        self.dense = dense
        self.rows = rows
        self.width = _weights_of(dense).shape[0]
        # (channels, the dense kernel whose weights are permuted for them), and (input shape, its flatten's shape,
        # that kernel's run) of the last folded call: each replaced as one tuple, so a concurrent call sees a
        # matched set; a repeated input shape is the one test of the folded path
        self.permuted: tuple[int, Any] = (0, None)
        self.folded: tuple[tuple[int, ...], tuple[int, int], Any] = ((), (0, 0), None)

    def run(self, x: np.ndarray, *constants: np.ndarray | None) -> np.ndarray:
        shape, flat, dense_run = self.folded
        if type(x) is np.ndarray and x.shape == shape:
            return dense_run(x.reshape(flat), *constants)
        if type(x) is np.ndarray and x.ndim == 4:
            batch, channels, height, width = x.shape
            if channels * height * width == self.width and (self.rows is None or batch == self.rows):
                permuted = self.permuted
                if permuted[0] != channels:
                    permuted = self.permuted = (channels, _with_rows_permuted(self.dense, channels))
                self.folded = (x.shape, (batch, self.width), permuted[1].run)
                return permuted[1].run(x.reshape(batch, self.width), *constants)
        flat_input = self.reshape.run(self.transpose.run(x), *self.reshape_arguments)
        return self.dense.run(flat_input, *constants)

    def specialize(self, x: np.ndarray, *constants: np.ndarray | None) -> Any:
        """``run`` for inputs of ``x``'s shape and dtype, the folded call's shape, as its permuted dense kernel's
        own specialized runner on the flatten (FastPlan.specialize); any other input through ``run``."""
        shape, flat, _ = self.folded
        permuted = self.permuted[1]
        if type(x) is not np.ndarray or x.shape != shape or permuted is None:
            return None
        inner = permuted.specialize(x.reshape(flat), *constants)
        if inner is None:
            return None
        dtype, general = x.dtype, self.run

        def run(x: np.ndarray, *constants: np.ndarray | None) -> np.ndarray:
            if type(x) is not np.ndarray or x.shape != shape or x.dtype is not dtype:
                return general(x, *constants)
            return inner(x.reshape(flat), *constants)

        return run


def fold_nhwc_flattens(steps: list[Any], constants: dict[str, np.ndarray], graph_outputs: set[str]) -> list[Any]:
    """``steps`` with each Transpose(perm=[0, 2, 3, 1]) -> Reshape to (N, C*H*W) or Flatten(axis=1) -> dense
    layer (Gemm / MatMul with constant weights, or a DenseChain), each the sole reader of the one before, made one
    FoldedNhwcFlatten step in the dense layer's place reading the Transpose's input. After fuse_dense_chains."""
    _, readers = producers_and_readers(steps)
    dropped: set[int] = set()
    for transpose in steps:
        node = transpose.node
        if node.op_type != "Transpose" or not is_default_domain(node) or list(node.attrs.get("perm") or ()) \
                != _NHWC_ORDER or transpose.fused or transpose.before or len(transpose.outputs) != 1:
            continue
        reshape = sole_reader(readers, transpose, graph_outputs)
        if reshape is None or not is_default_domain(reshape.node) or reshape.fused or reshape.before \
                or len(reshape.outputs) != 1 or reshape.inputs[:1] != transpose.outputs:
            continue
        if reshape.node.op_type == "Flatten" and len(reshape.inputs) == 1 and reshape.node.attrs.get("axis", 1) == 1:
            reshape_arguments, target = [], None
        elif reshape.node.op_type == "Reshape" and len(reshape.inputs) == 2 and reshape.inputs[1] in constants \
                and not reshape.node.attrs.get("allowzero", 0):
            reshape_arguments, target = [constants[reshape.inputs[1]]], constants[reshape.inputs[1]]
        else:
            continue
        dense = sole_reader(readers, reshape, graph_outputs)
        if dense is None or dense.before or not dense.inputs or dense.inputs[0] != reshape.outputs[0] \
                or reshape.outputs[0] in dense.inputs[1:] or any(n and n not in constants for n in dense.inputs[1:]):
            continue
        weights = _weights_of(dense.kernel)
        if weights is None:
            continue
        rows = None if target is None else _batch_rows(target, weights.shape[0])
        if rows is False:
            continue
        dense.kernel = FoldedNhwcFlatten(transpose.kernel, reshape.kernel, reshape_arguments, dense.kernel, rows)
        dense.inputs = [transpose.inputs[0], *dense.inputs[1:]]
        dense.before = ("Transpose", reshape.node.op_type)
        dropped.update((id(transpose), id(reshape)))
    return [s for s in steps if id(s) not in dropped]
