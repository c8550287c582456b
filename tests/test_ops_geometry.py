"""Hostile window geometry: convolutions and poolings whose strides, dilations, pads, kernels or groups a model
file sets to values outside the ONNX spec, or to values that would read outside a buffer, allocate terabytes or
run for hours. Each must be refused with a ModelError naming the file, the node and the bad value, never a
crash; valid edge cases must keep matching onnxruntime or a NumPy reference."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest
from helpers import ROOT, ort_run
from onnx import TensorProto, helper, numpy_helper

import nn_core
from nn_core.ops.windows import MAX_TAPS, WindowError, checked_windows

NAME = "hostile.onnx"
NODE = "hostile_node"


def one_node(op, attrs, inits=None, inputs=None, outputs=("y",), x_type=TensorProto.FLOAT, y_type=TensorProto.FLOAT,
             opset=13):
    """A model of one ``op`` node named NODE reading graph input ``x`` and the initializers ``inits``."""
    inits = dict(inits or {})
    inputs = ["x", *inits] if inputs is None else inputs
    node = helper.make_node(op, inputs, list(outputs), name=NODE, **attrs)
    graph = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info("x", x_type, None)],
        [helper.make_tensor_value_info(o, y_type if i == 0 else TensorProto.INT64, None)
         for i, o in enumerate(outputs)],
        [numpy_helper.from_array(np.asarray(v), name=k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


def refused(model, x, *fragments, limits=None):
    """Load and run ``model`` on ``x``; it must raise a ModelError naming the file, the node and ``fragments``."""
    with pytest.raises(nn_core.ModelError) as info:
        nn_core.load_proto(model, name=NAME, limits=limits).run({"x": x})
    message = str(info.value)
    assert NAME in message and NODE in message, message
    for fragment in fragments:
        assert fragment in message, message
    return message


def run(model, x, limits=None):
    return nn_core.load_proto(model, name=NAME, limits=limits).run({"x": x})["y"]


rng = np.random.default_rng(7)


def rand(*shape, dtype=np.float32):
    return rng.standard_normal(shape).astype(dtype)


# ----------------------------------------------------------------------------------------------------------------
# Conv: every layout (im2col, channels-last, depthwise, pointwise) is reached by some case

# (x shape, weight shape, group): NCHW im2col, channels-last (kernel width * channels >= 32), depthwise
LAYOUTS = {
    "im2col": ((1, 2, 8, 8), (4, 2, 3, 3), 1),
    "channels_last": ((1, 16, 8, 8), (4, 16, 3, 3), 1),
    "depthwise": ((1, 4, 8, 8), (4, 1, 3, 3), 4),
}

CONV_CASES = [
    (dict(strides=[0, 1]), ["strides [0, 1]", "positive"]),
    (dict(strides=[-1, 1]), ["strides [-1, 1]"]),
    (dict(strides=[1, -7]), ["strides [1, -7]"]),
    (dict(dilations=[0, 1]), ["dilations [0, 1]"]),
    (dict(dilations=[1, -2]), ["dilations [1, -2]"]),
    (dict(pads=[-1, 0, 0, 0]), ["pads [-1, 0, 0, 0]", "non-negative"]),
    (dict(pads=[1, 1]), ["pads [1, 1]", "4 values"]),
    (dict(pads=[1, 1, 1, 1, 1, 1]), ["pads [1, 1, 1, 1, 1, 1]"]),
    (dict(pads=[10 ** 12] * 4), ["1000000000000", "limit"]),
    (dict(strides=[1, 1, 1]), ["strides [1, 1, 1]", "2 values"]),
    (dict(dilations=[2]), ["dilations [2]"]),
    (dict(kernel_shape=[5, 5]), ["kernel_shape [5, 5]"]),
    (dict(kernel_shape=[0, 3]), ["kernel_shape [0, 3]"]),
    (dict(auto_pad="SAME_MIDDLE"), ["auto_pad 'SAME_MIDDLE'"]),
    (dict(group=0), ["group 0"]),
    (dict(group=-4), ["group -4"]),
    (dict(dilations=[10 ** 15, 1]), ["dilations [1000000000000000, 1]", "spans"]),
    (dict(dilations=[5, 5]), ["dilations [5, 5]", "spans 11"]),
]


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
@pytest.mark.parametrize("attrs,fragments", CONV_CASES, ids=[str(c[0]) for c in CONV_CASES])
def test_conv_hostile_geometry_is_a_model_error(layout, attrs, fragments):
    x_shape, w_shape, group = LAYOUTS[layout]
    attrs = {"group": group, **attrs}
    refused(one_node("Conv", attrs, {"w": rand(*w_shape)}), rand(*x_shape), *fragments)


@pytest.mark.parametrize("attrs,fragments", CONV_CASES[:8], ids=[str(c[0]) for c in CONV_CASES[:8]])
def test_conv_with_weight_only_known_at_run_time_is_checked_too(attrs, fragments):
    model = one_node("Conv", attrs, inputs=["x", "w"])
    model.graph.input.append(helper.make_tensor_value_info("w", TensorProto.FLOAT, None))
    with pytest.raises(nn_core.ModelError) as info:
        nn_core.load_proto(model, name=NAME).run({"x": rand(1, 2, 8, 8), "w": rand(4, 2, 3, 3)})
    assert NODE in str(info.value) and fragments[0] in str(info.value), str(info.value)


def test_conv_kernel_larger_than_the_input_is_refused():
    refused(one_node("Conv", {}, {"w": rand(4, 2, 9, 9)}), rand(1, 2, 8, 8), "kernel [9, 9]", "spans 9",
            "padded input's 8")
    # padding that makes it fit is fine
    assert run(one_node("Conv", dict(pads=[1, 1, 1, 1]), {"w": rand(4, 2, 9, 9)}), rand(1, 2, 8, 8)).shape == \
        (1, 4, 2, 2)


@pytest.mark.parametrize("group,w_shape,fragment", [
    (3, (4, 2, 3, 3), "not divisible by group=3"),
    (2, (4, 2, 3, 3), "expects 4"),  # 2 groups of 2 input channels: the input has only 2
])
def test_conv_group_must_divide_the_channels(group, w_shape, fragment):
    refused(one_node("Conv", dict(group=group), {"w": rand(*w_shape)}), rand(1, 2, 8, 8), fragment)


def test_conv_weight_and_bias_shapes_are_checked_at_load_time():
    with pytest.raises(nn_core.ModelError, match=r"hostile_node.*weight of shape \(4, 2\) must have rank >= 3"):
        nn_core.load_proto(one_node("Conv", {}, {"w": rand(4, 2)}), name=NAME)
    with pytest.raises(nn_core.ModelError, match="hostile_node.*bias of shape \\(3,\\) has 3 values for 4"):
        nn_core.load_proto(one_node("Conv", {}, {"w": rand(4, 2, 3, 3), "b": rand(3)}), name=NAME)


@pytest.mark.parametrize("attr,value", [("strides", [1.5, 1.0]), ("dilations", [2.0, 2.0]), ("group", 1.0),
                                        ("pads", ["1", "1", "1", "1"]), ("strides", 2), ("kernel_shape", "3")])
def test_conv_attributes_of_the_wrong_type_are_refused(attr, value):
    # the loader may already refuse the attribute type; either way the message names the node and the value
    message = refused(one_node("Conv", {attr: value}, {"w": rand(4, 2, 3, 3)}), rand(1, 2, 8, 8), attr)
    assert str(value)[:3] in message or repr(value)[:3] in message


def test_conv_over_the_work_budget_is_refused_before_running():
    limits = nn_core.Limits(max_node_work=1e6)
    model = one_node("Conv", {}, {"w": rand(16, 2, 5, 5)})
    refused(model, rand(1, 2, 64, 64), "the convolution", "multiply-adds", limits=limits)
    assert run(model, rand(1, 2, 16, 16), limits=limits).shape == (1, 16, 12, 12)  # 172800 multiply-adds


def test_conv_output_over_the_size_budget_is_refused_before_allocating():
    limits = nn_core.Limits(max_tensor_bytes=1 << 20)
    model = one_node("Conv", dict(pads=[300, 300, 300, 300]), {"w": rand(4, 2, 3, 3)})
    refused(model, rand(1, 2, 8, 8), "limit per tensor", limits=limits)


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_conv_valid_edge_cases_still_match_onnxruntime(layout):
    x_shape, w_shape, group = LAYOUTS[layout]
    x, w, b = rand(*x_shape), rand(*w_shape), rand(w_shape[0])
    for attrs in [dict(strides=[3, 2], dilations=[2, 1], pads=[0, 1, 2, 0]), dict(auto_pad="SAME_LOWER"),
                  dict(strides=[100, 1]), dict(pads=[3, 3, 3, 3], dilations=[3, 3]), dict(auto_pad="VALID")]:
        model = one_node("Conv", {"group": group, **attrs}, {"w": w, "b": b})
        np.testing.assert_allclose(run(model, x), ort_run(model, {"x": x})[0], rtol=1e-4, atol=1e-4)


def test_conv_with_a_stride_of_2_to_the_62_and_one_output_position_runs():
    # valid by the spec (the one window fits); the byte stride it implies must not overflow int64
    x, w = rand(1, 16, 5, 5), rand(2, 16, 3, 3)
    for group_w, group in ((w, 1), (rand(16, 1, 3, 3), 16), (rand(2, 16, 1, 1), 1)):
        y = run(one_node("Conv", dict(strides=[2 ** 62, 2 ** 62], group=group), {"w": group_w}), x)
        assert y.shape[2:] == (1, 1)


@pytest.mark.parametrize("rank", [1, 3])
def test_conv_1d_and_3d_match_onnxruntime(rank):
    x, w = rand(2, 3, *([7] * rank)), rand(4, 3, *([3] * rank))
    model = one_node("Conv", dict(strides=[2] * rank, pads=[1] * (2 * rank), dilations=[1] * rank), {"w": w})
    np.testing.assert_allclose(run(model, x), ort_run(model, {"x": x})[0], rtol=1e-4, atol=1e-4)
    refused(model, rand(2, 3, *([7] * (rank + 1))), "does not match")


# ----------------------------------------------------------------------------------------------------------------
# ConvTranspose

CT_W = (2, 3, 3, 3)  # (C, M/group, k, k)

CONV_TRANSPOSE_CASES = [
    (dict(strides=[0, 1]), ["strides [0, 1]"]),
    (dict(dilations=[-1, 1]), ["dilations [-1, 1]"]),
    (dict(pads=[-3, 0, 0, 0]), ["pads [-3, 0, 0, 0]"]),
    (dict(pads=[1, 1, 1]), ["pads [1, 1, 1]"]),
    (dict(pads=[100, 100, 100, 100]), ["output size", "is empty"]),
    (dict(strides=[2, 2], output_padding=[2, 0]), ["output_padding [2, 0]", "smaller"]),
    (dict(output_padding=[-1, 0]), ["output_padding [-1, 0]"]),
    (dict(output_padding=[0]), ["output_padding [0]", "2 values"]),
    (dict(output_shape=[10 ** 9, 10 ** 9]), ["1000000000", "limit per tensor"]),
    (dict(output_shape=[0, 5]), ["output_shape [0, 5]"]),
    (dict(output_shape=[5]), ["output_shape [5]"]),
    (dict(group=2), ["not divisible by group=2"]),  # weight C=2 / 2 = 1 per group, but x has 2 channels... below
    (dict(strides=[10 ** 9, 10 ** 9]), ["limit per tensor"]),
]


@pytest.mark.parametrize("attrs,fragments", CONV_TRANSPOSE_CASES, ids=[str(c[0]) for c in CONV_TRANSPOSE_CASES])
def test_conv_transpose_hostile_geometry_is_a_model_error(attrs, fragments):
    w = rand(*CT_W)
    if attrs.get("group") == 2:
        w = rand(3, 3, 3, 3)  # 3 input channels cannot be split in 2 groups
    refused(one_node("ConvTranspose", attrs, {"w": w}), rand(1, w.shape[0], 5, 5), *fragments)


def test_conv_transpose_with_too_many_kernel_taps_is_refused():
    refused(one_node("ConvTranspose", {}, {"w": rand(1, 1, 100, 100)}), rand(1, 1, 2, 2), "10000 kernel taps",
            str(MAX_TAPS))


def test_conv_transpose_bias_and_channels_are_checked():
    with pytest.raises(nn_core.ModelError, match="hostile_node.*bias of shape \\(2,\\) has 2 values for 3"):
        nn_core.load_proto(one_node("ConvTranspose", {}, {"w": rand(*CT_W), "b": rand(2)}), name=NAME)
    refused(one_node("ConvTranspose", {}, {"w": rand(*CT_W)}), rand(1, 5, 5, 5), "input has 5 channels")


def test_conv_transpose_valid_cases_still_match_onnxruntime():
    x, w, b = rand(1, 2, 5, 4), rand(*CT_W), rand(3)
    for attrs in [dict(strides=[3, 2], output_padding=[1, 1]), dict(strides=[2, 2], output_shape=[11, 9]),
                  dict(pads=[1, 2, 0, 1], dilations=[2, 1]), dict(auto_pad="SAME_UPPER", strides=[2, 2])]:
        model = one_node("ConvTranspose", attrs, {"w": w, "b": b})
        np.testing.assert_allclose(run(model, x), ort_run(model, {"x": x})[0], rtol=1e-4, atol=1e-4)


# ----------------------------------------------------------------------------------------------------------------
# pooling

POOL_CASES = [
    ("MaxPool", dict(kernel_shape=[0, 2]), ["kernel_shape [0, 2]"]),
    ("MaxPool", dict(kernel_shape=[-2, 2]), ["kernel_shape [-2, 2]"]),
    ("MaxPool", dict(kernel_shape=[2, 2], strides=[0, 1]), ["strides [0, 1]"]),
    ("MaxPool", dict(kernel_shape=[2, 2], dilations=[1, 0]), ["dilations [1, 0]"]),
    ("MaxPool", dict(kernel_shape=[2, 2], pads=[1, 1, 1]), ["pads [1, 1, 1]"]),
    ("MaxPool", dict(kernel_shape=[2, 2], pads=[0, 0, -1, 0]), ["pads [0, 0, -1, 0]"]),
    ("MaxPool", dict(kernel_shape=[2, 2], strides=[1]), ["strides [1]"]),
    ("MaxPool", dict(kernel_shape=[2, 2], ceil_mode=2), ["ceil_mode 2"]),
    ("MaxPool", dict(kernel_shape=[2, 2], storage_order=-1), ["storage_order -1"]),
    ("MaxPool", dict(kernel_shape=[2, 2], auto_pad="same_upper"), ["auto_pad 'same_upper'"]),
    ("MaxPool", dict(kernel_shape=[20, 20]), ["kernel [20, 20]", "spans 20"]),
    ("MaxPool", dict(kernel_shape=[3, 3], dilations=[4, 4]), ["dilations [4, 4]", "spans 9"]),
    ("MaxPool", dict(kernel_shape=[2, 2], pads=[10 ** 9] * 4), ["1000000000", "limit"]),
    ("MaxPool", dict(strides=[1, 1]), ["kernel_shape attribute is required"]),
    ("MaxPool", dict(kernel_shape=[5000, 1]), ["5001 kernel taps"]),
    ("AveragePool", dict(kernel_shape=[2, 2], count_include_pad=3), ["count_include_pad 3"]),
    ("AveragePool", dict(kernel_shape=[2, 2], strides=[-2, -2]), ["strides [-2, -2]"]),
    ("AveragePool", dict(kernel_shape=[9, 2], pads=[0, 0, 0, 0]), ["kernel [9, 2]"]),
    ("LpPool", dict(kernel_shape=[2, 2], p=0), ["p 0"]),
    ("LpPool", dict(kernel_shape=[2, 2], p=-3), ["p -3"]),
    ("LpPool", dict(kernel_shape=[2, 2], pads=[2, 2]), ["pads [2, 2]"]),
]


@pytest.mark.parametrize("op,attrs,fragments", POOL_CASES, ids=[f"{c[0]}-{c[1]}" for c in POOL_CASES])
def test_pool_hostile_geometry_is_a_model_error(op, attrs, fragments):
    opset = 19 if op == "AveragePool" else 18
    refused(one_node(op, attrs, opset=opset), rand(1, 2, 8, 8), *fragments)


def test_pool_indices_over_many_taps_are_refused_but_separable_pooling_of_a_large_window_runs():
    x = rand(1, 2, 100, 100)
    with_indices = one_node("MaxPool", dict(kernel_shape=[100, 100]), outputs=("y", "i"))
    refused(with_indices, x, "10000 kernel taps", "Indices")
    y = run(one_node("MaxPool", dict(kernel_shape=[100, 100])), x)
    np.testing.assert_array_equal(y, x.max(axis=(2, 3), keepdims=True))


def test_pool_over_the_work_budget_is_refused():
    refused(one_node("AveragePool", dict(kernel_shape=[3, 3])), rand(4, 8, 64, 64), "the pooling",
            limits=nn_core.Limits(max_node_work=1e5))


def test_pool_with_a_huge_stride_and_one_window_runs():
    x = rand(1, 2, 6, 6)
    for op in ("MaxPool", "AveragePool", "LpPool"):
        model = one_node(op, dict(kernel_shape=[3, 3], strides=[2 ** 62, 2 ** 62], pads=[1, 1, 1, 1]))
        assert run(model, x).shape == (1, 2, 1, 1)
    y, i = nn_core.load_proto(one_node("MaxPool", dict(kernel_shape=[6, 6], strides=[2 ** 62, 3]),
                                       outputs=("y", "i")), name=NAME).run({"x": x}).values()
    np.testing.assert_array_equal(y, x.max(axis=(2, 3), keepdims=True))


@pytest.mark.parametrize("op", ["GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool"])
def test_global_pools_need_a_spatial_axis(op):
    refused(one_node(op, {}), rand(3, 4), "no spatial axis")
    refused(one_node(op, {}), np.zeros((1, 2, 0, 3), np.float32), "empty")


def test_pool_valid_edge_cases_still_match_onnxruntime():
    x = rand(2, 3, 9, 7)
    for op, attrs in [("MaxPool", dict(kernel_shape=[3, 2], strides=[2, 3], pads=[1, 0, 2, 1], ceil_mode=1)),
                      ("MaxPool", dict(kernel_shape=[2, 2], dilations=[3, 2], pads=[1, 0, 1, 1])),
                      ("MaxPool", dict(kernel_shape=[3, 2], auto_pad="SAME_LOWER", strides=[2, 2])),
                      ("AveragePool", dict(kernel_shape=[4, 3], strides=[3, 3], ceil_mode=1)),
                      ("MaxPool", dict(kernel_shape=[9, 7]))]:
        model = one_node(op, attrs, opset=12)
        np.testing.assert_allclose(run(model, x), ort_run(model, {"x": x})[0], rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------------------------------------------
# ConvInteger and QLinearConv


def quantized_conv(op, attrs, w, w_zero_point=None, bias=None, w_scale=None):
    zero = np.array(0, np.uint8)
    wz = zero if w_zero_point is None else w_zero_point
    if op == "ConvInteger":
        inits = {"w": w, "xz": zero, "wz": wz}
        return one_node(op, attrs, inits, inputs=["x", "w", "xz", "wz"], x_type=TensorProto.UINT8,
                        y_type=TensorProto.INT32)
    inits = {"xs": np.array(0.1, np.float32), "xz": zero, "w": w,
             "ws": np.array(0.05, np.float32) if w_scale is None else w_scale, "wz": wz,
             "ys": np.array(0.5, np.float32), "yz": zero}
    inputs = ["x", "xs", "xz", "w", "ws", "wz", "ys", "yz"]
    if bias is not None:
        inits["b"] = bias
        inputs.append("b")
    return one_node(op, attrs, inits, inputs=inputs, x_type=TensorProto.UINT8, y_type=TensorProto.UINT8)


QUANTIZED_CASES = [
    (dict(strides=[0, 1]), ["strides [0, 1]"]),
    (dict(dilations=[-1, 1]), ["dilations [-1, 1]"]),
    (dict(pads=[1, 1]), ["pads [1, 1]"]),
    (dict(pads=[-1, 0, 0, 0]), ["pads [-1, 0, 0, 0]"]),
    (dict(pads=[10 ** 9] * 4), ["1000000000", "limit"]),
    (dict(group=3), ["group=3"]),
    (dict(group=0), ["group 0"]),
    (dict(kernel_shape=[2, 2]), ["kernel_shape [2, 2]"]),
    (dict(auto_pad="NONE"), ["auto_pad 'NONE'"]),
    (dict(dilations=[4, 4]), ["dilations [4, 4]", "spans 9"]),
]


@pytest.mark.parametrize("op", ["ConvInteger", "QLinearConv"])
@pytest.mark.parametrize("attrs,fragments", QUANTIZED_CASES, ids=[str(c[0]) for c in QUANTIZED_CASES])
def test_quantized_conv_hostile_geometry_is_a_model_error(op, attrs, fragments):
    w = rng.integers(0, 255, (4, 2, 3, 3), dtype=np.uint8)
    refused(quantized_conv(op, attrs, w), rng.integers(0, 255, (1, 2, 8, 8), dtype=np.uint8), *fragments)


@pytest.mark.parametrize("op", ["ConvInteger", "QLinearConv"])
def test_quantized_conv_parameters_of_the_wrong_length_are_refused(op):
    x = rng.integers(0, 255, (1, 2, 8, 8), dtype=np.uint8)
    w = rng.integers(0, 255, (4, 2, 3, 3), dtype=np.uint8)
    refused(quantized_conv(op, {}, rng.integers(0, 255, (4, 2, 9, 9), dtype=np.uint8)), x, "kernel [9, 9]")
    refused(quantized_conv(op, {}, w, w_zero_point=np.zeros(3, np.uint8)), x, "weight zero point of shape (3,)")
    refused(quantized_conv(op, {}, w[:, :, 0, 0]), x, "rank >= 3")
    if op == "QLinearConv":
        refused(quantized_conv(op, {}, w, bias=np.zeros(5, np.int32)), x, "bias of shape (5,)")
        refused(quantized_conv(op, {}, w, w_scale=np.ones(3, np.float32)), x, "weight scale of shape (3,)")


@pytest.mark.parametrize("op", ["ConvInteger", "QLinearConv"])
def test_quantized_conv_valid_geometry_matches_onnxruntime(op):
    x = rng.integers(0, 255, (1, 2, 9, 8), dtype=np.uint8)
    w = rng.integers(0, 255, (4, 2, 3, 3), dtype=np.uint8)
    for attrs in [dict(strides=[2, 3], pads=[1, 0, 2, 1]), dict(auto_pad="SAME_UPPER"), dict(strides=[2 ** 62, 1])]:
        model = quantized_conv(op, attrs, w)
        got = run(model, x)
        if attrs.get("strides", [1])[0] > 100:
            assert got.shape == (1, 4, 1, 6)
            continue
        np.testing.assert_array_equal(got, ort_run(model, {"x": x})[0])


# ----------------------------------------------------------------------------------------------------------------
# the last line of defence: checked_windows


def test_checked_windows_refuses_any_view_leaving_its_buffer():
    base = np.arange(12, dtype=np.float32)
    view = checked_windows(base, (3, 4), (16, 4))
    np.testing.assert_array_equal(view, base.reshape(3, 4))
    assert not view.flags.writeable
    for shape, strides in [((3, 5), (16, 4)), ((4, 4), (16, 4)), ((2,), (-4,)), ((-1, 2), (4, 4)),
                           ((2, 2), (2 ** 62, 4))]:
        with pytest.raises(WindowError):
            checked_windows(base, shape, strides)
    with pytest.raises(WindowError):
        checked_windows(base[::-1], (2,), (4,))
    # views of a view are bounded by the view, not by the memory behind it
    with pytest.raises(WindowError):
        checked_windows(base[:6], (7,), (4,))
    assert checked_windows(base, (0, 5), (1000, 4)).size == 0
    assert checked_windows(base, (1, 2), (2 ** 62, 4)).shape == (1, 2)  # a one-long axis never steps


# ----------------------------------------------------------------------------------------------------------------
# a regression that brought back an unchecked as_strided would segfault, not fail: keep it from taking pytest down


def test_hostile_geometry_never_kills_the_process():
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(ROOT / "tests")!r})
        import numpy as np
        import nn_core
        import test_ops_geometry as t
        cases = [("Conv", a, {{"w": t.rand(*t.LAYOUTS[k][1])}}, t.LAYOUTS[k][0], t.LAYOUTS[k][2])
                 for k in t.LAYOUTS for a, _ in t.CONV_CASES]
        refused = 0
        for op, attrs, inits, x_shape, group in cases:
            try:
                nn_core.load_proto(t.one_node(op, {{"group": group, **attrs}}, inits), name="h.onnx").run(
                    {{"x": t.rand(*x_shape)}})
            except nn_core.ModelError:
                refused += 1
        for op, attrs, _ in t.POOL_CASES:
            try:
                nn_core.load_proto(t.one_node(op, attrs, opset=19), name="h.onnx").run({{"x": t.rand(1, 2, 8, 8)}})
            except nn_core.ModelError:
                refused += 1
        print(refused, len(cases) + len(t.POOL_CASES))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    refused, total = map(int, done.stdout.split()[-2:])
    assert refused == total


@pytest.mark.parametrize("op", ["Conv", "ConvTranspose", "MaxPool", "ConvInteger"])
@pytest.mark.parametrize("attr,value", [("strides", [1.5, 1.0]), ("pads", ["1", "1", "1", "1"]), ("strides", 2),
                                        ("dilations", np.array([1, 1])), ("kernel_shape", "33"), ("group", 1.0),
                                        ("ceil_mode", 0.5), ("auto_pad", 3)])
def test_kernels_refuse_attributes_of_the_wrong_type_themselves(op, attr, value):
    """The loader may refuse attribute types first; the kernels do not rely on it (their own load-time check)."""
    from nn_core.ops import NodeSpec, load_all_kernels, resolve

    load_all_kernels()
    attrs = {"kernel_shape": [3, 3], attr: value}
    if (op == "MaxPool" and attr == "group") or (op != "MaxPool" and attr == "ceil_mode"):
        pytest.skip("not an attribute of this operator")
    weight = np.ones((2, 2, 3, 3), np.uint8 if op == "ConvInteger" else np.float32)
    spec = NodeSpec(op_type=op, name=NODE, inputs=["x", "w"], outputs=["y"], attrs=attrs, opset=13,
                    consts=[None, weight], source=NAME)
    with pytest.raises(nn_core.ModelError) as info:
        resolve(op, 13)(spec)
    message = str(info.value)
    assert NAME in message and NODE in message and attr in message, message


@pytest.mark.parametrize("op, reduce", [("MaxPool", np.max), ("AveragePool", np.mean)])
@pytest.mark.parametrize("kernel, dilation, size", [(2, 6, 7), (3, 2, 5), (2, 3, 4)])
def test_a_dilated_window_spanning_the_input_takes_only_its_taps(op, reduce, kernel, dilation, size):
    """One window per axis reaching from the first element to the last, dilated: the elements between its taps
    are not pooled -- on every call, also the later ones through the kernel's kept runner (which once took a
    window spanning the input for a global pooling of every element)."""
    rng = np.random.default_rng(kernel * 10 + dilation)
    x = rng.random((2, 3, size, size), dtype=np.float32)
    x[:, :, 1, 1] = 9.0  # between the taps
    node = helper.make_node(op, ["x"], ["y"], kernel_shape=[kernel, kernel], dilations=[dilation, dilation])
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x.shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
    proto.ir_version = 8
    model = nn_core.load_proto(proto)
    taps = x[:, :, ::dilation, ::dilation][:, :, :kernel, :kernel]
    want = reduce(taps, axis=(2, 3), keepdims=True)
    for _ in range(3):
        np.testing.assert_allclose(model.run({"x": x})["y"], want, rtol=1e-6)
