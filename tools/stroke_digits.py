"""Pen-stroke digits for checking the drawing pipeline without real pen recordings.

Two sources of strokes, both ending as recordings like the canvas makes (lists of (x, y) points in canvas pixels):

* MNIST digits turned back into strokes: threshold an upsampled image, thin it to a one-pixel skeleton
  (Zhang-Suen), trace the skeleton into polylines, smooth them, and replay them on a canvas at a random size and
  place, sampled the way pen events arrive (spacing grows with pen speed, coordinates jitter).
* Parametric templates: a few hand-written-like shapes per digit, bent by random slant, aspect, size and wobble.

Also reads/writes the JSON recordings shipped under tests/data/strokes/. NumPy + Pillow only; nothing here
knows about the network engine or Qt. Run `python tools/stroke_digits.py export DIR` to regenerate the samples.
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

Point = tuple[float, float]
Strokes = list[list[Point]]

MNIST_DIR = Path("/work/shared/data/mnist")


# ----------------------------------------------------------------------------------------------------------------
# MNIST files


def load_mnist(split: str = "t10k", root: Path = MNIST_DIR) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 28, 28) uint8 and labels (N,) uint8 from the IDX gz files of `split` ("t10k" or "train")."""
    with gzip.open(root / f"{split}-images-idx3-ubyte.gz", "rb") as f:
        raw = f.read()
    count, rows, cols = (int.from_bytes(raw[i : i + 4], "big") for i in (4, 8, 12))
    images = np.frombuffer(raw, np.uint8, offset=16).reshape(count, rows, cols)
    with gzip.open(root / f"{split}-labels-idx1-ubyte.gz", "rb") as f:
        labels = np.frombuffer(f.read(), np.uint8, offset=8)
    return images, labels


# ----------------------------------------------------------------------------------------------------------------
# Thinning and skeleton tracing


def _neighbours(padded: np.ndarray) -> list[np.ndarray]:
    """P2..P9 of Zhang-Suen (N, NE, E, SE, S, SW, W, NW) for every interior pixel of a zero-padded stack."""
    c = padded
    return [
        c[:, :-2, 1:-1], c[:, :-2, 2:], c[:, 1:-1, 2:], c[:, 2:, 2:],
        c[:, 2:, 1:-1], c[:, 2:, :-2], c[:, 1:-1, :-2], c[:, :-2, :-2],
    ]  # fmt: skip


def zhang_suen_thin(binary: np.ndarray) -> np.ndarray:
    """One-pixel-wide skeletons of a stack of binary images (N, H, W) or one image (H, W), by Zhang-Suen thinning.

    Vectorised over the whole stack: each sub-iteration removes, in every image at once, the border pixels whose
    removal keeps the shape connected, until nothing changes.
    """
    single = binary.ndim == 2
    img = np.pad(np.asarray(binary, bool)[None] if single else np.asarray(binary, bool), ((0, 0), (1, 1), (1, 1)))
    img = img.astype(np.uint8)
    while True:
        changed = False
        for step in (0, 1):
            p2, p3, p4, p5, p6, p7, p8, p9 = _neighbours(img)
            ring = [p2, p3, p4, p5, p6, p7, p8, p9, p2]
            count = p2 + p3 + p4 + p5 + p6 + p7 + p8 + p9
            # Number of 0 -> 1 transitions around the ring: exactly one means the pixel is a simple border point.
            transitions = sum(((a == 0) & (b == 1)).astype(np.uint8) for a, b in zip(ring, ring[1:], strict=False))
            if step == 0:
                side = (p2 * p4 * p6 == 0) & (p4 * p6 * p8 == 0)
            else:
                side = (p2 * p4 * p8 == 0) & (p2 * p6 * p8 == 0)
            centre = img[:, 1:-1, 1:-1]
            remove = (centre == 1) & (count >= 2) & (count <= 6) & (transitions == 1) & side
            if remove.any():
                centre[remove] = 0
                changed = True
        if not changed:
            break
    out = img[:, 1:-1, 1:-1].astype(bool)
    return out[0] if single else out


_OFFSETS = [(-1, 0), (0, 1), (1, 0), (0, -1), (-1, 1), (1, 1), (1, -1), (-1, -1)]  # 4-neighbours first


def _skeleton_graph(skeleton: np.ndarray) -> dict[tuple[int, int], list[tuple[int, int]]]:
    """Adjacency of skeleton pixels. A diagonal link is dropped when a shared 4-neighbour already joins the two
    pixels: otherwise every staircase corner would be a tiny triangle, i.e. a false junction."""
    h, w = skeleton.shape
    on = {(int(y), int(x)) for y, x in zip(*np.nonzero(skeleton), strict=True)}
    graph: dict[tuple[int, int], list[tuple[int, int]]] = {}
    for y, x in on:
        links = []
        for dy, dx in _OFFSETS:
            q = (y + dy, x + dx)
            if q not in on:
                continue
            if dy and dx and ((y + dy, x) in on or (y, x + dx) in on):
                continue
            links.append(q)
        graph[(y, x)] = links
    return graph


