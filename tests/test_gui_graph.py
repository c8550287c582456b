"""The graph view linked to the activation cards and the inspector; top-k bars; the two-step prediction."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("pytestqt")

from PySide6.QtCore import Qt  # noqa: E402
from PySide6.QtTest import QTest  # noqa: E402

from gui.probabilities import TOP_K, ProbabilitiesView  # noqa: E402
from gui.receptive_field import receptive_field, scaled_to  # noqa: E402


def click_node(qtbot, window, name: str, double: bool = False) -> None:
    """A real mouse click on node ``name``'s box in the graph view."""
    graph = window.graph
    item = graph.items_by_index[graph.graph_layout.index_of()[name]]
    graph.centerOn(item)
    qtbot.wait(10)
    point = graph.mapFromScene(item.sceneBoundingRect().center())
    clicker = QTest.mouseDClick if double else QTest.mouseClick
    if double:
        QTest.mouseClick(graph.viewport(), Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, point)
    clicker(graph.viewport(), Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, point)


def show_graph(qtbot, window) -> None:
    window.tabs.setCurrentWidget(window.graph)
    qtbot.waitUntil(lambda: window.graph.built, timeout=5000)


def test_the_graph_has_a_box_per_node_with_op_shape_and_parameters(qtbot, window):
    show_graph(qtbot, window)
    nodes = window.model.nodes
    items = window.graph.items_by_index
    assert [item.node.name for item in items] == [node.name for node in nodes]
    conv1 = items[0]
    op_line, shape_line, extra = conv1.lines()
    assert op_line.startswith("Conv") and "conv1" in op_line
    assert shape_line == "[1, 12, 28, 28]" and "312 params" in extra
    assert len(window.graph.graph_layout.edges) == len(nodes) - 1  # LeNet is a chain


def test_nodes_are_coloured_by_the_current_drawing(qtbot, window, draw_on, digit_path):
    show_graph(qtbot, window)
    assert all(item.activity is None for item in window.graph.items_by_index)
    draw_on(window.canvas, digit_path("7"))
    activity = window.session.prediction.activity
    assert set(activity) == {node.name for node in window.model.nodes}
    first = window.graph.items_by_index[0]
    assert first.activity is not None and first.value == pytest.approx(activity["conv1"])
    QTest.keyClick(window.canvas, Qt.Key.Key_Escape)
    assert all(item.activity is None for item in window.graph.items_by_index)


def test_clicking_a_node_selects_its_card_and_the_inspector_follows(qtbot, window, draw_on, digit_path):
    draw_on(window.canvas, digit_path("0"))
    show_graph(qtbot, window)
    click_node(qtbot, window, "conv2")
    assert window.session.selection == ("conv2", -1)
    assert window.graph.selected == 3
    card = next(card for card in window.activations.entries if card.node_name == "conv2")
    assert card.selected and sum(c.selected for c in window.activations.entries) == 1
    # double-click: the inspector opens on it
    click_node(qtbot, window, "pool1", double=True)
    inspector = window.activations.inspector
    assert inspector is not None and inspector.isVisible() and inspector.node_name == "pool1"
    # the inspector's next map moves the selection; the graph keeps the node
    inspector.next_button.click()
    assert window.session.selection == ("pool1", inspector.map_index) and inspector.map_index >= 0
    # a card click selects the node in the graph
    conv1 = window.activations.entries[0]
    QTest.mouseClick(conv1, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, conv1.rect().center())
    assert window.session.selection[0] == "conv1" and window.graph.selected == 0
    assert inspector.node_name == "conv1"


