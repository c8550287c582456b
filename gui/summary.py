"""The loaded model at a glance: inputs, outputs, opset, producer, how it is fed and calibrated, its reliability
diagram (``gui.reliability``) and a table of its layers."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import numpy as np
from PySide6.QtCore import (
    QT_TRANSLATE_NOOP,
    QAbstractTableModel,
    QCoreApplication,
    QEvent,
    QModelIndex,
    QObject,
    QPersistentModelIndex,
    Qt,
)
from PySide6.QtWidgets import QHeaderView, QLabel, QTreeView, QVBoxLayout, QWidget

from gui.calibration import Reliability, describe_temperature
from gui.reliability import ReliabilityView
from nn_core.interface import SCALING_DESCRIPTIONS, ModelAdapter

COLUMNS = ("#", "Node", "Op", "Output shape", "Parameters")
# where the scaling came from, in words (adapter.scaling_source); translated when shown
SCALING_SOURCES = {"metadata": QT_TRANSLATE_NOOP("ModelSummary", "from the file"),
                   "remembered": QT_TRANSLATE_NOOP("ModelSummary", "your earlier choice"),
                   "user": QT_TRANSLATE_NOOP("ModelSummary", "your choice"),
                   "guessed": QT_TRANSLATE_NOOP("ModelSummary", "guessed: auto-detected on open"),
                   "auto-detect": QT_TRANSLATE_NOOP("ModelSummary", "guessed: auto-detected"),
                   "default": QT_TRANSLATE_NOOP("ModelSummary", "guessed: assumed, the file declares none")}


def _tr(text: str) -> str:
    return QCoreApplication.translate("ModelSummary", text)


def _texts() -> tuple[str, ...]:
    """Never called: the row and column names as literals, so ``pyside6-lupdate`` lists them for translation."""
    translate = QCoreApplication.translate
    return (translate("ModelSummary", "Node"), translate("ModelSummary", "Op"),
            translate("ModelSummary", "Output shape"), translate("ModelSummary", "Parameters"),
            translate("ModelSummary", "File"), translate("ModelSummary", "Producer"),
            translate("ModelSummary", "Opset"), translate("ModelSummary", "Inputs"),
            translate("ModelSummary", "Outputs"), translate("ModelSummary", "Nodes"),
            translate("ModelSummary", "Fed as"), translate("ModelSummary", "Scaling"),
            translate("ModelSummary", "(in memory)"), translate("ModelSummary", "Calibration"),
            translate("ModelSummary", "Ignored"), translate("ModelSummary", "Input description"),
            translate("ModelSummary", "Test accuracy"), translate("ModelSummary", "unknown"))


def scaling_description(code: str) -> str:
    """An input scaling in words, in the user's language (``SCALING_DESCRIPTIONS`` has the English)."""
    translate = QCoreApplication.translate
    names = {"01": translate("ModelSummary", "0..1, ink = 1 (x/255)"),
             "255": translate("ModelSummary", "0..255 raw pixels"),
             "mnist_norm": translate("ModelSummary", "MNIST normalised ((x-0.1307)/0.3081)"),
             "m11": translate("ModelSummary", "-1..1 (x/127.5-1)"),
             "inv01": translate("ModelSummary", "inverted 0..1 (dark ink on white)")}
    return names.get(code) or SCALING_DESCRIPTIONS.get(code, code)


def _shape_text(shape: Any) -> str:
    if shape is None:
        return "[?]"
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"


def _spec_text(spec: Any) -> str:
    dtype = getattr(spec, "dtype", None)
    return f"<b>{html.escape(spec.name)}</b> {_shape_text(spec.shape)} {dtype if dtype is not None else ''}"


def describe_model(model: Any, adapter: ModelAdapter | None) -> str:
    """The header as rich text (the view's label shows it; tests read it too)."""
    rows = [
        ("File", html.escape(Path(model.path).name if getattr(model, "path", None) else _tr("(in memory)"))),
        ("Producer", html.escape(str(getattr(model, "producer", _tr("unknown"))))),
        ("Opset", str(getattr(model, "opset", "?"))),
        ("Inputs", "<br>".join(_spec_text(s) for s in model.inputs)),
        ("Outputs", "<br>".join(_spec_text(s) for s in model.outputs)),
        ("Nodes", str(len(model.nodes))),
        ("Parameters", f"{int(getattr(model, 'parameter_count', 0)):,}"),
    ]
    if adapter is not None:
        rows.append(("Fed as", html.escape(adapter.layout.describe())))
        source = _tr(SCALING_SOURCES.get(adapter.scaling_source, adapter.scaling_source))
        rows.append(("Scaling", html.escape(f"{adapter.scaling} — {scaling_description(adapter.scaling)} "
                                            f"({source})")))
        rows.append(("Calibration", html.escape(describe_temperature(adapter))))
        for warning in getattr(adapter, "warnings", ()):
            rows.append(("Ignored", f"<span style='color:#e99'>{html.escape(warning)}</span>"))
    for key in ("input_description", "test_accuracy"):
        if model.metadata.get(key):
            rows.append((key.replace("_", " ").capitalize(), html.escape(model.metadata[key])))
    body = "".join(f"<tr><td style='color:#999;padding-right:10px'>{html.escape(_tr(k))}</td><td>{v}</td></tr>"
                   for k, v in rows)
    return f"<table>{body}</table>"


