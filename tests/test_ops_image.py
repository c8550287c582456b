"""ImageDecoder decodes only from the given bytes, only the formats ONNX names, and refuses decompression bombs."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from onnx import helper
from PIL import Image

from nn_core.errors import ModelError
from nn_core.limits import Limits
from nn_core.ops import load_all_kernels
from nn_core.ops.registry import NodeSpec, resolve
from nn_core.ops.testing import run_node


def _encode(image: Image.Image, fmt: str) -> np.ndarray:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return np.frombuffer(buffer.getvalue(), dtype=np.uint8)


def _decode(data: np.ndarray, pixel_format: str = "RGB"):
    node = helper.make_node("ImageDecoder", ["x"], ["y"], pixel_format=pixel_format)
    return run_node(node, [data], 20)[0]


def test_png_in_every_pixel_format():
    pixels = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    data = _encode(Image.fromarray(pixels), "PNG")
    assert np.array_equal(_decode(data), pixels)
    assert np.array_equal(_decode(data, "BGR"), pixels[:, :, ::-1])
    gray = _decode(data, "Grayscale")
    assert gray.shape == (5, 7, 1) and gray.dtype == np.uint8


def _png_claiming(width: int, height: int) -> np.ndarray:
    """A PNG whose header (with a valid CRC) claims a huge size; its pixel data is a few bytes."""
    data = bytearray(_encode(Image.new("L", (1, 1)), "PNG").tobytes())
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    data[16:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr) & 0xFFFFFFFF)
    return np.frombuffer(bytes(data), dtype=np.uint8)


def test_a_decompression_bomb_is_refused_before_decoding():
    with pytest.raises(ModelError, match="decompression bomb|limit"):
        _decode(_png_claiming(60_000, 60_000))


def test_an_image_over_the_tensor_budget_is_refused():
    load_all_kernels()
    spec = NodeSpec("ImageDecoder", inputs=["x"], outputs=["y"], opset=20, limits=Limits(max_tensor_bytes=1000))
    kernel = resolve("ImageDecoder", 20)(spec)
    with pytest.raises(ModelError, match="max_tensor_bytes"):
        kernel.run(_encode(Image.new("RGB", (100, 100)), "PNG"))


@pytest.mark.parametrize("data", [b"not an image at all", b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 1 1\n"])
def test_bytes_of_no_allowed_format_are_refused(data):
    with pytest.raises(ModelError, match="not an image"):
        _decode(np.frombuffer(data, dtype=np.uint8))


def test_a_gif_is_not_among_the_onnx_formats():
    with pytest.raises(ModelError, match="not an image"):
        _decode(_encode(Image.new("RGB", (2, 2)), "GIF"))


def test_a_truncated_image_is_refused():
    data = _encode(Image.fromarray(np.zeros((64, 64, 3), np.uint8) + 7), "JPEG")
    with pytest.raises(ModelError, match="cannot be decoded"):
        _decode(data[: len(data) // 2])
