"""Work done off the UI thread lets go of Python's global lock often: the model file is parsed in pieces."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from google.protobuf.message import DecodeError
from onnx import helper, numpy_helper

from nn_core.onnx_io import parse_model

ROOT = Path(__file__).resolve().parent.parent
MODELS = [ROOT / "assets" / "lenet5.onnx", *sorted((ROOT / "tests" / "models").glob("*.onnx"))]


def _weighty_model() -> onnx.ModelProto:
    """A model whose graph holds several initializers, a Constant node with a tensor, metadata after the graph."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((64, 64)).astype(np.float32), f"w{i}") for i in range(6)]
    nodes = [helper.make_node("Constant", [], ["c"], value=numpy_helper.from_array(np.ones((32, 32), np.float32)))]
    previous = "x"
    for i in range(6):
        nodes.append(helper.make_node("MatMul", [previous, f"w{i}"], [f"h{i}"], name=f"mm{i}"))
        previous = f"h{i}"
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 64])],
                              [helper.make_tensor_value_info(previous, onnx.TensorProto.FLOAT, [1, 64])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    helper.set_model_props(model, {"classes": "0,1,2"})
    return model


@pytest.mark.parametrize("piece", [16, 200, 5000, 1 << 20])
def test_parsing_in_pieces_gives_the_same_model(piece):
    for path in MODELS:
        data = path.read_bytes()
        assert parse_model(data, piece) == onnx.load_model_from_string(data), path.name
    data = _weighty_model().SerializeToString()
    assert parse_model(data, piece).SerializeToString() == data


def test_parsing_in_pieces_refuses_what_the_whole_parser_refuses():
    data = _weighty_model().SerializeToString()
    for broken in (data[: len(data) // 2], data[:-3], b"\x0b" + data, data + b"\xff\xff"):
        with pytest.raises(DecodeError):
            onnx.load_model_from_string(broken)
        with pytest.raises(DecodeError):
            parse_model(broken, 64)


def test_an_empty_graph_field_is_kept():
    model = onnx.ModelProto(ir_version=8)
    model.graph.SetInParent()
    data = model.SerializeToString() + b"\x08\x09" * 200  # ir_version repeated: the last one wins
    parsed = parse_model(data, 16)
    assert parsed.HasField("graph") and parsed.ir_version == 9


# --- a replaced model is released -------------------------------------------------------------------------------
def _gc_disabled():
    import contextlib
    import gc

    @contextlib.contextmanager
    def disabled():
        was = gc.isenabled()
        gc.disable()
        try:
            yield
        finally:
            if was:
                gc.enable()

    return disabled()


def test_a_model_and_its_plans_hold_no_reference_cycle():
    """Reference counting alone frees a dropped model (weights, kernels, plans, scratch buffers): the cyclic
    collector runs rarely, and until it did, a replaced DenseNet kept ~1 GB alive."""
    import gc
    import weakref

    import nn_core
    from nn_core.interface import ModelAdapter

    for path in MODELS:
        with _gc_disabled():
            gc.collect()
            model = nn_core.load(path)
            adapter = ModelAdapter(model)
            image = np.zeros((28, 28), np.float32)
            image[6:22, 12:16] = 1
            adapter.predict(image)
            adapter.predict_traced(image)
            kernels = [weakref.ref(step.kernel) for step in model._fast_plan().steps]
            gone = weakref.ref(model)
            del model, adapter
            assert gone() is None and all(kernel() is None for kernel in kernels), path.name


def test_a_switched_away_model_is_freed_and_memory_trimmed(monkeypatch):
    """After a switch the old Model object goes (threaded predictor, trial run, traced records and all), and the
    heap is trimmed in the background (glibc keeps freed arenas otherwise)."""
    import weakref

    from gui import model_opening
    from gui.session import Session, bundled_model_path
    from gui.settings import AppSettings, MemoryStore
    from tests.conftest import stroke_path

    monkeypatch.setattr(model_opening.MemoryReleaser, "DELAY_SECONDS", 0.0)
    session = Session(AppSettings(MemoryStore()), predictor_mode="thread")
    try:
        session.open_model(ROOT / "tests" / "models" / "torch_avgpool_m11.onnx")
        assert session.wait_for_open(timeout=60) is True, session.last_error
        old = weakref.ref(session.model)
        session.draw(stroke_path("7"))
        deadline = time.monotonic() + 30
        while not session.up_to_date:
            assert time.monotonic() < deadline
            session.process_pending(wait=0.05)
        trims = model_opening.MEMORY.trims
        with _gc_disabled():
            session.open_model(bundled_model_path())
            assert session.wait_for_open(timeout=60) is True
            # workers of the old model (a traced run, an auto-detection chunk) finish and hand back, then it goes
            deadline = time.monotonic() + 30
            while old() is not None:
                assert time.monotonic() < deadline, "the replaced model is still referenced"
                session.process_pending(wait=0.05)
        if model_opening.MEMORY.available:
            deadline = time.monotonic() + 10
            while model_opening.MEMORY.trims == trims:
                assert time.monotonic() < deadline, "the heap was not trimmed"
                time.sleep(0.01)
    finally:
        session.close()


def test_the_window_keeps_no_replaced_model(window, qtbot, draw_on, digit_path):
    """The views (graph, activations, model table) let go of the old model too."""
    import gc
    import weakref

    window.tabs.setCurrentWidget(window.graph)
    assert window.open_model(ROOT / "tests" / "models" / "torch_avgpool_m11.onnx", timeout=60)
    old = weakref.ref(window.model)
    draw_on(window.canvas, digit_path("7"))
    qtbot.waitUntil(lambda: window.session.up_to_date, timeout=30_000)
    assert window.open_model(ROOT / "assets" / "lenet5.onnx", timeout=60)
    # background work begun on the old model (auto-detect on open, the reliability diagram) ends, then it goes
    qtbot.waitUntil(lambda: gc.collect() is not None and old() is None, timeout=30_000)


def test_auto_detect_slices_follow_the_model_speed():
    """A slow model is tried one image per run (progress and cancel between), a fast one ten at a time."""
    from gui.predictor import ChunkPacer

    fast = ChunkPacer(10)
    assert [s.stop - s.start for s in fast.slices(50)] == [1, 4, 10, 10, 10, 10, 5]
    slow = ChunkPacer(10, target_seconds=0.02)
    sizes = []
    for part in slow.slices(5):
        time.sleep(0.03 * (part.stop - part.start))
        sizes.append(part.stop - part.start)
    assert sizes == [1, 1, 1, 1, 1]
    assert [s.stop - s.start for s in slow.slices(3)][0] == 1  # the size learned carries over


def test_no_trim_while_a_model_works_and_no_work_starts_during_a_trim():
    """malloc_trim holds each arena's lock: a worker allocating meanwhile would wait holding Python's lock."""
    import threading

    from gui.model_opening import MemoryReleaser

    releaser = MemoryReleaser()
    started, finish, log = threading.Event(), threading.Event(), []

    def slow_trim(_pad):
        log.append("trim")
        started.set()
        finish.wait(5)
        return 1

    releaser._trim, releaser.DELAY_SECONDS = slow_trim, 0.0
    with releaser.working():
        releaser.release_soon()
        time.sleep(0.1)
        assert log == []  # held back while the model works
    assert started.wait(5)

    def work():
        with releaser.working():
            log.append("work")

    worker = threading.Thread(target=work)
    worker.start()
    time.sleep(0.1)
    assert log == ["trim"]  # the work waits for the trim under way
    finish.set()
    worker.join(5)
    assert log == ["trim", "work"] and releaser.trims == 1


def test_background_work_leaves_a_core_to_the_ui(monkeypatch):
    """BLAS gets one thread fewer than the cores once a model works in the background (2 cores: one thread)."""
    from gui import model_opening

    calls = []
    monkeypatch.setattr(model_opening, "_CORE_RESERVED", False)
    monkeypatch.setattr(model_opening.os, "sched_getaffinity", lambda _pid: {0, 1, 2, 3}, raising=False)
    monkeypatch.setattr("nn_core.threads.set_blas_threads", calls.append)
    model_opening.reserve_a_core_for_the_ui()
    model_opening.reserve_a_core_for_the_ui()
    assert calls == [3]
