"""Long UI-thread work in slices (gui.qt_bridge.Steps): the event loop runs between them; jobs are replaced,
cancelled and finished on demand. And the big-model views built that way: the graph, the activation cards, the
window's model views, the reliability measured only when wanted."""

from __future__ import annotations

import gc
import weakref

import numpy as np
import pytest

pytest.importorskip("pytestqt")

from helpers import ROOT  # noqa: E402
from PySide6.QtCore import QTimer  # noqa: E402

from gui.graph_layout import layout_graph  # noqa: E402
from gui.graph_view import GraphView  # noqa: E402
from gui.qt_bridge import Steps, shared_steps  # noqa: E402
from nn_core.graph import NodeInfo  # noqa: E402


def counting_job(log: list, steps: int, name: str = "job"):
    try:
        for i in range(steps):
            log.append((name, i))
            yield
    finally:
        log.append((name, "closed"))


def test_a_hand_over_runs_on_the_ui_thread_unless_its_dispatcher_was_deleted_meanwhile(qtbot):
    import threading

    import shiboken6

    from gui.qt_bridge import QtDispatcher

    kept, dropped = QtDispatcher(), QtDispatcher()
    ran: list[tuple[str, int]] = []
    workers = [threading.Thread(target=lambda d=d, tag=tag: d(lambda: ran.append((tag, threading.get_ident()))))
               for d, tag in ((kept, "kept"), (dropped, "dropped"))]
    for worker in workers:
        worker.start()
        worker.join()
    shiboken6.delete(dropped)  # its owner went away before the event loop ran
    qtbot.waitUntil(lambda: bool(ran), timeout=5000)
    qtbot.wait(20)
    assert ran == [("kept", threading.get_ident())]


def test_a_job_runs_between_events_not_at_once(qtbot):
    steps = Steps(budget=0.0)  # one step per event-loop turn
    log: list = []
    steps.start("k", counting_job(log, 6))
    assert log == [] and steps.pending("k")  # nothing runs before the event loop does
    seen: list[int] = []
    other = QTimer()  # other work of the event loop: how far the job had got each time it ran
    other.timeout.connect(lambda: seen.append(len(log)))
    other.start(0)
    qtbot.waitUntil(lambda: not steps.pending(), timeout=5000)
    other.stop()
    assert [entry for entry in log if entry[1] != "closed"] == [("job", i) for i in range(6)]
    assert any(0 < count < 6 for count in seen)  # it ran while the job was part-way through


def test_before_turn_is_called_once_per_turn_that_runs_jobs(qtbot):
    steps = Steps(budget=0.0)
    log: list = []
    calls: list[int] = []
    steps.before_turn = lambda: calls.append(len(log))  # how far the job had got at each turn's start
    steps.start("k", counting_job(log, 3))
    qtbot.waitUntil(lambda: not steps.pending(), timeout=5000)
    qtbot.wait(20)
    assert calls == [0, 1, 2, 3]  # one step a turn, the fourth ends the job; none once no job is left


def test_a_window_puts_heap_trims_off_while_its_ui_works_through_jobs(qtbot):
    from gui.model_opening import MEMORY
    from gui.window import MainWindow

    window = MainWindow(None)
    qtbot.addWidget(window)
    assert shared_steps().before_turn == MEMORY.postpone


def test_a_job_is_replaced_by_one_under_the_same_key_and_done_is_called_once_at_its_end(qtbot):
    steps = Steps(budget=0.0)
    log: list = []
    ends: list[str] = []
    steps.start("k", counting_job(log, 1_000_000, "old"), done=lambda: ends.append("old"))
    qtbot.wait(20)
    steps.start("k", counting_job(log, 3, "new"), done=lambda: ends.append("new"))
    assert ("old", "closed") in log  # the replaced job's cleanup ran at once
    qtbot.waitUntil(lambda: not steps.pending(), timeout=5000)
    assert ends == ["new"]
    assert [entry for entry in log if entry[0] == "new"] == [("new", 0), ("new", 1), ("new", 2), ("new", "closed")]


