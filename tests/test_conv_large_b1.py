"""Issue 10, ImageNet-size topologies at batch 1: the fast plan's convolutions hand out channels-last outputs
(Conv.prefer_channels_last) and its poolings take channels-last inputs without a padded NCHW copy
(ops/channels_last.py). Each against the NCHW kernels it stands in for, the traced graph and onnxruntime."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import build_kernel, make_model, ort_run, tensor_info
from onnx import helper

import nn_core


def _is_channels_last(y: np.ndarray) -> bool:
    """Channels adjacent in memory (a full-width plan's output is a view with gaps between rows)."""
    return y.strides[1] == y.itemsize and y.strides[-1] == y.shape[1] * y.itemsize


# (input shape, weight shape, attributes): channels-last columns (3x3, strided, a strided 1x1 without padding),
# NCHW columns exact and full-width, groups, a batch over several chunks
CONV_CASES = [((1, 16, 9, 11), (24, 16, 3, 3), {"pads": [1, 1, 1, 1]}),
              ((2, 32, 10, 10), (8, 32, 3, 3), {"strides": [2, 2], "pads": [0, 1, 1, 0]}),
              ((1, 40, 9, 9), (16, 40, 1, 1), {"strides": [2, 2]}),
              ((3, 24, 7, 8), (12, 24, 1, 1), {"strides": [2, 3]}),
              ((1, 3, 23, 23), (8, 3, 7, 7), {"strides": [2, 2], "pads": [3, 3, 3, 3]}),
              ((1, 1, 12, 12), (6, 1, 5, 5), {"pads": [2, 2, 2, 2]}),
              ((1, 6, 10, 10), (9, 2, 3, 3), {"group": 3, "pads": [1, 1, 1, 1]}),
              ((40, 8, 12, 12), (16, 8, 3, 3), {"pads": [1, 1, 1, 1]}),
              ((40, 2, 12, 12), (4, 2, 3, 3), {"pads": [1, 1, 1, 1]}),
              ((1, 24, 9, 10), (12, 6, 1, 1), {"group": 4}),  # grouped 1x1: per-group matmuls, no copy
              ((2, 12, 5, 6), (9, 4, 1, 1), {"group": 3}),
              ((1, 64, 12, 10), (16, 64, 3, 3), {"pads": [1, 1, 1, 1]}),  # few outputs: kernel rows shifted
              ((2, 32, 11, 13), (8, 32, 3, 2), {"strides": [1, 2], "dilations": [2, 1], "pads": [2, 1, 2, 0]}),
              ((1, 3, 64, 64), (8, 3, 7, 7), {"strides": [2, 2], "pads": [3, 3, 3, 3]}),  # a stem, blocked
              ((1, 16, 46, 44), (32, 16, 3, 3), {"pads": [1, 1, 1, 1]})]  # columns in blocks of rows
# MaxPool attributes after a convolution: padded, ceil_mode, dilated, side by side, unpadded
POOLS = [{"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]},
         {"kernel_shape": [3, 3], "strides": [2, 2], "ceil_mode": 1},
         {"kernel_shape": [2, 3], "strides": [1, 2], "pads": [0, 1, 1, 0], "dilations": [2, 1]},
         {"kernel_shape": [2, 2], "strides": [2, 2]},
         {"kernel_shape": [3, 3], "strides": [2, 2]}]


@pytest.mark.parametrize("case", range(len(CONV_CASES)))
def test_channels_last_conv_equals_the_nchw_kernel(case, monkeypatch):
    """Same values as the NCHW plans with the whole image's columns at once (fused activation, fused pooling of
    every kind, bias or not), over channels-last storage; twice, so the per-shape runner made on the first call
    is what the second runs."""
    from nn_core.ops import conv

    x_shape, w_shape, attrs = CONV_CASES[case]
    rng = np.random.default_rng(case)
    x = rng.standard_normal(x_shape).astype(np.float32)
    w = rng.standard_normal(w_shape).astype(np.float32)
    b = rng.standard_normal(w_shape[0]).astype(np.float32)
    for with_bias in (True, False):
        inputs = ["x", "w", "b"] if with_bias else ["x", "w"]
        for pool_attrs in (None, *POOLS):
            for act in (None, ("relu", {})):
                kernels = []
                for channels_last in (False, True):
                    kernel = build_kernel(helper.make_node("Conv", inputs, ["y"], **attrs), [x, w, b], (1, 2))
                    if act:
                        kernel.fuse_activation(*act)
                    if pool_attrs:
                        pool = build_kernel(helper.make_node("MaxPool", ["c"], ["p"], **pool_attrs), [x], ())
                        assert kernel.fuse_pool(pool)
                    if channels_last:
                        kernel.prefer_channels_last()
                    kernels.append(kernel)
                args = (x, w, b) if with_bias else (x, w)
                channels_last_x = np.ascontiguousarray(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2) - 0.5
                for image in (x, channels_last_x):
                    with monkeypatch.context() as unblocked:
                        unblocked.setattr(conv, "BLOCK_BYTES", 1 << 40)
                        want = kernels[0].run(image, *args[1:])
                    for _ in range(2):
                        got = kernels[1].run(image, *args[1:])
                        where = (case, with_bias, pool_attrs, act)
                        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4, err_msg=str(where))
                        assert pool_attrs is not None or _is_channels_last(got), where


@pytest.mark.parametrize("pool_attrs", POOLS + [{"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]},
                                                {"kernel_shape": [2, 2], "pads": [1, 0, 0, 1]}])
@pytest.mark.parametrize("op", ["MaxPool", "AveragePool", "AveragePool_include_pad"])
def test_channels_last_poolings_equal_the_pooling_operators(op, pool_attrs):
    from nn_core.ops.channels_last import ChannelsLastAveragePool, ChannelsLastMaxPool

    attrs = dict(pool_attrs)
    if op == "AveragePool_include_pad":
        op, attrs["count_include_pad"] = "AveragePool", 1
    node = helper.make_node(op, ["x"], ["y"], **attrs)
    rng = np.random.default_rng(7)
    x = rng.standard_normal((2, 5, 9, 11)).astype(np.float32)
    nhwc = np.ascontiguousarray(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
    plain = build_kernel(node, [x], ())
    lean = (ChannelsLastMaxPool if op == "MaxPool" else ChannelsLastAveragePool)(plain.node)
    want = plain.run(x)
    for image in (nhwc, x, nhwc):  # channels-last, NCHW (the operator's own path), then the cached runner
        got = lean.run(image)
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
        assert got.shape == want.shape


def _residual_net(rng: np.random.Generator, size: int):
    """A small ImageNet-style stem and blocks: 7x7/2 conv (3 channels, NCHW columns) + BN + ReLU + padded
    MaxPool, a bottleneck with a strided 1x1 shortcut and an Add + ReLU, a fire module (Concat of a 1x1 and a
    3x3 conv), a padded AveragePool and a ceil-mode MaxPool, then global pooling and a dense layer."""
    def w(*shape):
        return (rng.standard_normal(shape) * (2.0 / np.prod(shape[1:])) ** 0.5).astype(np.float32)

    inits = {"w0": w(16, 3, 7, 7), "b0": w(16, 1)[:, 0], "s": rng.uniform(0.5, 1.5, 16).astype(np.float32),
             "bb": w(16, 1)[:, 0], "m": w(16, 1)[:, 0], "v": rng.uniform(0.5, 2, 16).astype(np.float32),
             "w1": w(8, 16, 1, 1), "w2": w(8, 8, 3, 3), "w3": w(32, 8, 1, 1), "ws": w(32, 16, 1, 1),
             "w4": w(8, 32, 1, 1), "w5": w(12, 8, 1, 1), "w6": w(12, 8, 3, 3), "wd": w(10, 24), "bd": w(10, 1)[:, 0]}
    nodes = [
        helper.make_node("Conv", ["x", "w0", "b0"], ["c0"], strides=[2, 2], pads=[3, 3, 3, 3]),
        helper.make_node("BatchNormalization", ["c0", "s", "bb", "m", "v"], ["n0"]),
        helper.make_node("Relu", ["n0"], ["r0"]),
        helper.make_node("MaxPool", ["r0"], ["p0"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["p0", "w1"], ["c1"]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c2"], ["r2"]),
        helper.make_node("Conv", ["r2", "w3"], ["c3"]),
        helper.make_node("Conv", ["p0", "ws"], ["cs"], strides=[2, 2]),
        helper.make_node("Add", ["c3", "cs"], ["a"]),
        helper.make_node("Relu", ["a"], ["r3"]),
        helper.make_node("Conv", ["r3", "w4"], ["c4"]),
        helper.make_node("Relu", ["c4"], ["r4"]),
        helper.make_node("Conv", ["r4", "w5"], ["c5"]),
        helper.make_node("Conv", ["r4", "w6"], ["c6"], pads=[1, 1, 1, 1]),
        helper.make_node("Concat", ["c5", "c6"], ["cat"], axis=1),
        helper.make_node("AveragePool", ["cat"], ["ap"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("MaxPool", ["ap"], ["mp"], kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1),
        helper.make_node("GlobalAveragePool", ["mp"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"]),
        helper.make_node("Gemm", ["f", "wd", "bd"], ["y"], transB=1),
    ]
    return make_model(nodes, [tensor_info("x", [1, 3, size, size])], [tensor_info("y", None)], inits)


def test_residual_net_runs_channels_last_and_matches_onnxruntime_and_the_traced_graph():
    rng = np.random.default_rng(3)
    model = _residual_net(rng, 97)
    loaded = nn_core.load_proto(model)
    x = rng.standard_normal((1, 3, 97, 97)).astype(np.float32)
    want = ort_run(model, {"x": x})[0]
    for _ in range(2):
        np.testing.assert_allclose(loaded.run({"x": x})["y"], want, rtol=1e-4, atol=1e-4)
    traced, _ = loaded.run_traced({"x": x})
    np.testing.assert_allclose(traced["y"], want, rtol=1e-4, atol=1e-4)
    plan = loaded._fast_plan()
    kinds = {type(step.kernel).__name__ for step in plan.steps}
    assert {"ChannelsLastMaxPool", "ChannelsLastAveragePool"} <= kinds, kinds
    # every array between the stem and the global pooling is channels-last
    values = dict(plan.constants)
    values["x"] = x
    for step in plan.steps:
        outs = step.kernel.run(*[values[n] if n else None for n in step.inputs])
        outs = list(outs) if isinstance(outs, tuple) else [outs]
        values.update(zip(step.outputs, outs))
        if step.node.op_type in ("Conv", "Add", "Concat", "MaxPool", "AveragePool") and outs[0].shape[2] > 1:
            assert _is_channels_last(outs[0]), step.label


def _plan_type_chosen(case: int) -> type:
    """The plan class a channels-last Conv picks for CONV_CASES[case] at its first run."""
    x_shape, w_shape, attrs = CONV_CASES[case]
    x = np.zeros(x_shape, np.float32)
    w = np.ones(w_shape, np.float32)
    kernel = build_kernel(helper.make_node("Conv", ["x", "w"], ["y"], **attrs), [x, w], (1,))
    kernel.prefer_channels_last()
    kernel.run(x, w)
    return type(next(iter(kernel.plans.values()))[0])


def test_grouped_pointwise_convolutions_take_no_im2col():
    from nn_core.ops.conv import _GroupedPointwisePlan

    assert all(_plan_type_chosen(case) is _GroupedPointwisePlan for case in (-6, -5))


def test_few_output_channels_take_the_row_shift_plan():
    from nn_core.ops.conv import _RowShiftPlan

    assert all(_plan_type_chosen(case) is _RowShiftPlan for case in (-4, -3))


def test_large_image_goes_through_the_channels_last_plan_in_blocks_of_rows():
    from nn_core.ops.conv import _ChannelsLastPlan

    x_shape, w_shape, attrs = CONV_CASES[-1]
    rng = np.random.default_rng(5)
    x = rng.standard_normal(x_shape).astype(np.float32)
    w = rng.standard_normal(w_shape).astype(np.float32)
    kernel = build_kernel(helper.make_node("Conv", ["x", "w"], ["y"], **attrs), [x, w], (1,))
    kernel.prefer_channels_last()
    kernel.run(x, w)
    plan, _ = next(iter(kernel.plans.values()))
    assert type(plan) is _ChannelsLastPlan and 1 < plan.block_rows < plan.out_sizes[0]
    assert plan.out_sizes[0] % plan.block_rows  # a last, shorter block


def test_large_stem_of_few_channels_takes_channels_last_columns_in_blocks():
    from nn_core.ops.conv import _ChannelsLastPlan, _Im2colPlan

    x_shape, w_shape, attrs = CONV_CASES[-2]
    rng = np.random.default_rng(6)
    x = rng.standard_normal(x_shape).astype(np.float32)
    w = rng.standard_normal(w_shape).astype(np.float32)
    kinds = []
    for channels_last in (False, True):
        kernel = build_kernel(helper.make_node("Conv", ["x", "w"], ["y"], **attrs), [x, w], (1,))
        if channels_last:
            kernel.prefer_channels_last()
        kernel.run(x, w)
        kinds.append(type(next(iter(kernel.plans.values()))[0]))
    assert kinds == [_Im2colPlan, _ChannelsLastPlan]


def test_models_of_small_images_keep_nchw_kernels():
    """Below LARGE_IMAGE pixels (the digit models) the fast plan keeps NCHW outputs and the pooling operators."""
    from nn_core.ops.conv import Conv
    from nn_core.ops.pool import AveragePool, MaxPool

    rng = np.random.default_rng(4)
    model = _residual_net(rng, 45)
    loaded = nn_core.load_proto(model)
    x = rng.standard_normal((1, 3, 45, 45)).astype(np.float32)
    np.testing.assert_allclose(loaded.run({"x": x})["y"], ort_run(model, {"x": x})[0], rtol=1e-4, atol=1e-4)
    steps = loaded._fast_plan().steps
    assert not any(isinstance(s.kernel, Conv) and s.kernel.channels_last for s in steps)
    assert {type(s.kernel) for s in steps if s.node.op_type in ("MaxPool", "AveragePool")} == {MaxPool, AveragePool}


def _densenet_block(rng: np.random.Generator, relu_as_node: bool):
    """DenseNet's pre-activation as the onnx wheel exports it: Concat -> BatchNormalization -> Mul -> Add -> Relu
    -> 1x1 Conv, with the Mul and Add constants shaped (C, 1, 1) and (1, C, 1, 1)."""
    c = 12
    inits = {"w0": rng.standard_normal((8, 3, 3, 3)).astype(np.float32),
             "s": rng.uniform(0.5, 1.5, c).astype(np.float32), "b": rng.standard_normal(c).astype(np.float32),
             "m": rng.standard_normal(c).astype(np.float32), "v": rng.uniform(0.5, 2, c).astype(np.float32),
             "k": rng.standard_normal((c, 1, 1)).astype(np.float32),
             "t": rng.standard_normal((1, c, 1, 1)).astype(np.float32),
             "w1": rng.standard_normal((6, c, 1, 1)).astype(np.float32)}
    nodes = [helper.make_node("Conv", ["x", "w0"], ["c0"], pads=[1, 1, 1, 1], strides=[2, 2]),
             helper.make_node("Conv", ["x", "w2"], ["c2"], pads=[1, 1, 1, 1], strides=[2, 2]),
             helper.make_node("Concat", ["c0", "c2"], ["cat"], axis=1),
             helper.make_node("BatchNormalization", ["cat", "s", "b", "m", "v"], ["n"]),
             helper.make_node("Mul", ["k", "n"], ["scaled"]),
             helper.make_node("Add", ["scaled", "t"], ["shifted"])]
    if relu_as_node:
        # (padded: an unpadded 1x1 convolution would take the ReLU's bounds form instead, test_densenet_b1.py)
        nodes += [helper.make_node("Relu", ["shifted"], ["r"]),
                  helper.make_node("Conv", ["r", "w1"], ["y"], pads=[1, 1, 1, 1])]
    else:
        nodes += [helper.make_node("Conv", ["shifted", "w1"], ["y"])]
    inits["w2"] = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    return make_model(nodes, [tensor_info("x", [1, 3, 97, 97])], [tensor_info("y", None)], inits)


@pytest.mark.parametrize("relu", [True, False])
def test_batchnorm_mul_add_relu_chain_is_one_step(relu):
    from nn_core.ops.affine_chains import ChannelAffine

    rng = np.random.default_rng(8)
    model = _densenet_block(rng, relu)
    loaded = nn_core.load_proto(model)
    x = rng.standard_normal((1, 3, 97, 97)).astype(np.float32)
    want = ort_run(model, {"x": x})[0]
    np.testing.assert_allclose(loaded.run({"x": x})["y"], want, rtol=1e-4, atol=1e-4)
    (step,) = [s for s in loaded._fast_plan().steps if isinstance(s.kernel, ChannelAffine)]
    assert step.label == "BatchNormalization+Mul+Add" + ("+Relu" if relu else "")
    # an input the chain was not made for (half precision) runs through the original kernels
    cat = np.abs(rng.standard_normal((1, 12, 49, 49))).astype(np.float16)
    half = step.kernel.run(cat)
    np.testing.assert_allclose(half.astype(np.float32), step.kernel.run(cat.astype(np.float32)), rtol=2e-2,
                               atol=2e-2)


def test_residual_sum_and_relu_are_taken_into_the_convolution():
    """Conv -> Sum(conv, earlier value) -> Relu is one step (the later of the two convolutions feeding the sum);
    a Sum with an operand that broadcasts runs the Sum kernel itself; values as onnxruntime's."""
    from nn_core.ops.residual import ResidualConv

    rng = np.random.default_rng(9)
    inits = {name: (rng.standard_normal(shape) * 0.3).astype(np.float32) for name, shape in (
        ("wa", (8, 3, 3, 3)), ("wb", (8, 8, 3, 3)), ("bb", (8,)), ("wc", (8, 8, 1, 1)), ("t", (1, 8, 1, 1)))}
    nodes = [helper.make_node("Conv", ["x", "wa"], ["a"], pads=[1, 1, 1, 1], strides=[2, 2]),
             helper.make_node("Conv", ["a", "wb", "bb"], ["b"], pads=[1, 1, 1, 1]),
             helper.make_node("Sum", ["a", "b"], ["s"]),
             helper.make_node("Relu", ["s"], ["r"]),
             helper.make_node("Conv", ["r", "wc"], ["c"]),
             helper.make_node("Sum", ["c", "t"], ["y"])]
    model = make_model(nodes, [tensor_info("x", [1, 3, 100, 100])], [tensor_info("y", None)], inits)
    loaded = nn_core.load_proto(model)
    x = rng.standard_normal((1, 3, 100, 100)).astype(np.float32)
    for _ in range(2):
        np.testing.assert_allclose(loaded.run({"x": x})["y"], ort_run(model, {"x": x})[0], rtol=1e-4, atol=1e-4)
    labels = [(step.label, type(step.kernel)) for step in loaded._fast_plan().steps]
    assert labels == [("Conv", labels[0][1]), ("Conv+Sum+Relu", ResidualConv), ("Conv+Sum", ResidualConv)]


def test_row_shift_buffer_is_checked_against_the_limits_before_allocation():
    """A tall vertical dilation makes the row-shifted columns (every padded row) far larger than the output's
    columns that Conv checks: refused by name before anything is allocated."""
    rng = np.random.default_rng(10)
    w = rng.standard_normal((16, 64, 2, 3)).astype(np.float32)
    model = make_model([helper.make_node("Conv", ["x", "w"], ["y"], dilations=[999, 1], name="tall")],
                       [tensor_info("x", [1, 64, 1000, 100])], [tensor_info("y", None)], {"w": w})
    loaded = nn_core.load_proto(model, limits=nn_core.Limits(max_tensor_bytes=40 * 2**20))
    x = np.zeros((1, 64, 1000, 100), np.float32)
    with pytest.raises(nn_core.ModelError, match="tall.*row column buffer"):
        loaded.run({"x": x})


def test_affine_chain_with_double_constants_keeps_the_promoted_type():
    """A Mul by a float64 constant promotes float32 values to float64: the fused step runs the original kernels."""
    from onnx import TensorProto

    rng = np.random.default_rng(11)
    c = 4
    inits = {"w": rng.standard_normal((c, 3, 3, 3)).astype(np.float32),
             "s": np.ones(c, np.float32), "b": np.zeros(c, np.float32), "m": np.zeros(c, np.float32),
             "v": np.ones(c, np.float32), "k": rng.standard_normal((c, 1, 1)).astype(np.float64)}
    nodes = [helper.make_node("Conv", ["x", "w"], ["c0"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c0"], ["r"]),  # (a BatchNormalization right after a Conv is folded into it)
             helper.make_node("BatchNormalization", ["r", "s", "b", "m", "v"], ["n"]),
             helper.make_node("Mul", ["n", "k"], ["y"])]
    model = make_model(nodes, [tensor_info("x", [1, 3, 100, 100])], [tensor_info("y", None, TensorProto.DOUBLE)],
                       inits)
    loaded = nn_core.load_proto(model)
    x = rng.standard_normal((1, 3, 100, 100)).astype(np.float32)
    from nn_core.ops.affine_chains import ChannelAffine

    assert any(isinstance(step.kernel, ChannelAffine) for step in loaded._fast_plan().steps)
    y = loaded.run({"x": x})["y"]
    traced, _ = loaded.run_traced({"x": x})
    assert y.dtype == traced["y"].dtype == np.float64
    np.testing.assert_allclose(y, traced["y"], rtol=1e-5, atol=1e-5)
