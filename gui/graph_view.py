"""The network as a graph, the way Netron draws it, coloured live by each node's activity.

The layout (``gui.graph_layout``) is computed once per model off the UI thread; this view only turns it into
items: one cached item per node (op, output shape, parameters; text dropped when zoomed far out), and all edges
as one path item, so pan and zoom stay smooth on ResNet-50 and DenseNet-121. The items are built only while the
view is shown, and a few at a time between events (``gui.qt_bridge.Steps``): DenseNet-121's 910 boxes in one go
kept the UI thread busy 15-40 ms. A node's colour is the mean ``|a|`` of its output for the current drawing, on a
log scale across the network. A new drawing recolours only the boxes in sight; the others are brought up to date
when they come into view (a box repainted is a Python call from C++, and DenseNet's 910 of them, most far
off-screen, were ~5 ms of the UI thread per drawing, 3-5x that on a busy machine).
"""

from __future__ import annotations

import math
from collections.abc import Iterator

from PySide6.QtCore import QPointF, QRectF, Qt, Signal
from PySide6.QtGui import (
    QBrush,
    QColor,
    QFont,
    QKeyEvent,
    QMouseEvent,
    QPainter,
    QPainterPath,
    QPaintEvent,
    QPen,
    QWheelEvent,
)
from PySide6.QtWidgets import (
    QGraphicsItem,
    QGraphicsPathItem,
    QGraphicsScene,
    QGraphicsView,
    QStyleOptionGraphicsItem,
    QWidget,
)

from gui.activations import SEQUENTIAL, format_shape
from gui.graph_layout import GraphLayout, LayoutEdge, LayoutNode
from gui.qt_bridge import shared_steps

NODE_FILL = QColor(52, 54, 62)
NODE_BORDER = QColor(100, 102, 112)
SELECTED_BORDER = QColor(255, 170, 60)
EDGE_COLOUR = QColor(120, 122, 132)
SELECTED_EDGE = QColor(255, 170, 60)
TEXT = QColor(230, 230, 235)
MIN_SCALE, MAX_SCALE = 0.02, 4.0
ZOOM_STEP = 1.2
EDGES_PER_STEP = 64  # edges added to the path between two looks at the clock (~0.5 ms)


def op_colour(op_type: str) -> QColor:
    """Netron-like category colours for the op strip at a node's left edge."""
    if op_type in ("Conv", "ConvTranspose", "Gemm", "MatMul", "QLinearConv", "ConvInteger", "QGemm"):
        return QColor(51, 110, 180)
    if op_type in ("Relu", "Sigmoid", "Tanh", "LeakyRelu", "Clip", "Softmax", "LogSoftmax", "Elu", "Selu", "Gelu"):
        return QColor(160, 50, 50)
    if "Pool" in op_type:
        return QColor(50, 130, 80)
    if "Normalization" in op_type or op_type == "LRN":
        return QColor(90, 70, 140)
    if op_type in ("Concat", "Split", "Reshape", "Flatten", "Transpose", "Squeeze", "Unsqueeze", "Gather"):
        return QColor(120, 100, 50)
    return QColor(90, 92, 100)


def activity_colour(t: float) -> QColor:
    r, g, b = SEQUENTIAL[int(max(0.0, min(1.0, t)) * (len(SEQUENTIAL) - 1))]
    return QColor(int(r), int(g), int(b))