class NodeTableModel(QAbstractTableModel):
    """The layer table's rows, produced on demand: a 20,000-node graph costs no per-row objects."""

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._nodes: list[tuple[str, str, int]] = []  # (name, op type, parameters)
        self._shapes: dict[str, str] = {}  # node name -> output shapes text, once something has run
        self._pending_shapes: dict[str, Any] = {}  # node name -> record outputs, formatted when first shown

    def set_nodes(self, nodes: list) -> None:
        rows = [(node.name, node.op_type, int(getattr(node, "parameters", 0))) for node in nodes]
        if rows == self._nodes:
            return  # the same graph (a new scaling re-describes the model): keep the shapes and the scroll position
        self.beginResetModel()
        self._nodes = rows
        self._shapes, self._pending_shapes = {}, {}
        self.endResetModel()

    def set_shapes(self, records: list) -> None:
        self._shapes = {}
        self._pending_shapes = {record.name: record.outputs for record in records}
        if self._nodes:
            self.dataChanged.emit(self.index(0, 3), self.index(len(self._nodes) - 1, 3))

    def shape_text(self, name: str) -> str:
        text = self._shapes.get(name)
        if text is None:
            outputs = self._pending_shapes.get(name)
            text = "" if outputs is None else "  ".join(_shape_text(np.shape(v)) for v in outputs.values())
            self._shapes[name] = text
        return text

    def rowCount(self, parent: QModelIndex | QPersistentModelIndex = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(self._nodes)

    def columnCount(self, parent: QModelIndex | QPersistentModelIndex = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(COLUMNS)

    def row(self, row: int) -> list[str]:
        """The texts of one row, as shown."""
        name, op_type, parameters = self._nodes[row]
        return [str(row + 1), name, op_type, self.shape_text(name), f"{parameters:,}" if parameters else ""]

    def data(self, index: QModelIndex | QPersistentModelIndex, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid() or not 0 <= index.row() < len(self._nodes):
            return None
        if role == Qt.ItemDataRole.DisplayRole:
            return self.row(index.row())[index.column()]
        if role == Qt.ItemDataRole.TextAlignmentRole and index.column() in (0, 4):
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        return None

    def headerData(self, section: int, orientation: Qt.Orientation,
                   role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if orientation == Qt.Orientation.Horizontal and role == Qt.ItemDataRole.DisplayRole:
            return _tr(COLUMNS[section])
        return None


class ModelSummary(QWidget):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.header = QLabel()
        self.header.setTextFormat(Qt.TextFormat.RichText)
        self.header.setWordWrap(True)
        self.header.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.nodes = NodeTableModel(self)
        self.table = QTreeView()
        self.table.setModel(self.nodes)
        self.table.setRootIsDecorated(False)
        self.table.setAlternatingRowColors(True)
        self.table.setUniformRowHeights(True)  # lets Qt lay out thousands of rows without measuring each
        header = self.table.header()
        # Fixed widths, not ResizeToContents: measuring every row of a 20,000-node graph on each change would
        # freeze the window; the node name column takes the rest.
        header.setStretchLastSection(False)
        header.setSectionResizeMode(1, QHeaderView.ResizeMode.Stretch)
        for column, width in ((0, 56), (2, 110), (3, 150), (4, 90)):
            header.setSectionResizeMode(column, QHeaderView.ResizeMode.Interactive)
            header.resizeSection(column, width)
        self.reliability = ReliabilityView()
        self.reliability.set_message(self.tr("Reliability: measured when a ten-class model is open"))
        layout = QVBoxLayout(self)
        layout.addWidget(self.header)
        layout.addWidget(self.reliability)
        layout.addWidget(self.table, 1)
        self.table.viewport().installEventFilter(self)

    def eventFilter(self, watched, event) -> bool:  # noqa: ANN001
        if watched is self.table.viewport() and event.type() == QEvent.Type.Resize:
            self.fit_columns()
        return False

    def fit_columns(self) -> None:
        """Share the table's width among the columns (the node name gets the most), so none is cut off or
        pushed out of sight on a small screen; the widths are fixed fractions, not measured from 20,000 rows."""
        width = self.table.viewport().width()
        header = self.table.header()
        for column, share in ((0, 0.09), (2, 0.18), (3, 0.25), (4, 0.16)):
            header.resizeSection(column, max(36, int(width * share)))

    def set_model(self, model: Any, adapter: ModelAdapter | None) -> None:
        self.header.setText(describe_model(model, adapter))
        self.reliability.calibration = describe_temperature(adapter) if adapter is not None else ""
        self.nodes.set_nodes(list(model.nodes))

    def set_reliability(self, reliability: Reliability | None, measuring: bool = False,
                        error: str | None = None) -> None:
        """The reliability diagram of the current model (None: a line saying why there is none)."""
        if reliability is None:
            self.reliability.set_message(
                self.tr("Reliability: measuring on the shipped digits…") if measuring else
                self.tr("Reliability: the model failed on a digit ({error})").format(error=error) if error else
                self.tr("Reliability: only for ten-class (digit) models"))
        self.reliability.set_reliability(reliability)

    def set_shapes(self, records: list) -> None:
        """Fill the output-shape column from a traced run (shapes are only certain once something ran)."""
        self.nodes.set_shapes(records)
