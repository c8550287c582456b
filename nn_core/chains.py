"""Elementwise chains run in place on a fresh array: one step of the fast plan instead of several.

A node whose kernel always hands back a new array of its own (a matmul, a binary arithmetic op, an inference
BatchNormalization...) is often read by one elementwise node only -- a bias Add after a MatMul, the Mul -> Add ->
Relu of a batch normalization written out, the Relu after a residual Add -- which reads it and writes a new array
of the same shape, read in turn by one node. Such a chain becomes one step: the head's kernel, then each follower
applied in place on the head's result (``np.add(y, c, out=y)``, ``np.maximum(y, 0, out=y)``). The values are the
same NumPy operations on the same operands, so results are bit-identical; what goes is a kernel call and a fresh
allocation (and its page faults, on large tensors) per follower.

A follower is applied in place only when that computes what its own kernel would: a floating-point result of
the head's dtype and shape (the constant broadcasts into it without growing it, and does not promote it).
Otherwise it runs its own kernel, out of place, as in the unfused plan.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from .ops.conv import Activation, make_activation
from .optimize import FUSABLE_ACTIVATIONS, activation_params

# kernels whose result is always a new array that nothing else holds, or a view of one (Conv: its plans write a
# fresh output, and a full-width plan hands back a strided view of it; multi-input Sum/Max/Min: a single input
# is handed back as it is, so those need two or more)
FRESH_RESULTS = {"Add", "Sub", "Mul", "Div", "MatMul", "Gemm", "BatchNormalization", "Conv"}
FRESH_WITH_TWO_INPUTS = {"Sum", "Max", "Min"}
# followers with a constant operand, applied in place with their ufunc (Div: float division only, checked)
IN_PLACE_BINARY: dict[str, np.ufunc] = {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply,
                                        "Div": np.divide, "Sum": np.add}
# one-input followers: in place where the kernel is that ufunc on a float array, else their kernel (erf,
# sigmoid: a new array, but no step of their own)
IN_PLACE_UNARY: dict[str, np.ufunc | None] = {"Exp": np.exp, "Tanh": np.tanh, "Neg": np.negative, "Abs": np.abs,
                                              "Sqrt": np.sqrt, "Erf": None, "Sigmoid": None}


class _Binary:
    """``y <op> other`` (or ``other <op> y``) in place when that is what the kernel computes; ``other`` is a
    constant, or (``side`` set) the chain step's run-time argument at that index."""

    def __init__(self, kernel: Any, ufunc: np.ufunc, constant: np.ndarray | None, y_first: bool,
                 side: int | None = None):
        self.kernel, self.ufunc, self.constant, self.y_first, self.side = kernel, ufunc, constant, y_first, side
        self.fits: dict[tuple, bool] = {}  # shapes and dtypes of y and the other operand -> in place is the same

    def _fits(self, y: np.ndarray, other: np.ndarray) -> bool:
        key = (y.shape, y.dtype, other.shape, other.dtype)
        fits = self.fits.get(key)
        if fits is None:
            fits = (y.dtype.kind == "f" and other.dtype == y.dtype and other.ndim <= y.ndim
                    and all(n in (1, m) for n, m in zip(other.shape[::-1], y.shape[::-1])))
            if len(self.fits) > 16:
                self.fits.clear()
            self.fits[key] = fits
        return fits

    def __call__(self, y: Any, args: tuple) -> Any:
        other = self.constant if self.side is None else args[self.side]
        if type(y) is np.ndarray and type(other) is np.ndarray and y.flags.writeable and self._fits(y, other) \
                and not np.may_share_memory(y, other):
            if self.y_first:
                return self.ufunc(y, other, out=y)
            return self.ufunc(other, y, out=y)
        return self.kernel.run(y, other) if self.y_first else self.kernel.run(other, y)


class _Unary:
    """A one-input elementwise follower: its ufunc in place on a writeable float array, else its kernel."""

    def __init__(self, kernel: Any, ufunc: np.ufunc | None):
        self.kernel, self.ufunc = kernel, ufunc

    def __call__(self, y: Any, args: tuple) -> Any:
        if self.ufunc is not None and type(y) is np.ndarray and y.flags.writeable and y.dtype.kind == "f" \
                and y.ndim:
            return self.ufunc(y, out=y)
        return self.kernel.run(y)


