"""Window geometry of the convolutions and poolings: attribute checks and the one checked ``as_strided``.

Strides, dilations, pads and kernel sizes come from the model file, which is untrusted. They are checked
against the ONNX spec once, when the kernel is built (``Geometry``), and the sizes that depend on the input
shape once per new shape, where each kernel builds its plan. ``checked_windows`` is the last line of defence
under all of that: ``as_strided`` does no bounds checking at all, so every strided window view in the engine is
made through it, and it refuses a view that would reach one byte outside its buffer.
"""

from __future__ import annotations

import math
import numbers
import weakref
from collections.abc import Sequence

import numpy as np
from numpy.lib.stride_tricks import as_strided

from .registry import Op

AUTO_PADS = ("NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID")

# kernels loop in Python over kernel taps (pooling with Indices, depthwise and transposed convolutions, one
# axis of a separable pooling): a file asking for more taps than this would run for minutes, so it is refused
MAX_TAPS = 4096


class WindowError(ValueError):
    """A strided window view that would leave its buffer: a geometry check upstream missed a case."""


def _extent(array: np.ndarray) -> int:
    """Bytes from ``array``'s first element to one past its farthest one (non-negative strides only)."""
    if array.size == 0:
        return 0
    return sum((n - 1) * s for n, s in zip(array.shape, array.strides, strict=True)) + array.itemsize


