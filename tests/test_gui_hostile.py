"""The window survives every hand-written hostile file: the open fails with a message (or the file turns out to be
harmless and opens), the window keeps responding, and the model it had before still reads a drawn digit."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import hostile_models  # noqa: E402

pytest.importorskip("pytestqt")

BUNDLED = HERE.parent / "assets" / "lenet5.onnx"


def _reads_a_one(window, qtbot, draw_on, digit_path) -> bool:
    window.clear_action.trigger()
    draw_on(window.canvas, digit_path("1"))
    qtbot.waitUntil(lambda: window.probabilities is not None, timeout=5000)
    return int(np.argmax(window.probabilities)) == 1


def test_the_window_survives_every_hostile_file(window, qtbot, tmp_path, draw_on, digit_path, monkeypatch):
    built = hostile_models.build_all(tmp_path)
    monkeypatch.chdir(tmp_path)  # a relative path a file smuggles in resolves here, not in the project
    assert window.model_path.resolve() == BUNDLED.resolve()
    assert _reads_a_one(window, qtbot, draw_on, digit_path)
    refused = 0
    for case_id, (path, description, folder) in sorted(built.items()):
        opened = window.open_model(path)
        assert opened in (True, False), f"{case_id}: the open did not finish"
        assert not hostile_models.canary_path(folder).exists(), f"{case_id}: code from the file ran"
        if opened:
            assert window.open_model(BUNDLED), f"{case_id}: could not go back to the bundled model"
        else:
            refused += 1
            assert window.last_error and path.name in window.last_error, f"{case_id}: {window.last_error!r}"
            assert window.model_path.resolve() == BUNDLED.resolve(), f"{case_id}: the previous model was replaced"
        assert _reads_a_one(window, qtbot, draw_on, digit_path), f"{case_id} ({description}) broke the window"
    assert refused > len(built) // 2
