"""Which input pixels a unit of a feature map can see: its receptive field, from the graph's geometry (no Qt).

Walking back from a node to the model's input, each convolution or pooling turns an output interval
``[lo, hi]`` (per spatial axis) into ``[lo*s - pad, hi*s - pad + (k-1)*d]``; element-wise ops, normalizations
and concatenations pass the interval through; a node with several computed inputs (a residual Add) sees the
union. The result is clipped to the input and, for the app, scaled to the 28x28 drawing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

WINDOW_OPS = {"Conv", "ConvInteger", "QLinearConv", "MaxPool", "AveragePool", "LpPool", "ConvTranspose"}
# ops that keep the spatial positions (one output pixel per input pixel)
GLOBAL_OPS = {"GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool", "Flatten", "Gemm", "MatMul", "Reshape",
              "ReduceMean", "ReduceMax", "ReduceSum"}

Interval = tuple[int, int]


def receptive_field(nodes: Sequence[Any], node_index: int, row: int, col: int, input_hw: tuple[int, int],
                    constants: set[str] | frozenset[str] = frozenset()) -> tuple[Interval, Interval] | None:
    """Rows and columns (inclusive) of the model input that unit ``(row, col)`` of node ``node_index``'s output
    depends on, or None when that cannot be told (an unknown op with geometry, or no path to the input)."""
    producer = {value: i for i, node in enumerate(nodes) for value in node.outputs}
    memo: dict[tuple[int, Interval, Interval], tuple[Interval, Interval] | None] = {}
    height, width = input_hw

    def back(index: int, rows: Interval, cols: Interval, depth: int = 0) -> tuple[Interval, Interval] | None:
        key = (index, rows, cols)
        if key in memo:
            return memo[key]
        if depth > 2000:
            return None
        node = nodes[index]
        op = node.op_type
        if op in GLOBAL_OPS:
            rows, cols = (0, 1 << 30), (0, 1 << 30)
        elif op in WINDOW_OPS:
            attrs = node.attrs
            kernel = list(attrs.get("kernel_shape") or [1, 1])
            if len(kernel) != 2:
                return None
            strides = list(attrs.get("strides") or [1, 1])
            dilations = list(attrs.get("dilations") or [1, 1])
            pads = list(attrs.get("pads") or [0, 0, 0, 0])
            if op == "ConvTranspose":
                return None
            rows = (rows[0] * strides[0] - pads[0], rows[1] * strides[0] - pads[0] + (kernel[0] - 1) * dilations[0])
            cols = (cols[0] * strides[1] - pads[1], cols[1] * strides[1] - pads[1] + (kernel[1] - 1) * dilations[1])
        result: tuple[Interval, Interval] | None = None
        computed = [value for value in node.inputs if value and value not in constants]
        if op in WINDOW_OPS:
            computed = computed[:1]  # the data input; weights and biases are not pixels
        for value in computed:
            if value in producer:
                found = back(producer[value], rows, cols, depth + 1)
            else:  # a graph input: the image itself
                found = (rows, cols)
            if found is not None:
                result = found if result is None else ((min(result[0][0], found[0][0]),
                                                        max(result[0][1], found[0][1])),
                                                       (min(result[1][0], found[1][0]),
                                                        max(result[1][1], found[1][1])))
        memo[key] = result
        return result

    found = back(node_index, (row, row), (col, col))
    if found is None:
        return None
    (top, bottom), (left, right) = found
    top, left = max(0, top), max(0, left)
    bottom, right = min(height - 1, bottom), min(width - 1, right)
    if top > bottom or left > right:
        return None
    return (top, bottom), (left, right)


def scaled_to(field: tuple[Interval, Interval], input_hw: tuple[int, int], size: int = 28
              ) -> tuple[float, float, float, float]:
    """The field as (x, y, width, height) in a ``size`` x ``size`` picture of the whole input."""
    (top, bottom), (left, right) = field
    sy, sx = size / input_hw[0], size / input_hw[1]
    return left * sx, top * sy, (right - left + 1) * sx, (bottom - top + 1) * sy
