"""Two models side by side on the same drawing (no Qt): e.g. the float model and its int8 version.

``compare(first, second)`` turns two models' answers for one drawing into a ``Comparison``: both sets of
probabilities, where they disagree (a different top class, or a class whose probabilities differ by at least
``threshold``), each model's latency and file size. ``Comparer`` holds the second model: it opens it off the UI
thread with the app's ``ModelOpener`` (a broken file ends in an ``open_failed`` event and changes nothing), and
runs both models on the latest drawing on a worker thread (latest drawing wins), handing the ``Comparison`` back
through the dispatcher as a ``compared`` event. The view (gui.compare_view) only shows what it gets.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gui.events import Dispatch, EventGroup
from gui.latest import LatestWorker
from gui.localize import translate
from gui.model_opening import ModelOpener, OpenedModel, OpenResult, prepare_model

DEFAULT_THRESHOLD = 0.05  # a probability gap of 5 points on any class counts as a disagreement
TIMING_RUNS = 5  # runs per model per drawing for the latency (median); fewer when one run is slow
TIMING_BUDGET_SECONDS = 0.05  # stop repeating once a model has used this much time on one drawing


@dataclass
class Side:
    """One model's answer for one drawing."""

    name: str
    probabilities: np.ndarray | None
    labels: list[str] = field(default_factory=list)
    seconds: float = 0.0  # latency of one fused run (median of the timing runs)
    size_bytes: int = 0
    error: str | None = None

    @property
    def top(self) -> int | None:
        if self.probabilities is None or not len(self.probabilities):
            return None
        return int(np.argmax(self.probabilities))

    def label(self, index: int | None) -> str:
        if index is None:
            return "-"
        return self.labels[index] if index < len(self.labels) else str(index)


@dataclass
class ClassRow:
    """One class in the side-by-side table."""

    index: int
    label: str
    first: float | None
    second: float | None
    gap: float | None  # second - first (probability, not points)
    flagged: bool  # |gap| >= threshold, or the top class of only one of the two


@dataclass
class Comparison:
    first: Side
    second: Side
    threshold: float = DEFAULT_THRESHOLD
    drawing: int = 0
    rows: list[ClassRow] = field(default_factory=list)

    @property
    def comparable(self) -> bool:
        return self.first.top is not None and self.second.top is not None

    @property
    def same_top(self) -> bool | None:
        return None if not self.comparable else self.first.top == self.second.top

    @property
    def max_gap(self) -> float:
        gaps = [abs(r.gap) for r in self.rows if r.gap is not None]
        return max(gaps, default=0.0)

    @property
    def max_gap_class(self) -> int | None:
        best = max((r for r in self.rows if r.gap is not None), key=lambda r: abs(r.gap), default=None)
        return None if best is None else best.index

    @property
    def flagged(self) -> list[int]:
        return [r.index for r in self.rows if r.flagged]

    @property
    def disagree(self) -> bool:
        """A different top class, or some class's probability gap at or above the threshold."""
        return self.comparable and (not self.same_top or self.max_gap >= self.threshold)

    @property
    def class_count_differs(self) -> bool:
        return self.comparable and len(self.first.probabilities) != len(self.second.probabilities)

    @property
    def speedup(self) -> float | None:
        """first's latency / second's (> 1: the second model is faster)."""
        if self.first.seconds <= 0 or self.second.seconds <= 0:
            return None
        return self.first.seconds / self.second.seconds

    @property
    def size_ratio(self) -> float | None:
        """second's file size / first's."""
        return None if not self.first.size_bytes else self.second.size_bytes / self.first.size_bytes

    def verdict(self) -> str:
        """One line for the user."""
        if self.first.error or self.second.error:
            failed = self.first if self.first.error else self.second
            return translate("Comparison", "{name} failed on this drawing: {error}").format(name=failed.name,
                                                                                             error=failed.error)
        if not self.comparable:
            return translate("Comparison", "nothing to compare yet")
        extra = translate("Comparison", " (the models have different numbers of classes)") \
            if self.class_count_differs else ""
        first, second = self.first, self.second
        if not self.same_top:
            return translate("Comparison", "disagree: {first} says {first_answer}, {second} says "
                             "{second_answer}").format(first=first.name, first_answer=first.label(first.top),
                                                       second=second.name,
                                                       second_answer=second.label(second.top)) + extra
        index = self.max_gap_class
        gap = translate("Comparison", "{points} points on {label}").format(points=f"{self.max_gap * 100:.1f}",
                                                                          label=first.label(index))
        if self.max_gap >= self.threshold:
            return translate("Comparison", "same answer ({answer}), but probabilities differ by up to "
                             "{gap}").format(answer=first.label(first.top), gap=gap) + extra
        return translate("Comparison", "agree: both say {answer} (largest gap {gap})").format(
            answer=first.label(first.top), gap=gap) + extra