class _Activated:
    """A Relu / LeakyRelu / Clip follower, in place on a writeable float array, else its own kernel."""

    def __init__(self, kernel: Any, act: Activation):
        self.kernel, self.act = kernel, act

    def __call__(self, y: Any, args: tuple) -> Any:
        if type(y) is np.ndarray and y.flags.writeable and y.dtype.kind == "f" and y.ndim:
            self.act(y)
            return y
        return self.kernel.run(y)


class ChainKernel:
    """The head's kernel on the first ``head_args`` arguments, then each follower on its result (followers
    with a run-time operand read it from the later arguments)."""

    foldable = False

    def __init__(self, head: Any, head_args: int, followers: list[Callable[[Any, tuple], Any]]):
        self.head, self.head_args, self.followers = head, head_args, followers
        self.node = head.node

    def run(self, *args: Any) -> Any:
        y = self.head.run(*args[: self.head_args])
        for follower in self.followers:
            y = follower(y, args)
        return y


def _follower(step: Any, produced: str, constants: dict[str, np.ndarray], chain_inputs: list[str],
              ready: Callable[[str], bool]) -> Callable[[Any, tuple], Any] | None:
    """How ``step`` (the only reader of ``produced``) runs as a follower, or None if it cannot. A run-time
    operand is appended to ``chain_inputs`` (the chain step's inputs); it must be ``ready`` (computed before
    the chain's head runs, since the chain runs in the head's place)."""
    node = step.node
    if len(step.outputs) != 1 or not step.outputs[0] or node.domain not in ("", "ai.onnx"):
        return None
    if node.op_type in FUSABLE_ACTIVATIONS:
        if step.inputs[0] != produced or not all(n in constants for n in step.inputs[1:] if n):
            return None
        params = activation_params(node, constants)
        act = None if params is None else make_activation(FUSABLE_ACTIVATIONS[node.op_type], params)
        return None if act is None else _Activated(step.kernel, act)
    if node.op_type in IN_PLACE_UNARY:
        return _Unary(step.kernel, IN_PLACE_UNARY[node.op_type]) if step.inputs == [produced] else None
    ufunc = IN_PLACE_BINARY.get(node.op_type)
    if ufunc is None or len(step.inputs) != 2 or not all(step.inputs):
        return None
    first, second = step.inputs
    y_first = first == produced
    other = second if y_first else first
    if other in constants:
        return _Binary(step.kernel, ufunc, constants[other], y_first)
    if not ready(other):
        return None
    chain_inputs.append(other)
    return _Binary(step.kernel, ufunc, None, y_first, side=len(chain_inputs) - 1)


def _fresh_head(step: Any) -> bool:
    node = step.node
    if type(step.kernel) is ChainKernel or node.domain not in ("", "ai.onnx") or len(step.outputs) != 1:
        return False
    if node.op_type in FRESH_WITH_TWO_INPUTS:
        return len([n for n in step.inputs if n]) >= 2
    if node.op_type == "BatchNormalization":
        return not getattr(step.kernel, "training", True) and getattr(step.kernel, "output_count", 0) == 1
    return node.op_type in FRESH_RESULTS


def fuse_chains(steps: list[Any], constants: dict[str, np.ndarray], graph_outputs: set[str]) -> list[Any]:
    """Fold each chain of in-place followers into its head step (see the module's docstring)."""
    readers: dict[str, list[Any]] = {}
    for step in steps:
        for name in step.inputs:
            if name:
                readers.setdefault(name, []).append(step)
    producer = {name: index for index, step in enumerate(steps) for name in step.outputs if name}
    dropped: set[int] = set()
    for head_index, step in enumerate(steps):
        if id(step) in dropped or not _fresh_head(step):
            continue

        def ready(name: str, head_index: int = head_index) -> bool:
            return producer.get(name, -1) < head_index
        followers, kinds, chain_inputs = [], [], list(step.inputs)
        produced = step.outputs[0]
        while produced and produced not in graph_outputs:
            users = readers.get(produced, [])
            if len(users) != 1 or users[0].inputs.count(produced) != 1 or id(users[0]) in dropped:
                break
            follower = _follower(users[0], produced, constants, chain_inputs, ready)
            if follower is None:
                break
            followers.append(follower)
            kinds.append(users[0].node.op_type)
            dropped.add(id(users[0]))
            produced = users[0].outputs[0]
        if followers:
            step.kernel = ChainKernel(step.kernel, len(step.inputs), followers)
            step.inputs = chain_inputs
            step.outputs = [produced]
            step.fused = (*step.fused, *kinds)
    return [s for s in steps if id(s) not in dropped]
