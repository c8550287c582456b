"""Is the UI thread ever blocked? A 5 ms QTimer heartbeat while the app opens, draws on, auto-detects with and
switches between big models; prints the worst gap between beats per phase and the stroke -> bars latency.

The models are real-size topologies from the onnx wheel's light models (ResNet-50, DenseNet-121) with seeded,
opset-matching random weights (``benchmarks/light_models.py``). Target: worst gap <= 50 ms everywhere.

    python benchmarks/ui_heartbeat.py                     # ResNet-50 and DenseNet-121, graph tab shown
    python benchmarks/ui_heartbeat.py --models resnet50 --tab activations
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import onnx  # noqa: E402
from light_models import materialize  # noqa: E402
from PySide6.QtCore import QElapsedTimer, QEventLoop, QPoint, QSettings, Qt, QTimer  # noqa: E402
from PySide6.QtTest import QTest  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402

BEAT_MS = 5
TARGET_MS = 50.0


def rss_mb() -> float:
    try:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return float("nan")


class Watchdog:
    """With --why: a thread that prints the UI thread's stack whenever the heartbeat is late by 40 ms."""

    def __init__(self, heart: Heartbeat, late_ms: float = 40.0) -> None:
        import threading

        self.heart, self.late_ms = heart, late_ms
        self.main = threading.main_thread().ident
        self.seen: set[str] = set()
        threading.Thread(target=self.watch, daemon=True).start()

    def watch(self) -> None:
        import threading
        import traceback

        while True:
            time.sleep(0.01)
            late = (self.heart.clock.nsecsElapsed() - self.heart.last) / 1e6
            if late > self.late_ms:
                frame = sys._current_frames().get(self.main)
                if frame is None:
                    continue
                text = "".join(traceback.format_stack(frame, limit=12)[-8:])
                # the other threads: one that held the interpreter all along has just let go of it, so its stack
                # shows the call that ended (or the one it is in, when that call releases it midway)
                names = {thread.ident: thread.name for thread in threading.enumerate()}
                others = "".join(
                    f"  [{names.get(ident, ident)}]\n" + "".join(traceback.format_stack(other, limit=12)[-5:])
                    for ident, other in sys._current_frames().items()
                    if ident not in (self.main, threading.get_ident()))
                key = text[-300:] + others[-300:]
                if key not in self.seen:
                    self.seen.add(key)
                    print(f"--- UI thread late {late:.0f} ms in phase {self.heart.phase}:\n{text}"
                          f"  other threads:\n{others}", flush=True)


class GcWatch:
    """With --why: every garbage collection of 5 ms or more, with the thread it ran on and the phase (a full
    collection holds the interpreter: whichever thread runs it, the UI thread waits)."""

    def __init__(self, heart: Heartbeat, slow_ms: float = 5.0) -> None:
        import gc
        import threading

        self.heart, self.slow_ms, self.threading = heart, slow_ms, threading
        self.started: dict[int, float] = {}
        self.slow: list[tuple[str, int, float, str]] = []  # (phase, generation, ms, thread)
        gc.callbacks.append(self.callback)

    def callback(self, stage: str, info: dict) -> None:
        ident = self.threading.get_ident()
        if stage == "start":
            self.started[ident] = time.perf_counter()
        elif ident in self.started:
            ms = (time.perf_counter() - self.started.pop(ident)) * 1000
            if ms >= self.slow_ms:
                self.slow.append((self.heart.phase, info["generation"], ms, self.threading.current_thread().name))


class TrimWatch:
    """With --why: every heap trim (gui.model_opening.MEMORY's malloc_trim) with its phase and duration. A trim holds
    the allocator's locks, so one under way in the draw or auto-detect phase stalls the UI thread's allocations."""

    def __init__(self, heart: Heartbeat) -> None:
        from gui.model_opening import MEMORY

        self.heart = heart
        self.trims: list[tuple[str, float]] = []  # (phase, ms)
        trim = MEMORY._trim
        if trim is None:
            return

        def timed(pad: int) -> int:
            started = time.perf_counter()
            try:
                return trim(pad)
            finally:
                self.trims.append((self.heart.phase, (time.perf_counter() - started) * 1000))

        MEMORY._trim = timed


