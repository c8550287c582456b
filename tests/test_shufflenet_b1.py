"""Issue 10, ShuffleNet at batch 1: the grouped 1x1 convolution's channels-last plan (_GroupedPointwisePlan)
finishes its output with batch1's finisher (bias as same-shape runs, ReLU/Clip against shared constants), and a
depthwise conv's bias is carried into the unpadded conv that alone reads it (carry_depthwise_biases). Each case
against the kernels it stands in for (the NCHW kernel, the traced plan's general kernels) and onnxruntime; the
light ShuffleNet end to end against onnxruntime."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers import build_kernel, make_model, ort_run, tensor_info
from onnx import helper, numpy_helper

import nn_core

# (input shape, weight shape, groups): ShuffleNet's 4 groups, odd sizes, a batch of 2, 3 groups of odd width
GROUPED_CASES = [((1, 24, 9, 10), (12, 6, 1, 1), 4),
                 ((1, 136, 7, 5), (136, 34, 1, 1), 4),
                 ((2, 12, 5, 6), (9, 4, 1, 1), 3),
                 ((1, 15, 1, 1), (6, 5, 1, 1), 3),
                 ((3, 8, 3, 7), (8, 4, 1, 1), 2)]
ACTIVATIONS = [None, ("relu", {}), ("clip", {"min": -0.25, "max": 0.5}), ("leaky_relu", {"alpha": 0.1})]


def _kernel(inputs: list[str], arrays: list[np.ndarray], groups: int, act, channels_last: bool):
    kernel = build_kernel(helper.make_node("Conv", inputs, ["y"], group=groups), arrays, tuple(range(1, len(inputs))))
    if act:
        assert kernel.fuse_activation(*act)
    if channels_last:
        kernel.prefer_channels_last()
    return kernel


@pytest.mark.parametrize("case", range(len(GROUPED_CASES)))
def test_grouped_pointwise_equals_the_nchw_kernel(case):
    """Same values as the NCHW kernel for NCHW and channels-last inputs, with and without a bias, under every
    activation kind; the channels-last kernel takes the grouped plan, and an output it handed out is not
    overwritten by its next run."""
    from nn_core.ops.conv import _GroupedPointwisePlan

    x_shape, w_shape, groups = GROUPED_CASES[case]
    rng = np.random.default_rng(case)
    x = rng.standard_normal(x_shape).astype(np.float32)
    w = rng.standard_normal(w_shape).astype(np.float32)
    b = rng.standard_normal(w_shape[0]).astype(np.float32)
    channels_last_x = np.ascontiguousarray(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2) * 0.5
    for inputs, arrays in ((["x", "w", "b"], [x, w, b]), (["x", "w"], [x, w])):
        for act in ACTIVATIONS:
            nchw = _kernel(inputs, arrays, groups, act, False)
            fast = _kernel(inputs, arrays, groups, act, True)
            for image in (x, channels_last_x):
                want = nchw.run(image, *arrays[1:])
                first = fast.run(image, *arrays[1:])
                kept = first.copy()
                second = fast.run(image, *arrays[1:])
                where = (case, len(inputs), act)
                np.testing.assert_allclose(first, want, rtol=1e-5, atol=1e-5, err_msg=str(where))
                np.testing.assert_array_equal(second, first, err_msg=str(where))
                np.testing.assert_array_equal(first, kept, err_msg=str(where))
            assert type(next(iter(fast.plans.values()))[0]) is _GroupedPointwisePlan, where


def test_grouped_pointwise_with_a_fused_max_pool():
    """The finished output pooled channels-last, as the NCHW kernel pools its own."""
    x_shape, w_shape, groups = GROUPED_CASES[0]
    rng = np.random.default_rng(7)
    x = rng.standard_normal(x_shape).astype(np.float32)
    w = rng.standard_normal(w_shape).astype(np.float32)
    b = rng.standard_normal(w_shape[0]).astype(np.float32)
    results = []
    for channels_last in (False, True):
        kernel = _kernel(["x", "w", "b"], [x, w, b], groups, ("relu", {}), channels_last)
        pool = build_kernel(helper.make_node("MaxPool", ["c"], ["p"], kernel_shape=[3, 3], strides=[2, 2],
                                             pads=[1, 1, 1, 1]), [x], ())
        assert kernel.fuse_pool(pool)
        results.append(kernel.run(x, w, b))
    np.testing.assert_allclose(results[1], results[0], rtol=1e-5, atol=1e-5)


def test_grouped_pointwise_keeps_nan():
    """A NaN in the input stays NaN through the bias and the ReLU passes."""
    x_shape, w_shape, groups = GROUPED_CASES[0]
    x = np.ones(x_shape, np.float32)
    x[0, 0, 2, 3] = np.nan
    w = np.ones(w_shape, np.float32)
    b = np.ones(w_shape[0], np.float32)
    y = _kernel(["x", "w", "b"], [x, w, b], groups, ("relu", {}), True).run(x, w, b)
    assert np.isnan(y[0, :w_shape[0] // groups, 2, 3]).all()
    assert not np.isnan(y[0, w_shape[0] // groups:, 2, 3]).any()


LIGHT_SHUFFLENET = Path(__import__("onnx").__file__).parent / "backend/test/data/light/light_shufflenet.onnx"


@pytest.mark.skipif(not LIGHT_SHUFFLENET.exists(), reason="the onnx wheel's light ShuffleNet is not installed")
def test_light_shufflenet_matches_onnxruntime():
    import onnx

    model = onnx.load(str(LIGHT_SHUFFLENET))
    loaded = nn_core.load(str(LIGHT_SHUFFLENET))
    name = loaded.inputs[0].name
    x = np.random.default_rng(3).random((1, 3, 224, 224), dtype=np.float32)
    want = ort_run(model, {name: x})[0]
    first = loaded.run({name: x})
    (key,) = first
    kept = first[key].copy()
    np.testing.assert_allclose(first[key], want, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(loaded.run({name: x})[key], want, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(first[key], kept)


CARRIED = "::carried_bias"


def _depthwise_then_conv(rng: np.random.Generator, size: int, channels: int = 12, out_channels: int = 8,
                         groups: int = 4, kernel: int = 1, strides: int = 1, pads: int = 0, next_bias: bool = True,
                         relu: bool = False, depthwise_bias: np.ndarray | None = None, depthwise_groups: int = 0,
                         keep_depthwise: bool = False) -> object:
    """x (N, ``channels``, size, size) -> 3x3 depthwise conv with a bias (pads 1) [-> Relu] -> Conv to
    ``out_channels`` in ``groups`` with a ``kernel`` window, ``strides`` and ``pads`` [and a bias] -> y (and the
    depthwise output ``d`` also a graph output when ``keep_depthwise``)."""
    depthwise_groups = depthwise_groups or channels
    inits = {"dw": rng.standard_normal((channels, channels // depthwise_groups, 3, 3)).astype(np.float32),
             "db": rng.standard_normal(channels).astype(np.float32) if depthwise_bias is None else depthwise_bias,
             "w": (rng.standard_normal((out_channels, channels // groups, kernel, kernel)) * 0.3).astype(np.float32)}
    inputs = ["x", "w"]
    if next_bias:
        inits["b"] = rng.standard_normal(out_channels).astype(np.float32)
        inputs.append("b")
    nodes = [helper.make_node("Conv", ["x", "dw", "db"], ["d"], name="dw", group=depthwise_groups, pads=[1] * 4)]
    if relu:
        nodes.append(helper.make_node("Relu", ["d"], ["dr"], name="relu"))
    inputs[0] = "dr" if relu else "d"
    nodes.append(helper.make_node("Conv", inputs, ["y"], name="next", group=groups, strides=[strides] * 2,
                                  pads=[pads] * 4))
    outputs = [tensor_info("y", None)] + ([tensor_info("d", None)] if keep_depthwise else [])
    return make_model(nodes, [tensor_info("x", ["N", channels, size, size])], outputs, inits)


def _run_checked(proto: object, x: np.ndarray) -> nn_core.Model:
    """The plan's outputs against the traced plan's general kernels and onnxruntime, run twice (the first
    results intact)."""
    model = nn_core.load_proto(proto)
    first = model.run({"x": x})
    kept = {name: value.copy() for name, value in first.items()}
    second = model.run({"x": x})
    want, _ = model.run_traced({"x": x})
    for index, (name, value) in enumerate(first.items()):
        np.testing.assert_allclose(value, want[name], rtol=1e-4, atol=1e-4, err_msg=name)
        np.testing.assert_allclose(value, ort_run(proto, {"x": x})[index], rtol=1e-4, atol=1e-4, err_msg=name)
        np.testing.assert_array_equal(second[name], value, err_msg=name)
        np.testing.assert_array_equal(value, kept[name], err_msg=name)
    return model


def _carried(model: nn_core.Model) -> bool:
    plan = model._fast_plan()
    depthwise_inputs = [len(step.inputs) for step in plan.steps if step.node.name.startswith("dw")]
    return any(name.endswith(CARRIED) for name in plan.constants) and depthwise_inputs[:1] == [2]


# (size, out channels, groups, kernel, strides, next bias): ShuffleNet's grouped 1x1 (with and without its own
# bias), 12 groups of one channel, a strided and a 3x3 unpadded reader, a large image (the channels-last
# depthwise plan)
CARRY_CASES = [(9, 8, 4, 1, 1, True), (9, 8, 4, 1, 1, False), (7, 12, 12, 1, 1, True), (10, 8, 2, 1, 2, True),
               (9, 6, 3, 3, 1, True), (11, 4, 4, 3, 2, False), (100, 8, 4, 1, 1, True)]


@pytest.mark.parametrize("case", range(len(CARRY_CASES)))
@pytest.mark.parametrize("batch", [1, 2])
def test_the_depthwise_bias_is_carried_into_the_unpadded_reader(case, batch):
    size, out_channels, groups, kernel, strides, next_bias = CARRY_CASES[case]
    rng = np.random.default_rng(case * 10 + batch)
    proto = _depthwise_then_conv(rng, size, out_channels=out_channels, groups=groups, kernel=kernel,
                                 strides=strides, next_bias=next_bias)
    model = _run_checked(proto, rng.standard_normal((batch, 12, size, size)).astype(np.float32))
    assert _carried(model)


@pytest.mark.parametrize("change", ["padded reader", "relu between", "depthwise output kept", "infinite bias",
                                    "not depthwise", "one-group reader", "carried past the float range"])
def test_the_depthwise_bias_stays_where_it_would_change_the_result(change):
    """A padded reader (its border windows see the padding, not the bias), an activation between, the depthwise
    output a graph output, a bias that is not finite or whose carried sum W b is past float32's range, a grouped
    conv that is not depthwise, a one-group reader (a separable chain's): nothing carried, the same values as
    the general kernels."""
    rng = np.random.default_rng(11)
    bias = np.full(12, np.inf, np.float32) if change == "infinite bias" else \
        np.full(12, 1e37, np.float32) if change == "carried past the float range" else None
    proto = _depthwise_then_conv(rng, 9, pads=1 if change == "padded reader" else 0,
                                 groups=1 if change == "one-group reader" else 4,
                                 relu=change == "relu between", keep_depthwise=change == "depthwise output kept",
                                 depthwise_bias=bias, depthwise_groups=6 if change == "not depthwise" else 0)
    if change == "carried past the float range":  # reader weights of 100 and more: W b over 1e39
        weight = next(t for t in proto.graph.initializer if t.name == "w")
        weight.CopyFrom(numpy_helper.from_array(np.full(numpy_helper.to_array(weight).shape, 100, np.float32), "w"))
    model = _run_checked(proto, rng.standard_normal((1, 12, 9, 9)).astype(np.float32)) \
        if change not in ("infinite bias", "carried past the float range") else nn_core.load_proto(proto)
    assert not _carried(model)


@pytest.mark.parametrize(("size", "strides", "band_pixels"), [(100, 1, 112), (101, 2, 112), (97, 1, 300),
                                                               (100, 2, 10 ** 9)])
@pytest.mark.parametrize("batch", [1, 2])
def test_the_shuffle_is_copied_in_bands_of_rows(size, strides, band_pixels, batch, monkeypatch):
    """The channels-last depthwise output shuffled into NCHW a band of rows at a time (one row, two, three with
    a short last band, the whole image) gives the shuffle's values, in a fresh array each run."""
    from test_shuffle_b1 import _shuffle_unit

    from nn_core.ops import channel_shuffle

    monkeypatch.setattr(channel_shuffle, "SHUFFLE_BAND_PIXELS", band_pixels)
    rng = np.random.default_rng(size + strides + batch)
    proto = _shuffle_unit(rng, size, strides)
    del proto.graph.node[-1]  # the shuffled depthwise output is the graph's
    del proto.graph.output[:]
    proto.graph.output.append(tensor_info("d", None))
    model = nn_core.load_proto(proto)
    x = rng.standard_normal((batch, 8, size, size)).astype(np.float32)
    first = model.run({"x": x})["d"]
    kept = first.copy()
    model.run({"x": x * 2})
    want, _ = model.run_traced({"x": x})
    np.testing.assert_allclose(first, want["d"], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(first, ort_run(proto, {"x": x})[0], rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(first, kept)
    assert "Reshape+Transpose+Reshape+Conv" in model.plan_ops


def _depthwise_reference(x: np.ndarray, weight: np.ndarray, pads: list[int]) -> np.ndarray:
    node = helper.make_node("Conv", ["x", "w"], ["y"], group=weight.shape[0], pads=pads)
    return build_kernel(node, [x, weight], (1,)).run(x, weight)


def test_depthwise_layers_of_one_shape_share_the_padded_buffer():
    """Two stride-1 channels-last depthwise plans of one shape and padding share one padded buffer and its lock
    (other padding or strides: their own); run in turn with their own weights and inputs, each gives its own
    convolution, the padding still zero."""
    from nn_core.ops.batch1 import ChannelsLastDepthwisePlan

    shape, pads = (1, 24, 11, 9), [1, 1, 1, 1]
    rng = np.random.default_rng(21)
    plans = [ChannelsLastDepthwisePlan(shape, np.dtype(np.float32), [3, 3], [1, 1], [1, 1], [1, 1], [1, 1], False)
             for _ in range(2)]
    other = ChannelsLastDepthwisePlan(shape, np.dtype(np.float32), [3, 3], [1, 1], [1, 1], [0, 1], [2, 1], False)
    strided = ChannelsLastDepthwisePlan(shape, np.dtype(np.float32), [3, 3], [1, 2], [1, 1], [1, 1], [1, 1], False)
    assert plans[0].pad is plans[1].pad and plans[0].lock is plans[1].lock
    assert other.pad is not plans[0].pad and other.lock is not plans[0].lock
    assert strided.lock is not plans[0].lock
    weights = [rng.standard_normal((24, 1, 3, 3)).astype(np.float32) for _ in plans]
    runners = [plan.runner(plan.prepare(w, None, 24), None) for plan, w in zip(plans, weights, strict=True)]
    for _ in range(2):
        for runner, weight in zip(runners, weights, strict=True):
            x = np.ascontiguousarray(rng.standard_normal((1, 11, 9, 24)).astype(np.float32)).transpose(0, 3, 1, 2)
            np.testing.assert_allclose(runner(x), _depthwise_reference(x, weight, pads), rtol=1e-5, atol=1e-5)


def test_a_shared_padded_buffer_under_threads():
    """Threads running two depthwise plans that share a buffer, each with its own weights and inputs, at once:
    every result is its own convolution."""
    from concurrent.futures import ThreadPoolExecutor

    from nn_core.ops.batch1 import ChannelsLastDepthwisePlan

    shape = (1, 32, 20, 20)
    rng = np.random.default_rng(22)
    cases = []
    for _ in range(2):
        plan = ChannelsLastDepthwisePlan(shape, np.dtype(np.float32), [3, 3], [1, 1], [1, 1], [1, 1], [1, 1], False)
        weight = rng.standard_normal((32, 1, 3, 3)).astype(np.float32)
        x = np.ascontiguousarray(rng.standard_normal((1, 20, 20, 32)).astype(np.float32)).transpose(0, 3, 1, 2)
        cases.append((plan.runner(plan.prepare(weight, None, 32), None), x,
                      _depthwise_reference(x, weight, [1, 1, 1, 1])))

    def work(index: int) -> bool:
        runner, x, want = cases[index % 2]
        return all(np.allclose(runner(x), want, rtol=1e-5, atol=1e-5) for _ in range(30))

    with ThreadPoolExecutor(4) as pool:
        assert all(pool.map(work, range(8)))


@pytest.mark.parametrize(("shape", "strides", "weight_run"), [((1, 24, 11, 12), 1, 48), ((1, 24, 11, 12), 2, 48),
                                                              ((1, 24, 9, 13), 1, 48), ((2, 16, 8, 8), 1, 1),
                                                              ((1, 24, 11, 12), 1, 10 ** 9)])
@pytest.mark.parametrize("bias", [False, True])
def test_depthwise_weights_laid_over_bands_of_a_row(shape, strides, weight_run, bias, monkeypatch):
    """The channels-last depthwise einsum over bands of a row (2-column bands, one band of a prime width, 1-column
    bands at batch 2, the whole row), with and without a bias and a ReLU, against the Conv kernel."""
    from nn_core.ops import batch1
    from nn_core.ops.conv import make_activation

    monkeypatch.setattr(batch1, "DEPTHWISE_WEIGHT_RUN", weight_run)
    batch, channels, height, width = shape
    rng = np.random.default_rng(sum(shape) + strides)
    weight = rng.standard_normal((channels, 1, 3, 3)).astype(np.float32)
    b = rng.standard_normal(channels).astype(np.float32) if bias else None
    plan = batch1.ChannelsLastDepthwisePlan(shape, np.dtype(np.float32), [3, 3], [strides, strides], [1, 1], [1, 1],
                                            [1, 1], bias)
    run = plan.runner(plan.prepare(weight, b, channels), make_activation("relu", {}))
    x = np.ascontiguousarray(rng.standard_normal((batch, height, width, channels)).astype(np.float32))
    x = x.transpose(0, 3, 1, 2)
    node = helper.make_node("Conv", ["x", "w", "b"] if bias else ["x", "w"], ["y"], group=channels,
                            pads=[1, 1, 1, 1], strides=[strides, strides])
    arrays = [x, weight, b] if bias else [x, weight]
    want = np.maximum(build_kernel(node, arrays, tuple(range(1, len(arrays)))).run(*arrays), 0)
    np.testing.assert_allclose(run(x), want, rtol=1e-5, atol=1e-5)
