"""Open a model file off the UI thread: load, adapt, one trial run; latest request wins (no Qt).

A model file is untrusted input: parsing it, planning it and running it once can take seconds (or, for a
hostile file, much longer). ``ModelOpener`` does all of that on a worker thread. Every ``open`` starts a new
*generation*; only the result of the current generation is ever handed out, so a superseded or cancelled open
is simply dropped. Python threads cannot be killed, so cancelling does not stop the work: the worker finishes
in the background (it is a daemon thread) and its result is discarded.

Results are handed out exactly once, through ``take``: the UI calls it either when the ``notify`` callback
says a result is ready (a Qt bridge forwards that to the UI thread) or after blocking in ``wait``.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

import nn_core
from gui.background import start_background_thread
from gui.prediction import Prediction, run_prediction
from nn_core.interface import ModelAdapter


def model_key(path: str | Path) -> str:
    """A settings key that follows a model's content, so a remembered scaling survives renaming the file."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:20]


@dataclass
class OpenedModel:
    """Everything the window needs to switch to a model, all computed off the UI thread."""

    path: Path
    model: Any
    adapter: ModelAdapter
    key: str
    trial: Prediction  # one run on a blank image: its records give the layer list and shapes
    layout: Any = None  # the graph view's layout (gui.graph_layout.GraphLayout), computed with the rest


@dataclass
class OpenResult:
    """How one open request ended: ``opened`` on success, else ``error`` (a message for the user)."""

    generation: int
    path: Path
    opened: OpenedModel | None = None
    error: str | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.opened is not None


def prepare_model(path: str | Path, remembered_scalings: Mapping[str, str] | None = None) -> OpenedModel:
    """Load ``path``, fit an adapter and run it once on a blank image; raises on any failure.

    ``remembered_scalings`` maps model keys to the scaling the user chose for that model (a plain dict, read
    from the settings beforehand, so this function touches nothing but the file).
    """
    path = Path(path)
    model = nn_core.load(path)
    key = model_key(path)
    adapter = ModelAdapter(model, remembered_scaling=(remembered_scalings or {}).get(key))
    # One run on a blank image before switching: a model that cannot run must not replace a working one.
    trial = run_prediction(adapter, np.zeros((28, 28), np.float32))
    if trial.error:
        raise nn_core.ModelError(f"{path.name} loads but does not run: {trial.error}")
    weakref.finalize(model, MEMORY.release_soon)
    return OpenedModel(path, model, adapter, key, trial)


def dismantle(holder: list, depth: int = 5) -> Iterator[None]:
    """Let go of ``holder``'s only item a piece at a time, yielding after each piece (a job for ``Steps``).

    Dropping a replaced DenseNet-121 in one go freed its plans, kernels, records and layout in one chain of
    deallocations: 15-45 ms holding the interpreter, on whichever thread let go last (the UI's, when a view did).
    Here an object that nobody else references (its reference count says so) has its attributes, list items or
    dict values taken out one by one, down to ``depth`` levels; anything still referenced elsewhere is simply
    let go (its owner frees it). Nothing is changed in an object anyone else can reach.
    """
    value = holder.pop()
    # references now: this local and getrefcount's argument, plus any other owner's
    if depth > 0 and sys.getrefcount(value) <= 2:
        if isinstance(value, list):
            while value:
                yield from dismantle([value.pop()], depth - 1)
        elif isinstance(value, dict):
            while value:
                yield from dismantle([value.popitem()[1]], depth - 1)
        else:
            attributes = getattr(value, "__dict__", None)
            if type(attributes) is dict:
                while attributes:
                    yield from dismantle([attributes.popitem()[1]], depth - 1)
    del value
    yield


