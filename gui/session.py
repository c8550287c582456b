"""The app without its windows: one ``Session`` owns everything the views show, and tells them by events (no Qt).

It owns the stroke document, the current model and its image <-> model interface (``nn_core.interface``), the
numbered predictions, the selected node, the settings it remembers, and the background work (opening a model,
predicting on a slow model, auto-detecting the scaling). Views subscribe to ``session.events`` and call its
methods; the window only arranges them and maps actions to methods.

Threads: every event is emitted in the session's own thread (the one that made it: the UI thread in the app).
Work finished on a worker thread is handed back through ``dispatch`` (``gui.qt_bridge.QtDispatcher`` in the
app, ``gui.events.QueueDispatcher`` in scripts and tests, pumped with ``run_pending``).

Numbered predictions, latest drawing wins, always: every change of the drawing (or of what it is fed through:
the model, the scaling) gets a new number, each prediction carries the number of the drawing it was made for,
and a prediction is shown only if it is newer than the one on screen and not void (made before a clear, a
scaling change or a model switch). A slow model may show the previous drawing's bars for a moment
(``stale``), never an older one after a newer.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from gui.background import start_background_thread
from gui.events import Dispatch, EventGroup, QueueDispatcher
from gui.graph_layout import layout_graph
from gui.localize import translate
from gui.model_opening import ModelOpener, OpenedModel, OpenResult, prepare_model
from gui.prediction import Prediction
from gui.predictor import ChunkPacer, Predictor
from gui.settings import AppSettings
from gui.strokes import Point, StrokeDocument
from nn_core.interface import SCALINGS, ModelAdapter, ScalingReport, load_samples

DETECT_CHUNK = 10  # images per run while auto-detecting: progress and cancellation between chunks
GUESS_CLASSES = 10  # a model without a declared scaling is auto-detected on open when it has this many classes
# where a scaling comes from (adapter.scaling_source) when it is a guess, not the file's word or the user's choice:
# "default" = 0..1 assumed, "guessed" = auto-detected on open, "auto-detect" = the user's Ctrl+D
GUESSED_SOURCES = ("default", "guessed", "auto-detect")


def clean_error(message: str, path: str | Path | None = None) -> str:
    """The engine's message said once, for a line that already names ``path``: leading copies of the file's
    path or name ("m.onnx: m.onnx: ...") are dropped, "m.onnx loads but ..." reads "it loads but ...", and
    parentheses inside parentheses become commas ("(it looks like a page (saved ...))" -> "(..., saved ...)")."""
    text = message.strip()
    if path is not None:
        path = Path(path)
        names = {str(path), path.name}
        try:
            names.add(str(path.resolve()))
        except OSError:
            pass
        names.discard("")
        changed = True
        while changed:
            changed = False
            for name in sorted(names, key=len, reverse=True):
                for prefix in (f"{name}: ", f"'{name}': ", f"{name!r}: "):
                    if text.startswith(prefix):
                        text, changed = text[len(prefix):].lstrip(), True
            if not changed and text.startswith(f"{path.name} "):
                text = "it " + text[len(path.name) + 1:]
    return flatten_parentheses(text)


def flatten_parentheses(text: str) -> str:
    """``a (b (c) d)`` -> ``a (b, c, d)``: one level of parentheses at most (unbalanced text is left alone)."""
    depth, out = 0, []
    for char in text:
        if char == "(":
            depth += 1
            if depth > 1:
                while out and out[-1] == " ":
                    out.pop()
                out.append(", ")
                continue
        elif char == ")":
            if depth == 0:
                return text
            depth -= 1
            if depth >= 1:
                out.append("\0")  # a closing inner parenthesis: a comma if more follows, else nothing
                continue
        out.append(char)
    if depth:
        return text
    joined = "".join(out)
    joined = joined.replace("\0)", ")").replace("\0 ", ", ").replace("\0,", ",").replace("\0", "")
    return joined.replace(", ,", ",")


def prepare_with_layout(path: Path, remembered: dict[str, str]) -> OpenedModel:
    """``prepare_model`` plus the graph view's layout, both on the opening worker thread."""
    opened = prepare_model(path, remembered)
    opened.layout = layout_graph(opened.model.nodes)
    return opened

