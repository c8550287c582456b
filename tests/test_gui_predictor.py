"""The predictor's ``prepare`` hook: what the views make of a traced run is computed on the worker's thread."""

from __future__ import annotations

import threading
import time

import numpy as np
from helpers import BUNDLED

import nn_core
from gui.predictor import Predictor
from nn_core.interface import ModelAdapter


def test_a_threaded_traced_run_is_prepared_on_the_worker_thread_and_a_synchronous_one_is_not():
    adapter = ModelAdapter(nn_core.load(BUNDLED))
    image = np.zeros((28, 28), np.float32)
    for mode, expected in (("thread", {"view": "prepared"}), ("sync", {})):
        delivered, threads = [], []
        predictor = Predictor(delivered.append, mode)

        def prepare(prediction, cancelled, threads=threads):
            threads.append(threading.get_ident())
            assert prediction.traced and prediction.records and cancelled() is False
            return {"view": "prepared"}

        predictor.prepare = prepare
        predictor.set_adapter(adapter)
        try:
            predictor.submit(image, drawing=1)
            deadline = time.monotonic() + 30
            while not any(p.traced for p in delivered) and time.monotonic() < deadline:
                time.sleep(0.01)
            traced = [p for p in delivered if p.traced]
            assert len(traced) == 1 and traced[0].prepared == expected
            assert all(p.prepared == {} for p in delivered if not p.traced)
            assert all(ident != threading.get_ident() for ident in threads)
        finally:
            predictor.shutdown()


def test_a_failing_prepare_leaves_the_prediction_unprepared_but_delivered():
    delivered = []
    predictor = Predictor(delivered.append, "thread")
    predictor.prepare = lambda prediction, cancelled: 1 / 0
    predictor.set_adapter(ModelAdapter(nn_core.load(BUNDLED)))
    try:
        predictor.submit(np.zeros((28, 28), np.float32), drawing=1, bars=False)
        deadline = time.monotonic() + 30
        while not delivered and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(delivered) == 1 and delivered[0].error is None and delivered[0].prepared == {}
    finally:
        predictor.shutdown()
