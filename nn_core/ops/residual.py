"""A convolution whose only reader is a residual Add (or two-input Sum), and the ReLU after it, as one step.

ResNet's and ShuffleNet's blocks end in Conv -> Sum(conv, shortcut) -> Relu: the sum and the ReLU were two more
steps, each a pass that allocated a fresh array as large as the block's output. The convolution's own output is a
fresh array, so the shortcut is added into it and the ReLU applied in place (ResidualConv): the same two passes,
no new arrays, the same values bit for bit (the sum of two float32 values does not depend on their order). An
operand that broadcasts (of another shape) goes through the original Add/Sum and Relu kernels.

A ResNet block that changes shape sums two 1x1 convolutions without padding (its last one and the shortcut's
projection, either of them strided): relu(x1 @ W1 + b1 + x2 @ W2 + b2) is one matmul of the two inputs'
channels-last rows side by side (and a ones column) by the two weight matrices stacked (and the biases summed),
ProjectedResidual. Separately, the projection's output was written out, and the block's output was read back
from memory by three passes after its GEMM (bias, sum, ReLU); the one GEMM (the same multiply-adds) is followed
by the ReLU alone, and its column copy is small (the inputs have a quarter of the output's channels, or are
strided).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from typing import Any

import numpy as np

from ..optimize import producers_and_readers, sole_reader
from .batch1 import finisher, tiled_operand
from .caches import keep
from .conv import Conv, constant_through, make_activation


class ResidualConv:
    """``relu(conv(x, w, b) + other)`` for a Conv kernel ``conv`` (its inputs first, then ``other``).

    With ``carry`` (carry_residual_biases) the step's output is left short by that per-channel constant: its
    readers add it back themselves (``other`` may be short by the constant of the step that made it, which
    ``carry`` includes), and the conv has no bias of its own: relu(y + b + r) = max(y + r, -b) + b, one pass
    fewer over the output."""

    def __init__(self, node: Any, conv: Conv, add: Any, relu: Any | None, conv_inputs: int):
        self.node, self.conv, self.add, self.relu = node, conv, add, relu
        self.conv_inputs = conv_inputs
        # an Add may have absorbed the ReLU itself (the fast plan's fuse_activations)
        self.rectify = relu is not None or bool(getattr(add, "relu", False))
        self.carry: np.ndarray | None = None
        self.relu_act = make_activation("relu", {})
        # (shape, channels-last storage, dtype) -> the epilogue after the sum: the ReLU, or the carried bound
        self.epilogues: dict[tuple, Callable[[np.ndarray], None]] = {}

    def run(self, *inputs: np.ndarray) -> np.ndarray:
        other = inputs[self.conv_inputs]
        y = self.conv.run(*inputs[:self.conv_inputs])
        if type(y) is not np.ndarray or type(other) is not np.ndarray or y.shape != other.shape \
                or y.dtype != other.dtype or not y.flags.writeable:
            y = self.add.run(y, other)  # broadcasting, promotion: the Add/Sum kernel's own rules and checks
            if self.carry is not None and self.rectify:
                return np.maximum(y, self._nchw_bound(y))
            return y if self.relu is None else self.relu.run(y)
        flat, other_flat = _storage(y), _storage(other)
        if flat is None or other_flat is None or y.strides != other.strides or y.dtype.kind != "f":
            np.add(y, other, out=y)
            if self.carry is not None and self.rectify:
                np.maximum(y, self._nchw_bound(y), out=y)
            elif self.rectify:
                np.maximum(y, y.dtype.type(0), out=y)
            return y
        # the sum and the bound over the flat storage: same-shape SIMD loops (a ReLU over the NCHW-shaped view of
        # channels-last storage runs about half as fast in cache)
        np.add(flat, other_flat, out=flat)
        if self.rectify:
            key = (y.shape, not y.flags.c_contiguous, y.dtype)
            finish = self.epilogues.get(key)
            if finish is None:
                finish = keep(self.epilogues, key, self._epilogue(*key))
            finish(flat)
        return y

    def _nchw_bound(self, y: np.ndarray) -> np.ndarray:
        """-carry as a per-channel operand of the NCHW-shaped ``y``, of its type: the lower bound the carried
        constant shifts the ReLU to."""
        return -self.carry.reshape(-1, *(1,) * (y.ndim - 2)).astype(y.dtype)

    def _epilogue(self, shape: tuple[int, ...], channels_last: bool, dtype: np.dtype
                  ) -> Callable[[np.ndarray], None]:
        """The ReLU of a flat output of ``shape`` (NCHW, or its channels-last storage), or with a carried constant
        the per-channel bound -carry laid over its rows (batch1.tiled_operand)."""
        if self.carry is None:
            return finisher((math.prod(shape),), dtype, None, self.relu_act)
        if channels_last:
            values, storage = -self.carry, (shape[0], *shape[2:], shape[1])
        else:
            values, storage = -self.carry.reshape(-1, *(1,) * (len(shape) - 2)), shape
        bound, rows = tiled_operand(values, storage, dtype)

        def finish(flat: np.ndarray) -> None:
            part = flat.reshape(rows)
            np.maximum(part, bound, out=part)

        return finish


def _storage(y: np.ndarray) -> np.ndarray | None:
    """The flat view of an image's storage, NCHW or channels-last (NCHW-shaped), or None for another layout."""
    if y.flags.c_contiguous:
        return y.reshape(-1)
    if y.ndim == 4 and y.transpose(0, 2, 3, 1).flags.c_contiguous:
        return y.transpose(0, 2, 3, 1).reshape(-1)
    return None