class MemoryReleaser:
    """Hands memory freed by a dead model back to the system, on a background thread, while no model works.

    glibc's malloc keeps freed blocks in its arenas for reuse: after switching from DenseNet-121 back to LeNet the
    process stayed at ~1.9 GB although nothing referenced the old model's weights, plans and outputs any more.
    ``malloc_trim(0)`` returns those pages (1.9 GB -> ~160 MB). It takes ~0.1-0.4 s on such a heap and holds each
    arena's lock meanwhile: a worker that allocated from that arena then would wait for it *holding Python's
    lock*, and the UI would freeze with it (measured: 0.78 s, a DenseNet run allocating during a trim). So the
    trim runs on a daemon thread, through ctypes (which lets go of Python's lock during the call), only when no
    model work is under way, and model work (``working()``: the opener, the predictor, auto-detect's slices)
    waits for a trim under way to end before it starts, without Python's lock. A no-op off glibc.
    """

    DELAY_SECONDS = 0.5
    # The calm a due trim waits for is waited for at most this long after it fell due; past it, the trim starts
    # at the first moment no model works. Model work itself still blocks it: in ui_heartbeat's script (strokes,
    # then auto-detect, back to back on DenseNet-121) there is no such moment, and ResNet-50's freed heap stays
    # until the switch back (~1.9 GB at the end of the DenseNet phase instead of 1.3 GB); a user who pauses for
    # half a second after a result gets it back then.
    PATIENCE_SECONDS = 10.0

    def __init__(self) -> None:
        self._trim = _malloc_trim()
        self._condition = threading.Condition()
        self._due: float | None = None
        self._deadline: float | None = None  # the latest _due may be put off to
        self._working = 0  # model work under way (``working`` blocks)
        self._trimming = False
        self._thread: threading.Thread | None = None
        self.trims = 0  # how many times memory was handed back (tests)

    @property
    def available(self) -> bool:
        return self._trim is not None

    def release_soon(self) -> None:
        """Trim the heap once things settle (called when a model is garbage-collected; from any thread)."""
        if self._trim is None:
            return
        with self._condition:
            now = time.monotonic()
            if self._due is None:
                self._deadline = now + self.PATIENCE_SECONDS
            self._due = now + self.DELAY_SECONDS
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="digitscope-release-memory", daemon=True)
                self._thread.start()
            self._condition.notify_all()

    def postpone(self) -> None:
        """The user is interacting: a trim that is due waits until DELAY_SECONDS after this call. A trim holds
        the heap's locks, and the UI thread's own allocations (a stroke's raster) would wait for it: a trim of
        a released DenseNet-121 during a stroke stalled the UI 50-150 ms."""
        if self._trim is None:
            return
        with self._condition:
            self._put_off()

    def _put_off(self) -> None:
        """A due trim waits DELAY_SECONDS from now, up to the deadline (called holding the condition)."""
        if self._due is not None:
            self._due = max(self._due, time.monotonic() + self.DELAY_SECONDS)
            if self._deadline is not None:
                self._due = min(self._due, self._deadline)

    @contextmanager
    def working(self) -> Iterator[None]:
        """Model work (allocating much) is under way in this block: no trim starts meanwhile, and the block
        starts only once a trim under way has ended."""
        if self._trim is None:
            yield
            return
        with self._condition:
            while self._trimming:
                self._condition.wait()
            self._working += 1
        try:
            yield
        finally:
            with self._condition:
                self._working -= 1
                if not self._working:
                    # the trim waits for a calm moment after the work too, not only after the last drawing: a
                    # trim started the moment DenseNet's traced run ended met the next stroke's first moves
                    # (ui_heartbeat --why: 34 ms of trim in the draw phase, the UI's allocations waiting on it)
                    self._put_off()
                self._condition.notify_all()

    def _run(self) -> None:
        while True:
            with self._condition:
                while self._due is None or time.monotonic() < self._due or self._working:
                    timeout = None if self._due is None or self._working else self._due - time.monotonic()
                    self._condition.wait(None if timeout is None else max(0.0, timeout))
                self._due, self._deadline, self._trimming = None, None, True
            try:
                self._trim(0)
            finally:
                with self._condition:
                    self._trimming = False
                    self.trims += 1
                    self._condition.notify_all()


def _malloc_trim():
    if not sys.platform.startswith("linux"):
        return None
    try:
        trim = ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc (musl has no malloc_trim)
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim


MEMORY = MemoryReleaser()

_CORE_RESERVED = False


