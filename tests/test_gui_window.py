"""The whole app, driven with real mouse and keyboard events (offscreen)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

pytest.importorskip("pytestqt")

from PySide6.QtCore import QMimeData, QPoint, QPointF, Qt, QUrl  # noqa: E402
from PySide6.QtGui import QDropEvent  # noqa: E402
from PySide6.QtTest import QTest  # noqa: E402

from gui import MainWindow  # noqa: E402
from gui.rasterize import rasterize  # noqa: E402

MODELS = Path(__file__).resolve().parent / "models"
SHIPPED = sorted(MODELS.glob("*.onnx"))


def key(widget, key, modifiers=Qt.KeyboardModifier.NoModifier) -> None:
    QTest.keyClick(widget, key, modifiers)


# --- drawing and predicting ----------------------------------------------------------------------------------
@pytest.mark.parametrize("digit", ["1", "0", "7"])
def test_drawn_digits_are_recognised(window, draw_on, digit_path, digit):
    draw_on(window.canvas, digit_path(digit))
    probabilities = window.probabilities
    assert probabilities is not None and probabilities.shape == (10,)
    assert probabilities.sum() == pytest.approx(1.0)
    assert str(int(np.argmax(probabilities))) == digit
    assert window.probability_view.headline()[0].startswith(digit)


def test_probabilities_update_while_the_mouse_is_still_down(window, draw_on, digit_path):
    seen = draw_on(window.canvas, digit_path("7"), during=lambda i: window.probabilities)
    during = [p for p in seen if p is not None]
    assert len(during) >= len(seen) - 1  # a prediction after (nearly) every move, before the release
    assert len({p.tobytes() for p in during}) > len(during) // 2  # and they change as the stroke grows


def test_empty_canvas_shows_no_prediction(window, draw_on, digit_path):
    assert window.probabilities is None
    assert window.probability_view.headline()[0] == "–"
    draw_on(window.canvas, digit_path("1"))
    assert window.probabilities is not None
    key(window.canvas, Qt.Key.Key_Escape)
    assert window.probabilities is None and window.probability_view.headline()[0] == "–"
    assert all(not card._has_values for card in window.activations.entries)


def test_activation_view_has_one_entry_per_node_with_the_traced_shapes(window, draw_on, digit_path):
    draw_on(window.canvas, digit_path("0"))
    entries = window.activations.entries
    model = window.model
    assert [card.node_name for card in entries] == [node.name for node in model.nodes]
    # trace the same picture independently and compare every node's output shapes
    strokes = [list(s.points) for s in window.document.visible_strokes()]
    image = rasterize(strokes, window.document.size, pen_width=window.document.ink_pen_width())
    _, records = model.run_traced(window.adapter.make_feeds(image))
    assert [card.shapes for card in entries] == [{k: v.shape for k, v in r.outputs.items()} for r in records]
    convs = [card for card in entries if card.op_type == "Conv"]
    assert convs and all(card.kind() == "maps" for card in convs)


def test_undo_redo_and_clear_shortcuts(window, draw_on, digit_path):
    canvas = window.canvas
    draw_on(canvas, digit_path("1"))
    draw_on(canvas, [(60, 60), (200, 60)])
    assert len(window.document.strokes) == 2
    key(canvas, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    assert len(window.document.strokes) == 1
    key(canvas, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.ShiftModifier)
    assert len(window.document.strokes) == 2
    key(canvas, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    key(canvas, Qt.Key.Key_Y, Qt.KeyboardModifier.ControlModifier)
    assert len(window.document.strokes) == 2
    key(canvas, Qt.Key.Key_Delete)
    assert window.document.strokes == [] and window.probabilities is None
    key(canvas, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)  # clearing is undoable
    assert len(window.document.strokes) == 2 and window.probabilities is not None


def test_undo_restores_the_earlier_prediction(window, draw_on, digit_path):
    draw_on(window.canvas, digit_path("1"))
    first = window.probabilities.copy()
    draw_on(window.canvas, [(80, 60), (200, 60)])
    assert not np.allclose(window.probabilities, first)
    key(window.canvas, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    np.testing.assert_allclose(window.probabilities, first, rtol=1e-5, atol=1e-7)


def test_eraser_and_pen_width_keys(window, draw_on, digit_path):
    canvas = window.canvas
    width = canvas.pen_width
    key(canvas, Qt.Key.Key_BracketRight)
    assert canvas.pen_width > width and window.pen_slider.value() == round(canvas.pen_width)
    key(canvas, Qt.Key.Key_BracketLeft)
    key(canvas, Qt.Key.Key_BracketLeft)
    assert canvas.pen_width < width
    draw_on(canvas, [(40, 140), (240, 140)])
    key(canvas, Qt.Key.Key_E)
    assert canvas.eraser and window.eraser_action.isChecked()
    draw_on(canvas, [(140, 60), (140, 220)])
    assert len(window.document.visible_strokes()) == 2  # the bar is cut in two
    key(canvas, Qt.Key.Key_E)
    assert not canvas.eraser


def test_canvas_scales_with_the_window(window, draw_on):
    window.resize(1280, 800)
    QTest.qWait(10)
    draw_on(window.canvas, [(70, 70), (210, 210)])
    window.resize(1000, 700)
    QTest.qWait(10)
    draw_on(window.canvas, [(70, 210), (210, 70)])
    first, second = window.document.strokes
    # the same canvas coordinates whatever the widget size (within a pixel of rounding to screen pixels)
    assert first.points[0] == pytest.approx((70, 70), abs=1.5) and second.points[0] == pytest.approx((70, 210),
                                                                                                      abs=1.5)


# --- opening models ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_shipped_models_open_and_predict(window, draw_on, digit_path, path):
    assert window.open_model(path), window.last_error
    assert window.model_path == path and not window.error_banner.isVisible()
    assert window.activations.node_count == len(window.model.nodes)
    assert len(window.activations.entries) == min(len(window.model.nodes), window.activations.pages.size)
    draw_on(window.canvas, digit_path("1"))
    probabilities = window.probabilities
    assert probabilities is not None and probabilities.shape == (10,)
    assert probabilities.sum() == pytest.approx(1.0) and np.all(probabilities >= 0)
    assert str(path.resolve()) == window.recent_models()[0]


def _not_onnx(tmp_path: Path) -> Path:
    path = tmp_path / "notes.onnx"
    path.write_text("<html><body>This is a saved web page, not a model</body></html>")
    return path


def _truncated(tmp_path: Path) -> Path:
    data = (MODELS / "tf_mlp_flat784.onnx").read_bytes()
    path = tmp_path / "truncated.onnx"
    path.write_bytes(data[: len(data) // 2])
    return path


def _unsupported_operator(tmp_path: Path) -> Path:
    graph = helper.make_graph([helper.make_node("TotallyNewOp", ["x"], ["y"], domain="com.example")], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 28, 28])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13),
                                                    helper.make_opsetid("com.example", 1)])
    path = tmp_path / "unsupported.onnx"
    onnx.save(model, path)
    return path


def _non_image_input(tmp_path: Path) -> Path:
    graph = helper.make_graph([helper.make_node("Softmax", ["features"], ["y"], axis=1)], "g",
                              [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])])
    path = tmp_path / "iris.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)
    return path


def _missing(tmp_path: Path) -> Path:
    return tmp_path / "does_not_exist.onnx"


@pytest.mark.parametrize("make_bad_file", [_not_onnx, _truncated, _unsupported_operator, _non_image_input, _missing])
def test_failed_open_reports_inline_and_keeps_the_previous_model(window, draw_on, digit_path, tmp_path,
                                                                 make_bad_file):
    draw_on(window.canvas, digit_path("7"))
    before = window.probabilities.copy()
    previous_model, previous_path = window.model, window.model_path
    bad = make_bad_file(tmp_path)
    assert window.open_model(bad) is False
    assert bad.name in window.last_error
    assert window.error_banner.isVisible() and bad.name in window.error_label.text()
    assert window.model is previous_model and window.model_path == previous_path
    np.testing.assert_array_equal(window.probabilities, before)
    key(window.canvas, Qt.Key.Key_Escape)
    draw_on(window.canvas, digit_path("1"))  # the previous model still works
    assert str(int(np.argmax(window.probabilities))) == "1"
    assert str(bad.resolve()) not in window.recent_models()


def test_unsupported_operator_error_names_the_operator(window, tmp_path):
    assert not window.open_model(_unsupported_operator(tmp_path))
    assert "TotallyNewOp" in window.last_error


def test_a_successful_open_hides_an_earlier_error(window, tmp_path):
    assert not window.open_model(_not_onnx(tmp_path))
    assert window.open_model(MODELS / "torch_avgpool_m11.onnx")
    assert not window.error_banner.isVisible() and window.last_error is None


def test_dropping_a_model_file_opens_it(window, qtbot, tmp_path):
    target = tmp_path / "dropped.onnx"
    shutil.copy(MODELS / "keras_nhwc_unsorted.onnx", target)
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(target))])
    event = QDropEvent(QPointF(100, 100), Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton,
                       Qt.KeyboardModifier.NoModifier)
    window.dropEvent(event)
    qtbot.waitUntil(lambda: window.model_path == target, timeout=5000)


# --- scaling ------------------------------------------------------------------------------------------------
def test_scaling_choice_is_remembered_per_model(qtbot, settings, activate, tmp_path):
    path = MODELS / "torch_avgpool_m11.onnx"
    first = MainWindow(path, settings=settings, predictor_mode="sync")
    qtbot.addWidget(first)
    activate(first)
    assert first.session.scaling_guessed  # the file declares none: 0..1 assumed while it is auto-detected
    key(first, Qt.Key.Key_3, Qt.KeyboardModifier.ControlModifier)  # Ctrl+3 = the third scaling, m11
    assert first.adapter.scaling == "m11" and first.scaling_combo.currentData() == "m11"
    first.close()
    renamed = tmp_path / "renamed.onnx"  # remembered by content, not by file name
    shutil.copy(path, renamed)
    second = MainWindow(renamed, settings=settings, predictor_mode="sync")
    qtbot.addWidget(second)
    assert (second.adapter.scaling, second.adapter.scaling_source) == ("m11", "remembered")
    assert second.open_model(MODELS / "keras_nhwc_unsorted.onnx")
    assert second.adapter.scaling == "01"  # another model has its own choice


def test_bundled_model_scaling_comes_from_its_metadata(window):
    declared = window.model.metadata.get("input_scale")
    if declared is None:
        pytest.skip("the bundled model declares no input_scale")
    assert (window.adapter.scaling, window.adapter.scaling_source) == (declared, "metadata")


def test_auto_detect_button_picks_and_remembers_the_scaling(qtbot, settings):
    window = MainWindow(MODELS / "torch_avgpool_m11.onnx", settings=settings, predictor_mode="sync")
    qtbot.addWidget(window)
    assert window.adapter.scaling == "01"
    window.autodetect_action.trigger()
    qtbot.waitUntil(lambda: window.adapter.scaling == "m11", timeout=30000)
    assert window.autodetect_action.isEnabled()
    assert "m11" in window.statusBar().currentMessage()
    assert settings.value(f"scaling/{window._model_key}") == "m11"


# --- threading ----------------------------------------------------------------------------------------------
def test_threaded_predictor_delivers_the_latest_drawing(qtbot, settings, activate, draw_on, digit_path):
    window = MainWindow(None, settings=settings, predictor_mode="thread")
    qtbot.addWidget(window)
    activate(window)
    draw_on(window.canvas, digit_path("1"))
    qtbot.waitUntil(lambda: window.session.up_to_date and window.probabilities is not None, timeout=10000)
    assert window.session.prediction.drawing == window.session.drawing  # the latest drawing's, not an older one
    strokes = [list(s.points) for s in window.document.visible_strokes()]
    final = rasterize(strokes, window.document.size, pen_width=window.document.ink_pen_width())
    np.testing.assert_allclose(window.probabilities, window.adapter.predict(final), rtol=1e-5, atol=1e-7)
    window.close()


def test_a_threaded_traced_run_brings_the_pictures_of_the_cards_in_sight(qtbot, settings, activate, draw_on,
                                                                          digit_path):
    window = MainWindow(None, settings=settings, predictor_mode="thread")
    qtbot.addWidget(window)
    activate(window)
    window.tabs.setCurrentWidget(window.activations)
    qtbot.waitUntil(lambda: not window.activations.building, timeout=10000)
    # the first values make the cards taller and bring the scroll bar, which narrows them: a run prepared before
    # that has pictures for the old width (those cards render themselves), so the check is on a later drawing
    view = window.activations
    for digit in ("7", "1"):
        draw_on(window.canvas, digit_path(digit))
        qtbot.waitUntil(lambda: window.session.up_to_date and window.session.prediction.traced, timeout=10000)
        qtbot.wait(50)  # the layout the new values asked for
        qtbot.waitUntil(lambda: view._card_width == view.entries[0].width(), timeout=5000)
    prepared = window.session.prediction.prepared["activations"]
    pictured = [index for index, card in prepared.items() if card.picture is not None]
    assert pictured and len(prepared) == view.node_count  # LeNet's nodes fit on one page
    for index in pictured:
        assert view.entries[index]._rendered() is prepared[index].picture  # as made on the worker, not rendered
    window.close()


# --- settings and state -------------------------------------------------------------------------------------
def test_window_state_and_pen_width_are_saved(qtbot, settings):
    window = MainWindow(None, settings=settings)
    qtbot.addWidget(window)
    window.canvas.set_pen_width(31)
    window.close()
    assert not settings.value("window/geometry").isEmpty()
    again = MainWindow(None, settings=settings)
    qtbot.addWidget(again)
    assert again.canvas.pen_width == pytest.approx(31)


def test_readable_at_1280x800(window):
    window.resize(1280, 800)
    QTest.qWait(20)
    assert window.canvas.drawing_rect().width() >= 380
    assert window.probability_view.height() >= 250 and window.activations.width() >= 300


# --- the PySide6 None-refcount trap --------------------------------------------------------------------------
@pytest.mark.skipif(sys.version_info >= (3, 12), reason="None is immortal from Python 3.12 on")
def test_void_qt_calls_do_not_leak_references_to_none(window):
    """PySide6 6.12.0 on Python < 3.12 dropped a reference to None on every call returning nothing; a drawing
    app calls update() per mouse move and died with 'none_dealloc' after a while."""
    canvas = window.canvas
    before = sys.getrefcount(None)
    for i in range(20_000):
        canvas.update()
        QTest.mouseMove(canvas, QPoint(10 + i % 50, 10 + i % 70))
    after = sys.getrefcount(None)
    assert abs(after - before) < 1000


# --- a file that cannot be opened at start-up -------------------------------------------------------------------
@pytest.mark.parametrize("background", [True, False], ids=["python -m gui missing.onnx", "MainWindow(missing)"])
def test_a_missing_model_at_start_falls_back_to_the_bundled_one_with_the_error_shown(qtbot, settings, tmp_path,
                                                                                      background):
    from gui.__main__ import create_window

    missing = tmp_path / "missing.onnx"
    if background:
        window = create_window(str(missing), settings=settings, interactive=False)
    else:
        window = MainWindow(missing, settings=settings)
    qtbot.addWidget(window)
    window.show()
    # in the background the file's open ends last (refused); else the bundled model's, opened after the refusal
    assert window.wait_until_opened(timeout=30) is (not background)
    assert window.model is not None and window.model_path.name == "lenet5.onnx"
    assert window.error_banner.isVisible() and "missing.onnx" in window.error_label.text()
    window.close()
