"""The "Compare with…" window: the current model and a second one side by side on the same drawing.

A thin Qt view over ``gui.comparison.Comparer`` (which opens the second file off the UI thread and runs both
models on the latest drawing on its worker): one table row per class with both probabilities and their gap,
rows where the models disagree highlighted, each model's latency and file size underneath. A second file that
cannot be opened shows its error here; the main window's model is never touched.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtGui import QBrush, QColor
from PySide6.QtWidgets import (
    QDialog,
    QFileDialog,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from gui.comparison import Comparer, Comparison, describe_model, summary_lines
from gui.qt_bridge import QtDispatcher

FLAG_COLOR = QColor(255, 215, 150)
ERROR_STYLE = "color: #c0392b;"


class CompareView(QDialog):
    """Non-modal window following ``window``'s session: its model is the first, ``open_second`` picks the other."""

    def __init__(self, window: QWidget) -> None:
        super().__init__(window)
        self.window_ = window
        self.session = window.session
        self.setWindowTitle(self.tr("Compare models"))
        self.comparer = Comparer(QtDispatcher(self))
        self.first_label = QLabel()
        self.second_label = QLabel(self.tr("no second model"))
        self.choose_button = QPushButton(self.tr("Choose model…"))
        self.choose_button.clicked.connect(self._choose)
        self.status = QLabel()
        self.status.setWordWrap(True)
        self.verdict = QLabel()
        self.verdict.setWordWrap(True)
        self.table = QTableWidget(0, 4)
        self.table.setHorizontalHeaderLabels([self.tr("class"), self.tr("first %"), self.tr("second %"),
                                              self.tr("gap (points)")])
        self.table.verticalHeader().setVisible(False)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        self.table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.details = QLabel()
        self.details.setWordWrap(True)
        header = QHBoxLayout()
        header.addWidget(self.second_label, 1)
        header.addWidget(self.choose_button)
        layout = QVBoxLayout(self)
        layout.addWidget(self.first_label)
        layout.addLayout(header)
        layout.addWidget(self.status)
        layout.addWidget(self.verdict)
        layout.addWidget(self.table, 1)
        layout.addWidget(self.details)
        self.resize(460, 520)

        events = self.comparer.events
        events.opening.connect(lambda path: self._set_status(self.tr("opening {name}…").format(name=path.name)))
        events.opened.connect(self._on_opened)
        events.open_failed.connect(self._on_open_failed)
        events.compared.connect(self.show_comparison)
        self.session.events.model_changed.connect(self._on_main_model)
        self.session.events.prediction.connect(self._on_main_prediction)
        self._on_main_model(None)

    # --- API (scripts and tests) -------------------------------------------------------------------------
    def open_second(self, path: str | Path) -> int:
        return self.comparer.open(path)

    @property
    def comparison(self) -> Comparison | None:
        return self.comparer.last

    # --- events ------------------------------------------------------------------------------------------
    def _choose(self) -> None:
        start = str(Path(self.session.model_path).parent) if self.session.model_path else ""
        path, _ = QFileDialog.getOpenFileName(self, self.tr("Compare with model"), start,
                                              self.tr("ONNX models (*.onnx);;All files (*)"))
        if path:
            self.open_second(path)

    def _set_status(self, text: str, error: bool = False) -> None:
        self.status.setStyleSheet(ERROR_STYLE if error else "")
        self.status.setText(text)

    def _on_main_model(self, _opened) -> None:
        if self.session.adapter is None:
            return
        path = self.session.model_path
        self.comparer.set_first(Path(path).name if path else self.tr("model"), self.session.adapter, path)
        self.first_label.setText(self.tr("first: {model}").format(model=describe_model(self.comparer.first)))
        self._resubmit()

    def _on_opened(self, model) -> None:
        self.second_label.setText(self.tr("second: {model}").format(model=describe_model(model)))
        self._set_status("")
        self._resubmit()

    def _on_open_failed(self, path: Path, message: str) -> None:
        self._set_status(self.tr("cannot open {name}: {message}").format(name=Path(path).name, message=message),
                         error=True)

    def _on_main_prediction(self, prediction) -> None:
        if prediction is None:
            self.table.setRowCount(0)
            self.verdict.setText(self.tr("Draw a digit"))
            self.details.setText("")
            return
        self._resubmit()

    def _resubmit(self) -> None:
        if self.session.image is not None:
            self.comparer.submit(self.session.image, self.session.drawing)

    # --- drawing -----------------------------------------------------------------------------------------
    def show_comparison(self, comparison: Comparison) -> None:
        first, second = comparison.first, comparison.second
        self.table.setHorizontalHeaderLabels([self.tr("class"), first.name[:24], second.name[:24],
                                              self.tr("gap (points)")])
        self.verdict.setText(comparison.verdict())
        self.verdict.setStyleSheet("font-weight: bold;" + (" color: #c0392b;" if comparison.disagree else ""))
        self.table.setRowCount(len(comparison.rows))
        for row, entry in enumerate(comparison.rows):
            cells = [entry.label,
                     "-" if entry.first is None else f"{entry.first * 100:.2f}",
                     "-" if entry.second is None else f"{entry.second * 100:.2f}",
                     "-" if entry.gap is None else f"{entry.gap * 100:+.2f}"]
            for column, text in enumerate(cells):
                item = QTableWidgetItem(text)
                item.setTextAlignment(Qt.AlignmentFlag.AlignCenter)
                if entry.flagged:
                    item.setBackground(QBrush(FLAG_COLOR))
                if (column == 1 and entry.index == first.top) or (column == 2 and entry.index == second.top):
                    font = item.font()
                    font.setBold(True)
                    item.setFont(font)
                self.table.setItem(row, column, item)
        self.details.setText("\n".join(summary_lines(comparison)))

    def shutdown(self) -> None:
        self.comparer.shutdown()


def open_compare(window: QWidget) -> CompareView:
    """The main window's "Compare with…" action: show the (one) compare window, asking for a file when it has
    no second model yet and the window may show dialogs."""
    view = getattr(window, "compare_view", None)
    if view is None:
        view = window.compare_view = CompareView(window)
        window.destroyed.connect(lambda *_: view.shutdown())
    view.show()
    view.raise_()
    if view.comparer.second is None and view.comparer.opening is None and getattr(window, "interactive", False):
        view._choose()
    return view
