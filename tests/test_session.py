"""The app without a screen: gui.session.Session opens models, numbers drawings and predicts them (no Qt)."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
from conftest import stroke_path
from helpers import BUNDLED, ROOT

from gui.events import Event, EventGroup, QueueDispatcher
from gui.prediction import Prediction
from gui.session import EVENTS, Session, bundled_model_path
from gui.settings import MAX_RECENT, AppSettings, MemoryStore

MODELS = ROOT / "tests" / "models"
OTHER = MODELS / "torch_avgpool_m11.onnx"


class Recorder:
    """Every event a session emits, in order, as (name, args)."""

    def __init__(self, session: Session) -> None:
        self.seen: list[tuple[str, tuple]] = []
        for event in session.events:
            event.connect(lambda *args, name=event.name: self.seen.append((name, args)))

    def names(self) -> list[str]:
        return [name for name, _ in self.seen]

    def last(self, name: str) -> tuple:
        return [args for event, args in self.seen if event == name][-1]


def opened_session(path: Path = BUNDLED, mode: str = "sync", store: MemoryStore | None = None) -> Session:
    session = Session(AppSettings(store or MemoryStore()), predictor_mode=mode)
    session.open_model(path)
    assert session.wait_for_open(timeout=60) is True, session.last_error
    return session


def wait_until(session: Session, condition, timeout: float = 30.0) -> None:
    deadline = threading.Event()
    timer = threading.Timer(timeout, deadline.set)
    timer.start()
    try:
        while not condition():
            assert not deadline.is_set(), "timed out"
            session.process_pending(wait=0.05)
    finally:
        timer.cancel()


@pytest.fixture
def session():
    opened = opened_session()
    yield opened
    opened.close()


def test_events_call_their_callbacks_in_order_and_can_be_disconnected():
    calls = []
    event = Event("changed")
    first = event.connect(lambda x: calls.append(("first", x)))
    event.connect(lambda x: calls.append(("second", x)))
    event.emit(1)
    event.disconnect(first)
    event.emit(2)
    assert calls == [("first", 1), ("second", 1), ("second", 2)]
    group = EventGroup("a", "b")
    assert [e.name for e in group] == ["a", "b"] and isinstance(group.a, Event)


def test_the_queue_dispatcher_runs_hand_overs_in_the_pumping_thread():
    dispatcher, ran_in = QueueDispatcher(), []
    worker = threading.Thread(target=lambda: dispatcher(lambda: ran_in.append(threading.get_ident())))
    worker.start()
    worker.join()
    assert ran_in == [] and dispatcher.run_pending(wait=1.0) == 1
    assert ran_in == [threading.get_ident()]


def test_a_drawn_one_is_read_as_one_without_a_screen(session):
    events, before = Recorder(session), session.drawing
    session.draw(stroke_path("1"))
    assert session.drawing == before + 1 == session.prediction.drawing and session.up_to_date
    assert str(int(np.argmax(session.probabilities))) == "1"
    assert events.names() == ["drawing_changed", "input_image", "prediction"]
    assert events.last("input_image")[0].shape == (28, 28)
    np.testing.assert_allclose(session.probabilities, session.adapter.predict(session.rasterize()), rtol=1e-6)


def test_clearing_shows_nothing_and_voids_the_predictions_in_flight(session):
    session.draw(stroke_path("7"))
    before_clear = session.prediction
    events = Recorder(session)
    session.clear()
    assert session.probabilities is None and events.last("prediction") == (None,)
    session.draw(stroke_path("1"))
    shown = session.prediction
    session._from_predictor(before_clear)  # a late result for the drawing before the clear
    assert session.prediction is shown


def test_latest_drawing_wins_even_when_results_arrive_out_of_order(session):
    session.draw(stroke_path("1"))
    session.draw(stroke_path("7"))
    newest = session.prediction
    assert newest.drawing == session.drawing

    def late(drawing: int) -> Prediction:
        return Prediction(newest.image, np.eye(10)[3], newest.labels, [], 0.0, session.predictor.generation,
                          drawing=drawing)

    for drawing in (newest.drawing - 1, newest.drawing):  # older or as old as the one shown: dropped
        worker = threading.Thread(target=session._from_predictor, args=(late(drawing),))
        worker.start()
        worker.join()
        session.process_pending()
        assert session.prediction is newest
    session.drawing += 1  # as a stroke would, without predicting it here
    session._from_predictor(late(session.drawing))  # a newer one is taken
    assert session.prediction.drawing == session.drawing and session.stale is False


def test_a_threaded_predictor_ends_on_the_latest_drawing():
    session = opened_session(mode="thread")
    try:
        events = Recorder(session)
        for kind in ("1", "7", "0"):
            session.clear()
            session.draw(stroke_path(kind))
        wait_until(session, lambda: session.up_to_date)
        shown = [args[0].drawing for name, args in events.seen if name == "prediction" and args[0] is not None]
        assert shown == sorted(shown) and shown[-1] == session.drawing  # never an older drawing after a newer
        np.testing.assert_allclose(session.probabilities, session.adapter.predict(session.rasterize()), rtol=1e-5)
    finally:
        session.close()


def test_a_model_switch_voids_the_old_model_and_predicts_the_drawing_again(session):
    session.draw(stroke_path("7"))
    session.select("conv1", 2)
    events = Recorder(session)
    session.open_model(OTHER)
    assert session.opening == OTHER and session.outcome() is None
    assert session.wait_for_open(timeout=60) is True
    assert session.model_path == OTHER and session.opening is None
    assert session.selection is None and ("selection_changed", (None, -1)) in events.seen
    assert events.names().index("model_changed") < events.names().index("prediction")
    assert session.prediction.generation == session.predictor.generation
    assert session.recent_models()[0] == str(OTHER.resolve())


def test_a_broken_file_is_reported_and_the_model_stays(session, tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x00not a model")
    model, events = session.model, Recorder(session)
    session.open_model(bad)
    assert session.wait_for_open(timeout=60) is False
    assert session.model is model and "bad.onnx" in session.last_error
    assert events.names() == ["opening", "error", "open_ended"] and events.last("open_ended")[1] is False


def test_the_latest_open_wins_and_a_superseded_or_cancelled_one_ends_false(session):
    events = Recorder(session)
    first = session.open_model(OTHER)
    second = session.open_model(BUNDLED)
    assert session.outcome(first) is False and ("open_ended", (first, False)) in events.seen
    assert session.wait_for_open(timeout=60) is True and session.model_path == BUNDLED
    third = session.open_model(OTHER)
    assert session.cancel_open() == OTHER and session.outcome(third) is False and session.opening is None
    session.process_pending(wait=0.5)
    assert session.model_path == BUNDLED and session.outcome(second) is True


def test_scaling_is_remembered_per_model_and_re_predicts(tmp_path):
    store = MemoryStore()
    session = opened_session(OTHER, store=store)
    session.draw(stroke_path("1"))
    before = session.prediction
    assert session.set_scaling("m11") and session.adapter.scaling == "m11"
    assert session.prediction is not before and session.prediction.drawing == session.drawing
    assert not session.set_scaling("nonsense")
    session.close()
    again = opened_session(OTHER, store=store)
    assert (again.adapter.scaling, again.adapter.scaling_source) == ("m11", "remembered")
    again.close()


def test_auto_detect_runs_in_the_background_and_keeps_the_best():
    session = opened_session(OTHER)
    events = Recorder(session)
    assert session.adapter.scaling == "01" and session.auto_detect_scaling()
    assert not session.auto_detect_scaling()  # one at a time
    wait_until(session, lambda: not session.detecting, timeout=60)
    assert session.adapter.scaling == "m11" and events.last("scaling_detected")[0].best == "m11"
    assert session.settings.scaling_for(session.model_key) == "m11"
    session.close()


def test_selection_events_only_on_change(session):
    events = Recorder(session)
    session.select("conv1", 0)
    session.select("conv1", 0)
    session.select(None)
    assert events.seen == [("selection_changed", ("conv1", 0)), ("selection_changed", (None, -1))]


def test_settings_keep_recent_files_scalings_and_pen_width(tmp_path):
    settings = AppSettings(MemoryStore({"recentModels": "/one.onnx", "scaling/abc": "255", "scaling/x": "bad"}))
    assert settings.recent_models() == ["/one.onnx"]  # QSettings' lone string for a one-element list
    for i in range(MAX_RECENT + 2):
        recent = settings.remember_recent(tmp_path / f"{i}.onnx")
    assert len(recent) == MAX_RECENT and recent[0] == str((tmp_path / f"{MAX_RECENT + 1}.onnx").resolve())
    assert settings.remembered_scalings() == {"abc": "255"}
    assert settings.pen_width() is None
    settings.set_pen_width(12)
    assert settings.pen_width() == 12.0


def test_every_event_is_documented_and_the_bundled_model_is_found():
    assert {event.name for event in Session().events} == set(EVENTS)
    assert bundled_model_path().name == "lenet5.onnx"