class NodeItem(QGraphicsItem):
    """One node's box. Painted text depends on the zoom (level of detail); cached in device coordinates."""

    def __init__(self, node: LayoutNode, view: GraphView) -> None:
        super().__init__()
        self.node = node
        self.view = view
        self.shape_text = ""
        self._activity: float | None = None  # 0..1 on the network's scale, None: nothing drawn
        self._value: float | None = None  # the mean |a| itself
        self.colouring = -1  # which of the view's colourings _activity and _value are from (view.bring_up_to_date)
        self.selected = False
        self._rect = QRectF(-node.width / 2, 0, node.width, node.height)
        self._bounds = self._rect.adjusted(-2, -2, 2, 2)  # asked for often (a Python call from C++ each time)
        self.setPos(node.x, node.y)
        self.setCacheMode(QGraphicsItem.CacheMode.DeviceCoordinateCache)
        self.setAcceptedMouseButtons(Qt.MouseButton.LeftButton)
        self.setCursor(Qt.CursorShape.PointingHandCursor)
        self.setZValue(1)
        self.setToolTip(f"{node.name} ({node.op_type})")

    def boundingRect(self) -> QRectF:
        return self._bounds

    @property
    def activity(self) -> float | None:
        """0..1 on the network's scale for the current drawing, None: nothing drawn."""
        self.view.bring_up_to_date(self, repaint=False)
        return self._activity

    @property
    def value(self) -> float | None:
        """The mean |a| of the node's output for the current drawing."""
        self.view.bring_up_to_date(self, repaint=False)
        return self._value

    def lines(self) -> list[str]:
        parameters = f"{self.node.parameters:,} params" if self.node.parameters else ""
        value = f"|a| {self.value:.3g}" if self.value is not None else ""
        return [f"{self.node.op_type}  {self.node.name}", self.shape_text,
                "   ".join(part for part in (parameters, value) if part)]

    def paint(self, painter: QPainter, option: QStyleOptionGraphicsItem, widget: QWidget | None = None) -> None:
        detail = option.levelOfDetailFromTransform(painter.worldTransform())
        activity = self.activity  # (brought up to date: this is the paint that shows it)
        fill = activity_colour(activity) if activity is not None else NODE_FILL
        painter.setPen(QPen(SELECTED_BORDER if self.selected else NODE_BORDER, 3 if self.selected else 1))
        painter.setBrush(fill)
        painter.drawRoundedRect(self._rect, 5, 5)
        painter.fillRect(QRectF(self._rect.x() + 1, self._rect.y() + 1, 6, self._rect.height() - 2),
                         op_colour(self.node.op_type))
        if detail < 0.3:
            return  # far out: the box and its colour tell enough
        text_colour = QColor(20, 20, 24) if activity is not None and activity > 0.62 else TEXT
        painter.setPen(text_colour)
        font = QFont(painter.font())
        font.setPixelSize(12)
        font.setBold(True)
        painter.setFont(font)
        lines = self.lines()
        metrics = painter.fontMetrics()
        inner = self._rect.adjusted(12, 3, -6, -3)
        if detail < 0.6:  # middle distance: the op only, bigger
            painter.drawText(inner, Qt.AlignmentFlag.AlignCenter, self.node.op_type)
            return
        line_height = inner.height() / 3
        painter.drawText(QRectF(inner.x(), inner.y(), inner.width(), line_height),
                         Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter,
                         metrics.elidedText(lines[0], Qt.TextElideMode.ElideRight, int(inner.width())))
        font.setBold(False)
        font.setPixelSize(11)
        painter.setFont(font)
        metrics = painter.fontMetrics()
        for i in (1, 2):
            painter.drawText(QRectF(inner.x(), inner.y() + i * line_height, inner.width(), line_height),
                             Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter,
                             metrics.elidedText(lines[i], Qt.TextElideMode.ElideRight, int(inner.width())))

    def mousePressEvent(self, event) -> None:  # noqa: ANN001 - QGraphicsSceneMouseEvent
        self.view.node_clicked(self.node.index)
        event.accept()

    def mouseDoubleClickEvent(self, event) -> None:  # noqa: ANN001
        self.view.node_clicked(self.node.index, inspect=True)
        event.accept()


def add_edge(path: QPainterPath, edge: LayoutEdge) -> None:
    """Add one edge to ``path``: a smooth vertical curve through its points."""
    points = edge.points
    path.moveTo(QPointF(*points[0]))
    for (x0, y0), (x1, y1) in zip(points, points[1:]):
        middle = (y0 + y1) / 2
        path.cubicTo(QPointF(x0, middle), QPointF(x1, middle), QPointF(x1, y1))


def edge_path(edges: list[LayoutEdge]) -> QPainterPath:
    """All edges as one path."""
    path = QPainterPath()
    for edge in edges:
        add_edge(path, edge)
    return path


