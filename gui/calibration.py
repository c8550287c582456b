"""Does "90 %" mean right 90 % of the time? The current model's reliability on labelled digits, without Qt.

``reliability(probabilities, labels)`` bins the predictions by confidence (the top probability) and compares each
bin's mean confidence with its accuracy; the expected calibration error (ECE, Guo et al. 2017) is the gap averaged
over the bins, weighted by how many predictions fall in each. ``calibration_samples()`` are the labelled digits
the app has at hand: the 50 MNIST test digits shipped with ``nn_core`` (in a checkout, the 1,000 MNIST test
digits of ``tests/data/mnist_sample.npz`` instead) and, in a checkout, the pen recordings under
``tests/data/strokes`` drawn through the app's own rasterizer (pen-drawn input).

``CalibrationState`` follows a ``gui.session.Session``: when the model or its scaling changes it measures the new
one on a worker thread (a result for a replaced model or scaling is dropped) and emits ``reliability(Reliability
or None)``; the model view draws it (``gui.reliability``). In the app the measurement waits until it is wanted
(the model view is shown) or the app is idle (``wanted=False``, then ``measure_pending``): a thousand digits
through the model on another thread, started with every open, competed for Python's lock with the UI thread
while the user switched models and drew, and between chunks the worker pauses so the UI thread gets the lock.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gui.background import start_background_thread
from gui.events import EventGroup
from gui.localize import translate
from nn_core.interface import ModelAdapter, folded_calibration, load_samples

BINS = 10
MNIST_SOURCE = "MNIST test digits"
PEN_SOURCE = "pen recordings"
PEN_DIR = Path(__file__).resolve().parent.parent / "tests" / "data" / "strokes"
MNIST_TEST_FILE = Path(__file__).resolve().parent.parent / "tests" / "data" / "mnist_sample.npz"
CLASSES = 10  # the samples are digits: only a model with ten classes is measured
PAUSE_SHARE = 0.5  # after each chunk the worker sleeps this share of the chunk's time (Python's lock is free then)


@dataclass
class ReliabilityBin:
    low: float
    high: float
    count: int
    confidence: float  # mean top probability of the predictions in the bin (0 when empty)
    accuracy: float  # share of them that are right (0 when empty)


@dataclass
class Reliability:
    """A reliability diagram's numbers: per-bin confidence vs accuracy, ECE, and where the digits came from."""

    bins: list[ReliabilityBin]
    ece: float
    accuracy: float
    mean_confidence: float
    samples: int
    sources: dict[str, int] = field(default_factory=dict)  # source name -> digits from it
    ece_by_source: dict[str, float] = field(default_factory=dict)
    temperature: str = ""  # how the model is calibrated, in words ("" when it is not)

    def summary(self) -> str:
        parts = ", ".join(f"{count} {name}" for name, count in self.sources.items())
        return (f"ECE {self.ece * 100:.1f} % · accuracy {self.accuracy * 100:.0f} % · mean confidence "
                f"{self.mean_confidence * 100:.0f} % on {self.samples} digits ({parts})")


def reliability(probabilities: np.ndarray, labels: np.ndarray, bins: int = BINS,
                sources: np.ndarray | None = None) -> Reliability:
    """The reliability of predictions ``probabilities`` (n, classes) against ``labels`` (n,) in ``bins`` equal
    confidence bins; ``sources`` (n,) names where each digit came from (ECE per source as well)."""
    probabilities = np.asarray(probabilities, np.float64)
    labels = np.asarray(labels, np.int64)
    n = len(labels)
    confidence = probabilities.max(axis=1) if n else np.zeros(0)
    correct = (probabilities.argmax(axis=1) == labels) if n else np.zeros(0, bool)
    which = np.minimum((confidence * bins).astype(np.int64), bins - 1)
    table = []
    for b in range(bins):
        mask = which == b
        count = int(mask.sum())
        table.append(ReliabilityBin(b / bins, (b + 1) / bins, count, float(confidence[mask].mean()) if count else 0.0,
                                    float(correct[mask].mean()) if count else 0.0))
    ece = sum(row.count * abs(row.confidence - row.accuracy) for row in table) / max(n, 1)
    result = Reliability(table, float(ece), float(correct.mean()) if n else 0.0,
                         float(confidence.mean()) if n else 0.0, n)
    if sources is not None:
        sources = np.asarray(sources)
        for name in dict.fromkeys(sources.tolist()):
            mask = sources == name
            result.sources[str(name)] = int(mask.sum())
            result.ece_by_source[str(name)] = reliability(probabilities[mask], labels[mask], bins).ece
    return result