def test_the_inspector_steps_through_maps_and_shows_kernels_and_the_receptive_field(qtbot, window, draw_on,
                                                                                      digit_path):
    draw_on(window.canvas, digit_path("7"))
    window.activations.inspect("conv2", 0)
    inspector = window.activations.inspector
    assert inspector.map_index == 0
    inspector.next_button.click()
    assert inspector.map_index == 1
    inspector.previous_button.click()
    inspector.previous_button.click()
    assert inspector.map_index == 23  # wraps around: conv2 has 24 maps
    assert inspector.weights_label.pixmap() is not None and not inspector.weights_label.pixmap().isNull()
    assert "conv2.weight" in inspector.weights_caption.text() and "12 kernel" in inspector.weights_caption.text()
    # the receptive field of the unit shown (the most active one) is a 14x14 window of the drawing, or clipped
    unit = inspector.unit
    assert unit is not None and inspector.field_view.field is not None
    x, y, w, h = inspector.field_view.field
    assert w <= 14 and h <= 14 and 0 <= x and x + w <= 28
    inspector._choose_unit(5, 5)
    assert inspector.unit == (5, 5) and inspector.field_view.field == (8.0, 8.0, 14.0, 14.0)
    assert "rows 8–21" in inspector.field_caption.text()


def test_receptive_fields_follow_the_geometry():
    from gui.session import bundled_model_path
    from nn_core import load

    model = load(bundled_model_path())
    nodes = list(model.nodes)
    constants = frozenset(model.graph.constants)
    index = {node.name: i for i, node in enumerate(nodes)}
    assert receptive_field(nodes, index["conv1"], 10, 10, (28, 28), constants) == ((8, 12), (8, 12))
    assert receptive_field(nodes, index["conv1"], 0, 0, (28, 28), constants) == ((0, 2), (0, 2))  # padding
    assert receptive_field(nodes, index["pool1"], 3, 3, (28, 28), constants) == ((4, 9), (4, 9))
    assert receptive_field(nodes, index["fc1"], 0, 0, (28, 28), constants) == ((0, 27), (0, 27))
    assert scaled_to(((0, 111), (56, 167)), (224, 224)) == (7.0, 0.0, 14.0, 14.0)


def test_a_thousand_classes_show_the_top_k_with_their_names(qtbot):
    view = ProbabilitiesView()
    qtbot.addWidget(view)
    probabilities = np.random.default_rng(0).dirichlet(np.ones(1000))
    labels = [f"class {i}" for i in range(1000)]
    labels[int(np.argmax(probabilities))] = "golden retriever"
    view.set_prediction(probabilities, labels)
    view.resize(300, 420)
    shown = view.shown_classes()
    assert len(shown) == TOP_K and shown == list(np.argsort(probabilities)[::-1][:TOP_K])
    assert view.headline()[0].startswith("golden retriever")
    view.grab()  # paints without error
    small = ProbabilitiesView()
    qtbot.addWidget(small)
    small.set_prediction(np.full(10, 0.1), [str(i) for i in range(10)])
    assert small.shown_classes() == list(range(10))


def test_the_trace_is_skipped_while_only_the_model_table_shows(qtbot, window, draw_on, digit_path):
    window.tabs.setCurrentWidget(window.summary)
    assert not window.session.trace_wanted
    draw_on(window.canvas, digit_path("1"))
    assert window.probabilities is not None and not window.session.prediction.traced
    show_graph(qtbot, window)  # a view that shows the nodes appears: the drawing is traced now
    assert window.session.trace_wanted and window.session.prediction.traced
    assert window.graph.items_by_index[0].activity is not None


def test_the_window_fits_800_by_600(qtbot, window):
    window.resize(800, 600)
    qtbot.wait(20)
    assert window.minimumSizeHint().width() <= 800 and window.minimumSizeHint().height() <= 600
    assert window.width() == 800 and window.height() == 600
    # before anything is drawn the cards are compact placeholders, shown, with their names
    window.tabs.setCurrentWidget(window.activations)
    qtbot.wait(20)
    cards = window.activations.entries
    assert cards and all(card.isVisible() and card.height() <= 60 for card in cards)
    # the model table's columns fit its width (no horizontal scrolling to find the parameters)
    window.tabs.setCurrentWidget(window.summary)
    qtbot.wait(20)
    header = window.summary.table.header()
    assert sum(header.sectionSize(i) for i in range(header.count())) <= window.summary.table.viewport().width() + 2

