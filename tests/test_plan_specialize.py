"""FastPlan.specialize: the plan function a single-input model keeps per input shape, whose steps call the
runners their kernels specialized for that shape, against the general plan function and the traced kernels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers import in_threads

import nn_core
from nn_core.errors import ModelError
from nn_core.plan import KEPT_SHAPES

ROOT = Path(__file__).resolve().parent.parent
LENET = ROOT / "assets" / "lenet5.onnx"
TINY = ROOT / "tests" / "models"


def _digits(count: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).random((count, 1, 28, 28), dtype=np.float32)


def _traced(model: nn_core.Model, x: np.ndarray) -> np.ndarray:
    outputs, _ = model.run_traced({model.inputs[0].name: x})
    return outputs[model.outputs[0].name]


def _run(model: nn_core.Model, x: np.ndarray) -> np.ndarray:
    return model.run({model.inputs[0].name: x})[model.outputs[0].name]


def _specialized_runs(model: nn_core.Model, shape: tuple[int, ...]) -> list:
    plan = model._fast_plan()
    function = plan.by_shape[shape]
    return [function.__globals__[f"k{index}"] for index in range(len(plan.steps))]


def test_lenet_specializes_every_step_and_gives_the_general_plans_values():
    """The second run of a shape makes its function; every later run goes through it, with the general plan
    function's values (within rounding: the fused head takes its first bias inside the product) and the traced
    kernels'."""
    model = nn_core.load(LENET)
    plan = model._fast_plan()
    first = _digits(1, 0)
    _run(model, first)
    assert first.shape not in plan.by_shape  # the first run goes through the checked path
    _run(model, first)
    runs = _specialized_runs(model, first.shape)
    assert all(run != step.kernel.run for run, step in zip(runs, plan.steps, strict=True))
    for seed in range(1, 6):
        x = _digits(1, seed)
        got = _run(model, x)
        np.testing.assert_allclose(got, plan.function(x)[0], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(got, _traced(model, x), rtol=1e-4, atol=1e-5)


def test_outputs_are_fresh_arrays():
    """An output handed back is not overwritten by the next run (the caller keeps it)."""
    model = nn_core.load(LENET)
    for seed in range(2):
        _run(model, _digits(1, seed))
    first = _run(model, _digits(1, 10))
    kept = first.copy()
    _run(model, _digits(1, 11))
    assert np.array_equal(first, kept)


def test_each_shape_gets_its_own_function_and_a_step_passes_other_shapes_to_run():
    model = nn_core.load(LENET)
    for batch in (1, 3, 1, 3):
        x = _digits(batch, batch)
        np.testing.assert_allclose(_run(model, x), _traced(model, x), rtol=1e-4, atol=1e-5)
    plan = model._fast_plan()
    assert {(1, 1, 28, 28), (3, 1, 28, 28)} <= set(plan.by_shape)
    # a batch-1 runner given a batch-2 input (and a float64 one) hands it to the kernel's run
    step = plan.steps[0]
    run = _specialized_runs(model, (1, 1, 28, 28))[0]
    constants = [plan.constants[name] for name in step.inputs[1:]]
    for x in (_digits(2, 7), _digits(1, 8).astype(np.float64)):
        assert np.array_equal(run(x, *constants), step.kernel.run(x, *constants))


def test_nan_and_infinite_inputs_take_the_general_values():
    """The phase-pooled first layer's NaN check still redoes such inputs inside the specialized runner."""
    model = nn_core.load(LENET)
    for seed in range(2):
        _run(model, _digits(1, seed))
    x = _digits(1, 3)
    x[0, 0, 5, 5] = np.inf
    x[0, 0, 20, 9] = -np.inf
    with np.errstate(invalid="ignore", over="ignore"):
        got = _run(model, x)
        expected = _traced(model, x)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(expected))
    finite = ~np.isnan(expected)
    np.testing.assert_allclose(got[finite], expected[finite], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ["tf_mlp_flat784", "torch_avgpool_m11", "torch_logsoftmax_mnist_norm",
                                  "keras_nhwc_unsorted"])
def test_digit_models_match_their_general_plan(name):
    """Models with steps that specialize and steps that do not: the same values as the general function."""
    model = nn_core.load(TINY / f"{name}.onnx")
    spec = model.inputs[0]
    shape = tuple(d if isinstance(d, int) and d > 0 else 1 for d in spec.shape)
    rng = np.random.default_rng(5)
    for _ in range(2):
        _run(model, rng.random(shape, dtype=np.float32))
    plan = model._fast_plan()
    assert shape in plan.by_shape
    for _ in range(3):
        x = rng.random(shape, dtype=np.float32)
        assert np.array_equal(_run(model, x), plan.function(x)[0])


def test_a_failure_in_a_specialized_step_is_named():
    """A kernel that raises inside the specialized function is reported as a ModelError naming its node."""
    model = nn_core.load(LENET)
    x = _digits(1, 0)
    for _ in range(2):
        _run(model, x)
    plan = model._fast_plan()

    def broken(*_args):
        raise ValueError("boom")

    last = len(plan.steps) - 1
    plan.by_shape[x.shape].__globals__[f"k{last}"] = broken
    with pytest.raises(ModelError, match=rf"{plan.steps[last].node.name}.*boom"):
        _run(model, x)


def test_the_kept_shapes_are_bounded():
    model = nn_core.load(TINY / "tf_mlp_flat784.onnx")
    name = model.inputs[0].name
    for rows in range(1, 2 * KEPT_SHAPES + 2):
        x = np.random.default_rng(rows).random((rows, 784), dtype=np.float32)
        for _ in range(2):
            model.run({name: x})
    assert 0 < len(model._fast_plan().by_shape) <= KEPT_SHAPES


def test_threads_share_the_specialized_runners():
    """Runs from several threads at once (the window's worker and a caller) each get their own image's values:
    the runners share their kernels' buffers under the kernels' locks."""
    model = nn_core.load(LENET)
    images = [_digits(1, seed) for seed in range(8)]
    for _ in range(2):
        _run(model, images[0])
    expected = [_run(model, x).copy() for x in images]
    failures = []

    def work(offset: int) -> None:
        for turn in range(40):
            index = (offset + turn) % len(images)
            if not np.array_equal(_run(model, images[index]), expected[index]):
                failures.append(index)

    in_threads(work, 4)
    assert not failures


def test_a_kernel_whose_specialize_raises_keeps_its_run(monkeypatch):
    """Specializing is only a faster way to the same values: a kernel that raises there keeps its ``run``, and
    the shape runs (every call, not only the first)."""
    model = nn_core.load(LENET)
    (step,) = model._fast_plan().steps

    def broken(*_args):
        raise RuntimeError("no specialization")

    monkeypatch.setattr(step.kernel, "specialize", broken)
    x = _digits(1, 4)
    want = _traced(model, x)
    for _ in range(3):
        np.testing.assert_allclose(_run(model, x), want, rtol=1e-4, atol=1e-5)
    assert model._fast_plan().by_shape[x.shape].__globals__["k0"] == step.kernel.run
