"""The reliability diagram's numbers (gui.calibration, no Qt), the close-call state, and the model view showing
the diagram (gui.reliability in gui.summary)."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import BUNDLED, ROOT

from gui.calibration import (
    MNIST_SOURCE,
    PEN_SOURCE,
    CalibrationState,
    calibration_samples,
    describe_temperature,
    reliability,
)
from gui.session import Session
from nn_core.evaluate import expected_calibration_error
from nn_core.interface import ModelAdapter, softmax, to_probabilities


def test_reliability_bins_and_ece_match_the_engines_definition():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(400, 10)) * 3
    probabilities = np.stack([softmax(row) for row in logits])
    labels = np.where(rng.random(400) < 0.7, probabilities.argmax(axis=1), rng.integers(0, 10, 400))
    result = reliability(probabilities, labels, bins=10, sources=np.array(["a"] * 300 + ["b"] * 100))
    assert result.ece == pytest.approx(expected_calibration_error(probabilities, labels, bins=10))
    assert sum(row.count for row in result.bins) == 400 and result.samples == 400
    assert result.sources == {"a": 300, "b": 100} and set(result.ece_by_source) == {"a", "b"}
    for row in result.bins:
        if row.count:
            assert row.low <= row.confidence <= row.high + 1e-12 and 0 <= row.accuracy <= 1
    perfect = reliability(np.eye(10)[labels], labels)
    assert perfect.ece == 0 and perfect.accuracy == 1 and perfect.bins[-1].count == 400


def test_the_samples_are_mnist_test_digits_and_the_pen_recordings():
    images, labels, sources = calibration_samples()
    assert images.shape[1:] == (28, 28) and len(images) == len(labels) == len(sources)
    assert (sources == MNIST_SOURCE).sum() >= 50 and 0 <= images.min() and images.max() <= 1
    if (ROOT / "tests" / "data" / "strokes").is_dir():
        assert (sources == PEN_SOURCE).sum() == 30


def test_the_session_state_measures_each_model_and_scaling_off_the_ui_thread():
    session = Session(predictor_mode="sync")
    state = CalibrationState(session)
    shown = []
    state.events.reliability.connect(shown.append)
    session.open_model(BUNDLED)
    assert session.wait_for_open(60)
    result = state.wait(60)
    assert result is not None and shown[-1] is result and result.samples >= 50
    assert result.ece < 0.05 and result.accuracy > 0.95  # the bundled model on clean digits
    assert "ECE" in result.summary() and result.temperature
    session.set_scaling("255")  # a different feed: measured again, the old figures dropped at once
    assert shown[-1] is None and state.measuring
    worse = state.wait(60)
    assert worse is not None and worse.accuracy < result.accuracy
    session.close()


def test_a_temperature_in_the_metadata_is_described_and_changes_the_figures():
    import nn_core

    model = nn_core.load(BUNDLED)
    plain = ModelAdapter(model)
    model.metadata["temperature"] = "4"
    warm = ModelAdapter(model)
    assert describe_temperature(warm) == "temperature 4 from the file's metadata"
    assert describe_temperature(plain).startswith(("not calibrated", "temperature"))  # folded, once retrained
    from gui.calibration import measure

    assert measure(warm).mean_confidence < measure(plain).mean_confidence


def test_close_call_appears_when_the_top_two_are_close():
    from gui.probabilities import close_call, headline

    labels = [str(i) for i in range(10)]
    p = np.full(10, 0.005)
    p[4], p[9] = 0.56, 0.40
    assert close_call(p / p.sum()) == (4, 9) and headline(p / p.sum(), labels)[0] == "4 or 9?"
    p[4], p[9] = 0.90, 0.06
    assert close_call(p / p.sum()) is None and headline(p / p.sum(), labels)[0] == "4"
    # an overconfident "9, 98 %" becomes a close call once a temperature softens it
    logits = np.full(10, -10.0)
    logits[9], logits[4] = 6.0, 2.0
    assert close_call(to_probabilities(logits, "logits")) is None and to_probabilities(logits, "logits")[9] > 0.98
    assert close_call(to_probabilities(logits, "logits", 6.0)) == (9, 4)


def test_the_model_view_shows_the_reliability_diagram(window, qtbot):
    summary = window.summary
    qtbot.waitUntil(lambda: window.calibration.current is not None, timeout=30000)
    view = summary.reliability
    assert view.reliability is window.calibration.current and "ECE" in view.caption()
    assert "Calibration" in summary.header.text()
    window.tabs.setCurrentWidget(summary)
    view.resize(360, 190)
    image = view.grab().toImage()
    assert not image.isNull() and image.width() > 0
    assert "confidence" in view.toolTip()


def test_the_guessed_badge_in_the_window(qtbot, settings):
    from gui.window import MainWindow

    window = MainWindow(ROOT / "tests" / "models" / "torch_avgpool_m11.onnx", settings=settings,
                        predictor_mode="sync")
    qtbot.addWidget(window)
    assert window.scaling_badge.isVisibleTo(window)  # guessing…, then guessed
    qtbot.waitUntil(lambda: not window.session.detecting, timeout=30000)
    assert window.adapter.scaling == "m11" and window.scaling_badge.text() == "guessed"
    assert "m11" in window.scaling_badge.toolTip() and window.scaling_badge.isVisibleTo(window)
    assert "guessed" in window.summary.header.text()
    window.set_scaling("m11")  # the user confirms: no longer a guess
    assert not window.scaling_badge.isVisibleTo(window)
    window.open_model(ROOT / "assets" / "lenet5.onnx")
    assert not window.scaling_badge.isVisibleTo(window)
    window.close()
