"""Class probabilities: the top class big with its confidence, and one bar per class."""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import QCoreApplication, QRectF, QSize, Qt, Signal
from PySide6.QtGui import QColor, QFont, QMouseEvent, QPainter, QPaintEvent
from PySide6.QtWidgets import QSizePolicy, QWidget

# The second-best class counts as a contender when it has at least this share of the best one's probability.
CLOSE_CALL_RATIO = 0.5
TOP_K = 10  # a model with more classes than this shows its best TOP_K, best first, with their names
BAR_COLOR = QColor(70, 140, 230)
TOP_COLOR = QColor(255, 170, 60)
TRACK_COLOR = QColor(60, 60, 66)
TEXT_COLOR = QColor(225, 225, 230)
BACKGROUND = QColor(32, 32, 36)
DIM_TEXT = QColor(150, 150, 158)


def headline(probabilities: np.ndarray | None, labels: list[str]) -> tuple[str, str]:
    """The big text and the line under it: ``("7", "98.2 % confident")`` or ``("4 or 9?", "...")``."""
    translate = QCoreApplication.translate
    if probabilities is None or len(probabilities) == 0:
        return "–", translate("ProbabilitiesView", "Draw a digit")
    order = np.argsort(probabilities)[::-1]
    best = int(order[0])
    top = float(probabilities[best])
    if len(order) > 1:
        runner_up = int(order[1])
        second = float(probabilities[runner_up])
        if second >= CLOSE_CALL_RATIO * top:
            return (translate("ProbabilitiesView", "{first} or {second}?").format(first=labels[best],
                                                                                  second=labels[runner_up]),
                    translate("ProbabilitiesView", "{first} % vs {second} % — a close call").format(
                        first=f"{top * 100:.0f}", second=f"{second * 100:.0f}"))
    return labels[best], translate("ProbabilitiesView", "{percent} % confident").format(percent=f"{top * 100:.1f}")


def close_call(probabilities: np.ndarray | None) -> tuple[int, int] | None:
    """(best, runner-up) when the drawing is ambiguous between them (the "4 or 9?" state), else None."""
    if probabilities is None or len(probabilities) < 2:
        return None
    best, second = (int(i) for i in np.argsort(probabilities)[::-1][:2])
    return (best, second) if probabilities[second] >= CLOSE_CALL_RATIO * probabilities[best] else None


