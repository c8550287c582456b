"""Hostile model files: sizes and attributes a file controls must be refused with a ModelError naming the file,
the node and the bad value -- quickly, before any huge allocation or endless computation, never as a raw
NumPy exception."""

from __future__ import annotations

import time

import numpy as np
import pytest
from helpers import make_model, tensor_info
from onnx import TensorProto, helper

import nn_core

I64 = TensorProto.INT64
HANG_SECONDS = 10.0  # refused in milliseconds when the check works; minutes when it does not


def refused(model, feeds=None, limits=None) -> str:
    """Load and run ``model``; assert a ModelError comes (at load or at run) promptly; its message.

    The time bound guards against hangs (these files used to run for minutes), with room for a loaded machine."""
    start = time.perf_counter()
    with pytest.raises(nn_core.ModelError) as caught:
        loaded = nn_core.load_proto(model, name="hostile.onnx", limits=limits)
        loaded.run(feeds or {})
    assert time.perf_counter() - start < HANG_SECONDS
    message = str(caught.value)
    assert "hostile.onnx" in message
    return message


def node(op, inputs, outputs, **attrs):
    return helper.make_node(op, inputs, outputs, name="evil", **attrs)


def one_op(op, inputs, initializers, out_type=TensorProto.FLOAT, feeds_info=(), opset=13, **attrs):
    return make_model([node(op, inputs, ["y"], **attrs)], list(feeds_info), [tensor_info("y", None, out_type)],
                      initializers, opset=opset)


def x_input(shape, elem=TensorProto.FLOAT):
    return tensor_info("x", list(shape), elem)


def test_expand_then_matmul_over_the_work_budget():
    # 6000^3 = 2.16e11 multiply-adds, just over the default budget; the Expand itself (144 MB) is allowed
    nodes = [helper.make_node("Expand", ["x", "shape"], ["big"], name="expand"),
             node("MatMul", ["big", "big"], ["y"])]
    model = make_model(nodes, [x_input([1, 1])], [tensor_info("y", None)],
                       {"shape": np.array([6000, 6000], np.int64)})
    message = refused(model, {"x": np.ones((1, 1), np.float32)})
    assert "'evil' (MatMul)" in message and "2.16e+11" in message


def test_a_matmul_of_12000_squared_matrices_is_refused():
    model = one_op("MatMul", ["a", "b"], {"b": np.ones((12000, 2), np.float32)},
                   feeds_info=[tensor_info("a", [1, 12000])])
    fine = nn_core.load_proto(model, name="fine.onnx")
    assert fine.run({"a": np.ones((1, 12000), np.float32)})["y"].shape == (1, 2)
    work = refused(one_op("MatMul", ["a", "a"], {}, feeds_info=[tensor_info("a", [12000, 12000])]),
                   {"a": np.broadcast_to(np.ones((1, 1), np.float32), (12000, 12000))})
    assert "1.73e+12" in work


def test_constant_of_shape_too_large():
    model = one_op("ConstantOfShape", ["shape"], {"shape": np.array([10**6, 10**6], np.int64)})
    message = refused(model)
    assert "'evil' (ConstantOfShape)" in message and "[1000000, 1000000]" in message


def test_constant_of_shape_from_a_fed_shape():
    model = one_op("ConstantOfShape", ["x"], {}, feeds_info=[x_input([2], I64)])
    message = refused(model, {"x": np.array([10**6, 10**6], np.int64)})
    assert "'evil' (ConstantOfShape)" in message and "1000000" in message


def test_range_with_a_huge_count():
    model = one_op("Range", ["s", "l", "d"], {"s": np.array(0, np.int64), "l": np.array(10**15, np.int64),
                                              "d": np.array(1, np.int64)}, out_type=I64)
    message = refused(model)
    assert "'evil' (Range)" in message and "1000000000000000" in message


def test_range_with_zero_delta():
    model = one_op("Range", ["s", "l", "d"], {"s": np.array(0.0, np.float32), "l": np.array(1.0, np.float32),
                                              "d": np.array(0.0, np.float32)})
    assert "delta is 0" in refused(model)


def test_tile_with_huge_repeats():
    model = one_op("Tile", ["x", "r"], {"r": np.array([10**6, 10**6], np.int64)}, feeds_info=[x_input([2, 2])])
    message = refused(model, {"x": np.ones((2, 2), np.float32)})
    assert "'evil' (Tile)" in message and "2000000" in message


def test_resize_with_scales_1e4():
    model = one_op("Resize", ["x", "", "scales"], {"scales": np.array([1, 1, 1e4, 1e4], np.float32)},
                   feeds_info=[x_input([1, 1, 100, 100])])
    message = refused(model, {"x": np.ones((1, 1, 100, 100), np.float32)})
    assert "'evil' (Resize)" in message and "1000000" in message


