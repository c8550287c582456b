"""What the model actually sees: its input image enlarged with nearest-neighbour, one square per pixel."""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import QCoreApplication, QRectF, QSize, Qt
from PySide6.QtGui import QColor, QImage, QPainter, QPaintEvent
from PySide6.QtWidgets import QSizePolicy, QWidget


def grey_image(values01: np.ndarray) -> QImage:
    """A QImage owning a copy of a [0, 1] array as 8-bit grey."""
    pixels = np.ascontiguousarray(np.clip(values01, 0.0, 1.0) * 255.0 + 0.5, dtype=np.uint8)
    height, width = pixels.shape
    # .copy() detaches the QImage from the NumPy buffer, which may be freed before the image is painted
    return QImage(pixels.data, width, height, pixels.strides[0], QImage.Format.Format_Grayscale8).copy()


class InputPreview(QWidget):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._image: QImage | None = None
        self._caption = self.tr("model input")
        self.setMinimumSize(112, 112)
        self.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Preferred)
        self.setToolTip(self.tr("The image the model receives, one square per input pixel"))

    def sizeHint(self) -> QSize:
        return QSize(180, 200)

    def set_image(self, values01: np.ndarray | None) -> None:
        if values01 is None:
            self._image = None
        else:
            self._image = grey_image(values01)
            self._caption = QCoreApplication.translate("InputPreview", "model input {width}×{height}").format(
                width=values01.shape[1], height=values01.shape[0])
        self.update()

    def paintEvent(self, event: QPaintEvent) -> None:
        painter = QPainter(self)
        painter.fillRect(self.rect(), QColor(32, 32, 36))
        caption_height = self.fontMetrics().height() + 4
        side = max(0, min(self.width(), self.height() - caption_height))
        target = QRectF((self.width() - side) / 2, 0, side, side)
        painter.fillRect(target, QColor(0, 0, 0))
        if self._image is not None:
            # integer multiple of the image size where possible, so every input pixel is an equal square
            factor = max(1, int(side // max(self._image.width(), 1)))
            w, h = self._image.width() * factor, self._image.height() * factor
            if w > side:
                w = h = side
            square = QRectF(target.x() + (side - w) / 2, target.y() + (side - h) / 2, w, h)
            painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, False)  # nearest-neighbour
            painter.drawImage(square, self._image)
        painter.setPen(QColor(150, 150, 158))
        painter.drawText(QRectF(0, side, self.width(), caption_height), Qt.AlignmentFlag.AlignCenter, self._caption)
        painter.end()