def trace_skeleton(skeleton: np.ndarray) -> list[np.ndarray]:
    """Polylines (arrays of (row, col)) covering every link of a skeleton: walks run between end points and
    junctions; closed loops without either (an "0") are walked from any of their pixels back to it."""
    graph = _skeleton_graph(skeleton)
    seen: set[frozenset] = set()
    paths: list[np.ndarray] = []

    def walk(start: tuple[int, int], nxt: tuple[int, int]) -> None:
        path = [start]
        prev, cur = start, nxt
        seen.add(frozenset((prev, cur)))
        while True:
            path.append(cur)
            if len(graph[cur]) != 2:
                break
            onward = [q for q in graph[cur] if frozenset((cur, q)) not in seen]
            if not onward:
                break
            prev, cur = cur, onward[0]
            seen.add(frozenset((prev, cur)))
        paths.append(np.array(path, float))

    nodes = sorted(p for p, links in graph.items() if len(links) != 2)
    for p in nodes:
        if not graph[p]:
            paths.append(np.array([p], float))  # an isolated pixel: a dot
        for q in graph[p]:
            if frozenset((p, q)) not in seen:
                walk(p, q)
    for p in sorted(graph):  # whatever is left lies on loops
        for q in graph[p]:
            if frozenset((p, q)) not in seen:
                walk(p, q)
    return paths


def _prune_spurs(paths: list[np.ndarray], graph_degree: dict, min_length: float) -> list[np.ndarray]:
    """Drop short branches that hang off a junction with a free end: thinning leaves them at thick corners."""
    kept = []
    for path in paths:
        ends = [graph_degree.get(tuple(map(int, path[0])), 0), graph_degree.get(tuple(map(int, path[-1])), 0)]
        length = np.abs(np.diff(path, axis=0)).max(axis=1).sum() if len(path) > 1 else 0.0
        is_spur = sorted(ends) in ([1, 3], [1, 4]) or (1 in ends and max(ends) >= 3)
        if is_spur and length < min_length:
            continue
        kept.append(path)
    return kept or paths


def _smooth(path: np.ndarray, window: int) -> np.ndarray:
    """Moving average along a polyline, ends pinned, so pixel staircases become the pen's smooth line."""
    if len(path) <= 2 or window <= 1:
        return path
    closed = len(path) > 3 and np.array_equal(path[0], path[-1])
    half = window // 2
    if closed:
        ext = np.concatenate([path[-half - 1 : -1], path, path[1 : half + 1]])
    else:
        ext = np.concatenate([np.repeat(path[:1], half, 0), path, np.repeat(path[-1:], half, 0)])
    kernel = np.ones(window) / window
    out = np.stack([np.convolve(ext[:, k], kernel, mode="valid") for k in range(2)], axis=1)
    if not closed:
        out[0], out[-1] = path[0], path[-1]
    return out


def mnist_to_centrelines(image: np.ndarray, upsample: int = 4, threshold: float = 0.45) -> list[np.ndarray]:
    """Centre lines of an MNIST digit as polylines of (x, y) in the 28x28 frame's units (continuous coordinates)."""
    big = Image.fromarray(image).resize((28 * upsample, 28 * upsample), Image.BICUBIC)
    binary = np.asarray(big) >= threshold * 255
    skeleton = zhang_suen_thin(binary)
    graph = _skeleton_graph(skeleton)
    degree = {p: len(q) for p, q in graph.items()}
    paths = _prune_spurs(trace_skeleton(skeleton), degree, min_length=2.0 * upsample)
    lines = []
    for path in paths:
        smooth = _smooth(path, window=upsample + 1)
        lines.append(np.stack([(smooth[:, 1] + 0.5) / upsample, (smooth[:, 0] + 0.5) / upsample], axis=1))
    return lines


# ----------------------------------------------------------------------------------------------------------------
# Parametric digit templates, in a unit box (x right, y down). Each template is a list of strokes; each stroke a
# list of pieces; each piece a list of control points joined by a smooth curve. Pieces meet at sharp corners.