def pen_samples(directory: Path = PEN_DIR) -> tuple[np.ndarray, np.ndarray]:
    """The pen recordings (JSON strokes on the app's canvas) as 28x28 images through the app's rasterizer, with
    their labels; empty when there are none (an installed app ships no tests)."""
    from gui.rasterize import rasterize

    images, labels = [], []
    for path in sorted(directory.glob("digit*.json")) if directory.is_dir() else []:
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
            strokes = [[(float(x), float(y)) for x, y in stroke] for stroke in doc["strokes"]]
            size = (int(doc["canvas_size"][0]), int(doc["canvas_size"][1]))
            images.append(np.asarray(rasterize(strokes, size), np.float32))
            labels.append(int(doc["label"]))
        except (OSError, ValueError, KeyError, TypeError):
            continue  # a broken recording is not a reason to show no diagram
    if not images:
        return np.zeros((0, 28, 28), np.float32), np.zeros(0, np.int64)
    return np.stack(images), np.array(labels, np.int64)


def mnist_test_samples(path: Path = MNIST_TEST_FILE) -> tuple[np.ndarray, np.ndarray]:
    """MNIST test digits (ink = 1) and labels: the checkout's 1,000 when present, else the 50 nn_core ships."""
    try:
        with np.load(path) as data:
            return data["test_images"].astype(np.float32) / 255.0, data["test_labels"].astype(np.int64)
    except (OSError, KeyError, ValueError):
        return load_samples()


_SAMPLES: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
_SAMPLES_LOCK = threading.Lock()


def calibration_samples() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Images (n, 28, 28) with ink = 1, labels (n,) and source names (n,): the shipped MNIST test digits and the
    pen recordings when present. Read once."""
    global _SAMPLES
    with _SAMPLES_LOCK:
        if _SAMPLES is None:
            mnist_images, mnist_labels = mnist_test_samples()
            pen_images, pen_labels = pen_samples()
            _SAMPLES = (np.concatenate([mnist_images, pen_images]).astype(np.float32),
                        np.concatenate([mnist_labels, pen_labels]).astype(np.int64),
                        np.array([MNIST_SOURCE] * len(mnist_labels) + [PEN_SOURCE] * len(pen_labels)))
        return _SAMPLES


def describe_temperature(adapter: ModelAdapter) -> str:
    """How the model's probabilities are calibrated, in words (in the user's language once the app has installed
    its translator in ``gui.localize``)."""
    temperature = getattr(adapter, "temperature", None)
    if temperature is not None:
        return translate("ModelSummary", "temperature {value} from the file's metadata").format(
            value=f"{temperature:g}")
    folded = folded_calibration(getattr(adapter, "metadata", {}) or {})
    if folded is not None:
        return translate("ModelSummary", "temperature {value} folded into {node}").format(
            value=f"{folded[0]:g}", node=folded[1])
    return translate("ModelSummary", "not calibrated (no temperature in the file)")


def measure(adapter: ModelAdapter, scaling: str | None = None, cancel: threading.Event | None = None,
            chunk: int = 50, pause: bool = False) -> Reliability | None:
    """The reliability of ``adapter``'s model on ``calibration_samples()`` (None when cancelled, or when the
    model's output is not ten classes). ``pause``: sleep between chunks (a background measurement beside a UI)."""
    images, labels, sources = calibration_samples()
    scaling = scaling or adapter.scaling
    rows = []
    for start in range(0, len(images), chunk):
        if cancel is not None and cancel.is_set():
            return None
        began = time.perf_counter()
        rows.append(adapter.predict_many(images[start:start + chunk], scaling))
        if pause:
            time.sleep((time.perf_counter() - began) * PAUSE_SHARE)
    probabilities = np.concatenate(rows)
    if probabilities.shape[1] != CLASSES:
        return None
    result = reliability(probabilities, labels, sources=sources)
    result.temperature = describe_temperature(adapter)
    return result


