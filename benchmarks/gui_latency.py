"""Stroke-to-probabilities latency of the desktop app, per mouse move, with the activation view open.

Replays hand-drawn-looking digits point by point through real mouse events on the offscreen app and times,
for every move: the new probabilities (rasterize + adapter + traced engine run + view updates) and the
repainted frame (Qt painting the canvas, the bars and the visible feature maps).

    python benchmarks/gui_latency.py                       # bundled LeNet-5, the app's default predictor
    python benchmarks/gui_latency.py --model m.onnx --mode thread --repeats 5

Target: p95 < 16 ms (one 60 Hz frame) on the bundled model.
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
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
from PySide6.QtCore import QPoint, QSettings, Qt  # noqa: E402
from PySide6.QtTest import QTest  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402

from gui.window import MainWindow  # noqa: E402


def digit_strokes(size: float, points: int) -> list[list[tuple[float, float]]]:
    """A "7", a "0" and a "4" in canvas coordinates, sampled about as densely as a mouse reports."""
    c = size / 2
    seven = [(size * 0.25 + size * 0.5 * t, size * 0.2) for t in np.linspace(0, 1, points // 2)] + \
            [(size * 0.75 - size * 0.3 * t, size * 0.2 + size * 0.62 * t) for t in np.linspace(0, 1, points // 2)]
    zero = [(c + size * 0.22 * math.sin(2 * math.pi * t), c - size * 0.32 * math.cos(2 * math.pi * t))
            for t in np.linspace(0, 1.05, points)]
    four_a = [(size * 0.6 - size * 0.35 * t, size * 0.15 + size * 0.45 * t) for t in np.linspace(0, 1, points // 3)]
    four_a += [(size * 0.25 + size * 0.5 * t, size * 0.6) for t in np.linspace(0, 1, points // 3)]
    four_b = [(size * 0.6, size * 0.3 + size * 0.55 * t) for t in np.linspace(0, 1, points // 3)]
    return [[*seven], [*zero], four_a, four_b]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def run(model: str | None, mode: str, repeats: int, points: int, activations: bool) -> dict:
    app = QApplication.instance() or QApplication(sys.argv[:1])
    with tempfile.TemporaryDirectory() as directory:
        settings = QSettings(str(Path(directory) / "bench.ini"), QSettings.Format.IniFormat)
        window = MainWindow(model, settings=settings, predictor_mode=mode)
        window.resize(1280, 800)
        window.show()
        QTest.qWaitForWindowExposed(window)
        window.tabs.setCurrentIndex(0 if activations else 1)
        canvas = window.canvas
        finished = []
        window.session.events.prediction.connect(lambda p: p is not None and finished.append(p))

        to_probabilities: list[float] = []
        to_frame: list[float] = []
        engine: list[float] = []
        changed = skipped = 0
        for _ in range(repeats):
            for stroke_index, stroke in enumerate(digit_strokes(canvas.document.size[0], points)):
                if stroke_index in (0, 1, 2):  # each digit on a fresh canvas (the 4's second stroke adds to it)
                    canvas.clear()
                    app.processEvents()
                widget_points = [canvas.to_widget(p).toPoint() for p in stroke]
                QTest.mousePress(canvas, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier,
                                 widget_points[0])
                app.processEvents()
                for point in widget_points[1:]:
                    before = len(finished)
                    previous = window.probabilities
                    start = time.perf_counter()
                    QTest.mouseMove(canvas, QPoint(point))
                    deadline = start + 2.0  # a move that changes nothing on the canvas predicts nothing
                    while len(finished) == before and time.perf_counter() < deadline:
                        app.processEvents()  # threaded predictor: wait for this move's result
                    if len(finished) == before:
                        skipped += 1
                        continue
                    got = time.perf_counter()
                    app.processEvents()  # deliver the paint events: canvas, bars, visible feature maps
                    painted = time.perf_counter()
                    to_probabilities.append((got - start) * 1000)
                    to_frame.append((painted - start) * 1000)
                    engine.append(finished[-1].seconds * 1000)
                    changed += previous is None or not np.array_equal(previous, window.probabilities)
                QTest.mouseRelease(canvas, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier,
                                   widget_points[-1])
        nodes = len(window.model.nodes)
        name = window.model_path.name
        window.close()
    return {"model": name, "nodes": nodes, "mode": mode, "moves": len(to_probabilities), "changed": changed,
            "skipped": skipped,
            "probabilities": to_probabilities, "frame": to_frame, "engine": engine}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="ONNX model (default: the bundled LeNet-5)")
    parser.add_argument("--mode", default="auto", choices=["auto", "sync", "thread"], help="predictor mode")
    parser.add_argument("--repeats", type=int, default=3, help="times the digits are redrawn")
    parser.add_argument("--points", type=int, default=60, help="mouse moves per stroke")
    parser.add_argument("--no-activations", action="store_true", help="show the summary tab instead")
    args = parser.parse_args()
    result = run(args.model, args.mode, args.repeats, args.points, not args.no_activations)
    print(f"model {result['model']} ({result['nodes']} nodes), predictor {result['mode']}, "
          f"activation view {'open' if not args.no_activations else 'hidden'}, {result['moves']} mouse moves, "
          f"probabilities changed on {result['changed']}, {result['skipped']} moves gave no prediction")
    for label, key in (("move -> probabilities", "probabilities"), ("move -> painted frame", "frame"),
                       ("engine (traced run)", "engine")):
        values = result[key]
        print(f"  {label:24} median {statistics.median(values):6.2f} ms   p95 {percentile(values, 95):6.2f} ms"
              f"   max {max(values):6.2f} ms")
    p95 = percentile(result["probabilities"], 95)
    print(f"target p95 < 16 ms: {'met' if p95 < 16 else 'NOT met'} ({p95:.2f} ms)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