TEMPLATES: dict[int, list[list[list[list[Point]]]]] = {
    0: [
        [[[(0.55, 0.0), (0.2, 0.12), (0.05, 0.5), (0.2, 0.9), (0.5, 1.0), (0.8, 0.88), (0.95, 0.5), (0.8, 0.1),
           (0.55, 0.0), (0.45, 0.03)]]],
        [[[(0.5, 0.0), (0.85, 0.15), (0.95, 0.55), (0.7, 0.95), (0.4, 1.0), (0.1, 0.8), (0.05, 0.4), (0.3, 0.05),
           (0.55, 0.02)]]],
    ],
    1: [
        [[[(0.5, 0.0), (0.5, 1.0)]]],
        [[[(0.33, 0.2), (0.55, 0.0)], [(0.55, 0.0), (0.52, 1.0)]]],
        [[[(0.28, 0.2), (0.5, 0.0)], [(0.5, 0.0), (0.5, 1.0)]], [[(0.2, 1.0), (0.8, 1.0)]]],
    ],
    2: [
        [[[(0.08, 0.25), (0.45, 0.0), (0.88, 0.2), (0.7, 0.55), (0.05, 1.0)], [(0.05, 1.0), (0.95, 0.98)]]],
        [[[(0.1, 0.2), (0.5, 0.0), (0.85, 0.25), (0.5, 0.7), (0.1, 0.97), (0.3, 0.85), (0.6, 0.98), (0.95, 0.95)]]],
    ],
    3: [
        [[[(0.1, 0.15), (0.5, 0.0), (0.85, 0.2), (0.7, 0.4), (0.4, 0.48)],
          [(0.4, 0.48), (0.8, 0.62), (0.85, 0.85), (0.5, 1.0), (0.1, 0.88)]]],
        [[[(0.1, 0.1), (0.55, 0.0), (0.8, 0.22), (0.45, 0.47), (0.85, 0.7), (0.6, 0.98), (0.08, 0.9)]]],
    ],
    4: [
        [[[(0.6, 0.0), (0.05, 0.66)], [(0.05, 0.66), (0.95, 0.64)]], [[(0.72, 0.3), (0.72, 1.0)]]],
        [[[(0.2, 0.0), (0.1, 0.55)], [(0.1, 0.55), (0.9, 0.55)]], [[(0.75, 0.0), (0.72, 1.0)]]],
    ],
    5: [
        [[[(0.25, 0.02), (0.18, 0.45)], [(0.18, 0.45), (0.55, 0.36), (0.88, 0.6), (0.7, 0.92), (0.4, 1.0),
                                         (0.08, 0.88)]],
         [[(0.25, 0.02), (0.9, 0.0)]]],
        [[[(0.9, 0.0), (0.25, 0.0)], [(0.25, 0.0), (0.2, 0.45)], [(0.2, 0.45), (0.6, 0.38), (0.9, 0.65),
                                                                   (0.6, 0.98), (0.1, 0.9)]]],
    ],
    6: [
        [[[(0.75, 0.0), (0.35, 0.25), (0.1, 0.7), (0.4, 1.0), (0.8, 0.85), (0.75, 0.55), (0.4, 0.52),
           (0.15, 0.72)]]],
        [[[(0.7, 0.0), (0.3, 0.3), (0.15, 0.75), (0.45, 1.0), (0.85, 0.78), (0.55, 0.5), (0.15, 0.65)]]],
    ],
    7: [
        [[[(0.05, 0.02), (0.95, 0.0)], [(0.95, 0.0), (0.35, 1.0)]]],
        [[[(0.05, 0.05), (0.95, 0.0)], [(0.95, 0.0), (0.4, 1.0)]], [[(0.35, 0.52), (0.8, 0.5)]]],
    ],
    8: [
        [[[(0.8, 0.15), (0.5, 0.0), (0.18, 0.2), (0.5, 0.48), (0.85, 0.75), (0.5, 1.0), (0.15, 0.75), (0.5, 0.48),
           (0.82, 0.22), (0.75, 0.1)]]],
        [[[(0.5, 0.48), (0.15, 0.25), (0.5, 0.0), (0.85, 0.25), (0.5, 0.48), (0.12, 0.75), (0.5, 1.0),
           (0.88, 0.75), (0.5, 0.48)]]],
    ],
    9: [
        [[[(0.85, 0.2), (0.5, 0.0), (0.15, 0.2), (0.3, 0.47), (0.65, 0.42), (0.85, 0.22)], [(0.85, 0.22),
                                                                                           (0.78, 1.0)]]],
        [[[(0.82, 0.15), (0.5, 0.0), (0.15, 0.22), (0.4, 0.48), (0.8, 0.3), (0.82, 0.6), (0.6, 1.0)]]],
    ],
}  # fmt: skip