EVENTS = (
    "opening",  # (path): a model file started opening in the background
    "open_ended",  # (generation, ok): an open finished, failed, was cancelled or superseded
    "model_changed",  # (OpenedModel): a new model is installed
    "drawing_changed",  # (drawing number): the strokes changed
    "input_image",  # (image at the model's size, ink = 1, or None): what the model is being fed
    "prediction",  # (Prediction or None): the probabilities and traced records to show; None: nothing drawn
    "scaling_changed",  # (code, source)
    "detecting",  # (bool): auto-detection started / ended
    "detect_progress",  # (done, total): images tried so far by the auto-detection under way
    "scaling_detected",  # (ScalingReport): auto-detect's verdict (guessed on open, or asked for with Ctrl+D)
    "selection_changed",  # (node name or None, map index)
    "recent_changed",  # (list of paths)
    "error",  # (message): something the user must see; the app keeps working
)


def bundled_model_path() -> Path:
    """The LeNet-5 that ships with the app: assets/lenet5.onnx in a checkout, gui/assets/ in an installed wheel."""
    here = Path(__file__).resolve().parent
    for candidate in (here.parent / "assets" / "lenet5.onnx", here / "assets" / "lenet5.onnx"):
        if candidate.exists():
            return candidate
    raise FileNotFoundError("the bundled model (assets/lenet5.onnx) is missing from this installation")


