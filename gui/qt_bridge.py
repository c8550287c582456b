"""The one place where the Qt-free session meets Qt's event loop.

``QtDispatcher`` runs functions handed over from worker threads in the UI thread (a queued signal), so the
session's events always fire there. ``wait_for`` keeps the event loop running until a condition holds: the
window's blocking ``open_model`` waits with it, so timers, repaints and hand-overs go on meanwhile.
"""

from __future__ import annotations

from collections.abc import Callable

from PySide6.QtCore import QEventLoop, QObject, QTimer, Signal


class QtDispatcher(QObject):
    """``dispatcher(function)`` from any thread: ``function()`` runs soon in this object's (the UI) thread."""

    _call = Signal(object)

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._call.connect(self._run)  # auto connection: queued when emitted from another thread

    def __call__(self, function: Callable[[], None]) -> None:
        try:
            self._call.emit(function)
        except RuntimeError:  # the receiver is gone (deleted at shutdown): nobody wants the result
            pass

    @staticmethod
    def _run(function: Callable[[], None]) -> None:
        function()


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
