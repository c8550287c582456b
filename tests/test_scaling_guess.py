"""A model that declares no scaling has it auto-detected on open, marked as a guess; the user's choice wins over
a detection under way; a detection stops when the model changes. And error text says the file name once."""

from __future__ import annotations

import threading

from helpers import BUNDLED, ROOT

from gui.session import Session, clean_error, flatten_parentheses
from gui.settings import AppSettings, MemoryStore

MODELS = ROOT / "tests" / "models"
M11 = MODELS / "torch_avgpool_m11.onnx"  # no metadata; trained on -1..1


def new_session(store: MemoryStore | None = None) -> Session:
    return Session(AppSettings(store or MemoryStore()), predictor_mode="sync")


def pump_until(session: Session, condition, timeout: float = 60.0) -> None:
    stop = threading.Event()
    timer = threading.Timer(timeout, stop.set)
    timer.start()
    try:
        while not condition():
            assert not stop.is_set(), "timed out"
            session.process_pending(wait=0.02)
    finally:
        timer.cancel()


def test_a_model_without_scaling_metadata_is_guessed_on_open_and_marked_so():
    store = MemoryStore()
    session = new_session(store)
    seen = []
    session.events.scaling_changed.connect(lambda code, source: seen.append((code, source)))
    session.open_model(M11)
    assert session.wait_for_open(60)
    assert session.detecting and session.guessing and session.scaling_guessed  # 0..1 assumed meanwhile
    pump_until(session, lambda: not session.detecting)
    assert (session.adapter.scaling, session.adapter.scaling_source) == ("m11", "guessed")
    assert session.scaling_guessed and session.scaling_report.best == "m11" and seen == [("m11", "guessed")]
    assert session.settings.remembered_scalings() == {}  # a guess is not the user's choice: guessed again next time
    session.open_model(BUNDLED)  # declares its scaling: nothing to guess
    assert session.wait_for_open(60)
    assert not session.detecting and session.adapter.scaling_source == "metadata" and not session.scaling_guessed
    session.close()


def test_the_users_choice_during_the_guess_wins():
    session = new_session()
    detected = []
    session.events.scaling_detected.connect(detected.append)
    session.open_model(M11)
    assert session.wait_for_open(60) and session.detecting
    cancel = session._detect_cancel
    assert session.set_scaling("255", "user")  # picked before the detection's verdict is in
    assert not session.detecting and cancel.is_set()
    session.process_pending(wait=0.5)
    for _ in range(20):  # the worker's hand-over, if it was already queued, is dropped
        session.process_pending(wait=0.05)
    assert (session.adapter.scaling, session.adapter.scaling_source) == ("255", "user") and not detected
    assert not session.scaling_guessed and session.settings.scaling_for(session.model_key) == "255"
    session.close()


def test_the_detection_stops_when_the_model_changes():
    session = new_session()
    session.open_model(M11)
    assert session.wait_for_open(60) and session.detecting
    cancel, first = session._detect_cancel, session.adapter
    session.open_model(MODELS / "keras_nhwc_unsorted.onnx")  # no metadata either: guessed anew
    assert session.wait_for_open(60)
    assert cancel.is_set() and session._detect_cancel is not cancel and session.adapter is not first
    pump_until(session, lambda: not session.detecting)
    assert first.scaling == "01"  # the first model's verdict was dropped, not applied to it or the new one
    assert session.adapter.scaling_source == "guessed"
    session.close()


def test_asking_for_auto_detect_during_the_guess_keeps_and_remembers_its_verdict():
    session = new_session()
    session.open_model(M11)
    assert session.wait_for_open(60) and session.guessing
    assert session.auto_detect_scaling()  # Ctrl+D: the detection under way becomes the user's
    assert session.detecting and not session.guessing and not session.auto_detect_scaling()
    pump_until(session, lambda: not session.detecting)
    assert session.adapter.scaling_source == "auto-detect" and session.scaling_guessed
    assert session.settings.scaling_for(session.model_key) == "m11"
    session.close()


def test_no_guess_when_switched_off():
    session = new_session()
    session.guess_on_open = False
    session.open_model(M11)
    assert session.wait_for_open(60) and not session.detecting
    assert session.adapter.scaling_source == "default" and session.scaling_guessed  # assumed, still a guess
    session.close()


def test_error_text_names_the_file_once_without_nested_parentheses(tmp_path):
    page = tmp_path / "m.onnx"
    page.write_text("<!DOCTYPE html><html><head><title>m.onnx (GitHub)</title></head></html>")
    session = new_session()
    errors = []
    session.events.error.connect(errors.append)
    session.open_model(page)
    assert session.wait_for_open(60) is False
    message = errors[-1]
    assert message.startswith("Could not open m.onnx: not an ONNX file")
    assert message.count("m.onnx") == 1 and "HTML page" in message
    depth = deepest = 0
    for char in message:
        depth += (char == "(") - (char == ")")
        deepest = max(deepest, depth)
    assert deepest <= 1, message
    session.open_model(tmp_path / "missing.onnx")
    assert session.wait_for_open(60) is False
    assert errors[-1] == "Could not open missing.onnx: no such file"
    session.close()


def test_clean_error_drops_repeated_names_and_flattens_parentheses(tmp_path):
    path = tmp_path / "m.onnx"
    assert clean_error(f"{path}: m.onnx: broken (bad (very))", path) == "broken (bad, very)"
    assert clean_error("m.onnx loads but does not run: Conv failed", path) == "it loads but does not run: Conv failed"
    assert clean_error("other.onnx: fine", path) == "other.onnx: fine"
    assert flatten_parentheses("a (b (c) d) e (f)") == "a (b, c, d) e (f)"
    assert flatten_parentheses("unbalanced (a (b)") == "unbalanced (a (b)"
    assert flatten_parentheses("") == ""