class _StackedColumns:
    """One pair of input layouts' scratch: ``columns`` (positions, K1 + K2 + 1), the two inputs' channels-last rows
    side by side and a last column of ones; ``matrix`` (K1 + K2 + 1, M), the two weight matrices stacked and the
    biases' sum (rounded once) as the last row; ``fills`` each input's block of columns and its strided pick."""

    def __init__(self, nhwc_shape: tuple[int, ...], picks: list[tuple], convs: tuple[Conv, Conv], dtype: np.dtype):
        self.nhwc_shape = nhwc_shape
        widths = [conv.weight.shape[1] for conv in convs]
        self.columns = np.empty((math.prod(nhwc_shape[:-1]), sum(widths) + 1), dtype)
        self.columns[:, -1] = 1
        bias = np.zeros(nhwc_shape[-1])
        for conv in convs:
            if conv.bias is not None:
                bias += conv.bias
        blocks = [conv.weight.reshape(conv.weight.shape[0], -1).T for conv in convs]
        self.matrix = np.ascontiguousarray(np.concatenate([*blocks, bias.reshape(1, -1)]).astype(dtype))
        starts = [0, widths[0], widths[0] + widths[1]]
        self.fills = [(self.columns[:, start:stop], pick)
                      for start, stop, pick in zip(starts[:-1], starts[1:], picks, strict=True)]


class ProjectedResidual:
    """``relu(conv1(x1) + conv2(x2))`` for two 1x1 convolutions of constant weights without padding (either
    strided), as one matmul over stacked columns (see the module's docstring). The step's inputs are conv1's, then
    conv2's. Inputs that are not channels-last float images giving one output shape run the two kernels and the
    sum (ResidualConv)."""

    def __init__(self, node: Any, first: Conv, second: Conv, add: Any, relu: Any | None, first_inputs: int):
        self.node, self.convs, self.first_inputs = node, (first, second), first_inputs
        self.separate = ResidualConv(node, first, add, relu, first_inputs)
        self.stacked: dict[tuple, _StackedColumns | None] = {}
        self.lock = threading.Lock()

    def _layout(self, images: tuple[Any, Any]) -> _StackedColumns | None:
        """The scratch for these inputs, or None where the one-matmul form does not apply."""
        if any(type(x) is not np.ndarray or x.ndim != 4 or x.dtype not in (np.float32, np.float64)
               or x.dtype != images[0].dtype or not x.transpose(0, 2, 3, 1).flags.c_contiguous for x in images):
            return None
        picks, outputs = [], set()
        for conv, x in zip(self.convs, images, strict=True):
            weight = conv.weight
            if not conv.static or conv.group != 1 or weight.dtype != x.dtype or weight.shape[2:] != (1, 1) \
                    or conv.act is not None or conv.pool is not None:
                return None
            _, strides, _, begins, ends, _, out_sizes = conv._fit(x, weight.shape)  # (the node's own checks)
            if any(begins) or any(ends):
                return None
            picks.append((slice(None), *(slice(0, (o - 1) * s + 1, s) for o, s in zip(out_sizes, strides)),
                          slice(None)))
            outputs.add((x.shape[0], *out_sizes, weight.shape[0]))
        if len(outputs) != 1:
            return None
        nhwc_shape = outputs.pop()
        # as large as the two inputs' picked positions together (and a ones column): checked all the same
        width = sum(conv.weight.shape[1] for conv in self.convs) + 1
        self.convs[0].check_size((math.prod(nhwc_shape[:-1]), width), images[0].dtype, "stacked column buffer")
        return _StackedColumns(nhwc_shape, picks, self.convs, images[0].dtype)

    def run(self, *inputs: np.ndarray) -> np.ndarray:
        split = self.first_inputs
        images = (inputs[0], inputs[split])
        key = tuple((getattr(x, "shape", None), getattr(x, "dtype", None), getattr(x, "strides", None))
                    for x in images)
        with self.lock:  # the column buffer is this step's scratch
            stacked = self.stacked[key] if key in self.stacked else keep(self.stacked, key, self._layout(images))
            if stacked is not None:
                for (target, pick), x in zip(stacked.fills, images, strict=True):
                    source = x.transpose(0, 2, 3, 1)[pick]
                    np.copyto(target.reshape(source.shape), source)
                y = np.matmul(stacked.columns, stacked.matrix)  # a fresh output
        if stacked is None:
            return self.separate.run(*inputs[:split], self.convs[1].run(*inputs[split:]))
        if self.separate.rectify:
            np.maximum(y, y.dtype.type(0), out=y)
        return y.reshape(stacked.nhwc_shape).transpose(0, 3, 1, 2)


