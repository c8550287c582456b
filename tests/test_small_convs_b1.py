"""Batch-1 kernels of the small digit models (issue 10): the Softmax of a classifier's few scores
(activations.small_softmax_rows) against the general path and onnxruntime, at ordinary and extreme logits; a
convolution averaged over its whole output as one product (averaged_conv.py) against the unfused plan and
onnxruntime."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import HERE, build_kernel, make_model, ort_run, tensor_info
from onnx import helper

import nn_core
import nn_core.plan as plan_module
from nn_core.ops.activations import SMALL_SOFTMAX

# rows of ordinary logits, all negative, overflowing, underflowing, NaN and infinities
EXTREME_ROWS = [[1.0, 2.0, 3.0, 4.0], [-300.0, -310.0, -200.0, -250.0], [90.0, 95.0, 80.0, -5.0],
                [-120.0, 0.5, -90.0, -1.0], [np.nan, 1.0, 2.0, 3.0], [np.inf, 1.0, 2.0, 3.0],
                [-np.inf, 1.0, 2.0, 3.0], [-0.2, -0.1, -0.4, -3.0], [80.0, -30.0, 0.0, 79.5]]


def _softmax(opset: int, axis: int | None):
    attrs = {} if axis is None else {"axis": axis}
    return build_kernel(helper.make_node("Softmax", ["x"], ["y"], **attrs), [None], opset=opset)


def _general(kernel, x: np.ndarray) -> np.ndarray:
    """The kernel's general path for ``x``: the same values tiled past SMALL_SOFTMAX along a leading axis."""
    copies = SMALL_SOFTMAX // x.size + 1
    tiled = np.concatenate([x[None]] * copies)
    return kernel.run(tiled)[0]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_small_softmax_at_the_extremes_is_the_general_path(dtype):
    kernel = _softmax(13, -1)
    for row in EXTREME_ROWS:
        x = np.array([row], dtype)
        with np.errstate(invalid="ignore", over="ignore"):
            got, want = kernel.run(x), _general(kernel, x)
        assert got.dtype == dtype and got.shape == x.shape
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-30)
    x = np.array(EXTREME_ROWS[:4] + EXTREME_ROWS[7:], dtype)  # several rows at once, one of them shifted
    np.testing.assert_allclose(kernel.run(x), _general(kernel, x), rtol=1e-6, atol=1e-30)


@pytest.mark.parametrize("opset, axis, shape", [(13, None, (1, 10)), (13, -1, (2, 3, 10)), (13, 2, (2, 3, 5)),
                                                (13, 1, (1, 10, 3)), (11, 1, (1, 10)), (11, 1, (2, 3, 4)),
                                                (11, None, (1, 2, 5)), (11, 0, (3, 4)), (13, 0, (10,))])
def test_small_softmaxes_match_onnxruntime(opset, axis, shape):
    """Trailing axes (and, before opset 13, the flattened ones from ``axis`` on) take the small path; any other
    axis keeps the general one: both as onnxruntime, including a row whose scores underflow to 0 and its Log."""
    rng = np.random.default_rng(7)
    x = (rng.standard_normal(shape) * 4).astype(np.float32)
    x.reshape(-1)[0] = -150.0  # its exponential underflows beside the others
    attrs = {} if axis is None else {"axis": axis}
    model = make_model([helper.make_node("Softmax", ["x"], ["p"], **attrs), helper.make_node("Log", ["p"], ["y"])],
                       [tensor_info("x", list(shape))], [tensor_info("p", None), tensor_info("y", None)],
                       opset=opset)
    want_p, want_log = ort_run(model, {"x": x})
    kernel = _softmax(opset, axis)
    got = kernel.run(x)
    np.testing.assert_allclose(got, want_p, rtol=1e-5, atol=1e-30)
    with np.errstate(divide="ignore"):
        got_log = np.log(got)
    np.testing.assert_allclose(got_log, want_log, rtol=1e-5, atol=1e-5)  # (-inf where a score underflows)
    assert np.array_equal(np.isneginf(got_log), np.isneginf(want_log))


def test_a_small_softmax_is_fresh_and_leaves_its_input_alone():
    kernel = _softmax(13, -1)
    x = np.arange(10, dtype=np.float32)[None]
    kept = x.copy()
    first = kernel.run(x)
    second = kernel.run(x)
    assert first is not second and not np.shares_memory(first, x)
    np.testing.assert_array_equal(x, kept)
    np.testing.assert_array_equal(first, second)
    strided = np.arange(20, dtype=np.float32).reshape(1, 20)[:, ::2]  # a strided view: reshaped by a copy
    np.testing.assert_allclose(kernel.run(strided), kernel.run(np.ascontiguousarray(strided)), rtol=1e-7)


# --- Conv -> [Pad of zeros] -> AveragePool over the whole output, as one product (averaged_conv.py)


def _averaged_model(x_shape, w_shape, conv_attrs, pool_kernel, bias=True, pad=None, seed=0):
    """Conv -> (Pad with ``pad`` widths) -> AveragePool(pool_kernel) -> Flatten, with seeded weights."""
    rng = np.random.default_rng(seed)
    inits = {"w": rng.standard_normal(w_shape).astype(np.float32)}
    conv_inputs = ["x", "w"]
    if bias:
        inits["b"] = rng.standard_normal(w_shape[0]).astype(np.float32)
        conv_inputs.append("b")
    nodes = [helper.make_node("Conv", conv_inputs, ["c"], **conv_attrs)]
    pooled_input = "c"
    if pad is not None:
        inits["pads"] = np.array(pad, np.int64)
        nodes.append(helper.make_node("Pad", ["c", "pads"], ["p"]))
        pooled_input = "p"
    nodes += [helper.make_node("AveragePool", [pooled_input], ["a"], kernel_shape=list(pool_kernel)),
              helper.make_node("Flatten", ["a"], ["y"])]
    return make_model(nodes, [tensor_info("x", ["N", *x_shape[1:]])], [tensor_info("y", None)], inits)