class Session:
    """Document, model, predictions, selection and settings of one app window, with events for the views."""

    def __init__(self, settings: AppSettings | None = None, predictor_mode: str = "auto",
                 dispatch: Dispatch | None = None, document: StrokeDocument | None = None) -> None:
        self.settings = settings if settings is not None else AppSettings()
        self.document = document if document is not None else StrokeDocument()
        self.dispatch: Dispatch = dispatch if dispatch is not None else QueueDispatcher()
        self.events = EventGroup(*EVENTS)
        self._owner = threading.get_ident()

        self.model: Any = None
        self.adapter: ModelAdapter | None = None
        self.model_path: Path | None = None
        self.model_key: str | None = None
        self.trial: Prediction | None = None  # the new model's run on a blank image (layer list and shapes)
        self.predictor = Predictor(self._from_predictor, predictor_mode)
        self.opener = ModelOpener(notify=lambda generation: self._in_owner(lambda: self._open_ready(generation)))
        self._requested = 0  # the generation of the latest requested open
        self._outcomes: dict[int, bool] = {}  # generation -> installed or not, once ended

        self.prediction: Prediction | None = None  # the one on screen
        self.drawing = 0  # the current drawing's number
        self._floor = 0  # predictions for drawings numbered below this are void
        self.image: np.ndarray | None = None  # the current 28x28 drawing, once rasterized
        self.selection: tuple[str, int] | None = None  # (node name, map index or -1)
        self.detecting = False
        self.guessing = False  # the detection under way is the automatic guess on open (not remembered)
        self.guess_on_open = True  # auto-detect the scaling of a model that declares none, when it is opened
        self.scaling_report: ScalingReport | None = None  # the last auto-detection's verdict for this model
        self._detect_cancel: threading.Event | None = None
        self.trace_wanted = True  # a view shows every node's outputs (activations, graph): predict them too
        self.last_error: str | None = None

    # --- threads -------------------------------------------------------------------------------------------
    def _in_owner(self, function: Callable[[], None]) -> None:
        if threading.get_ident() == self._owner:
            function()
        else:
            self.dispatch(function)

    def process_pending(self, wait: float = 0.0) -> int:
        """With a ``QueueDispatcher``: run the hand-overs from worker threads now (scripts and tests)."""
        if isinstance(self.dispatch, QueueDispatcher):
            return self.dispatch.run_pending(wait)
        return 0

    def close(self) -> None:
        """Stop the background work: an open under way is dropped, the prediction worker ends."""
        self.opener.cancel()
        self.cancel_detection()
        self.predictor.shutdown()

    # --- errors --------------------------------------------------------------------------------------------
    def report_error(self, message: str) -> None:
        self.last_error = message
        self.events.error.emit(message)

    # --- opening models ------------------------------------------------------------------------------------
    def open_model(self, path: str | Path) -> int:
        """Start opening ``path`` in the background (load, adapt, one trial run); returns its generation.

        The latest request wins: an open still under way is superseded (it ends with ``ok=False``). The
        current model keeps working meanwhile; on failure it stays and ``error`` is emitted.
        """
        path = Path(path)
        previous = self._requested if self.opener.busy() else None
        remembered = self.settings.remembered_scalings()
        self._requested = self.opener.open(path, lambda p: prepare_with_layout(p, remembered))
        if previous is not None:
            self._end_open(previous, False)
        self.events.opening.emit(path)
        return self._requested

    @property
    def opening(self) -> Path | None:
        """The model file being opened, or None."""
        return self.opener.pending_path if self.opener.busy() else None

    def outcome(self, generation: int | None = None) -> bool | None:
        """How open ``generation`` (default: the latest requested) ended; None while under way."""
        return self._outcomes.get(self._requested if generation is None else generation)

    def wait_for_open(self, timeout: float | None = None) -> bool | None:
        """Block until the latest requested open has ended and been applied; returns its outcome (None on timeout).

        For scripts and tests without an event loop; the window waits with its event loop running instead.
        """
        generation = self._requested
        if self.opener.busy() and self.opener.wait(generation, timeout):
            result = self.opener.take(generation)
            if result is not None:
                self._finish_open(result)
        return self.outcome(generation)

    def cancel_open(self) -> Path | None:
        """Give up on the open under way (its result is dropped when it arrives); returns its file, if any."""
        path = self.opening
        if not self.opener.cancel():
            return None
        self._end_open(self._requested, False)
        return path

    def _open_ready(self, generation: int) -> None:
        result = self.opener.take(generation)  # None when cancelled, superseded or already applied by a wait
        if result is not None:
            self._finish_open(result)

    def _finish_open(self, result: OpenResult) -> None:
        if result.opened is None:
            error = clean_error(result.error or translate("Session", "unknown error"), result.path)  # names the file
            self.report_error(translate("Session", "Could not open {name}: {error}").format(name=result.path.name,
                                                                                          error=error))
            self._end_open(result.generation, False)
            return
        self.install(result.opened)
        self._end_open(result.generation, True)

    def _end_open(self, generation: int, ok: bool) -> None:
        if generation in self._outcomes:
            return
        self._outcomes[generation] = ok
        for old in [g for g in self._outcomes if g < generation - 16]:
            del self._outcomes[old]
        self.events.open_ended.emit(generation, ok)

    def install(self, opened: OpenedModel) -> None:
        """Make ``opened`` the current model (the previous one is released) and predict the drawing with it."""
        self.cancel_detection()  # its answer would be for the previous model
        if getattr(opened, "layout", None) is None:
            opened.layout = layout_graph(opened.model.nodes)
        self.model, self.adapter, self.model_path, self.model_key = (opened.model, opened.adapter, opened.path,
                                                                      opened.key)
        self.trial = opened.trial
        self.scaling_report = None
        self.predictor.set_adapter(opened.adapter, opened.trial.seconds)
        self.prediction = None
        self.last_error = None
        if self.selection is not None:
            self.select(None)
        self.events.recent_changed.emit(self.settings.remember_recent(opened.path))
        self.events.model_changed.emit(opened)
        self.refresh()
        if self.guess_on_open and self._worth_guessing(opened):
            self.auto_detect_scaling(guess=True)

    @staticmethod
    def _worth_guessing(opened: OpenedModel) -> bool:
        """A model whose scaling is only assumed (no metadata, nothing remembered) and whose output is ten
        classes: the MNIST digits can tell its pixel convention (an ImageNet net's 1000 classes cannot)."""
        probabilities = getattr(opened.trial, "probabilities", None)
        return opened.adapter.scaling_source == "default" and probabilities is not None \
            and len(probabilities) == GUESS_CLASSES

    # --- the drawing and its predictions -------------------------------------------------------------------
    def drawing_changed(self) -> None:
        """The strokes changed (the canvas edited the document): number the new drawing and predict it."""
        self.drawing += 1
        self.events.drawing_changed.emit(self.drawing)
        self._predict()

    def refresh(self) -> None:
        """Predict the same drawing again with a changed model or scaling; earlier predictions are void."""
        self.drawing += 1
        self._floor = self.drawing
        self._predict()

    def draw(self, points: list[Point], width: float = 18.0, eraser: bool = False) -> None:
        """Add one stroke through ``points`` (canvas coordinates) as a pen would, predicting once at the end."""
        if not points:
            return
        self.document.begin_stroke(points[0], width, eraser=eraser)
        for point in points[1:]:
            self.document.extend_stroke(point)
        self.document.end_stroke()
        self.drawing_changed()

    def clear(self) -> None:
        if self.document.clear():
            self.drawing_changed()

    def rasterize(self) -> np.ndarray:
        """The drawing as the 28x28 image (ink = 1) the model is fed."""
        from gui import rasterize

        strokes = [list(stroke.points) for stroke in self.document.visible_strokes()]
        image = rasterize.rasterize(strokes, self.document.size, pen_width=self.document.ink_pen_width())
        return np.asarray(image, dtype=np.float32)

    def _predict(self) -> None:
        if self.adapter is None:
            return
        if not self.document.has_ink():
            self._floor = self.drawing
            self.image = self.prediction = None
            self.events.input_image.emit(None)
            self.events.prediction.emit(None)
            return
        try:
            image = self.rasterize()
        except Exception as exc:  # noqa: BLE001 - a rasterizer bug must not take the app down mid-stroke
            self.report_error(translate("Session", "Could not rasterize the drawing: {error}").format(
                error=f"{type(exc).__name__}: {exc}"))
            return
        self.image = image
        self.events.input_image.emit(self.adapter.model_image(image))
        self.predictor.submit(image, self.drawing, traced=self.trace_wanted)

    def _from_predictor(self, prediction: Prediction) -> None:
        self._in_owner(lambda: self._accept(prediction))

    def _accept(self, prediction: Prediction) -> None:
        if prediction.generation != self.predictor.generation or prediction.drawing < self._floor:
            return  # from a replaced model, or for a drawing since cleared or fed differently
        if not self.document.has_ink():
            return
        if self.prediction is not None and prediction.drawing <= self.prediction.drawing:
            # an older drawing than the one on screen: latest drawing wins; the same drawing only when it brings
            # the traced run's outputs to bars that came from the fused run
            if prediction.drawing < self.prediction.drawing or self.prediction.traced or not prediction.traced:
                return
        if prediction.error:
            self.report_error(translate("Session", "The model failed on this drawing: {error}").format(
                error=prediction.error))
            return
        self.prediction = prediction
        self.events.prediction.emit(prediction)

    @property
    def probabilities(self) -> np.ndarray | None:
        """The latest class probabilities, or None when nothing is drawn (or no model works)."""
        if self.prediction is None or not self.document.has_ink():
            return None
        return self.prediction.probabilities

    @property
    def stale(self) -> bool:
        """True while the prediction on screen is for an earlier drawing than the current one."""
        return self.prediction is not None and self.prediction.drawing < self.drawing

    def set_trace_wanted(self, wanted: bool) -> None:
        """Whether a view shows every node's outputs; when one appears, the drawing on screen is traced now."""
        self.trace_wanted = bool(wanted)
        if wanted and self.prediction is not None and not self.prediction.traced and self.image is not None \
                and self.document.has_ink():
            self.predictor.submit(self.image, self.drawing, traced=True, bars=False)

    @property
    def computing(self) -> bool:
        """The bars on screen are older than the drawing (a slow model is still working on it)."""
        return self.document.has_ink() and (self.prediction is None or self.stale)

    @property
    def up_to_date(self) -> bool:
        """The prediction on screen is for the current drawing (or nothing is drawn) and nothing is pending."""
        if not self.document.has_ink():
            return self.prediction is None
        return self.prediction is not None and not self.stale and self.predictor.is_idle()

    # --- scaling -------------------------------------------------------------------------------------------
    def set_scaling(self, code: str, source: str = "user") -> bool:
        """Feed the current model with pixel convention ``code``, remembered for this model; re-predicts.

        The user's choice wins over an auto-detection under way (it is cancelled, its verdict dropped). A guess
        made on open (``source="guessed"``) is not remembered: the next open guesses again, badge and all.
        """
        if self.adapter is None or code not in SCALINGS:
            return False
        if source == "user":
            self.cancel_detection()
        self.adapter.set_scaling(code, source)
        if self.model_key and source != "guessed":
            self.settings.remember_scaling(self.model_key, code)
        self.events.scaling_changed.emit(code, source)
        self.refresh()
        return True

    @property
    def scaling_guessed(self) -> bool:
        """The current scaling is a guess (assumed 0..1, or auto-detected), not the file's word or the user's."""
        return self.adapter is not None and self.adapter.scaling_source in GUESSED_SOURCES

    def auto_detect_scaling(self, guess: bool = False) -> bool:
        """Try every scaling on the shipped MNIST digits in the background and keep the best (for this model).

        Reports ``detect_progress(done, total)`` as it goes; ``cancel_detection`` (or installing another model,
        or the user choosing a scaling) stops it between chunks and drops its verdict. ``guess=True`` is the
        automatic guess on open: its verdict is used (source "guessed") but not remembered. Asked for while that
        guess runs, the detection under way becomes the user's (remembered). Returns False when there is no
        model or a detection is already running.
        """
        adapter = self.adapter
        if adapter is None:
            return False
        if self.detecting:
            if self.guessing and not guess:
                self.guessing = False  # the user asked for what is running: keep its verdict
                return True
            return False
        self.detecting = True
        self.guessing = guess
        cancel = self._detect_cancel = threading.Event()
        self.events.detecting.emit(True)

        def progress(done: int, total: int) -> None:
            self._in_owner(lambda: None if cancel.is_set() else self.events.detect_progress.emit(done, total))

        def work() -> None:
            try:
                report: ScalingReport | str | None = detect_scaling(adapter, cancel, progress)
            except Exception as exc:  # noqa: BLE001 - reported to the user
                report = f"{type(exc).__name__}: {exc}"
            self._in_owner(lambda: self._detected(adapter, report, cancel))

        start_background_thread(work, "digitscope-autodetect")
        return True

    def cancel_detection(self) -> bool:
        """Stop the auto-detection under way (its result is dropped). Returns whether one was running."""
        if not self.detecting or self._detect_cancel is None:
            return False
        self._detect_cancel.set()
        self.detecting = self.guessing = False
        self.events.detecting.emit(False)
        return True

    def _detected(self, adapter: ModelAdapter, report: ScalingReport | str | None, cancel: threading.Event) -> None:
        if cancel.is_set() or cancel is not self._detect_cancel:
            return  # cancelled (the detecting event was sent then)
        guessed = self.guessing
        self.detecting = self.guessing = False
        self.events.detecting.emit(False)
        if adapter is not self.adapter or report is None:
            return  # the model changed meanwhile
        if isinstance(report, str):
            self.report_error(translate("Session", "Auto-detect failed: {error}").format(error=report))
            return
        self.scaling_report = report
        self.set_scaling(report.best, "guessed" if guessed else "auto-detect")
        self.events.scaling_detected.emit(report)

    # --- selection -----------------------------------------------------------------------------------------
    def select(self, node: str | None, map_index: int = -1) -> None:
        """Select a node of the model (and one of its maps), or nothing; views that show nodes follow."""
        selection = None if node is None else (node, map_index)
        if selection != self.selection:
            self.selection = selection
            self.events.selection_changed.emit(node, map_index)

    # --- recent files --------------------------------------------------------------------------------------
    def recent_models(self) -> list[str]:
        return self.settings.recent_models()