def test_resize_with_negative_or_nan_scales():
    for bad in (-2.0, np.nan, 0.0):
        model = one_op("Resize", ["x", "", "scales"], {"scales": np.array([1, 1, bad, 2], np.float32)},
                       feeds_info=[x_input([1, 1, 4, 4])])
        assert "scales" in refused(model, {"x": np.ones((1, 1, 4, 4), np.float32)})


def test_resize_with_an_unknown_mode():
    model = one_op("Resize", ["x", "", "scales"], {"scales": np.array([1, 1, 2, 2], np.float32)},
                   feeds_info=[x_input([1, 1, 4, 4])], coordinate_transformation_mode="sideways")
    assert "sideways" in refused(model, {"x": np.ones((1, 1, 4, 4), np.float32)})


def test_broadcast_add_of_a_column_and_a_row():
    model = one_op("Add", ["a", "b"], {}, feeds_info=[tensor_info("a", [100000, 1]), tensor_info("b", [1, 100000])])
    message = refused(model, {"a": np.ones((100000, 1), np.float32), "b": np.ones((1, 100000), np.float32)})
    assert "'evil' (Add)" in message and "[100000, 100000]" in message


def test_broadcast_where_and_sum():
    feeds = {"a": np.ones((100000, 1), np.float32), "b": np.ones((1, 100000), np.float32)}
    info = [tensor_info("a", [100000, 1]), tensor_info("b", [1, 100000])]
    assert "(Sum)" in refused(one_op("Sum", ["a", "b"], {}, feeds_info=info), feeds)
    where = one_op("Where", ["c", "a", "b"], {"c": np.array([True])}, feeds_info=info)
    assert "(Where)" in refused(where, feeds)


def test_one_hot_with_a_huge_depth():
    model = one_op("OneHot", ["i", "depth", "values"], {"i": np.array([1, 2], np.int64),
                                                         "depth": np.array(10**12, np.int64),
                                                         "values": np.array([0, 1], np.float32)})
    message = refused(model)
    assert "'evil' (OneHot)" in message and "1000000000000" in message


def test_pad_with_pads_1e9():
    model = one_op("Pad", ["x", "pads"], {"pads": np.array([0, 10**9, 0, 10**9], np.int64)},
                   feeds_info=[x_input([2, 2])])
    message = refused(model, {"x": np.ones((2, 2), np.float32)})
    assert "'evil' (Pad)" in message and "2000000002" in message


def test_reflect_pad_many_times_the_axis():
    model = one_op("Pad", ["x", "pads"], {"pads": np.array([0, 10**7, 0, 0], np.int64)},
                   feeds_info=[x_input([2, 2])], mode="reflect")
    assert "reflect pads" in refused(model, {"x": np.ones((2, 2), np.float32)})


def test_gather_with_an_out_of_range_index():
    model = one_op("Gather", ["x", "i"], {"i": np.array([0, 7], np.int64)}, feeds_info=[x_input([3, 2])])
    message = refused(model, {"x": np.ones((3, 2), np.float32)})
    assert "'evil' (Gather)" in message and "index 7" in message


def test_gather_negative_indices_are_allowed():
    model = one_op("Gather", ["x", "i"], {"i": np.array([-1, 0], np.int64)}, feeds_info=[x_input([3])])
    y = nn_core.load_proto(model, name="ok.onnx").run({"x": np.arange(3, dtype=np.float32)})["y"]
    np.testing.assert_array_equal(y, [2, 0])


def test_gather_that_would_be_huge():
    model = one_op("Gather", ["x", "i"], {"i": np.zeros(10**6, np.int64)}, feeds_info=[x_input([1000, 1000])])
    assert "(Gather)" in refused(model, {"x": np.ones((1000, 1000), np.float32)})


def test_reshape_with_two_minus_ones():
    model = one_op("Reshape", ["x", "s"], {"s": np.array([-1, -1], np.int64)}, feeds_info=[x_input([2, 2])])
    message = refused(model, {"x": np.ones((2, 2), np.float32)})
    assert "'evil' (Reshape)" in message and "[-1, -1]" in message


def test_transpose_with_a_bad_perm():
    model = one_op("Transpose", ["x"], {}, feeds_info=[x_input([2, 2])], perm=[0, 0])
    message = refused(model, {"x": np.ones((2, 2), np.float32)})
    assert "'evil' (Transpose)" in message and "[0, 0]" in message


def test_transpose_perm_of_the_wrong_rank():
    model = one_op("Transpose", ["x"], {}, feeds_info=[x_input([2, 2])], perm=[2, 0, 1])
    assert "perm [2, 0, 1]" in refused(model, {"x": np.ones((2, 2), np.float32)})


def test_split_sizes_that_do_not_fit():
    model = make_model([node("Split", ["x", "s"], ["a", "b"], axis=0)], [x_input([4])],
                       [tensor_info("a", None), tensor_info("b", None)], {"s": np.array([1, 2, 3], np.int64)})
    assert "split sizes [1, 2, 3]" in refused(model, {"x": np.ones(4, np.float32)})


