"""Turn pen strokes drawn on the canvas into the 28x28 image an MNIST-trained network expects.

MNIST's own recipe (LeCun et al.): the digit's ink bounding box is scaled, keeping its aspect ratio, to fit a
20x20 box with anti-aliasing, and that image is placed in a 28x28 field so that its centre of mass sits at the
centre. We follow it, with one deliberate change: the stroke thickness is set in the *normalised* image, not on
the canvas. With a fixed pen on the canvas, a digit drawn large would come out hair-thin after shrinking to 20 px
and a small one would come out as a blob; MNIST strokes are about 2-3 px wide (with soft edges) whatever size
the writer used. So the stroke centre lines are scaled into the box first and then drawn with an MNIST-like
width; the pen width only makes that width somewhat bolder or lighter relative to the app's default pen, within
MNIST's range.

Drawing is supersampled (round caps and joins) and box-filtered down, which gives the soft, anti-aliased edges
MNIST has. No Qt here: Pillow and NumPy only, so the tests and benchmarks use exactly what the app uses.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

FIELD = 28  # output image side
BOX = 20  # MNIST's size-normalisation box
# MNIST puts the centre of mass at pixel index (14, 14) (measured on the test set: mean 14.0, sd 0.3 with pixel
# i covering [i, i + 1)); i.e. half a pixel right/below the geometric centre, which is 13.5.
MNIST_CENTRE = 14.0

Point = Sequence[float]


@dataclass(frozen=True)
class RasterStyle:
    """How strokes are turned into the 28x28 image. The defaults are what the app and tests use; the drawn-digit
    benchmark varies them to show which choices matter."""

    # Width in 28x28 pixels drawn by the default pen. 2.5 gives MNIST's statistics on the drawn-digit proxies
    # (benchmarks/drawn_digits.py): median ink mass / skeleton length 2.7 px (MNIST 2.7), ~150 inked pixels per
    # digit (MNIST 151) and 70 % of inked pixels above 0.5 (MNIST 70 %), all without any blur.
    stroke_width: float = 2.5
    relative_width: bool = True  # width set after normalisation (True) or the canvas pen scaled with the digit
    # A pen k times the default draws stroke_width * k ** pen_response, kept within [min_width, max_width]: the
    # user sees bolder/lighter strokes, but the result stays inside MNIST's range (5-95 % of MNIST digits: 1.6 to
    # 4.7 px by the width estimate above); past these limits the bundled model's accuracy on drawn digits drops.
    pen_response: float = 0.5
    min_width: float = 1.5
    max_width: float = 3.8
    supersample: int = 8  # drawing resolution multiplier, for anti-aliasing
    blur: float = 0.0  # Gaussian sigma in output pixels applied after drawing (0: none)
    centring: str = "mass"  # "mass" (MNIST) or "box" (bounding box centred)


DEFAULT_STYLE = RasterStyle()


def default_pen_width(canvas_size: tuple[int, int]) -> float:
    """The app's default pen width in canvas pixels: 1/14 of the canvas's shorter side (20 px on the 280x280
    canvas). A digit drawn across most of the canvas then has about MNIST's stroke-to-height proportion
    (2.5 px in a 20 px box), so what the user sees resembles what the model gets."""
    return max(1.0, min(canvas_size) / 14)


def center_of_mass(image: np.ndarray) -> tuple[float, float]:
    """(row, col) centre of mass of a 2-D intensity image, in pixel-index coordinates; the centre of the image
    when it is empty."""
    total = float(image.sum())
    if total <= 0:
        return ((image.shape[0] - 1) / 2, (image.shape[1] - 1) / 2)
    rows = np.arange(image.shape[0], dtype=np.float64)
    cols = np.arange(image.shape[1], dtype=np.float64)
    return float(image.sum(axis=1) @ rows) / total, float(image.sum(axis=0) @ cols) / total


def center_of_mass_shift(image: np.ndarray, centre: float = MNIST_CENTRE) -> tuple[float, float]:
    """(dy, dx) that moves the image's centre of mass to (centre, centre), e.g. MNIST's (14, 14) for 28x28."""
    cy, cx = center_of_mass(image)
    return centre - cy, centre - cx


def _shift(image: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """Integer translation with zero fill (ink leaving the field is lost, as in MNIST)."""
    out = np.zeros_like(image)
    h, w = image.shape
    src_y, dst_y = (slice(0, h - dy), slice(dy, h)) if dy >= 0 else (slice(-dy, h), slice(0, h + dy))
    src_x, dst_x = (slice(0, w - dx), slice(dx, w)) if dx >= 0 else (slice(-dx, w), slice(0, w + dx))
    if h - abs(dy) > 0 and w - abs(dx) > 0:
        out[dst_y, dst_x] = image[src_y, src_x]
    return out


def _gaussian_blur(image: np.ndarray, sigma: float) -> np.ndarray:
    radius = max(1, int(np.ceil(3 * sigma)))
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    taps /= taps.sum()
    padded = np.pad(image, radius)
    rows = np.apply_along_axis(np.convolve, 1, padded, taps, mode="valid")
    return np.apply_along_axis(np.convolve, 0, rows, taps, mode="valid")


def _stroke_arrays(strokes: Sequence[Sequence[Point]]) -> list[np.ndarray]:
    arrays = []
    for stroke in strokes:
        pts = np.asarray(stroke, dtype=np.float64).reshape(-1, 2)
        pts = pts[np.isfinite(pts).all(axis=1)]
        if len(pts):
            arrays.append(pts)
    return arrays


def _thin_out(xy: np.ndarray, step: float) -> np.ndarray:
    """Keep about one point per `step` of path length (plus both ends): pen events far denser than the drawing
    resolution only cost time, and the shape moves by less than `step`."""
    if len(xy) <= 2:
        return xy
    arc = np.concatenate([[0.0], np.cumsum(np.hypot(*np.diff(xy, axis=0).T))])
    bucket = np.floor(arc / step)
    keep = np.concatenate([[True], bucket[1:] != bucket[:-1]])
    keep[-1] = True
    return xy[keep]


def rasterize_with_style(
    strokes: Sequence[Sequence[Point]],
    canvas_size: tuple[int, int],
    pen_width: float | None = None,
    style: RasterStyle = DEFAULT_STYLE,
) -> np.ndarray:
    """`rasterize` with the drawing choices spelled out (see RasterStyle)."""
    lines = _stroke_arrays(strokes)
    if not lines:
        return np.zeros((FIELD, FIELD), np.float32)
    default_pen = default_pen_width(canvas_size)
    pen = default_pen if pen_width is None else max(float(pen_width), 1e-3)

    points = np.concatenate(lines)
    lo, hi = points.min(axis=0), points.max(axis=0)
    # A mark smaller than half a pen width (a tap, a trembling click) is a dot, not something to magnify 20-fold.
    extent = max(float((hi - lo).max()), 0.5 * pen)
    if style.relative_width:
        bolder = (pen / default_pen) ** style.pen_response
        width = float(np.clip(style.stroke_width * bolder, style.min_width, style.max_width))
        scale = (BOX - width) / extent  # centre lines + half a width on each side = the 20 px box
    else:
        scale = BOX / (extent + pen)  # MNIST applied literally: the canvas ink box becomes 20 px
        width = pen * scale

    ss = style.supersample
    size = FIELD * ss
    centre_of_box = (lo + hi) / 2
    image = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(image)
    radius = width * ss / 2
    line_width = max(1, round(width * ss))
    for line in lines:
        # Canvas -> supersampled field coordinates with the ink box centred. Pillow's pixel k is centred on
        # coordinate k, ours spans [k, k + 1): hence the -0.5; and its ellipse box is inclusive: hence r - 0.5.
        xy = _thin_out(((line - centre_of_box) * scale + FIELD / 2) * ss - 0.5, step=1.0)
        pts = [tuple(p) for p in xy]
        if len(pts) > 1:
            draw.line(pts, fill=255, width=line_width)
        r = max(radius - 0.5, 0.0)
        for x, y in pts:  # round caps and joins (and a dot for a single point)
            draw.ellipse([x - r, y - r, x + r, y + r], fill=255)

    hi_res = np.asarray(image, dtype=np.float32) / 255.0
    if style.centring == "mass":
        # Centre of mass of the fine image in output-pixel-index coordinates; shift by whole fine pixels, so the
        # final image lands within half a fine pixel of MNIST's centre.
        # The shift is limited so that no ink leaves the field: for digits it hardly ever binds (2 of 2,500 proxy
        # digits in benchmarks/drawn_digits.py), but a lopsided scribble keeps all of what the user sees.
        cy, cx = center_of_mass(hi_res)
        cy, cx = (cy + 0.5) / ss - 0.5, (cx + 0.5) / ss - 0.5
        rows = np.nonzero(hi_res.any(axis=1))[0]
        cols = np.nonzero(hi_res.any(axis=0))[0]
        dy = int(np.clip(round((MNIST_CENTRE - cy) * ss), -rows[0], size - 1 - rows[-1]))
        dx = int(np.clip(round((MNIST_CENTRE - cx) * ss), -cols[0], size - 1 - cols[-1]))
        hi_res = _shift(hi_res, dy, dx)
    out = hi_res.reshape(FIELD, ss, FIELD, ss).mean(axis=(1, 3))  # box filter = exact pixel coverage
    if style.blur > 0:
        out = _gaussian_blur(out, style.blur)
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def rasterize(
    strokes: Sequence[Sequence[Point]], canvas_size: tuple[int, int], pen_width: float | None = None
) -> np.ndarray:
    """A (28, 28) float32 image in [0, 1], ink 1.0 on 0.0, of `strokes` MNIST-style.

    strokes: lists of (x, y) points in canvas pixels, origin top-left (a one-point stroke is a dot).
    canvas_size: (width, height) of the canvas. pen_width: in canvas pixels; None is `default_pen_width`.
    Thickness in the result is MNIST-like for the default pen whatever the drawing's size; a wider pen draws
    bolder strokes. Empty input gives all zeros.
    """
    return rasterize_with_style(strokes, canvas_size, pen_width, DEFAULT_STYLE)