class TurnWatch:
    """With --why: every UI-thread event that took ``slow_ms`` or more (an event-loop turn's pieces), with the
    events nested in it that took 2 ms or more, and how much of it the UI thread ran on a CPU. Installed as the
    application's ``notify``, so it times each event as Qt delivers it."""

    def __init__(self, heart: Heartbeat, slow_ms: float = 20.0) -> None:
        self.heart, self.slow_ms = heart, slow_ms
        self.depth = 0
        self.nested: list[tuple[int, str, float]] = []
        self.slow: list[tuple[str, str, float, float, list[tuple[int, str, float]]]] = []

    @staticmethod
    def describe(receiver, event) -> str:
        name = type(receiver).__name__
        try:
            kind = event.type().name
        except AttributeError:
            kind = str(event.type())
        return f"{name}.{kind}"

    def notify(self, call, receiver, event) -> bool:
        described = self.describe(receiver, event)
        self.depth += 1
        ran_before = self.heart._read_sched()
        began = time.perf_counter()
        try:
            return call(receiver, event)
        finally:
            ms = (time.perf_counter() - began) * 1000
            self.depth -= 1
            if self.depth == 0:
                if ms >= self.slow_ms:
                    after = self.heart._read_sched()
                    ran = (after[0] - ran_before[0]) / 1e6 if after and ran_before else float("nan")
                    self.slow.append((self.heart.phase, described, ms, ran, self.nested))
                self.nested = []
            elif ms >= 2.0:
                self.nested.append((self.depth, described, ms))


class StepWatch:
    """With --why: every slice of UI work run by ``gui.qt_bridge``'s shared Steps that took ``slow_ms`` or more,
    with its job's key and where the job's generator stood when the slice ended."""

    def __init__(self, heart: Heartbeat, slow_ms: float = 10.0) -> None:
        from gui.qt_bridge import shared_steps

        self.heart, self.slow_ms = heart, slow_ms
        self.slow: list[tuple[str, str, float]] = []  # (phase, job, ms)
        steps = shared_steps()
        step = steps._step

        def timed(key) -> None:  # noqa: ANN001
            job = steps._jobs.get(key)
            began = time.perf_counter()
            try:
                step(key)
            finally:
                ms = (time.perf_counter() - began) * 1000
                if ms >= self.slow_ms:
                    frame = getattr(job, "gi_frame", None)
                    where = f" at {frame.f_code.co_name}:{frame.f_lineno}" if frame is not None else ""
                    self.slow.append((self.heart.phase, f"{key!r:.60}{where}", ms))

        steps._step = timed


class WatchedApplication(QApplication):
    """The application, with each event's delivery timed by ``turns`` once set (--why)."""

    turns: TurnWatch | None = None

    def notify(self, receiver, event) -> bool:  # noqa: ANN001
        if self.turns is None:
            return super().notify(receiver, event)
        return self.turns.notify(super().notify, receiver, event)


class Heartbeat:
    """Records the time between consecutive beats of a repeating 5 ms timer on the UI thread, per phase.

    With ``account``, each phase's worst gap is also split, from the UI thread's own scheduler statistics
    (Linux ``/proc/thread-self/schedstat``), into the time it ran on a CPU, the time it waited for one (other
    processes or threads had the cores), and the rest: asleep, i.e. waiting for Python's lock (or a mutex) held
    by a worker thread, or idle in the event loop. That tells UI work from interpreter-lock contention from a
    busy machine.
    """

    def __init__(self, account: bool = False) -> None:
        self.clock = QElapsedTimer()
        self.clock.start()
        self.last = self.clock.nsecsElapsed()
        self.phase = "start"
        self.worst: dict[str, float] = {}
        self.worst_at: dict[str, str] = {}
        self.split: dict[str, tuple[float, float]] = {}  # phase -> (ran, waited for a CPU) ms in its worst gap
        self._sched = None
        if account:
            try:
                self._sched = os.open("/proc/thread-self/schedstat", os.O_RDONLY)  # bound to this (the UI) thread
            except OSError:
                self._sched = None
        self._last_sched = self._read_sched()
        self.timer = QTimer()
        self.timer.setTimerType(Qt.TimerType.PreciseTimer)
        self.timer.timeout.connect(self.beat)
        self.timer.start(BEAT_MS)

    def _read_sched(self) -> tuple[int, int] | None:
        if self._sched is None:
            return None
        ran, waited, _slices = os.pread(self._sched, 128, 0).split()
        return int(ran), int(waited)

    def beat(self) -> None:
        now = self.clock.nsecsElapsed()
        gap = (now - self.last) / 1e6
        self.last = now
        sched, before = self._read_sched(), self._last_sched
        self._last_sched = sched
        if gap > self.worst.get(self.phase, 0.0):
            self.worst[self.phase] = gap
            if sched is not None and before is not None:
                self.split[self.phase] = ((sched[0] - before[0]) / 1e6, (sched[1] - before[1]) / 1e6)

    def enter(self, phase: str) -> None:
        self.phase = phase
        self.worst.setdefault(phase, 0.0)