def _run_both(model, x):
    """(fused plan's output, its step labels, the same plan without the fusion's output)."""
    fused = nn_core.load_proto(model)
    got = fused.run({"x": x})["y"]
    original = plan_module.fuse_averaged_convs
    plan_module.fuse_averaged_convs = lambda steps, outputs: steps
    try:
        plain = nn_core.load_proto(model)
        want = plain.run({"x": x})["y"]
    finally:
        plan_module.fuse_averaged_convs = original
    return got, [s.label for s in fused._fast_plan().steps], want


# (input, weight, conv attributes, pool kernel = the conv's output size)
AVERAGED_CASES = [((1, 64, 6, 6), (10, 64, 3, 3), {}, (4, 4)),
                  ((1, 3, 9, 7), (5, 3, 3, 3), {"pads": [1, 0, 2, 1]}, (10, 6)),
                  ((2, 4, 11, 11), (6, 4, 3, 3), {"strides": [2, 2]}, (5, 5)),
                  ((1, 2, 9, 9), (3, 2, 3, 3), {"dilations": [2, 2], "strides": [1, 2]}, (5, 3)),
                  ((3, 5, 4, 5), (7, 5, 2, 2), {"pads": [1, 1, 1, 1]}, (5, 6)),
                  ((1, 3, 5, 5), (4, 3, 5, 5), {}, (1, 1))]


@pytest.mark.parametrize("case", range(len(AVERAGED_CASES)))
@pytest.mark.parametrize("bias, pad", [(True, None), (False, None), (True, [0] * 8)])
def test_a_conv_averaged_over_its_whole_output_is_one_product(case, bias, pad):
    x_shape, w_shape, attrs, pool = AVERAGED_CASES[case]
    model = _averaged_model(x_shape, w_shape, attrs, pool, bias, pad, seed=case)
    x = np.random.default_rng(50 + case).standard_normal(x_shape).astype(np.float32)
    got, labels, want = _run_both(model, x)
    assert any("AveragePool" in label and label.startswith("Conv") for label in labels)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got, ort_run(model, {"x": x})[0], rtol=1e-5, atol=1e-5)


def test_an_averaged_conv_falls_back_where_the_pool_is_not_one_window():
    """A pool window smaller than the output, or a Pad that adds values, keeps the two kernels' work."""
    x = np.random.default_rng(3).standard_normal((1, 4, 8, 8)).astype(np.float32)
    smaller = _averaged_model(x.shape, (5, 4, 3, 3), {}, (3, 3))  # 6x6 output, 3x3 windows: 2x2 results
    got, _, want = _run_both(smaller, x)
    np.testing.assert_allclose(got, want, rtol=1e-6)
    np.testing.assert_allclose(got, ort_run(smaller, {"x": x})[0], rtol=1e-5, atol=1e-5)
    padded = _averaged_model(x.shape, (5, 4, 3, 3), {}, (7, 7), pad=[0, 0, 1, 1, 0, 0, 0, 0])
    got, labels, want = _run_both(padded, x)
    assert "Pad" in labels
    np.testing.assert_allclose(got, ort_run(padded, {"x": x})[0], rtol=1e-5, atol=1e-5)


def test_an_averaged_conv_of_non_finite_inputs_is_the_two_kernels():
    model = _averaged_model((1, 3, 6, 6), (4, 3, 3, 3), {}, (4, 4))
    for value in (np.inf, -np.inf, np.nan):
        x = np.random.default_rng(9).standard_normal((1, 3, 6, 6)).astype(np.float32)
        x[0, 1, 2, 3] = value
        with np.errstate(invalid="ignore", over="ignore"):
            got, _, want = _run_both(model, x)
        np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
        np.testing.assert_allclose(got[~np.isnan(got)], want[~np.isnan(want)], rtol=1e-5)


def test_an_averaged_conv_output_is_the_callers():
    model = _averaged_model((1, 3, 6, 6), (4, 3, 3, 3), {}, (4, 4))
    fused = nn_core.load_proto(model)
    rng = np.random.default_rng(4)
    first_input, second_input = (rng.standard_normal((1, 3, 6, 6)).astype(np.float32) for _ in range(2))
    first = fused.run({"x": first_input})["y"]
    kept = first.copy()
    fused.run({"x": second_input})
    np.testing.assert_array_equal(first, kept)


def test_the_logsoftmax_digit_model_after_a_channels_last_conv_matches_onnxruntime():
    """torch_logsoftmax_mnist_norm: the averaged conv reads the pooled channels-last conv's output as it lies."""
    import onnx

    model = onnx.load(str(HERE / "models" / "torch_logsoftmax_mnist_norm.onnx"))
    runner = nn_core.load_proto(model)
    assert "Conv+Pad+AveragePool" in [s.label for s in runner._fast_plan().steps]
    name = runner.inputs[0].name
    for seed in range(3):
        x = np.random.default_rng(seed).random((1, 1, 28, 28), dtype=np.float32)
        got = list(runner.run({name: x}).values())[0]
        np.testing.assert_allclose(got, ort_run(model, {name: x})[0], rtol=1e-5, atol=1e-5)
