"""Batched random distortions of 28x28 digit images, aimed at digits drawn with a mouse.

The app rasterises strokes the MNIST way (bounding box into 20x20, centred by centre of mass), but people still
draw tilted, sheared, off-centre, larger or smaller digits, with a pen thicker or thinner than MNIST's. So each
training image gets a random affine map (rotation, scale, shear, translation) and a random subset gets thicker or
thinner strokes. Everything is computed for the whole batch at once: one inverse affine map of the pixel grid and
one bilinear gather, and grey-scale dilation/erosion as the max/min of shifted copies.

MNIST's writers are mostly American: their "1" is a bare stick and their "7" has no crossbar. Many writers put a
flag on the "1" (often with a base serif) and then cross their "7" to keep the two apart; a model trained on MNIST
alone reads such a "1" as a 7. Knowing the labels, the style step draws those strokes onto a random share of the
1s and 7s (anti-aliased pen lines rendered from the distance of every pixel to a segment), before the thickness
and affine steps so the new strokes are distorted like the rest of the digit.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class AugmentConfig:
    rotation_degrees: float = 15.0  # uniform in [-r, r]
    scale_range: tuple[float, float] = (0.85, 1.15)
    shear: float = 0.2  # horizontal shear factor, uniform in [-s, s]
    translation_pixels: float = 2.5  # uniform in [-t, t], each axis
    dilate_probability: float = 0.2  # 2x2 grey-scale max filter: strokes ~1 px thicker
    erode_probability: float = 0.1  # 2x2 grey-scale min filter: strokes ~1 px thinner
    # Hand-writing styles drawn onto labelled digits (continental "1" and "7"); probabilities per digit of the class.
    flag_probability: float = 0.4  # a "1" gets a flag from the top of its ink, down to the left
    flag_length: tuple[float, float] = (0.25, 0.55)  # fraction of the ink height (long flags are common)
    flag_angle_degrees: tuple[float, float] = (25.0, 60.0)  # below the horizontal
    serif_probability: float = 0.3  # of the flagged "1"s, the share that also get a base serif
    serif_half_length: tuple[float, float] = (0.15, 0.28)  # each side of the foot, fraction of the ink height
    crossbar_probability: float = 0.3  # a "7" gets a horizontal bar across its stem, near mid-height
    crossbar_half_length: tuple[float, float] = (0.15, 0.25)  # each side of the stem, fraction of the ink height
    pen_width: tuple[float, float] = (2.0, 2.6)  # pixels, for the added strokes

    def describe(self) -> dict:
        return asdict(self)


def random_affine_matrices(count: int, config: AugmentConfig, rng: np.random.Generator) -> np.ndarray:
    """(count, 2, 2) matrices rotation @ shear @ scale acting on (x, y) offsets from the image centre."""
    angle = np.deg2rad(rng.uniform(-config.rotation_degrees, config.rotation_degrees, count))
    scale = rng.uniform(*config.scale_range, count)
    shear = rng.uniform(-config.shear, config.shear, count)
    cos, sin = np.cos(angle), np.sin(angle)
    # rotation [[c, -s], [s, c]] @ shear [[1, k], [0, 1]] @ scale [[a, 0], [0, a]]
    matrices = np.empty((count, 2, 2))
    matrices[:, 0, 0] = cos * scale
    matrices[:, 0, 1] = (cos * shear - sin) * scale
    matrices[:, 1, 0] = sin * scale
    matrices[:, 1, 1] = (sin * shear + cos) * scale
    return matrices


def affine_transform(images: np.ndarray, matrices: np.ndarray, shifts: np.ndarray) -> np.ndarray:
    """Warps each (H, W) image by ``p -> M (p - centre) + centre + shift`` with bilinear sampling, zero outside.

    Works backwards: every output pixel looks up where it came from under the inverse map, so there are no holes.
    ``images`` is (N, H, W); ``matrices`` (N, 2, 2) and ``shifts`` (N, 2) use (x, y) order.
    """
    n, h, w = images.shape
    f32 = np.float32
    cx, cy = f32((w - 1) / 2), f32((h - 1) / 2)
    ys, xs = np.mgrid[0:h, 0:w].astype(f32)
    # Inverse of each 2x2 matrix, written out: (a b; c d)^-1 = (d -b; -c a) / (ad - bc).
    a, b, c, d = (matrices[:, i, j] for i, j in ((0, 0), (0, 1), (1, 0), (1, 1)))
    det = a * d - b * c
    inv = [(v / det).astype(f32)[:, None] for v in (d, -b, -c, a)]
    # source = M^-1 (p - centre - shift) + centre, for all images and pixels at once: (N, H*W) each.
    ox = xs.reshape(1, -1) - (cx + shifts[:, 0:1].astype(f32))
    oy = ys.reshape(1, -1) - (cy + shifts[:, 1:2].astype(f32))
    # +1: coordinates in an image with a one-pixel zero border, so out-of-range samples read zeros, no masks.
    sx = np.clip(inv[0] * ox + inv[1] * oy + (cx + 1), 0, w + 1)
    sy = np.clip(inv[2] * ox + inv[3] * oy + (cy + 1), 0, h + 1)
    x0 = np.minimum(np.floor(sx), f32(w))  # top-left neighbour; float32 so the weights stay float32
    y0 = np.minimum(np.floor(sy), f32(h))
    fx, fy = sx - x0, sy - y0
    padded = np.zeros((n, h + 2, w + 2), dtype=f32)
    padded[:, 1:-1, 1:-1] = images
    flat = padded.reshape(-1)
    index = y0.astype(np.int32) * (w + 2) + x0.astype(np.int32)
    index += np.arange(0, n * (h + 2) * (w + 2), (h + 2) * (w + 2), dtype=np.int32)[:, None]
    top_left, top_right = flat.take(index), flat.take(index + 1)
    bottom_left, bottom_right = flat.take(index + (w + 2)), flat.take(index + (w + 3))
    top = top_left + fx * (top_right - top_left)
    bottom = bottom_left + fx * (bottom_right - bottom_left)
    return (top + fy * (bottom - top)).reshape(n, h, w).astype(f32, copy=False)


def dilate(images: np.ndarray) -> np.ndarray:
    """Grey-scale dilation with a 2x2 square: the max of the image and its copies shifted right/down."""
    padded = np.pad(images, ((0, 0), (1, 0), (1, 0)))
    return np.maximum(np.maximum(padded[:, 1:, 1:], padded[:, :-1, 1:]), np.maximum(padded[:, 1:, :-1],
                                                                                    padded[:, :-1, :-1]))


def erode(images: np.ndarray) -> np.ndarray:
    """Grey-scale erosion with a 2x2 square: the min of the image and its copies shifted left/up (zero outside)."""
    padded = np.pad(images, ((0, 0), (0, 1), (0, 1)))
    return np.minimum(np.minimum(padded[:, :-1, :-1], padded[:, 1:, :-1]), np.minimum(padded[:, :-1, 1:],
                                                                                      padded[:, 1:, 1:]))


def draw_segments(images: np.ndarray, starts: np.ndarray, ends: np.ndarray, widths: np.ndarray) -> np.ndarray:
    """Each image with one straight pen line drawn on it (the ink is the max of old and new), anti-aliased.

    ``starts``/``ends`` are (N, 2) in (x, y) pixel-centre coordinates and ``widths`` (N,) in pixels. A pixel's ink
    falls linearly from 1 to 0 over the one pixel around the line's edge, at distance ``width / 2`` from the
    centre line, which is roughly what box-filtering a hard-edged pen line gives.
    """
    n, h, w = images.shape
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    start = starts.astype(np.float32)[:, :, None, None]
    direction = (ends - starts).astype(np.float32)[:, :, None, None]
    px, py = xs - start[:, 0], ys - start[:, 1]
    length_squared = np.maximum(direction[:, 0] ** 2 + direction[:, 1] ** 2, np.float32(1e-6))
    # Closest point of the segment: the projection onto the line, clamped to the segment's ends.
    t = np.clip((px * direction[:, 0] + py * direction[:, 1]) / length_squared, 0, 1)
    distance = np.hypot(px - t * direction[:, 0], py - t * direction[:, 1])
    ink = np.clip(widths.astype(np.float32)[:, None, None] / 2 + np.float32(0.5) - distance, 0, 1)
    return np.maximum(images, ink)


def _ink_rows(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """First and last row holding clear ink (> 0.5) of each image; (0, H-1) for an image with none."""
    inked = images.max(axis=2) > 0.5
    top = inked.argmax(axis=1)
    bottom = images.shape[1] - 1 - inked[:, ::-1].argmax(axis=1)
    empty = ~inked.any(axis=1)
    top[empty], bottom[empty] = 0, images.shape[1] - 1
    return top, bottom


def _ink_column(images: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Ink-weighted mean column of the given row (one per image): where the stroke crosses that row."""
    picked = images[np.arange(len(images)), rows]
    columns = np.arange(images.shape[2], dtype=np.float32)
    return (picked * columns).sum(axis=1) / np.maximum(picked.sum(axis=1), 1e-6)


