"""The latest-input-wins worker under the predictor and the comparison: newer jobs replace waiting ones."""

from __future__ import annotations

import threading

from gui.latest import LatestWorker


class Recorder:
    """A handler that holds the worker on job "hold" until released, and records what it handled."""

    def __init__(self) -> None:
        self.started, self.release, self.idle_again = threading.Event(), threading.Event(), threading.Event()
        self.handled: list[str] = []

    def __call__(self, job: str) -> None:
        if job == "hold":
            self.started.set()
            self.release.wait(5)
        self.handled.append(job)
        if job.startswith("last"):
            self.idle_again.set()


def test_a_job_submitted_while_busy_replaces_the_waiting_one():
    recorder = Recorder()
    worker = LatestWorker(recorder, "test-latest")
    worker.submit("hold")
    assert recorder.started.wait(5)
    for job in ("a", "b", "c", "last"):
        worker.submit(job)
    assert worker.has_newer() and not worker.is_idle()
    recorder.release.set()
    assert recorder.idle_again.wait(5)
    assert recorder.handled == ["hold", "last"]  # a, b and c were replaced while they waited
    worker.shutdown()


def test_a_dropped_job_never_runs_and_the_worker_starts_again_after_shutdown():
    recorder = Recorder()
    starts: list[int] = []
    worker = LatestWorker(recorder, "test-latest", before_start=lambda: starts.append(1))
    worker.submit("hold")
    assert recorder.started.wait(5)
    worker.submit("stale")
    worker.drop_pending()
    assert not worker.has_newer()
    recorder.release.set()
    worker.shutdown()
    assert recorder.handled == ["hold"]
    worker.submit("last after shutdown")
    assert recorder.idle_again.wait(5)
    assert recorder.handled == ["hold", "last after shutdown"] and len(starts) == 2
    worker.shutdown()
