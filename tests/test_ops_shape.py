"""Shape-family kernels (nn_core/ops/shape.py) against onnxruntime, NumPy and ONNX's node conformance cases."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from helpers import build_kernel, make_model, ort_run, tensor_info
from onnx import TensorProto, helper
from onnx_node_cases import as_array, cases_for, check_case_with_kernels, model_opset

from nn_core.errors import ModelError
from nn_core.ops.testing import run_node

INT64_MAX = np.iinfo(np.int64).max
INT64_MIN = np.iinfo(np.int64).min
ELEM = {np.dtype(np.float32): TensorProto.FLOAT, np.dtype(np.int64): TensorProto.INT64,
        np.dtype(np.int32): TensorProto.INT32, np.dtype(np.bool_): TensorProto.BOOL,
        np.dtype(np.uint8): TensorProto.UINT8, np.dtype(np.int8): TensorProto.INT8}


def one_node_model(node, graph_inputs, opset: int, domain_opsets=()) -> onnx.ModelProto:
    """A model around ``node`` whose output types come from ONNX shape inference (shapes left open)."""
    outputs = [onnx.ValueInfoProto(name=name) for name in node.output if name]
    model = make_model([node], graph_inputs, outputs, opset=opset)
    for domain, version in domain_opsets:
        model.opset_import.append(helper.make_opsetid(domain, version))
    model = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    for output in model.graph.output:
        output.type.tensor_type.ClearField("shape")
    del model.graph.value_info[:]
    return model


def check_against_ort(node, inputs: list, opset: int) -> list[np.ndarray]:
    """Run ``node`` through onnxruntime and through its kernel, twice: with every non-first input known at
    load time (the prepared path) and with all inputs dynamic. Outputs must agree exactly, dtype included."""
    names = [n for n in node.input]
    feeds = {name: value for name, value in zip(names, inputs, strict=True) if name}
    graph_inputs = [tensor_info(name, list(value.shape), ELEM[value.dtype]) for name, value in feeds.items()]
    want = ort_run(one_node_model(node, graph_inputs, opset), feeds)
    for constants in [(), tuple(range(1, len(inputs)))]:
        got = run_node(node, inputs, opset, constant_inputs=constants)
        assert len(got) == len(want)
        for have, expected in zip(got, want, strict=True):
            assert have.dtype == expected.dtype and have.shape == expected.shape, (have.shape, expected.shape)
            np.testing.assert_array_equal(have, expected)
    return want


def ints(*values) -> np.ndarray:
    return np.array(values, dtype=np.int64)


RNG = np.random.default_rng(7)
X234 = RNG.standard_normal((2, 3, 4)).astype(np.float32)


# ---------------------------------------------------------------- reshape family


@pytest.mark.parametrize("shape", [(0, -1), (0, 0, 2, 2), (-1,), (4, 0, 2), (2, -1, 2)])
def test_reshape_zero_copies_and_minus_one_infers(shape):
    node = helper.make_node("Reshape", ["x", "s"], ["y"])
    check_against_ort(node, [X234, ints(*shape)], 13)


def test_reshape_allowzero_keeps_a_literal_zero():
    node = helper.make_node("Reshape", ["x", "s"], ["y"], allowzero=1)
    empty = np.zeros((0, 3), np.float32)
    (y,) = run_node(node, [empty, ints(3, 0)], 14)
    assert y.shape == (3, 0)


def test_reshape_attribute_form_of_opset_4():
    node = helper.make_node("Reshape", ["x"], ["y"], shape=[0, -1])
    (y,) = run_node(node, [X234], 4)
    assert y.shape == (2, 12)
    np.testing.assert_array_equal(y, X234.reshape(2, 12))


def test_reshape_mismatch_names_the_node_and_shapes():
    node = helper.make_node("Reshape", ["x", "s"], ["y"], name="flat")
    with pytest.raises(ModelError, match=r"flat.*\(2, 3, 4\)"):
        run_node(node, [X234, ints(5, -1)], 13, constant_inputs=[1])


@pytest.mark.parametrize("axis", [0, 1, 2, 3, -1, -3])
def test_flatten_axes(axis):
    check_against_ort(helper.make_node("Flatten", ["x"], ["y"], axis=axis), [X234], 13)


def test_transpose_default_reverses_dims():
    (y,) = run_node(helper.make_node("Transpose", ["x"], ["y"]), [X234], 13)
    np.testing.assert_array_equal(y, X234.transpose(2, 1, 0))


@pytest.mark.parametrize("axes", [[0], [-1], [0, 2]])
def test_squeeze_attribute_form_and_input_form_agree(axes):
    x = RNG.standard_normal((1, 3, 1)).astype(np.float32)
    old = check_against_ort(helper.make_node("Squeeze", ["x"], ["y"], axes=axes), [x], 11)
    new = check_against_ort(helper.make_node("Squeeze", ["x", "a"], ["y"]), [x, ints(*axes)], 13)
    np.testing.assert_array_equal(old[0], new[0])


def test_squeeze_without_axes_drops_every_unit_dim():
    x = np.zeros((1, 3, 1, 2), np.float32)
    check_against_ort(helper.make_node("Squeeze", ["x"], ["y"]), [x], 13)


@pytest.mark.parametrize("axes", [[0], [-1], [0, 4], [3, -1, 0]])
def test_unsqueeze_attribute_form_and_input_form_agree(axes):
    old = check_against_ort(helper.make_node("Unsqueeze", ["x"], ["y"], axes=axes), [X234], 11)
    new = check_against_ort(helper.make_node("Unsqueeze", ["x", "a"], ["y"]), [X234, ints(*axes)], 13)
    np.testing.assert_array_equal(old[0], new[0])


def test_concat_negative_axis():
    node = helper.make_node("Concat", ["a", "b"], ["y"], axis=-2)
    check_against_ort(node, [X234, X234[:, :1]], 13)


# ---------------------------------------------------------------- split


def test_split_attribute_sizes_before_opset_13():
    node = helper.make_node("Split", ["x"], ["a", "b"], axis=2, split=[1, 3])
    a, b = check_against_ort(node, [X234], 11)
    assert a.shape == (2, 3, 1) and b.shape == (2, 3, 3)


def test_split_sizes_input_from_opset_13():
    node = helper.make_node("Split", ["x", "s"], ["a", "b", "c"], axis=1)
    check_against_ort(node, [X234, ints(1, 0, 2)], 13)


def test_split_equal_parts_without_sizes():
    node = helper.make_node("Split", ["x"], ["a", "b"], axis=-1)
    check_against_ort(node, [X234], 13)


def test_split_num_outputs_leaves_a_smaller_last_chunk():
    x = np.arange(7, dtype=np.float32)
    node = helper.make_node("Split", ["x"], ["a", "b", "c"], num_outputs=3)
    parts = check_against_ort(node, [x], 18)
    assert [p.size for p in parts] == [3, 3, 1]


# ---------------------------------------------------------------- slice


@pytest.mark.parametrize("starts, ends, axes, steps", [
    ([-1], [INT64_MIN], [2], [-1]),           # the whole axis backwards
    ([3, 2], [0, -INT64_MAX], [2, 1], [-2, -1]),
    ([INT64_MIN], [INT64_MAX], [0], [1]),
    ([10], [-10], [2], [-3]),                 # start beyond the end clamps to the last element
    ([1], [1000], [-1], [2]),
    ([-2], [-1], [-2], [1]),
    ([2], [INT64_MAX], [2], [-1]),            # INT64_MAX as the open end even when stepping back
])
def test_slice_clamping_and_negative_steps(starts, ends, axes, steps):
    node = helper.make_node("Slice", ["x", "s", "e", "a", "t"], ["y"])
    check_against_ort(node, [X234, ints(*starts), ints(*ends), ints(*axes), ints(*steps)], 13)


def test_slice_default_axes_and_steps():
    node = helper.make_node("Slice", ["x", "s", "e"], ["y"])
    check_against_ort(node, [X234, ints(1, -2), ints(2, 3)], 13)


def test_slice_axes_outside_the_rank_are_refused_naming_them():
    # (found by tools/fuzz_models.py: "tuple index out of range" was all the message said)
    node = helper.make_node("Slice", ["x", "s", "e", "a"], ["y"], name="cut")
    for constant in ((), (1, 2, 3)):  # prepared at load, or given at run time
        with pytest.raises(ModelError, match=r"node 'cut' \(Slice\): slice axes \[3\] are outside the input's 3 axes"
                                             r" \(shape \[2, 3, 4\]\)"):
            run_node(node, [X234, ints(0), ints(1), ints(3)], 13, constant_inputs=constant)
    (y,) = run_node(node, [X234, ints(1), ints(3), ints(-3)], 13)  # a negative axis within the rank still reads
    np.testing.assert_array_equal(y, X234[1:3])


def test_slice_lists_of_different_lengths_are_refused_with_their_lengths():
    # (found by tools/fuzz_models.py: "zip() argument 2 is shorter than argument 1" was the cause given)
    node = helper.make_node("Slice", ["x", "s", "e", "a"], ["y"], name="cut")
    for constant in ((), (1, 2, 3)):
        with pytest.raises(ModelError, match=r"node 'cut' \(Slice\): slice starts, ends, axes and steps must have "
                                             r"one value per sliced axis; they have 2 \(starts\), 1 \(ends\), "
                                             r"1 \(axes\)"):
            run_node(node, [X234, ints(0, 1), ints(1), ints(2)], 13, constant_inputs=constant)


def test_slice_attribute_form_of_opset_9():
    node = helper.make_node("Slice", ["x"], ["y"], starts=[1, -3], ends=[INT64_MAX, -1], axes=[1, 2])
    (y,) = run_node(node, [X234], 9)
    np.testing.assert_array_equal(y, X234[:, 1:, -3:-1])


def test_slice_prepared_once_serves_new_input_shapes():
    node = helper.make_node("Slice", ["x", "s", "e", "a"], ["y"])
    from nn_core.ops import load_all_kernels, resolve
    from nn_core.ops.attributes import node_attributes
    from nn_core.ops.registry import NodeSpec

    load_all_kernels()
    spec = NodeSpec("Slice", inputs=list(node.input), outputs=["y"], attrs=node_attributes(node), opset=13,
                    consts=[None, ints(1), ints(INT64_MAX), ints(0)])
    kernel = resolve("Slice", 13)(spec)
    for batch in (3, 5):  # the cached index must be per input shape
        x = np.arange(batch * 2, dtype=np.float32).reshape(batch, 2)
        np.testing.assert_array_equal(kernel.run(x, None, None, None), x[1:])


# ---------------------------------------------------------------- gather / scatter


@pytest.mark.parametrize("axis", [0, 1, -1])
def test_gather_negative_indices(axis):
    node = helper.make_node("Gather", ["x", "i"], ["y"], axis=axis)
    check_against_ort(node, [X234, ints(-1, 0, -2)], 13)


def test_gather_scalar_index_drops_the_axis():
    node = helper.make_node("Gather", ["x", "i"], ["y"], axis=1)
    (y,) = check_against_ort(node, [X234, np.array(-1, np.int64)], 13)
    assert y.shape == (2, 4)


def test_gather_elements_and_gather_nd_with_batch_dims():
    idx = RNG.integers(-3, 3, size=(2, 3, 2)).astype(np.int64)
    check_against_ort(helper.make_node("GatherElements", ["x", "i"], ["y"], axis=1), [X234, idx], 13)
    nd_idx = np.array([[[1, 3]], [[0, -1]]], np.int64)  # batch dim 0 of size 2, picks (row, col) pairs
    check_against_ort(helper.make_node("GatherND", ["x", "i"], ["y"], batch_dims=1), [X234, nd_idx], 13)


@pytest.mark.parametrize("reduction", ["none", "add", "mul", "max", "min"])
def test_scatter_nd_and_elements_reductions(reduction):
    x = RNG.standard_normal((4, 3)).astype(np.float32)
    indices = ints(2, 0, 2).reshape(3, 1) if reduction != "none" else ints(2, 0).reshape(2, 1)
    updates = RNG.standard_normal((len(indices), 3)).astype(np.float32)
    check_against_ort(helper.make_node("ScatterND", ["x", "i", "u"], ["y"], reduction=reduction),
                      [x, indices, updates], 18)
    element_idx = np.array([[1, -1], [0, 2]], np.int64) if reduction == "none" else np.array([[1, 1], [0, 0]])
    check_against_ort(helper.make_node("ScatterElements", ["x", "i", "u"], ["y"], axis=1, reduction=reduction),
                      [x, element_idx.astype(np.int64), updates[:2, :2].copy()], 18)


# ---------------------------------------------------------------- pad


@pytest.mark.parametrize("mode", ["constant", "reflect", "edge", "wrap"])
def test_pad_modes_from_inputs(mode):
    x = RNG.standard_normal((1, 2, 4, 5)).astype(np.float32)
    pads = ints(0, 0, 2, 1, 0, 0, 1, 3)
    inputs = [x, pads] + ([np.array(1.5, np.float32)] if mode == "constant" else [])
    names = ["x", "p", "v"][: len(inputs)]
    check_against_ort(helper.make_node("Pad", names, ["y"], mode=mode), inputs, 19)


def test_pad_with_axes_and_negative_pads_crops():
    x = RNG.standard_normal((3, 4, 5)).astype(np.float32)
    node = helper.make_node("Pad", ["x", "p", "", "a"], ["y"], mode="constant")
    # pads [begin(axis -1), begin(axis 0), end(axis -1), end(axis 0)]
    (y,) = run_node(node, [x, ints(1, -1, -2, 2), None, ints(-1, 0)], 18)
    want = np.pad(x[1:, :, :-2], [(0, 2), (0, 0), (1, 0)])
    np.testing.assert_array_equal(y, want)


@pytest.mark.parametrize("mode", ["constant", "reflect", "edge"])
def test_pad_attribute_form_before_opset_11(mode):
    x = RNG.standard_normal((2, 3)).astype(np.float32)
    node = helper.make_node("Pad", ["x"], ["y"], mode=mode, pads=[1, 2, 1, 0], value=-4.0)
    check_against_ort(node, [x], 10)


# ---------------------------------------------------------------- creation and misc


def test_topk_ties_go_to_the_lower_index():
    x = np.array([[3, 1, 3, 2, 1, 3]], np.float32)
    for largest in (1, 0):
        node = helper.make_node("TopK", ["x", "k"], ["v", "i"], largest=largest)
        values, indices = check_against_ort(node, [x, ints(4)], 11)
        assert list(indices[0]) == ([0, 2, 5, 3] if largest else [1, 4, 3, 0])


def test_topk_unsigned_largest_does_not_wrap():
    x = np.array([0, 255, 7, 128], np.uint8)
    node = helper.make_node("TopK", ["x", "k"], ["v", "i"])
    values, indices = run_node(node, [x, ints(2)], 11)
    assert list(values) == [255, 128] and list(indices) == [1, 3]


def test_shape_start_end_and_size():
    check_against_ort(helper.make_node("Shape", ["x"], ["y"], start=-2, end=10), [X234], 15)
    (size,) = check_against_ort(helper.make_node("Size", ["x"], ["y"]), [X234], 13)
    assert size == 24


def test_expand_tile_range_constant_of_shape():
    check_against_ort(helper.make_node("Expand", ["x", "s"], ["y"]), [X234[:, :1], ints(3, 1, 3, 1)], 13)
    check_against_ort(helper.make_node("Tile", ["x", "r"], ["y"]), [X234, ints(2, 1, 3)], 13)
    check_against_ort(helper.make_node("Range", ["a", "b", "c"], ["y"]),
                      [np.array(10, np.int64), np.array(-3, np.int64), np.array(-4, np.int64)], 13)
    fill = helper.make_tensor("v", TensorProto.INT32, [1], [7])
    check_against_ort(helper.make_node("ConstantOfShape", ["s"], ["y"], value=fill), [ints(2, 3)], 13)


@pytest.mark.parametrize("attribute, value, dtype", [
    ("value_float", 2.5, np.float32), ("value_floats", [1.0, 2.0], np.float32),
    ("value_int", 3, np.int64), ("value_ints", [4, 5], np.int64),
])
def test_constant_attribute_forms(attribute, value, dtype):
    node = helper.make_node("Constant", [], ["y"], **{attribute: value})
    (y,) = run_node(node, [], 13)
    assert y.dtype == dtype
    np.testing.assert_array_equal(y, np.array(value, dtype))


def test_dropout_at_inference_passes_through_with_a_true_mask():
    node = helper.make_node("Dropout", ["x", "r"], ["y", "m"])
    y, mask = check_against_ort(node, [X234, np.array(0.7, np.float32)], 13)
    np.testing.assert_array_equal(y, X234)
    assert mask.dtype == np.bool_ and mask.all()


def test_depth_space_round_trip():
    x = RNG.standard_normal((1, 8, 2, 3)).astype(np.float32)
    for mode in ("DCR", "CRD"):
        (deep,) = check_against_ort(helper.make_node("DepthToSpace", ["x"], ["y"], blocksize=2, mode=mode), [x], 13)
    (back,) = check_against_ort(helper.make_node("SpaceToDepth", ["x"], ["y"], blocksize=2), [deep[:, :, :, :4]], 13)
    assert back.shape == (1, 8, 2, 2)


def test_onehot_trilu_cumsum_nonzero_compress():
    check_against_ort(helper.make_node("OneHot", ["i", "d", "v"], ["y"], axis=0),
                      [ints(0, -1, 5, 2), np.array(4, np.int64), np.array([0, 9], np.float32)], 13)
    check_against_ort(helper.make_node("Trilu", ["x", "k"], ["y"], upper=0), [X234, np.array(-1, np.int64)], 14)
    check_against_ort(helper.make_node("CumSum", ["x", "a"], ["y"], exclusive=1, reverse=1),
                      [X234, np.array(-1, np.int64)], 14)
    check_against_ort(helper.make_node("NonZero", ["x"], ["y"]), [(X234 > 0.5)], 13)
    check_against_ort(helper.make_node("Compress", ["x", "c"], ["y"], axis=1),
                      [X234, np.array([True, False], np.bool_)], 13)


# ---------------------------------------------------------------- ONNX node conformance

SHAPE_OPS = {
    "Flatten", "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Concat", "Split", "Slice", "Gather",
    "GatherElements", "GatherND", "ScatterND", "ScatterElements", "Scatter", "Shape", "Size", "Expand", "Tile",
    "Range", "Pad", "Constant", "ConstantOfShape", "Identity", "Dropout", "DepthToSpace", "SpaceToDepth", "Trilu",
    "NonZero", "OneHot", "CumSum", "TopK", "EyeLike", "Compress", "ReverseSequence",
}

# case -> why our kernel cannot reproduce it (none: seeded training-mode Dropout draws its mask reproducibly)
KNOWN_FAILURES: dict[str, str] = {}

CASES = [c for c in cases_for(SHAPE_OPS, 10**6) if len(c.model.graph.node) == 1]


def test_conformance_selection_is_substantial():
    assert len(CASES) > 180


def check_case_dtypes(case) -> None:
    """The harness compares values only; ONNX also fixes each output's dtype and shape."""
    graph = case.model.graph
    node = graph.node[0]
    for inputs, outputs in case.data_sets:
        by_name = dict(zip([i.name for i in graph.input], [as_array(v) for v in inputs], strict=False))
        got = run_node(node, [by_name.get(name) if name else None for name in node.input],
                       model_opset(case.model, node.domain))
        assert len(got) >= len(outputs)
        for have, want in zip(got, [as_array(v) for v in outputs], strict=False):
            assert (have.dtype, have.shape) == (want.dtype, want.shape)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_node_conformance(case):
    if case.name in KNOWN_FAILURES:
        pytest.xfail(KNOWN_FAILURES[case.name])
    check_case_with_kernels(case)
    check_case_dtypes(case)


