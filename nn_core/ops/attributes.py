"""ONNX attributes and tensors -> plain Python values (ints, floats, str, lists, NumPy arrays), decoded once at
load time.

Every TensorProto is checked before it is decoded: a known element type, non-negative dims, a size within the
budget (``nn_core.Limits``), data of the length its dims call for, and no external data left unread (the reader
loads external data through one confined path; a tensor that still points outside would otherwise be resolved
against the working directory).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ..errors import ModelError
from ..limits import DEFAULT_LIMITS, Limits, check_tensor, element_count

# TensorProto data fields by the element types stored in them, for checking their length against the dims
_TYPED_FIELDS = ("float_data", "int32_data", "string_data", "int64_data", "double_data", "uint64_data")
# types stored two to a byte, and types whose int32_data holds two values (real, imaginary) per element
_PACKED_4BIT = {getattr(onnx.TensorProto, name) for name in ("INT4", "UINT4", "FLOAT4E2M1")
                if hasattr(onnx.TensorProto, name)}
_COMPLEX = {onnx.TensorProto.COMPLEX64, onnx.TensorProto.COMPLEX128}


def tensor_dtype(tensor: onnx.TensorProto, where: str) -> np.dtype:
    try:
        return np.dtype(helper.tensor_dtype_to_np_dtype(tensor.data_type))
    except (KeyError, TypeError, ValueError):
        raise ModelError(f"{where}: tensor '{tensor.name}' has unknown element type {tensor.data_type}") from None


def _typed_field(data_type: int) -> str | None:
    """The typed field onnx reads values of ``data_type`` from (``int32_data`` for float16, int8...), or None."""
    try:
        field = helper.tensor_dtype_to_field(data_type)
    except (KeyError, ValueError, TypeError):
        return None
    return field if field in _TYPED_FIELDS else None


def tensor_to_array(tensor: onnx.TensorProto, where: str = "model", limits: Limits = DEFAULT_LIMITS) -> np.ndarray:
    """A TensorProto as a NumPy array, after checking that its content is what its header says."""
    if tensor.data_location == onnx.TensorProto.EXTERNAL:
        raise ModelError(f"{where}: tensor '{tensor.name}' keeps its data in an external file that was not read"
                         " (load the model from its path, so the data beside it is read from its folder)")
    dtype = tensor_dtype(tensor, where)
    dims = list(tensor.dims)
    check_tensor(limits, where, f"tensor '{tensor.name}'", dims, dtype)
    count = element_count(dims)
    if tensor.HasField("raw_data") and dtype.kind not in "OUS":
        need = (count + 1) // 2 if tensor.data_type in _PACKED_4BIT else count * dtype.itemsize
        if len(tensor.raw_data) != need:
            raise ModelError(f"{where}: tensor '{tensor.name}' of shape {dims} {dtype.name} needs {need:,} bytes of"
                             f" data but holds {len(tensor.raw_data):,}")
    elif tensor.HasField("raw_data") and (tensor.raw_data or count):  # (onnx would reshape an empty string_data)
        raise ModelError(f"{where}: tensor '{tensor.name}' of shape {dims} holds strings as raw bytes (raw_data),"
                         " which ONNX allows only for numbers; strings go in string_data")
    else:
        need = count * (2 if tensor.data_type in _COMPLEX else 1)
        if tensor.data_type in _PACKED_4BIT:
            need = (count + 1) // 2
        home = _typed_field(tensor.data_type)  # the field onnx reads this element type's values from
        stored = len(getattr(tensor, home)) if home else max(len(getattr(tensor, n)) for n in _TYPED_FIELDS)
        if stored != need and not (count == 0 and stored == 0):
            elsewhere = [n for n in _TYPED_FIELDS if n != home and len(getattr(tensor, n))]
            if home and elsewhere:
                raise ModelError(f"{where}: tensor '{tensor.name}' of shape {dims} {dtype.name} keeps its values in"
                                 f" {elsewhere[0]}, but {dtype.name} values belong in {home}")
            raise ModelError(f"{where}: tensor '{tensor.name}' of shape {dims} holds {stored:,} values, not {need:,}")
    if count == 0:  # onnx's reader sizes some work by the non-zero dims ([2**40, 7, 2**40, 0] int4: MemoryError)
        try:
            return np.zeros(dims, dtype)
        except ValueError:  # NumPy refuses dims whose non-zero product overflows, even for an empty array
            raise ModelError(f"{where}: tensor '{tensor.name}' has dims {dims} too large to describe") from None
    try:
        return np.asarray(numpy_helper.to_array(tensor))
    except ModelError:
        raise
    except Exception as exc:  # noqa: BLE001 - onnx raises several types for a malformed tensor
        raise ModelError(f"{where}: tensor '{tensor.name}' cannot be read ({type(exc).__name__}: {exc})") from None


def sparse_to_dense(sparse: onnx.SparseTensorProto, where: str = "model",
                    limits: Limits = DEFAULT_LIMITS) -> np.ndarray:
    """A SparseTensorProto as a dense array; dims, index ranges and sizes are checked first."""
    name = sparse.values.name or "sparse tensor"
    dims = [int(d) for d in sparse.dims]
    values = tensor_to_array(sparse.values, where, limits)
    check_tensor(limits, where, f"sparse tensor '{name}'", dims, values.dtype)
    indices = tensor_to_array(sparse.indices, where, limits)
    if indices.dtype.kind not in "iu":
        raise ModelError(f"{where}: sparse tensor '{name}' has indices of type {indices.dtype}, not integers")
    size = element_count(dims)
    if values.ndim != 1:
        raise ModelError(f"{where}: sparse tensor '{name}' has values of shape {list(values.shape)}, not 1-D")
    if indices.ndim == 2:  # coordinate form: one row per value
        if indices.shape != (values.size, len(dims)):
            raise ModelError(f"{where}: sparse tensor '{name}' has indices of shape {list(indices.shape)} for"
                             f" {values.size} values of a rank-{len(dims)} tensor")
        if indices.size and (indices.min() < 0 or (indices >= np.asarray(dims, np.int64)).any()):
            raise ModelError(f"{where}: sparse tensor '{name}' has an index outside its dims {dims}")
        flat = np.ravel_multi_index(indices.T.astype(np.int64), tuple(dims)) if indices.size else indices[:, 0]
    elif indices.ndim == 1 and indices.size == values.size:
        if indices.size and (indices.min() < 0 or indices.max() >= size):
            raise ModelError(f"{where}: sparse tensor '{name}' has an index outside 0..{size - 1}")
        flat = indices
    else:
        raise ModelError(f"{where}: sparse tensor '{name}' has indices of shape {list(indices.shape)} for"
                         f" {values.size} values")
    dense = np.zeros(size, dtype=values.dtype)
    dense[flat.astype(np.int64)] = values
    return dense.reshape(dims)


def attribute_value(attr: onnx.AttributeProto, where: str = "model", limits: Limits = DEFAULT_LIMITS) -> Any:
    kind = attr.type
    A = onnx.AttributeProto
    if kind == A.FLOAT:
        return float(attr.f)
    if kind == A.INT:
        return int(attr.i)
    if kind == A.STRING:
        return attr.s.decode("utf-8", errors="replace")
    if kind == A.TENSOR:
        return tensor_to_array(attr.t, where, limits)
    if kind == A.FLOATS:
        return [float(v) for v in attr.floats]
    if kind == A.INTS:
        return [int(v) for v in attr.ints]
    if kind == A.STRINGS:
        return [s.decode("utf-8", errors="replace") for s in attr.strings]
    if kind == A.TENSORS:
        return [tensor_to_array(t, where, limits) for t in attr.tensors]
    if kind == A.SPARSE_TENSOR:
        return sparse_to_dense(attr.sparse_tensor, where, limits)
    if kind == A.GRAPH:
        return attr.g
    if kind == A.GRAPHS:
        return list(attr.graphs)
    if kind == A.SPARSE_TENSORS:
        return [sparse_to_dense(t, where, limits) for t in attr.sparse_tensors]
    if kind in (A.TYPE_PROTO, A.TYPE_PROTOS):
        return attr.tp if kind == A.TYPE_PROTO else list(attr.type_protos)
    raise ModelError(f"{where}: attribute '{attr.name}' has unknown attribute type {kind}")


def node_attributes(node: onnx.NodeProto, where: str = "model", limits: Limits = DEFAULT_LIMITS) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for attr in node.attribute:
        if attr.name in values:
            raise ModelError(f"{where}: attribute '{attr.name}' is given twice")
        values[attr.name] = attribute_value(attr, where, limits)
    return values
