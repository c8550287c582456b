"""The saliency overlay in the real window: toggle and shortcut, live maps off the UI thread, a click on a bar
explains that class, "why 4 and not 9?", other model shapes, and the occlusion fallback with its note."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import MODELS
from PySide6.QtCore import QPoint, Qt
from PySide6.QtTest import QTest

from gui.explain import ExplainState, placement
from gui.session import Session


def test_saliency_is_none_on_an_empty_canvas_and_a_map_after_drawing(window, draw_on, digit_path):
    assert window.saliency is None
    draw_on(window.canvas, digit_path("7"))
    saliency = window.saliency
    assert isinstance(saliency, np.ndarray) and saliency.shape == (28, 28) and saliency.dtype == np.float32
    assert np.abs(saliency).max() > 0
    window.canvas.clear()
    assert window.saliency is None


def test_the_overlay_toggles_with_its_shortcut_and_follows_the_drawing(window, qtbot, draw_on, digit_path):
    assert window.canvas.overlay is None
    QTest.keyClick(window, Qt.Key.Key_X)
    assert window.explain_action.isChecked() and window.explaining.enabled
    draw_on(window.canvas, digit_path("1"))
    qtbot.waitUntil(lambda: window.explaining.shown is not None and window.canvas.overlay is not None, timeout=5000)
    first = window.explaining.shown
    assert first.explanation.target == int(np.argmax(window.probabilities))
    assert "Why 1?" in window.explain_bar.title.text()
    assert not window.explain_bar.note.isVisible()
    # the map lies over the strokes: the drawing's ink is inside the 28x28 field's square on the canvas
    where = first.placement
    xs = [p[0] for p in digit_path("1")]
    assert where.left < min(xs) and max(xs) < where.left + where.side
    window.canvas.clear()
    draw_on(window.canvas, digit_path("0"))
    qtbot.waitUntil(lambda: window.explaining.shown is not None and window.explaining.shown.key[0] ==
                    window.session.drawing, timeout=5000)
    assert window.explaining.shown.explanation.target == 0
    QTest.keyClick(window, Qt.Key.Key_X)
    assert not window.explaining.enabled and window.canvas.overlay is None


def test_clicking_a_bar_explains_that_class_and_a_close_call_explains_the_difference(window, qtbot, draw_on,
                                                                                    digit_path):
    draw_on(window.canvas, digit_path("7"))
    window.probability_view.repaint()
    view = window.probability_view
    top, row, classes = view._bar_geometry
    y = int(top + row * classes.index(9) + row / 2)
    QTest.mouseClick(view, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, QPoint(view.width() // 2, y))
    assert window.explaining.enabled and window.explaining.target == 9
    qtbot.waitUntil(lambda: window.explaining.shown is not None, timeout=5000)
    assert window.explaining.shown.explanation.target == 9
    assert window.saliency is not None
    # "why 7 and not 9?": the headline of a close call, or the "and not" box
    window.explain_class(7, 9)
    shown = window.explaining.current()
    assert (shown.explanation.target, shown.explanation.contrast) == (7, 9)
    assert "Why 7 and not 9?" in shown.title()
    window.probability_view.closeCallClicked.emit(4, 9)
    assert (window.explaining.target, window.explaining.contrast) == (4, 9)


def test_close_call_state_when_the_drawing_is_ambiguous():
    from gui.probabilities import close_call, headline

    p = np.array([0, 0, 0, 0, 0.48, 0, 0, 0, 0, 0.52])
    assert close_call(p) == (9, 4)
    assert headline(p, [str(i) for i in range(10)])[0] == "9 or 4?"
    assert close_call(np.eye(10)[3]) is None


@pytest.mark.parametrize("name,method", [("keras_nhwc_unsorted.onnx", "smoothgrad"),
                                         ("torch_avgpool_m11.onnx", "integrated_gradients")])
def test_other_model_shapes_are_explained(window, draw_on, digit_path, name, method):
    assert window.open_model(MODELS / name)
    window.explaining.set_method(method)
    draw_on(window.canvas, digit_path("0"))
    shown = window.explaining.current()
    assert shown.explanation.method == method and shown.explanation.note is None
    assert window.saliency.shape == (28, 28)


def test_a_model_the_engine_cannot_differentiate_falls_back_to_occlusion_with_a_note(window, qtbot, draw_on,
                                                                                      digit_path, tmp_path):
    from test_explain import quantized_model

    path = tmp_path / "quantized.onnx"
    quantized_model().save(path)
    assert window.open_model(path)
    window.set_explaining(True)
    draw_on(window.canvas, digit_path("7"))
    qtbot.waitUntil(lambda: window.explaining.shown is not None, timeout=5000)
    assert window.explaining.shown.explanation.method == "occlusion"
    assert window.explain_bar.note.isVisible() and "occlusion" in window.explain_bar.note.text()


def test_explain_state_without_qt_latest_drawing_wins(digit_path):
    """The Qt-free state with its worker thread: results for older drawings are dropped."""
    session = Session(predictor_mode="sync")
    from gui.session import bundled_model_path

    session.open_model(bundled_model_path())
    assert session.wait_for_open(30)
    state = ExplainState(session)
    seen = []
    state.events.explanation.connect(seen.append)
    state.set_enabled(True)
    for kind in ("1", "0", "7"):
        session.clear()
        session.draw(digit_path(kind))
    for _ in range(100):
        session.process_pending(0.05)
        if seen and seen[-1] is not None and seen[-1].key[0] == session.drawing:
            break
    final = [s for s in seen if s is not None]
    assert final and final[-1].key[0] == session.drawing and final[-1].explanation.target == 7
    assert all(s.key[0] <= session.drawing for s in final)
    state.close()
    session.close()


def test_placement_matches_the_rasterizer(digit_path):
    """The 28x28 field placed on the canvas: the drawing's ink, mapped through it, lands where the rasterizer
    put it (centre of mass within a pixel)."""
    from gui.rasterize import rasterize

    points = digit_path("7")
    image = rasterize([points], (280, 280))
    where = placement([points], (280, 280), None)
    ys, xs = np.indices(image.shape)
    com = np.array([(xs * image).sum(), (ys * image).sum()]) / image.sum()
    # the stroke's own points, into field coordinates: their mean is near the ink's centre of mass
    field = (np.array(points) - [where.left, where.top]) * 28 / where.side
    assert np.abs(field.mean(axis=0) - com).max() < 1.5