def _pointwise(kernel: Any) -> bool:
    """A 1x1 Conv of constant weights and one group, nothing fused after it (no activation, pooling or
    Flatten): ProjectedResidual's operand."""
    return isinstance(kernel, Conv) and not getattr(kernel, "flattened", False) and kernel.static \
        and kernel.group == 1 and kernel.act is None and kernel.pool is None and kernel.weight.ndim == 4 \
        and kernel.weight.shape[2:] == (1, 1)


def fuse_residuals(steps: list[Any], graph_outputs: set[str]) -> list[Any]:
    """``steps`` with each Conv whose only reader is a two-input Add or Sum (and that sum's only reader a Relu,
    absorbed too) made one ResidualConv step, where the sum's other operand is already computed (a ResNet block's
    shortcut convolution comes after its main branch, so that is the one fused). The Conv must not have an
    activation or a pooling fused (the sum comes first). Where both operands are 1x1 convolutions (the other's
    only reader the sum), the step is a ProjectedResidual instead and takes the other's inputs too."""
    _, readers = producers_and_readers(steps)
    produced_at = {name: index for index, step in enumerate(steps) for name in step.outputs}
    dropped: set[int] = set()
    for index, step in enumerate(steps):
        kernel = step.kernel
        if not isinstance(kernel, Conv) or kernel.act is not None or kernel.pool is not None or id(step) in dropped:
            continue
        add = sole_reader(readers, step, graph_outputs)
        if add is None or add.node.op_type not in ("Add", "Sum") or add.node.domain not in ("", "ai.onnx") \
                or len(add.inputs) != 2 or add.inputs.count(step.outputs[0]) != 1 or id(add) in dropped:
            continue
        other = add.inputs[1 - add.inputs.index(step.outputs[0])]
        if not other or produced_at.get(other, -1) >= index:
            continue
        relu = None if getattr(add.kernel, "relu", False) else sole_reader(readers, add, graph_outputs)
        if relu is not None and (relu.node.op_type != "Relu" or relu.node.domain not in ("", "ai.onnx")
                                 or len(relu.inputs) != 1 or id(relu) in dropped):
            relu = None
        last = relu or add
        relu_kernel = None if relu is None else relu.kernel
        projection = steps[produced_at[other]] if other in produced_at else None
        if projection is not None and _pointwise(kernel) and _pointwise(projection.kernel) \
                and id(projection) not in dropped and sole_reader(readers, projection, graph_outputs) is add:
            step.kernel = ProjectedResidual(step.node, kernel, projection.kernel, add.kernel, relu_kernel,
                                            len(step.inputs))
            step.inputs = [*step.inputs, *projection.inputs]
            step.before = (*projection.before, projection.node.op_type, *projection.fused, *step.before)
            dropped.add(id(projection))
        else:
            step.kernel = ResidualConv(step.node, kernel, add.kernel, relu_kernel, len(step.inputs))
            step.inputs = [*step.inputs, other]
        step.outputs = list(last.outputs)
        step.fused = (*step.fused, add.node.op_type, *add.fused, *(("Relu",) if relu is not None else ()))
        dropped.update(id(s) for s in (add, relu) if s is not None)
    return carry_residual_biases([s for s in steps if id(s) not in dropped], graph_outputs)


