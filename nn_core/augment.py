"""Batched random distortions of 28x28 digit images, aimed at digits drawn with a mouse.

The app rasterises strokes the MNIST way (bounding box into 20x20, centred by centre of mass), but people still
draw tilted, sheared, off-centre, larger or smaller digits, with a pen thicker or thinner than MNIST's. So each
training image gets a random affine map (rotation, scale, shear, translation) and a random subset gets thicker or
thinner strokes. Everything is computed for the whole batch at once: one inverse affine map of the pixel grid and
one bilinear gather, and grey-scale dilation/erosion as the max/min of shifted copies.
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


def augment_batch(images: np.ndarray, config: AugmentConfig, rng: np.random.Generator) -> np.ndarray:
    """Randomly distorted copies of a float32 batch shaped (N, 1, H, W) or (N, H, W), same shape out."""
    shape = images.shape
    flat = images.reshape(-1, shape[-2], shape[-1]).astype(np.float32)
    n = flat.shape[0]
    choice = rng.random(n)
    thicker = choice < config.dilate_probability
    thinner = (choice >= config.dilate_probability) & (choice < config.dilate_probability + config.erode_probability)
    if thicker.any() or thinner.any():
        flat = flat.copy()
        flat[thicker] = dilate(flat[thicker])
        flat[thinner] = erode(flat[thinner])
    matrices = random_affine_matrices(n, config, rng)
    shifts = rng.uniform(-config.translation_pixels, config.translation_pixels, (n, 2))
    return affine_transform(flat, matrices, shifts).reshape(shape)
