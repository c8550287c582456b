"""A classifier head's dense layers (Gemm / MatMul with constant weights, each the sole reader of the one before)
as one step: DenseChain.

At batch 1 a dense layer is a vector-matrix product of a few microseconds, and the step around it (the plan's
call, the kernel's checks, the bias addition as its own pass) costs about as much again. In the chain, every
layer after the first reads its input from a buffer that ends in a constant 1 and multiplies it by weights that
end in the bias row: the bias comes out of the product itself, and the layer's activation runs in place on the
buffer the next layer reads. Only the last layer's output is a fresh array (the caller keeps it). LeNet-5's
three-layer head: ~8.7 -> ~6 us. A few rows work the layers transposed (_Buffers), so that they too take every
bias but the first layer's from the products.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import numpy as np

from ..optimize import producers_and_readers, sole_reader
from .batch1 import finisher
from .caches import keep
from .nn import Gemm, MatMul

_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


def _layer_bias(kernel: Gemm | MatMul, width: int) -> np.ndarray | None | bool:
    """The constant bias vector ``kernel`` adds to its (1, width) product, None when it adds none, or False when
    it is not a chainable layer: a constant 2-D float weight, no transposed input, a constant bias of the weight's
    type that broadcasts to one row."""
    b = kernel.b
    if b is None or b.ndim != 2 or b.dtype not in _FLOATS:
        return False
    if type(kernel) is MatMul:
        return kernel.bias
    if kernel.trans_a:
        return False
    c = kernel.c
    if c is None:
        return None
    if c.dtype != b.dtype:
        return False
    try:
        return np.broadcast_to(c, (1, width)).reshape(width)
    except ValueError:
        return False


def chainable(step: Any, constants: dict[str, np.ndarray]) -> bool:
    """``step`` is a Gemm or MatMul whose weight and bias are constants the kernel holds."""
    kernel = step.kernel
    if type(kernel) not in (Gemm, MatMul) or kernel.b is None or kernel.b.ndim != 2:
        return False  # (a 1-D MatMul weight makes a vector, not a layer: the kernel's own run says what it does)
    if any(name and name not in constants for name in step.inputs[1:]):
        return False
    return _layer_bias(kernel, kernel.b.shape[1]) is not False


#: the most rows (images) the chain's buffers take; a larger batch runs the layers' own kernels, whose products
#: then dominate the per-call overhead the buffers save
MAX_ROWS = 64


class _Buffers:
    """The chain's layers laid out for ``rows`` input rows. Each hidden layer's output goes to a (width + 1, rows)
    buffer whose last row is a constant 1, which the next layer's bias row multiplies (module docstring). One row
    is worked as rows (vector times weights: ~15% faster than the transposed product on LeNet's 400 x 120); more
    rows are worked transposed (the weights' transpose times the input's): the output rows are then C-contiguous
    whatever the row count (NumPy's products need a contiguous ``out``), the next layer reads the buffer as its
    transpose (BLAS takes it as such, no copy), and only the first layer's bias is a finishing pass."""

    def __init__(self, chain: DenseChain, rows: int, fed_order: np.ndarray | None = None):
        kernels, dtype = chain.kernels, chain.dtype
        if len(kernels) == 1 and fed_order is None:
            raise ValueError("a one-layer chain has buffers only when fed (its bias is a weight row)")
        self.row_form = row_form = rows == 1
        widths = [kernel.b.shape[1] for kernel in kernels]
        buffers = [np.ones((width + 1, rows), dtype) for width in widths[:-1]]
        first_bias = _layer_bias(kernels[0], widths[0])
        first_weights = kernels[0].b
        if fed_order is not None:  # (DenseChain.fed: the input permuted and ending in a 1, the bias a weight row)
            extended = chain._extended(kernels[0])
            first_weights = np.concatenate([extended[:-1][fed_order], extended[-1:]])
            first_bias = None
        if first_bias is not None and not row_form:
            first_bias = first_bias[:, None]  # (over the transposed output's rows)
        # (what the layer reads, its weights, its output, its bias and activation passes, its curve); the first
        # layer reads the chain's input
        self.hidden = [(None if index == 0 else buffers[index - 1].T if row_form else buffers[index - 1],
                        ([first_weights, *chain.extended[1:]] if row_form else chain.transposed)[index],
                        buffers[index][:-1].T if row_form else buffers[index][:-1],
                        finisher((1, widths[index]) if row_form else (widths[index], rows), dtype,
                                 first_bias if index == 0 else None, kernel.act),
                        kernel.curve)
                       for index, kernel in enumerate(kernels[:-1])]
        # (what the last layer reads: None for the chain's input, with one layer -- only fed, its weights holding
        # its bias; its weights; its activation and normaliser)
        self.last = (buffers[-1].T, chain.extended[-1], kernels[-1].finish) if buffers else \
            (None, first_weights, kernels[-1].finish)


class DenseChain:
    """The dense layers ``kernels`` (each reading the one before) as one step's kernel: ``run(a)`` is the last
    layer's output. A (rows, K) input of the weights' float type, up to MAX_ROWS rows within the first kernel's
    size budget, runs through the chain's buffers (module docstring); anything else (a larger batch, another type
    or shape) runs the kernels in turn, with their checks. A chain of one layer (a PooledHead's single dense
    layer) has buffers only for ``fed`` input."""

    def __init__(self, node: Any, kernels: list[Gemm | MatMul], arguments: list[list[np.ndarray | None]]):
        self.node = node
        self.kernels = kernels
        self.arguments = arguments  # each kernel's constant operands, as the plan would pass them
        self.lock = threading.Lock()  # the buffers are shared by calls (the GUI runs models on worker threads)
        first = kernels[0]
        self.dtype = dtype = first.b.dtype
        self.width = first.b.shape[0]
        self.typed = all(k.b.dtype == dtype for k in kernels)
        # every layer after the first: its (K, N) weights with the bias as row K (zeros without one), a copy of
        # weights the kernel already holds, one row larger, so bounded by what the model's loading checked
        self.extended = [None] + [self._extended(kernel) for kernel in kernels[1:]]
        self._transposed: list[np.ndarray] | None = None  # (made on the first call of more than one row)
        self.buffers: dict[int, _Buffers] = {}

    @property
    def transposed(self) -> list[np.ndarray]:
        """The hidden layers' weights (the first one's, then the extended ones) transposed, for more than one row:
        contiguous copies (BLAS reads them faster than a transposed view), made once, when first needed -- a
        batch-1 model (the window's) never is, and keeps no second copy of its weights. (Called with the lock
        held, as _Buffers are made.)"""
        if self._transposed is None:
            self._transposed = [np.ascontiguousarray(weights.T)
                                for weights in [self.kernels[0].b, *self.extended[1:-1]]]
        return self._transposed

    def _extended(self, kernel: Gemm | MatMul) -> np.ndarray:
        width = kernel.b.shape[1]
        bias = _layer_bias(kernel, width)
        extended = np.zeros((kernel.b.shape[0] + 1, width), self.dtype)
        extended[:-1] = kernel.b
        if bias is not None:
            extended[-1] = bias
        return extended

    def run(self, a: np.ndarray, *_constants: np.ndarray | None) -> np.ndarray:
        if type(a) is np.ndarray and a.dtype is self.dtype and a.ndim == 2:
            buffers = self.buffers.get(a.shape[0])
            if buffers is not None and a.shape[1] == self.width:
                return self.through_buffers(a, buffers)
            rows = a.shape[0]
            if self.typed and 0 < rows <= MAX_ROWS and a.shape[1] == self.width and len(self.kernels) > 1 \
                    and a.size <= self.kernels[0].a_limit:
                with self.lock:
                    buffers = keep(self.buffers, rows, _Buffers(self, rows))
                return self.through_buffers(a, buffers)
        for kernel, arguments in zip(self.kernels, self.arguments, strict=True):
            a = kernel.run(a, *arguments)
        return a

    def fed(self, order: np.ndarray) -> tuple[np.ndarray, _Buffers]:
        """For one row that a fused producer writes straight into the returned (1, width + 1) input: value j of
        its first ``width`` is the chain's input element ``order[j]`` (the producer's own layout), the last a
        constant 1; and the buffers to pass with it to ``through_buffers``, whose first layer's weights are
        permuted to match and end in its bias row -- no fresh input array in the chain's order, no bias pass.
        (A copy of the first layer's weights, one row larger.)"""
        if not self.typed or sorted(order.tolist()) != list(range(self.width)):
            raise ValueError(f"the fed order is not a permutation of the chain's {self.width} inputs")
        fed_input = np.ones((1, self.width + 1), self.dtype)
        return fed_input, _Buffers(self, 1, fed_order=order)

    def specialize(self, a: np.ndarray, *constants: np.ndarray | None) -> Callable[..., np.ndarray] | None:
        """``run`` for inputs of ``a``'s shape and dtype through the chain's buffers for its rows, any other
        input through ``run`` (FastPlan.specialize): only where ``run`` would take those buffers. A chain of one
        layer hands back that layer's ``run`` (the chain's other inputs are the layer's)."""
        if len(self.kernels) == 1:
            return self.kernels[0].run
        if type(a) is not np.ndarray or a.dtype is not self.dtype or a.ndim != 2 or a.shape[1] != self.width:
            return None
        buffers = self.buffers.get(a.shape[0])
        if buffers is None:
            return None
        shape, dtype, through_buffers, general = a.shape, a.dtype, self.through_buffers, self.run

        def run(a: np.ndarray, *constants: np.ndarray | None) -> np.ndarray:
            if type(a) is not np.ndarray or a.shape != shape or a.dtype is not dtype:
                return general(a, *constants)
            return through_buffers(a, buffers)

        return run

    def through_buffers(self, a: np.ndarray, buffers: _Buffers) -> np.ndarray:
        """The chain's output for a (rows, K) ``a`` of the weights' type: each hidden layer into its buffer."""
        source, weights, last_finish = buffers.last
        with self.lock:
            row_form = buffers.row_form
            for reads, layer_weights, out, finish, curve in buffers.hidden:
                if row_form:
                    np.dot(a if reads is None else reads, layer_weights, out=out)
                else:
                    np.dot(layer_weights, a.T if reads is None else reads, out=out)
                finish(out)
                if curve is not None:  # (an absorbed Tanh or Sigmoid)
                    out[...] = curve(out)
            y = (a if source is None else source).dot(weights)  # fresh: the caller keeps it
        return last_finish(y)


def fuse_dense_chains(steps: list[Any], constants: dict[str, np.ndarray], graph_outputs: set[str]) -> list[Any]:
    """``steps`` with each run of two or more dense layers (Gemm / MatMul with constant weights and bias, each
    the sole reader of the one before, the hidden ones with no absorbed Softmax) made one DenseChain step in the
    first one's place (its inputs, the last one's outputs)."""
    _, readers = producers_and_readers(steps)
    dropped: set[int] = set()
    for step in steps:
        if id(step) in dropped or not chainable(step, constants) or step.kernel.normalizer is not None:
            continue
        chain = [step]
        while chain[-1].kernel.normalizer is None:
            reader = sole_reader(readers, chain[-1], graph_outputs)
            if reader is None or id(reader) in dropped or reader.inputs[0] != chain[-1].outputs[0] \
                    or not chainable(reader, constants) \
                    or reader.kernel.b.shape[0] != chain[-1].kernel.b.shape[1]:
                break
            chain.append(reader)
        if len(chain) < 2:
            continue
        arguments = [[constants[n] if n else None for n in s.inputs[1:]] for s in chain]
        step.kernel = DenseChain(step.node, [s.kernel for s in chain], arguments)
        step.outputs = list(chain[-1].outputs)
        step.fused = (*step.fused, *(t for s in chain[1:] for t in (*s.before, s.node.op_type, *s.fused)))
        dropped.update(id(s) for s in chain[1:])
    return [s for s in steps if id(s) not in dropped]