def test_finish_runs_the_rest_now_and_cancel_drops_a_job(qtbot):
    steps = Steps(budget=0.0)
    log: list = []
    steps.start("a", counting_job(log, 50, "a"))
    steps.start("b", counting_job(log, 50, "b"))
    assert steps.cancel("b") and not steps.cancel("b")
    steps.finish()
    assert not steps.pending()
    assert [entry for entry in log if entry[0] == "a"][-2:] == [("a", 49), ("a", "closed")]
    assert [entry for entry in log if entry[0] == "b"] == []  # cancelled before its first step: never ran


def test_a_job_that_starts_another_at_its_end_is_finished_with_it():
    steps = Steps(budget=0.0)
    log: list = []
    steps.start("first", counting_job(log, 2, "first"),
                done=lambda: steps.start("second", counting_job(log, 2, "second")))
    steps.finish()
    assert ("second", 1) in log and not steps.pending()


def chain(count: int) -> list[NodeInfo]:
    return [NodeInfo(f"n{i}", "Relu", "", [f"t{i}"], [f"t{i + 1}"]) for i in range(count)]



def shown_graph(qtbot) -> GraphView:
    """A graph view of 400 x 300, shown and exposed, with no layout yet."""
    view = GraphView()
    qtbot.addWidget(view)
    view.resize(400, 300)
    view.show()
    qtbot.waitExposed(view)
    return view

def test_the_graph_is_built_a_few_items_per_turn_with_what_arrived_meanwhile(qtbot):
    view = shown_graph(qtbot)
    view.set_layout(layout_graph(chain(300)))
    assert not view.built and view.items_by_index == []  # nothing built inside the call
    view.set_activity({f"n{i}": float(i + 1) for i in range(299)})  # arrives while the build is under way
    view.select("n5")
    qtbot.waitUntil(lambda: view.built, timeout=10_000)
    items = view.items_by_index
    assert [item.node.name for item in items] == [f"n{i}" for i in range(300)]
    assert items[0].activity < items[150].activity < items[298].activity and items[299].activity is None
    assert items[5].selected and view.selected == 5


def test_a_hidden_graph_builds_nothing_until_shown_or_asked(qtbot):
    view = GraphView()
    qtbot.addWidget(view)
    view.set_layout(layout_graph(chain(1)))
    qtbot.wait(20)
    assert not view.built and not shared_steps().pending(view)
    view.finish_build()
    assert view.built and len(view.items_by_index) == 1



def test_new_colours_repaint_only_the_boxes_in_sight_and_the_others_when_they_come_into_view(qtbot):
    from PySide6.QtGui import QColor
    from PySide6.QtWidgets import QGraphicsItem

    from gui.graph_view import activity_colour

    view = shown_graph(qtbot)
    view.set_layout(layout_graph(chain(300)))
    view.finish_build()
    items = view.items_by_index
    first, last = items[0], items[-1]

    def fill_colour(item) -> QColor:
        """The colour on screen inside ``item``'s box, right of its text (scrolled into view first)."""
        view.centerOn(item)
        rect = item.sceneBoundingRect()
        point = view.mapFromScene(rect.right() - 10, rect.center().y())
        return QColor(view.viewport().grab().toImage().pixel(point))

    view.set_activity({f"n{i}": float(i + 1) for i in range(300)})
    bright = fill_colour(last)  # cached in device coordinates with this colour
    assert bright == activity_colour(1.0)
    view.centerOn(first)
    repainted = []
    for index, item in enumerate(items):
        # counts the repaints asked for, and asks for them
        item.update = lambda index=index, item=item: (repainted.append(index), QGraphicsItem.update(item))
    view.set_activity({f"n{i}": float(300 - i) for i in range(300)})  # the last node is now the quietest
    assert 0 in repainted and len(repainted) < len(items) // 2 and 299 not in repainted
    assert fill_colour(last) == activity_colour(0.0) != bright  # brought up to date as it came into view
    assert 299 in repainted
    # read from outside, every box has the current drawing's values wherever it is
    # (log scale between the 2nd and 98th percentiles of the values 1..300: the 6th and the 294th)
    expected = (np.log10(150) - np.log10(6)) / (np.log10(294) - np.log10(6))
    assert last.value == 1.0 and items[150].value == 150.0 and items[150].activity == pytest.approx(expected)