def detect_scaling(adapter: ModelAdapter, cancel: threading.Event | None = None,
                   progress: Callable[[int, int], None] | None = None) -> ScalingReport | None:
    """``nn_core.interface.auto_detect_scaling`` in chunks, with progress and cancellation (None when cancelled)."""
    images, labels = load_samples()
    total = len(SCALINGS) * len(images)
    accuracy: dict[str, float] = {}
    done, pacer = 0, ChunkPacer(DETECT_CHUNK)  # one image per run on a big model: progress shows, cancel is quick
    for code in SCALINGS:
        correct = 0
        failed = False
        for chunk in pacer.slices(len(images)):
            if cancel is not None and cancel.is_set():
                return None
            if not failed:
                try:
                    probabilities = adapter.predict_many(images[chunk], code)
                    correct += int(np.sum(np.argmax(probabilities, axis=1) == labels[chunk]))
                except Exception:  # noqa: BLE001 - a scaling the model cannot take scores zero, as in nn_core
                    failed = True
            done += len(images[chunk])
            if progress is not None:
                progress(done, total)
        accuracy[code] = 0.0 if failed else correct / len(images)
    order = [adapter.scaling] + [code for code in SCALINGS if code != adapter.scaling]
    best = max(order, key=lambda code: (accuracy[code], -order.index(code)))
    return ScalingReport(best=best, accuracy=accuracy, samples=len(labels))
