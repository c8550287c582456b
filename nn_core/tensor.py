"""``Tensor``: an n-dimensional array type on NumPy storage, with the operations between tensors.

A ``Tensor`` wraps one ``np.ndarray`` and never copies it unless asked, so views (slices, reshapes, transposes,
broadcasts) share memory exactly where NumPy's would. Arithmetic follows NumPy broadcasting and dtype promotion;
every NumPy ufunc applied to a Tensor returns a Tensor (``np.exp(t)``), and ``np.asarray(t)`` hands back the
storage itself. Shape mismatches raise ``nn_core.errors.InputError`` naming both shapes, never a bare NumPy error.

Note: ``==`` and ``!=`` are *elementwise*, like NumPy: ``t == u`` is a boolean Tensor, so Tensors are unhashable
and ``if t == u:`` only works for single-element tensors. Use ``t.allclose(u)`` or ``(t == u).all()`` for a bool.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from nn_core.errors import InputError

ShapeLike = int | Sequence[int]
Axis = int | tuple[int, ...] | None


def _unwrap(value: Any) -> Any:
    """The NumPy storage of a Tensor (also inside index tuples); anything else unchanged."""
    if isinstance(value, Tensor):
        return value._data
    if isinstance(value, tuple):
        return tuple(_unwrap(item) for item in value)
    return value


def _wrap(value: Any) -> Any:
    """Wrap NumPy results (arrays and NumPy scalars) as Tensors; leave None and Python objects alone."""
    if isinstance(value, np.ndarray | np.generic):
        return Tensor(value)
    return value


def _shape_args(shape: tuple) -> tuple[int, ...]:
    """Accept both ``f(2, 3)`` and ``f((2, 3))``."""
    if len(shape) == 1 and not isinstance(shape[0], int | np.integer):
        return tuple(int(n) for n in shape[0])
    return tuple(int(n) for n in shape)


def _broadcast_shapes(op: str, *shapes: tuple[int, ...]) -> tuple[int, ...]:
    """``np.broadcast_shapes`` with an ``InputError`` that names every shape."""
    try:
        return np.broadcast_shapes(*shapes)
    except ValueError:
        named = " and ".join(str(tuple(s)) for s in shapes)
        raise InputError(f"{op}: shapes {named} cannot be broadcast together") from None


def _check_batch_axes(op: str, shape_a: tuple, shape_b: tuple, batch_a: tuple, batch_b: tuple) -> None:
    """Raise an ``InputError`` naming both full shapes when the batch (non-core) axes do not broadcast."""
    try:
        np.broadcast_shapes(batch_a, batch_b)
    except ValueError:
        raise InputError(f"{op}: shapes {shape_a} and {shape_b} have batch axes {batch_a} and {batch_b} "
                         "that cannot be broadcast together") from None


def _operator(ufunc: np.ufunc, reflected: bool = False) -> Callable[[Tensor, Any], Tensor]:
    """A binary operator method applying ``ufunc``; it runs through ``Tensor.__array_ufunc__``."""
    if reflected:
        return lambda self, other: ufunc(other, self)
    return lambda self, other: ufunc(self, other)


class Tensor:
    """An n-dimensional array: NumPy storage, NumPy semantics, engine errors. See the module docstring."""

    __slots__ = ("_data",)
    # Make ndarray's binary operators defer to us, so ``array + tensor`` is a Tensor too.
    __array_priority__ = 1000.0
    # Elementwise __eq__ makes Tensors unhashable, as ndarrays are.
    __hash__ = None  # type: ignore[assignment]

    def __init__(self, data: Any, dtype: Any = None, copy: bool = False) -> None:
        data = _unwrap(data)
        # np.asarray keeps an existing ndarray as is (no copy) when the dtype already matches.
        self._data: np.ndarray = np.array(data, dtype=dtype, copy=True) if copy else np.asarray(data, dtype=dtype)

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_numpy(cls, array: np.ndarray) -> Tensor:
        """Wrap ``array`` without copying: writes through either object are seen by the other."""
        if not isinstance(array, np.ndarray):
            raise TypeError(f"from_numpy expects an np.ndarray, got {type(array).__name__}")
        return cls(array)

    @classmethod
    def zeros(cls, *shape: ShapeLike, dtype: Any = np.float32) -> Tensor:
        return cls(np.zeros(_shape_args(shape), dtype=dtype))

    @classmethod
    def ones(cls, *shape: ShapeLike, dtype: Any = np.float32) -> Tensor:
        return cls(np.ones(_shape_args(shape), dtype=dtype))

    @classmethod
    def full(cls, shape: ShapeLike, fill_value: Any, dtype: Any = None) -> Tensor:
        """Like ``np.full``: the dtype is inferred from ``fill_value`` unless given."""
        return cls(np.full(_shape_args((shape,)), fill_value, dtype=dtype))

    @classmethod
    def arange(cls, start: float, stop: float | None = None, step: float = 1, dtype: Any = None) -> Tensor:
        return cls(np.arange(start, stop, step, dtype=dtype))

    @classmethod
    def randn(cls, *shape: ShapeLike, seed: int | None = None, dtype: Any = np.float32) -> Tensor:
        """Standard-normal samples; the same ``seed`` always gives the same tensor."""
        return cls(np.random.default_rng(seed).standard_normal(_shape_args(shape), dtype=dtype))

    # ------------------------------------------------------------------ NumPy interoperability
    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        """NumPy 2 protocol: ``copy=None`` copies only if the dtype needs it, ``False`` refuses, ``True`` always."""
        if dtype is None and not copy:
            return self._data
        # np.array implements exactly these copy semantics (including the ValueError for copy=False).
        return np.array(self._data, dtype=dtype, copy=copy)

    def __array_ufunc__(self, ufunc: np.ufunc, method: str, *inputs: Any, **kwargs: Any) -> Any:
        """Run any NumPy ufunc on the storage and wrap the result, so ``np.exp(t)`` is a Tensor."""
        if ufunc is np.matmul and method == "__call__" and not kwargs:  # ndarray @ Tensor: check the shapes
            return Tensor(inputs[0]).matmul(inputs[1])
        arrays = [_unwrap(x) for x in inputs]
        out = kwargs.get("out")
        if out is not None:
            kwargs["out"] = tuple(_unwrap(o) for o in out)
        try:
            result = getattr(ufunc, method)(*arrays, **kwargs)
        except ValueError:
            if method == "__call__":  # most likely a broadcast failure: say so with the shapes
                _broadcast_shapes(ufunc.__name__, *(np.shape(a) for a in arrays))
            raise
        if out is not None:  # results were written into the caller's own Tensors
            return out[0] if len(out) == 1 else out
        if isinstance(result, tuple):
            return tuple(_wrap(r) for r in result)
        return _wrap(result)

    def numpy(self) -> np.ndarray:
        """The storage itself (no copy)."""
        return self._data

    # ------------------------------------------------------------------ properties
    @property
    def shape(self) -> tuple[int, ...]:
        return self._data.shape

    @property
    def ndim(self) -> int:
        return self._data.ndim

    @property
    def size(self) -> int:
        return self._data.size

    @property
    def dtype(self) -> np.dtype:
        return self._data.dtype

    @property
    def itemsize(self) -> int:
        return self._data.itemsize

    @property
    def nbytes(self) -> int:
        return self._data.nbytes

    @property
    def strides(self) -> tuple[int, ...]:
        """Steps between neighbours along each axis, in elements (0 for a broadcast axis)."""
        return tuple(s // self.itemsize for s in self._data.strides)

    @property
    def byte_strides(self) -> tuple[int, ...]:
        """Steps between neighbours along each axis, in bytes (NumPy's ``strides``)."""
        return self._data.strides

    @property
    def is_contiguous(self) -> bool:
        """True when the elements are laid out in row-major (C) order without gaps."""
        return bool(self._data.flags.c_contiguous)

    def contiguous(self) -> Tensor:
        """``self`` if already C-contiguous, else a C-contiguous copy."""
        return self if self.is_contiguous else Tensor(np.ascontiguousarray(self._data))

    def copy(self) -> Tensor:
        return Tensor(self._data.copy())

    def astype(self, dtype: Any, copy: bool = True) -> Tensor:
        return Tensor(self._data.astype(dtype, copy=copy))

    def item(self) -> Any:
        return self._data.item()

    def tolist(self) -> Any:
        return self._data.tolist()

    # ------------------------------------------------------------------ container protocol
    def __repr__(self) -> str:
        body = np.array2string(self._data, separator=", ", prefix="Tensor(")
        return f"Tensor({body}, shape={self.shape}, dtype={self.dtype})"

    def __len__(self) -> int:
        if self.ndim == 0:
            raise TypeError("len() of a 0-d tensor")
        return self.shape[0]

    def __iter__(self) -> Iterator[Tensor]:
        """Iterate over the first axis, yielding views."""
        if self.ndim == 0:
            raise TypeError("iteration over a 0-d tensor")
        return (Tensor(row) for row in self._data)

    def __bool__(self) -> bool:
        return bool(self._data)  # NumPy raises for more than one element: the truth value is ambiguous

    def __float__(self) -> float:
        return float(self._data)

    def __int__(self) -> int:
        return int(self._data)

    def __getitem__(self, key: Any) -> Tensor:
        """NumPy indexing: basic indices (ints, slices, None, ...) give views; fancy/boolean ones give copies."""
        return Tensor(self._data[_unwrap(key)])

    def __setitem__(self, key: Any, value: Any) -> None:
        self._data[_unwrap(key)] = _unwrap(value)

    # ------------------------------------------------------------------ shape manipulation
    def reshape(self, *shape: ShapeLike) -> Tensor:
        """New shape with the same elements; one dimension may be -1. A view whenever NumPy can make one."""
        target = _shape_args(shape)
        try:
            return Tensor(self._data.reshape(target))
        except ValueError:
            raise InputError(f"reshape: cannot reshape shape {self.shape} ({self.size} elements) "
                             f"into {target}") from None

    def transpose(self, *axes: int | Sequence[int]) -> Tensor:
        """Permute the axes (reverse them when none are given); always a view."""
        if not axes:
            return Tensor(self._data.transpose())
        order = _shape_args(axes)
        if sorted(a + self.ndim if a < 0 else a for a in order) != list(range(self.ndim)):
            raise InputError(f"transpose: axes {order} are not a permutation of the {self.ndim} axes "
                             f"of shape {self.shape}")
        return Tensor(self._data.transpose(order))

    def permute(self, *dims: int | Sequence[int]) -> Tensor:
        """``transpose`` with every axis named explicitly (torch spelling)."""
        if not dims and self.ndim:
            raise InputError(f"permute: name all {self.ndim} axes of shape {self.shape}")
        return self.transpose(*dims) if dims else self

    @property
    def T(self) -> Tensor:  # noqa: N802 - the conventional name
        return self.transpose()

    def squeeze(self, axis: Axis = None) -> Tensor:
        """Drop the given length-1 axes (all of them when ``axis`` is None)."""
        try:
            return Tensor(np.squeeze(self._data, axis=axis))
        except ValueError:
            raise InputError(f"squeeze: axis {axis} of shape {self.shape} does not have length 1") from None

    def unsqueeze(self, axis: int) -> Tensor:
        """Insert a length-1 axis at ``axis`` (negative counts from the end of the *result*)."""
        return Tensor(np.expand_dims(self._data, axis))

    def flatten(self, start_dim: int = 0, end_dim: int = -1) -> Tensor:
        """Merge axes ``start_dim..end_dim`` (inclusive) into one; a view when possible."""
        if self.ndim == 0:
            return self.reshape(1)
        start, end = start_dim % self.ndim, end_dim % self.ndim
        if start > end:
            raise InputError(f"flatten: start_dim {start_dim} comes after end_dim {end_dim} for shape {self.shape}")
        merged = int(np.prod(self.shape[start:end + 1]))  # not -1: that is ambiguous for empty tensors
        return self.reshape(self.shape[:start] + (merged,) + self.shape[end + 1:])

    def broadcast_to(self, *shape: ShapeLike) -> Tensor:
        """A read-only view repeating length-1 axes (stride 0) to reach ``shape``."""
        return self._broadcast_view(_shape_args(shape), "broadcast_to")

    def _broadcast_view(self, target: tuple[int, ...], op: str) -> Tensor:
        if self.ndim > len(target) or _broadcast_shapes(op, self.shape, target) != target:
            raise InputError(f"{op}: shape {self.shape} cannot be broadcast to {target}")
        return Tensor(np.broadcast_to(self._data, target))

    def expand(self, *shape: ShapeLike) -> Tensor:
        """``broadcast_to`` where -1 keeps that (trailing-aligned) dimension of ``self``."""
        target = list(_shape_args(shape))
        offset = len(target) - self.ndim
        for i, n in enumerate(target):
            if n == -1:
                if i < offset:
                    raise InputError(f"expand: -1 at new leading axis {i} of {tuple(target)} (from {self.shape})")
                target[i] = self.shape[i - offset]
        return self._broadcast_view(tuple(target), "expand")

    # ------------------------------------------------------------------ elementwise arithmetic and comparisons
    # All of these go through __array_ufunc__, which wraps results and explains broadcast failures.
    __add__, __radd__ = _operator(np.add), _operator(np.add, reflected=True)
    __sub__, __rsub__ = _operator(np.subtract), _operator(np.subtract, reflected=True)
    __mul__, __rmul__ = _operator(np.multiply), _operator(np.multiply, reflected=True)
    __truediv__, __rtruediv__ = _operator(np.true_divide), _operator(np.true_divide, reflected=True)
    __floordiv__, __rfloordiv__ = _operator(np.floor_divide), _operator(np.floor_divide, reflected=True)
    __mod__, __rmod__ = _operator(np.remainder), _operator(np.remainder, reflected=True)
    __pow__, __rpow__ = _operator(np.power), _operator(np.power, reflected=True)
    # Comparisons are elementwise and return boolean Tensors (see the module docstring).
    __eq__, __ne__ = _operator(np.equal), _operator(np.not_equal)  # type: ignore[assignment]
    __lt__, __le__ = _operator(np.less), _operator(np.less_equal)
    __gt__, __ge__ = _operator(np.greater), _operator(np.greater_equal)

    def __neg__(self) -> Tensor:
        return np.negative(self)

    def __pos__(self) -> Tensor:
        return self

    def __abs__(self) -> Tensor:
        return np.absolute(self)

    def allclose(self, other: Any, rtol: float = 1e-5, atol: float = 1e-8) -> bool:
        """True when every element is within ``atol + rtol * |other|`` (after broadcasting)."""
        other = _unwrap(other)
        _broadcast_shapes("allclose", self.shape, np.shape(other))
        return bool(np.allclose(self._data, other, rtol=rtol, atol=atol))

    # ------------------------------------------------------------------ math helpers
    def exp(self) -> Tensor:
        return np.exp(self)

    def log(self) -> Tensor:
        return np.log(self)

    def sqrt(self) -> Tensor:
        return np.sqrt(self)

    def tanh(self) -> Tensor:
        return np.tanh(self)

    def sigmoid(self) -> Tensor:
        """1 / (1 + e^-x), computed from e^-|x| so that large |x| neither overflows nor warns."""
        x = self._data if self.dtype.kind in "fc" else self._data.astype(np.float64)
        e = np.exp(-np.abs(x))
        return Tensor(np.where(x >= 0, 1 / (1 + e), e / (1 + e)).astype(x.dtype, copy=False))

    def relu(self) -> Tensor:
        return Tensor(np.maximum(self._data, self.dtype.type(0)))

    def clip(self, min: Any = None, max: Any = None) -> Tensor:  # noqa: A002 - mirrors np.clip / torch.clamp
        return Tensor(np.clip(self._data, _unwrap(min), _unwrap(max)))

    # ------------------------------------------------------------------ reductions
    def sum(self, axis: Axis = None, keepdims: bool = False) -> Tensor:
        return Tensor(self._data.sum(axis=axis, keepdims=keepdims))

    def mean(self, axis: Axis = None, keepdims: bool = False) -> Tensor:
        return Tensor(self._data.mean(axis=axis, keepdims=keepdims))

    def prod(self, axis: Axis = None, keepdims: bool = False) -> Tensor:
        return Tensor(self._data.prod(axis=axis, keepdims=keepdims))

    def max(self, axis: Axis = None, keepdims: bool = False) -> Tensor:
        return Tensor(self._data.max(axis=axis, keepdims=keepdims))

    def min(self, axis: Axis = None, keepdims: bool = False) -> Tensor:
        return Tensor(self._data.min(axis=axis, keepdims=keepdims))

    def argmax(self, axis: int | None = None, keepdims: bool = False) -> Tensor:
        """Index of the first maximum (into the flattened tensor when ``axis`` is None)."""
        return Tensor(self._data.argmax(axis=axis, keepdims=keepdims))

    def argmin(self, axis: int | None = None, keepdims: bool = False) -> Tensor:
        return Tensor(self._data.argmin(axis=axis, keepdims=keepdims))

    # ------------------------------------------------------------------ linear algebra
    def matmul(self, other: Any) -> Tensor:
        """``np.matmul``: a 1-D operand is promoted to a matrix and the added axis removed; batch axes broadcast."""
        a, b = self._data, np.asarray(_unwrap(other))
        if a.ndim == 0 or b.ndim == 0:
            raise InputError(f"matmul: shapes {a.shape} and {b.shape}: scalar operands are not allowed, use *")
        k_a = a.shape[-1]
        k_b = b.shape[0] if b.ndim == 1 else b.shape[-2]
        if k_a != k_b:
            raise InputError(f"matmul: shapes {a.shape} and {b.shape} are not aligned: {k_a} != {k_b}")
        _check_batch_axes("matmul", a.shape, b.shape, a.shape[:-2], b.shape[:-2])
        return Tensor(np.matmul(a, b))

    def __matmul__(self, other: Any) -> Tensor:
        return self.matmul(other)

    def __rmatmul__(self, other: Any) -> Tensor:
        return Tensor(other).matmul(self)

    def dot(self, other: Any) -> Tensor:
        """``np.dot`` for 1-D and 2-D operands: vector·vector is a 0-d scalar, otherwise a matrix product."""
        a, b = self._data, np.asarray(_unwrap(other))
        if a.ndim not in (1, 2) or b.ndim not in (1, 2):
            raise InputError(f"dot: shapes {a.shape} and {b.shape}: dot takes 1-D or 2-D operands only; "
                             "use matmul (batched) or tensordot for more dimensions")
        k_b = b.shape[0]
        if a.shape[-1] != k_b:
            raise InputError(f"dot: shapes {a.shape} and {b.shape} are not aligned: {a.shape[-1]} != {k_b}")
        return Tensor(np.dot(a, b))

    def cross(self, other: Any, axis: int = -1) -> Tensor:
        """Cross product of 3-vectors laid along ``axis``; the other axes broadcast as a batch.

        The result keeps the components along ``axis`` (counted in the result's own dimensions).
        """
        a, b = self._data, np.asarray(_unwrap(other))
        shapes = f"shapes {a.shape} and {b.shape}"
        if a.ndim == 0 or b.ndim == 0:
            raise InputError(f"cross: {shapes}: operands must be vectors, not scalars")
        try:
            a, b = np.moveaxis(a, axis, -1), np.moveaxis(b, axis, -1)
        except np.exceptions.AxisError:
            raise InputError(f"cross: axis {axis} is out of range for {shapes}") from None
        if a.shape[-1] != 3 or b.shape[-1] != 3:
            hint = " (2-vector cross products are not supported: append a zero z component)" if 2 in (
                a.shape[-1], b.shape[-1]) else ""
            raise InputError(f"cross: {shapes} must both have 3 components along axis {axis}, "
                             f"got {a.shape[-1]} and {b.shape[-1]}{hint}")
        _check_batch_axes("cross", self.shape, np.shape(other), a.shape[:-1], b.shape[:-1])
        a0, a1, a2 = a[..., 0], a[..., 1], a[..., 2]
        b0, b1, b2 = b[..., 0], b[..., 1], b[..., 2]
        result = np.stack([a1 * b2 - a2 * b1, a2 * b0 - a0 * b2, a0 * b1 - a1 * b0], axis=-1)
        return Tensor(np.moveaxis(result, -1, axis))

    def outer(self, other: Any) -> Tensor:
        """``np.outer``: both operands are flattened; result[i, j] = self[i] * other[j]."""
        a, b = self._data.ravel(), np.ravel(_unwrap(other))
        return Tensor(a[:, None] * b[None, :])

    def tensordot(self, other: Any, axes: int | tuple[Sequence[int], Sequence[int]] = 2) -> Tensor:
        """``np.tensordot``: sum products over the last ``axes`` axes of self and the first of other,
        or over the explicitly paired axes ``(axes_of_self, axes_of_other)``."""
        a, b = self._data, np.asarray(_unwrap(other))
        if isinstance(axes, int | np.integer):
            if not 0 <= axes <= min(a.ndim, b.ndim):
                raise InputError(f"tensordot: cannot contract {axes} axes of shapes {a.shape} and {b.shape}")
            axes_a, axes_b = list(range(a.ndim - axes, a.ndim)), list(range(axes))
        else:
            axes_a, axes_b = ([ax] if isinstance(ax, int | np.integer) else list(ax) for ax in axes)
        try:
            dims_a, dims_b = tuple(a.shape[i] for i in axes_a), tuple(b.shape[i] for i in axes_b)
        except IndexError:
            raise InputError(f"tensordot: axes {axes} are out of range for shapes {a.shape} and {b.shape}") from None
        if dims_a != dims_b:
            raise InputError(f"tensordot: shapes {a.shape} and {b.shape} differ on the contracted axes "
                             f"{tuple(axes_a)} and {tuple(axes_b)}: {dims_a} != {dims_b}")
        return Tensor(np.tensordot(a, b, axes=(axes_a, axes_b)))