class GraphView(QGraphicsView):
    """``set_layout`` once per model; ``set_shapes`` / ``set_activity`` as runs come in; ``select(name)``.

    ``nodeSelected(name, inspect)`` is emitted when a node is clicked (``inspect``: double-click, open it).
    Wheel zooms around the mouse, dragging pans, ``F`` or ``0`` fits the graph in view, ``+``/``-`` zoom.
    """

    nodeSelected = Signal(str, bool)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setScene(QGraphicsScene(self))
        self.setRenderHints(QPainter.RenderHint.Antialiasing | QPainter.RenderHint.TextAntialiasing)
        self.setDragMode(QGraphicsView.DragMode.ScrollHandDrag)
        self.setTransformationAnchor(QGraphicsView.ViewportAnchor.AnchorUnderMouse)
        self.setViewportUpdateMode(QGraphicsView.ViewportUpdateMode.SmartViewportUpdate)
        self.setOptimizationFlag(QGraphicsView.OptimizationFlag.DontSavePainterState, True)
        self.setBackgroundBrush(QBrush(QColor(30, 30, 34)))
        self.scene().setItemIndexMethod(QGraphicsScene.ItemIndexMethod.BspTreeIndex)
        self.graph_layout: GraphLayout | None = None
        self.items_by_index: list[NodeItem] = []
        self._index_of: dict[str, int] = {}
        self._edges: QGraphicsPathItem | None = None
        self._highlight: QGraphicsPathItem | None = None
        self._pending_layout: GraphLayout | None = None
        self._complete = True  # every item of the current layout is in the scene
        self._shapes: dict[str, str] = {}
        self._activity: dict[str, float] = {}
        self._activity_scale: tuple[float, float] | None = None  # (low, span) of log10 |a|; None: no colours
        self._colouring = 0  # bumped when the colours change; a box whose own number differs is out of date
        self._up_to_date = 0  # boxes brought to the current colouring (all of them: nothing to look at)
        self.selected: int | None = None

    # --- model -------------------------------------------------------------------------------------------
    def set_layout(self, layout: GraphLayout | None) -> None:
        """Show a new model's layout; its items are built while the view is shown, a few per event-loop turn
        (a hidden tab costs nothing; ``finish_build`` completes it at once)."""
        shared_steps().cancel(self)
        self._pending_layout = layout
        self.graph_layout = layout
        self._index_of = layout.index_of() if layout is not None else {}
        self._shapes, self._activity, self.selected = {}, {}, None
        self._activity_scale, self._up_to_date = None, 0
        self.scene().clear()
        self.items_by_index, self._edges, self._highlight = [], None, None
        self._complete = layout is None or not layout.nodes
        if self.isVisible():
            self._start_build()

    def showEvent(self, event) -> None:  # noqa: ANN001
        super().showEvent(event)
        self._start_build()

    def _start_build(self) -> None:
        layout, self._pending_layout = self._pending_layout, None
        if layout is not None:
            shared_steps().start(self, self._build(layout))

    def finish_build(self) -> None:
        """Build the current layout's items now (scripts and tests; the view builds them by itself when shown)."""
        self._start_build()
        shared_steps().finish(self)

    def _build(self, layout: GraphLayout) -> Iterator[None]:
        """The items, as a job for ``Steps``: one box (or a few dozen edges) per ``next()``."""
        scene = self.scene()
        scene.setSceneRect(QRectF(0, 0, layout.width, layout.height))
        self.resetTransform()
        self.scale(0.8, 0.8)
        # the boxes appear where the user will look (the input) while the rest is still being built
        self.centerOn(QPointF(layout.nodes[0].x, layout.nodes[0].y) if layout.nodes else QPointF(0, 0))
        items = []
        for node in layout.nodes:
            item = NodeItem(node, self)
            item.shape_text = self._shapes.get(node.name, "")
            scene.addItem(item)
            items.append(item)
            yield
        path = QPainterPath()
        for count, edge in enumerate(layout.edges, 1):
            add_edge(path, edge)
            if count % EDGES_PER_STEP == 0:
                yield
        edges = QGraphicsPathItem(path)
        edges.setPen(QPen(EDGE_COLOUR, 1.2))
        edges.setZValue(0)
        scene.addItem(edges)
        self._edges = edges
        self._highlight = QGraphicsPathItem()
        self._highlight.setPen(QPen(SELECTED_EDGE, 2.5))
        self._highlight.setZValue(0.5)
        scene.addItem(self._highlight)
        # shapes, colours and the selection that arrived meanwhile were kept, not applied: apply them now
        self.items_by_index, self._complete = items, True
        self.set_shapes_text(self._shapes)
        self._apply_activity()
        if self.selected is not None:
            self._mark(self.selected)

    @property
    def built(self) -> bool:
        """Every item of the current layout is in the scene."""
        return self._complete

    def set_shapes(self, records: list) -> None:
        """Output shapes from a traced run (the trial run when a model opens)."""
        shapes = {}
        for record in records:
            shapes[record.name] = "  ".join(format_shape(tuple(getattr(v, "shape", ()))) for v in
                                            record.outputs.values())
        self.set_shapes_text(shapes)

    def set_shapes_text(self, shapes: dict[str, str]) -> None:
        self._shapes = shapes
        for item in self.items_by_index:
            text = shapes.get(item.node.name, "")
            if text != item.shape_text:
                item.shape_text = text
                item.update()

    # --- live colours ------------------------------------------------------------------------------------
    def set_activity(self, activity: dict[str, float] | None) -> None:
        """Colour each node by its mean |a| (name -> value), on a log scale across the network; None clears."""
        self._activity = dict(activity or {})
        self._apply_activity()

    def _apply_activity(self) -> None:
        values = [v for v in self._activity.values() if v > 0 and math.isfinite(v)]
        self._activity_scale = None
        if values:
            logs = sorted(math.log10(v) for v in values)
            low = logs[int(0.02 * (len(logs) - 1))]
            high = logs[int(0.98 * (len(logs) - 1))]
            self._activity_scale = (low, max(high - low, 1e-6))
        self._colouring += 1
        self._up_to_date = 0
        self._bring_visible_up_to_date()

    def bring_up_to_date(self, item: NodeItem, repaint: bool = True) -> None:
        """Give ``item`` the current drawing's colour (``repaint``: and redraw it, if that changed it)."""
        if item.colouring == self._colouring:
            return
        item.colouring = self._colouring
        self._up_to_date += 1
        value = self._activity.get(item.node.name)
        if value is None or self._activity_scale is None or not math.isfinite(value):
            new = None
        else:
            low, span = self._activity_scale
            new = 0.0 if value <= 0 else (math.log10(value) - low) / span
        if new != item._activity or value != item._value:
            item._activity, item._value = new, value
            if repaint:
                item.update()  # its cached image is out of date

    def _bring_visible_up_to_date(self) -> None:
        if not self.isVisible() or (self._complete and self._up_to_date >= len(self.items_by_index)):
            return
        # by bounding rectangles: the default test against each item's shape builds the outline of the edges'
        # path (every edge of the network) on each call, ~7 ms on DenseNet-121
        for item in self.items(self.viewport().rect(), Qt.ItemSelectionMode.IntersectsItemBoundingRect):
            if isinstance(item, NodeItem):
                self.bring_up_to_date(item)

    def paintEvent(self, event: QPaintEvent) -> None:
        # boxes come into view by scrolling, zooming, resizing or showing the tab: whichever it was, they are
        # brought up to date before the frame that shows them (their cached images would show old colours)
        self._bring_visible_up_to_date()
        super().paintEvent(event)

    # --- selection ---------------------------------------------------------------------------------------
    def node_clicked(self, index: int, inspect: bool = False) -> None:
        self.select_index(index)
        self.nodeSelected.emit(self.graph_layout.nodes[index].name, inspect)

    def select(self, name: str | None, center: bool = True) -> None:
        """Highlight node ``name`` and its edges (None: nothing), scrolling it into view."""
        index = self._index_of.get(name) if name is not None else None
        self.select_index(index, center)

    def select_index(self, index: int | None, center: bool = False) -> None:
        if self.selected is not None and self.selected < len(self.items_by_index):
            self.items_by_index[self.selected].selected = False
            self.items_by_index[self.selected].update()
        self.selected = index
        if index is not None and self.items_by_index:
            self._mark(index)
            if center:
                self.ensureVisible(self.items_by_index[index], 40, 40)
        elif self._highlight is not None:
            self._highlight.setPath(QPainterPath())

    def _mark(self, index: int) -> None:
        item = self.items_by_index[index]
        item.selected = True
        item.update()
        if self._highlight is not None and self.graph_layout is not None:
            self._highlight.setPath(edge_path([e for e in self.graph_layout.edges if index in (e.source, e.target)]))

    # --- pan and zoom ------------------------------------------------------------------------------------
    def zoom(self, factor: float) -> None:
        current = self.transform().m11()
        factor = max(MIN_SCALE / current, min(MAX_SCALE / current, factor))
        self.scale(factor, factor)

    def fit(self) -> None:
        if self.scene().sceneRect().isValid():
            self.fitInView(self.scene().sceneRect(), Qt.AspectRatioMode.KeepAspectRatio)

    def wheelEvent(self, event: QWheelEvent) -> None:
        steps = event.angleDelta().y() / 120
        if steps:
            self.zoom(ZOOM_STEP ** steps)
        event.accept()

    def keyPressEvent(self, event: QKeyEvent) -> None:
        key = event.key()
        if key in (Qt.Key.Key_Plus, Qt.Key.Key_Equal):
            self.zoom(ZOOM_STEP)
        elif key == Qt.Key.Key_Minus:
            self.zoom(1 / ZOOM_STEP)
        elif key in (Qt.Key.Key_F, Qt.Key.Key_0):
            self.fit()
        else:
            super().keyPressEvent(event)

    def mouseDoubleClickEvent(self, event: QMouseEvent) -> None:
        if self.itemAt(event.position().toPoint()) is None:
            self.fit()
        super().mouseDoubleClickEvent(event)
