"""Shared fixtures. GUI tests run offscreen and never touch the user's real settings."""

from __future__ import annotations

import math
import os
import sys
import types
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

TESTS = Path(__file__).resolve().parent
MODELS = TESTS / "models"


def _standin_rasterize_module() -> types.ModuleType:
    """A minimal MNIST-style rasterizer, used only while the real ``gui/rasterize.py`` does not exist yet."""
    import numpy as np
    from PIL import Image, ImageDraw

    def default_pen_width(canvas_size):
        return max(canvas_size) / 14

    def rasterize(strokes, canvas_size, pen_width=None):
        width = pen_width or default_pen_width(canvas_size)
        image = Image.new("L", canvas_size, 0)
        draw = ImageDraw.Draw(image)
        for stroke in strokes:
            points = [tuple(p) for p in stroke]
            if len(points) > 1:
                draw.line(points, fill=255, width=int(round(width)), joint="curve")
            r = width / 2
            for x, y in (points[0], points[-1]):
                draw.ellipse((x - r, y - r, x + r, y + r), fill=255)
        pixels = np.asarray(image, dtype=np.float32) / 255.0
        rows, cols = np.nonzero(pixels > 0.05)
        if rows.size == 0:
            return np.zeros((28, 28), np.float32)
        crop = pixels[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
        scale = 20.0 / max(crop.shape)
        size = (max(1, round(crop.shape[1] * scale)), max(1, round(crop.shape[0] * scale)))
        small = np.asarray(Image.fromarray(crop, mode="F").resize(size, Image.Resampling.BOX), np.float32)
        out = np.zeros((28, 28), np.float32)
        total = small.sum()
        cy = (small.sum(axis=1) * np.arange(small.shape[0])).sum() / total
        cx = (small.sum(axis=0) * np.arange(small.shape[1])).sum() / total
        top = int(round(14 - cy))
        left = int(round(14 - cx))
        top = min(max(top, 0), 28 - small.shape[0])
        left = min(max(left, 0), 28 - small.shape[1])
        out[top:top + small.shape[0], left:left + small.shape[1]] = small
        return np.clip(out, 0.0, 1.0)

    module = types.ModuleType("gui.rasterize")
    module.rasterize = rasterize
    module.default_pen_width = default_pen_width
    return module


@pytest.fixture(scope="session", autouse=True)
def _rasterizer_available():
    """Use gui.rasterize; until its author lands it, a stand-in module (never written to gui/)."""
    try:
        import gui.rasterize  # noqa: F401
    except ModuleNotFoundError:
        sys.modules["gui.rasterize"] = _standin_rasterize_module()
    yield


@pytest.fixture(scope="session", autouse=True)
def _isolated_qsettings(tmp_path_factory):
    """Point every QSettings at a temporary directory: tests must not read or change the user's settings."""
    try:
        from PySide6.QtCore import QSettings
    except ImportError:  # engine-only environments
        yield
        return
    directory = str(tmp_path_factory.mktemp("qsettings"))
    QSettings.setDefaultFormat(QSettings.Format.IniFormat)
    for scope in (QSettings.Scope.UserScope, QSettings.Scope.SystemScope):
        QSettings.setPath(QSettings.Format.IniFormat, scope, directory)
    yield


@pytest.fixture
def settings(tmp_path):
    """A fresh settings file per test."""
    from PySide6.QtCore import QSettings

    return QSettings(str(tmp_path / "digitscope.ini"), QSettings.Format.IniFormat)


def show_active(qtbot, widget) -> None:
    """Show ``widget`` and wait until it is the active window: window shortcuts only reach the active one."""
    widget.show()
    qtbot.waitExposed(widget)
    widget.activateWindow()
    qtbot.waitUntil(widget.isActiveWindow, timeout=5000)


@pytest.fixture
def window(qtbot, settings):
    """The whole app with the bundled model, shown offscreen."""
    from gui import MainWindow

    main_window = MainWindow(model_path=None, settings=settings, predictor_mode="sync")
    qtbot.addWidget(main_window)
    main_window.resize(1280, 800)
    show_active(qtbot, main_window)
    yield main_window
    main_window.close()


def stroke_path(kind: str, size: float = 280.0, steps: int = 40) -> list[tuple[float, float]]:
    """Canvas-coordinate paths for a few digits, drawn the way a person would."""
    c = size / 2
    if kind == "1":
        return [(c + 4 * t, size * 0.18 + size * 0.64 * t) for t in (i / steps for i in range(steps + 1))]
    if kind == "0":
        return [(c + size * 0.22 * math.sin(2 * math.pi * t), c - size * 0.32 * math.cos(2 * math.pi * t))
                for t in (i / steps for i in range(steps + 3))]
    if kind == "7":
        top = [(size * 0.25 + size * 0.5 * t, size * 0.2) for t in (i / (steps // 2) for i in range(steps // 2))]
        down = [(size * 0.75 - size * 0.3 * t, size * 0.2 + size * 0.62 * t)
                for t in (i / (steps // 2) for i in range(steps // 2 + 1))]
        return top + down
    raise ValueError(kind)


def draw(qtbot, canvas, points, during=None) -> list:
    """Press, move through ``points`` (canvas coordinates) and release with real mouse events.

    ``during(i)`` is called after each move and its results are returned (to watch the app mid-stroke).
    """
    from PySide6.QtCore import Qt
    from PySide6.QtTest import QTest

    seen = []
    widget_points = [canvas.to_widget(p).toPoint() for p in points]
    QTest.mousePress(canvas, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, widget_points[0])
    for i, point in enumerate(widget_points[1:]):
        QTest.mouseMove(canvas, point)
        if during is not None:
            seen.append(during(i))
    QTest.mouseRelease(canvas, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, widget_points[-1])
    return seen


@pytest.fixture
def draw_on(qtbot):
    """``draw_on(canvas, points, during=None)``: a stroke with real mouse events (see ``draw``)."""
    return lambda canvas, points, during=None: draw(qtbot, canvas, points, during)


@pytest.fixture
def activate(qtbot):
    """``activate(widget)``: show it and make it the active window."""
    return lambda widget: show_active(qtbot, widget)


@pytest.fixture
def digit_path():
    """``digit_path("7")``: canvas-coordinate points of a hand-drawn-looking digit."""
    return stroke_path