def _catmull_rom(points: np.ndarray, samples_per_span: int = 12) -> np.ndarray:
    """Smooth curve through `points` (uniform Catmull-Rom spline; ends extended by reflection)."""
    if len(points) == 1:
        return points.copy()
    if len(points) == 2:
        t = np.linspace(0.0, 1.0, samples_per_span + 1)[:, None]
        return points[0] * (1 - t) + points[1] * t
    ext = np.concatenate([2 * points[:1] - points[1:2], points, 2 * points[-1:] - points[-2:-1]])
    t = np.linspace(0.0, 1.0, samples_per_span, endpoint=False)[:, None]
    out = []
    for i in range(1, len(ext) - 2):
        p0, p1, p2, p3 = ext[i - 1], ext[i], ext[i + 1], ext[i + 2]
        a, b, c = -p0 + p2, 2 * p0 - 5 * p1 + 4 * p2 - p3, -p0 + 3 * p1 - 3 * p2 + p3
        out.append(p1 + 0.5 * (a * t + b * t**2 + c * t**3))
    out.append(points[-1:])
    return np.concatenate(out)


def template_centrelines(digit: int, rng: np.random.Generator) -> list[np.ndarray]:
    """One random hand-written-like instance of `digit` as polylines in a unit-ish box (before placement)."""
    variants = TEMPLATES[digit]
    template = variants[rng.integers(len(variants))]
    jitter = rng.uniform(0.02, 0.05)
    lines = []
    for stroke in template:
        pieces = []
        for piece in stroke:
            ctrl = np.array(piece, float)
            ctrl = ctrl + rng.normal(0.0, jitter, ctrl.shape)
            if pieces:  # keep the corner where the previous piece ended
                ctrl[0] = pieces[-1][-1]
            pieces.append(_catmull_rom(ctrl))
        lines.append(np.concatenate(pieces))
    # Whole-digit shape changes: aspect (narrow/wide), slant (shear), small rotation, then low-frequency wobble.
    aspect = rng.uniform(0.55, 1.05) if digit != 1 else 1.0
    slant = rng.uniform(-0.12, 0.35)
    angle = np.deg2rad(rng.uniform(-8, 8))
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    out = []
    phase = rng.uniform(0, 2 * np.pi, 4)
    amp = rng.uniform(0.0, 0.02, 2)
    for line in lines:
        xy = line - 0.5
        xy[:, 0] *= aspect
        xy[:, 0] -= slant * xy[:, 1]  # y grows downwards: the top leans right
        xy = xy @ rot.T
        s = np.linspace(0, 1, len(xy))
        xy[:, 0] += amp[0] * np.sin(2 * np.pi * 2 * s + phase[0])
        xy[:, 1] += amp[1] * np.sin(2 * np.pi * 3 * s + phase[1])
        out.append(xy)
    return out


# ----------------------------------------------------------------------------------------------------------------
# Writers: consistent personal styles, for measuring (never for training) how the model reads people who do not
# write like MNIST's writers — flagged and serifed 1s, crossed 7s, closed and open 4s, curly-tailed 9s, flat-topped
# 3s, looped 2s, slashed 0s, stacked-circle 8s. The shapes are deliberately not those of TEMPLATES above.

