"""nn_core.finetune's per-step callback: progress for a bar, and True from it stops the run (a Cancel button)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

import nn_core

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = Path(__file__).parent / "data" / "mnist_sample.npz"


def test_finetune_callback_reports_each_step_and_can_stop_it():
    model = nn_core.load(str(ROOT / "assets" / "lenet5.onnx"))
    with np.load(SAMPLE) as data:
        images = (data["test_images"][:6].astype(np.float32) / 255)[:, None]
        wanted = (data["test_labels"][:6].astype(np.int64) + 1) % 10  # every example wrong: it has to train
    calls: list[tuple[int, int]] = []

    def callback(step: int, steps: int) -> bool:
        calls.append((step, steps))
        return step >= 3

    tuned = nn_core.finetune(model, images, wanted, steps=20, early_stopping=False, callback=callback)
    assert calls == [(1, 20), (2, 20), (3, 20)]
    record = json.loads(tuned.metadata["finetuned"])
    assert record["steps"] == 3 and record["stopped"] == "stopped by the caller"
    # a callback returning None (a plain progress report) never stops it
    seen: list[int] = []
    nn_core.finetune(model, images, wanted, steps=4, early_stopping=False, callback=lambda s, n: seen.append(s))
    assert seen == [1, 2, 3, 4]
