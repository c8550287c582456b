"""Personalize stops mid fine-tune when cancelled (nn_core.finetune's per-step callback), and its progress moves
within each fine-tune, not only between them."""

from __future__ import annotations

import threading
import time

from gui.session import Session, bundled_model_path
from gui.teaching import TICKS, Teacher
from nn_core.interface import load_samples


def personalize_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "digitscope-personalize" and t.is_alive()]


def test_cancel_stops_the_fine_tune_under_way(tmp_path):
    session = Session(predictor_mode="sync")
    teacher = Teacher(session, tmp_path)  # before the model opens: it follows the session's models
    session.open_model(bundled_model_path())
    assert session.wait_for_open(30)
    images, labels = load_samples()
    for image, label in zip(images[:8], labels[:8], strict=True):
        teacher.store.add(int(label + 1) % 10, image, [], (280, 280))  # all wrong: every fine-tune has to work
    progress: list[tuple[int, int, str]] = []
    teacher.events.progress.connect(lambda done, total, text: progress.append((done, total, text)))
    assert not personalize_threads()
    assert teacher.personalize() and teacher.running
    deadline = time.monotonic() + 60
    while not any(done % TICKS for done, _, _ in progress):  # a step inside a fine-tune has been reported
        assert time.monotonic() < deadline and teacher.running, progress
        session.process_pending(wait=0.02)
    assert teacher.cancel() and not teacher.running
    stopped = time.monotonic()
    while personalize_threads():
        assert time.monotonic() - stopped < 3.0, "the fine-tune did not stop at its next step"
        time.sleep(0.01)
    session.process_pending(wait=0.1)
    assert teacher.personal is None and not teacher.personal_installed
    assert session.model_path == bundled_model_path()
    done, total, _ = progress[-1]
    assert 0 < done < total and total % TICKS == 0
    session.close()


def test_progress_reaches_the_end_when_not_cancelled(tmp_path):
    session = Session(predictor_mode="sync")
    teacher = Teacher(session, tmp_path)  # before the model opens: it follows the session's models
    session.open_model(bundled_model_path())
    assert session.wait_for_open(30)
    images, labels = load_samples()
    for image, label in zip(images[:2], labels[:2], strict=True):
        teacher.store.add(int(label), image, [], (280, 280))
    progress: list[tuple[int, int]] = []
    teacher.events.progress.connect(lambda done, total, _text: progress.append((done, total)))
    assert teacher.personalize()
    deadline = time.monotonic() + 120
    while teacher.running:
        assert time.monotonic() < deadline
        session.process_pending(wait=0.05)
    assert teacher.personal_installed and progress[-1][0] == progress[-1][1]
    assert [d for d, _ in progress] == sorted(d for d, _ in progress)  # never backwards
    session.close()