STYLE_TEMPLATES: dict[int, list[list[list[list[Point]]]]] = {
    0: [
        [[[(0.5, 0.0), (0.12, 0.2), (0.05, 0.55), (0.25, 0.95), (0.6, 0.98), (0.9, 0.6), (0.85, 0.2), (0.5, 0.0)]],
         [[(0.9, 0.05), (0.1, 0.95)]]],  # slashed zero
        [[[(0.6, 0.1), (0.45, 0.0), (0.15, 0.25), (0.1, 0.7), (0.4, 1.0), (0.8, 0.8), (0.85, 0.3), (0.55, 0.0),
           (0.35, 0.12)]]],  # narrow oval, the end overshooting past the start
    ],
    1: [
        [[[(0.12, 0.32), (0.58, 0.0)], [(0.58, 0.0), (0.56, 1.0)]], [[(0.22, 1.0), (0.88, 1.0)]]],  # flag + base
        [[[(0.05, 0.4), (0.6, 0.0)], [(0.6, 0.0), (0.6, 1.0)]]],  # long flag
        [[[(0.0, 0.55), (0.62, 0.0)], [(0.62, 0.0), (0.58, 1.0)]]],  # flag half the height: a 7's cousin
    ],
    2: [
        [[[(0.1, 0.25), (0.5, 0.0), (0.88, 0.25), (0.6, 0.6), (0.2, 0.92), (0.05, 0.85), (0.25, 0.78),
           (0.35, 0.95), (0.95, 0.98)]]],  # looped base
        [[[(0.08, 0.08), (0.92, 0.02)], [(0.92, 0.02), (0.08, 0.98)], [(0.08, 0.98), (0.95, 0.98)]]],  # Z-like
    ],
    3: [
        [[[(0.08, 0.02), (0.9, 0.0)], [(0.9, 0.0), (0.38, 0.42)], [(0.38, 0.42), (0.82, 0.58), (0.88, 0.85),
                                                                    (0.5, 1.0), (0.1, 0.88)]]],  # flat top
        [[[(0.15, 0.2), (0.4, 0.0), (0.8, 0.1), (0.75, 0.35), (0.35, 0.48), (0.3, 0.52), (0.8, 0.62), (0.85, 0.9),
           (0.45, 1.0), (0.1, 0.75)]]],  # round, small waist loop
    ],
    4: [
        [[[(0.72, 1.0), (0.72, 0.0)], [(0.72, 0.0), (0.05, 0.68)], [(0.05, 0.68), (0.95, 0.66)]]],  # closed top
        [[[(0.3, 0.0), (0.12, 0.58)], [(0.12, 0.58), (0.95, 0.52)]], [[(0.75, 0.12), (0.66, 1.0)]]],  # open, slanted
        [[[(0.1, 0.0), (0.12, 0.35), (0.35, 0.55), (0.7, 0.52), (0.9, 0.4)]], [[(0.9, 0.0), (0.88, 1.0)]]],  # Ч-like
    ],
    5: [
        [[[(0.92, 0.02), (0.3, 0.02)], [(0.3, 0.02), (0.22, 0.48)], [(0.22, 0.48), (0.7, 0.38), (0.92, 0.7),
                                                                      (0.6, 1.0), (0.08, 0.9)]]],  # one stroke
        [[[(0.25, 0.0), (0.2, 0.48)], [(0.2, 0.48), (0.85, 0.5)], [(0.85, 0.5), (0.85, 0.95)],
          [(0.85, 0.95), (0.12, 0.98)]], [[(0.25, 0.0), (0.9, 0.02)]]],  # angular belly
        [[[(0.9, 0.02), (0.45, 0.05), (0.25, 0.38), (0.7, 0.42), (0.88, 0.72), (0.5, 1.0), (0.08, 0.85)]]],  # S-like
    ],
    6: [
        [[[(0.85, 0.0), (0.3, 0.5)], [(0.3, 0.5), (0.18, 0.82), (0.45, 1.0), (0.78, 0.85), (0.68, 0.6),
                                        (0.35, 0.62), (0.2, 0.8)]]],  # straight back, small loop
        [[[(0.2, 0.0), (0.2, 1.0)], [(0.2, 1.0), (0.7, 0.95), (0.82, 0.72), (0.55, 0.52), (0.2, 0.65)]]],  # b-like
        [[[(0.88, 0.12), (0.6, 0.0), (0.28, 0.2), (0.12, 0.6), (0.35, 1.0), (0.78, 0.9), (0.78, 0.6), (0.42, 0.52),
           (0.18, 0.7)]]],  # curled top
    ],
    7: [
        [[[(0.05, 0.22), (0.05, 0.0)], [(0.05, 0.0), (0.95, 0.0)], [(0.95, 0.0), (0.4, 1.0)]],
         [[(0.3, 0.5), (0.88, 0.48)]]],  # serif + crossbar
        [[[(0.05, 0.05), (0.95, 0.0)], [(0.95, 0.0), (0.62, 0.4), (0.45, 0.72), (0.42, 1.0)]]],  # curved stem
        [[[(0.05, 0.3), (0.15, 0.05), (0.95, 0.0)], [(0.95, 0.0), (0.5, 1.0)]], [[(0.4, 0.55), (0.85, 0.52)]]],
    ],
    8: [
        [[[(0.5, 0.5), (0.78, 0.25), (0.5, 0.0), (0.22, 0.25), (0.5, 0.5)]],
         [[(0.5, 0.5), (0.15, 0.75), (0.5, 1.0), (0.85, 0.75), (0.5, 0.5)]]],  # two stacked circles
        [[[(0.88, 0.12), (0.5, 0.0), (0.15, 0.18), (0.3, 0.4), (0.75, 0.62), (0.85, 0.88), (0.5, 1.0),
           (0.15, 0.85), (0.3, 0.6), (0.72, 0.35), (0.85, 0.15)]]],  # figure S closed back up
    ],
    9: [
        [[[(0.85, 0.25), (0.5, 0.0), (0.15, 0.2), (0.35, 0.45), (0.82, 0.3)], [(0.82, 0.3), (0.8, 0.7),
                                                                               (0.6, 0.96), (0.3, 1.0),
                                                                               (0.12, 0.85)]]],  # curly tail
        [[[(0.85, 0.2), (0.5, 0.0), (0.15, 0.18), (0.3, 0.45), (0.85, 0.25)], [(0.85, 0.25), (0.82, 0.75),
                                                                               (0.55, 1.0), (0.1, 0.95),
                                                                               (0.0, 0.75)]]],  # g-like hook
        [[[(0.8, 0.22), (0.5, 0.0), (0.18, 0.22), (0.38, 0.46), (0.8, 0.36)]], [[(0.84, 0.05), (0.84, 1.0)]]],
    ],
}  # fmt: skip


