"""digitscope's desktop app: draw a digit, watch the model recognise it layer by layer.

``gui.MainWindow`` is imported lazily so that the Qt-free modules (strokes, adapter, rasterize) can be used
without loading PySide6.
"""

from __future__ import annotations

from typing import Any

__all__ = ["MainWindow"]


def __getattr__(name: str) -> Any:
    if name == "MainWindow":
        from gui.window import MainWindow

        return MainWindow
    raise AttributeError(f"module 'gui' has no attribute {name!r}")
