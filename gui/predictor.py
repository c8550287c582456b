"""Runs the model on the latest drawing, off the UI thread when it is slow, and hands results back as a signal.

Latest input wins: while the engine is busy, newer drawings replace the pending one instead of queueing, so a
slow model shows the newest stroke as soon as it can rather than replaying every mouse move it missed. A fast
model (the bundled LeNet takes well under a millisecond) runs synchronously in the caller, which is simpler and
gives the answer within the same mouse event.
"""

from __future__ import annotations

import threading

import numpy as np
from PySide6.QtCore import QObject, Signal

from gui.prediction import Prediction, run_prediction  # noqa: F401 (re-exported: the window imports them here)
from nn_core.interface import ModelAdapter

# Models whose traced run takes less than this run in the caller's thread: a thread hop costs more than it saves.
SYNC_BUDGET_SECONDS = 0.008


class Predictor(QObject):
    """Accepts images with ``submit`` and emits ``finished(Prediction)`` in the UI thread.

    mode: "auto" (synchronous while the model is fast, threaded once a run exceeds the budget), "sync" or
    "thread".
    """

    finished = Signal(object)

    def __init__(self, mode: str = "auto", parent: QObject | None = None) -> None:
        super().__init__(parent)
        if mode not in ("auto", "sync", "thread"):
            raise ValueError(f"unknown predictor mode {mode!r}")
        self.mode = mode
        self._adapter: ModelAdapter | None = None
        self._generation = 0
        self._last_seconds = 0.0
        self._condition = threading.Condition()
        self._pending: tuple[ModelAdapter, np.ndarray, int] | None = None
        self._busy = False
        self._stopping = False
        self._thread: threading.Thread | None = None

    @property
    def adapter(self) -> ModelAdapter | None:
        return self._adapter

    def set_adapter(self, adapter: ModelAdapter | None, last_seconds: float = 0.0) -> None:
        """Switch models; results still in flight for the old one are discarded."""
        with self._condition:
            self._adapter = adapter
            self._generation += 1
            self._pending = None
            self._last_seconds = last_seconds

    @property
    def generation(self) -> int:
        return self._generation

    def is_idle(self) -> bool:
        with self._condition:
            return self._pending is None and not self._busy

    def submit(self, image: np.ndarray) -> None:
        adapter = self._adapter
        if adapter is None:
            return
        synchronous = self.mode == "sync" or (self.mode == "auto" and self._last_seconds < SYNC_BUDGET_SECONDS
                                               and self.is_idle())
        if synchronous:
            prediction = run_prediction(adapter, image, self._generation)
            self._last_seconds = prediction.seconds
            self.finished.emit(prediction)
            return
        with self._condition:
            self._pending = (adapter, image, self._generation)  # replaces any older pending drawing
            self._ensure_thread()
            self._condition.notify()

    def _ensure_thread(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._stopping = False
            self._thread = threading.Thread(target=self._work, name="digitscope-predictor", daemon=True)
            self._thread.start()

    def _work(self) -> None:
        while True:
            with self._condition:
                while self._pending is None and not self._stopping:
                    self._condition.wait()
                if self._stopping:
                    return
                adapter, image, generation = self._pending
                self._pending = None
                self._busy = True
            prediction = run_prediction(adapter, image, generation)
            with self._condition:
                self._busy = False
                self._last_seconds = prediction.seconds
                current = generation == self._generation
            if current:
                # Emitting from this thread is safe: the receiver lives in the UI thread, so Qt queues the call.
                self.finished.emit(prediction)

    def shutdown(self) -> None:
        with self._condition:
            self._stopping = True
            self._pending = None
            self._condition.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