@dataclass(frozen=True)
class Writer:
    """One person's handwriting: which STYLE_TEMPLATES variant they use for each digit, a personal distortion of
    its control points, and their slant, width, rotation and pen; every drawing varies a little around them."""

    seed: int
    variants: tuple[int, ...]
    quirks: dict
    slant: float
    aspect: float
    angle: float
    pen_factor: float

    @classmethod
    def make(cls, seed: int) -> Writer:
        rng = np.random.default_rng([7919, seed])
        variants = tuple(int(rng.integers(len(STYLE_TEMPLATES[d]))) for d in range(10))
        quirks = {}
        for d in range(10):
            template = STYLE_TEMPLATES[d][variants[d]]
            quirks[d] = [[rng.normal(0.0, 0.05, (len(piece), 2)) for piece in stroke] for stroke in template]
        return cls(seed, variants, quirks, slant=float(rng.uniform(-0.3, 0.5)), aspect=float(rng.uniform(0.5, 1.1)),
                   angle=float(rng.uniform(-10, 10)), pen_factor=float(np.exp(rng.uniform(np.log(0.5), np.log(2.0)))))

    def centrelines(self, digit: int, rng: np.random.Generator) -> list[np.ndarray]:
        template = STYLE_TEMPLATES[digit][self.variants[digit]]
        lines = []
        jitter = rng.uniform(0.01, 0.03)
        for stroke, quirk in zip(template, self.quirks[digit], strict=True):
            pieces: list[np.ndarray] = []
            for piece, offset in zip(stroke, quirk, strict=True):
                ctrl = np.array(piece, float) + offset + rng.normal(0.0, jitter, offset.shape)
                if pieces:
                    ctrl[0] = pieces[-1][-1]
                pieces.append(_catmull_rom(ctrl))
            lines.append(np.concatenate(pieces))
        aspect = 1.0 if digit == 1 else self.aspect * rng.uniform(0.92, 1.08)
        slant = self.slant + rng.normal(0.0, 0.05)
        angle = np.deg2rad(self.angle + rng.normal(0.0, 3.0))
        rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
        out = []
        for line in lines:
            xy = line - 0.5
            xy[:, 0] *= aspect
            xy[:, 0] -= slant * xy[:, 1]
            out.append(xy @ rot.T)
        return out

    def draw(self, digit: int, rng: np.random.Generator, placement: Placement) -> tuple[Strokes, float]:
        """One recording of ``digit`` by this writer and the pen width (canvas pixels) they drew it with."""
        pen = self.pen_factor * min(placement.canvas_size) / 14 * rng.uniform(0.9, 1.1)
        return place_on_canvas(self.centrelines(digit, rng), rng, placement), pen


def writer_recordings(writer_seeds: Sequence[int], per_digit: int, canvas_size: tuple[int, int] = (280, 280),
                      seed: int = 0) -> list[tuple[int, int, Strokes, float]]:
    """(writer seed, digit, recording, pen width) for ``per_digit`` drawings of every digit by every writer."""
    placement = Placement(canvas_size=canvas_size, min_height=0.35, max_height=0.9)
    out = []
    for w in writer_seeds:
        writer, rng = Writer.make(w), np.random.default_rng([seed, w])
        for digit in range(10):
            for _ in range(per_digit):
                strokes, pen = writer.draw(digit, rng, placement)
                out.append((w, digit, strokes, pen))
    return out


# ----------------------------------------------------------------------------------------------------------------
# Replaying centre lines as pen events on a canvas


@dataclass(frozen=True)
class Placement:
    canvas_size: tuple[int, int] = (400, 400)
    min_height: float = 0.3  # digit height as a fraction of the canvas height
    max_height: float = 0.9
    integer_points: bool | None = None  # mouse events are whole pixels; None: choose at random


