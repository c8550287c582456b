"""ONNX attributes -> plain Python values (ints, floats, str, lists, NumPy arrays), decoded once at load time."""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper


def tensor_to_array(tensor: onnx.TensorProto, base_dir: str | None = None) -> np.ndarray:
    """A TensorProto as a NumPy array (external data must already be loaded into the proto)."""
    return np.asarray(numpy_helper.to_array(tensor, base_dir or ""))


def attribute_value(attr: onnx.AttributeProto) -> Any:
    kind = attr.type
    A = onnx.AttributeProto
    if kind == A.FLOAT:
        return float(attr.f)
    if kind == A.INT:
        return int(attr.i)
    if kind == A.STRING:
        return attr.s.decode("utf-8", errors="replace")
    if kind == A.TENSOR:
        return tensor_to_array(attr.t)
    if kind == A.FLOATS:
        return [float(v) for v in attr.floats]
    if kind == A.INTS:
        return [int(v) for v in attr.ints]
    if kind == A.STRINGS:
        return [s.decode("utf-8", errors="replace") for s in attr.strings]
    if kind == A.TENSORS:
        return [tensor_to_array(t) for t in attr.tensors]
    if kind == A.SPARSE_TENSOR:
        return _sparse_to_dense(attr.sparse_tensor)
    if kind == A.GRAPH:
        return attr.g
    if kind == A.GRAPHS:
        return list(attr.graphs)
    return onnx.helper.get_attribute_value(attr)


def _sparse_to_dense(sparse: onnx.SparseTensorProto) -> np.ndarray:
    values = tensor_to_array(sparse.values)
    indices = tensor_to_array(sparse.indices).astype(np.int64)
    dense = np.zeros(int(np.prod(sparse.dims)), dtype=values.dtype)
    if indices.ndim == 2:  # coordinate form: one row per value
        indices = np.ravel_multi_index(indices.T, tuple(sparse.dims))
    dense[indices.reshape(-1)] = values.reshape(-1)
    return dense.reshape(tuple(sparse.dims))


def node_attributes(node: onnx.NodeProto) -> dict[str, Any]:
    return {a.name: attribute_value(a) for a in node.attribute}
