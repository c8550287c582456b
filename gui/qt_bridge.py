"""The one place where the Qt-free session meets Qt's event loop.

``QtDispatcher`` runs functions handed over from worker threads in the UI thread (a queued signal), so the
session's events always fire there. ``wait_for`` keeps the event loop running until a condition holds: the
window's blocking ``open_model`` waits with it, so timers, repaints and hand-overs go on meanwhile.

``Steps`` runs long UI-thread work a slice at a time. Building a view for a big model (DenseNet-121's 910
graph boxes, a page of activation cards) is tens of milliseconds of Qt calls that can only run on the UI
thread; done in one go they freeze the window (a 5 ms heartbeat saw 50-160 ms gaps when a model was
installed). Written as a generator that yields after each small piece, the work runs until a time budget is
spent, then the event loop handles input, timers and painting before it carries on (a zero-delay timer).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import shiboken6
from PySide6.QtCore import QEventLoop, QObject, QTimer, Signal


class _Relay(QObject):
    """Carries hand-overs to the UI thread for every ``QtDispatcher``; made once, on the UI thread, never deleted.

    A worker emitting a signal of an object the UI thread is deleting meanwhile (a window closed while its
    calibration or prediction still runs) crashed the process: emitting from one thread is not safe against
    deletion on another. This object outlives the workers; whether the dispatcher is still there is checked on
    the UI thread, where it is deleted."""

    call = Signal(object, object)  # (dispatcher, function)

    def __init__(self) -> None:
        super().__init__()
        self.call.connect(self._run)  # auto connection: queued when emitted from another thread

    @staticmethod
    def _run(dispatcher: QtDispatcher, function: Callable[[], None]) -> None:
        if shiboken6.isValid(dispatcher):  # its owner is gone: nobody wants the result
            function()


_RELAY: _Relay | None = None


class QtDispatcher(QObject):
    """``dispatcher(function)`` from any thread: ``function()`` runs soon in the UI thread, unless this object
    (owned by the view that wants the results) has been deleted by then. Make it on the UI thread."""

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        global _RELAY
        if _RELAY is None:
            _RELAY = _Relay()

    def __call__(self, function: Callable[[], None]) -> None:
        _RELAY.call.emit(self, function)


def wait_for(done: Callable[[], bool], subscribe: Callable[[Callable[..., None]], Callable[[], None]],
             timeout: float | None = None) -> bool:
    """Run a nested event loop until ``done()`` holds (checked whenever ``subscribe``'s callback fires).

    ``subscribe(callback)`` connects ``callback`` to whatever may make ``done`` true and returns a function
    that disconnects it. Returns ``done()``; False when ``timeout`` seconds pass first.
    """
    if done():
        return True
    loop = QEventLoop()

    def check(*_args: object) -> None:
        if done():
            loop.quit()

    unsubscribe = subscribe(check)
    timer = None
    if timeout is not None:
        timer = QTimer()
        timer.setSingleShot(True)
        timer.timeout.connect(loop.quit)
        timer.start(max(0, int(timeout * 1000)))
    try:
        if not done():  # it may have happened while subscribing
            loop.exec()
    finally:
        unsubscribe()
        if timer is not None:
            timer.stop()
    return done()


BUDGET_SECONDS = 0.008  # per event-loop turn: well under the 50 ms target even when the CPU is shared 3-4 ways

Job = Iterator[Any]


class Steps(QObject):
    """Runs generator jobs a budget's worth of ``next()`` calls per event-loop turn, one job after another.

    A job has a key: starting a job under a key that has one replaces it (a new model's build makes the previous
    model's pointless), ``cancel(key)`` drops it, ``finish()`` runs what is left now (blocking calls that promise
    a finished state, scripts and tests). Jobs run in the order they were started.
    """

    def __init__(self, parent: QObject | None = None, budget: float = BUDGET_SECONDS) -> None:
        super().__init__(parent)
        self.budget = budget
        # called before each turn that runs jobs (the window puts heap trims off meanwhile: a trim holds the heap's
        # locks, and the frees and allocations of a turn dismantling a replaced model would wait for them)
        self.before_turn: Callable[[], None] | None = None
        self._jobs: dict[Any, Job] = {}  # key -> job, in start order
        self._done: dict[Any, Callable[[], None]] = {}
        self._running: Job | None = None
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(0)
        self._timer.timeout.connect(self._turn)

    def start(self, key: Any, job: Job, done: Callable[[], None] | None = None) -> None:
        """Run ``job`` (a generator) in slices from the next event-loop turn, replacing ``key``'s job if any;
        ``done()`` is called once it has run to its end (not when it is replaced or cancelled)."""
        self.cancel(key)
        self._jobs[key] = job
        if done is not None:
            self._done[key] = done
        if not self._timer.isActive():
            self._timer.start()

    def cancel(self, key: Any) -> bool:
        """Drop ``key``'s job, unfinished. Returns whether there was one."""
        job = self._jobs.pop(key, None)
        self._done.pop(key, None)
        if job is None:
            return False
        if job is not self._running and hasattr(job, "close"):
            job.close()  # its ``finally`` blocks run now (a job cancelling itself just ends at its next yield)
        return True

    def pending(self, key: Any = None) -> bool:
        """Whether ``key``'s job (any job, for None) is still to run."""
        return bool(self._jobs) if key is None else key in self._jobs

    def finish(self, key: Any = None) -> None:
        """Run ``key``'s job (every job, for None, including any their ends start) to its end now."""
        while self.pending(key):
            self._step(next(iter(self._jobs)) if key is None else key)

    def _step(self, key: Any) -> None:
        """One ``next()`` of ``key``'s job; at its end, the job is dropped and its ``done`` called."""
        job = self._jobs[key]
        self._running = job
        try:
            next(job)
            return
        except StopIteration:
            pass
        finally:
            self._running = None
        if self._jobs.get(key) is job:  # (not replaced or cancelled meanwhile)
            del self._jobs[key]
            done = self._done.pop(key, None)
            if done is not None:
                done()

    def _turn(self) -> None:
        if self.before_turn is not None:
            self.before_turn()
        deadline = time.perf_counter() + self.budget
        while self._jobs:
            self._step(next(iter(self._jobs)))  # at least one step per turn, whatever the budget
            if time.perf_counter() >= deadline:
                break
        if self._jobs:
            self._timer.start()


_SHARED: Steps | None = None


def shared_steps() -> Steps:
    """The UI thread's one ``Steps``: views share it, so a turn's budget is spent once, not once per view."""
    global _SHARED
    if _SHARED is None:
        _SHARED = Steps()
    return _SHARED
