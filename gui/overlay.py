"""The saliency overlay's view: the map as a signed-colour image laid over the canvas, and the bar under the
canvas with the toggle, the method, "and not …", the legend and the note (e.g. an occlusion fallback)."""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import QRectF, Qt, Signal
from PySide6.QtGui import QAction, QColor, QImage, QLinearGradient, QPainter, QPaintEvent
from PySide6.QtWidgets import QComboBox, QHBoxLayout, QLabel, QSizePolicy, QToolButton, QVBoxLayout, QWidget

from gui.explain import METHODS, ShownExplanation, method_name

TOWARDS = (255, 140, 30)  # ink that pushes towards the class: orange
AGAINST = (40, 150, 255)  # ink that pushes away from it (or towards the contrast class): blue
MAX_ALPHA = 215


def saliency_image(saliency: np.ndarray, scale: float | None = None) -> QImage:
    """A 28x28 ARGB image of a signed map: orange towards, blue against, opacity proportional to magnitude (the
    top 0.5 % of magnitudes saturate, so a few extreme pixels do not wash out the rest; weak ones fade out)."""
    values = np.asarray(saliency, np.float32)
    if scale is None:
        scale = float(np.quantile(np.abs(values), 0.995)) if values.size else 0.0
    strength = np.clip(np.abs(values) / scale, 0.0, 1.0) if scale > 0 else np.zeros_like(values)
    rgba = np.zeros((*values.shape, 4), np.uint8)
    positive = values >= 0
    for channel in range(3):
        rgba[..., channel] = np.where(positive, TOWARDS[channel], AGAINST[channel])
    rgba[..., 3] = np.round(strength * MAX_ALPHA).astype(np.uint8)
    rgba = np.ascontiguousarray(rgba)
    image = QImage(rgba.data, values.shape[1], values.shape[0], values.shape[1] * 4, QImage.Format.Format_RGBA8888)
    return image.copy()  # own the pixels: the array goes away


class LegendBar(QWidget):
    """A blue -> clear -> orange gradient with its meaning at the ends."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setMinimumHeight(18)
        self.setMinimumWidth(200)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.against_text = self.tr("against")
        self.towards_text = self.tr("towards")

    def paintEvent(self, event: QPaintEvent) -> None:
        painter = QPainter(self)
        rect = QRectF(self.rect()).adjusted(1, 1, -1, -1)
        gradient = QLinearGradient(rect.topLeft(), rect.topRight())
        gradient.setColorAt(0.0, QColor(*AGAINST, MAX_ALPHA))
        gradient.setColorAt(0.5, QColor(0, 0, 0, 0))
        gradient.setColorAt(1.0, QColor(*TOWARDS, MAX_ALPHA))
        painter.fillRect(rect, QColor(0, 0, 0))
        painter.fillRect(rect, gradient)
        painter.setPen(QColor(235, 235, 240))
        painter.drawText(rect.adjusted(4, 0, 0, 0), Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter,
                         self.against_text)
        painter.drawText(rect.adjusted(0, 0, -4, 0), Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter,
                         self.towards_text)
        painter.end()


class ExplainBar(QWidget):
    """Toggle, method, "and not …", legend and notes of the overlay. Emits what the user picks."""

    methodChosen = Signal(str)
    contrastChosen = Signal(object)  # a class index or None

    def __init__(self, toggle: QAction, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.toggle_button = QToolButton()
        self.toggle_button.setDefaultAction(toggle)
        self.toggle_button.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextOnly)
        self.method_combo = QComboBox()
        for method in METHODS:
            self.method_combo.addItem(method_name(method), method)
        self.method_combo.setToolTip(self.tr("How the map is computed. SmoothGrad (default) passes the randomization "
                                             "and deletion sanity checks; gradient × input mostly mirrors the "
                                             "drawing; occlusion needs no gradients"))
        self.method_combo.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.method_combo.activated.connect(lambda i: self.methodChosen.emit(self.method_combo.itemData(i)))
        self.contrast_combo = QComboBox()
        self.contrast_combo.setToolTip(self.tr("Explain the difference to another class: why this and not that?"))
        self.contrast_combo.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        # row 0 is "—" (no contrast), row i the class i - 1
        self.contrast_combo.activated.connect(lambda i: self.contrastChosen.emit(i - 1 if i > 0 else None))
        self.set_labels([str(i) for i in range(10)])
        self.legend = LegendBar()
        self.title = QLabel(self.tr("Explain: show which pixels pushed the prediction (X)"))
        self.title.setWordWrap(True)
        self.note = QLabel()
        self.note.setWordWrap(True)
        self.note.setStyleSheet("color: #ffcf7a;")
        self.note.hide()

        row = QHBoxLayout()
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.toggle_button)
        row.addWidget(self.method_combo)
        row.addWidget(QLabel(self.tr("and not")))
        row.addWidget(self.contrast_combo)
        row.addStretch(1)
        second = QHBoxLayout()
        second.setContentsMargins(0, 0, 0, 0)
        second.addWidget(self.title, 1)
        second.addWidget(self.legend, 1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(2)
        layout.addLayout(row)
        layout.addLayout(second)
        layout.addWidget(self.note)

    def set_labels(self, labels: list[str]) -> None:
        current = self.contrast_combo.currentIndex()
        # one call for all rows: an item (with its data) at a time took ~10 ms for ImageNet's 1000 classes
        self.contrast_combo.clear()
        self.contrast_combo.addItems(["—", *labels])
        self.contrast_combo.setCurrentIndex(current if 0 <= current <= len(labels) else 0)

    def sync(self, method: str, contrast: int | None, enabled: bool) -> None:
        self.method_combo.setCurrentIndex(max(0, self.method_combo.findData(method)))
        rows = self.contrast_combo.count()
        self.contrast_combo.setCurrentIndex(contrast + 1 if contrast is not None and 0 <= contrast < rows - 1
                                            else 0)
        self.legend.setVisible(enabled)

    def show_explanation(self, shown: ShownExplanation | None) -> None:
        if shown is None:
            self.title.setText(self.tr("Explain: show which pixels pushed the prediction (X)"))
            self.note.hide()
            return
        e = shown.explanation
        label = shown.labels[e.target] if e.target < len(shown.labels) else str(e.target)
        self.legend.towards_text = self.tr("towards {label}").format(label=label)
        if e.contrast is not None:
            other = shown.labels[e.contrast] if e.contrast < len(shown.labels) else str(e.contrast)
            self.legend.against_text = self.tr("towards {label}").format(label=other)
        else:
            self.legend.against_text = self.tr("against {label}").format(label=label)
        self.legend.update()
        self.title.setText(self.tr("{title} · {ms} ms").format(title=shown.title(), ms=f"{e.seconds * 1000:.0f}"))
        self.note.setText(e.note or "")
        self.note.setVisible(bool(e.note))