class ProbabilitiesView(QWidget):
    """Paints itself; ``set_prediction(None, ...)`` shows the empty state. A click on a bar emits
    ``classClicked(index)`` (explain that class); on the headline of a close call, ``closeCallClicked(best,
    runner_up)`` (why this and not that?)."""

    classClicked = Signal(int)
    closeCallClicked = Signal(int, int)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._probabilities: np.ndarray | None = None
        self._labels: list[str] = [str(i) for i in range(10)]
        self.computing = False  # the bars are older than the drawing (a slow model is still working)
        self._bar_geometry: tuple[float, float, list[int]] | None = None  # top, row height, classes
        self.setMinimumWidth(220)
        self.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Expanding)

    def sizeHint(self) -> QSize:
        return QSize(300, 420)

    def set_prediction(self, probabilities: np.ndarray | None, labels: list[str] | None = None) -> None:
        self._probabilities = probabilities
        if labels is not None:
            self._labels = list(labels)
        self.update()

    def set_computing(self, computing: bool) -> None:
        if computing != self.computing:
            self.computing = computing
            self.update()

    def headline(self) -> tuple[str, str]:
        return headline(self._probabilities, self._labels)

    def shown_classes(self) -> list[int]:
        """The classes that get a bar, in order: all of them up to TOP_K, else the best TOP_K, best first."""
        if self._probabilities is None:
            return list(range(min(len(self._labels), TOP_K)))
        count = len(self._probabilities)
        if count <= TOP_K:
            return list(range(count))
        return [int(i) for i in np.argsort(self._probabilities)[::-1][:TOP_K]]

    def close_call(self) -> tuple[int, int] | None:
        return close_call(self._probabilities)

    def class_at(self, y: float) -> int | None:
        """The class whose bar is at height ``y`` (as last painted), or None."""
        if self._bar_geometry is None:
            return None
        top, row, classes = self._bar_geometry
        slot = int((y - top) // row) if y >= top else -1
        return classes[slot] if 0 <= slot < len(classes) else None

    def mousePressEvent(self, event: QMouseEvent) -> None:
        if event.button() == Qt.MouseButton.LeftButton and self._probabilities is not None:
            y = event.position().y()
            clicked = self.class_at(y)
            pair = self.close_call()
            if clicked is not None:
                self.classClicked.emit(clicked)
            elif pair is not None and self._bar_geometry is not None and y < self._bar_geometry[0]:
                self.closeCallClicked.emit(*pair)
        super().mousePressEvent(event)

    def paintEvent(self, event: QPaintEvent) -> None:
        painter = QPainter(self)
        painter.fillRect(self.rect(), BACKGROUND)  # own background: the colours below assume a dark one
        painter.setRenderHint(QPainter.RenderHint.Antialiasing, True)
        painter.setRenderHint(QPainter.RenderHint.TextAntialiasing, True)
        width, height = self.width(), self.height()
        big, small = self.headline()

        big_font = QFont(self.font())
        big_font.setPixelSize(max(28, min(72, height // 7)))
        big_font.setBold(True)
        painter.setFont(big_font)
        painter.setPen(TOP_COLOR if self._probabilities is not None else DIM_TEXT)
        big_height = big_font.pixelSize() * 1.25
        painter.drawText(QRectF(0, 0, width, big_height), Qt.AlignmentFlag.AlignCenter, big)

        small_font = QFont(self.font())
        small_font.setPixelSize(max(12, min(16, height // 28)))
        painter.setFont(small_font)
        painter.setPen(TEXT_COLOR)
        line = small_font.pixelSize() * 1.6
        painter.drawText(QRectF(0, big_height, width, line), Qt.AlignmentFlag.AlignCenter, small)

        top = big_height + line + 8
        if self.computing:
            painter.setPen(DIM_TEXT)
            painter.drawText(QRectF(0, big_height + line - 4, width, line), Qt.AlignmentFlag.AlignCenter,
                             self.tr("computing…"))
            top += line * 0.6
        shown = self.shown_classes()
        count = len(shown)
        if count == 0:
            painter.end()
            return
        total = len(self._probabilities) if self._probabilities is not None else len(self._labels)
        if count < total:
            painter.setPen(DIM_TEXT)
            painter.drawText(QRectF(0, top - 4, width, line), Qt.AlignmentFlag.AlignCenter,
                             self.tr("top %1 of %2 classes").replace("%1", str(count)).replace("%2", f"{total:,}"))
            top += line
        row = max(8.0, min(34.0, (height - top - 4) / count))
        self._bar_geometry = (top, row, list(getattr(self, "shown_classes", lambda: range(count))()))
        names = [self._labels[i] if i < len(self._labels) else str(i) for i in shown]
        label_width = max(28.0, min(max(90.0, width * 0.45), painter.fontMetrics().horizontalAdvance(
            max(names, key=len) if names else "0") + 12.0))
        value_width = painter.fontMetrics().horizontalAdvance("100.0 %") + 8
        track_width = max(10.0, width - label_width - value_width - 8)
        best = int(np.argmax(self._probabilities)) if self._probabilities is not None else -1
        show_text = row >= small_font.pixelSize() * 0.9
        for slot, i in enumerate(shown):
            y = top + slot * row
            label = painter.fontMetrics().elidedText(names[slot], Qt.TextElideMode.ElideRight,
                                                     int(label_width - 6))
            value = float(self._probabilities[i]) if self._probabilities is not None else 0.0
            if show_text:
                painter.setPen(TEXT_COLOR if i == best else DIM_TEXT)
                painter.drawText(QRectF(0, y, label_width - 6, row), Qt.AlignmentFlag.AlignRight
                                 | Qt.AlignmentFlag.AlignVCenter, label)
            bar_rect = QRectF(label_width, y + row * 0.18, track_width, row * 0.64)
            painter.setPen(Qt.PenStyle.NoPen)
            painter.setBrush(TRACK_COLOR)
            painter.drawRoundedRect(bar_rect, 3, 3)
            if value > 0:
                painter.setBrush(TOP_COLOR if i == best else BAR_COLOR)
                filled = QRectF(bar_rect.x(), bar_rect.y(), max(2.0, track_width * value), bar_rect.height())
                painter.drawRoundedRect(filled, 3, 3)
            if show_text and self._probabilities is not None:
                painter.setPen(TEXT_COLOR if i == best else DIM_TEXT)
                painter.drawText(QRectF(label_width + track_width + 4, y, value_width, row),
                                 Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter, f"{value * 100:.1f} %")
        painter.end()