def _resample_like_pen(line: np.ndarray, rng: np.random.Generator, scale: float) -> np.ndarray:
    """Points along `line` the way pen events arrive: fixed time steps, so spacing follows a speed that varies
    along the stroke and drops at sharp bends; plus a little hand/sensor jitter."""
    if len(line) == 1:
        return line
    seg = np.linalg.norm(np.diff(line, axis=0), axis=1)
    arc = np.concatenate([[0.0], np.cumsum(seg)])
    total = arc[-1]
    if total <= 0:
        return line[:1]
    base_speed = rng.uniform(0.01, 0.08) * scale  # canvas px per event: slow tablet to fast mouse flick
    positions = [0.0]
    while positions[-1] < total:
        s = positions[-1] / total
        speed = base_speed * (0.6 + 0.8 * np.sin(np.pi * s))  # accelerate then decelerate
        positions.append(positions[-1] + max(1.0, speed * rng.uniform(0.7, 1.3)))
    positions[-1] = total
    pts = np.stack([np.interp(positions, arc, line[:, k]) for k in range(2)], axis=1)
    pts[1:-1] += rng.normal(0.0, 0.4, pts[1:-1].shape)
    return pts


def place_on_canvas(
    lines: Sequence[np.ndarray], rng: np.random.Generator, placement: Placement = Placement()
) -> Strokes:
    """Scale the centre lines to a random digit height on the canvas, put them at a random place that fits,
    and sample them like pen events. Returns the recording as lists of (x, y) canvas points."""
    width, height = placement.canvas_size
    pts = np.concatenate(lines)
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    extent = max(hi[1] - lo[1], 1e-6)
    target = rng.uniform(placement.min_height, placement.max_height) * height
    scale = target / extent
    size = (hi - lo) * scale
    if size[0] > 0.95 * width:  # a very wide digit: shrink to fit
        scale *= 0.95 * width / size[0]
        size = (hi - lo) * scale
    margin = np.maximum(np.array([width, height]) - size, 0.0)
    origin = rng.uniform(0.0, 1.0, 2) * margin
    integer = rng.random() < 0.5 if placement.integer_points is None else placement.integer_points
    strokes: Strokes = []
    for line in lines:
        xy = (line - lo) * scale + origin
        xy = _resample_like_pen(xy, rng, scale=max(size.max(), 1.0))
        xy = np.clip(xy, 0, [width - 1, height - 1])
        if integer:
            xy = np.round(xy)
        strokes.append([(float(x), float(y)) for x, y in xy])
    return strokes


def mnist_strokes(image: np.ndarray, rng: np.random.Generator, placement: Placement = Placement()) -> Strokes:
    """An MNIST digit as a pen recording (see the module docstring)."""
    return place_on_canvas(mnist_to_centrelines(image), rng, placement)


def synthetic_strokes(digit: int, rng: np.random.Generator, placement: Placement = Placement()) -> Strokes:
    """A parametric hand-written-like `digit` as a pen recording."""
    return place_on_canvas(template_centrelines(digit, rng), rng, placement)


# ----------------------------------------------------------------------------------------------------------------
# JSON recordings


def save_recording(path: Path, label: int, strokes: Strokes, canvas_size: tuple[int, int], source: str) -> None:
    doc = {
        "label": int(label),
        "canvas_size": list(canvas_size),
        "source": source,
        "strokes": [[[round(x, 2), round(y, 2)] for x, y in stroke] for stroke in strokes],
    }
    path.write_text(json.dumps(doc, separators=(",", ":")) + "\n")


def load_recording(path: Path) -> tuple[int, Strokes, tuple[int, int]]:
    doc = json.loads(Path(path).read_text())
    strokes = [[(float(x), float(y)) for x, y in stroke] for stroke in doc["strokes"]]
    return int(doc["label"]), strokes, (int(doc["canvas_size"][0]), int(doc["canvas_size"][1]))


