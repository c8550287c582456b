"""Runs the model on the latest drawing, off the caller's thread when it is slow; latest input wins (no Qt).

While the engine is busy, newer drawings replace the pending one instead of queueing, so a slow model shows
the newest stroke as soon as it can rather than replaying every mouse move it missed. A fast model (the bundled
LeNet takes well under a millisecond) runs synchronously in the caller, which is simpler and gives the answer
within the same mouse event.

A big model answers in two steps: the fused run first (the bars, as soon as possible), then, if a view wants
every node's outputs and no newer drawing is waiting, the traced run of the same drawing. While the user keeps
drawing, only fused runs happen; the traced one follows when the pen rests.

Results go to the ``deliver`` callback: in the caller's thread for a synchronous run, in the worker thread
otherwise (the session hands those back to its own thread through a dispatcher).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from gui.latest import LatestWorker
from gui.model_opening import MEMORY, reserve_a_core_for_the_ui
from gui.prediction import Prediction, run_prediction
from nn_core.interface import ModelAdapter

# Models whose traced run takes less than this run in the caller's thread: a thread hop costs more than it saves.
SYNC_BUDGET_SECONDS = 0.008
MODES = ("auto", "sync", "thread")


class Predictor:
    """Accepts images with ``submit(image, drawing)`` and calls ``deliver(Prediction)`` for the current model.

    mode: "auto" (synchronous while the model is fast, threaded once a run exceeds the budget), "sync" or
    "thread".
    """

    def __init__(self, deliver: Callable[[Prediction], None], mode: str = "auto") -> None:
        if mode not in MODES:
            raise ValueError(f"unknown predictor mode {mode!r}")
        self.mode = mode
        self._deliver = deliver
        self._adapter: ModelAdapter | None = None
        self._generation = 0
        self._last_seconds = 0.0
        self._lock = threading.Lock()  # the current model's generation and the last run's time
        # prepare(prediction, cancelled): what the views make of a traced run, computed on the worker's thread
        # (the UI thread then only shows it); returns prediction.prepared. Synchronous runs skip it: they are on
        # the caller's thread anyway, and the views compute only what they show.
        self.prepare: Callable[[Prediction, Callable[[], bool]], dict[str, Any]] | None = None
        self._worker = LatestWorker(self._work, "digitscope-predictor", before_start=reserve_a_core_for_the_ui)

    @property
    def adapter(self) -> ModelAdapter | None:
        return self._adapter

    def set_adapter(self, adapter: ModelAdapter | None, last_seconds: float = 0.0) -> None:
        """Switch models; results still in flight for the old one are discarded."""
        with self._lock:
            self._adapter = adapter
            self._generation += 1
            self._last_seconds = last_seconds
        self._worker.drop_pending()

    @property
    def generation(self) -> int:
        return self._generation

    @property
    def last_seconds(self) -> float:
        return self._last_seconds

    def is_idle(self) -> bool:
        return self._worker.is_idle()

    def submit(self, image: np.ndarray, drawing: int = 0, traced: bool = True, bars: bool = True) -> None:
        """Predict ``image`` (drawing number ``drawing``): the probabilities, and with ``traced`` every node's
        outputs too (after the bars, for a slow model). ``bars=False``: only the traced run (a view asked for it)."""
        adapter = self._adapter
        if adapter is None:
            return
        synchronous = self.mode == "sync" or (self.mode == "auto" and self._last_seconds < SYNC_BUDGET_SECONDS
                                               and self.is_idle())
        if synchronous:
            prediction = run_prediction(adapter, image, self._generation, drawing, traced)
            self._last_seconds = prediction.seconds
            self._deliver(prediction)
            return
        self._worker.submit((adapter, image, self._generation, drawing, traced, bars or not traced))

    def _work(self, job: tuple[ModelAdapter, np.ndarray, int, int, bool, bool]) -> None:
        adapter, image, generation, drawing, traced, bars = job
        if bars:  # the fused run: the bars as soon as possible
            if not self._run_and_deliver(adapter, image, generation, drawing, False):
                return
            if self._worker.has_newer():
                return  # a newer drawing is waiting: trace that one instead, later
        if traced:
            self._run_and_deliver(adapter, image, generation, drawing, True)

    def _run_and_deliver(self, adapter: ModelAdapter, image: np.ndarray, generation: int, drawing: int,
                         traced: bool) -> bool:
        """One run, delivered if its model is still current (handed over before the predictor reports idle)."""
        with MEMORY.working():
            prediction = run_prediction(adapter, image, generation, drawing, traced)
            if traced and prediction.error is None and self.prepare is not None \
                    and generation == self._generation:
                prediction.prepared = self._prepared(prediction)
        with self._lock:
            if not traced or self._last_seconds == 0.0:
                self._last_seconds = prediction.seconds
            current = generation == self._generation
        if current:
            self._deliver(prediction)
        return current and prediction.error is None

    def _prepared(self, prediction: Prediction) -> dict[str, Any]:
        try:
            return self.prepare(prediction, self._worker.has_newer)
        except Exception:  # noqa: BLE001 - a view's head start is optional: without it the view computes itself
            return {}

    def shutdown(self) -> None:
        self._worker.shutdown()


class ChunkPacer:
    """Slices of a long batch job sized so that each takes about ``target_seconds``: progress and cancellation
    between them stay frequent on a big model (one image at a time on DenseNet-121, ~1 s each) while a small
    one still runs ``most`` images per call. The first slice holds one item; each next one is sized from the
    time the previous took (measured between yields, so the caller's work on the slice is what counts), growing
    at most fourfold a step. The size learned carries over from one ``slices`` call to the next."""

    def __init__(self, most: int, target_seconds: float = 0.25) -> None:
        self.most = max(1, int(most))
        self.target_seconds = target_seconds
        self.size = 1

    def slices(self, total: int):
        start = 0
        while start < total:
            size = min(self.size, total - start)
            began = time.perf_counter()
            with MEMORY.working():  # the caller runs the model on this slice
                yield slice(start, start + size)
            per_item = (time.perf_counter() - began) / size
            wanted = self.most if per_item <= 0 else int(self.target_seconds / per_item)
            self.size = max(1, min(self.most, 4 * size, wanted))
            start += size
