"""Issue 10, depthwise-separable models at batch 1: the per-shape runners of nn_core/ops/batch1.py (the plan bound
once, the bias and activation as same-shape passes over the flat output) against the general Conv kernel and
onnxruntime."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import build_kernel, make_model, tensor_info
from onnx import helper

import nn_core

ACTIVATIONS = [None, ("relu", {}), ("clip", {"min": 0.0, "max": 6.0}), ("clip", {"min": -0.5}),
               ("clip", {"max": 0.25}), ("leaky_relu", {"alpha": 0.1})]


@pytest.mark.parametrize("act", ACTIVATIONS)
@pytest.mark.parametrize("shape", [(3, 5), (2, 7, 33), (700, 96), (1, 12, 4099), (2, 0, 5)])
def test_finisher_is_the_bias_then_the_activation_bit_for_bit(shape, act):
    from nn_core.ops.batch1 import finisher
    from nn_core.ops.conv import make_activation

    rng = np.random.default_rng(1)
    y = rng.standard_normal(shape).astype(np.float32) * 4
    y.flat[::7] = np.nan
    activation = make_activation(*act) if act else None
    # no bias, a bias per last-axis element (channels-last rows), one per second axis (NCHW channels)
    for b in (None, rng.standard_normal(shape[-1]).astype(np.float32),
              rng.standard_normal((shape[-2], 1)).astype(np.float32) if len(shape) == 3 else None):
        want = y.copy()
        if b is not None:
            want += b
        if activation is not None:
            activation(want)
        finish = finisher(shape, y.dtype, b, activation)
        for _ in range(2):  # the shared and laid-out operands are not changed by a call
            got = y.copy()
            finish(got)
            np.testing.assert_array_equal(got, want)


def test_epilogue_rows_divide_the_output_and_repeat_the_bias():
    from nn_core.ops.batch1 import EPILOGUE_RUN, epilogue_run

    for size, period in ((25088, 896), (12544, 256), (49 * 256, 256), (7, 7), (4099 * 12, 4099), (1 << 20, 1)):
        run = epilogue_run(size, period)
        assert size % run == 0 and run % period == 0
        assert run >= min(EPILOGUE_RUN, size)


def _depthwise_node(channels, kernel, strides, pads, dilations):
    return helper.make_node("Conv", ["x", "w", "b"], ["y"], group=channels, kernel_shape=list(kernel),
                            strides=list(strides), pads=list(pads), dilations=list(dilations))


# (input shape, kernel, strides, pads, dilations): channel counts on both sides of CHANNELS_LAST_DEPTHWISE,
# strided, padded, dilated, non-square, and batch 2+
DEPTHWISE_CASES = [((1, 1, 9, 7), (3, 3), (1, 1), (1, 1, 1, 1), (1, 1)),
                   ((1, 3, 11, 6), (3, 3), (2, 2), (1, 0, 1, 1), (1, 1)),
                   ((1, 17, 13, 9), (3, 3), (1, 1), (1, 1, 1, 1), (2, 1)),
                   ((1, 17, 10, 12), (3, 3), (2, 1), (0, 1, 2, 1), (1, 1)),
                   ((1, 64, 14, 14), (3, 3), (2, 2), (1, 1, 1, 1), (1, 1)),
                   ((1, 64, 15, 8), (5, 5), (1, 1), (2, 2, 2, 2), (1, 1)),
                   ((1, 256, 7, 7), (3, 3), (1, 1), (1, 1, 1, 1), (1, 1)),
                   ((1, 32, 9, 13), (3, 3), (2, 2), (0, 0, 1, 1), (1, 2)),
                   ((2, 24, 8, 8), (3, 3), (1, 1), (1, 1, 1, 1), (1, 1)),
                   ((3, 5, 6, 9), (3, 3), (2, 2), (1, 1, 1, 1), (1, 1))]


@pytest.mark.parametrize("case", DEPTHWISE_CASES)
def test_depthwise_runner_matches_the_general_conv(case):
    from nn_core.ops.batch1 import batch1_kernel

    shape, kernel, strides, pads, dilations = case
    rng = np.random.default_rng(shape[1] * 31 + shape[2])
    channels = shape[1]
    w = rng.standard_normal((channels, 1, *kernel)).astype(np.float32)
    b = rng.standard_normal(channels).astype(np.float32)
    node = _depthwise_node(channels, kernel, strides, pads, dilations)
    for act in ACTIVATIONS[:3]:
        general = build_kernel(node, [None, w, b], (1, 2))
        lean = batch1_kernel(build_kernel(node, [None, w, b], (1, 2)))
        for k in (general, lean):
            if act:
                k.fuse_activation(*act)
        for _ in range(3):  # the first call builds the plan; the next ones take the kept runner
            x = rng.standard_normal(shape).astype(np.float32)
            # the previous layer's output comes channels-last: both storages give the same
            for image in (x, np.ascontiguousarray(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)):
                got, want = lean.run(image, w, b), general.run(x, w, b)
                assert got.shape == want.shape
                np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
        if shape[0] == 1:
            assert lean.fast, "a batch-1 shape keeps its runner"


def test_pointwise_runner_with_a_fused_maxpool_pools_then_activates():
    from nn_core.ops.batch1 import LeanConv, batch1_kernel

    rng = np.random.default_rng(3)
    x = rng.standard_normal((1, 8, 10, 10)).astype(np.float32)
    nhwc = np.ascontiguousarray(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
    w = rng.standard_normal((12, 8, 1, 1)).astype(np.float32)
    b = rng.standard_normal(12).astype(np.float32)
    conv = helper.make_node("Conv", ["x", "w", "b"], ["c"])
    pool_node = helper.make_node("MaxPool", ["c"], ["y"], kernel_shape=[2, 2], strides=[2, 2])
    lean = batch1_kernel(build_kernel(conv, [x, w, b], (1, 2)))
    assert type(lean) is LeanConv
    lean.fuse_activation("clip", {"min": 0.0, "max": 0.5})
    assert lean.fuse_pool(build_kernel(pool_node, [x], ()))
    plain = build_kernel(conv, [x, w, b], (1, 2))
    pool = build_kernel(pool_node, [x], ())
    for image in (x, nhwc, x + 1):
        want = np.clip(pool.run(plain.run(np.ascontiguousarray(image), w, b)), 0.0, 0.5)
        np.testing.assert_allclose(lean.run(image, w, b), want, rtol=1e-5, atol=1e-6)
    assert lean.fast


def _separable_model(channels, leaky):
    from nn_core.builder import GraphBuilder

    b = GraphBuilder(input=("input", [None, 3, 19, 23]), seed=5, name="sep")

    def act(v):
        return b.leaky_relu(v, 0.1) if leaky else b.relu(v)

    x = act(b.batch_norm(b.conv(b.input, channels[0], 3, strides=2, pads=1, bias=False)))
    for out, stride in zip(channels[1:], (1, 2, 1)):
        c = b.shape(x)[1]
        x = act(b.batch_norm(b.conv(x, c, 3, strides=stride, pads=1, groups=c, bias=False)))
        x = act(b.batch_norm(b.conv(x, out, 1, bias=False)))
    x = b.gemm(b.flatten(b.global_avg_pool(x)), 10, init="glorot")
    return b.build([x], output_names=["logits"])


@pytest.mark.parametrize("leaky", [False, True])
def test_separable_model_matches_onnxruntime_at_batch_1_and_2(leaky, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    import onnx

    proto = _separable_model([16, 24, 48, 48], leaky)
    path = tmp_path / "sep.onnx"
    onnx.save(proto, str(path))
    ours = nn_core.load(str(path))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(11)
    for batch in (1, 1, 2):
        x = rng.random((batch, 3, 19, 23)).astype(np.float32)
        want = session.run(None, {"input": x})[0]
        np.testing.assert_allclose(ours.run({"input": x})["logits"], want, rtol=1e-4, atol=1e-4)


def test_clip_bounds_given_as_inputs_fuse_and_match():
    # a ReLU6 exported with its bounds as constant inputs (opset 11+) is fused into the depthwise runner too
    rng = np.random.default_rng(13)
    w = rng.standard_normal((20, 1, 3, 3)).astype(np.float32)
    model = make_model([helper.make_node("Conv", ["x", "w"], ["c"], group=20, pads=[1, 1, 1, 1]),
                        helper.make_node("Clip", ["c", "lo", "hi"], ["y"])],
                       [tensor_info("x", [1, 20, 6, 5])], [tensor_info("y", None)],
                       {"w": w, "lo": np.array(0, np.float32), "hi": np.array(1, np.float32)}, opset=13)
    loaded = nn_core.load_proto(model)
    (step,) = loaded._fast_plan().steps
    assert step.fused == ("Clip",)
    x = rng.standard_normal((1, 20, 6, 5)).astype(np.float32)
    traced, _ = loaded.run_traced({"x": x})
    for _ in range(2):
        np.testing.assert_allclose(loaded.run({"x": x})["y"], traced["y"], rtol=1e-5, atol=1e-6)


def test_half_precision_input_reuses_the_float32_runner():
    from nn_core.ops.batch1 import batch1_kernel

    rng = np.random.default_rng(17)
    w = rng.standard_normal((24, 1, 3, 3)).astype(np.float32)
    b = rng.standard_normal(24).astype(np.float32)
    node = _depthwise_node(24, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1))
    lean = batch1_kernel(build_kernel(node, [None, w, b], (1, 2)))
    general = build_kernel(node, [None, w, b], (1, 2))
    x = rng.standard_normal((1, 24, 6, 9)).astype(np.float16)
    first = lean.run(x, w, b)
    (key, runner), = lean.fast.items()
    assert key == (x.shape, np.dtype(np.float32))
    second = lean.run(x, w, b)
    assert lean.fast[key] is runner, "the second half-precision call takes the kept runner"
    assert first.dtype == second.dtype == np.float16
    np.testing.assert_array_equal(first, second)
    np.testing.assert_allclose(first.astype(np.float32), general.run(x, w, b).astype(np.float32), rtol=2e-2,
                               atol=2e-2)


def test_shared_bounds_keep_the_sign_of_a_zero_bound():
    from nn_core.ops.batch1 import finisher
    from nn_core.ops.conv import make_activation

    y = np.array([-1.0, -0.0, 0.0, 2.0], np.float32)
    for low in (0.0, -0.0):
        act = make_activation("clip", {"min": low})
        want = y.copy()
        act(want)
        got = y.copy()
        finisher(y.shape, y.dtype, None, act)(got)
        assert got.tobytes() == want.tobytes(), low


def test_a_shape_without_a_runner_goes_straight_to_conv():
    from nn_core.ops.batch1 import SMALL_BATCH, batch1_kernel

    rng = np.random.default_rng(19)
    w = rng.standard_normal((16, 1, 3, 3)).astype(np.float32)
    b = rng.standard_normal(16).astype(np.float32)
    node = _depthwise_node(16, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1))
    lean = batch1_kernel(build_kernel(node, [None, w, b], (1, 2)))
    general = build_kernel(node, [None, w, b], (1, 2))
    x = rng.standard_normal((SMALL_BATCH + 1, 16, 5, 6)).astype(np.float32)  # a large batch: Conv's own plan
    for _ in range(2):
        np.testing.assert_array_equal(lean.run(x, w, b), general.run(x, w, b))
    assert lean.general == {(x.shape, x.dtype)} and not lean.fast


def test_the_depthwise_einsum_in_use_computes_what_np_einsum_does():
    # the layers call NumPy's private C einsum when it is there and agrees with np.einsum (checked at import)
    from nn_core.ops import batch1

    assert batch1.tap_einsum is np.einsum or batch1._private_einsum_agrees()
    rng = np.random.default_rng(7)
    windows, weights = rng.standard_normal((3, 3, 5, 40)), rng.standard_normal((3, 3, 40))
    out = np.empty((5, 40))
    batch1.tap_einsum("ijhk,ijk->hk", windows, weights, out=out)
    np.testing.assert_allclose(out, np.einsum("ijhk,ijk->hk", windows, weights), rtol=1e-12)