def _onnx_recogniser(path: Path):
    """images (N, 28, 28) in [0, 1] -> (labels, top probability) with onnxruntime, for models fed x/255."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    spec = session.get_inputs()[0]

    def recognise(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        nhwc = len(spec.shape) == 4 and spec.shape[-1] == 1
        x = images.reshape(len(images), *((28, 28, 1) if nhwc else (1, 28, 28))).astype(np.float32)
        scores = np.concatenate([session.run(None, {spec.name: x[i : i + 1]})[0] for i in range(len(x))])
        scores = scores.reshape(len(images), -1)
        if not np.allclose(scores.sum(axis=1), 1.0, atol=1e-3):  # logits: softmax them
            scores = np.exp(scores - scores.max(axis=1, keepdims=True))
            scores /= scores.sum(axis=1, keepdims=True)
        return scores.argmax(axis=1), scores.max(axis=1)

    return recognise


def pen_mnist(images: np.ndarray, rng: np.random.Generator, canvas_size: tuple[int, int] = (280, 280),
              pen_factors: tuple[float, float] = (0.5, 2.0)) -> np.ndarray:
    """MNIST digits (uint8 [N, 28, 28]) as the app would see them drawn with a pen: each retraced into strokes
    (``mnist_strokes``: random size/place on the canvas, pen-event sampling) and rasterised by the app's own
    ``gui.rasterize`` with a random pen width (``pen_factors`` times the default, log-uniform: the rasteriser
    keeps the stroke width within MNIST's range). Returns uint8 [N, 28, 28] (ink 255 on 0): training data
    that carries the rasteriser's uniform, round-capped strokes instead of MNIST's scanned ink."""
    from gui.rasterize import default_pen_width, rasterize

    placement = Placement(canvas_size=canvas_size)
    default = default_pen_width(canvas_size)
    out = np.zeros((len(images), 28, 28), np.uint8)
    low, high = np.log(pen_factors[0]), np.log(pen_factors[1])
    for i, image in enumerate(images):
        pen = default * float(np.exp(rng.uniform(low, high)))
        out[i] = np.round(rasterize(mnist_strokes(image, rng, placement), canvas_size, pen) * 255)
    return out


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    pen = sub.add_parser("pen-mnist", help="MNIST digits retraced into strokes and drawn by the app's rasteriser "
                         "(training/calibration data for the bundled model), as an npz of images/labels/indices")
    pen.add_argument("out", type=Path)
    pen.add_argument("--split", choices=["train", "t10k"], default="train")
    pen.add_argument("--data", type=Path, default=MNIST_DIR)
    pen.add_argument("--start", type=int, default=0)
    pen.add_argument("--count", type=int, default=None)
    pen.add_argument("--seed", type=int, default=0)
    wr = sub.add_parser("writers", help="drawings by Writer styles through gui.rasterize, as an npz of images/labels/"
                        "writers (e.g. the tuning writers 100-119, for calibrating the bundled model)")
    wr.add_argument("out", type=Path)
    wr.add_argument("--writers", type=int, nargs=2, default=(100, 119), metavar=("FIRST", "LAST"))
    wr.add_argument("--per-digit", type=int, default=10)
    wr.add_argument("--seed", type=int, default=0)
    export = sub.add_parser("export", help="write synthetic recordings (JSON) for the tests")
    export.add_argument("out", type=Path)
    export.add_argument("--per-digit", type=int, default=3)
    export.add_argument("--seed", type=int, default=2024)
    export.add_argument("--canvas", type=int, nargs=2, default=(280, 280))
    export.add_argument(
        "--check-model", type=Path, action="append", default=[],
        help="keep only recordings that this ONNX model (input x/255) recognises with >= 0.9 probability; "
        "repeat to require several independent models to agree, so the shipped samples are unambiguous",
    )  # fmt: skip
    args = parser.parse_args(argv)

    root = str(Path(__file__).resolve().parents[1])  # run as a script: make the project importable
    if root not in sys.path:
        sys.path.insert(0, root)
    from gui.rasterize import rasterize

    if args.command == "pen-mnist":
        images, labels = load_mnist(args.split, args.data)
        stop = len(images) if args.count is None else min(len(images), args.start + args.count)
        index = np.arange(args.start, stop)
        drawn = pen_mnist(images[index], np.random.default_rng([args.seed, args.start]))
        args.out.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(args.out, images=drawn, labels=labels[index].astype(np.uint8),
                            indices=index.astype(np.int32), split=args.split)
        print(f"wrote {args.out}: {len(index)} {args.split} digits drawn through gui.rasterize")
        return
    if args.command == "writers":
        recordings = writer_recordings(range(args.writers[0], args.writers[1] + 1), args.per_digit, seed=args.seed)
        drawn = np.stack([rasterize(r, (280, 280), pen) for _, _, r, pen in recordings])
        np.savez_compressed(args.out, images=np.round(drawn * 255).astype(np.uint8),
                            labels=np.array([d for _, d, _, _ in recordings], np.uint8),
                            writers=np.array([w for w, _, _, _ in recordings], np.int32))
        print(f"wrote {args.out}: {len(recordings)} drawings by writers {args.writers[0]}-{args.writers[1]}")
        return
    recognisers = [_onnx_recogniser(p) for p in args.check_model]
    args.out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(args.seed)
    placement = Placement(canvas_size=tuple(args.canvas))
    for digit in range(10):
        kept = tried = 0
        while kept < args.per_digit:
            tried += 1
            strokes = synthetic_strokes(digit, rng, placement)
            image = rasterize(strokes, placement.canvas_size)[None]
            verdicts = [recognise(image) for recognise in recognisers]
            if all(label[0] == digit and prob[0] >= 0.9 for label, prob in verdicts):
                name = args.out / f"digit{digit}_{kept}.json"
                save_recording(name, digit, strokes, placement.canvas_size, "tools/stroke_digits.py template")
                kept += 1
        print(f"digit {digit}: kept {kept} of {tried}")


if __name__ == "__main__":
    main()
