"""The loaded model at a glance: inputs, outputs, opset, producer, and a table of its layers."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import numpy as np
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QHeaderView, QLabel, QTreeWidget, QTreeWidgetItem, QVBoxLayout, QWidget

from gui.adapter import SCALING_DESCRIPTIONS, ModelAdapter

COLUMNS = ("#", "Node", "Op", "Output shape", "Parameters")


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
        ("File", html.escape(Path(model.path).name if getattr(model, "path", None) else "(in memory)")),
        ("Producer", html.escape(str(getattr(model, "producer", "unknown")))),
        ("Opset", str(getattr(model, "opset", "?"))),
        ("Inputs", "<br>".join(_spec_text(s) for s in model.inputs)),
        ("Outputs", "<br>".join(_spec_text(s) for s in model.outputs)),
        ("Nodes", str(len(model.nodes))),
        ("Parameters", f"{int(getattr(model, 'parameter_count', 0)):,}"),
    ]
    if adapter is not None:
        rows.append(("Fed as", html.escape(adapter.layout.describe())))
        rows.append(("Scaling", html.escape(f"{adapter.scaling} — {SCALING_DESCRIPTIONS[adapter.scaling]} "
                                            f"({adapter.scaling_source})")))
    for key in ("input_description", "test_accuracy"):
        if model.metadata.get(key):
            rows.append((key.replace("_", " ").capitalize(), html.escape(model.metadata[key])))
    body = "".join(f"<tr><td style='color:#999;padding-right:10px'>{k}</td><td>{v}</td></tr>" for k, v in rows)
    return f"<table>{body}</table>"


class ModelSummary(QWidget):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.header = QLabel()
        self.header.setTextFormat(Qt.TextFormat.RichText)
        self.header.setWordWrap(True)
        self.header.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.table = QTreeWidget()
        self.table.setColumnCount(len(COLUMNS))
        self.table.setHeaderLabels(list(COLUMNS))
        self.table.setRootIsDecorated(False)
        self.table.setAlternatingRowColors(True)
        self.table.setUniformRowHeights(True)  # lets Qt lay out thousands of rows without measuring each
        header = self.table.header()
        header.setSectionResizeMode(1, QHeaderView.ResizeMode.Stretch)
        for column in (0, 2, 3, 4):
            header.setSectionResizeMode(column, QHeaderView.ResizeMode.ResizeToContents)
        layout = QVBoxLayout(self)
        layout.addWidget(self.header)
        layout.addWidget(self.table, 1)
        self._items: dict[str, QTreeWidgetItem] = {}

    def set_model(self, model: Any, adapter: ModelAdapter | None) -> None:
        self.header.setText(describe_model(model, adapter))
        self.table.clear()
        self._items = {}
        items = []
        for index, node in enumerate(model.nodes):
            parameters = int(getattr(node, "parameters", 0))
            item = QTreeWidgetItem([str(index + 1), node.name, node.op_type, "", f"{parameters:,}" if parameters
                                    else ""])
            item.setTextAlignment(4, Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
            items.append(item)
            self._items[node.name] = item
        self.table.addTopLevelItems(items)

    def set_shapes(self, records: list) -> None:
        """Fill the output-shape column from a traced run (shapes are only certain once something ran)."""
        for record in records:
            item = self._items.get(record.name)
            if item is not None:
                item.setText(3, "  ".join(_shape_text(np.shape(v)) for v in record.outputs.values()))
