"""Property tests: shape kernels agree with NumPy's own semantics on arbitrary shapes and arguments."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import helper

from nn_core.ops.testing import run_node

FAST = settings(max_examples=60, deadline=None)

shapes = st.lists(st.integers(0, 4), min_size=0, max_size=4).map(tuple)
nonempty_shapes = st.lists(st.integers(1, 4), min_size=1, max_size=4).map(tuple)


def data_of(shape) -> np.ndarray:
    return np.arange(int(np.prod(shape)), dtype=np.float32).reshape(shape)


def ints(values) -> np.ndarray:
    return np.array(list(values), dtype=np.int64)


@FAST
@given(st.data(), nonempty_shapes)
def test_reshape_matches_numpy_with_zero_and_minus_one(data, shape):
    x = data_of(shape)
    # regroup the dims into a new shape, then spell some of them as 0 (copy) or one as -1 (infer)
    target = list(data.draw(st.permutations(shape)))
    copies = [i for i in range(min(len(target), len(shape))) if target[i] == shape[i]]
    for i in data.draw(st.lists(st.sampled_from(copies), unique=True)) if copies else []:
        target[i] = 0
    if data.draw(st.booleans()):
        target[data.draw(st.integers(0, len(target) - 1))] = -1
    wanted = [shape[i] if d == 0 else d for i, d in enumerate(target)]
    if wanted.count(-1) == 1:
        wanted[wanted.index(-1)] = x.size // max(1, int(np.prod([d for d in wanted if d != -1])))
    (y,) = run_node(helper.make_node("Reshape", ["x", "s"], ["y"]), [x, ints(target)], 14, constant_inputs=[1])
    np.testing.assert_array_equal(y, x.reshape(wanted))


@FAST
@given(st.data(), nonempty_shapes)
def test_transpose_is_numpy_transpose_and_its_inverse_undoes_it(data, shape):
    x = data_of(shape)
    perm = data.draw(st.permutations(range(len(shape))))
    (y,) = run_node(helper.make_node("Transpose", ["x"], ["y"], perm=list(perm)), [x], 13)
    np.testing.assert_array_equal(y, np.transpose(x, perm))
    inverse = list(np.argsort(perm))
    (back,) = run_node(helper.make_node("Transpose", ["x"], ["y"], perm=inverse), [y], 13)
    np.testing.assert_array_equal(back, x)


@FAST
@given(st.data(), shapes)
def test_unsqueeze_then_squeeze_round_trips(data, shape):
    x = data_of(shape)
    out_rank = len(shape) + data.draw(st.integers(1, 3))
    axes = data.draw(st.lists(st.integers(-out_rank, out_rank - 1), min_size=out_rank - len(shape),
                              max_size=out_rank - len(shape), unique_by=lambda a: a % out_rank))
    opset = data.draw(st.sampled_from([11, 13]))
    if opset < 13:
        unsqueeze = helper.make_node("Unsqueeze", ["x"], ["y"], axes=axes)
        squeeze = helper.make_node("Squeeze", ["x"], ["y"], axes=axes)
        (y,) = run_node(unsqueeze, [x], opset)
        (back,) = run_node(squeeze, [y], opset)
    else:
        (y,) = run_node(helper.make_node("Unsqueeze", ["x", "a"], ["y"]), [x, ints(axes)], opset)
        (back,) = run_node(helper.make_node("Squeeze", ["x", "a"], ["y"]), [y, ints(axes)], opset)
    np.testing.assert_array_equal(y, np.expand_dims(x, tuple(axes)))
    assert back.shape == x.shape


@FAST
@given(st.data(), nonempty_shapes, st.integers(1, 4))
def test_concat_matches_numpy_and_split_undoes_it(data, shape, parts):
    axis = data.draw(st.integers(-len(shape), len(shape) - 1))
    pieces = []
    for _ in range(parts):
        piece_shape = list(shape)
        piece_shape[axis] = data.draw(st.integers(0, 3))
        pieces.append(data_of(piece_shape) + len(pieces))
    names = [f"x{i}" for i in range(parts)]
    (y,) = run_node(helper.make_node("Concat", names, ["y"], axis=axis), pieces, 13)
    np.testing.assert_array_equal(y, np.concatenate(pieces, axis=axis))
    sizes = ints(p.shape[axis] for p in pieces)
    outputs = [f"y{i}" for i in range(parts)]
    split = run_node(helper.make_node("Split", ["x", "s"], outputs, axis=axis), [y, sizes], 13)
    for got, want in zip(split, pieces, strict=True):
        np.testing.assert_array_equal(got, want)


big = st.sampled_from([np.iinfo(np.int64).max, np.iinfo(np.int64).min])


def spec_positions(start: int, end: int, step: int, dim: int) -> list[int]:
    """The positions ONNX Slice selects on one axis, straight from the spec's wording: negative start/end
    count from the end, then start clamps to [0, dim] ([0, dim-1] stepping back) and end to [0, dim]
    ([-1, dim-1] stepping back). One exception, onnxruntime's: an end of INT64_MAX stepping back means
    "through index 0" (exporters use it as the open end in either direction)."""
    if step < 0 and end == np.iinfo(np.int64).max:
        end = -1 - dim
    start = start + dim if start < 0 else start
    end = end + dim if end < 0 else end
    if step > 0:
        return list(range(min(max(start, 0), dim), min(max(end, 0), dim), step))
    return list(range(min(max(start, 0), dim - 1), min(max(end, -1), dim - 1), step))


@FAST
@given(st.data(), nonempty_shapes)
def test_slice_selects_the_positions_the_spec_describes(data, shape):
    x = data_of(shape)
    rank = len(shape)
    axes = data.draw(st.lists(st.integers(-rank, rank - 1), min_size=1, max_size=rank,
                              unique_by=lambda a: a % rank))
    starts, ends, steps = [], [], []
    want = x
    for axis in axes:
        dim = shape[axis]
        step = data.draw(st.sampled_from([-3, -2, -1, 1, 2, 3]))
        start = data.draw(st.integers(-dim - 2, dim + 2) | big)
        end = data.draw(st.integers(-dim - 2, dim + 2) | big)
        starts.append(start), ends.append(end), steps.append(step)
        want = np.take(want, spec_positions(start, end, step, dim), axis=axis)
    node = helper.make_node("Slice", ["x", "s", "e", "a", "t"], ["y"])
    inputs = [x, ints(starts), ints(ends), ints(axes), ints(steps)]
    constants = data.draw(st.sampled_from([(), (1, 2, 3, 4)]))
    (y,) = run_node(node, inputs, 13, constant_inputs=constants)
    np.testing.assert_array_equal(y, want)


@FAST
@given(st.data(), shapes)
def test_expand_equals_numpy_broadcast_both_ways(data, shape):
    x = data_of(shape)
    # a target that broadcasts with x: for each dim of x pick 1 or the dim itself, plus leading dims
    lead = data.draw(st.lists(st.integers(1, 3), max_size=2))
    target = lead + [data.draw(st.sampled_from([1, d])) for d in shape]
    (y,) = run_node(helper.make_node("Expand", ["x", "s"], ["y"]), [x, ints(target)], 13)
    np.testing.assert_array_equal(y, x * np.ones(target, np.float32))
    assert y.flags.writeable