def test_axis_out_of_range():
    cases = [("Concat", ["x", "x"], {"axis": 5}), ("Flatten", ["x"], {"axis": 7}),
             ("Softmax", ["x"], {"axis": 3}), ("ArgMax", ["x"], {"axis": -4}), ("Gather", ["x", "i"], {"axis": 2}),
             ("LayerNormalization", ["x", "g"], {"axis": 4})]
    for op, inputs, attrs in cases:
        model = one_op(op, inputs, {"i": np.array([0], np.int64), "g": np.ones(2, np.float32)},
                       feeds_info=[x_input([2, 2])], opset=17, **attrs)
        message = refused(model, {"x": np.ones((2, 2), np.float32)})
        assert f"({op})" in message and str(attrs["axis"]) in message


def test_expand_to_a_huge_shape_is_refused_at_load():
    model = one_op("Expand", ["x", "s"], {"s": np.array([10**5, 10**5, 10**5], np.int64)},
                   feeds_info=[x_input([1])])
    start = time.perf_counter()
    with pytest.raises(nn_core.ModelError, match="'evil' \\(Expand\\)"):
        nn_core.load_proto(model, name="hostile.onnx")
    assert time.perf_counter() - start < HANG_SECONDS


def test_top_k_with_a_huge_k():
    model = make_model([node("TopK", ["x", "k"], ["v", "i"])], [x_input([4])],
                       [tensor_info("v", None), tensor_info("i", None, I64)], {"k": np.array([10**12], np.int64)})
    assert "k=1000000000000" in refused(model, {"x": np.ones(4, np.float32)})


def test_non_finite_or_bad_attributes():
    cases = [("LeakyRelu", {"alpha": float("nan")}, "alpha"), ("HardSigmoid", {"beta": float("inf")}, "beta"),
             ("Elu", {"alpha": float("inf")}, "alpha"), ("Celu", {"alpha": 0.0}, "alpha"),
             ("InstanceNormalization", {"epsilon": -1.0}, "epsilon"),
             ("LRN", {"size": 0}, "size"), ("Gemm", {"alpha": float("nan")}, "alpha")]
    for op, attrs, name in cases:
        inputs = {"InstanceNormalization": ["x", "g", "g"], "Gemm": ["x", "x"]}.get(op, ["x"])
        model = one_op(op, inputs, {"g": np.ones(2, np.float32)}, feeds_info=[x_input([1, 2, 2, 2])],
                       opset=17, **attrs)
        message = refused(model, {"x": np.ones((1, 2, 2, 2), np.float32)})
        assert f"({op})" in message and name in message


def test_matmul_with_an_empty_inner_dim_and_a_huge_output():
    info = [tensor_info("a", [100000, 0]), tensor_info("b", [0, 100000])]
    model = one_op("MatMul", ["a", "b"], {}, feeds_info=info)
    message = refused(model, {"a": np.ones((100000, 0), np.float32), "b": np.ones((0, 100000), np.float32)})
    assert "'evil' (MatMul)" in message


def test_einsum_outer_product_over_budget():
    model = one_op("Einsum", ["a", "b"], {}, feeds_info=[tensor_info("a", [100000]), tensor_info("b", [100000])],
                   equation="i,j->ij")
    message = refused(model, {"a": np.ones(100000, np.float32), "b": np.ones(100000, np.float32)})
    assert "'evil' (Einsum)" in message and "[100000, 100000]" in message


def test_a_custom_tensor_limit_is_honoured():
    model = one_op("ConstantOfShape", ["x"], {}, feeds_info=[x_input([1], I64)])
    small = nn_core.Limits(max_tensor_bytes=1000)
    ok = nn_core.load_proto(model, name="hostile.onnx", limits=small).run({"x": np.array([250], np.int64)})
    assert ok["y"].shape == (250,)
    message = refused(model, {"x": np.array([251], np.int64)}, limits=small)
    assert "'evil' (ConstantOfShape)" in message and "[251]" in message
    # the default limit lets the same request through
    assert nn_core.load_proto(model, name="fine.onnx").run({"x": np.array([251], np.int64)})["y"].shape == (251,)


def test_a_custom_work_limit_is_honoured():
    model = one_op("MatMul", ["a", "b"], {}, feeds_info=[tensor_info("a", [64, 64]), tensor_info("b", [64, 64])])
    feeds = {"a": np.ones((64, 64), np.float32), "b": np.ones((64, 64), np.float32)}
    assert "(MatMul)" in refused(model, feeds, limits=nn_core.Limits(max_node_work=1000))
    assert nn_core.load_proto(model, name="fine.onnx").run(feeds)["y"].shape == (64, 64)
