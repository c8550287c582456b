"""The "why this digit?" overlay's state, without Qt: what to explain, and a worker that explains it live.

``ExplainState`` follows the session: every new prediction (while the overlay is on) asks its worker thread for
a saliency map of the drawing (``nn_core.explain``), for the class on screen or the one the user picked, against
another class for "why 4 and not 9?". Latest request wins: while the worker is busy, newer drawings replace the
pending one, and a map that arrives for anything but the current drawing and settings is dropped. Results are
handed to the session's thread (its dispatcher) and published as ``events.explanation``.

``placement`` works out where the 28x28 grid lies on the canvas (the rasterizer scales the drawing's ink box
into 20 px and centres it by mass), so the view can lay the map over the strokes the user drew.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

from gui.background import start_background_thread
from gui.events import EventGroup
from gui.localize import translate
from nn_core.explain import DEFAULT_METHOD, METHOD_NAMES, METHODS, Explainer, Explanation
from nn_core.interface import ModelAdapter

__all__ = ["DEFAULT_METHOD", "METHODS", "METHOD_NAMES", "ExplainState", "Placement", "ShownExplanation",
           "method_name", "placement"]


def method_name(method: str) -> str:
    """A saliency method's name in the user's language (``METHOD_NAMES`` has the English ones)."""
    names = {"smoothgrad": translate("Explain", "SmoothGrad"),
             "integrated_gradients": translate("Explain", "Integrated Gradients"),
             "gradient_x_input": translate("Explain", "Gradient × input"),
             "occlusion": translate("Explain", "Occlusion")}
    return names.get(method) or METHOD_NAMES.get(method, method)


@dataclass(frozen=True)
class Placement:
    """The 28x28 grid on the canvas: its top-left corner and side, in canvas coordinates."""

    left: float
    top: float
    side: float


@dataclass
class ShownExplanation:
    """A map for one drawing and request, ready to show."""

    key: tuple
    explanation: Explanation
    placement: Placement | None
    labels: list[str]

    @property
    def map(self) -> np.ndarray:
        return self.explanation.map

    def title(self) -> str:
        e = self.explanation
        target = self.labels[e.target] if e.target < len(self.labels) else str(e.target)
        if e.contrast is not None:
            other = self.labels[e.contrast] if e.contrast < len(self.labels) else str(e.contrast)
            return translate("Explain", "Why {target} and not {other}? ({method})").format(
                target=target, other=other, method=method_name(e.method))
        return translate("Explain", "Why {target}? ({method})").format(target=target, method=method_name(e.method))


def placement(strokes: list, canvas_size: tuple[int, int], pen_width: float | None) -> Placement | None:
    """Where the rasterizer put the drawing: the 28x28 field in canvas coordinates (None without ink).

    Follows ``gui.rasterize``: the stroke centre lines' box, scaled so that lines plus the MNIST-like width fill
    20 px, centred; then shifted so the centre of mass sits at MNIST's centre (measured as the shift between the
    mass-centred and the box-centred rasterization).
    """
    from gui import rasterize as raster

    lines = [np.asarray(stroke, np.float64).reshape(-1, 2) for stroke in strokes if len(stroke)]
    if not lines:
        return None
    style = getattr(raster, "DEFAULT_STYLE", None)
    if style is None or not hasattr(raster, "rasterize_with_style"):
        return None
    default_pen = raster.default_pen_width(canvas_size)
    pen = default_pen if pen_width is None else max(float(pen_width), 1e-3)
    points = np.concatenate(lines)
    lo, hi = points.min(axis=0), points.max(axis=0)
    extent = max(float((hi - lo).max()), 0.5 * pen)
    if style.relative_width:
        width = float(np.clip(style.stroke_width * (pen / default_pen) ** style.pen_response, style.min_width,
                              style.max_width))
        scale = (raster.BOX - width) / extent
    else:
        scale = raster.BOX / (extent + pen)
    centre = (lo + hi) / 2
    shift = np.zeros(2)
    if style.centring == "mass":
        from dataclasses import replace

        boxed = raster.rasterize_with_style(strokes, canvas_size, pen_width, replace(style, centring="box"))
        massed = raster.rasterize_with_style(strokes, canvas_size, pen_width, style)
        if boxed.sum() > 0 and massed.sum() > 0:
            shift = np.array(_centre_of_mass(massed)) - np.array(_centre_of_mass(boxed))  # (x, y)
    # field = (canvas - centre) * scale + 14 + shift  =>  canvas = (field - 14 - shift) / scale + centre
    left, top = (np.array([0.0, 0.0]) - raster.FIELD / 2 - shift) / scale + centre
    return Placement(float(left), float(top), raster.FIELD / scale)


def _centre_of_mass(image: np.ndarray) -> tuple[float, float]:
    total = image.sum()
    ys, xs = np.indices(image.shape)
    return float((xs * image).sum() / total), float((ys * image).sum() / total)


class ExplainState:
    """The overlay's settings and its background worker, attached to a ``gui.session.Session``.

    Settings: ``enabled`` (the overlay is shown: maps are computed live), ``method`` (one of ``METHODS``),
    ``target`` (a class index, or None for the class on screen) and ``contrast`` (a class for "and not ...").
    Events: ``explanation(ShownExplanation | None)``, ``settings_changed()``.
    ``synchronous=True`` computes in the caller (scripts, tests without threads).
    """

    def __init__(self, session: Any, synchronous: bool = False) -> None:
        self.session = session
        self.synchronous = synchronous
        self.events = EventGroup("explanation", "settings_changed")
        self.enabled = False
        self.method = DEFAULT_METHOD
        self.target: int | None = None
        self.contrast: int | None = None
        self.shown: ShownExplanation | None = None
        self.last_seconds = 0.0
        self._explainers: dict[int, Explainer] = {}
        self._compute = threading.Lock()  # one map at a time (the worker and a blocking ``current``)
        self._condition = threading.Condition()
        self._pending: tuple | None = None
        self._thread: threading.Thread | None = None
        self._stopping = False
        events = session.events
        events.prediction.connect(self._on_prediction)
        events.model_changed.connect(lambda _opened: self._reset(clear_choice=True))
        events.scaling_changed.connect(lambda _code, _source: self._reset())

    # --- settings ----------------------------------------------------------------------------------------
    def set_enabled(self, on: bool) -> None:
        if bool(on) != self.enabled:
            self.enabled = bool(on)
            self.events.settings_changed.emit()
            self._request() if self.enabled else self._publish(None)

    def set_method(self, method: str) -> None:
        if method not in METHODS:
            raise ValueError(f"unknown method {method!r}")
        if method != self.method:
            self.method = method
            self._changed()

    def set_target(self, target: int | None, contrast: int | None = None) -> None:
        """Explain ``target`` (None: the class on screen), against ``contrast`` when given."""
        target = None if target is None else int(target)
        contrast = None if contrast is None or contrast == target else int(contrast)
        if (target, contrast) != (self.target, self.contrast):
            self.target, self.contrast = target, contrast
            self._changed()

    def _changed(self) -> None:
        self.events.settings_changed.emit()
        if self.enabled:
            self._request()

    def _reset(self, clear_choice: bool = False) -> None:
        with self._condition:
            self._pending = None
        if clear_choice:
            self.target = self.contrast = None
            self._explainers.clear()
        self._publish(None)

    # --- requests ----------------------------------------------------------------------------------------
    def _explainer(self, adapter: ModelAdapter) -> Explainer:
        explainer = self._explainers.get(id(adapter))
        if explainer is None or explainer.adapter is not adapter:
            explainer = self._explainers[id(adapter)] = Explainer(adapter, smooth_samples=16)
        return explainer

    def _key(self) -> tuple | None:
        session = self.session
        if session.adapter is None or session.image is None or not session.document.has_ink():
            return None
        return (session.drawing, id(session.adapter), session.adapter.scaling, self.method, self.target,
                self.contrast)

    def _job(self) -> tuple | None:
        key = self._key()
        if key is None:
            return None
        session = self.session
        strokes = [list(stroke.points) for stroke in session.document.visible_strokes()]
        labels = session.adapter.labels(len(session.prediction.probabilities)) if session.prediction is not None \
            else [str(i) for i in range(10)]
        return (key, self._explainer(session.adapter), session.image.copy(), self.target, self.contrast,
                self.method, strokes, session.document.size, session.document.ink_pen_width(), labels)

    def _on_prediction(self, prediction: Any) -> None:
        if prediction is None:
            self._publish(None)
        elif self.enabled and (self.shown is None or self.shown.key != self._key()):
            self._request()

    def _request(self) -> None:
        job = self._job()
        if job is None:
            self._publish(None)
            return
        if self.synchronous:
            self._deliver(self._run(job))
            return
        with self._condition:
            self._pending = job
            if self._thread is None or not self._thread.is_alive():
                self._thread = start_background_thread(self._work, "digitscope-explain")
            self._condition.notify()

    def _work(self) -> None:
        while True:
            with self._condition:
                if self._pending is None and not self._stopping:
                    self._condition.wait(5.0)
                if self._stopping or self._pending is None:
                    self._thread = None  # idle: the next request starts a new one
                    return
                job, self._pending = self._pending, None
            self._hand_over(self._run(job))

    def _hand_over(self, result: ShownExplanation | str) -> None:
        session = self.session
        if threading.get_ident() == getattr(session, "_owner", None):
            self._deliver(result)
        else:
            session.dispatch(lambda: self._deliver(result))

    def _run(self, job: tuple) -> ShownExplanation | str:
        key, explainer, image, target, contrast, method, strokes, size, pen, labels = job
        try:
            with self._compute:
                explanation = explainer.explain(image, target, contrast, method)
            where = placement(strokes, size, pen)
        except Exception as exc:  # noqa: BLE001 - shown to the user; the app keeps working
            return translate("Explain", "Could not explain the drawing: {error}").format(
                error=f"{type(exc).__name__}: {exc}")
        self.last_seconds = explanation.seconds
        return ShownExplanation(key, explanation, where, labels)

    def _deliver(self, result: ShownExplanation | str) -> None:
        if isinstance(result, str):
            self.session.report_error(result)
            return
        if not self.enabled or result.key != self._key():
            return  # for an older drawing or other settings: a newer request is on its way
        self._publish(result)

    def _publish(self, shown: ShownExplanation | None) -> None:
        if shown is None and self.shown is None:
            return
        self.shown = shown
        self.events.explanation.emit(shown)

    # --- blocking access (scripts, tests, the window's ``saliency``) -----------------------------------------
    def current(self) -> ShownExplanation | None:
        """The map for the current drawing and settings, computed now in the caller if it is not ready yet
        (whether or not the overlay is shown). None when nothing is drawn."""
        key = self._key()
        if key is None:
            return None
        if self.shown is not None and self.shown.key == key:
            return self.shown
        job = self._job()
        result = self._run(job) if job is not None else None
        if not isinstance(result, ShownExplanation):
            return None
        if self.enabled:
            self._publish(result)
        return result

    def close(self) -> None:
        with self._condition:
            self._stopping = True
            self._pending = None
            self._condition.notify_all()