@pytest.mark.parametrize("axes", [[0], [-1], [0, 2]])
def test_squeeze_and_unsqueeze_keep_their_shapes_per_input_shape(axes):
    """Constant axes: the output shape is kept per input shape (later calls are one reshape), values, shapes
    and refusals the same on every call and for shapes met in turn."""
    indices = np.array(axes, np.int64)
    unsqueeze = build_kernel(helper.make_node("Unsqueeze", ["x", "a"], ["y"]), [np.zeros((2, 3)), indices], (1,))
    squeeze = build_kernel(helper.make_node("Squeeze", ["x", "a"], ["y"]), [np.zeros((2, 3)), indices], (1,))
    rng = np.random.default_rng(len(axes))
    for shape in [(2, 3), (4, 5, 6), (2, 3), (4, 5, 6)]:
        x = rng.random(shape, dtype=np.float32)
        grown = unsqueeze.run(x, indices)
        assert np.array_equal(grown, np.expand_dims(x, axes))
        assert np.array_equal(squeeze.run(grown, indices), x)
    with pytest.raises(ModelError, match="not all of size 1"):
        squeeze.run(np.zeros((3, 4, 5), np.float32), indices)


@pytest.mark.parametrize(("name", "value", "expected"), [
    ("value_int", "nan", "int64"), ("value_float", "abc", "float32"), ("value_ints", ["1", "x"], "int64")])
def test_a_constant_attribute_of_another_type_is_refused_naming_it(name, value, expected):
    # (found by tools/fuzz_models.py: "invalid literal for int() with base 10: 'nan'" was all the message said)
    node = helper.make_node("Constant", [], ["k"], name="kc")
    node.attribute.append(helper.make_attribute(name, value))
    with pytest.raises(ModelError, match=rf"node 'kc' \(Constant\): attribute '{name}' holds .*, not the {expected}"):
        run_node(node, [], 11)
