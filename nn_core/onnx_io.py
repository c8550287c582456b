"""Reading a .onnx file: recognise what is not a model, load external data safely, run the checker.

Everything a user can get wrong about a file ends here as a ModelError that says what the file really is.
"""

from __future__ import annotations

import os
from pathlib import Path

import onnx
from google.protobuf.message import DecodeError

from .errors import ModelError
from .limits import DEFAULT_LIMITS, Limits

# signatures of files people mistake for ONNX models, checked before protobuf parsing
_MAGIC = [
    (b"PK\x03\x04", "a ZIP archive (a PyTorch .pt/.pth checkpoint or a zipped model?) — export it with torch.onnx"),
    (b"\x89HDF", "an HDF5 file (a Keras .h5 model?) — convert it with tf2onnx"),
    (b"\x80\x02", "a Python pickle (a PyTorch checkpoint?) — export it with torch.onnx"),
    (b"\x80\x04", "a Python pickle (a PyTorch checkpoint?) — export it with torch.onnx"),
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
        return "an HTML page (saved from a web page instead of downloading the raw file?)"
    if text.startswith((b"{", b"[")):
        return "a JSON file"
    if head and all(32 <= b < 127 or b in b"\t\r\n" for b in head[:200]):
        preview = head[:60].decode("ascii", errors="replace").strip().replace("\n", " ")
        return f"a text file starting with {preview!r}"
    return None


def read_model(path: str | os.PathLike[str], limits: Limits = DEFAULT_LIMITS) -> onnx.ModelProto:
    """Parse ``path`` into a ModelProto with its external data loaded; raise ModelError saying what is wrong."""
    path = Path(path)
    if not path.exists():
        raise ModelError(f"{path}: no such file")
    if path.is_dir():
        raise ModelError(f"{path}: is a folder, not an .onnx file")
    data = path.read_bytes()
    if not data:
        raise ModelError(f"{path}: the file is empty (0 bytes)")
    what = _describe_non_model(data[:512])
    if what:
        raise ModelError(f"{path.name}: not an ONNX file (it looks like {what})")
    try:
        model = onnx.load_model_from_string(data)
    except (DecodeError, ValueError, RuntimeError) as exc:
        raise ModelError(
            f"{path.name}: not an ONNX file, or a truncated/damaged one ({len(data):,} bytes): the protobuf "
            f"data cannot be parsed ({exc})"
        ) from None
    if not model.HasField("graph") or (not model.graph.node and not model.graph.output):
        raise ModelError(f"{path.name}: not an ONNX model (the data parses but holds no graph; truncated?)")
    if model.ir_version <= 0:
        raise ModelError(f"{path.name}: not an ONNX model (no IR version; a damaged or foreign protobuf file?)")
    _load_external_data(model, path)
    return model


def _external_tensors(model: onnx.ModelProto):
    from onnx.external_data_helper import _get_all_tensors, uses_external_data

    return [t for t in _get_all_tensors(model) if uses_external_data(t)]


def _load_external_data(model: onnx.ModelProto, path: Path) -> None:
    """Load tensors stored beside the model, refusing any location outside the model's own folder."""
    tensors = _external_tensors(model)
    if not tensors:
        return
    folder = path.resolve().parent
    for tensor in tensors:
        info = {entry.key: entry.value for entry in tensor.external_data}
        location = info.get("location", "")
        target = (folder / location).resolve()
        if os.path.isabs(location) or folder not in target.parents:
            raise ModelError(
                f"{path.name}: external data path {location!r} of tensor '{tensor.name}' escapes the model folder"
                f" {folder} — refusing to read it"
            )
        if not target.is_file():
            raise ModelError(
                f"{path.name}: tensor '{tensor.name}' keeps its data in {location!r}, which is missing beside the"
                " model"
            )
        offset, length = int(info.get("offset", 0) or 0), info.get("length")
        size = target.stat().st_size
        if length is not None and offset + int(length) > size:
            raise ModelError(
                f"{path.name}: external data file {location!r} is truncated: tensor '{tensor.name}' needs bytes"
                f" {offset}..{offset + int(length)} of a {size}-byte file"
            )
        with open(target, "rb") as handle:
            handle.seek(offset)
            tensor.raw_data = handle.read(int(length) if length is not None else -1)
        tensor.data_location = onnx.TensorProto.DEFAULT
        del tensor.external_data[:]


def check_model(model: onnx.ModelProto) -> list[str]:
    """onnx's checker, as advice: returns its complaint (if any) instead of refusing the model.

    Real exporters produce files the strict checker rejects (old opsets, odd attributes) that still run
    unambiguously; the graph builder raises its own precise errors for what really cannot run.
    """
    try:
        onnx.checker.check_model(model)
    except Exception as exc:  # the checker raises several unrelated types
        return [str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__]
    return []
