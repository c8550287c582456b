"""Tensor must behave like NumPy (values, shapes, dtypes, views) and fail with InputError naming the shapes."""

from __future__ import annotations

import operator

import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nn_core.errors import InputError, ModelError
from nn_core.tensor import Tensor

settings.register_profile("tensor", max_examples=50, deadline=None)
settings.load_profile("tensor")

NUMERIC_DTYPES = st.one_of(hnp.integer_dtypes(endianness="="), hnp.unsigned_integer_dtypes(endianness="="),
                           hnp.floating_dtypes(endianness="=", sizes=(32, 64)))
SMALL_SHAPES = hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=4)
FLOATS = st.floats(-100, 100, allow_nan=False, width=64)


def float_arrays(shape) -> st.SearchStrategy[np.ndarray]:
    return hnp.arrays(np.float64, shape, elements=FLOATS)


def numeric_arrays(dtype, shape) -> st.SearchStrategy[np.ndarray]:
    # Small values keep integer ops away from overflow; ** still meets negative exponents, checked against NumPy.
    return hnp.arrays(dtype, shape, elements=st.integers(0, 9) if dtype.kind == "u" else st.integers(-9, 9))


@st.composite
def unbroadcastable_shapes(draw, core: int = 0) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Two shapes that clash on one batch axis (sizes m != n, both > 1), followed by ``core`` equal axes."""
    common = draw(hnp.array_shapes(min_dims=1, max_dims=3, max_side=4))
    axis = draw(st.integers(0, len(common) - 1))
    m = draw(st.integers(2, 5))
    n = draw(st.integers(2, 5).filter(lambda k: k != m))
    tail = (3,) * core
    return common[:axis] + (m,) + common[axis + 1:] + tail, common[:axis] + (n,) + common[axis + 1:] + tail


def assert_same(result: Tensor, expected: np.ndarray) -> None:
    """Same values, shape and dtype as the NumPy reference."""
    assert isinstance(result, Tensor)
    assert result.shape == np.shape(expected)
    assert result.dtype == np.asarray(expected).dtype
    np.testing.assert_array_equal(result.numpy(), expected)


def assert_same_outcome(numpy_call, tensor_call) -> None:
    """The Tensor call gives NumPy's result, or fails with the same exception type where NumPy fails
    (integers to negative integer powers, Python ints out of range for an unsigned dtype)."""
    try:
        expected = numpy_call()
    except (ValueError, OverflowError) as exc:
        with pytest.raises(type(exc)):
            tensor_call()
        return
    assert_same(tensor_call(), expected)


# ---------------------------------------------------------------------------------------------- elementwise
ARITHMETIC = [operator.add, operator.sub, operator.mul, operator.truediv, operator.floordiv, operator.mod,
              operator.pow, operator.lt, operator.le, operator.gt, operator.ge, operator.eq, operator.ne]


@given(data=st.data(), shapes=hnp.mutually_broadcastable_shapes(num_shapes=2, max_dims=4, max_side=4),
       dtypes=st.tuples(NUMERIC_DTYPES, NUMERIC_DTYPES), op=st.sampled_from(ARITHMETIC))
def test_arithmetic_broadcasts_like_numpy(data, shapes, dtypes, op):
    a = data.draw(numeric_arrays(dtypes[0], shapes.input_shapes[0]))
    b = data.draw(numeric_arrays(dtypes[1], shapes.input_shapes[1]))
    assert np.broadcast_shapes(a.shape, b.shape) == shapes.result_shape
    scalar = (b.flat[0] if b.size else np.int8(3)).item()
    with np.errstate(all="ignore"):
        assert_same_outcome(lambda: op(a, b), lambda: op(Tensor(a), Tensor(b)))
        assert_same_outcome(lambda: op(a, b), lambda: op(Tensor(a), b))  # Tensor op ndarray
        assert_same_outcome(lambda: op(a, b), lambda: op(a, Tensor(b)))  # ndarray op Tensor: NumPy defers to us
        assert_same_outcome(lambda: op(scalar, a), lambda: op(scalar, Tensor(a)))  # reflected, Python scalar


@given(shapes=unbroadcastable_shapes(), op=st.sampled_from(ARITHMETIC))
def test_arithmetic_shape_mismatch_names_both_shapes(shapes, op):
    a, b = Tensor.ones(shapes[0]), Tensor.ones(shapes[1])
    with pytest.raises(InputError, match="cannot be broadcast") as info:
        op(a, b)
    assert str(shapes[0]) in str(info.value) and str(shapes[1]) in str(info.value)
    assert isinstance(info.value, ModelError)


@given(a=float_arrays(SMALL_SHAPES))
def test_unary_and_math_helpers_match_numpy(a):
    t = Tensor(a)
    assert_same(-t, -a)
    assert_same(abs(t), np.abs(a))
    assert_same(t.exp(), np.exp(a))
    assert_same(t.tanh(), np.tanh(a))
    assert_same(abs(t).sqrt(), np.sqrt(np.abs(a)))
    assert_same((abs(t) + 1).log(), np.log(np.abs(a) + 1))
    assert_same(t.relu(), np.where(a > 0, a, 0.0))
    assert_same(t.clip(-1.5, 2), np.clip(a, -1.5, 2))
    np.testing.assert_allclose(t.sigmoid().numpy(), 1 / (1 + np.exp(-a)), rtol=1e-12)
    assert isinstance(np.exp(t), Tensor) and isinstance(np.add(a, t), Tensor)


def test_sigmoid_is_stable_for_large_inputs():
    x = np.array([-1000.0, -80.0, -30.0, 0.0, 30.0, 80.0, 1000.0], dtype=np.float32)
    with np.errstate(over="raise", invalid="raise", divide="raise"):  # naive exp(1000) overflows; ours must not
        values = Tensor(x).sigmoid()
    assert values.dtype == np.float32
    with np.errstate(over="ignore"):
        reference = 1 / (1 + np.exp(-x.astype(np.float64)))
    np.testing.assert_allclose(values.numpy(), reference, rtol=1e-6)
    assert values.numpy()[1] > 0  # e^-80 is representable in float32: no premature underflow to 0


@given(a=hnp.arrays(np.float64, hnp.array_shapes(min_dims=1, max_dims=4, max_side=4), elements=FLOATS),
       data=st.data(), keepdims=st.booleans())
def test_reductions_match_numpy(a, data, keepdims):
    axis = data.draw(st.none() | st.integers(-a.ndim, a.ndim - 1))
    t = Tensor(a)
    for name in ("sum", "mean", "max", "min", "prod", "argmax", "argmin"):
        expected = getattr(a, name)(axis=axis, keepdims=keepdims)
        assert_same(getattr(t, name)(axis=axis, keepdims=keepdims), expected)


# ---------------------------------------------------------------------------------------------- views and shapes
@given(a=hnp.arrays(NUMERIC_DTYPES, SMALL_SHAPES), data=st.data())
def test_basic_indexing_gives_views_exactly_where_numpy_does(a, data):
    index = data.draw(hnp.basic_indices(a.shape, allow_newaxis=True))
    t = Tensor(a)
    assert_same(t[index], a[index])
    assert np.shares_memory(t[index].numpy(), a) == np.shares_memory(a[index], a)
    byte_strides = np.asarray(a[index]).strides
    assert t[index].byte_strides == byte_strides
    assert t[index].strides == tuple(s // a.itemsize for s in byte_strides)
    assert t[index].is_contiguous == np.asarray(a[index]).flags.c_contiguous


@given(a=float_arrays(hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=5)), data=st.data())
def test_fancy_and_boolean_indexing_copy_and_setitem_writes_through(a, data):
    t = Tensor(a)
    rows = data.draw(hnp.arrays(np.int64, st.integers(0, 4), elements=st.integers(-a.shape[0], a.shape[0] - 1)))
    assert_same(t[rows], a[rows])
    assert_same(t[Tensor(rows)], a[rows])
    mask = t > 0
    assert_same(t[mask], a[a > 0])
    assert not np.shares_memory(t[mask].numpy(), a)
    t[mask] = 0.0  # writes into the caller's array: there was no copy at construction
    assert not (a > 0).any()
    t[0] = Tensor.full(a.shape[1:], 7.0, dtype=np.float64)
    assert (a[0] == 7.0).all()


@given(a=hnp.arrays(NUMERIC_DTYPES, SMALL_SHAPES), data=st.data())
def test_reshape_round_trips_and_is_a_view_when_numpy_makes_one(a, data):
    t = Tensor(a)
    perm = data.draw(st.permutations(range(a.ndim)))
    source = t.transpose(*perm) if perm else t  # sometimes non-contiguous
    flat = source.reshape(-1)
    assert_same(flat, np.transpose(a, perm).reshape(-1))
    assert np.shares_memory(flat.numpy(), a) == np.shares_memory(np.transpose(a, perm).reshape(-1), a)
    assert_same(flat.reshape(source.shape), np.transpose(a, perm))
    assert_same(t.flatten(), a.reshape(-1))
    if a.ndim >= 2:
        assert t.flatten(1).shape == (a.shape[0], int(np.prod(a.shape[1:])))
    if a.size:
        assert np.shares_memory(t.reshape(a.shape).numpy(), a)


@given(a=hnp.arrays(NUMERIC_DTYPES, SMALL_SHAPES.filter(lambda s: 0 not in s)), data=st.data())
def test_transpose_and_permute_round_trip_as_views(a, data):
    t = Tensor(a)
    perm = data.draw(st.permutations(range(a.ndim)))
    moved = t.permute(*perm)
    assert_same(moved, np.transpose(a, perm))
    assert np.shares_memory(moved.numpy(), a)
    assert_same(moved.transpose(*np.argsort(perm)), a)
    assert_same(t.T, a.T)
    assert_same(t.T.T, a)
    if a.ndim >= 2 and a.shape[0] > 1 and a.shape[1] > 1:
        assert not t.transpose(1, 0, *range(2, a.ndim)).is_contiguous
        assert t.transpose(1, 0, *range(2, a.ndim)).contiguous().is_contiguous


@given(a=float_arrays(SMALL_SHAPES), data=st.data())
def test_unsqueeze_squeeze_and_expand(a, data):
    t = Tensor(a)
    axis = data.draw(st.integers(-a.ndim - 1, a.ndim))
    grown = t.unsqueeze(axis)
    assert_same(grown, np.expand_dims(a, axis))
    assert_same(grown.squeeze(axis), a)
    assert_same(t.squeeze(), np.squeeze(a))
    target = data.draw(hnp.broadcastable_shapes(a.shape, min_dims=a.ndim, max_dims=a.ndim + 2, min_side=0))
    target = np.broadcast_shapes(target, a.shape)
    wide = t.broadcast_to(target)
    assert_same(wide, np.broadcast_to(a, target))
    if wide.size:
        assert np.shares_memory(wide.numpy(), a)
    lead = target[: len(target) - a.ndim]
    assert_same(t.expand(*lead, *([-1] * a.ndim)), np.broadcast_to(a, lead + a.shape))


@given(shapes=unbroadcastable_shapes())
def test_broadcast_to_mismatch_names_both_shapes(shapes):
    with pytest.raises(InputError) as info:
        Tensor.ones(shapes[0]).broadcast_to(shapes[1])
    assert str(shapes[0]) in str(info.value) and str(shapes[1]) in str(info.value)


def test_reshape_and_squeeze_errors_name_the_shape():
    with pytest.raises(InputError, match=r"\(2, 3\).*\(4, -1\)"):
        Tensor.zeros(2, 3).reshape(4, -1)
    with pytest.raises(InputError, match=r"\(2, 3\)"):
        Tensor.zeros(2, 3).squeeze(0)
    with pytest.raises(InputError, match="permutation"):
        Tensor.zeros(2, 3).transpose(0, 0)


# ---------------------------------------------------------------------------------------------- NumPy protocol
def test_array_protocol_follows_numpy2_copy_semantics():
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    t = Tensor(a)
    assert t.numpy() is a and Tensor.from_numpy(a).numpy() is a
    assert np.asarray(t) is a
    assert np.asarray(t, copy=False) is a
    assert not np.shares_memory(np.array(t), a)  # np.array copies by default
    assert not np.shares_memory(Tensor(a, copy=True).numpy(), a)
    assert np.asarray(t, dtype=np.float64).dtype == np.float64
    with pytest.raises(ValueError):
        np.asarray(t, dtype=np.float64, copy=False)  # a dtype change cannot avoid a copy
    assert not np.shares_memory(t.copy().numpy(), a)
    assert t.astype(np.int16).dtype == np.int16
    assert t.astype(np.float32, copy=False).numpy() is a
    with pytest.raises(TypeError):
        Tensor.from_numpy([1, 2])


def test_ufunc_out_argument_writes_into_the_tensor():
    out = Tensor.zeros(2, 3, dtype=np.float64)
    result = np.add(Tensor.ones(2, 3, dtype=np.float64), 1.0, out=out)
    assert result is out
    assert (out.numpy() == 2.0).all()


def test_properties_repr_len_iter():
    t = Tensor.arange(24, dtype=np.int32).reshape(2, 3, 4)
    assert (t.ndim, t.size, t.itemsize, t.nbytes) == (3, 24, 4, 96)
    assert t.strides == (12, 4, 1) and t.byte_strides == (48, 16, 4)
    assert t[:, ::2].strides == (12, 8, 1)
    assert t.broadcast_to(5, 2, 3, 4).strides == (0, 12, 4, 1)
    text = repr(t)
    assert text.startswith("Tensor(") and "shape=(2, 3, 4)" in text and "dtype=int32" in text
    assert len(t) == 2
    rows = list(t)
    assert len(rows) == 2 and all(isinstance(r, Tensor) and r.shape == (3, 4) for r in rows)
    assert np.shares_memory(rows[1].numpy(), t.numpy())
    with pytest.raises(TypeError):
        len(Tensor(3.0))
    assert float(t.sum()) == 276.0 and int(t[1, 2, 3]) == 23
    with pytest.raises(TypeError):  # elementwise __eq__ makes tensors unhashable
        hash(t)
    assert_same(t == t.copy(), np.ones((2, 3, 4), dtype=bool))
    assert t.allclose(t + 1e-9) and not t.allclose(t + 1)


def test_constructors():
    assert_same(Tensor.zeros(2, 3), np.zeros((2, 3), dtype=np.float32))
    assert_same(Tensor.ones((4,)), np.ones(4, dtype=np.float32))
    assert_same(Tensor.full((2, 2), 7), np.full((2, 2), 7))
    assert_same(Tensor.arange(1, 10, 3), np.arange(1, 10, 3))
    first, again, other = Tensor.randn(3, 4, seed=5), Tensor.randn(3, 4, seed=5), Tensor.randn(3, 4, seed=6)
    assert first.shape == (3, 4) and first.dtype == np.float32
    assert (first == again).numpy().all() and not (first == other).numpy().all()


# ---------------------------------------------------------------------------------------------- linear algebra
@given(shapes=hnp.mutually_broadcastable_shapes(signature=np.matmul.signature, max_dims=3, max_side=4),
       data=st.data())
def test_matmul_matches_numpy_on_batched_shapes(shapes, data):
    a = data.draw(float_arrays(shapes.input_shapes[0]))
    b = data.draw(float_arrays(shapes.input_shapes[1]))
    expected = np.matmul(a, b)
    assert expected.shape == shapes.result_shape
    for result in (Tensor(a) @ Tensor(b), Tensor(a).matmul(b), a @ Tensor(b)):
        assert isinstance(result, Tensor) and result.shape == expected.shape
        np.testing.assert_allclose(result.numpy(), expected, rtol=1e-12, atol=1e-9)


@given(batch=hnp.array_shapes(min_dims=0, max_dims=2, max_side=3), m=st.integers(1, 4), k=st.integers(1, 4),
       k2=st.integers(1, 4), n=st.integers(1, 4))
def test_matmul_misaligned_shapes_name_both_shapes(batch, m, k, k2, n):
    if k == k2:
        k2 = k + 1
    a_shape, b_shape = batch + (m, k), batch + (k2, n)
    with pytest.raises(InputError) as info:
        Tensor.ones(a_shape) @ Tensor.ones(b_shape)
    assert f"matmul: shapes {a_shape} and {b_shape} are not aligned: {k} != {k2}" == str(info.value)


@given(shapes=unbroadcastable_shapes(core=2))
def test_matmul_batch_mismatch_names_both_shapes(shapes):
    with pytest.raises(InputError) as info:
        Tensor.ones(shapes[0]) @ Tensor.ones(shapes[1])
    assert str(shapes[0]) in str(info.value) and str(shapes[1]) in str(info.value)


@given(data=st.data(), m=st.integers(1, 4), k=st.integers(1, 4), n=st.integers(1, 4),
       kinds=st.tuples(st.sampled_from("vm"), st.sampled_from("vm")))
def test_dot_matches_numpy_for_vectors_and_matrices(data, m, k, n, kinds):
    a = data.draw(float_arrays((k,) if kinds[0] == "v" else (m, k)))
    b = data.draw(float_arrays((k,) if kinds[1] == "v" else (k, n)))
    result, expected = Tensor(a).dot(Tensor(b)), np.dot(a, b)
    assert result.shape == np.shape(expected)  # vector . vector is a 0-d scalar
    np.testing.assert_allclose(result.numpy(), expected, rtol=1e-12, atol=1e-9)
    with pytest.raises(InputError) as info:
        Tensor(a).dot(np.ones(k + 1))
    assert f"shapes {a.shape} and {(k + 1,)}" in str(info.value)


def test_dot_rejects_other_ranks_clearly():
    with pytest.raises(InputError, match=r"dot: shapes \(2, 2, 3\) and \(3,\).*1-D or 2-D"):
        Tensor.ones(2, 2, 3).dot(Tensor.ones(3))
    with pytest.raises(InputError, match=r"shapes \(\) and \(3,\)"):
        Tensor(2.0).dot(Tensor.ones(3))


@given(shapes=hnp.mutually_broadcastable_shapes(num_shapes=2, max_dims=3, max_side=3), data=st.data())
def test_cross_matches_numpy_and_is_orthogonal_to_its_inputs(shapes, data):
    ndim = max(len(s) for s in shapes.input_shapes) + 1
    axis = data.draw(st.integers(-1, -1) | st.integers(-min(len(s) for s in shapes.input_shapes) - 1, -1))
    position = ndim + axis  # insert the 3-component axis at the same place (counted from the end) in both
    a_shape = list(shapes.input_shapes[0])
    b_shape = list(shapes.input_shapes[1])
    a_shape.insert(len(a_shape) + axis + 1, 3)
    b_shape.insert(len(b_shape) + axis + 1, 3)
    a, b = data.draw(float_arrays(tuple(a_shape))), data.draw(float_arrays(tuple(b_shape)))
    result = Tensor(a).cross(Tensor(b), axis=axis)
    expected = np.cross(a, b, axis=axis)
    assert result.shape == expected.shape and result.shape[position] == 3
    np.testing.assert_allclose(result.numpy(), expected, rtol=1e-12, atol=1e-9)
    # c . a == 0 and c . b == 0, to within rounding relative to the magnitudes involved
    scale = 1e-12 * (1 + np.abs(a).max()) ** 2 * (1 + np.abs(b).max()) ** 2
    assert np.abs((result * a).sum(axis=axis).numpy()).max(initial=0) <= scale
    assert np.abs((result * b).sum(axis=axis).numpy()).max(initial=0) <= scale


def test_cross_rejects_two_vectors_and_mismatched_batches():
    with pytest.raises(InputError, match=r"cross: shapes \(2,\) and \(2,\).*3 components.*2-vector"):
        Tensor([1.0, 2.0]).cross([3.0, 4.0])
    with pytest.raises(InputError, match=r"\(4, 3\) and \(5, 3\)"):
        Tensor.ones(4, 3).cross(Tensor.ones(5, 3))
    with pytest.raises(InputError, match=r"\(4, 3\).*axis 0, got 4"):  # 4 components along axis 0
        Tensor.ones(4, 3).cross(Tensor.ones(4, 3), axis=0)
    x, y, z = np.eye(3)
    assert_same(Tensor(x).cross(y), z)  # right-handed: e_x x e_y = e_z
    assert_same(Tensor(y).cross(x), -z)


@given(a=float_arrays(SMALL_SHAPES), b=float_arrays(SMALL_SHAPES))
def test_outer_matches_numpy(a, b):
    assert_same(Tensor(a).outer(Tensor(b)), np.outer(a, b))


@given(data=st.data(), lead=hnp.array_shapes(min_dims=0, max_dims=2, max_side=3),
       shared=hnp.array_shapes(min_dims=0, max_dims=2, max_side=3),
       trail=hnp.array_shapes(min_dims=0, max_dims=2, max_side=3))
def test_tensordot_matches_numpy(data, lead, shared, trail):
    a, b = data.draw(float_arrays(lead + shared)), data.draw(float_arrays(shared + trail))
    result, expected = Tensor(a).tensordot(Tensor(b), axes=len(shared)), np.tensordot(a, b, axes=len(shared))
    assert result.shape == expected.shape
    np.testing.assert_allclose(result.numpy(), expected, rtol=1e-12, atol=1e-9)
    if shared:  # the same contraction spelled as explicit axis pairs
        pairs = (list(range(len(lead), a.ndim)), list(range(len(shared))))
        np.testing.assert_allclose(Tensor(a).tensordot(b, axes=pairs).numpy(), expected, rtol=1e-12, atol=1e-9)
        wrong = shared[:-1] + (shared[-1] + 1,)
        with pytest.raises(InputError) as info:
            Tensor(a).tensordot(np.ones(wrong + trail), axes=len(shared))
        assert str(a.shape) in str(info.value) and str(wrong + trail) in str(info.value)