def reserve_a_core_for_the_ui() -> None:
    """From the first background model work on, BLAS (NumPy's matmul) uses one thread fewer than the cores this
    process may run on, so a big model computing in the background leaves a core to the UI thread.

    With every core busy in a ResNet/DenseNet matmul (which lets go of Python's lock, so this is not about the
    lock), the UI thread waited for the CPU: a 5 ms heartbeat saw gaps of 90-150 ms beside a matmul loop on two
    cores, 20-30 ms with one BLAS thread. Once per process; nothing changes on a single core.
    """
    global _CORE_RESERVED
    if _CORE_RESERVED:
        return
    _CORE_RESERVED = True
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    if cores > 1:
        from nn_core.threads import set_blas_threads

        set_blas_threads(cores - 1)


class ModelOpener:
    """Runs ``prepare(path)`` on a worker thread per request; only the latest request's result counts.

    ``notify(generation)`` is called from the worker thread when the current request has finished (not for
    superseded or cancelled ones); the receiver then calls ``take(generation)``.
    """

    def __init__(self, prepare: Callable[[Path], OpenedModel] | None = None,
                 notify: Callable[[int], None] | None = None) -> None:
        self._prepare = prepare or prepare_model
        self._notify = notify
        self._condition = threading.Condition()
        self._generation = 0
        self._path: Path | None = None  # the current request's file, from ``open`` until taken or cancelled
        self._running = False  # the current request's worker has not finished yet
        self._result: OpenResult | None = None  # the current request's result, until taken

    @property
    def generation(self) -> int:
        return self._generation

    @property
    def pending_path(self) -> Path | None:
        """The file of the current request, from ``open`` until its result is taken or it is cancelled."""
        with self._condition:
            return self._path

    def busy(self) -> bool:
        """True from ``open`` until its result has been taken (or the request was cancelled)."""
        with self._condition:
            return self._path is not None

    def open(self, path: str | Path, prepare: Callable[[Path], OpenedModel] | None = None) -> int:
        """Start opening ``path``; any earlier request is superseded. Returns the new generation."""
        path = Path(path)
        work = prepare or self._prepare
        with self._condition:
            self._generation += 1
            generation = self._generation
            self._path, self._running, self._result = path, True, None
            self._condition.notify_all()
        start_background_thread(self._run, f"digitscope-open-{generation}", generation, path, work)
        return generation

    def cancel(self) -> bool:
        """Drop the current request (its worker runs on, unseen). Returns whether there was one."""
        with self._condition:
            had = self._path is not None
            if had:
                self._generation += 1
                self._path, self._running, self._result = None, False, None
                self._condition.notify_all()
            return had

    def _run(self, generation: int, path: Path, work: Callable[[Path], OpenedModel]) -> None:
        started = time.perf_counter()
        reserve_a_core_for_the_ui()
        try:
            with MEMORY.working():
                opened = work(path)
            result = OpenResult(generation, path, opened=opened)
        except BaseException as exc:  # noqa: BLE001 - whatever went wrong is reported, never raised in a thread
            result = OpenResult(generation, path, error=f"{type(exc).__name__}: {exc}"
                                if not isinstance(exc, nn_core.ModelError) else str(exc))
        result.seconds = time.perf_counter() - started
        with self._condition:
            if generation != self._generation:
                return  # superseded or cancelled meanwhile: nobody wants this result
            self._running, self._result = False, result
            self._condition.notify_all()
        if self._notify is not None:
            try:
                self._notify(generation)
            except RuntimeError:  # the receiver is gone (a Qt object deleted at shutdown)
                pass

    def wait(self, generation: int | None = None, timeout: float | None = None) -> bool:
        """Block until request ``generation`` (default: the current one) has a result or is no longer current.

        Returns True when its result is ready to ``take``; False on timeout or when it was superseded.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._condition:
            wanted = self._generation if generation is None else generation
            while True:
                if wanted != self._generation:
                    return False
                if self._result is not None:
                    return True
                if not self._running:
                    return False  # already taken, or nothing was requested
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._condition.wait(remaining)

    def take(self, generation: int | None = None) -> OpenResult | None:
        """The result of request ``generation`` (default: current), once: None if not ready, taken or stale."""
        with self._condition:
            result = self._result
            if result is None or (generation is not None and generation != result.generation):
                return None
            if result.generation != self._generation:
                return None
            self._path, self._result = None, None
            return result
