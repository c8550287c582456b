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

# kernels whose result is always a new array that nothing else holds (multi-input Sum/Max/Min: a single input
# is handed back as it is, so those need two or more)
FRESH_RESULTS = {"Add", "Sub", "Mul", "Div", "MatMul", "Gemm", "BatchNormalization"}
FRESH_WITH_TWO_INPUTS = {"Sum", "Max", "Min"}
# followers with a constant operand, applied in place with their ufunc (Div: float division only, checked)
IN_PLACE_BINARY: dict[str, np.ufunc] = {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply,
                                        "Div": np.divide}


class _Binary:
    """``y <op> constant`` (or ``constant <op> y``) in place when that is what the kernel computes."""

    def __init__(self, kernel: Any, ufunc: np.ufunc, constant: np.ndarray, y_first: bool):
        self.kernel, self.ufunc, self.constant, self.y_first = kernel, ufunc, constant, y_first
        self.fits: dict[tuple, bool] = {}  # (shape, dtype) of y -> in place computes the same

    def _fits(self, y: np.ndarray) -> bool:
        key = (y.shape, y.dtype)
        fits = self.fits.get(key)
        if fits is None:
            c = self.constant
            fits = (y.dtype.kind == "f" and c.dtype == y.dtype and c.ndim <= y.ndim
                    and all(n in (1, m) for n, m in zip(c.shape[::-1], y.shape[::-1])))
            if len(self.fits) > 16:
                self.fits.clear()
            self.fits[key] = fits
        return fits

    def __call__(self, y: Any) -> Any:
        if type(y) is np.ndarray and y.flags.writeable and self._fits(y):
            if self.y_first:
                return self.ufunc(y, self.constant, out=y)
            return self.ufunc(self.constant, y, out=y)
        return self.kernel.run(y, self.constant) if self.y_first else self.kernel.run(self.constant, y)


class _Activated:
    """A Relu / LeakyRelu / Clip follower, in place on a writeable float array, else its own kernel."""

    def __init__(self, kernel: Any, act: Activation):
        self.kernel, self.act = kernel, act

    def __call__(self, y: Any) -> Any:
        if type(y) is np.ndarray and y.flags.writeable and y.dtype.kind == "f" and y.ndim:
            self.act(y)
            return y
        return self.kernel.run(y)


class ChainKernel:
    """The head's kernel, then each follower on its result. ``head`` is kept for what the plan reports."""

    foldable = False

    def __init__(self, head: Any, followers: list[Callable[[Any], Any]]):
        self.head, self.followers = head, followers
        self.node = head.node

    def run(self, *args: Any) -> Any:
        y = self.head.run(*args)
        for follower in self.followers:
            y = follower(y)
        return y


def _follower(step: Any, produced: str, constants: dict[str, np.ndarray]) -> Callable[[Any], Any] | None:
    """How the step ``step`` (the only reader of ``produced``) runs as a follower, or None if it cannot."""
    node = step.node
    if len(step.outputs) != 1 or not step.outputs[0]:
        return None
    if node.op_type in FUSABLE_ACTIVATIONS and len([n for n in step.inputs if n]) >= 1 and \
            step.inputs[0] == produced and all(n in constants for n in step.inputs[1:] if n):
        params = activation_params(node, constants)
        act = None if params is None else make_activation(FUSABLE_ACTIVATIONS[node.op_type], params)
        return None if act is None else _Activated(step.kernel, act)
    ufunc = IN_PLACE_BINARY.get(node.op_type)
    if ufunc is None or len(step.inputs) != 2 or node.domain not in ("", "ai.onnx"):
        return None
    first, second = step.inputs
    if first == produced and second in constants and second != produced:
        return _Binary(step.kernel, ufunc, constants[second], True)
    if second == produced and first in constants:
        return _Binary(step.kernel, ufunc, constants[first], False)
    return None


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
    dropped: set[int] = set()
    for step in steps:
        if id(step) in dropped or not _fresh_head(step):
            continue
        followers, kinds = [], []
        produced = step.outputs[0]
        while produced and produced not in graph_outputs:
            users = readers.get(produced, [])
            if len(users) != 1 or users[0].inputs.count(produced) != 1 or id(users[0]) in dropped:
                break
            follower = _follower(users[0], produced, constants)
            if follower is None:
                break
            followers.append(follower)
            kinds.append(users[0].node.op_type)
            dropped.add(id(users[0]))
            produced = users[0].outputs[0]
        if followers:
            step.kernel = ChainKernel(step.kernel, followers)
            step.outputs = [produced]
            step.fused = (*step.fused, *kinds)
    return [s for s in steps if id(s) not in dropped]
