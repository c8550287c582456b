"""ImageDecoder: an encoded image (the bytes of a BMP, JPEG, JPEG 2000, PNG, PNM, TIFF or WebP file) to a
[H, W, 3] RGB/BGR or [H, W, 1] grayscale uint8 tensor, decoded by Pillow.

The bytes come from the model or its input, so they are untrusted: Pillow is only given the bytes (an in-memory
stream, never a path), only the formats ONNX names are tried (Pillow's other plugins, some of which run external
programs such as Ghostscript for EPS, are never reached), and the size the header declares is checked before any
pixel is decoded — against Pillow's decompression-bomb bound (``PIL.Image.MAX_IMAGE_PIXELS``, its warning made an
error) and against the node's tensor budget (``Limits.max_tensor_bytes``) — so a small file cannot expand into
gigabytes. A truncated or malformed stream is refused with the decoder's reason.
"""

from __future__ import annotations

import io
import warnings

import numpy as np

from .registry import NodeSpec, Op, register

#: the formats the ONNX specification lists, by Pillow's names
FORMATS = ("BMP", "JPEG", "JPEG2000", "PNG", "PPM", "TIFF", "WEBP")


@register("ImageDecoder", 20)
class ImageDecoder(Op):
    def __init__(self, node: NodeSpec):
        super().__init__(node)
        self.pixel_format = self.attr("pixel_format", "RGB")
        if self.pixel_format not in ("RGB", "BGR", "Grayscale"):
            raise self.fail(f"pixel_format must be RGB, BGR or Grayscale, got {self.pixel_format!r}")

    def run(self, encoded):
        from PIL import Image, UnidentifiedImageError

        if not isinstance(encoded, np.ndarray) or encoded.dtype != np.uint8 or encoded.ndim != 1:
            raise self.fail(f"the encoded image must be a 1-D uint8 tensor, got {getattr(encoded, 'dtype', None)} "
                            f"of shape {list(np.shape(encoded))}")
        channels = 1 if self.pixel_format == "Grayscale" else 3
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                image = Image.open(io.BytesIO(encoded.tobytes()), formats=FORMATS)
                width, height = image.size
                self.check_size((height, width, max(channels, len(image.getbands()))), np.uint8, "the decoded image")
                self.check_work(float(width) * height * 100, "decoding the image")
                image.load()
                image = image.convert("L" if channels == 1 else "RGB")
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise self.fail(f"refusing a decompression bomb: {exc}") from None
        except UnidentifiedImageError:
            raise self.fail(f"the bytes are not an image in one of the formats ONNX names ({', '.join(FORMATS)})") \
                from None
        except (OSError, ValueError, SyntaxError, EOFError) as exc:  # Pillow's ways of saying "broken file"
            raise self.fail(f"the image cannot be decoded: {type(exc).__name__}: {exc}") from None
        pixels = np.asarray(image, dtype=np.uint8)
        if channels == 1:
            return pixels.reshape(pixels.shape[0], pixels.shape[1], 1)
        return np.ascontiguousarray(pixels[:, :, ::-1]) if self.pixel_format == "BGR" else pixels
