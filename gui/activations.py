"""Every node's output, live: conv feature maps as grids of small images, dense outputs as bars or heat strips.

Cost control for big models: setting new values only stores references; the image conversion (the only
expensive part) happens in ``paintEvent``, which Qt calls only for cards inside the scroll area's viewport.
Cards exist for one page of nodes at a time (``gui.paging``), so a graph of any length builds at most a page of
widgets. A new model's page of cards is built only while the view is shown, a few cards per event-loop turn
(``gui.qt_bridge.Steps``): a hundred cards made, laid out and the old ones deleted in one go kept the UI thread
busy 15-35 ms. ``entries`` finishes a build under way first, so callers always see the current page's cards.
"""

from __future__ import annotations

import bisect
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
from PySide6.QtCore import QEvent, QPointF, QRectF, QSize, Qt, QTimer, Signal
from PySide6.QtGui import QColor, QImage, QMouseEvent, QPainter, QPaintEvent, QPixmap, QResizeEvent
from PySide6.QtWidgets import (
    QDialog,
    QHBoxLayout,
    QLabel,
    QScrollArea,
    QSizePolicy,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from gui.paging import PAGE_SIZE, Pages
from gui.qt_bridge import shared_steps

HEADER_HEIGHT = 22
MAX_MAPS_SHOWN = 256
MAX_VECTOR_CELLS = 4096
BARS_UP_TO = 64  # vectors up to this long are drawn as bars, longer ones as a heat strip
GAP_INDEX = 255  # colour-table slot for the gaps between tiles in a mosaic
CARDS_RETIRED_PER_STEP = 10  # old cards hidden and handed to deleteLater between two looks at the clock
CARD_BACKGROUND = QColor(32, 32, 36)
TEXT = QColor(220, 220, 226)
DIM_TEXT = QColor(145, 145, 155)
SELECTED = QColor(255, 170, 60)


def _lerp_table(anchors: list[tuple[int, int, int]], size: int = 255) -> np.ndarray:
    """A (size, 3) colour table through evenly spaced anchor colours."""
    anchors_array = np.array(anchors, dtype=np.float64)
    positions = np.linspace(0, len(anchors) - 1, size)
    low = np.floor(positions).astype(int).clip(0, len(anchors) - 2)
    t = (positions - low)[:, None]
    return (anchors_array[low] * (1 - t) + anchors_array[low + 1] * t).round().astype(np.uint8)


# Non-negative activations (after ReLU, pooling, softmax): dark = 0, bright = high, like an "inferno" scale.
SEQUENTIAL = _lerp_table([(0, 0, 4), (50, 10, 94), (120, 28, 109), (188, 55, 84), (237, 105, 37),
                          (251, 180, 26), (252, 255, 164)])
# Signed values (conv outputs before the activation, logits): blue below zero, black at zero, orange above.
DIVERGING = _lerp_table([(120, 180, 255), (40, 90, 200), (0, 0, 0), (215, 95, 20), (255, 200, 120)])


def _colour_table(table: np.ndarray) -> list[int]:
    colours = [0xFF000000 | (int(r) << 16) | (int(g) << 8) | int(b) for r, g, b in table]
    colours.append(0xFF2A2A30)  # GAP_INDEX
    return colours


SEQUENTIAL_COLOURS = _colour_table(SEQUENTIAL)
DIVERGING_COLOURS = _colour_table(DIVERGING)


@dataclass(frozen=True)
class ColourScale:
    """Maps values to colour-table indices 0..254; one scale per layer so its maps can be compared."""

    low: float
    high: float
    signed: bool

    @classmethod
    def for_values(cls, values: np.ndarray) -> ColourScale:
        if values.size == 0:
            return cls(0.0, 1.0, False)
        low, high = float(values.min()), float(values.max())
        if not (math.isfinite(low) and math.isfinite(high)):  # rare: only then pay for the mask of finite values
            finite = values[np.isfinite(values)]
            if finite.size == 0:
                return cls(0.0, 1.0, False)
            low, high = float(finite.min()), float(finite.max())
        if low < 0 < high or (low < 0 and high <= 0):
            limit = max(abs(low), abs(high)) or 1.0
            return cls(-limit, limit, True)  # symmetric, so zero is always the middle (black)
        return cls(0.0, high if high > 0 else 1.0, False)

    def indices(self, values: np.ndarray) -> np.ndarray:
        # one float32 copy, then in place: a big layer's 256 maps are ~800k values, painted on the UI thread
        scaled = np.nan_to_num(np.array(values, dtype=np.float32), copy=False, nan=0.0)
        scaled -= self.low
        scaled *= 254.0 / (self.high - self.low)
        np.clip(scaled, 0.0, 254.0, out=scaled)
        scaled += 0.5
        return scaled.astype(np.uint8)

    def colours(self) -> list[int]:
        return DIVERGING_COLOURS if self.signed else SEQUENTIAL_COLOURS

    def colour_of(self, value: float) -> QColor:
        index = int(self.indices(np.array([value]))[0])
        return QColor.fromRgb(self.colours()[index])


class RenderBudget:
    """How much card rendering one event-loop turn may do. One repaint of the activation page renders every card
    in sight whose values changed; on a big model (256 maps of 56x56 a card) that held the UI thread for 70-100 ms
    (ui_heartbeat --tab activations). Cards render until the turn's budget is spent; the others keep showing
    their previous image and repaint on a later turn, a few at a time."""

    def __init__(self, seconds: float = 0.012) -> None:
        self.seconds = seconds
        self._spent = 0.0
        self._reset_queued = False

    def available(self) -> bool:
        return self._spent < self.seconds

    def spend(self, seconds: float) -> None:
        self._spent += seconds
        if not self._reset_queued:
            self._reset_queued = True
            QTimer.singleShot(0, self._reset)  # runs once this turn's painting is over

    def _reset(self) -> None:
        self._spent = 0.0
        self._reset_queued = False


RENDER_BUDGET = RenderBudget()


def indexed_image(indices: np.ndarray, colours: list[int]) -> QImage:
    indices = np.ascontiguousarray(indices, dtype=np.uint8)
    height, width = indices.shape
    image = QImage(indices.data, width, height, indices.strides[0], QImage.Format.Format_Indexed8)
    image.setColorTable(colours)
    return image.copy()  # own the pixels: the NumPy buffer does not outlive this call


def colour_image(indices: np.ndarray, colours: list[int]) -> QImage:
    """``indices`` through ``colours`` as an RGB32 image. Painting an indexed image converts it on every paint:
    3-5 ms for a big card's mosaic, each time the card repaints (its header, a selection); RGB32 paints in ~0.5."""
    return indexed_image(indices, colours).convertToFormat(QImage.Format.Format_RGB32)


# --- how a tensor is shown ---------------------------------------------------------------------------------
def as_maps(value: np.ndarray) -> np.ndarray | None:
    """(C, H, W) feature maps of the first image, or None when the tensor is not image-like."""
    if not np.issubdtype(value.dtype, np.floating) and not np.issubdtype(value.dtype, np.integer):
        return None
    if value.ndim == 4 and value.shape[0] >= 1:
        first = value[0]
        channels, height, width = first.shape
        if height != width and channels == height:  # NHWC (keras models before their Transpose)
            first = np.moveaxis(first, -1, 0)
        return first if min(first.shape[1:]) >= 2 else None
    if value.ndim == 3 and min(value.shape[1:]) >= 4:
        return value
    return None


def as_vector(value: np.ndarray) -> np.ndarray | None:
    """The first image's values as a vector, for dense outputs; None for non-numeric or tiny tensors."""
    if not (np.issubdtype(value.dtype, np.floating) or np.issubdtype(value.dtype, np.integer)):
        return None
    if value.ndim >= 2 and value.shape[0] >= 1:
        value = value[0]
    flat = value.ravel()
    return flat if flat.size >= 2 and np.issubdtype(flat.dtype, np.floating) else None


def mosaic(maps: np.ndarray, columns: int, scale: ColourScale) -> tuple[np.ndarray, int]:
    """Tile (C, H, W) maps into one index image with 1-pixel gaps; returns it and the number of rows."""
    count, height, width = maps.shape
    rows = math.ceil(count / columns)
    # each tile with its gap below and to the right is one cell of a (rows, H+1, columns, W+1) view of the
    # image: one assignment places every tile (a copy per tile was 256 NumPy calls for a big layer)
    out = np.full((rows * (height + 1), columns * (width + 1)), GAP_INDEX, dtype=np.uint8)
    tiles = scale.indices(maps)
    if count < rows * columns:
        tiles = np.concatenate([tiles, np.full((rows * columns - count, height, width), GAP_INDEX, np.uint8)])
    cells = out.reshape(rows, height + 1, columns, width + 1)
    cells[:, :height, :, :width] = tiles.reshape(rows, columns, height, width).transpose(0, 2, 1, 3)
    return np.ascontiguousarray(out[:-1, :-1]), rows


def primary_output(outputs: dict[str, np.ndarray]) -> np.ndarray | None:
    """The output a card shows: a node's first output that has a value (None when none has)."""
    return next((np.asarray(v) for v in outputs.values() if v is not None), None)


def kind_of(primary: np.ndarray | None) -> str:
    """How a card shows ``primary``: "maps", "bars", "strip", "text", or "none" without a value."""
    if primary is None:
        return "none"
    if as_maps(primary) is not None:
        return "maps"
    vector = as_vector(primary)
    if vector is not None:
        return "bars" if vector.size <= BARS_UP_TO else "strip"
    return "text"


def map_columns(primary: np.ndarray | None, width: int) -> int:
    """How many maps a row of a card ``width`` pixels wide holds (1 when ``primary`` is not maps)."""
    maps = as_maps(primary) if primary is not None else None
    if maps is None:
        return 1
    count = min(len(maps), MAX_MAPS_SHOWN)
    tile = max(28, min(72, maps.shape[1] * 3))  # small maps get bigger tiles so they stay readable
    return max(1, min(count, (width - 8) // tile))


def value_range(value: np.ndarray | None) -> tuple[float, float] | None:
    """Smallest and largest value of a numeric tensor (None for an empty or non-numeric one)."""
    if value is None or not value.size or not (np.issubdtype(value.dtype, np.floating)
                                               or np.issubdtype(value.dtype, np.integer)):
        return None
    return float(np.min(value)), float(np.max(value))


@dataclass(frozen=True)
class CardImage:
    """A card body's picture, ready to paint, and how it was laid out."""

    image: QImage  # RGB32
    columns: int
    rows: int
    scale: ColourScale


def render_body(primary: np.ndarray, kind: str, columns: int) -> CardImage | None:
    """The picture of a "maps" or "strip" card (None for other kinds). Touches no widget: it runs on the
    predictor's thread for the cards in sight (``ActivationsView.prepare``) as well as in a card's paint."""
    if kind == "maps":
        maps = as_maps(primary)[:MAX_MAPS_SHOWN]
        scale = ColourScale.for_values(maps)
        indices, rows = mosaic(maps.astype(np.float32, copy=False), columns, scale)
        return CardImage(colour_image(indices, scale.colours()), columns, rows, scale)
    if kind == "strip":
        vector = as_vector(primary)[:MAX_VECTOR_CELLS]
        scale = ColourScale.for_values(vector)
        per_row = 64
        rows = math.ceil(vector.size / per_row)
        cells = np.full(rows * per_row, GAP_INDEX, dtype=np.uint8)
        cells[:vector.size] = scale.indices(vector)
        return CardImage(colour_image(cells.reshape(rows, per_row), scale.colours()), per_row, rows, scale)
    return None


@dataclass(frozen=True)
class PreparedCard:
    """What a card would otherwise compute on the UI thread for new values: their range and, for a card in
    sight, its picture at ``columns`` (the card renders itself if its width now wants other columns)."""

    kind: str
    range: tuple[float, float] | None
    columns: int = 0
    picture: CardImage | None = None


def format_shape(shape: tuple[int, ...]) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def format_value(value: float) -> str:
    return f"{value:.4g}"


# --- one node ----------------------------------------------------------------------------------------------
class LayerCard(QWidget):
    """One node: header with name, op, shape and value range; body with maps, bars, a strip or text."""

    inspectRequested = Signal(object, int)  # (card, map index or -1)

    def __init__(self, index: int, node_name: str, op_type: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.index = index
        self.node_name = node_name
        self.op_type = op_type
        self.shapes: dict[str, tuple[int, ...]] = {}
        self._primary: np.ndarray | None = None
        self._has_values = False
        self._revision = 0
        self._cache_key: tuple | None = None
        self._cache: CardImage | None = None
        self._range: tuple[int, tuple[float, float] | None] | None = None
        self.paint_count = 0  # how often the body was rendered (lets tests check that painting is lazy)
        self.selected = False  # the session's selected node (drawn with a highlighted frame)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.setCursor(Qt.CursorShape.PointingHandCursor)
        self.setToolTip(f"{node_name} ({op_type}) — click to enlarge")

    # --- data --------------------------------------------------------------------------------------------
    def set_outputs(self, outputs: dict[str, np.ndarray], has_values: bool = True,
                    prepared: PreparedCard | None = None) -> None:
        """New values (``prepared``: their range and picture, computed off the UI thread for these values)."""
        old_kind = self.kind()
        old_shape = self._primary.shape if self._primary is not None else None
        old_has_values = self._has_values
        self.shapes = {name: tuple(np.shape(value)) for name, value in outputs.items()}
        self._primary = primary_output(outputs)
        self._has_values = has_values
        self._revision += 1
        if prepared is not None:
            self._range = (self._revision, prepared.range)
            if prepared.picture is not None:
                self._cache_key = (self._revision, prepared.kind, prepared.columns)
                self._cache = prepared.picture
        new_shape = self._primary.shape if self._primary is not None else None
        if old_kind != self.kind() or old_shape != new_shape or old_has_values != has_values:
            self.updateGeometry()
            self.setFixedHeight(self.heightForWidth(max(self.width(), 200)))
        self.update()

    def release(self) -> None:
        """Let go of the values and the rendered image (the card is being thrown away)."""
        self._primary, self._cache, self._cache_key = None, None, None

    @property
    def primary(self) -> np.ndarray | None:
        return self._primary

    def kind(self) -> str:
        return kind_of(self._primary)

    def value_range(self) -> tuple[float, float] | None:
        if self._range is None or self._range[0] != self._revision:
            self._range = (self._revision, value_range(self._primary))
        return self._range[1]

    # --- geometry ----------------------------------------------------------------------------------------
    def _columns(self, width: int) -> int:
        return map_columns(self._primary, width)

    def _body_height(self, width: int) -> int:
        if not self._has_values:
            return 20  # nothing drawn yet: a compact placeholder, not a large empty card
        kind = self.kind()
        if kind == "maps":
            maps = as_maps(self._primary)
            count = min(len(maps), MAX_MAPS_SHOWN)
            columns = self._columns(width)
            rows = math.ceil(count / columns)
            tile_width = (width - 8) / columns
            return int(min(rows * tile_width * maps.shape[1] / maps.shape[2], 900)) + 6
        if kind == "bars":
            return 64
        if kind == "strip":
            cells = min(as_vector(self._primary).size, MAX_VECTOR_CELLS)
            per_row = 64
            return int(math.ceil(cells / per_row) * max(4, (width - 8) / per_row)) + 6
        return 20

    def hasHeightForWidth(self) -> bool:
        return True

    def heightForWidth(self, width: int) -> int:
        return HEADER_HEIGHT + self._body_height(width)

    def sizeHint(self) -> QSize:
        return QSize(400, self.heightForWidth(400))

    def resizeEvent(self, event: QResizeEvent) -> None:
        height = self.heightForWidth(event.size().width())
        if height != self.height():
            self.setFixedHeight(height)
        super().resizeEvent(event)

    def body_rect(self) -> QRectF:
        return QRectF(4, HEADER_HEIGHT, self.width() - 8, self.height() - HEADER_HEIGHT - 4)

    # --- painting ----------------------------------------------------------------------------------------
    def header_text(self) -> tuple[str, str]:
        shapes = "  ".join(format_shape(s) for s in self.shapes.values()) or "?"
        left = f"{self.index + 1}. {self.op_type}  {self.node_name}"
        value_range = self.value_range() if self._has_values else None
        right = shapes + (f"   {format_value(value_range[0])} … {format_value(value_range[1])}"
                          if value_range else "")
        return left, right

    def _rendered(self) -> CardImage | None:
        """The body image for the current values, built only when painted (and cached per revision)."""
        kind = self.kind()
        key = (self._revision, kind, self._columns(self.width()))
        if key == self._cache_key:
            return self._cache
        if not RENDER_BUDGET.available():
            QTimer.singleShot(0, self, self.update)  # a later turn renders it (unless it is deleted by then)
            return self._cache  # the previous values' image (or nothing yet) meanwhile
        began = time.perf_counter()
        self.paint_count += 1
        result = render_body(self._primary, kind, key[2])
        self._cache_key, self._cache = key, result
        RENDER_BUDGET.spend(time.perf_counter() - began)
        return result

    def paintEvent(self, event: QPaintEvent) -> None:
        painter = QPainter(self)
        painter.fillRect(self.rect(), CARD_BACKGROUND)
        left, right = self.header_text()
        painter.setPen(TEXT)
        header = QRectF(6, 0, self.width() - 12, HEADER_HEIGHT)
        metrics = painter.fontMetrics()
        # a narrow card keeps the node's name whole and drops the value range, then the shapes
        shapes = right.split("   ")[0]
        for candidate in (right, shapes, ""):
            right = candidate
            if metrics.horizontalAdvance(left) + metrics.horizontalAdvance(right) + 16 <= header.width():
                break
        right_width = metrics.horizontalAdvance(right) + 4 if right else 0
        painter.drawText(header.adjusted(0, 0, -right_width, 0), Qt.AlignmentFlag.AlignLeft
                         | Qt.AlignmentFlag.AlignVCenter,
                         painter.fontMetrics().elidedText(left, Qt.TextElideMode.ElideMiddle,
                                                          int(max(20, header.width() - right_width))))
        painter.setPen(DIM_TEXT)
        painter.drawText(header, Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter, right)
        if self.selected:
            painter.setPen(SELECTED)
            painter.drawRect(QRectF(self.rect()).adjusted(0.5, 0.5, -1.5, -1.5))
        body = self.body_rect()
        if not self._has_values or self._primary is None:
            painter.setPen(DIM_TEXT)
            painter.drawText(body, Qt.AlignmentFlag.AlignCenter, "—")
            painter.end()
            return
        kind = self.kind()
        if kind in ("maps", "strip"):
            rendered = self._rendered()
            if rendered is not None:
                image = rendered.image
                target = self._image_rect(image, body)
                painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, False)
                painter.drawImage(target, image)
                if kind == "maps" and len(as_maps(self._primary)) > MAX_MAPS_SHOWN:
                    painter.setPen(DIM_TEXT)
                    painter.drawText(body, Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignBottom,
                                     f"first {MAX_MAPS_SHOWN} of {len(as_maps(self._primary))} maps")
        elif kind == "bars":
            self._paint_bars(painter, as_vector(self._primary), body)
        else:
            painter.setPen(DIM_TEXT)
            values = np.asarray(self._primary).ravel()[:12]
            text = ", ".join(str(v) for v in values.tolist())
            painter.drawText(body, Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter,
                             painter.fontMetrics().elidedText(text, Qt.TextElideMode.ElideRight, int(body.width())))
        painter.end()

    @staticmethod
    def _image_rect(image: QImage, body: QRectF) -> QRectF:
        """The largest rect of the image's aspect ratio inside ``body``, anchored top-left."""
        scale = min(body.width() / image.width(), body.height() / image.height())
        return QRectF(body.x(), body.y(), image.width() * scale, image.height() * scale)

    @staticmethod
    def _paint_bars(painter: QPainter, vector: np.ndarray, body: QRectF) -> None:
        scale = ColourScale.for_values(vector)
        limit = max(abs(scale.low), abs(scale.high)) or 1.0
        zero_y = body.center().y() if scale.signed else body.bottom()
        half = body.height() / 2 if scale.signed else body.height()
        width = body.width() / len(vector)
        painter.setPen(Qt.PenStyle.NoPen)
        for i, value in enumerate(vector.tolist()):
            if not math.isfinite(value):
                continue
            height = value / limit * half
            painter.setBrush(scale.colour_of(value) if value else DIM_TEXT)
            painter.drawRect(QRectF(body.x() + i * width + 0.5, zero_y - max(height, 0), max(width - 1, 1),
                                    max(abs(height), 1)))
        painter.setPen(DIM_TEXT)
        painter.drawLine(QPointF(body.left(), zero_y), QPointF(body.right(), zero_y))

    # --- clicks ------------------------------------------------------------------------------------------
    def map_at(self, pos: QPointF) -> int:
        """Which map tile (or vector cell) is under ``pos``; -1 for none."""
        kind = self.kind()
        rendered = self._rendered() if kind in ("maps", "strip") else None
        if rendered is None:
            return -1
        image, columns, rows = rendered.image, rendered.columns, rendered.rows
        target = self._image_rect(image, self.body_rect())
        if not target.contains(pos):
            return -1
        column = int((pos.x() - target.x()) / target.width() * columns)
        row = int((pos.y() - target.y()) / target.height() * rows)
        index = row * columns + column
        return index if kind == "maps" and index < len(as_maps(self._primary)) else -1

    def mousePressEvent(self, event: QMouseEvent) -> None:
        if event.button() == Qt.MouseButton.LeftButton and self._primary is not None:
            self.inspectRequested.emit(self, self.map_at(event.position()))
        event.accept()


# --- the enlarged view -------------------------------------------------------------------------------------
class GridView(QWidget):
    """A 2-D array enlarged with nearest-neighbour; hovering reports the cell under the mouse."""

    hovered = Signal(str)
    cellClicked = Signal(int, int)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.marked: tuple[int, int] | None = None  # a cell drawn with a frame (the unit whose field is shown)
        self._values: np.ndarray | None = None
        self._image: QImage | None = None
        self._scale = ColourScale(0.0, 1.0, False)
        self._index_of = None
        self.setMouseTracking(True)
        self.setMinimumSize(200, 200)

    def mousePressEvent(self, event: QMouseEvent) -> None:
        cell = self.cell_at(event.position())
        if cell is not None:
            self.cellClicked.emit(*cell)
        event.accept()

    def set_values(self, values: np.ndarray, scale: ColourScale, index_of=None) -> None:
        self._values = values
        self._scale = scale
        self._index_of = index_of  # (row, col) -> label text, e.g. a flat index for vectors
        self._image = indexed_image(scale.indices(values), scale.colours())
        self.update()

    def _target(self) -> QRectF:
        if self._image is None:
            return QRectF()
        scale = min(self.width() / self._image.width(), (self.height() - 24) / self._image.height())
        w, h = self._image.width() * scale, self._image.height() * scale
        return QRectF((self.width() - w) / 2, 0, w, h)

    def cell_at(self, pos: QPointF) -> tuple[int, int] | None:
        target = self._target()
        if self._values is None or not target.contains(pos):
            return None
        rows, cols = self._values.shape
        return (min(rows - 1, int((pos.y() - target.y()) / target.height() * rows)),
                min(cols - 1, int((pos.x() - target.x()) / target.width() * cols)))

    def mouseMoveEvent(self, event: QMouseEvent) -> None:
        cell = self.cell_at(event.position())
        if cell is None or self._values is None:
            self.hovered.emit("")
            return
        row, col = cell
        where = self._index_of(row, col) if self._index_of else f"row {row}, col {col}"
        if where is None:
            self.hovered.emit("")
            return
        self.hovered.emit(f"{where}: {format_value(float(self._values[row, col]))}")

    def paintEvent(self, event: QPaintEvent) -> None:
        painter = QPainter(self)
        painter.fillRect(self.rect(), CARD_BACKGROUND)
        if self._image is not None:
            painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, False)
            target = self._target()
            painter.drawImage(target, self._image)
            if self.marked is not None and self._values is not None:
                rows, cols = self._values.shape
                row, col = self.marked
                painter.setPen(SELECTED)
                painter.setBrush(Qt.BrushStyle.NoBrush)
                painter.drawRect(QRectF(target.x() + col * target.width() / cols, target.y() + row * target.height()
                                        / rows, target.width() / cols, target.height() / rows))
            # colour bar with its limits under the image
            bar = QRectF(40, self.height() - 18, self.width() - 80, 10)
            ramp = np.linspace(self._scale.low, self._scale.high, 255)[None, :]
            painter.drawImage(bar, indexed_image(self._scale.indices(ramp), self._scale.colours()))
            painter.setPen(TEXT)
            painter.drawText(QRectF(0, bar.y() - 3, 38, 16), Qt.AlignmentFlag.AlignRight,
                             format_value(self._scale.low))
            painter.drawText(QRectF(bar.right() + 2, bar.y() - 3, 38, 16), Qt.AlignmentFlag.AlignLeft,
                             format_value(self._scale.high))
        painter.end()


class ReceptiveFieldView(QWidget):
    """The 28x28 drawing with the input pixels one unit can see framed."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.image: np.ndarray | None = None
        self.field: tuple[float, float, float, float] | None = None  # x, y, w, h on the 28x28 picture
        self.setMinimumSize(96, 96)
        self.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Preferred)

    def sizeHint(self) -> QSize:
        return QSize(140, 140)

    def set_field(self, image: np.ndarray | None, field: tuple[float, float, float, float] | None) -> None:
        self.image, self.field = image, field
        self.update()

    def paintEvent(self, event: QPaintEvent) -> None:
        painter = QPainter(self)
        side = min(self.width(), self.height())
        target = QRectF((self.width() - side) / 2, (self.height() - side) / 2, side, side)
        painter.fillRect(self.rect(), CARD_BACKGROUND)
        painter.fillRect(target, QColor(0, 0, 0))
        if self.image is not None:
            pixels = np.ascontiguousarray(np.clip(self.image, 0, 1) * 255 + 0.5, dtype=np.uint8)
            picture = QImage(pixels.data, pixels.shape[1], pixels.shape[0], pixels.strides[0],
                             QImage.Format.Format_Grayscale8).copy()
            painter.drawImage(target, picture)
        if self.field is not None:
            x, y, w, h = self.field
            unit = side / 28
            painter.setPen(SELECTED)
            painter.setBrush(QColor(255, 170, 60, 60))
            painter.drawRect(QRectF(target.x() + x * unit, target.y() + y * unit, w * unit, h * unit))
        painter.end()


class InspectorContext:
    """What the inspector needs to know about the model beyond a card: its nodes, weights and input size."""

    def __init__(self, model=None, adapter=None) -> None:  # noqa: ANN001
        self.nodes = list(model.nodes) if model is not None else []
        self.constants = getattr(getattr(model, "graph", None), "constants", {}) or {}
        self.index_of = {node.name: i for i, node in enumerate(self.nodes)}
        layout = getattr(adapter, "layout", None)
        self.input_hw = (layout.height, layout.width) if layout is not None else (28, 28)
        self.image: np.ndarray | None = None  # the current 28x28 drawing

    def node(self, name: str):  # noqa: ANN201
        index = self.index_of.get(name)
        return None if index is None else self.nodes[index]

    def weights(self, name: str) -> list[tuple[str, np.ndarray]]:
        node = self.node(name)
        if node is None:
            return []
        return [(value, self.constants[value]) for value in node.inputs if value in self.constants
                and self.constants[value].dtype.kind == "f" and self.constants[value].ndim >= 2]


def weight_picture(weights: np.ndarray, unit: int) -> tuple[np.ndarray, ColourScale, str] | None:
    """The weights that make output channel ``unit``: a conv's kernels tiled, or a dense layer's row."""
    if weights.ndim == 4:  # (out, in/groups, kh, kw)
        kernels = weights[min(max(unit, 0), weights.shape[0] - 1)][:MAX_MAPS_SHOWN]
        scale = ColourScale.for_values(kernels)
        columns = max(1, math.ceil(math.sqrt(len(kernels))))
        indices, _ = mosaic(kernels.astype(np.float32), columns, scale)
        return indices, scale, f"{len(kernels)} kernel(s) {kernels.shape[1]}x{kernels.shape[2]}"
    if weights.ndim == 2:
        rows = weights if weights.shape[0] * weights.shape[1] <= MAX_VECTOR_CELLS * 16 else weights[:64]
        scale = ColourScale.for_values(rows)
        return scale.indices(rows), scale, f"{weights.shape[0]}x{weights.shape[1]}"
    return None


class Inspector(QDialog):
    """A non-modal window showing one map (or a dense output) large; follows the live values.

    Previous/next step through the maps; below the map, the weights that make it (a conv's kernels for this
    output channel) and, for a conv-like map, the receptive field of the unit clicked (default: the most active
    one) on the 28x28 drawing. ``mapChanged(node, map)`` follows the maps shown.
    """

    mapChanged = Signal(str, int)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setModal(False)
        self.resize(480, 620)
        self.node_name = ""
        self.map_index = -1
        self.unit: tuple[int, int] | None = None
        self.context = InspectorContext()
        self._card: LayerCard | None = None
        self._title = QLabel()
        self._title.setWordWrap(True)
        self._grid = GridView()
        self._hover = QLabel(self.tr("Hover over a cell to read its value"))
        self.previous_button = QToolButton()
        self.previous_button.setText(self.tr("◀ Previous map"))
        self.previous_button.clicked.connect(lambda: self.step(-1))
        self.next_button = QToolButton()
        self.next_button.setText(self.tr("Next map ▶"))
        self.next_button.clicked.connect(lambda: self.step(1))
        self._map_label = QLabel()
        self._map_label.setAlignment(Qt.AlignmentFlag.AlignCenter)
        steps = QHBoxLayout()
        steps.addWidget(self.previous_button)
        steps.addWidget(self._map_label, 1)
        steps.addWidget(self.next_button)
        self.weights_label = QLabel()
        self.weights_label.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.weights_label.setMinimumSize(96, 96)
        self.weights_caption = QLabel()
        self.field_view = ReceptiveFieldView()
        self.field_caption = QLabel()
        for caption in (self.weights_caption, self.field_caption):
            caption.setWordWrap(True)
            caption.setStyleSheet("color: #999")
        lower = QHBoxLayout()
        left, right = QVBoxLayout(), QVBoxLayout()
        left.addWidget(self.weights_label, 1)
        left.addWidget(self.weights_caption)
        right.addWidget(self.field_view, 1)
        right.addWidget(self.field_caption)
        lower.addLayout(left, 1)
        lower.addLayout(right, 1)
        layout = QVBoxLayout(self)
        layout.addWidget(self._title)
        layout.addLayout(steps)
        layout.addWidget(self._grid, 3)
        layout.addWidget(self._hover)
        layout.addLayout(lower, 2)
        self._grid.hovered.connect(self._show_hover)
        self._grid.cellClicked.connect(self._choose_unit)

    def _show_hover(self, text: str) -> None:
        self._hover.setText(text or self.tr("Hover over a cell to read its value"))

    def show_card(self, card: LayerCard, map_index: int) -> None:
        if card.node_name != self.node_name or map_index != self.map_index:
            self.unit = None
        self.node_name, self.map_index = card.node_name, map_index
        self.refresh(card)

    def step(self, delta: int) -> None:
        """Show the previous (-1) or next (+1) map of the same node."""
        if self._card is None or self._card.primary is None:
            return
        maps = as_maps(self._card.primary)
        if maps is None:
            return
        self.map_index = (max(self.map_index, 0) + delta) % len(maps)
        self.unit = None
        self.refresh(self._card)
        self.mapChanged.emit(self.node_name, self.map_index)

    def _choose_unit(self, row: int, col: int) -> None:
        if self._card is not None and as_maps(self._card.primary) is not None:
            self.unit = (row, col)
            self.refresh(self._card)

    def refresh(self, card: LayerCard) -> None:
        self._card = card
        value = card.primary
        if value is None:
            return
        maps = as_maps(value)
        shape = format_shape(tuple(value.shape))
        self.previous_button.setEnabled(maps is not None and len(maps) > 1)
        self.next_button.setEnabled(maps is not None and len(maps) > 1)
        if maps is not None:
            index = self.map_index if 0 <= self.map_index < len(maps) else 0
            self.map_index = index
            layer_scale = ColourScale.for_values(maps)  # the layer's scale, so colours match the thumbnails
            grid = np.asarray(maps[index], dtype=np.float64)
            self._grid.set_values(grid, layer_scale)
            title = self.tr("%1 %2 %3 — map %4 of %5").replace("%1", card.op_type).replace(
                "%2", card.node_name).replace("%3", shape).replace("%4", str(index + 1)).replace("%5", str(len(maps)))
            self._map_label.setText(self.tr("map %1 of %2").replace("%1", str(index + 1)).replace("%2",
                                                                                                  str(len(maps))))
            if self.unit is None or not (0 <= self.unit[0] < grid.shape[0] and 0 <= self.unit[1] < grid.shape[1]):
                flat = int(np.nanargmax(grid)) if np.isfinite(grid).any() else 0
                self.unit = divmod(flat, grid.shape[1])
            self._grid.marked = self.unit
            self._show_field(card, self.unit, grid.shape)
        else:
            vector = as_vector(value)
            if vector is None:
                return
            per_row = min(32, vector.size)
            rows = math.ceil(vector.size / per_row)
            grid = np.zeros(rows * per_row)
            grid[:vector.size] = vector
            size = vector.size
            self._grid.marked = None
            self._grid.set_values(grid.reshape(rows, per_row), ColourScale.for_values(vector),
                                  lambda r, c: f"index {r * per_row + c}" if r * per_row + c < size else None)
            title = self.tr("%1 %2 %3 — %4 values").replace("%1", card.op_type).replace(
                "%2", card.node_name).replace("%3", shape).replace("%4", str(vector.size))
            self._map_label.setText("")
            self.field_view.set_field(self.context.image, None)
            self.field_caption.setText("")
        self._show_weights(card)
        self._title.setText(title)
        self.setWindowTitle(f"{card.node_name} — digitscope")

    def _show_weights(self, card: LayerCard) -> None:
        weights = self.context.weights(card.node_name)
        picture = weight_picture(weights[0][1], max(self.map_index, 0)) if weights else None
        if picture is None:
            self.weights_label.clear()
            self.weights_label.setText("—")
            self.weights_caption.setText(self.tr("No weights"))
            return
        indices, scale, what = picture
        image = indexed_image(indices, scale.colours())
        size = self.weights_label.size()
        pixmap = QPixmap.fromImage(image).scaled(max(64, size.width()), max(64, size.height()),
                                                 Qt.AspectRatioMode.KeepAspectRatio,
                                                 Qt.TransformationMode.FastTransformation)
        self.weights_label.setPixmap(pixmap)
        self.weights_caption.setText(self.tr("Weights %1: %2 (%3 … %4)").replace("%1", weights[0][0]).replace(
            "%2", what).replace("%3", format_value(scale.low)).replace("%4", format_value(scale.high)))

    def _show_field(self, card: LayerCard, unit: tuple[int, int], map_shape: tuple[int, int]) -> None:
        from gui.receptive_field import receptive_field, scaled_to

        context = self.context
        index = context.index_of.get(card.node_name)
        field = None
        if index is not None:
            field = receptive_field(context.nodes, index, unit[0], unit[1], context.input_hw,
                                    frozenset(context.constants))
        if field is None:
            self.field_view.set_field(context.image, None)
            self.field_caption.setText(self.tr("Receptive field: unknown for this node"))
            return
        (top, bottom), (left, right) = field
        self.field_view.set_field(context.image, scaled_to(field, context.input_hw))
        self.field_caption.setText(self.tr("Unit (%1, %2) sees input rows %3–%4, columns %5–%6").replace(
            "%1", str(unit[0])).replace("%2", str(unit[1])).replace("%3", str(top)).replace("%4", str(bottom))
            .replace("%5", str(left)).replace("%6", str(right)))


# --- the scrolling list ------------------------------------------------------------------------------------
class PagerBar(QWidget):
    """First / previous / "nodes 1–100 of 20,000" / next / last; hidden while everything fits on one page."""

    pageRequested = Signal(int)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self._buttons: dict[str, QToolButton] = {}
        self.label = QLabel()
        self.label.setAlignment(Qt.AlignmentFlag.AlignCenter)
        for name, text, tip in (("first", "⏮", "First page"), ("previous", "◀", "Previous page")):
            layout.addWidget(self._button(name, text, tip))
        layout.addWidget(self.label, 1)
        for name, text, tip in (("next", "▶", "Next page"), ("last", "⏭", "Last page")):
            layout.addWidget(self._button(name, text, tip))
        self._pages = Pages()

    def _button(self, name: str, text: str, tip: str) -> QToolButton:
        button = QToolButton()
        button.setText(text)
        button.setToolTip(tip)
        button.setAutoRaise(True)
        button.clicked.connect(lambda _=False, n=name: self._clicked(n))
        self._buttons[name] = button
        return button

    def _clicked(self, name: str) -> None:
        pages = self._pages
        target = {"first": 0, "previous": pages.page - 1, "next": pages.page + 1, "last": pages.count - 1}[name]
        self.pageRequested.emit(target)

    def button(self, name: str) -> QToolButton:
        return self._buttons[name]

    def show_pages(self, pages: Pages) -> None:
        self._pages = pages
        self.label.setText(pages.label())
        for name in ("first", "previous"):
            self._buttons[name].setEnabled(pages.has_previous())
        for name in ("next", "last"):
            self._buttons[name].setEnabled(pages.has_next())
        self.setVisible(pages.count > 1)


class ActivationsView(QScrollArea):
    """A ``LayerCard`` per node of the model, in execution order, a page of ``page_size`` nodes at a time.

    ``entries`` are the cards of the current page only: a 20,000-node graph never has more than a page of
    widgets. All records are kept, so turning the page shows the latest values of the nodes on it.
    ``nodeSelected(name, map index or -1)`` is emitted when a card is opened in the inspector.
    """

    nodeSelected = Signal(str, int)

    def __init__(self, parent: QWidget | None = None, page_size: int = PAGE_SIZE) -> None:
        super().__init__(parent)
        self.setWidgetResizable(True)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self._container = QWidget()
        self._layout = QVBoxLayout(self._container)
        self._layout.setContentsMargins(4, 4, 4, 4)
        self._layout.setSpacing(6)
        # a pager above and below the cards: the one at the bottom is where a reader arrives at a page's end
        self.top_pager, self.bottom_pager = PagerBar(), PagerBar()
        self._layout.addWidget(self.top_pager)
        self._layout.addWidget(self.bottom_pager)
        self._layout.addStretch(1)
        for pager in (self.top_pager, self.bottom_pager):
            pager.pageRequested.connect(self.set_page)
        self.setWidget(self._container)
        self.pages = Pages(size=page_size)
        self._entries: list[LayerCard] = []
        self._stale = False  # the page's cards are not those of the current nodes: rebuild when shown
        self._by_name: dict[str, LayerCard] = {}
        self._names: list[tuple[str, str]] = []  # (name, op type) of every node, not only this page's
        self._records: list = []
        self._prepared: dict[int, PreparedCard] = {}  # node index -> what prepare() computed for _records
        self._has_values = False
        # read by prepare() on the predictor's thread (plain values, set here on the UI thread): whether the
        # view is shown, the cards' width, and the indices of the first and last card in sight
        self._shown = False
        self._card_width = 0
        self._sight = (0, -1)
        self.verticalScrollBar().valueChanged.connect(self._update_sight)
        self._inspector: Inspector | None = None
        self.context = InspectorContext()
        self.selected_name: str | None = None
        self._show_pages()

    @property
    def entries(self) -> list[LayerCard]:
        """The cards of the current page (a rebuild under way, or waiting for the view to be shown, is
        finished first)."""
        self.finish_build()
        return self._entries

    @property
    def building(self) -> bool:
        """The current page's cards are still to be built (the view is hidden, or a build is under way)."""
        return self._stale

    def finish_build(self) -> None:
        """Build the current page's cards now if they are not (scripts, tests, a node to reveal)."""
        if self._stale:
            self._start_rebuild()
        shared_steps().finish(self)

    def set_context(self, model, adapter) -> None:  # noqa: ANN001
        """The model the cards come from (its weights and geometry, for the inspector)."""
        image = self.context.image
        self.context = InspectorContext(model, adapter)
        self.context.image = image
        if self._inspector is not None:
            self._inspector.context = self.context

    def set_input_image(self, image28: np.ndarray | None) -> None:
        """The current 28x28 drawing (the inspector draws receptive fields on it)."""
        self.context.image = image28

    def index_of(self, name: str) -> int | None:
        for index, (node_name, _) in enumerate(self._names):
            if node_name == name:
                return index
        return None

    def reveal(self, name: str | None) -> LayerCard | None:
        """Select node ``name``'s card: turn to its page, scroll it into view, frame it; None clears."""
        self.selected_name = name
        card = None
        if name is not None:
            index = self.index_of(name)
            if index is not None:
                card = self.show_node(index)
        for entry in self._entries:
            if entry.selected != (entry is card):
                entry.selected = entry is card
                entry.update()
        if card is not None:
            self.ensureWidgetVisible(card, 0, 40)
        return card

    def inspect(self, name: str, map_index: int = -1) -> None:
        """Open the inspector on node ``name`` (as clicking its card does)."""
        card = self.reveal(name)
        if card is not None and card.primary is not None:
            self._inspect(card, map_index)

    @property
    def node_count(self) -> int:
        return len(self._names)

    def prepare(self, records: list, cancelled: Callable[[], bool]) -> dict[int, PreparedCard]:
        """For a traced run about to be shown, on the thread that ran it: every card's value range, and the
        pictures of the cards in sight and of the next screenful (by the page, width and scroll position when
        this runs; ``set_records(records, prepared=...)`` hands them to the cards). Building a big model's
        pictures in the paint held the UI thread 30-45 ms a turn; now it only paints them.

        Reads nothing but plain values the UI thread keeps up to date (this is not the UI thread); stops early
        when ``cancelled()`` says a newer drawing waits (the cards left out render themselves when painted).
        """
        if not self._shown:
            return {}
        start, stop = self.pages.bounds()
        stop = min(stop, len(records))
        width, (first, last) = self._card_width, self._sight
        primaries = {index: primary_output(records[index].outputs) for index in range(start, stop)}
        prepared = {index: PreparedCard(kind_of(primary), value_range(primary))
                    for index, primary in primaries.items()}
        in_sight = max(0, last - first + 1)
        for index in range(max(first, start), min(stop, last + 1 + in_sight)):
            if cancelled():
                break
            kind = prepared[index].kind
            if width > 0 and kind in ("maps", "strip"):
                primary = primaries[index]
                columns = map_columns(primary, width)
                prepared[index] = PreparedCard(kind, prepared[index].range, columns,
                                               render_body(primary, kind, columns))
        return prepared

    def set_records(self, records: list, has_values: bool = True,
                    prepared: dict[int, PreparedCard] | None = None) -> None:
        """Show a traced run: a list of records with ``.name``, ``.op_type`` and ``.outputs`` (``prepared``: what
        ``prepare`` computed for these records)."""
        names = [(record.name, record.op_type) for record in records]
        new_model = names != self._names
        self._names, self._records, self._has_values = names, list(records), has_values
        self._prepared = prepared or {}
        if new_model:
            self.pages.set_total(len(names))
            self.pages.set_page(0)
            self.selected_name = None
            if self._inspector is not None:
                self._inspector.hide()
            self._rebuild_later()
            return
        if self._stale:
            return  # the cards being built show the latest records when they are done
        self._show_page(rebuild=False)
        if self._inspector is not None and self._inspector.isVisible():
            card = self._by_name.get(self._inspector.node_name)
            if card is not None:
                self._inspector.refresh(card)

    def set_page(self, page: int) -> None:
        """Show page ``page`` (0-based, clamped) of the nodes."""
        if self.pages.set_page(page):
            self._show_page(rebuild=True)
            self.verticalScrollBar().setValue(0)

    def show_node(self, index: int) -> LayerCard | None:
        """Turn to the page holding node ``index`` and return its card."""
        if not 0 <= index < self.node_count:
            return None
        self.set_page(self.pages.page_of(index))
        return self.entries[index - self.pages.bounds()[0]]

    def _rebuild_later(self) -> None:
        """A new model's nodes: the old cards go now (with the old model's arrays), the new ones are built while
        the view is shown, a few per event-loop turn."""
        shared_steps().cancel(self)  # a build under way is for the previous nodes
        self._retire(self._entries)
        self._entries, self._by_name, self._stale = [], {}, True
        self._show_pages()
        if self.isVisible():
            self._start_rebuild()

    def showEvent(self, event) -> None:  # noqa: ANN001
        super().showEvent(event)
        self._shown = True
        if self._stale:
            self._start_rebuild()

    def hideEvent(self, event) -> None:  # noqa: ANN001
        super().hideEvent(event)
        self._shown = False

    def viewportEvent(self, event: QEvent) -> bool:
        handled = super().viewportEvent(event)
        if event.type() == QEvent.Type.Resize:  # (the view's size, or a scroll bar came or went: the cards' width)
            self._update_sight()
        return handled

    def _update_sight(self, _scrolled_to: int = 0) -> None:
        """Note the cards' width and which cards are in sight, for ``prepare``."""
        entries = self._entries
        if not entries:
            self._card_width, self._sight = 0, (0, -1)
            return
        top = self.verticalScrollBar().value()
        bottom = top + self.viewport().height()
        tops = [card.y() for card in entries]
        first = max(0, bisect.bisect_right(tops, top) - 1)
        last = max(first, bisect.bisect_left(tops, bottom) - 1)
        # from the viewport, not a card: when the viewport is resized the cards follow only afterwards
        margins = self._layout.contentsMargins()
        self._card_width = self.viewport().width() - margins.left() - margins.right()
        self._sight = (entries[first].index, entries[last].index)

    def _start_rebuild(self) -> None:
        if not shared_steps().pending(self):
            shared_steps().start(self, self._rebuild_steps())

    def _rebuild_steps(self) -> Iterator[None]:
        """The current page's cards, as a job for ``Steps``: one card per ``next()``, values and layout last."""
        self._retire(self._entries)
        self._entries, self._by_name = [], {}
        start, stop = self.pages.bounds()
        for offset, (name, op_type) in enumerate(self._names[start:stop]):
            self._add_card(start + offset, name, op_type)
            yield
        self._by_name = {card.node_name: card for card in self._entries}
        for card in self._entries:
            card.selected = card.node_name == self.selected_name
        self._stale = False
        self._show_page(rebuild=False)
        self._lay_out()

    def _retire(self, cards: list[LayerCard]) -> None:
        """Take ``cards`` out of the view now (unparented, their arrays released); the widgets are deleted over
        the next event-loop turns rather than all in one."""
        for card in cards:
            self._layout.removeWidget(card)
            card.hide()
            card.setParent(None)  # no longer one of the view's widgets; this list keeps it alive until deleted
            card.release()
        if cards:
            shared_steps().start(("retire", id(cards)), self._delete(cards))

    @staticmethod
    def _delete(cards: list[LayerCard]) -> Iterator[None]:
        while cards:
            for card in cards[-CARDS_RETIRED_PER_STEP:]:
                card.deleteLater()
            del cards[-CARDS_RETIRED_PER_STEP:]
            yield

    def _show_page(self, rebuild: bool) -> None:
        start, stop = self.pages.bounds()
        if rebuild:
            self._rebuild(self._names[start:stop], start)
        prepared = self._prepared
        for card, record in zip(self._entries, self._records[start:stop], strict=True):
            card.set_outputs(dict(record.outputs), self._has_values, prepared.get(card.index))
        self._show_pages()
        if rebuild:
            self._lay_out()

    def _lay_out(self) -> None:
        # Lay the new cards out now: painted before the layout runs, they would all overlap the viewport and
        # every one of them would be rendered once.
        self._layout.activate()
        self._container.resize(self.viewport().width(),
                               max(self.viewport().height(), self._container.minimumSizeHint().height()))
        self._update_sight()

    def _show_pages(self) -> None:
        for pager in (self.top_pager, self.bottom_pager):
            pager.show_pages(self.pages)

    def clear_values(self) -> None:
        """Keep the layer list (names and shapes) but show no values: nothing is drawn."""
        self._has_values = False
        zero = np.zeros((), np.float32)  # read-only zero-stride views: a page of DenseNet cards zeroed ~200 MB
        for card in self._entries:
            card.set_outputs({name: np.broadcast_to(zero, shape) for name, shape in card.shapes.items()},
                             has_values=False)

    def reset(self) -> None:
        self._names, self._records, self._prepared, self._has_values = [], [], {}, False
        self.pages.set_total(0)
        shared_steps().cancel(self)
        self._stale = False
        self._rebuild([], 0)
        self._show_pages()

    def _rebuild(self, names: list[tuple[str, str]], first_index: int) -> None:
        """The page's cards at once (turning the page: one click, one page)."""
        shared_steps().cancel(self)
        self._stale = False
        self._retire(self._entries)
        self._entries = []
        for offset, (name, op_type) in enumerate(names):
            self._add_card(first_index + offset, name, op_type)
        self._by_name = {card.node_name: card for card in self._entries}
        for card in self._entries:
            card.selected = card.node_name == self.selected_name

    def _add_card(self, index: int, name: str, op_type: str) -> None:
        card = LayerCard(index, name or f"node {index + 1}", op_type)
        card.inspectRequested.connect(self._inspect)
        # after the top pager, before the bottom pager and the stretch
        self._layout.insertWidget(self._layout.count() - 2, card)
        # shown now, not when the layout's queued show arrives: the layout must count the cards
        if self._container.isVisible():  # (a hidden container shows its cards with itself)
            card.setVisible(True)
        self._entries.append(card)

    def _inspect(self, card: LayerCard, map_index: int) -> None:
        if self._inspector is None:
            self._inspector = Inspector(self.window())
            self._inspector.context = self.context
            self._inspector.mapChanged.connect(self.nodeSelected)
        self._inspector.context = self.context
        self._inspector.show_card(card, map_index)
        self._inspector.show()
        self._inspector.raise_()
        self.nodeSelected.emit(card.node_name, map_index)

    @property
    def inspector(self) -> Inspector | None:
        return self._inspector
