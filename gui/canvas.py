"""The drawing surface: white ink on black like MNIST, smooth anti-aliased strokes, pen and eraser.

The widget only translates input events into ``StrokeDocument`` edits and paints the document; it keeps the
document in fixed canvas coordinates and maps them onto the largest centred square that fits the widget, so
the drawing scales with the window.
"""

from __future__ import annotations

from PySide6.QtCore import QEvent, QPointF, QRectF, Qt, Signal
from PySide6.QtGui import (
    QColor,
    QImage,
    QMouseEvent,
    QPainter,
    QPainterPath,
    QPaintEvent,
    QPen,
    QTabletEvent,
    QTouchEvent,
)
from PySide6.QtWidgets import QSizePolicy, QWidget

from gui.rasterize import default_pen_width
from gui.strokes import DEFAULT_CANVAS_SIZE, Point, StrokeDocument

INK = QColor(255, 255, 255)
PAPER = QColor(0, 0, 0)
MARGIN = QColor(38, 38, 42)
MIN_PEN_WIDTH = 4.0
MAX_PEN_WIDTH = 60.0


class DrawingCanvas(QWidget):
    """Emits ``strokesChanged`` on every visible change, including each point added while drawing."""

    strokesChanged = Signal()
    penWidthChanged = Signal(float)
    eraserChanged = Signal(bool)

    def __init__(self, document: StrokeDocument | None = None, pen_width: float | None = None,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.document = document or StrokeDocument(DEFAULT_CANVAS_SIZE)
        self._pen_width = float(pen_width if pen_width is not None else default_pen_width(self.document.size))
        self._eraser = False
        self._hover: QPointF | None = None
        self._overlay: tuple[QImage, QRectF] | None = None  # a saliency map and its place (canvas coords)
        self.setMinimumSize(200, 200)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.setMouseTracking(True)  # to show the pen outline under the cursor
        self.setAttribute(Qt.WidgetAttribute.WA_AcceptTouchEvents, True)
        self.setAttribute(Qt.WidgetAttribute.WA_OpaquePaintEvent, True)  # we paint every pixel ourselves
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self.setCursor(Qt.CursorShape.CrossCursor)
        self.setToolTip("Draw a digit. E: eraser · [ ]: pen width · Esc/Delete: clear · Ctrl+Z: undo")

    # --- tool state ----------------------------------------------------------------------------------------
    @property
    def pen_width(self) -> float:
        return self._pen_width

    def set_pen_width(self, width: float) -> None:
        width = min(max(float(width), MIN_PEN_WIDTH), MAX_PEN_WIDTH)
        if width != self._pen_width:
            self._pen_width = width
            self.penWidthChanged.emit(width)
            self.update()

    @property
    def eraser(self) -> bool:
        return self._eraser

    def set_eraser(self, on: bool) -> None:
        if bool(on) != self._eraser:
            self._eraser = bool(on)
            self.eraserChanged.emit(self._eraser)
            self.update()

    # --- document edits (also used by the window's actions) -----------------------------------------------
    def undo(self) -> None:
        if self.document.undo():
            self._changed()

    def redo(self) -> None:
        if self.document.redo():
            self._changed()

    def clear(self) -> None:
        if self.document.clear():
            self._changed()

    def replace_document_from(self, path: str) -> None:
        self.document.load(path)
        self._changed()

    def _changed(self) -> None:
        self.update()
        self.strokesChanged.emit()

    # --- the saliency overlay (gui.overlay makes the image, gui.explain its place) -------------------------
    def set_overlay(self, image: QImage | None, left: float = 0.0, top: float = 0.0, side: float = 0.0) -> None:
        """Lay ``image`` over the strokes on the square at (left, top) with ``side``, in canvas coordinates."""
        self._overlay = None if image is None else (image, QRectF(left, top, side, side))
        self.update()

    @property
    def overlay(self) -> QImage | None:
        return None if self._overlay is None else self._overlay[0]

    # --- geometry ------------------------------------------------------------------------------------------
    def drawing_rect(self) -> QRectF:
        """The square (widget coordinates) the canvas occupies."""
        side = min(self.width(), self.height())
        return QRectF((self.width() - side) / 2, (self.height() - side) / 2, side, side)

    def _scale(self) -> float:
        return self.drawing_rect().width() / self.document.size[0]

    def to_canvas(self, pos: QPointF) -> Point:
        rect = self.drawing_rect()
        scale = self._scale()
        return ((pos.x() - rect.x()) / scale, (pos.y() - rect.y()) / scale)

    def to_widget(self, point: Point) -> QPointF:
        rect = self.drawing_rect()
        scale = self._scale()
        return QPointF(rect.x() + point[0] * scale, rect.y() + point[1] * scale)

    # --- input: mouse, tablet and touch all end up here ----------------------------------------------------
    def _press(self, pos: QPointF) -> None:
        self.document.begin_stroke(self.to_canvas(pos), self._pen_width * (2.0 if self._eraser else 1.0),
                                   eraser=self._eraser)
        self._changed()

    def _move(self, pos: QPointF) -> None:
        if self.document.extend_stroke(self.to_canvas(pos)):
            self._changed()

    def _release(self) -> None:
        if self.document.is_drawing:
            self.document.end_stroke()
            self.strokesChanged.emit()

    def mousePressEvent(self, event: QMouseEvent) -> None:
        if event.button() == Qt.MouseButton.LeftButton:
            self._press(event.position())
        event.accept()

    def mouseMoveEvent(self, event: QMouseEvent) -> None:
        self._hover = event.position()
        if event.buttons() & Qt.MouseButton.LeftButton and self.document.is_drawing:
            self._move(event.position())
        else:
            self.update()  # only the pen outline moved
        event.accept()

    def mouseReleaseEvent(self, event: QMouseEvent) -> None:
        if event.button() == Qt.MouseButton.LeftButton:
            self._release()
        event.accept()

    def leaveEvent(self, event: QEvent) -> None:
        self._hover = None
        self.update()
        super().leaveEvent(event)

    def tabletEvent(self, event: QTabletEvent) -> None:
        kind = event.type()
        if kind == QEvent.Type.TabletPress:
            self._press(event.position())
        elif kind == QEvent.Type.TabletMove and self.document.is_drawing:
            self._move(event.position())
        elif kind == QEvent.Type.TabletRelease:
            self._release()
        event.accept()  # accepted, so Qt does not also synthesise mouse events for the pen

    def event(self, event: QEvent) -> bool:
        kind = event.type()
        if kind in (QEvent.Type.TouchBegin, QEvent.Type.TouchUpdate, QEvent.Type.TouchEnd, QEvent.Type.TouchCancel):
            self._touch(event)  # type: ignore[arg-type]
            return True
        return super().event(event)

    def _touch(self, event: QTouchEvent) -> None:
        points = event.points()
        if event.type() in (QEvent.Type.TouchEnd, QEvent.Type.TouchCancel) or not points:
            self._release()
        elif event.type() == QEvent.Type.TouchBegin:
            self._press(points[0].position())  # one finger draws; further fingers are ignored
        else:
            self._move(points[0].position())
        event.accept()

    # --- painting ------------------------------------------------------------------------------------------
    def paintEvent(self, event: QPaintEvent) -> None:
        painter = QPainter(self)
        painter.fillRect(self.rect(), MARGIN)
        rect = self.drawing_rect()
        painter.fillRect(rect, PAPER)
        painter.setClipRect(rect)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing, True)
        scale = self._scale()
        for stroke in self.document.visible_strokes():
            pen = QPen(INK, stroke.width * scale, Qt.PenStyle.SolidLine, Qt.PenCapStyle.RoundCap,
                       Qt.PenJoinStyle.RoundJoin)
            painter.setPen(pen)
            if len(stroke.points) == 1:
                painter.drawPoint(self.to_widget(stroke.points[0]))
                continue
            path = QPainterPath(self.to_widget(stroke.points[0]))
            for point in stroke.points[1:]:
                path.lineTo(self.to_widget(point))
            painter.drawPath(path)
        if self._overlay is not None and self.document.has_ink():
            image, where = self._overlay
            corner = self.to_widget((where.x(), where.y()))
            painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, True)
            painter.drawImage(QRectF(corner.x(), corner.y(), where.width() * scale, where.height() * scale), image)
        if not self.document.has_ink() and not self.document.is_drawing:
            painter.setPen(QColor(120, 120, 128))
            painter.drawText(rect, Qt.AlignmentFlag.AlignCenter, "Draw a digit here")
        if self._hover is not None and rect.contains(self._hover):
            # the pen (or eraser) footprint under the cursor, so the width keys have visible feedback
            radius = self._pen_width * (2.0 if self._eraser else 1.0) * scale / 2
            painter.setPen(QPen(QColor(255, 120, 80) if self._eraser else QColor(90, 160, 255), 1.2))
            painter.setBrush(Qt.BrushStyle.NoBrush)
            painter.drawEllipse(self._hover, radius, radius)
        painter.end()
