"""The drawing as vector strokes, with per-stroke undo/redo and JSON save/load (no Qt).

Coordinates are in *canvas pixels* of a fixed logical canvas (``StrokeDocument.size``), not screen pixels, so a
drawing does not change when the window is resized and the rasterizer always sees the same geometry.

Eraser strokes are stored as strokes too (so undo removes an erasure like any other stroke); ``visible_strokes``
applies them geometrically: ink points within the eraser's radius are cut out, splitting the ink stroke. The
canvas paints and the rasterizer reads the same visible strokes, so what you see is what the model gets.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path

Point = tuple[float, float]

DEFAULT_CANVAS_SIZE = (280, 280)
FILE_FORMAT = "digitscope-strokes"
FILE_VERSION = 1

# Ink strokes are resampled to at most this spacing (canvas pixels) before erasing, so that an eraser crossing
# the straight segment between two far-apart samples (a fast mouse) still cuts it.
_ERASE_RESAMPLE_STEP = 2.0


@dataclass
class Stroke:
    """One pen-down .. pen-up path."""

    points: list[Point] = field(default_factory=list)
    width: float = 18.0
    eraser: bool = False

    def to_dict(self) -> dict:
        return {"points": [[round(x, 2), round(y, 2)] for x, y in self.points], "width": self.width,
                "eraser": self.eraser}

    @classmethod
    def from_dict(cls, data: dict) -> Stroke:
        points = [(float(p[0]), float(p[1])) for p in data["points"]]
        return cls(points=points, width=float(data.get("width", 18.0)), eraser=bool(data.get("eraser", False)))


@dataclass(frozen=True)
class VisibleStroke:
    """A piece of ink that survives the erasers: what gets painted and rasterized."""

    points: tuple[Point, ...]
    width: float


class StrokeDocument:
    """Strokes plus an undo history. Every change bumps ``revision`` (views and caches key on it)."""

    def __init__(self, size: tuple[int, int] = DEFAULT_CANVAS_SIZE) -> None:
        self.size = (int(size[0]), int(size[1]))
        self._strokes: list[Stroke] = []
        # Each history entry is the full stroke list before an action: strokes are small (a few hundred points),
        # so snapshots keep undo of "clear" and "add stroke" equally trivial and obviously correct.
        self._undo: list[list[Stroke]] = []
        self._redo: list[list[Stroke]] = []
        self._active: Stroke | None = None
        self.revision = 0
        self._visible_cache: tuple[int, list[VisibleStroke]] | None = None

    # --- reading -------------------------------------------------------------------------------------------
    @property
    def strokes(self) -> list[Stroke]:
        return list(self._strokes)

    @property
    def is_drawing(self) -> bool:
        return self._active is not None

    def has_ink(self) -> bool:
        """True when some ink survives the erasers."""
        return any(len(s.points) > 0 for s in self.visible_strokes())

    def can_undo(self) -> bool:
        return bool(self._undo) and self._active is None

    def can_redo(self) -> bool:
        return bool(self._redo) and self._active is None

    def visible_strokes(self) -> list[VisibleStroke]:
        if self._visible_cache is None or self._visible_cache[0] != self.revision:
            self._visible_cache = (self.revision, _apply_erasers(self._strokes))
        return self._visible_cache[1]

    def ink_pen_width(self) -> float | None:
        """Length-weighted mean width of the visible ink (the rasterizer takes a single pen width)."""
        total_length = 0.0
        weighted = 0.0
        for stroke in self.visible_strokes():
            length = max(_polyline_length(stroke.points), 1.0)
            total_length += length
            weighted += length * stroke.width
        return weighted / total_length if total_length else None

    # --- drawing -------------------------------------------------------------------------------------------
    def begin_stroke(self, point: Point, width: float, eraser: bool = False) -> None:
        if self._active is not None:
            self.end_stroke()
        self._push_undo()
        self._active = Stroke(points=[_clamp(point, self.size)], width=float(width), eraser=eraser)
        self._strokes.append(self._active)
        self._touch()

    def extend_stroke(self, point: Point) -> bool:
        """Add a point to the stroke being drawn; returns False if nothing changed (no stroke, same point)."""
        if self._active is None:
            return False
        point = _clamp(point, self.size)
        last = self._active.points[-1]
        if abs(point[0] - last[0]) < 0.25 and abs(point[1] - last[1]) < 0.25:
            return False
        self._active.points.append(point)
        self._touch()
        return True

    def end_stroke(self) -> None:
        self._active = None

    # --- editing -------------------------------------------------------------------------------------------
    def clear(self) -> bool:
        """Remove every stroke (undoable). Returns False when there was nothing to clear."""
        self.end_stroke()
        if not self._strokes:
            return False
        self._push_undo()
        self._strokes = []
        self._touch()
        return True

    def undo(self) -> bool:
        self.end_stroke()
        if not self._undo:
            return False
        self._redo.append(self._strokes)
        self._strokes = self._undo.pop()
        self._touch()
        return True

    def redo(self) -> bool:
        self.end_stroke()
        if not self._redo:
            return False
        self._undo.append(self._strokes)
        self._strokes = self._redo.pop()
        self._touch()
        return True

    # --- files ---------------------------------------------------------------------------------------------
    def to_json(self) -> str:
        return json.dumps({"format": FILE_FORMAT, "version": FILE_VERSION, "canvas_size": list(self.size),
                           "strokes": [s.to_dict() for s in self._strokes]})

    def load_json(self, text: str) -> None:
        """Replace the drawing with the one in ``text`` (undoable); raises ValueError on a malformed file."""
        try:
            data = json.loads(text)
            if data.get("format") != FILE_FORMAT:
                raise ValueError(f"not a {FILE_FORMAT} file (format={data.get('format')!r})")
            size = tuple(int(v) for v in data.get("canvas_size", self.size))
            strokes = [Stroke.from_dict(s) for s in data["strokes"]]
        except (KeyError, TypeError, IndexError, AttributeError, json.JSONDecodeError, RecursionError) as exc:
            raise ValueError(f"malformed strokes file: {exc}") from exc
        sx, sy = self.size[0] / size[0], self.size[1] / size[1]
        for stroke in strokes:  # a drawing saved on another canvas size is rescaled to ours
            stroke.points = [(x * sx, y * sy) for x, y in stroke.points]
            stroke.width *= (sx + sy) / 2
        self.end_stroke()
        self._push_undo()
        self._strokes = strokes
        self._touch()

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.to_json(), encoding="utf-8")

    def load(self, path: str | Path) -> None:
        self.load_json(Path(path).read_text(encoding="utf-8"))

    # --- internals -----------------------------------------------------------------------------------------
    def _push_undo(self) -> None:
        self._undo.append([Stroke(list(s.points), s.width, s.eraser) for s in self._strokes])
        self._redo.clear()

    def _touch(self) -> None:
        self.revision += 1


def _clamp(point: Point, size: tuple[int, int]) -> Point:
    return (min(max(float(point[0]), 0.0), float(size[0])), min(max(float(point[1]), 0.0), float(size[1])))


def _polyline_length(points: tuple[Point, ...] | list[Point]) -> float:
    return sum(math.dist(a, b) for a, b in pairwise(points))


def _resample(points: list[Point], step: float) -> list[Point]:
    """Insert points so that no two neighbours are more than ``step`` apart."""
    if len(points) < 2:
        return list(points)
    out = [points[0]]
    for a, b in pairwise(points):
        pieces = max(1, math.ceil(math.dist(a, b) / step))
        out.extend((a[0] + (b[0] - a[0]) * k / pieces, a[1] + (b[1] - a[1]) * k / pieces)
                   for k in range(1, pieces + 1))
    return out


def _distance_to_segment(p: Point, a: Point, b: Point) -> float:
    dx, dy = b[0] - a[0], b[1] - a[1]
    length_sq = dx * dx + dy * dy
    if length_sq == 0.0:
        return math.dist(p, a)
    t = max(0.0, min(1.0, ((p[0] - a[0]) * dx + (p[1] - a[1]) * dy) / length_sq))
    return math.dist(p, (a[0] + t * dx, a[1] + t * dy))


def _erased(point: Point, eraser: Stroke, reach: float, box: tuple[float, float, float, float]) -> bool:
    if not (box[0] - reach <= point[0] <= box[2] + reach and box[1] - reach <= point[1] <= box[3] + reach):
        return False  # cheap rejection: most ink is nowhere near a given eraser stroke
    pts = eraser.points
    if len(pts) == 1:
        return math.dist(point, pts[0]) <= reach
    return any(_distance_to_segment(point, a, b) <= reach for a, b in pairwise(pts))


def _apply_erasers(strokes: list[Stroke]) -> list[VisibleStroke]:
    """Cut every ink stroke by the eraser strokes drawn after it (an eraser never affects later ink)."""
    pieces: list[tuple[list[Point], float]] = []
    for stroke in strokes:
        if not stroke.points:
            continue
        if not stroke.eraser:
            pieces.append((list(stroke.points), stroke.width))
            continue
        xs = [p[0] for p in stroke.points]
        ys = [p[1] for p in stroke.points]
        box = (min(xs), min(ys), max(xs), max(ys))
        cut: list[tuple[list[Point], float]] = []
        for points, width in pieces:
            # A centre-line point goes when the eraser disc would touch its ink: the round caps left at the cut
            # then end exactly at the eraser's edge, so the gap looks like the eraser's footprint.
            reach = (stroke.width + width) / 2
            current: list[Point] = []
            for point in _resample(points, _ERASE_RESAMPLE_STEP):
                if _erased(point, stroke, reach, box):
                    if current:
                        cut.append((current, width))
                    current = []
                else:
                    current.append(point)
            if current:
                cut.append((current, width))
        pieces = cut
    return [VisibleStroke(tuple(points), width) for points, width in pieces]
