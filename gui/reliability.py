"""The reliability diagram: confidence bins against accuracy, the diagonal a perfectly calibrated model would
follow, and the expected calibration error. The numbers are ``gui.calibration``'s (Qt-free)."""

from __future__ import annotations

from PySide6.QtCore import QPointF, QRectF, QSize, Qt
from PySide6.QtGui import QColor, QFont, QPainter, QPaintEvent, QPen
from PySide6.QtWidgets import QSizePolicy, QWidget

from gui.calibration import MNIST_SOURCE, PEN_SOURCE, Reliability

BACKGROUND = QColor(32, 32, 36)
AXIS = QColor(120, 120, 128)
TEXT = QColor(225, 225, 230)
DIM = QColor(150, 150, 158)
BAR = QColor(70, 140, 230)
GAP_OVER = QColor(230, 90, 70, 150)  # confidence above accuracy: overconfident
GAP_UNDER = QColor(90, 200, 120, 150)  # below: underconfident
DIAGONAL = QColor(255, 170, 60)


class ReliabilityView(QWidget):
    """Paints ``set_reliability(Reliability or None)``; ``set_message(text)`` shows a line instead (measuring…,
    not a ten-class model, an error). ``calibration`` (set by the model view) says how the model is calibrated in
    the user's language; the tooltip falls back to ``Reliability.temperature``."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.reliability: Reliability | None = None
        self.message = ""
        self.calibration = ""
        self.setMinimumHeight(150)
        self.setMinimumWidth(160)
        self.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Fixed)

    def sizeHint(self) -> QSize:
        return QSize(360, 190)

    def set_reliability(self, reliability: Reliability | None) -> None:
        self.reliability = reliability
        self.setToolTip(self.tooltip_text())
        self.update()

    def set_message(self, message: str) -> None:
        self.message = message
        self.update()

    def caption(self) -> str:
        """The line under the title (tests read it too)."""
        if self.reliability is None:
            return self.message
        r = self.reliability
        return self.tr("ECE {ece} % · {n} digits · accuracy {acc} %, mean confidence {conf} %").format(
            ece=f"{r.ece * 100:.1f}", n=r.samples, acc=f"{r.accuracy * 100:.0f}",
            conf=f"{r.mean_confidence * 100:.0f}")

    def tooltip_text(self) -> str:
        r = self.reliability
        if r is None:
            return ""
        lines = [self.tr("Each bar: the predictions whose confidence falls in that range, and how many of them "
                         "were right. A calibrated model's bars reach the diagonal; red above a bar = "
                         "overconfident, green = underconfident."),
                 self.tr("Calibration: {how}").format(how=self.calibration or r.temperature or "—")]
        sources = {MNIST_SOURCE: self.tr("MNIST test digits"), PEN_SOURCE: self.tr("pen recordings")}
        for name, count in r.sources.items():
            lines.append(self.tr("{count} {name}: ECE {ece} %").format(count=count, name=sources.get(name, name),
                                                                       ece=f"{r.ece_by_source[name] * 100:.1f}"))
        lines += [self.tr("{low}–{high}: {count} · conf {confidence} % · acc {accuracy} %").format(
                      low=f"{row.low:.1f}", high=f"{row.high:.1f}", count=row.count,
                      confidence=f"{row.confidence * 100:.0f}", accuracy=f"{row.accuracy * 100:.0f}")
                  for row in r.bins if row.count]
        return "\n".join(lines)

    def paintEvent(self, event: QPaintEvent) -> None:
        painter = QPainter(self)
        painter.fillRect(self.rect(), BACKGROUND)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing, True)
        font = QFont(self.font())
        font.setPixelSize(12)
        painter.setFont(font)
        line = 16.0
        painter.setPen(TEXT)
        painter.drawText(QRectF(8, 2, self.width() - 16, line), Qt.AlignmentFlag.AlignLeft
                         | Qt.AlignmentFlag.AlignVCenter, self.tr("Reliability: confidence vs accuracy"))
        painter.setPen(DIM)
        painter.drawText(QRectF(8, 2 + line, self.width() - 16, line), Qt.AlignmentFlag.AlignLeft
                         | Qt.AlignmentFlag.AlignVCenter, self.caption())
        top, left = 2 + 2 * line + 6, 34.0
        side = max(20.0, min(self.height() - top - 18, self.width() - left - 12))
        plot = QRectF(left, top, side, side)
        painter.setPen(QPen(AXIS, 1))
        painter.drawRect(plot)
        for value, text in ((0.0, "0"), (0.5, "50"), (1.0, "100")):
            y = plot.bottom() - value * side
            painter.drawText(QRectF(0, y - 7, left - 4, 14), Qt.AlignmentFlag.AlignRight
                             | Qt.AlignmentFlag.AlignVCenter, text)
            x = plot.left() + value * side
            painter.drawText(QRectF(x - 14, plot.bottom() + 1, 28, 14), Qt.AlignmentFlag.AlignCenter, text)
        r = self.reliability
        if r is not None:
            width = side / max(len(r.bins), 1)
            for i, row in enumerate(r.bins):
                if not row.count:
                    continue
                x = plot.left() + i * width
                accuracy_y = plot.bottom() - row.accuracy * side
                painter.setPen(Qt.PenStyle.NoPen)
                painter.setBrush(BAR)
                painter.drawRect(QRectF(x + 1, accuracy_y, width - 2, plot.bottom() - accuracy_y))
                confidence_y = plot.bottom() - row.confidence * side
                painter.setBrush(GAP_OVER if row.confidence > row.accuracy else GAP_UNDER)
                painter.drawRect(QRectF(x + 1, min(accuracy_y, confidence_y), width - 2,
                                        abs(accuracy_y - confidence_y)))
            painter.setPen(QPen(DIAGONAL, 1.5, Qt.PenStyle.DashLine))
            painter.drawLine(QPointF(plot.left(), plot.bottom()), QPointF(plot.right(), plot.top()))
        legend_x = plot.right() + 10
        if self.width() - legend_x > 90:
            painter.setPen(DIM)
            for row_index, (colour, text) in enumerate(((BAR, self.tr("accuracy")),
                                                        (GAP_OVER, self.tr("overconfident")),
                                                        (GAP_UNDER, self.tr("underconfident")),
                                                        (DIAGONAL, self.tr("perfect")))):
                y = plot.top() + row_index * line
                painter.fillRect(QRectF(legend_x, y + 4, 10, 8), colour)
                painter.drawText(QRectF(legend_x + 14, y, self.width() - legend_x - 14, line),
                                 Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter, text)
            painter.drawText(QRectF(legend_x, plot.bottom() - line, self.width() - legend_x, line),
                             Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter, self.tr("x: confidence %"))
        painter.end()
