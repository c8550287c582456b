"""``Model.vjp`` against torch autograd, on small torch models exported to ONNX (tests/models/grad/).

Each ``<name>.onnx`` has a ``<name>.npz`` beside it made by tools/make_gradient_fixtures.py (torch is needed only
there): the feed, torch's output, a cotangent for it, and torch's gradients of ``sum(output * cotangent)`` with
respect to the input and to every parameter and buffer, keyed by ONNX name in the ONNX layout (``meta`` records
the torch -> ONNX name map, transforms, and what was left unchecked and why). The engine runs the graph as loaded
(BatchNormalization stays a node), so these check the gradient rules end to end through real exporter output.

A model that reaches an op without a gradient rule is an expected failure (``UnsupportedOperatorError`` names
the node), so the suite stays green while rules are being written; a wrong gradient is a failure.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np
import pytest

import nn_core

GRAD_MODELS = Path(__file__).resolve().parent / "models" / "grad"
PATHS = sorted(GRAD_MODELS.glob("*.onnx"))

FORWARD_RTOL = 1e-4   # relative to the largest |output|
GRAD_RTOL = 1e-3      # relative to the largest |reference gradient| of that tensor


@functools.cache
def _fixture(path: Path):
    with np.load(path.with_suffix(".npz"), allow_pickle=False) as data:
        arrays = {key: data[key] for key in data.files}
    meta = json.loads(str(arrays.pop("meta")))

    def part(prefix):
        return {key[len(prefix):]: value for key, value in arrays.items() if key.startswith(prefix)}

    return meta, part("feed:"), part("output:"), part("cotangent:"), part("grad:")


@functools.cache
def _model(path: Path) -> nn_core.Model:
    return nn_core.load(path)


@functools.cache
def _vjp_or_error(path: Path):
    """vjp's answer on the stored feed and cotangent, or the UnsupportedOperatorError it raised (computed once)."""
    _, feeds, _, cotangents, _ = _fixture(path)
    try:
        return _model(path).vjp(feeds, cotangents)
    except nn_core.UnsupportedOperatorError as exc:
        return exc


def _vjp(path: Path) -> dict[str, np.ndarray]:
    result = _vjp_or_error(path)
    if isinstance(result, nn_core.UnsupportedOperatorError):
        pytest.fail(f"a gradient rule is missing: {result}")
    return result


def _relative_error(got: np.ndarray, want: np.ndarray) -> float:
    scale = float(np.abs(want).max()) if want.size else 0.0
    error = float(np.abs(got.astype(np.float64) - want.astype(np.float64)).max()) if want.size else 0.0
    return error / scale if scale > 0 else error


def test_fixtures_present():
    assert len(PATHS) >= 20, f"expected the generated fixtures in {GRAD_MODELS}"
    for path in PATHS:
        assert path.with_suffix(".npz").is_file(), f"{path.name} has no .npz (run tools/make_gradient_fixtures.py)"
        assert path.stat().st_size < 300 * 1024


@pytest.mark.parametrize("path", PATHS, ids=[p.stem for p in PATHS])
def test_forward_matches_torch(path):
    meta, feeds, outputs, _, _ = _fixture(path)
    got = _model(path).run(feeds)
    for name, want in outputs.items():
        assert got[name].shape == want.shape, name
        error = _relative_error(got[name], want)
        assert error <= FORWARD_RTOL, f"{meta['name']}: output '{name}' differs from torch by {error:.2e} (relative)"


@pytest.mark.parametrize("path", PATHS, ids=[p.stem for p in PATHS])
def test_vjp_matches_torch_autograd(path):
    meta, feeds, _, _, reference = _fixture(path)
    model = _model(path)
    grads = _vjp(path)

    expected_keys = set(feeds) | set(model.initializers)
    assert expected_keys <= set(grads), f"vjp left out {sorted(expected_keys - set(grads))}"
    failures = []
    for name, want in reference.items():
        got = grads[name]
        if got.shape != want.shape:
            failures.append(f"'{name}': shape {got.shape}, torch {want.shape}")
            continue
        error = _relative_error(got, want)
        if not error <= GRAD_RTOL:
            failures.append(f"'{name}': relative error {error:.2e} (max |torch grad| {np.abs(want).max():.3g})")
    # initializers with no torch counterpart (exporter constants: Clip bounds, Resize scales...) are not checked
    # against torch, but their gradients must still be finite and of the right shape
    for name in meta["exporter_constants"]:
        if name in grads:
            value = model.initializers[name]
            if grads[name].shape != value.shape or not np.all(np.isfinite(grads[name])):
                failures.append(f"'{name}' (exporter constant): shape {grads[name].shape} or non-finite values")
    assert not failures, f"{meta['name']} ({meta['exporter']}, opset {meta['opset']}): " + "; ".join(failures)


@pytest.mark.parametrize("path", PATHS, ids=[p.stem for p in PATHS])
def test_input_gradient_matches_directional_differences(path):
    """A sanity check independent of torch: <vjp's input gradient, v> against a central difference of
    sum(output * cotangent) along a random direction v, in float32 (the models' type), so the tolerance is loose.
    ReLU and max-pooling kinks crossed within the step make the difference itself uncertain: the disagreement of the
    two one-sided differences is added to the tolerance (it is ~h|f''| where the function is smooth)."""
    meta, feeds, _, cotangents, _ = _fixture(path)
    model = _model(path)
    grads = _vjp(path)
    (input_name, x), = feeds.items()
    rng = np.random.default_rng(7)
    direction = rng.standard_normal(x.shape).astype(np.float32)

    def objective(step: float) -> float:
        outputs = model.run({input_name: (x + np.float32(step) * direction).astype(np.float32)})
        return sum(float(np.sum(outputs[name].astype(np.float64) * cot)) for name, cot in cotangents.items())

    h = 1e-3
    below, centre, above = objective(-h), objective(0.0), objective(h)
    numeric = (above - below) / (2 * h)
    kink = abs((above - centre) - (centre - below)) / h
    analytic = float(np.sum(grads[input_name].astype(np.float64) * direction))
    bound = float(np.linalg.norm(grads[input_name]) * np.linalg.norm(direction))
    assert abs(numeric - analytic) <= 0.02 * abs(analytic) + 1e-3 * bound + kink, (
        f"{meta['name']}: directional derivative {analytic:.6g} by vjp, {numeric:.6g} by differences "
        f"(one-sided differences disagree by {kink:.3g})")