def _continental_one(ones: np.ndarray, config: AugmentConfig, rng: np.random.Generator) -> np.ndarray:
    """Flag (and on some a base serif) drawn onto images of 1s."""
    n = len(ones)
    top, bottom = _ink_rows(ones)
    height = (bottom - top + 1).astype(np.float32)
    start = np.stack([_ink_column(ones, top), top.astype(np.float32)], axis=1)
    length = rng.uniform(*config.flag_length, n) * height
    angle = np.deg2rad(rng.uniform(*config.flag_angle_degrees, n))
    end = start + np.stack([-np.cos(angle), np.sin(angle)], axis=1) * length[:, None]  # y grows downwards
    pen = rng.uniform(*config.pen_width, n)
    out = draw_segments(ones, start, end, pen)
    serif = rng.random(n) < config.serif_probability
    if serif.any():
        foot = np.stack([_ink_column(ones, bottom), bottom.astype(np.float32)], axis=1)[serif]
        half = (rng.uniform(*config.serif_half_length, int(serif.sum())) * height[serif])[:, None]
        left, right = foot - half * [1.0, 0.0], foot + half * [1.0, 0.0]
        out[serif] = draw_segments(out[serif], left, right, pen[serif])
    return out


def _continental_seven(sevens: np.ndarray, config: AugmentConfig, rng: np.random.Generator) -> np.ndarray:
    """A short horizontal crossbar through the stem of each 7, a little below mid-height."""
    n = len(sevens)
    top, bottom = _ink_rows(sevens)
    height = (bottom - top + 1).astype(np.float32)
    row = np.round(top + rng.uniform(0.45, 0.6, n) * height).astype(np.int64)
    centre = np.stack([_ink_column(sevens, row), row.astype(np.float32)], axis=1)
    half = rng.uniform(*config.crossbar_half_length, n) * height
    tilt = np.tan(np.deg2rad(rng.uniform(-6.0, 6.0, n)))  # a hand-drawn bar is rarely exactly level
    offset = np.stack([half, half * tilt], axis=1)
    return draw_segments(sevens, centre - offset, centre + offset, rng.uniform(*config.pen_width, n))


