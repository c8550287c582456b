"""Teach the recognizer your handwriting, without Qt: the examples you label, and personalizing the model on them.

``ExampleStore`` keeps one person's examples in a directory (the app passes Qt's AppDataLocation): one JSON file
per example, written the moment it is taught (atomically: a crash loses nothing taught before it), holding the
strokes as drawn and the 28x28 image the model was fed.

``Teacher`` ties the store to a ``gui.session.Session``: ``teach(label)`` labels the current drawing; the
gallery is ``teacher.examples``; ``personalize()`` fine-tunes the current model (``nn_core.finetune``) on the
examples in the background with progress and cancel, measures before and after — on the examples, each held
out of the model that predicts it (k-fold, leave-one-out for up to 5 examples), and on the shipped MNIST
digits, so forgetting is visible — and installs the personal model; ``revert()`` goes back to the original,
``save(path)`` writes the personal model as ONNX with its provenance in the metadata.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gui.background import start_background_thread
from gui.events import EventGroup
from gui.localize import translate
from gui.model_opening import OpenedModel
from gui.prediction import run_prediction
from nn_core.interface import META_INPUT_SCALE, ModelAdapter, load_samples

MAX_FOLDS = 5  # held-out evaluation: at most this many extra fine-tunes
TICKS = 100  # progress units per fine-tune (nn_core.finetune reports each step; Cancel stops it there)
META_BASE = "personal_base_model"
META_EXAMPLES = "personal_examples"
META_DATE = "personal_date"


@dataclass
class Example:
    """One taught drawing: its label, its strokes (canvas coordinates) and the 28x28 image (ink = 1)."""

    id: str
    label: int
    image: np.ndarray
    strokes: list[dict] = field(default_factory=list)  # {"points": [[x, y], ...], "width": w}
    canvas_size: tuple[int, int] = (280, 280)
    created: str = ""

    def to_json(self) -> dict:
        return {"format": "digitscope-example", "version": 1, "id": self.id, "label": int(self.label),
                "created": self.created, "canvas_size": list(self.canvas_size), "strokes": self.strokes,
                "image": np.round(np.clip(self.image, 0, 1) * 255).astype(int).tolist()}

    @classmethod
    def from_json(cls, data: dict) -> Example:
        image = np.asarray(data["image"], np.float32) / 255.0
        if image.shape != (28, 28):
            raise ValueError(f"image of shape {image.shape}, expected 28x28")
        return cls(str(data["id"]), int(data["label"]), image, list(data.get("strokes", [])),
                   tuple(data.get("canvas_size", (280, 280))), str(data.get("created", "")))


class ExampleStore:
    """A directory of examples, one ``<id>.json`` each; every change is on disk when the call returns."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)  # made when the first example is written
        self.skipped: list[str] = []  # files that could not be read (kept, not deleted)
        self._examples = self._load()

    def _load(self) -> list[Example]:
        examples: list[Example] = []
        if not self.directory.is_dir():
            return examples
        for path in sorted(self.directory.glob("*.json")):
            try:
                examples.append(Example.from_json(json.loads(path.read_text(encoding="utf-8"))))
            except (OSError, ValueError, KeyError, TypeError, RecursionError) as exc:
                self.skipped.append(f"{path.name}: {exc}")
        examples.sort(key=lambda e: (e.created, e.id))
        return examples

    @property
    def examples(self) -> list[Example]:
        return list(self._examples)

    def __len__(self) -> int:
        return len(self._examples)

    def add(self, label: int, image: np.ndarray, strokes: list[dict], canvas_size: tuple[int, int]) -> Example:
        now = _dt.datetime.now(_dt.timezone.utc)
        example = Example(f"{now:%Y%m%dT%H%M%S%f}-{uuid.uuid4().hex[:6]}", int(label),
                          np.asarray(image, np.float32).copy(), strokes, tuple(canvas_size), now.isoformat())
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / f"{example.id}.json"
        partial = path.with_suffix(".json.part")
        with open(partial, "w", encoding="utf-8") as handle:
            json.dump(example.to_json(), handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(partial, path)  # atomic: the file is whole or absent
        self._examples.append(example)
        return example

    def remove(self, example_id: str) -> bool:
        for example in self._examples:
            if example.id == example_id:
                (self.directory / f"{example_id}.json").unlink(missing_ok=True)
                self._examples.remove(example)
                return True
        return False

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """Images (n, 28, 28) and labels (n,)."""
        if not self._examples:
            return np.zeros((0, 28, 28), np.float32), np.zeros(0, np.int64)
        return (np.stack([e.image for e in self._examples]).astype(np.float32),
                np.array([e.label for e in self._examples], np.int64))


@dataclass
class Evaluation:
    """Before/after figures of one personalization (shares of images read right)."""

    examples: int
    own_before: float  # the original model on the examples
    own_held_out: float  # models fine-tuned without each example, on it (k-fold)
    own_after: float  # the personal model on the examples it learnt
    mnist_before: float
    mnist_after: float
    mnist_count: int
    folds: int
    seconds: float = 0.0

    def summary(self) -> str:
        return translate("Teacher", "Your {count} examples: {before} before → {after} after (each held out) · "
                         "MNIST digits: {mnist_before} → {mnist_after} ({mnist_count} shipped)").format(
            count=self.examples, before=f"{self.own_before:.0%}", after=f"{self.own_held_out:.0%}",
            mnist_before=f"{self.mnist_before:.0%}", mnist_after=f"{self.mnist_after:.0%}",
            mnist_count=self.mnist_count)


class Cancelled(Exception):
    pass


class Teacher:
    """The examples of one user and the personal model, for one session (see the module docstring).

    Events: ``examples_changed()``, ``personalizing(bool)``, ``progress(done, total, text)``,
    ``personalized(Evaluation)``, ``personal_changed(bool)`` (the personal model is installed or not).
    """

    def __init__(self, session: Any, directory: str | os.PathLike[str]) -> None:
        self.session = session
        self.directory = Path(directory)
        self.store = ExampleStore(self.directory / "examples")
        self.events = EventGroup("examples_changed", "personalizing", "progress", "personalized",
                                 "personal_changed")
        self.base: OpenedModel | None = None  # the model personalized from, while the personal one is installed
        self.personal: OpenedModel | None = None
        self.evaluation: Evaluation | None = None
        self.running = False
        self.last_error: str | None = None
        self._cancel: threading.Event | None = None
        self._done = threading.Event()
        self._done.set()
        self._current: OpenedModel | None = None
        session.events.model_changed.connect(self._on_model_changed)

    # --- the gallery ---------------------------------------------------------------------------------------
    @property
    def examples(self) -> list[Example]:
        return self.store.examples

    def teach(self, label: int) -> Example | None:
        """Label the current drawing ``label`` ("Wrong? It's a …"); saved at once. None when nothing is drawn."""
        session = self.session
        if not session.document.has_ink():
            return None
        image = session.image if session.image is not None else session.rasterize()
        strokes = [{"points": [list(map(float, p)) for p in stroke.points], "width": float(stroke.width)}
                   for stroke in session.document.visible_strokes()]
        example = self.store.add(label, image, strokes, tuple(session.document.size))
        self.events.examples_changed.emit()
        return example

    def remove(self, example_id: str) -> bool:
        removed = self.store.remove(example_id)
        if removed:
            self.events.examples_changed.emit()
        return removed

    # --- the personal model --------------------------------------------------------------------------------
    @property
    def personal_installed(self) -> bool:
        return self.personal is not None and self._current is self.personal

    def _on_model_changed(self, opened: OpenedModel) -> None:
        self._current = opened
        if self.personal is not None and opened is not self.personal and opened is not self.base:
            self.personal = self.base = None  # another model was opened: start over from it
        self.events.personal_changed.emit(self.personal_installed)

    def personalize(self) -> bool:
        """Start fine-tuning the current model on the examples in the background; False (with the reason in
        ``last_error``) when it cannot start."""
        session = self.session
        if self.running:
            self.last_error = translate("Teacher", "a personalization is already running")
            return False
        base = self.base if self.personal_installed else self._current
        if base is None or session.adapter is None:
            self.last_error = translate("Teacher", "no model is open")
            return False
        images, labels = self.store.arrays()
        if len(labels) == 0:
            self.last_error = translate("Teacher", "teach some examples first: draw a digit and press its key")
            return False
        self.running = True
        self.last_error = None
        cancel = self._cancel = threading.Event()
        self._done.clear()
        self.events.personalizing.emit(True)
        scaling = base.adapter.scaling

        def report(done: int, total: int, text: str) -> None:
            self._in_owner(lambda: None if cancel.is_set() else self.events.progress.emit(done, total, text))

        def work() -> None:
            try:
                outcome: Any = _personalize(base, scaling, images, labels, cancel, report,
                                            self.directory / "personal")
            except Cancelled:
                outcome = None
            except Exception as exc:  # noqa: BLE001 - shown to the user: "cannot fine-tune: <reason>"
                outcome = f"{exc}"
            self._in_owner(lambda: self._finished(base, outcome, cancel))

        start_background_thread(work, "digitscope-personalize")
        return True

    def _in_owner(self, function) -> None:
        if threading.get_ident() == getattr(self.session, "_owner", None):
            function()
        else:
            self.session.dispatch(function)

    def cancel(self) -> bool:
        """Stop the personalization under way (its result is dropped); the current model stays."""
        if not self.running or self._cancel is None:
            return False
        self._cancel.set()
        self._end()
        return True

    def _end(self) -> None:
        self.running = False
        self._done.set()
        self.events.personalizing.emit(False)

    def _finished(self, base: OpenedModel, outcome: Any, cancel: threading.Event) -> None:
        if cancel.is_set():
            return  # cancelled: already ended
        if outcome is None:
            self._end()
            return
        if isinstance(outcome, str):
            self.last_error = translate("Teacher", "Cannot personalize {name}: {error}").format(
                name=base.path.name, error=outcome)
            self._end()
            self.session.report_error(self.last_error)
            return
        opened, evaluation = outcome
        self.evaluation = evaluation
        self.base, self.personal = base, opened
        self.session.install(opened)
        self._end()
        self.events.personalized.emit(evaluation)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the personalization has finished (not for the UI thread with a Qt dispatcher)."""
        return self._done.wait(timeout)

    def revert(self) -> bool:
        """Go back to the model the personal one was made from."""
        if not self.personal_installed or self.base is None:
            return False
        self.session.install(self.base)
        return True

    def reinstall(self) -> bool:
        """Use the personal model again after a revert."""
        if self.personal is None or self.personal_installed:
            return False
        self.session.install(self.personal)
        return True

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the personal model as ONNX (metadata: base model, examples, date, input scaling)."""
        if self.personal is None:
            raise ValueError(translate("Teacher", "there is no personal model yet: personalize first"))
        path = Path(path)
        self.personal.model.save(path)
        return path


def _personalize(base: OpenedModel, scaling: str, images: np.ndarray, labels: np.ndarray,
                 cancel: threading.Event, report, directory: Path) -> tuple[OpenedModel, Evaluation]:
    """The worker: held-out evaluation, the final fine-tune, the personal model ready to install."""
    import time

    import nn_core

    started = time.perf_counter()
    adapter = ModelAdapter(base.model)
    adapter.set_scaling(scaling, base.adapter.scaling_source)
    if not adapter.layout.dynamic_batch:
        raise nn_core.ModelError(translate("Teacher", "its input {layout} takes a fixed batch; fine-tuning needs "
                                           "a model whose batch axis is free").format(
            layout=adapter.layout.describe()))
    feeds = adapter.make_batch_feeds(images, scaling)[adapter.layout.input_name]
    mnist_images, mnist_labels = load_samples()
    n = len(labels)
    folds = min(n, MAX_FOLDS) if n >= 2 else 0
    total = (folds + 2) * TICKS  # a stage per fine-tune (and one to measure), each in TICKS: a smooth bar
    report(0, total, translate("Teacher", "Measuring the model as it is…"))

    def steps(stage: int, text: str):
        """finetune's per-step callback for ``stage``: progress within it, and True (stop now) once cancelled."""
        def callback(step: int, count: int) -> bool:
            report(stage * TICKS + min(TICKS - 1, step * TICKS // max(count, 1)), total, text)
            return cancel.is_set()
        return callback

    def accuracy(which: ModelAdapter, pictures: np.ndarray, truth: np.ndarray) -> float:
        return float(np.mean(np.argmax(which.predict_many(pictures, scaling), axis=1) == truth)) if len(truth) \
            else 0.0

    own_before = accuracy(adapter, images, labels)
    mnist_before = accuracy(adapter, mnist_images, mnist_labels)
    report(TICKS, total, translate("Teacher", "Held-out check…"))
    held_right = 0
    order = np.random.default_rng(0).permutation(n)
    for fold in range(folds):
        if cancel.is_set():
            raise Cancelled
        out = order[fold::folds]
        keep = np.setdiff1d(np.arange(n), out)
        text = translate("Teacher", "Held-out check {fold} of {folds}…").format(fold=fold + 1, folds=folds)
        tuned = nn_core.finetune(base.model, feeds[keep], labels[keep], callback=steps(1 + fold, text))
        if cancel.is_set():
            raise Cancelled
        check = ModelAdapter(tuned)
        check.set_scaling(scaling)
        held_right += int(np.sum(np.argmax(check.predict_many(images[out], scaling), axis=1) == labels[out]))
        report((2 + fold) * TICKS, total, text)
    if cancel.is_set():
        raise Cancelled
    learning = translate("Teacher", "Learning your examples…")
    report((1 + folds) * TICKS, total, learning)
    personal = nn_core.finetune(base.model, feeds, labels, callback=steps(1 + folds, learning))
    if cancel.is_set():
        raise Cancelled
    personal.metadata.update({META_BASE: base.path.name, META_EXAMPLES: str(n),
                              META_DATE: _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                              META_INPUT_SCALE: scaling})
    personal_adapter = ModelAdapter(personal)
    personal_adapter.set_scaling(scaling, "metadata")
    own_after = accuracy(personal_adapter, images, labels)
    mnist_after = accuracy(personal_adapter, mnist_images, mnist_labels)
    trial = run_prediction(personal_adapter, np.zeros((28, 28), np.float32))
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{base.path.stem}-personal.onnx"
    personal.save(path)  # the personal model survives a crash too (and File > Open recent finds it)
    opened = OpenedModel(path, personal, personal_adapter, f"personal:{base.key}:{n}", trial)
    opened.layout = getattr(base, "layout", None)
    report(total, total, translate("Teacher", "Done"))
    evaluation = Evaluation(n, own_before, held_right / n if folds else own_after, own_after, mnist_before,
                            mnist_after, len(mnist_labels), folds, time.perf_counter() - started)
    return opened, evaluation
