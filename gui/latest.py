"""A background worker that only ever handles the newest job (Qt-free).

While the worker is busy, a newly submitted job replaces the one waiting instead of queueing behind it: a slow
model shows the newest stroke as soon as it can rather than replaying every mouse move it missed. The prediction
worker and the side-by-side comparison both run on one.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from gui.background import start_background_thread


class LatestWorker:
    """Runs ``handle(job)`` on one daemon thread for the newest job submitted.

    ``before_start`` is called each time the thread is (re)started, e.g. to leave a core to the UI.
    """

    def __init__(self, handle: Callable[[Any], None], name: str,
                 before_start: Callable[[], None] | None = None) -> None:
        self._handle = handle
        self._name = name
        self._before_start = before_start
        self._condition = threading.Condition()
        self._pending: Any = None
        self._busy = False
        self._stopping = False
        self._thread: threading.Thread | None = None

    def submit(self, job: Any) -> None:
        """Make ``job`` the next one handled, replacing any job still waiting."""
        with self._condition:
            self._pending = job
            if self._thread is None or not self._thread.is_alive():
                if self._before_start is not None:
                    self._before_start()
                self._stopping = False
                self._thread = start_background_thread(self._work, self._name)
            self._condition.notify()

    def drop_pending(self) -> None:
        """Forget the job waiting, if any (the one running finishes)."""
        with self._condition:
            self._pending = None

    def has_newer(self) -> bool:
        """Whether a job is waiting (or the worker is stopping): a handler may cut its work short then."""
        with self._condition:
            return self._pending is not None or self._stopping

    def is_idle(self) -> bool:
        with self._condition:
            return self._pending is None and not self._busy

    def _work(self) -> None:
        while True:
            with self._condition:
                while self._pending is None and not self._stopping:
                    self._condition.wait()
                if self._stopping:
                    return
                job, self._pending = self._pending, None
                self._busy = True
            try:
                self._handle(job)
            finally:
                with self._condition:
                    self._busy = False
                # a finished job (a replaced model, a big image) must not live on in this idle thread's locals
                job = None

    def shutdown(self, timeout: float = 5.0) -> None:
        with self._condition:
            self._stopping = True
            self._pending = None
            self._condition.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=timeout)
            self._thread = None