def add_handwriting_styles(
    images: np.ndarray, labels: np.ndarray, config: AugmentConfig, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Continental strokes on a random share of the 1s and 7s of an (N, H, W) batch; other digits are untouched.

    Returns the new images (a copy when anything changed) and the mask of the images that changed.
    """
    draw = rng.random(len(images))
    ones = (labels == 1) & (draw < config.flag_probability)
    sevens = (labels == 7) & (draw < config.crossbar_probability)
    if not (ones.any() or sevens.any()):
        return images, ones
    out = images.copy()
    if ones.any():
        out[ones] = _continental_one(images[ones], config, rng)
    if sevens.any():
        out[sevens] = _continental_seven(images[sevens], config, rng)
    return out, ones | sevens


def centre_of_mass(images: np.ndarray) -> np.ndarray:
    """(N, 2) ink centre of each (N, H, W) image in (x, y) pixel coordinates; the image centre if it has no ink."""
    n, h, w = images.shape
    mass = images.sum(axis=(1, 2))
    x = (images.sum(axis=1) * np.arange(w)).sum(axis=1)
    y = (images.sum(axis=2) * np.arange(h)).sum(axis=1)
    centre = np.stack([x, y], axis=1) / np.maximum(mass, 1e-6)[:, None]
    centre[mass <= 0] = [(w - 1) / 2, (h - 1) / 2]
    return centre


def augment_batch(
    images: np.ndarray, config: AugmentConfig, rng: np.random.Generator, labels: np.ndarray | None = None
) -> np.ndarray:
    """Randomly distorted copies of a float32 batch shaped (N, 1, H, W) or (N, H, W), same shape out.

    With ``labels``, a share of the 1s and 7s also get continental strokes (see ``add_handwriting_styles``).
    """
    shape = images.shape
    flat = images.reshape(-1, shape[-2], shape[-1]).astype(np.float32)
    n = flat.shape[0]
    recentre = np.zeros((n, 2))
    if labels is not None:
        styled, changed = add_handwriting_styles(flat, np.asarray(labels), config, rng)
        if changed.any():
            # The app centres drawings by centre of mass, so a flag drawn on a 1 must not leave it off-centre.
            recentre[changed] = centre_of_mass(flat[changed]) - centre_of_mass(styled[changed])
            flat = styled
    choice = rng.random(n)
    thicker = choice < config.dilate_probability
    thinner = (choice >= config.dilate_probability) & (choice < config.dilate_probability + config.erode_probability)
    if thicker.any() or thinner.any():
        flat = flat.copy()
        flat[thicker] = dilate(flat[thicker])
        flat[thinner] = erode(flat[thinner])
    matrices = random_affine_matrices(n, config, rng)
    shifts = rng.uniform(-config.translation_pixels, config.translation_pixels, (n, 2)) + recentre
    return affine_transform(flat, matrices, shifts).reshape(shape)
