"""Model.run's fast path for one-input models (a feed of the declared dtype whose shape passed the full check
once goes straight to the plan): everything the full check refuses or converts is still refused or converted
after the fast path has been taken, and its results are the plan's."""

from __future__ import annotations

import numpy as np
import pytest

import nn_core
from nn_core.errors import InputError, ModelError

MODEL = "assets/lenet5.onnx"


@pytest.fixture(scope="module")
def model():
    return nn_core.load(MODEL)


def test_fast_path_results_are_the_plans(model):
    rng = np.random.default_rng(3)
    for batch in (1, 3, 1):
        x = rng.random((batch, 1, 28, 28)).astype(np.float32)
        first = model.run({"input": x})["logits"]  # the full check (first time for this shape)
        again = model.run({"input": x})["logits"]  # the fast path (which specializes the plan for the shape)
        plan = model._fast_plan()
        (plain,) = plan.run(x)
        (specialized,) = plan.by_shape[x.shape](x)
        # the specialized function may take sums in another order (a fused head's bias inside its product)
        for result in (first, again):
            np.testing.assert_allclose(result, plain, rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(model.run({"input": x})["logits"], specialized)
        assert again.flags.c_contiguous and again.shape == (batch, 10)
    assert (1, 1, 28, 28) in model._checked_shapes and (3, 1, 28, 28) in model._checked_shapes


def test_after_the_fast_path_bad_feeds_are_still_refused(model):
    x = np.zeros((1, 1, 28, 28), np.float32)
    model.run({"input": x})
    model.run({"input": x})
    with pytest.raises(InputError, match="expects shape"):
        model.run({"input": np.zeros((1, 1, 27, 28), np.float32)})
    with pytest.raises(InputError, match="expects shape"):
        model.run({"input": np.zeros((1, 28, 28), np.float32)})
    with pytest.raises(InputError, match="unknown input"):
        model.run({"image": x})
    with pytest.raises(InputError, match="expects float32"):
        model.run({"input": np.zeros((1, 1, 28, 28), np.complex64)})
    with pytest.raises(ModelError):
        model.run({"input": x, "other": x})


def test_other_dtypes_and_layouts_are_converted_or_accepted(model):
    rng = np.random.default_rng(4)
    x = rng.random((2, 1, 28, 28)).astype(np.float32)
    want = model.run({"input": x})["logits"]
    model.run({"input": x})
    # float64 and big-endian float32 are not the declared dtype object: the full path converts them
    np.testing.assert_allclose(model.run({"input": x.astype(np.float64)})["logits"], want, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(model.run({"input": x.astype(">f4")})["logits"], want)
    # a strided view of the right shape and dtype
    wide = np.zeros((2, 1, 28, 56), np.float32)
    wide[..., ::2] = x
    np.testing.assert_array_equal(model.run({"input": wide[..., ::2]})["logits"], want)
    # output_names and a bare array keep working
    assert list(model.run({"input": x}, output_names=["logits"])) == ["logits"]
    np.testing.assert_array_equal(model.run(x)["logits"], want)


def test_checked_shapes_stay_bounded(model):
    for batch in range(1, 40):
        model.run({"input": np.zeros((batch, 1, 28, 28), np.float32)})
    assert 0 < len(model._checked_shapes) <= 16


def test_a_failing_node_is_named_on_the_fast_path_too():
    """The shape passes the feed check, so the second call takes the fast path; the kernel's failure is named
    the same way (node, inputs) as through FastPlan.run."""
    from helpers import make_model, tensor_info
    from onnx import helper

    model = nn_core.load_proto(make_model(
        [helper.make_node("Reshape", ["x", "shape"], ["y"], name="bad_reshape")],
        [tensor_info("x", ["N", 4])], [tensor_info("y", None)], {"shape": np.array([3], np.int64)}))
    x = np.ones((1, 4), np.float32)
    messages = []
    for _ in range(2):
        with pytest.raises(ModelError, match="bad_reshape") as caught:
            model.run({"x": x})
        messages.append(str(caught.value))
    assert (1, 4) in model._checked_shapes and messages[0] == messages[1]
