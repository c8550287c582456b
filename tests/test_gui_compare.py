"""Two models side by side: the comparison logic without a screen (gui.comparison), then the "Compare with…"
window over the real app (the float bundled model against its int8 version, a broken second file)."""

from __future__ import annotations

import numpy as np
import pytest
from PySide6.QtCore import Qt
from PySide6.QtTest import QTest

from gui.comparison import Comparer, Side, compare, summary_lines
from gui.events import QueueDispatcher
from gui.session import bundled_model_path
from nn_core.interface import ModelAdapter, load_samples

LABELS = [str(i) for i in range(10)]


def side(name: str, probabilities, seconds=0.001, size=1000) -> Side:
    return Side(name, np.asarray(probabilities, np.float64), LABELS, seconds, size)


def one_hot(index: int, high: float = 0.9) -> np.ndarray:
    p = np.full(10, (1 - high) / 9)
    p[index] = high
    return p


def test_same_top_class_and_small_gaps_agree():
    a, b = one_hot(7), one_hot(7, 0.88)
    result = compare(side("float", a), side("int8", b, seconds=0.0005, size=250))
    assert result.same_top and not result.disagree
    assert result.max_gap_class == 7 and result.max_gap == pytest.approx(0.02)
    assert result.flagged == []
    assert result.verdict().startswith("agree: both say 7")
    assert result.speedup == pytest.approx(2.0) and result.size_ratio == pytest.approx(0.25)
    lines = summary_lines(result)
    assert "int8 is 2.00x as fast" in lines[-1] and "25%" in lines[-1]


def test_a_different_top_class_is_a_disagreement_and_both_tops_are_flagged():
    result = compare(side("a", one_hot(4, 0.6)), side("b", one_hot(9, 0.55)))
    assert result.same_top is False and result.disagree
    assert set(result.flagged) == {4, 9}
    assert result.verdict() == "disagree: a says 4, b says 9"


def test_a_probability_gap_over_the_threshold_is_a_disagreement_with_the_same_answer():
    a, b = one_hot(3, 0.9), one_hot(3, 0.7)
    result = compare(side("a", a), side("b", b), threshold=0.1)
    assert result.same_top and result.disagree and result.flagged == [3]
    assert "differ by up to 20.0 points on 3" in result.verdict()
    assert not compare(side("a", a), side("b", b), threshold=0.25).disagree


def test_errors_and_different_class_counts_are_reported():
    failed = Side("broken", None, [], 0.0, 10, "ModelError: boom")
    result = compare(side("a", one_hot(1)), failed)
    assert not result.comparable and not result.disagree
    assert "broken failed on this drawing: ModelError: boom" in result.verdict()
    short = compare(side("a", one_hot(1)), Side("b", np.array([0.1, 0.9]), ["0", "1"], 0.001, 10))
    assert short.class_count_differs and len(short.rows) == 10 and short.rows[5].second is None
    assert "different numbers of classes" in short.verdict()


@pytest.fixture(scope="module")
def int8_model(tmp_path_factory):
    from nn_core.quantize import quantize

    path = tmp_path_factory.mktemp("compare") / "lenet5.int8.onnx"
    quantize(bundled_model_path(), path)
    return path


def pump_until(dispatcher: QueueDispatcher, condition, timeout: float = 60.0) -> bool:
    import time

    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        dispatcher.run_pending(wait=0.05)
    return True


def test_the_comparer_opens_the_second_model_off_thread_and_compares_a_drawing(int8_model, tmp_path):
    import nn_core

    dispatcher = QueueDispatcher()
    comparer = Comparer(dispatcher)
    seen = {"opened": [], "failed": [], "compared": []}
    comparer.events.opened.connect(seen["opened"].append)
    comparer.events.open_failed.connect(lambda path, message: seen["failed"].append((path, message)))
    comparer.events.compared.connect(seen["compared"].append)
    main = ModelAdapter(nn_core.load(bundled_model_path()))
    comparer.set_first("lenet5.onnx", main, bundled_model_path())
    comparer.open(int8_model)
    assert pump_until(dispatcher, lambda: seen["opened"])
    assert comparer.second.name == "lenet5.int8.onnx"
    assert comparer.second.size_bytes <= 0.3 * comparer.first.size_bytes

    images, labels = load_samples()
    result = comparer.compare_now(images[0], drawing=1)
    assert result.same_top and result.first.top == labels[0]
    assert result.first.seconds > 0 and result.second.seconds > 0
    assert result.max_gap < 0.05  # the int8 model is close to the float one on a clear digit

    comparer.submit(images[1], drawing=2)
    assert pump_until(dispatcher, lambda: seen["compared"])
    assert seen["compared"][-1].drawing == 2 and comparer.last is seen["compared"][-1]

    # a broken second file: an error event; the working second model and the first stay
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not a model at all")
    comparer.open(broken)
    assert pump_until(dispatcher, lambda: seen["failed"])
    assert seen["failed"][0][0] == broken and seen["failed"][0][1]
    assert comparer.second.name == "lenet5.int8.onnx" and comparer.first.adapter is main
    comparer.shutdown()


def test_the_compare_window_shows_both_models_on_the_drawing(window, qtbot, draw_on, digit_path, int8_model,
                                                            tmp_path):
    from gui.compare_view import CompareView, open_compare

    main_model = window.model
    QTest.keyClick(window, Qt.Key.Key_C, Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.ShiftModifier)
    view = window.compare_view
    assert isinstance(view, CompareView) and view.isVisible()
    assert open_compare(window) is view  # one compare window
    assert "lenet5.onnx" in view.first_label.text()

    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"\x08\x01garbage")
    view.open_second(broken)
    qtbot.waitUntil(lambda: "cannot open broken.onnx" in view.status.text(), timeout=30000)
    assert window.model is main_model and window.last_error is None

    view.open_second(int8_model)
    qtbot.waitUntil(lambda: view.comparer.second is not None, timeout=30000)
    assert "lenet5.int8.onnx" in view.second_label.text() and view.status.text() == ""
    draw_on(window.canvas, digit_path("7"))
    qtbot.waitUntil(lambda: view.comparison is not None and view.comparison.drawing == window.session.drawing,
                    timeout=30000)
    comparison = view.comparison
    assert comparison.first.top == int(np.argmax(window.probabilities))
    assert view.table.rowCount() == 10
    top = comparison.first.top
    assert view.table.item(top, 1).text() == f"{comparison.first.probabilities[top] * 100:.2f}"
    assert "ms per drawing" in view.details.text() and "KiB" in view.details.text()
    assert view.verdict.text() == comparison.verdict()
    assert window.model is main_model
    window.canvas.clear()
    qtbot.waitUntil(lambda: view.table.rowCount() == 0, timeout=5000)
    view.shutdown()
