"""A tiny Qt-free event mechanism: named events with callbacks, and hand-offs back to the owning thread.

``Event`` is a list of callbacks called in order by ``emit`` (in the emitting thread). The session emits only
in its own thread (the UI thread in the app): work finished on a worker thread is handed back through a
*dispatcher*, a callable that runs a function in the owning thread later. ``QueueDispatcher`` is the Qt-free
one (tests pump it with ``run_pending``); the app uses ``gui.qt_bridge.QtDispatcher`` (a queued signal).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any

Callback = Callable[..., Any]
Dispatch = Callable[[Callable[[], None]], None]


class Event:
    """Callbacks connected to one event; ``emit(*args)`` calls each with those arguments, in order."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._callbacks: list[Callback] = []

    def connect(self, callback: Callback) -> Callback:
        """Call ``callback`` on every emit; returns it (usable as a decorator)."""
        self._callbacks.append(callback)
        return callback

    def disconnect(self, callback: Callback) -> None:
        if callback in self._callbacks:
            self._callbacks.remove(callback)

    def emit(self, *args: Any) -> None:
        for callback in list(self._callbacks):  # a callback may disconnect itself
            callback(*args)

    def __len__(self) -> int:
        return len(self._callbacks)

    def __repr__(self) -> str:
        return f"Event({self.name!r}, {len(self._callbacks)} callbacks)"


class EventGroup:
    """The events of one object, as attributes: ``EventGroup("opening", "prediction").prediction.connect(f)``."""

    def __init__(self, *names: str) -> None:
        for name in names:
            setattr(self, name, Event(name))

    def __iter__(self):
        return iter(value for value in vars(self).values() if isinstance(value, Event))


class QueueDispatcher:
    """Functions handed over from any thread, run in the owner's thread by ``run_pending`` (no Qt)."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._arrived = threading.Event()

    def __call__(self, function: Callable[[], None]) -> None:
        self._queue.put(function)
        self._arrived.set()

    def run_pending(self, wait: float = 0.0) -> int:
        """Run everything handed over so far (waiting up to ``wait`` s for the first); returns how many ran."""
        if wait > 0 and self._queue.empty():
            self._arrived.wait(wait)
        self._arrived.clear()
        ran = 0
        while True:
            try:
                function = self._queue.get_nowait()
            except queue.Empty:
                return ran
            function()
            ran += 1