def _carries(kernel: Any) -> bool:
    """A ResidualConv whose conv has constant float weights and a finite bias (or none): it can leave its output
    short by its bias, and take on the constant its shortcut is short by."""
    conv = getattr(kernel, "conv", None)
    return type(kernel) is ResidualConv and isinstance(conv, Conv) and conv.static and conv.weight is not None \
        and conv.weight.dtype.kind == "f" and (conv.bias is None or bool(np.isfinite(conv.bias).all()))


def _absorbs(kernel: Any) -> bool:
    """A convolution that can take a constant its image is short by into its bias: constant weights of one group,
    a 1x1 kernel and no padding (every output sums each channel once: W(z + c) = Wz + Wc)."""
    return isinstance(kernel, Conv) and kernel.static and kernel.group == 1 and kernel.weight is not None \
        and kernel.weight.ndim >= 3 and kernel.weight.dtype.kind == "f" \
        and all(k == 1 for k in kernel.weight.shape[2:]) \
        and all(p == 0 for p in kernel.geometry.pads_attr or ())


def _set_bias(conv: Conv, bias: np.ndarray | None) -> None:
    """``conv``'s bias replaced; its plans, made with the old bias, dropped."""
    conv.bias = bias
    conv.plans.clear()
    conv.fast.clear()


def _add_to_bias(conv: Conv, added: np.ndarray) -> None:
    """``conv``'s bias (float64 sum, rounded once) plus ``added``."""
    total = added if conv.bias is None else conv.bias.astype(np.float64) + added
    _set_bias(conv, total.astype(conv.weight.dtype))


def carry_residual_biases(steps: list[Any], graph_outputs: set[str]) -> list[Any]:
    """Leave each ResidualConv's output short by a per-channel constant its readers add back at no cost (a
    ResNet block's output, 56x56x256, makes the bias pass ~15% of the step): its conv's bias b (and the constant
    ``c_in`` its shortcut is short by) is carried, c = b + c_in, when every reader is an unpadded 1x1 convolution
    of one group and constant weights (a step's Conv, or ProjectedResidual's), which takes W c into its bias
    (float64, once), or another ResidualConv reading it as its shortcut, which carries it on. Where the readers
    do not all take it (a graph output, a pooling), the constant from the shortcut goes into the conv's bias
    instead. Not taken for biases that are not finite (0 * inf is no zero) or sums of other types."""
    _, readers = producers_and_readers(steps)
    carried: dict[str, np.ndarray] = {}  # value -> the float64 constant it is short by
    for step in steps:
        kernel = step.kernel
        if not _carries(kernel):
            continue
        conv, shortcut = kernel.conv, step.inputs[kernel.conv_inputs]
        own = np.zeros(conv.weight.shape[0]) if conv.bias is None else conv.bias.astype(np.float64)
        taken = carried.pop(shortcut, None)
        total = own if taken is None else own + taken
        output = step.outputs[0]
        users = list({id(user): user for user in readers.get(output, [])}.values())  # (listed once an input)
        takers = []
        reads = [(user, position) for user in users for position, name in enumerate(user.inputs) if name == output]
        for user, position in reads:
            if _carries(user.kernel) and position == user.kernel.conv_inputs:
                continue
            if type(user.kernel) is ProjectedResidual:
                conv_at = {0: user.kernel.convs[0], user.kernel.first_inputs: user.kernel.convs[1]}.get(position)
            else:
                conv_at = user.kernel if position == 0 else None
            if not _absorbs(conv_at) or any(conv_at is taker for taker in takers):
                break
            takers.append(conv_at)
        else:
            added = [constant_through(taker.weight, total) for taker in takers]
            if users and output not in graph_outputs and len(step.outputs) == 1 \
                    and all(np.isfinite(a.astype(t.weight.dtype)).all() for a, t in zip(added, takers, strict=True)):
                for taker, addition in zip(takers, added, strict=True):
                    _add_to_bias(taker, addition)
                carried[output] = total
                kernel.carry = total
                if getattr(kernel.add, "relu", False):
                    kernel.add.relu = False  # (a sum that broadcasts is bounded by -carry after the Add kernel)
                _set_bias(conv, None)
                continue
        if taken is not None:
            _add_to_bias(conv, taken)
    return steps
