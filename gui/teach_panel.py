"""The Teach panel: "Wrong? It's a …" buttons, the gallery of taught examples, and Personalize with progress,
cancel, before/after figures, revert and save. All state is the Qt-free ``gui.teaching.Teacher``."""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import QSize, Qt, Signal
from PySide6.QtGui import QIcon, QImage, QKeyEvent, QPixmap
from PySide6.QtWidgets import (
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QProgressBar,
    QPushButton,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from gui.teaching import Evaluation, Example, Teacher

THUMB = 56


def thumbnail(image: np.ndarray) -> QPixmap:
    pixels = np.ascontiguousarray(np.round(np.clip(image, 0, 1) * 255).astype(np.uint8))
    qimage = QImage(pixels.data, pixels.shape[1], pixels.shape[0], pixels.shape[1], QImage.Format.Format_Grayscale8)
    return QPixmap.fromImage(qimage.copy()).scaled(THUMB, THUMB, Qt.AspectRatioMode.KeepAspectRatio,
                                                   Qt.TransformationMode.SmoothTransformation)


class Gallery(QListWidget):
    """The taught examples as thumbnails with their labels; Delete removes the selected ones."""

    deleteRequested = Signal(list)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setViewMode(QListWidget.ViewMode.IconMode)
        self.setIconSize(QSize(THUMB, THUMB))
        self.setResizeMode(QListWidget.ResizeMode.Adjust)
        self.setMovement(QListWidget.Movement.Static)
        self.setSelectionMode(QListWidget.SelectionMode.ExtendedSelection)
        self.setSpacing(4)

    def set_examples(self, examples: list[Example]) -> None:
        self.clear()
        for example in examples:
            item = QListWidgetItem(QIcon(thumbnail(example.image)), str(example.label))
            item.setData(Qt.ItemDataRole.UserRole, example.id)
            item.setToolTip(self.tr("taught as {digit} · {date}").format(
                digit=example.label, date=example.created[:19].replace("T", " ")))
            self.addItem(item)

    def selected_ids(self) -> list[str]:
        return [item.data(Qt.ItemDataRole.UserRole) for item in self.selectedItems()]

    def keyPressEvent(self, event: QKeyEvent) -> None:
        if event.key() in (Qt.Key.Key_Delete, Qt.Key.Key_Backspace) and self.selectedItems():
            self.deleteRequested.emit(self.selected_ids())
            event.accept()
            return
        super().keyPressEvent(event)


class TeachPanel(QWidget):
    """Emits ``teachRequested(label)``, ``personalizeRequested()``, ``saveRequested()``; the window connects."""

    teachRequested = Signal(int)
    personalizeRequested = Signal()
    saveRequested = Signal()

    def __init__(self, teacher: Teacher, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.teacher = teacher
        intro = QLabel(self.tr("Wrong? It's a …  (or press the digit key)"))
        self.label_buttons = []
        grid = QGridLayout()
        grid.setSpacing(3)
        for digit in range(10):
            button = QToolButton()
            button.setText(str(digit))
            button.setToolTip(self.tr("Label this drawing {digit} and keep it as your example ({digit})").format(
                digit=digit))
            button.setMinimumSize(32, 28)
            button.setFocusPolicy(Qt.FocusPolicy.NoFocus)
            button.clicked.connect(lambda _=False, d=digit: self.teachRequested.emit(d))
            grid.addWidget(button, digit // 5, digit % 5)
            self.label_buttons.append(button)
        self.count_label = QLabel()
        self.gallery = Gallery()
        self.gallery.deleteRequested.connect(self._delete)
        self.delete_button = QPushButton(self.tr("Delete selected"))
        self.delete_button.clicked.connect(lambda: self._delete(self.gallery.selected_ids()))
        self.personalize_button = QPushButton(self.tr("Personalize"))
        self.personalize_button.setToolTip(self.tr("Fine-tune the current model on your examples (in the "
                                                   "background)"))
        self.personalize_button.clicked.connect(self.personalizeRequested.emit)
        self.progress = QProgressBar()
        self.progress.setTextVisible(True)
        self.progress.hide()
        self.cancel_button = QPushButton(self.tr("Cancel"))
        self.cancel_button.clicked.connect(teacher.cancel)
        self.cancel_button.hide()
        self.status = QLabel()
        self.status.setWordWrap(True)
        self.result = QLabel()
        self.result.setWordWrap(True)
        self.result.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.revert_button = QPushButton(self.tr("Use the original model"))
        self.revert_button.clicked.connect(self._toggle_personal)
        self.save_button = QPushButton(self.tr("Save personal model…"))
        self.save_button.clicked.connect(self.saveRequested.emit)

        layout = QVBoxLayout(self)
        layout.addWidget(intro)
        layout.addLayout(grid)
        gallery_row = QHBoxLayout()
        gallery_row.addWidget(self.count_label, 1)
        gallery_row.addWidget(self.delete_button)
        layout.addLayout(gallery_row)
        layout.addWidget(self.gallery, 1)
        run_row = QHBoxLayout()
        run_row.addWidget(self.personalize_button)
        run_row.addWidget(self.progress, 1)
        run_row.addWidget(self.cancel_button)
        layout.addLayout(run_row)
        layout.addWidget(self.status)
        layout.addWidget(self.result)
        model_row = QHBoxLayout()
        model_row.addWidget(self.revert_button)
        model_row.addWidget(self.save_button)
        layout.addLayout(model_row)

        events = teacher.events
        events.examples_changed.connect(self.refresh)
        events.personalizing.connect(self._on_personalizing)
        events.progress.connect(self._on_progress)
        events.personalized.connect(self._on_personalized)
        events.personal_changed.connect(lambda _installed: self._sync_model_buttons())
        self.refresh()
        self._sync_model_buttons()

    def refresh(self) -> None:
        examples = self.teacher.examples
        self.gallery.set_examples(examples)
        counts = np.bincount([e.label for e in examples], minlength=10) if examples else np.zeros(10, int)
        per_digit = " ".join(f"{d}:{c}" for d, c in enumerate(counts) if c)
        count = self.tr("{count} examples").format(count=len(examples))
        self.count_label.setText(count + (f" ({per_digit})" if per_digit else ""))
        self.personalize_button.setEnabled(bool(examples) and not self.teacher.running)
        self.delete_button.setEnabled(bool(examples))

    def _delete(self, ids: list[str]) -> None:
        for example_id in ids:
            self.teacher.remove(example_id)

    def _on_personalizing(self, running: bool) -> None:
        self.progress.setVisible(running)
        self.cancel_button.setVisible(running)
        self.personalize_button.setEnabled(not running and bool(self.teacher.examples))
        if running:
            self.progress.setRange(0, 0)
            self.status.setText(self.tr("Personalizing…"))
        elif self.teacher.evaluation is None or not self.teacher.personal_installed:
            self.status.setText(self.teacher.last_error or self.tr("Stopped."))

    def _on_progress(self, done: int, total: int, text: str) -> None:
        self.progress.setRange(0, total)
        self.progress.setValue(done)
        self.status.setText(text)

    def _on_personalized(self, evaluation: Evaluation) -> None:
        self.status.setText(self.tr("Personal model installed ({seconds} s).").format(
            seconds=f"{evaluation.seconds:.1f}"))
        self.result.setText(evaluation.summary())
        self._sync_model_buttons()

    def _toggle_personal(self) -> None:
        if self.teacher.personal_installed:
            self.teacher.revert()
        else:
            self.teacher.reinstall()

    def _sync_model_buttons(self) -> None:
        has_personal = self.teacher.personal is not None
        self.revert_button.setEnabled(has_personal)
        self.revert_button.setText(self.tr("Use the original model") if self.teacher.personal_installed
                                   or not has_personal else self.tr("Use the personal model"))
        self.save_button.setEnabled(has_personal)