def pump(ms: int) -> None:
    """Run the event loop for ``ms`` milliseconds, as the app's own loop runs: Python's lock is let go while it
    waits. (QTest.qWait keeps the lock: a worker thread then gets it only between the waits, its model runs
    ~9x slower and cannot hold the lock against the UI — stroke -> bars read 2 s instead of 0.2 s on ResNet-50,
    and the gaps read too small.)"""
    loop = QEventLoop()
    QTimer.singleShot(ms, loop.quit)
    loop.exec()


def wait(app: QApplication, condition, timeout: float) -> bool:
    deadline = time.perf_counter() + timeout
    while not condition():
        if time.perf_counter() > deadline:
            return False
        pump(5)
    return True


def stroke(size: float, points: int, phase: float) -> list[tuple[float, float]]:
    c = size / 2
    return [(c + size * 0.22 * math.sin(2 * math.pi * t + phase), c - size * 0.32 * math.cos(2 * math.pi * t + phase))
            for t in (i / points for i in range(points + 1))]


def draw(window, heart: Heartbeat, strokes: int, points: int, latencies: list[float], app) -> None:
    """Real mouse strokes at ~60 moves a second; after each, the time until the bars show the final drawing."""
    canvas = window.canvas
    for s in range(strokes):
        window.canvas.clear()
        widget_points = [canvas.to_widget(p).toPoint() for p in stroke(canvas.document.size[0], points, s)]
        QTest.mousePress(canvas, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, widget_points[0])
        for point in widget_points[1:]:
            QTest.mouseMove(canvas, QPoint(point))
            pump(16)
        QTest.mouseRelease(canvas, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, widget_points[-1])
        released = time.perf_counter()
        drawing = window.session.drawing
        ok = wait(app, lambda d=drawing: window.session.prediction is not None
                  and window.session.prediction.drawing >= d, 60)
        if ok:
            latencies.append((time.perf_counter() - released) * 1000)
        # let the traced run (activations, graph colours) finish before the next stroke
        wait(app, lambda: window.session.predictor.is_idle(), 60)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["resnet50", "densenet121"])
    parser.add_argument("--tab", default="graph", choices=["graph", "activations", "model"])
    parser.add_argument("--strokes", type=int, default=3)
    parser.add_argument("--points", type=int, default=30, help="mouse moves per stroke")
    parser.add_argument("--detect-seconds", type=float, default=3.0, help="auto-detect runs this long, then "
                        "is cancelled")
    parser.add_argument("--why", action="store_true", help="print the UI thread's stack when a beat is late")
    args = parser.parse_args()

    load_before = os.getloadavg()  # the machine may be shared: gaps mean little without the load beside them
    # (with --why, every event's delivery is timed: a Python call per event, so only then)
    app = QApplication.instance() or (WatchedApplication if args.why else QApplication)(sys.argv[:1])
    from gui.window import MainWindow

    results = []
    with tempfile.TemporaryDirectory() as directory:
        paths = {}
        for name in args.models:
            paths[name] = Path(directory) / f"{name}.onnx"
            onnx.save(materialize(name), str(paths[name]))
        settings = QSettings(str(Path(directory) / "bench.ini"), QSettings.Format.IniFormat)
        window = MainWindow(None, settings=settings, predictor_mode="auto")
        window.resize(1280, 800)
        window.show()
        QTest.qWaitForWindowExposed(window)
        window.tabs.setCurrentWidget({"graph": window.graph, "activations": window.activations,
                                      "model": window.summary}[args.tab])
        pump(50)
        lenet_rss = rss_mb()
        heart = Heartbeat(account=args.why)
        collections = trims_seen = turns = slices = None
        if args.why:
            Watchdog(heart)
            collections = GcWatch(heart)
            trims_seen = TrimWatch(heart)
            if isinstance(app, WatchedApplication):
                turns = app.turns = TurnWatch(heart)
            slices = StepWatch(heart)
        pump(50)
        for name in args.models:
            latencies: list[float] = []
            heart.enter(f"open {name}")
            opened = time.perf_counter()
            window.open_model_async(paths[name])
            wait(app, lambda: window.session.opening is None, 300)
            open_seconds = time.perf_counter() - opened
            pump(100)  # the views settle (the graph's items are built when shown)
            heart.enter(f"draw on {name}")
            draw(window, heart, args.strokes, args.points, latencies, app)
            heart.enter(f"auto-detect on {name}")
            window.auto_detect_scaling()
            pump(int(args.detect_seconds * 1000))
            progress = window.detect_progress.value(), window.detect_progress.maximum()
            window.cancel_detection()
            pump(100)
            results.append((name, len(window.model.nodes), open_seconds, latencies, progress, rss_mb()))
        heart.enter("switch back to LeNet-5")
        from gui.session import bundled_model_path

        window.open_model_async(bundled_model_path())
        wait(app, lambda: window.session.opening is None, 60)
        # a traced run of the old model may still be under way in the worker (runs cannot be interrupted);
        # once it ends, nothing of the old model remains
        wait(app, lambda: window.session.predictor.is_idle(), 120)
        # the old model's memory is handed back by a background malloc_trim shortly after it goes
        from gui.model_opening import MEMORY

        # (a trim waits for a calm moment, so the ones put off while the big models worked come now: wait until
        # the app has given the replaced models to the releaser and none is due any more)
        trims = MEMORY.trims
        from gui.qt_bridge import shared_steps

        wait(app, lambda: not MEMORY.available or (MEMORY.trims > trims and MEMORY._due is None
                                                   and not window._retired and not shared_steps().pending()
                                                   and not MEMORY._trimming), 10)
        pump(300)
        heart.enter("(done: collecting, closing)")
        import gc

        gc.collect()
        back_rss = rss_mb()
        heart.timer.stop()
        window.close()

    print(f"UI-thread heartbeat every {BEAT_MS} ms, tab '{args.tab}' shown; worst gap between beats per phase:")
    for phase, worst in heart.worst.items():
        if phase.startswith("("):
            continue
        split = ""
        if phase in heart.split:
            ran, waited = heart.split[phase]
            split = (f"  (UI thread ran {ran:.0f} ms, waited for a CPU {waited:.0f} ms, asleep or waiting for "
                     f"the interpreter {max(0.0, worst - ran - waited):.0f} ms)")
        print(f"  {phase:32} {worst:7.1f} ms {'ok' if worst <= TARGET_MS else 'OVER ' + str(TARGET_MS)}{split}")
    for name, nodes, open_seconds, latencies, progress, rss in results:
        text = (f"median {statistics.median(latencies):.0f} ms, max {max(latencies):.0f} ms" if latencies
                else "no bars")
        print(f"{name}: {nodes} nodes, opened in {open_seconds:.2f} s (in the background); stroke -> bars {text}; "
              f"auto-detect reached {progress[0]}/{progress[1]} images before cancel; memory {rss:.0f} MB")
    print(f"memory: {lenet_rss:.0f} MB on LeNet-5 before, {back_rss:.0f} MB after switching back")
    if collections is not None:
        for phase, generation, ms, thread in collections.slow:
            print(f"  garbage collection of generation {generation}: {ms:.0f} ms on {thread} during {phase}")
    if turns is not None:
        for phase, described, ms, ran, nested in turns.slow:
            inner = "; ".join(f"{'  ' * (depth - 1)}{what} {inner_ms:.0f}" for depth, what, inner_ms in nested[:12])
            print(f"  UI event {described} took {ms:.0f} ms (ran {ran:.0f}) during {phase}: {inner}")
    if slices is not None:
        for phase, job, ms in slices.slow:
            print(f"  UI slice of {job} took {ms:.0f} ms during {phase}")
    if trims_seen is not None:
        for phase, ms in trims_seen.trims:
            print(f"  heap trim (malloc_trim): {ms:.0f} ms during {phase}")
    print(f"load average (1, 5, 15 min): {' '.join(f'{v:.2f}' for v in load_before)} before, "
          f"{' '.join(f'{v:.2f}' for v in os.getloadavg())} after; {os.cpu_count()} cores")
    worst = max(value for phase, value in heart.worst.items() if not phase.startswith("("))
    print(f"worst UI-thread gap overall {worst:.1f} ms: target <= {TARGET_MS:.0f} ms "
          f"{'met' if worst <= TARGET_MS else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
