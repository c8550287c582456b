"""``Tensor``: eager autograd on the engine's own kernels, to write a layer by hand and see its gradient.

Every operation on a Tensor runs the registered ONNX kernel for it: ``x @ w`` is MatMul, ``x + b`` is Add (with
NumPy broadcasting), ``x.sum(axis=1)`` is ReduceSum, ``x[1:, 0]`` is Slice and Gather, ``x.conv2d(w)`` is Conv.
When an input requires a gradient, the result remembers the kernel that made it and its inputs: that is the tape,
micrograd style. ``loss.backward()`` sorts the tape and calls each kernel's ``backward``, the very rules
``Model.vjp`` uses on a loaded graph, adding the gradients into ``.grad`` of every tensor that requires one. No
derivative is written in this file: an operation whose kernel has no rule raises ``UnsupportedOperatorError``.

    w = Tensor.randn(3, 2, seed=0, requires_grad=True)
    loss = (Tensor([[1.0, 2.0, 3.0]]) @ w).relu().sum()
    loss.backward()
    w.grad  # d loss / d w: an ndarray shaped like w
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from .errors import InputError, UnsupportedOperatorError
from .ops import load_all_kernels
from .ops.registry import MAX_OPSET, NodeSpec, Op, resolve

#: the opset every kernel is taken at (there, axes, shapes and slice bounds are inputs, not attributes)
OPSET = MAX_OPSET
_KERNELS: dict[tuple, Op] = {}  # one kernel per (op type, number of inputs, attributes), built on first use


def kernel(op_type: str, arity: int, attrs: dict[str, Any]) -> Op:
    """The kernel of ``op_type`` for ``arity`` inputs and these attributes, built once and then reused."""
    key = (op_type, arity, tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in attrs.items())))
    op = _KERNELS.get(key)
    if op is None:
        load_all_kernels()
        cls = resolve(op_type, OPSET)
        if cls is None:
            raise UnsupportedOperatorError(f"the engine has no kernel for {op_type}")
        spec = NodeSpec(op_type, inputs=[f"input{i}" for i in range(arity)], outputs=["output"], attrs=attrs,
                        opset=OPSET)
        op = _KERNELS[key] = cls(spec)
    return op


def apply(op_type: str, *inputs: Tensor | np.ndarray, **attrs: Any) -> Tensor:
    """Run the ONNX operator ``op_type`` on ``inputs`` (Tensors; plain arrays for shapes, axes and indices) and,
    when an input requires a gradient, record the run on the result."""
    arrays = [x.data if isinstance(x, Tensor) else x for x in inputs]
    try:
        op = kernel(op_type, len(inputs), attrs)
        result = op.run(*arrays)
    except (InputError, UnsupportedOperatorError):
        raise
    except Exception as exc:  # the kernel's complaint, said as a complaint about the operands
        shapes = ", ".join(str(np.shape(a)) for a in arrays)
        raise InputError(f"{op_type} of shapes {shapes}: {exc}") from exc
    out = Tensor(result[0] if isinstance(result, tuple) else result)
    if any(isinstance(x, Tensor) and x.requires_grad for x in inputs):
        out.requires_grad, out._op, out._inputs = True, op, inputs
    return out


def _ints(values: int | Sequence[int]) -> np.ndarray:
    return np.array([values] if isinstance(values, int | np.integer) else list(values), dtype=np.int64)


def _shape_args(shape: tuple) -> tuple[int, ...]:
    """Accept both ``f(2, 3)`` and ``f((2, 3))``."""
    if len(shape) == 1 and not isinstance(shape[0], int | np.integer):
        return tuple(int(n) for n in shape[0])
    return tuple(int(n) for n in shape)


def _pair(value: int | Sequence[int]) -> list[int]:
    return [int(value)] * 2 if isinstance(value, int | np.integer) else [int(v) for v in value]


class Tensor:
    """An array (``.data``) that can require a gradient (``.grad``) and remembers the kernel that made it."""

    __slots__ = ("data", "grad", "requires_grad", "_op", "_inputs")
    __array_ufunc__ = None  # ``ndarray + Tensor`` asks Tensor.__radd__, so the operation is recorded too

    def __init__(self, data: Any, dtype: Any = None, requires_grad: bool = False) -> None:
        self.data: np.ndarray = np.asarray(data.data if isinstance(data, Tensor) else data, dtype=dtype)
        if requires_grad and self.data.dtype.kind != "f":
            raise InputError(f"only floating-point tensors can require a gradient, not {self.data.dtype}")
        self.grad: np.ndarray | None = None
        self.requires_grad = requires_grad
        self._op: Op | None = None  # the kernel that computed this tensor, None for a leaf
        self._inputs: tuple = ()  # its inputs: Tensors, or arrays of shapes, axes and indices

    # ------------------------------------------------------------------ construction and NumPy interop
    @classmethod
    def zeros(cls, *shape: int, dtype: Any = np.float32, requires_grad: bool = False) -> Tensor:
        return cls(np.zeros(_shape_args(shape), dtype), requires_grad=requires_grad)

    @classmethod
    def ones(cls, *shape: int, dtype: Any = np.float32, requires_grad: bool = False) -> Tensor:
        return cls(np.ones(_shape_args(shape), dtype), requires_grad=requires_grad)

    @classmethod
    def randn(cls, *shape: int, seed: int | None = None, dtype: Any = np.float32,
              requires_grad: bool = False) -> Tensor:
        """Standard-normal samples; the same ``seed`` always gives the same tensor."""
        data = np.random.default_rng(seed).standard_normal(_shape_args(shape)).astype(dtype)
        return cls(data, requires_grad=requires_grad)

    @classmethod
    def arange(cls, start: float, stop: float | None = None, step: float = 1, dtype: Any = None) -> Tensor:
        return cls(np.arange(start, stop, step, dtype=dtype))

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        return self.data if dtype is None and not copy else np.array(self.data, dtype=dtype, copy=copy)

    def numpy(self) -> np.ndarray:
        """The storage itself (no copy)."""
        return self.data

    def item(self) -> Any:
        return self.data.item()

    def tolist(self) -> Any:
        return self.data.tolist()

    def detach(self) -> Tensor:
        """The same values, cut from the tape: nothing flows back through the result."""
        return Tensor(self.data)

    shape = property(lambda self: self.data.shape)
    ndim = property(lambda self: self.data.ndim)
    size = property(lambda self: self.data.size)
    dtype = property(lambda self: self.data.dtype)

    def __repr__(self) -> str:
        body = np.array2string(self.data, separator=", ", prefix="Tensor(")
        return f"Tensor({body}{', requires_grad=True' if self.requires_grad else ''})"

    def __len__(self) -> int:
        if self.ndim == 0:
            raise TypeError("len() of a 0-d tensor")
        return self.shape[0]

    def __iter__(self) -> Iterator[Tensor]:
        return (self[i] for i in range(len(self)))

    def __float__(self) -> float:
        return float(self.data.item())

    # ------------------------------------------------------------------ gradients
    def backward(self, grad: Any = None) -> None:
        """Add d(self)/d(t), weighted by ``grad`` (1 for a single value), to ``t.grad`` for every tensor t on
        this tensor's tape that requires a gradient."""
        if not self.requires_grad:
            raise InputError("backward: no input of this tensor requires a gradient")
        if grad is None and self.size != 1:
            raise InputError(f"backward: shape {self.shape} is not a single value; pass grad= of that shape")
        grad = np.ones_like(self.data) if grad is None else np.asarray(Tensor(grad).data, self.dtype)
        if grad.shape != self.shape:
            raise InputError(f"backward: grad of shape {grad.shape} for a tensor of shape {self.shape}")
        grads = {id(self): grad}  # gradient of each tensor reached so far, summed over its uses
        for t in reversed(self._tape()):  # every use of a tensor is handled before the tensor itself
            g = grads.pop(id(t), None)
            if g is None:
                continue
            if t.grad is None:
                t.grad = np.zeros_like(t.data)
            t.grad += g
            if t._op is None:
                continue
            arrays = [x.data if isinstance(x, Tensor) else x for x in t._inputs]
            for x, gx in zip(t._inputs, t._op.backward(arrays, [t.data], [g])):
                if isinstance(x, Tensor) and x.requires_grad and gx is not None:
                    grads[id(x)] = grads[id(x)] + gx if id(x) in grads else gx

    def _tape(self) -> list[Tensor]:
        """The tensors this one was computed from that require a gradient, inputs before results."""
        order: list[Tensor] = []
        seen: set[int] = set()
        stack: list[tuple[Tensor, bool]] = [(self, False)]
        while stack:  # depth first, without recursion (a tape can be deeper than Python's stack)
            t, inputs_done = stack.pop()
            if inputs_done:
                order.append(t)
            elif id(t) not in seen:
                seen.add(id(t))
                stack.append((t, True))
                stack.extend((x, False) for x in t._inputs if isinstance(x, Tensor) and x.requires_grad)
        return order

    def zero_grad(self) -> Tensor:
        """Forget the accumulated gradient (before the next backward of a training step)."""
        self.grad = None
        return self

    # ------------------------------------------------------------------ arithmetic (NumPy broadcasting)
    def _lift(self, other: Any) -> Tensor:
        """A constant operand as a Tensor of this tensor's dtype (or the wider one NumPy would pick)."""
        if isinstance(other, Tensor):
            return other
        other = other if np.isscalar(other) else np.asarray(other)
        return Tensor(np.asarray(other, dtype=np.result_type(self.data, other)))

    def __add__(self, other: Any) -> Tensor:
        return apply("Add", self, self._lift(other))

    def __radd__(self, other: Any) -> Tensor:
        return apply("Add", self._lift(other), self)

    def __sub__(self, other: Any) -> Tensor:
        return apply("Sub", self, self._lift(other))

    def __rsub__(self, other: Any) -> Tensor:
        return apply("Sub", self._lift(other), self)

    def __mul__(self, other: Any) -> Tensor:
        return apply("Mul", self, self._lift(other))

    def __rmul__(self, other: Any) -> Tensor:
        return apply("Mul", self._lift(other), self)

    def __truediv__(self, other: Any) -> Tensor:
        return apply("Div", self, self._lift(other))

    def __rtruediv__(self, other: Any) -> Tensor:
        return apply("Div", self._lift(other), self)

    def __pow__(self, other: Any) -> Tensor:
        return apply("Pow", self, self._lift(other))

    def __rpow__(self, other: Any) -> Tensor:
        return apply("Pow", self._lift(other), self)

    def __neg__(self) -> Tensor:
        return apply("Neg", self)

    # ------------------------------------------------------------------ products
    def __matmul__(self, other: Any) -> Tensor:
        return apply("MatMul", self, self._lift(other))

    def __rmatmul__(self, other: Any) -> Tensor:
        return apply("MatMul", self._lift(other), self)

    matmul = __matmul__

    def dot(self, other: Any) -> Tensor:
        """``np.dot`` of 1-D and 2-D operands (vector . vector is a 0-d tensor): a MatMul."""
        other = self._lift(other)
        if self.ndim not in (1, 2) or other.ndim not in (1, 2):
            raise InputError(f"dot: shapes {self.shape} and {other.shape}: dot takes 1-D or 2-D operands; "
                             "use @ for batches")
        return apply("MatMul", self, other)

    def cross(self, other: Any, axis: int = -1) -> Tensor:
        """Cross product of 3-vectors laid along ``axis`` (other axes broadcast): a x b = a[yzx] b[zxy] -
        a[zxy] b[yzx], with the rotations as Gathers."""
        other = self._lift(other)
        if any(t.ndim == 0 or not -t.ndim <= axis < t.ndim or t.shape[axis] != 3 for t in (self, other)):
            raise InputError(f"cross: shapes {self.shape} and {other.shape} must both have 3 components on "
                             f"axis {axis}")
        yzx, zxy = np.array([1, 2, 0]), np.array([2, 0, 1])

        def turn(t: Tensor, order: np.ndarray) -> Tensor:
            return apply("Gather", t, order, axis=axis)

        return turn(self, yzx) * turn(other, zxy) - turn(self, zxy) * turn(other, yzx)

    def gemm(self, b: Tensor, c: Tensor | None = None, alpha: float = 1.0, beta: float = 1.0,
             trans_a: bool = False, trans_b: bool = False) -> Tensor:
        """ONNX Gemm: ``alpha * self' @ b' + beta * c`` for 2-D operands (' transposes when asked)."""
        inputs = (self, self._lift(b)) + (() if c is None else (self._lift(c),))
        return apply("Gemm", *inputs, alpha=float(alpha), beta=float(beta), transA=int(trans_a), transB=int(trans_b))

    def linear(self, weight: Tensor, bias: Tensor | None = None) -> Tensor:
        """``self @ weight.T + bias`` with ``weight`` shaped (out, in), as in nn_core.layers.Linear: one Gemm."""
        return self.gemm(weight, bias, trans_b=True)

    # ------------------------------------------------------------------ reductions
    def _reduce(self, op_type: str, axis: int | Sequence[int] | None, keepdims: bool) -> Tensor:
        axes = () if axis is None else (_ints(axis),)
        return apply(op_type, self, *axes, keepdims=int(keepdims))

    def sum(self, axis: int | Sequence[int] | None = None, keepdims: bool = False) -> Tensor:
        return self._reduce("ReduceSum", axis, keepdims)

    def mean(self, axis: int | Sequence[int] | None = None, keepdims: bool = False) -> Tensor:
        return self._reduce("ReduceMean", axis, keepdims)

    def max(self, axis: int | Sequence[int] | None = None, keepdims: bool = False) -> Tensor:
        return self._reduce("ReduceMax", axis, keepdims)

    def argmax(self, axis: int = -1) -> Tensor:
        """Index of the first maximum along ``axis`` (an integer tensor: no gradient flows through it)."""
        return apply("ArgMax", self.detach(), axis=axis, keepdims=0)

    # ------------------------------------------------------------------ elementwise functions
    def exp(self) -> Tensor:
        return apply("Exp", self)

    def log(self) -> Tensor:
        return apply("Log", self)

    def sqrt(self) -> Tensor:
        return apply("Sqrt", self)

    def tanh(self) -> Tensor:
        return apply("Tanh", self)

    def sigmoid(self) -> Tensor:
        return apply("Sigmoid", self)

    def relu(self) -> Tensor:
        return apply("Relu", self)

    def softmax(self, axis: int = -1) -> Tensor:
        return apply("Softmax", self, axis=axis)

    def log_softmax(self, axis: int = -1) -> Tensor:
        return apply("LogSoftmax", self, axis=axis)

    # ------------------------------------------------------------------ shapes
    def reshape(self, *shape: int) -> Tensor:
        """NumPy's reshape (one dimension may be -1; a 0 is a 0, not ONNX's "copy this dimension")."""
        return apply("Reshape", self, _ints(_shape_args(shape)), allowzero=1)

    def transpose(self, *axes: int) -> Tensor:
        """Permute the axes (reverse them when none are given)."""
        return apply("Transpose", self, **({"perm": list(_shape_args(axes))} if axes else {}))

    @property
    def T(self) -> Tensor:  # noqa: N802 - the conventional name
        return self.transpose()

    def flatten(self, axis: int = 1) -> Tensor:
        """ONNX Flatten: a matrix, the axes before ``axis`` merged into rows and the rest into columns."""
        return apply("Flatten", self, axis=axis)

    def squeeze(self, axis: int | Sequence[int] | None = None) -> Tensor:
        """Drop the given length-1 axes (all of them when ``axis`` is None)."""
        return apply("Squeeze", self, *(() if axis is None else (_ints(axis),)))

    def unsqueeze(self, axis: int | Sequence[int]) -> Tensor:
        """Insert length-1 axes at ``axis`` (positions in the result)."""
        return apply("Unsqueeze", self, _ints(axis))

    @staticmethod
    def concat(tensors: Sequence[Tensor], axis: int = 0) -> Tensor:
        return apply("Concat", *(t if isinstance(t, Tensor) else Tensor(t) for t in tensors), axis=axis)

    def __getitem__(self, key: Any) -> Tensor:
        """NumPy indexing with ints, slices, None, ``...`` and one integer array: a Slice for the slices, then a
        Gather per int or array, then an Unsqueeze for the new axes."""
        key = key if isinstance(key, tuple) else (key,)
        dots = [i for i, k in enumerate(key) if k is Ellipsis]
        if len(dots) > 1:
            raise InputError("an index can only have a single ellipsis ('...')")
        if dots:
            at, named = dots[0], sum(k is not None for k in key) - 1
            key = key[:at] + (slice(None),) * (self.ndim - named) + key[at + 1:]
        if sum(k is not None for k in key) > self.ndim:
            raise InputError(f"too many indices for shape {self.shape}: {key}")
        bounds: list[tuple[int, int, int, int]] = []  # start, stop, axis, step of each slice
        gathers: list[tuple[int, np.ndarray]] = []  # axis, indices
        new_axes: list[int] = []  # positions of None in the result
        axis = out = 0
        for k in key:
            if k is None:
                new_axes.append(out)
                out += 1
                continue
            if isinstance(k, slice):
                if k != slice(None):
                    start, stop, step = k.indices(self.shape[axis])
                    bounds.append((start, -self.shape[axis] - 1 if stop < 0 else stop, axis, step))
                out += 1
            else:
                indices = Tensor(k).data
                if indices.dtype.kind not in "iu":
                    raise InputError(f"index {k!r} on axis {axis} of shape {self.shape} is not an integer")
                gathers.append((axis, indices.astype(np.int64)))
                out += indices.ndim
            axis += 1
        if len(gathers) > 1 and any(g.ndim for _, g in gathers):
            raise InputError("an integer array index cannot be combined with other integer indices")
        result = self
        if bounds:
            starts, stops, axes, steps = (np.array(column, np.int64) for column in zip(*bounds))
            result = apply("Slice", result, starts, stops, axes, steps)
        for gather_axis, indices in reversed(gathers):  # from the right: the axes on the left stay put
            result = apply("Gather", result, indices, axis=gather_axis)
        return apply("Unsqueeze", result, _ints(new_axes)) if new_axes else result

    # ------------------------------------------------------------------ convolution and pooling (N, C, H, W)
    def conv2d(self, weight: Tensor, bias: Tensor | None = None, stride: int | Sequence[int] = 1,
               padding: int | Sequence[int] = 0, dilation: int | Sequence[int] = 1, groups: int = 1) -> Tensor:
        """ONNX Conv with ``weight`` shaped (out channels, in channels / groups, kh, kw)."""
        inputs = (self, self._lift(weight)) + (() if bias is None else (self._lift(bias),))
        return apply("Conv", *inputs, strides=_pair(stride), pads=_pair(padding) * 2, dilations=_pair(dilation),
                     group=groups)

    def max_pool2d(self, kernel_size: int | Sequence[int], stride: int | Sequence[int] | None = None,
                   padding: int | Sequence[int] = 0) -> Tensor:
        """ONNX MaxPool; the stride defaults to the kernel size."""
        return self._pool("MaxPool", kernel_size, stride, padding)

    def avg_pool2d(self, kernel_size: int | Sequence[int], stride: int | Sequence[int] | None = None,
                   padding: int | Sequence[int] = 0) -> Tensor:
        """ONNX AveragePool; padding is left out of the averages (count_include_pad=0)."""
        return self._pool("AveragePool", kernel_size, stride, padding)

    def _pool(self, op_type: str, kernel_size, stride, padding) -> Tensor:
        stride = kernel_size if stride is None else stride
        return apply(op_type, self, kernel_shape=_pair(kernel_size), strides=_pair(stride), pads=_pair(padding) * 2)