def stand_in(shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """A read-only array of ``shape`` and ``dtype`` that allocates nothing (one zero, broadcast): for asking a
    kernel's geometry checks and output shape about an input shape without making the input."""
    return np.broadcast_to(np.zeros((), dtype), shape)


def checked_windows(base: np.ndarray, shape: Sequence[int], strides: Sequence[int], *,
                    writeable: bool = False) -> np.ndarray:
    """``as_strided(base, shape, strides)`` after proving that the view stays inside ``base``'s memory.

    Every dimension must be >= 0, every stride (in bytes) >= 0, ``base`` must have no negative stride and
    the farthest byte the view reaches, ``sum((n - 1) * s) + itemsize``, must not pass the end of ``base``.
    Raises WindowError (a ValueError, which the kernels turn into a ModelError naming their node) otherwise.
    """
    shape = tuple(int(n) for n in shape)
    strides = tuple(int(s) for s in strides)
    if len(shape) == len(strides):  # an axis of one element never steps: its stride is free (and kept small)
        strides = tuple(0 if n == 1 else s for n, s in zip(shape, strides, strict=True))
    if len(shape) != len(strides):
        raise WindowError(f"window view of shape {shape} given {len(strides)} strides {strides}")
    if any(n < 0 for n in shape) or any(s < 0 for s in strides):
        raise WindowError(f"window view of shape {shape} with strides {strides}: negative size or stride")
    if any(s < 0 for s in base.strides):
        raise WindowError(f"window view over an array with negative strides {base.strides}")
    if math.prod(shape) > 0:
        reach = sum((n - 1) * s for n, s in zip(shape, strides, strict=True)) + base.itemsize
        if reach > _extent(base):
            raise WindowError(f"window view of shape {shape} with strides {strides} would reach byte {reach} of "
                              f"a buffer of {_extent(base)} bytes")
    return as_strided(base, shape, strides, writeable=writeable)


# ----------------------------------------------------------------------------------------------------------------
# attribute checks (load time)


def _describe(value: object) -> str:
    return repr(value.tolist()) if isinstance(value, np.ndarray) else repr(value)


def _as_int(value: object) -> int | None:
    """``value`` as an int if it is one (an ONNX INT, or a NumPy integer), else None (floats, strings, bools)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        return None
    return int(value)


def int_attr(op: Op, name: str, default: int, minimum: int | None = None,
             choices: Sequence[int] | None = None) -> int:
    """An integer attribute of ``op``, checked; a float, string or list is refused with a ModelError."""
    raw = op.attr(name)
    if raw is None:
        return default
    value = _as_int(raw)
    if value is None:
        raise op.fail(f"{name} {_describe(raw)} must be an integer")
    if choices is not None and value not in choices:
        raise op.fail(f"{name} {value} must be one of {list(choices)}")
    if minimum is not None and value < minimum:
        raise op.fail(f"{name} {value} must be >= {minimum}")
    return value


def ints_attr(op: Op, name: str, minimum: int, what: str) -> list[int] | None:
    """A list-of-integers attribute of ``op`` (None when absent or empty, which means the default), each value
    checked against ``minimum``; ``what`` says what the values must be, for the message."""
    raw = op.attr(name)
    if raw is None:
        return None
    if not isinstance(raw, (list, tuple)):  # an INT, a FLOAT, a STRING, a TENSOR: not the spec's INTS
        raise op.fail(f"{name} {_describe(raw)} must be a list of {what}")
    values = [_as_int(v) for v in raw]
    if any(v is None for v in values):
        raise op.fail(f"{name} {_describe(raw)} must be a list of {what}")
    if any(v < minimum for v in values):  # type: ignore[operator]
        raise op.fail(f"{name} {values} must be {what}")
    return values or None  # type: ignore[return-value]


def auto_pad_attr(op: Op) -> str:
    value = op.attr("auto_pad", "NOTSET")
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="replace")
    if value == "":
        value = "NOTSET"
    if value not in AUTO_PADS:
        raise op.fail(f"auto_pad {_describe(value)} must be one of {list(AUTO_PADS)}")
    return value


class Geometry:
    """The checked window attributes of a convolution or pooling node: kernel_shape, strides, dilations, pads
    and auto_pad. ``rank`` is the number of spatial axes when known at load time (from the weight or the
    kernel_shape), else the one the attributes agree on, else None (then fixed by the first input)."""

    def __init__(self, op: Op, rank: int | None = None, kernel: Sequence[int] | None = None,
                 dilations: bool = True):
        # the node's kernel owns this geometry: a strong reference back would make a reference cycle, and a
        # replaced model's kernels (weights, scratch buffers) would then wait for the cyclic garbage collector
        self._op = weakref.ref(op)
        self.auto_pad = auto_pad_attr(op)
        self.kernel_attr = ints_attr(op, "kernel_shape", 1, "positive integers")
        self.strides_attr = ints_attr(op, "strides", 1, "positive integers")
        self.dilations_attr = ints_attr(op, "dilations", 1, "positive integers") if dilations else None
        self.pads_attr = ints_attr(op, "pads", 0, "non-negative integers")
        if kernel is not None:
            kernel = [int(k) for k in kernel]
            if any(k < 1 for k in kernel):
                raise op.fail(f"kernel {kernel} (from the weight of shape) must be positive")
            if self.kernel_attr is not None and self.kernel_attr != kernel:
                raise op.fail(f"kernel_shape {self.kernel_attr} does not match the weight's kernel {kernel}")
            rank = len(kernel)
        elif self.kernel_attr is not None:
            if rank is not None and len(self.kernel_attr) != rank:
                raise op.fail(f"kernel_shape {self.kernel_attr} does not have {rank} spatial axes")
            rank = len(self.kernel_attr)
        lengths = {"strides": self.strides_attr, "dilations": self.dilations_attr}
        for name, values in lengths.items():
            if values is not None:
                if rank is None:
                    rank = len(values)
                elif len(values) != rank:
                    raise op.fail(f"{name} {values} must have {rank} values, one per spatial axis")
        if self.pads_attr is not None:
            if len(self.pads_attr) % 2 or (rank is not None and len(self.pads_attr) != 2 * rank):
                want = f"{2 * rank} values" if rank is not None else "an even number of values"
                raise op.fail(f"pads {self.pads_attr} must have {want}, a begin and an end per spatial axis")
            rank = len(self.pads_attr) // 2 if rank is None else rank
        self.rank = rank
        self.kernel = kernel if kernel is not None else self.kernel_attr

    @property
    def op(self) -> Op:
        return self._op()

    def resolve(self, rank: int, kernel: Sequence[int] | None = None
                ) -> tuple[list[int], list[int], list[int], list[int] | None]:
        """kernel, strides, dilations and explicit pads for ``rank`` spatial axes (run time, once per shape);
        ModelError when the attributes were made for another rank."""
        op = self.op
        if self.rank is not None and self.rank != rank:
            given = ", ".join(f"{name} {values}" for name, values in (
                ("kernel", self.kernel), ("strides", self.strides_attr), ("dilations", self.dilations_attr),
                ("pads", self.pads_attr)) if values is not None)
            raise op.fail(f"the input has {rank} spatial axes but {given} describe {self.rank}")
        kernel = list(kernel) if kernel is not None else self.kernel
        if kernel is None or len(kernel) != rank:
            raise op.fail(f"kernel {kernel} does not have {rank} spatial axes")
        if self.kernel_attr is not None and self.kernel_attr != list(kernel):
            raise op.fail(f"kernel_shape {self.kernel_attr} does not match the weight's kernel {list(kernel)}")
        if any(k < 1 for k in kernel):
            raise op.fail(f"kernel {list(kernel)} must be positive")
        strides = self.strides_attr or [1] * rank
        dilations = self.dilations_attr or [1] * rank
        return list(kernel), list(strides), list(dilations), self.pads_attr


def check_fits(op: Op, sizes: Sequence[int], begins: Sequence[int], ends: Sequence[int], kernel: Sequence[int],
               dilations: Sequence[int]) -> None:
    """ModelError when a (dilated) kernel is larger than the padded input along some axis."""
    for axis, (n, b, e, k, d) in enumerate(zip(sizes, begins, ends, kernel, dilations, strict=True)):
        span = (k - 1) * d + 1
        if span > n + b + e:
            raise op.fail(f"kernel {list(kernel)} with dilations {list(dilations)} spans {span} along spatial axis "
                          f"{axis}, more than the padded input's {n + b + e} (input size {n}, pads {b}+{e})")


def effective_steps(out: Sequence[int], kernel: Sequence[int], strides: Sequence[int], dilations: Sequence[int],
                    extents: Sequence[int] | None = None) -> tuple[list[int], list[int]]:
    """Strides and dilations with the ones that cannot matter made small: the stride of an axis with one output
    position, the dilation of an axis with a one-wide kernel. A file may set those to 2**62 (valid: the window
    still fits), which would overflow the int64 byte strides and slice steps NumPy works with. With the padded
    ``extents`` given, a stride is only lowered to a value that still gives one output position by the floor
    formula ``(extent - span) // stride + 1``, so a plan that recomputes its output sizes gets the same ones."""
    steps = []
    for axis, (s, o) in enumerate(zip(strides, out, strict=True)):
        if o > 1:
            steps.append(s)
        elif extents is None:
            steps.append(1)
        else:
            span = (kernel[axis] - 1) * dilations[axis] + 1
            steps.append(min(s, max(1, extents[axis] - span + 1)))
    return steps, [d if k > 1 else 1 for d, k in zip(dilations, kernel, strict=True)]


def check_taps(op: Op, taps: int, what: str) -> None:
    if taps > MAX_TAPS:
        raise op.fail(f"{what} has {taps} kernel taps, over the limit of {MAX_TAPS} this engine loops over")
