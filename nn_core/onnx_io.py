"""Reading a .onnx file: recognise what is not a model, load external data safely, run the checker.

Everything a user can get wrong about a file ends here as a ModelError that says what the file really is.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
from google.protobuf.message import DecodeError
from onnx import helper

from .errors import ModelError
from .limits import DEFAULT_LIMITS, Limits, element_count, human_bytes

# a graph attribute inside a graph attribute... deeper than this is an attack on the recursion, not a model
_MAX_GRAPH_NESTING = 32
# element types stored two to a byte
_PACKED_4BIT = {getattr(onnx.TensorProto, name) for name in ("INT4", "UINT4", "FLOAT4E2M1")
                if hasattr(onnx.TensorProto, name)}

# signatures of files people mistake for ONNX models, checked before protobuf parsing
_MAGIC = [
    (b"PK\x03\x04", "a ZIP archive, perhaps a PyTorch .pt/.pth checkpoint — export it with torch.onnx"),
    (b"\x89HDF", "an HDF5 file, perhaps a Keras .h5 model — convert it with tf2onnx"),
    (b"\x80\x02", "a Python pickle, perhaps a PyTorch checkpoint — export it with torch.onnx"),
    (b"\x80\x04", "a Python pickle, perhaps a PyTorch checkpoint — export it with torch.onnx"),
    (b"\x89PNG", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"\x1f\x8b", "a gzip-compressed file — decompress it first"),
    (b"version https://git-lfs", "a Git LFS pointer, not the model itself — run `git lfs pull`"),
]


def _describe_non_model(head: bytes) -> str | None:
    """What the first bytes of a file say it is, when it is recognisably not a protobuf model."""
    for magic, what in _MAGIC:
        if head.startswith(magic):
            return what
    if len(head) >= 8 and head[4:8] == b"TFL3":
        return "a TensorFlow Lite model — convert it with tf2onnx"
    text = head.lstrip()[:200].lower()
    if text.startswith((b"<!doctype html", b"<html")) or b"<html" in text:
        return "an HTML page, saved from a web page instead of downloading the raw file"
    if text.startswith((b"{", b"[")):
        return "a JSON file"
    if head and all(32 <= b < 127 or b in b"\t\r\n" for b in head[:200]):
        preview = head[:60].decode("ascii", errors="replace").strip().replace("\n", " ")
        return f"a text file starting with {preview!r}"
    return None


def read_model(path: str | os.PathLike[str], limits: Limits = DEFAULT_LIMITS) -> onnx.ModelProto:
    """Parse ``path`` into a ModelProto with its external data loaded; raise ModelError saying what is wrong."""
    path = Path(path)
    data = _read_regular_file(path, limits.max_file_bytes, "the model")
    if not data:
        raise ModelError(f"{path}: the file is empty (0 bytes)")
    what = _describe_non_model(data[:512])
    if what:
        raise ModelError(f"{path.name}: not an ONNX file (it looks like {what})")
    try:
        model = parse_model(data)
    except (DecodeError, ValueError, RuntimeError, RecursionError) as exc:
        raise ModelError(
            f"{path.name}: not an ONNX file, or a truncated/damaged one ({len(data):,} bytes): the protobuf "
            f"data cannot be parsed ({exc})"
        ) from None
    del data
    if not model.HasField("graph") or (not model.graph.node and not model.graph.output):
        raise ModelError(f"{path.name}: not an ONNX model (the data parses but holds no graph; truncated?)")
    if model.ir_version <= 0:
        raise ModelError(f"{path.name}: not an ONNX model (no IR version; a damaged or foreign protobuf file?)")
    load_external_data(model, path, limits)
    return model


# parsing a model in pieces of about this many bytes lets other threads run between them (see parse_model)
PARSE_PIECE_BYTES = 1 << 20
_MODEL_GRAPH_FIELD = 7  # ModelProto.graph
_LENGTH_DELIMITED = 2


class _NotSplittable(Exception):
    """The bytes are not a plain sequence of protobuf fields; the whole-buffer parser says what is wrong."""


def parse_model(data: bytes, piece_bytes: int = PARSE_PIECE_BYTES) -> onnx.ModelProto:
    """``onnx.load_model_from_string(data)``, parsed in pieces of about ``piece_bytes`` so that no single call
    holds the interpreter for long.

    protobuf's parser keeps Python's global lock for the whole call: a 100 MB ResNet-50 took ~130 ms in one go,
    during which no other thread (the app's UI above all) could run. Protobuf messages merge field by field, so
    parsing the model's top-level fields and its graph's fields (nodes, initializers...) a few at a time into
    the same message gives the very same ModelProto; the lock is free between pieces. Anything the field scanner
    does not recognise (a truncated length, group wire types) goes to the whole-buffer parser, whose errors are
    the ones the user sees.
    """
    if len(data) <= 4 * piece_bytes:
        return onnx.load_model_from_string(data)
    try:
        pieces = _model_pieces(data, piece_bytes)
    except _NotSplittable:
        return onnx.load_model_from_string(data)
    model = onnx.ModelProto()
    view = memoryview(data)
    for into_graph, start, stop in pieces:
        (model.graph if into_graph else model).MergeFromString(view[start:stop])
    return model


def _fields(data: bytes, start: int, stop: int) -> Iterator[tuple[int, int, int, int]]:
    """(field number, start of its tag, start of its value, end) of each field in ``data[start:stop]``."""
    position = start
    while position < stop:
        tag_start = position
        tag, position = _varint(data, position, stop)
        number, wire = tag >> 3, tag & 7
        if number == 0:
            raise _NotSplittable
        if wire == 0:
            _, position = _varint(data, position, stop)
            value = position
        elif wire == 1:
            value, position = position, position + 8
        elif wire == _LENGTH_DELIMITED:
            length, value = _varint(data, position, stop)
            position = value + length
        elif wire == 5:
            value, position = position, position + 4
        else:  # groups (3, 4) or invalid wire types
            raise _NotSplittable
        if position > stop:
            raise _NotSplittable
        yield number, tag_start, value, position


def _varint(data: bytes, position: int, stop: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if position >= stop or shift > 63:
            raise _NotSplittable
        byte = data[position]
        position += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, position
        shift += 7


def _model_pieces(data: bytes, piece_bytes: int) -> list[tuple[bool, int, int]]:
    """Contiguous byte ranges to merge in order: (into the graph?, start, stop), each about ``piece_bytes``."""
    pieces: list[tuple[bool, int, int]] = []

    def add(into_graph: bool, start: int, stop: int) -> None:
        if pieces and pieces[-1][0] == into_graph and pieces[-1][2] == start \
                and pieces[-1][2] - pieces[-1][1] < piece_bytes:
            pieces[-1] = (into_graph, pieces[-1][1], stop)
        else:
            pieces.append((into_graph, start, stop))

    for number, tag_start, value, stop in _fields(data, 0, len(data)):
        if number == _MODEL_GRAPH_FIELD and stop - value > piece_bytes:
            if data[tag_start] & 7 != _LENGTH_DELIMITED:
                raise _NotSplittable
            for _number, field_start, _value, field_stop in _fields(data, value, stop):
                add(True, field_start, field_stop)
        else:
            add(False, tag_start, stop)
    return pieces


def _read_regular_file(path: Path, max_bytes: int, what: str) -> bytes:
    """The whole content of a regular file of at most ``max_bytes``.

    Opened non-blocking and checked with ``fstat`` on the open descriptor (no window between check and use),
    so a FIFO, a device such as /dev/zero or a folder is refused instead of blocking or reading forever.
    """
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except FileNotFoundError:
        raise ModelError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ModelError(f"{path}: is a folder, not an .onnx file") from None
    except (OSError, ValueError) as exc:  # permissions, a NUL in the path, a name too long...
        raise ModelError(f"{path}: {what} cannot be opened ({exc})") from None
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise ModelError(f"{path}: is a folder, not an .onnx file")
        if not stat.S_ISREG(info.st_mode):
            raise ModelError(f"{path}: {what} is not a regular file (a pipe, socket or device) — refusing to read it")
        if info.st_size > max_bytes:
            raise ModelError(f"{path.name}: {what} is {human_bytes(info.st_size)}, over the"
                             f" {human_bytes(max_bytes)} limit (nn_core.Limits.max_file_bytes)")
        with os.fdopen(fd, "rb", closefd=True) as handle:
            fd = -1
            # a file that grows while it is read is cut at the size it had when checked
            return handle.read(info.st_size)
    except OSError as exc:
        raise ModelError(f"{path}: {what} cannot be read ({exc})") from None
    finally:
        if fd >= 0:
            os.close(fd)


def _graph_tensors(graph: onnx.GraphProto, depth: int = 0) -> Iterator[onnx.TensorProto]:
    """Every TensorProto of a graph: initializers, sparse initializers' parts, node attributes, subgraphs."""
    if depth > _MAX_GRAPH_NESTING:
        raise ModelError(f"graph '{graph.name}' nests subgraphs more than {_MAX_GRAPH_NESTING} levels deep")
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield sparse.values
        yield sparse.indices
    for node in graph.node:
        yield from _node_tensors(node, depth)


def _node_tensors(node: onnx.NodeProto, depth: int) -> Iterator[onnx.TensorProto]:
    for attr in node.attribute:
        if attr.HasField("t"):
            yield attr.t
        yield from attr.tensors
        for sparse in [attr.sparse_tensor] * attr.HasField("sparse_tensor") + list(attr.sparse_tensors):
            yield sparse.values
            yield sparse.indices
        if attr.HasField("g"):
            yield from _graph_tensors(attr.g, depth + 1)
        for sub in attr.graphs:
            yield from _graph_tensors(sub, depth + 1)


def all_tensors(model: onnx.ModelProto) -> Iterator[onnx.TensorProto]:
    """Every TensorProto a model holds, wherever it sits (graph, subgraphs, functions)."""
    yield from _graph_tensors(model.graph)
    for function in model.functions:
        for node in function.node:
            yield from _node_tensors(node, 1)


def _external_field(path: Path, tensor: onnx.TensorProto, info: dict[str, str], key: str) -> int | None:
    text = info.get(key)
    if text is None or text == "":
        return None
    if not text.isascii() or not text.isdigit() or len(text) > 19:
        raise ModelError(f"{path.name}: tensor '{tensor.name}' has external-data {key} {text!r}; it must be a"
                         " non-negative whole number of bytes")
    return int(text)


def load_external_data(model: onnx.ModelProto, path: Path, limits: Limits = DEFAULT_LIMITS) -> None:
    """Read every tensor stored beside the model into the proto: the one path by which a file reaches others.

    Each location must name a regular file inside the model's own folder (symlinks resolved first), offset and
    length must be plain byte counts within that file, and the bytes read must be what the tensor's dims and
    type need; the total is held to ``limits.max_constant_bytes``.
    """
    try:
        tensors = [t for t in all_tensors(model) if t.data_location == onnx.TensorProto.EXTERNAL]
    except ModelError as exc:
        raise ModelError(f"{path.name}: {exc}") from None
    if not tensors:
        return
    folder = path.resolve().parent
    total = 0
    for tensor in tensors:
        info: dict[str, str] = {}
        for entry in tensor.external_data:
            if entry.key in info:
                raise ModelError(f"{path.name}: tensor '{tensor.name}' lists external-data key {entry.key!r} twice")
            info[entry.key] = entry.value
        location = info.get("location", "")
        if not location or "\x00" in location or os.path.isabs(location):
            raise ModelError(f"{path.name}: tensor '{tensor.name}' has external-data location {location!r}; it"
                             " must be a file name relative to the model's folder")
        try:
            target = (folder / location).resolve()
        except (OSError, RuntimeError, ValueError) as exc:
            raise ModelError(f"{path.name}: external data path {location!r} of tensor '{tensor.name}' cannot be"
                             f" resolved ({exc})") from None
        if folder not in target.parents:
            raise ModelError(
                f"{path.name}: external data path {location!r} of tensor '{tensor.name}' escapes the model folder"
                f" {folder} — refusing to read it"
            )
        offset = _external_field(path, tensor, info, "offset") or 0
        length = _external_field(path, tensor, info, "length")
        expected = _expected_bytes(path, tensor, limits)
        if length is None:
            length = expected
        if expected is not None and length != expected:
            raise ModelError(f"{path.name}: tensor '{tensor.name}' needs {expected:,} bytes for its dims and type"
                             f" but its external data declares {length:,}")
        if length is None:
            raise ModelError(f"{path.name}: tensor '{tensor.name}' keeps data of unknown size in {location!r}"
                             " (no length, and its type has no fixed element size)")
        total += length
        if total > limits.max_constant_bytes:
            raise ModelError(f"{path.name}: external data adds up to more than"
                             f" {human_bytes(limits.max_constant_bytes)} (nn_core.Limits.max_constant_bytes)")
        tensor.raw_data = _read_slice(path, target, location, tensor.name, offset, length)
        tensor.data_location = onnx.TensorProto.DEFAULT
        del tensor.external_data[:]


def _expected_bytes(path: Path, tensor: onnx.TensorProto, limits: Limits) -> int | None:
    """The raw byte size the tensor's dims and data type call for (None for strings, which have no fixed size)."""
    if any(d < 0 for d in tensor.dims):
        raise ModelError(f"{path.name}: tensor '{tensor.name}' has a negative dimension {list(tensor.dims)}")
    try:
        dtype = np.dtype(helper.tensor_dtype_to_np_dtype(tensor.data_type))
    except (KeyError, TypeError, ValueError):
        raise ModelError(f"{path.name}: tensor '{tensor.name}' has unknown element type {tensor.data_type}") from None
    if dtype.kind in "OUS":
        return None
    count = element_count(tensor.dims)
    if tensor.data_type in _PACKED_4BIT:
        return (count + 1) // 2
    return count * dtype.itemsize


def _read_slice(path: Path, target: Path, location: str, tensor_name: str, offset: int, length: int) -> bytes:
    try:
        fd = os.open(target, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except FileNotFoundError:
        raise ModelError(f"{path.name}: tensor '{tensor_name}' keeps its data in {location!r}, which is missing"
                         " beside the model") from None
    except OSError as exc:
        raise ModelError(f"{path.name}: tensor '{tensor_name}' keeps its data in {location!r}, which cannot be"
                         f" opened beside the model ({exc.strerror or exc})") from None
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise ModelError(f"{path.name}: external data {location!r} of tensor '{tensor_name}' is not a regular"
                             " file — refusing to read it")
        if info.st_nlink > 1:  # a hard link can make a file outside the folder look like one inside (as onnx)
            raise ModelError(f"{path.name}: external data {location!r} of tensor '{tensor_name}' has several hard"
                             " links — refusing to read it")
        if offset + length > info.st_size:
            raise ModelError(
                f"{path.name}: external data file {location!r} is truncated: tensor '{tensor_name}' needs bytes"
                f" {offset}..{offset + length} of a {info.st_size}-byte file"
            )
        handle.seek(offset)
        return handle.read(length)


def check_model(model: onnx.ModelProto) -> list[str]:
    """onnx's checker, as advice: returns its complaint (if any) instead of refusing the model.

    Real exporters produce files the strict checker rejects (old opsets, odd attributes) that still run
    unambiguously; the graph builder raises its own precise errors for what really cannot run. The checker sees
    the model without its weights (each initializer an empty tensor of its type): it serialises what it checks,
    and copying a ResNet's 100 MB in one call would hold the interpreter for a third of a second, while the
    tensors' contents are checked by the loader anyway.
    """
    try:
        onnx.checker.check_model(_without_weights(model))
    except Exception as exc:  # noqa: BLE001 - the checker raises several unrelated types
        return [str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__]
    return []


def _without_weights(model: onnx.ModelProto) -> onnx.ModelProto:
    light = _copy_except(model, onnx.ModelProto(), "graph")
    _copy_except(model.graph, light.graph, "initializer")
    for tensor in model.graph.initializer:
        light.graph.initializer.add(name=tensor.name, data_type=tensor.data_type, dims=[0])
    return light


def _copy_except(source, target, skipped: str):
    for field, value in source.ListFields():
        if field.name == skipped:
            continue
        if hasattr(value, "extend"):  # a repeated field
            getattr(target, field.name).extend(value)
        elif hasattr(value, "CopyFrom"):  # a message
            getattr(target, field.name).CopyFrom(value)
        else:
            setattr(target, field.name, value)
    return target