def compare(first: Side, second: Side, threshold: float = DEFAULT_THRESHOLD, drawing: int = 0) -> Comparison:
    """The side-by-side comparison of two answers for the same drawing."""
    result = Comparison(first, second, threshold, drawing)
    if first.probabilities is None or second.probabilities is None:
        return result
    a = np.asarray(first.probabilities, np.float64).reshape(-1)
    b = np.asarray(second.probabilities, np.float64).reshape(-1)
    tops = {first.top, second.top} if first.top != second.top else set()
    for index in range(max(len(a), len(b))):
        pa = float(a[index]) if index < len(a) else None
        pb = float(b[index]) if index < len(b) else None
        gap = None if pa is None or pb is None else pb - pa
        label = first.label(index) if index < len(first.labels) else second.label(index)
        flagged = index in tops or (gap is not None and abs(gap) >= threshold)
        result.rows.append(ClassRow(index, label, pa, pb, gap, flagged))
    return result


def timed_predict(adapter: Any, image: np.ndarray, runs: int = TIMING_RUNS,
                  budget: float = TIMING_BUDGET_SECONDS) -> tuple[np.ndarray, float]:
    """The model's probabilities for ``image`` and the median time of its fused runs (up to ``runs``, fewer
    once ``budget`` seconds are spent: a big model is timed once)."""
    times, probabilities, spent = [], None, 0.0
    for _ in range(max(1, runs)):
        start = time.perf_counter()
        probabilities = adapter.predict(image)
        elapsed = time.perf_counter() - start
        times.append(elapsed)
        spent += elapsed
        if spent >= budget:
            break
    return np.asarray(probabilities), float(np.median(times))


def side_for(name: str, adapter: Any, image: np.ndarray, size_bytes: int) -> Side:
    """Run one model on the drawing (timed); an engine failure comes back in ``error``."""
    try:
        probabilities, seconds = timed_predict(adapter, image)
    except Exception as exc:  # noqa: BLE001 - any engine failure is shown, never raised in the worker
        return Side(name, None, [], 0.0, size_bytes, f"{type(exc).__name__}: {exc}")
    return Side(name, probabilities, adapter.labels(len(probabilities)), seconds, size_bytes)


def file_size(path: str | Path | None) -> int:
    try:
        return Path(path).stat().st_size if path is not None else 0
    except OSError:
        return 0


@dataclass
class Model:
    """A model the comparer runs: a display name, its adapter and its file size."""

    name: str
    adapter: Any
    size_bytes: int
    path: Path | None = None