class CalibrationState:
    """The current model's reliability, measured off the UI thread whenever the model or its scaling changes.

    Events: ``reliability(Reliability or None)`` (None: nothing to show for this model), ``measuring(bool)``.
    With ``wanted`` False a change only marks the measurement ``pending``; it starts when ``set_wanted(True)`` or
    ``measure_pending()`` is called (the window: the model view is shown, or the app has been idle a moment).
    """

    def __init__(self, session: Any, wanted: bool = True) -> None:
        self.session = session
        self.events = EventGroup("reliability", "measuring")
        self.current: Reliability | None = None
        self.error: str | None = None
        self.measuring = False
        self.wanted = wanted
        self.pending = False  # the current model (and scaling) is still to be measured
        self._token: threading.Event | None = None
        session.events.model_changed.connect(lambda _opened: self.refresh())
        session.events.scaling_changed.connect(lambda _code, _source: self.refresh())

    def refresh(self) -> None:
        """Measure the session's current model (with its current scaling) in the background."""
        self.cancel()
        adapter = self.session.adapter
        self.current, self.error = None, None
        self.events.reliability.emit(None)
        trial = getattr(self.session, "trial", None)
        classes = getattr(trial, "probabilities", None)
        if adapter is None or classes is None or len(classes) != CLASSES:
            return  # the digits say nothing about a model of other classes (and an ImageNet net is slow)
        self.pending = True
        if self.wanted:
            self.measure_pending()

    def set_wanted(self, wanted: bool) -> None:
        """Whether the reliability is on screen: a pending measurement starts as soon as it is."""
        self.wanted = bool(wanted)
        if self.wanted:
            self.measure_pending()

    def measure_pending(self) -> bool:
        """Start the pending measurement of the current model, if any; returns whether one started."""
        adapter = self.session.adapter
        if not self.pending or adapter is None:
            return False
        self.pending = False
        token = self._token = threading.Event()
        scaling = adapter.scaling
        pause = not self.wanted  # nobody is looking: leave the interpreter to the UI between chunks
        self._set_measuring(True)

        def work() -> None:
            try:
                outcome: Reliability | str | None = measure(adapter, scaling, token, pause=pause)
            except Exception as exc:  # noqa: BLE001 - a model that fails on a digit shows why, not a traceback
                outcome = f"{type(exc).__name__}: {exc}"
            self._in_owner(lambda: self._done(token, outcome))

        start_background_thread(work, "digitscope-calibration")
        return True

    def cancel(self) -> None:
        self.pending = False
        if self._token is not None:
            self._token.set()
            self._token = None
        self._set_measuring(False)

    def close(self) -> None:
        self.cancel()

    def _set_measuring(self, measuring: bool) -> None:
        if measuring != self.measuring:
            self.measuring = measuring
            self.events.measuring.emit(measuring)

    def _in_owner(self, function) -> None:
        if threading.get_ident() == getattr(self.session, "_owner", None):
            function()
        else:
            self.session.dispatch(function)

    def _done(self, token: threading.Event, outcome: Reliability | str | None) -> None:
        if token.is_set() or token is not self._token:
            return  # for a model or scaling since replaced
        self._token = None
        self._set_measuring(False)
        if isinstance(outcome, str):
            self.error = outcome
            outcome = None
        self.current = outcome
        self.events.reliability.emit(outcome)

    def wait(self, timeout: float = 30.0) -> Reliability | None:
        """Scripts and tests with a ``QueueDispatcher``: pump hand-overs until the measurement is in."""
        import time

        deadline = time.monotonic() + timeout
        while self.measuring and time.monotonic() < deadline:
            self.session.process_pending(wait=0.05)
        return self.current