def test_a_prediction_for_a_new_model_waits_until_the_views_show_that_model(qtbot, window, draw_on, digit_path):
    from gui.model_opening import prepare_model
    from gui.window import MODEL_VIEWS

    other = prepare_model(ROOT / "tests" / "models" / "torch_avgpool_m11.onnx")
    window.session.install(other)  # the views follow over the next event-loop turns...
    assert shared_steps().pending(MODEL_VIEWS)
    draw_on(window.canvas, digit_path("7"))  # ...and a prediction for the new model is shown once they have
    qtbot.waitUntil(lambda: not shared_steps().pending(MODEL_VIEWS), timeout=10_000)
    assert window.probability_view._probabilities is window.session.probabilities is not None
    names = [card.node_name for card in window.activations.entries]
    assert names == [node.name for node in other.model.nodes][:len(names)]
    assert window.summary.nodes.rowCount() == len(other.model.nodes)
    assert any(card._has_values for card in window.activations.entries)


def test_a_replaced_model_is_freed_without_a_garbage_collection(window, qtbot):
    """The window freezes what is alive when a model is installed (no full collection walks it again); a model
    replaced later must still go, by reference counting."""
    before = weakref.ref(window.model)
    assert window.open_model(ROOT / "tests" / "models" / "torch_avgpool_m11.onnx")
    assert gc.get_freeze_count() > 0
    # let go of a piece at a time once unused (gui.model_opening.dismantle): never by the garbage collector
    gc.disable()
    try:
        qtbot.waitUntil(lambda: before() is None, timeout=10_000)
    finally:
        gc.enable()


def test_the_reliability_is_measured_when_the_model_tab_shows(window, qtbot):
    calibration = window.calibration
    window.tabs.setCurrentWidget(window.activations)
    window.session.set_scaling(window.adapter.scaling, "user")  # a change: the measurement is due again
    assert calibration.pending and not calibration.measuring  # not while another tab shows
    window.tabs.setCurrentWidget(window.summary)
    assert calibration.measuring and not calibration.pending
    qtbot.waitUntil(lambda: calibration.current is not None, timeout=30_000)


def test_a_due_heap_trim_waits_while_the_user_draws():
    """A trim holds the heap's locks: one that is due is pushed back by each drawing change (none is due: no-op)."""
    from gui.model_opening import MemoryReleaser

    releaser = MemoryReleaser()
    if not releaser.available:
        pytest.skip("no malloc_trim here (not glibc)")
    releaser.postpone()
    assert releaser._due is None  # nothing to trim: nothing scheduled
    releaser._due = 0.0  # due long ago (set directly: no thread started)
    releaser.postpone()
    assert releaser._due >= releaser.DELAY_SECONDS


def test_a_due_heap_trim_waits_a_calm_moment_after_model_work_ends():
    """Model work blocks trims; when the last of it ends, a trim that fell due meanwhile waits DELAY_SECONDS more
    (the user is likely to act on the result at once) instead of starting that instant."""
    import time

    from gui.model_opening import MemoryReleaser

    releaser = MemoryReleaser()
    if not releaser.available:
        pytest.skip("no malloc_trim here (not glibc)")
    with releaser.working():
        releaser._due = 0.0  # fell due while the model worked (set directly: no thread started)
        with releaser.working():
            pass
        assert releaser._due == 0.0  # other work still under way: nothing changes yet
    assert releaser._due >= time.monotonic() + releaser.DELAY_SECONDS - 0.05
    releaser._due = None
    with releaser.working():
        pass
    assert releaser._due is None  # nothing due: nothing scheduled


def test_a_heap_trim_is_put_off_only_until_its_deadline():
    """However busy the user keeps the app, a due trim is not put off past PATIENCE_SECONDS after it fell due."""
    import time

    from gui.model_opening import MemoryReleaser

    releaser = MemoryReleaser()
    if not releaser.available:
        pytest.skip("no malloc_trim here (not glibc)")
    deadline = time.monotonic() + releaser.DELAY_SECONDS / 2
    releaser._due, releaser._deadline = 0.0, deadline  # (set directly: no thread started)
    releaser.postpone()
    assert releaser._due == deadline
    with releaser.working():
        pass
    assert releaser._due == deadline