class Comparer:
    """The second model and the comparisons of the latest drawing.

    Events (emitted in the owner's thread, through ``dispatch``): ``opening(path)``, ``opened(Model)``,
    ``open_failed(path, message)``, ``compared(Comparison)``.
    """

    def __init__(self, dispatch: Dispatch, threshold: float = DEFAULT_THRESHOLD,
                 prepare: Callable[[Path], OpenedModel] | None = None,
                 remembered_scalings: Mapping[str, str] | None = None) -> None:
        self.events = EventGroup("opening", "opened", "open_failed", "compared")
        self.threshold = threshold
        self._dispatch = dispatch
        self._remembered = dict(remembered_scalings or {})
        self._opener = ModelOpener(prepare or self._prepare, notify=self._opened_in_worker)
        self.first: Model | None = None
        self.second: Model | None = None
        self.last: Comparison | None = None
        self.last_error: str | None = None
        self._worker = LatestWorker(self._work, "digitscope-compare")

    # --- the models ------------------------------------------------------------------------------------
    def set_first(self, name: str, adapter: Any, path: str | Path | None = None) -> None:
        """The main window's model (its adapter is shared, never changed here)."""
        self.first = Model(name, adapter, file_size(path), None if path is None else Path(path))

    def _prepare(self, path: Path) -> OpenedModel:
        return prepare_model(path, self._remembered)

    def open(self, path: str | Path) -> int:
        """Open the second model off the UI thread; the current second model stays until the new one works."""
        path = Path(path)
        self.events.opening.emit(path)
        return self._opener.open(path)

    @property
    def opening(self) -> Path | None:
        return self._opener.pending_path

    def wait_until_opened(self, timeout: float | None = None) -> bool:
        """Block until the pending open has a result (for scripts and tests; the app waits for the event)."""
        return self._opener.wait(timeout=timeout)

    def _opened_in_worker(self, generation: int) -> None:
        self._dispatch(lambda: self._take(generation))

    def _take(self, generation: int) -> None:
        result: OpenResult | None = self._opener.take(generation)
        if result is None:
            return
        if not result.ok:
            self.last_error = result.error
            self.events.open_failed.emit(result.path, result.error or translate("Comparison", "cannot open"))
            return
        opened = result.opened
        self.second = Model(opened.path.name, opened.adapter, file_size(opened.path), opened.path)
        self.last_error = None
        self.events.opened.emit(self.second)

    # --- comparing -------------------------------------------------------------------------------------
    def compare_now(self, image: np.ndarray, drawing: int = 0) -> Comparison | None:
        """Run both models on ``image`` in this thread (None until both models are set)."""
        if self.first is None or self.second is None:
            return None
        return self._compare(self.first, self.second, image, drawing)

    def _compare(self, first: Model, second: Model, image: np.ndarray, drawing: int) -> Comparison:
        return compare(side_for(first.name, first.adapter, image, first.size_bytes),
                       side_for(second.name, second.adapter, image, second.size_bytes), self.threshold, drawing)

    def submit(self, image: np.ndarray | None, drawing: int = 0) -> None:
        """Compare the latest drawing on the worker thread; a newer drawing replaces a pending one."""
        if image is None or self.first is None or self.second is None:
            return
        self._worker.submit((self.first, self.second, np.array(image, np.float32), drawing))

    def is_idle(self) -> bool:
        return self._worker.is_idle()

    def _work(self, job: tuple[Model, Model, np.ndarray, int]) -> None:
        first, second, image, drawing = job
        comparison = self._compare(first, second, image, drawing)
        self._dispatch(lambda: self._deliver(comparison, first, second))

    def _deliver(self, comparison: Comparison, first: Model, second: Model) -> None:
        if first is not self.first or second is not self.second:
            return  # one of the models was replaced meanwhile
        self.last = comparison
        self.events.compared.emit(comparison)

    def shutdown(self) -> None:
        self._opener.cancel()
        self._worker.shutdown()


def describe_model(model: Model | None) -> str:
    """'name · 98 KiB' for the view's headers."""
    if model is None:
        return "-"
    return f"{model.name} · {model.size_bytes / 1024:,.0f} KiB"


def summary_lines(comparison: Comparison) -> list[str]:
    """The latency and size lines under the table."""
    first, second = comparison.first, comparison.second
    lines = [translate("Comparison", "{name}: {ms} ms per drawing, {kib} KiB").format(
                 name=side.name, ms=f"{side.seconds * 1000:.2f}", kib=f"{side.size_bytes / 1024:,.0f}")
             for side in (first, second)]
    notes = []
    if comparison.speedup is not None:
        speed = comparison.speedup
        notes.append(translate("Comparison", "{name} is {factor}x as fast").format(
                         name=second.name, factor=f"{speed:.2f}") if speed >= 1 else
                     translate("Comparison", "{name} is {factor}x slower").format(
                         name=second.name, factor=f"{1 / speed:.2f}"))
    if comparison.size_ratio is not None:
        notes.append(translate("Comparison", "its file is {share} of {name}'s").format(
            share=f"{comparison.size_ratio:.0%}", name=first.name))
    if notes:
        lines.append("; ".join(notes))
    return lines
