"""The math kernels (elementwise, activations, reductions) against NumPy-written expectations, onnxruntime, and
ONNX's own node conformance cases."""

from __future__ import annotations

import math
import warnings

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from onnx_node_cases import cases_for, check_case_with_kernels

from nn_core.errors import ModelError
from nn_core.ops import load_all_kernels, resolve
from nn_core.ops.elementwise import erf
from nn_core.ops.registry import NodeSpec
from nn_core.ops.testing import run_node

ort = pytest.importorskip("onnxruntime")

rng = np.random.default_rng(1234)


def node(op_type: str, inputs: list[str] | int = 1, **attrs) -> onnx.NodeProto:
    names = [f"in{i}" for i in range(inputs)] if isinstance(inputs, int) else inputs
    return helper.make_node(op_type, names, ["out"], **attrs)


def run_ort(proto: onnx.NodeProto, inputs: list[np.ndarray | None], opset: int) -> np.ndarray:
    """The node alone in a model, run by onnxruntime (every present input is a graph input)."""
    present = [(name, value) for name, value in zip(proto.input, inputs, strict=True) if name]
    graph_inputs = [
        helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(value.dtype), value.shape)
        for name, value in present
    ]
    graph = helper.make_graph([proto], "one_node", graph_inputs, [helper.make_empty_tensor_value_info("out")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, dict(present))[0]


def run(proto: onnx.NodeProto, inputs: list[np.ndarray | None], opset: int, constant_inputs=()) -> np.ndarray:
    return np.asarray(run_node(proto, inputs, opset, constant_inputs)[0])


def assert_same(have: np.ndarray, want: np.ndarray, rtol: float = 1e-6, atol: float = 1e-6) -> None:
    """Same dtype, same shape, same values (NaN where NaN)."""
    assert have.dtype == want.dtype, f"dtype {have.dtype} vs {want.dtype}"
    assert have.shape == want.shape, f"shape {have.shape} vs {want.shape}"
    np.testing.assert_allclose(have, want, rtol=rtol, atol=atol)


def matches_ort(proto: onnx.NodeProto, inputs: list, opset: int, rtol: float = 1e-5, atol: float = 1e-6) -> None:
    want = run_ort(proto, inputs, opset)
    assert_same(run(proto, inputs, opset), want, rtol, atol)


def floats(*shape: int, scale: float = 3.0, dtype=np.float32) -> np.ndarray:
    return (rng.standard_normal(shape) * scale).astype(dtype)


# --------------------------------------------------------------------------------------------------------------
# Elementwise


@pytest.mark.parametrize("op_type", ["Add", "Sub", "Mul", "Div", "Max", "Min", "Equal", "Less", "GreaterOrEqual"])
@pytest.mark.parametrize("dtype", [np.float32, np.int32, np.int64])
def test_binary_ops_broadcast_like_onnxruntime(op_type, dtype):
    a = (floats(2, 3, 4, scale=20)).astype(dtype)
    b = (floats(3, 1, scale=20) + 0.5).astype(dtype)
    b[b == 0] = 3  # keep integer division defined
    matches_ort(node(op_type, 2), [a, b], 13)


def test_integer_division_truncates_toward_zero():
    a = np.array([-7, 7, -7, 7, -6, 0, -1], dtype=np.int32)
    b = np.array([2, -2, -2, 2, 3, -5, 4], dtype=np.int32)
    want = np.array([math.trunc(x / y) for x, y in zip(a.tolist(), b.tolist(), strict=True)], dtype=np.int32)
    assert_same(run(node("Div", 2), [a, b], 14), want)
    matches_ort(node("Div", 2), [a, b], 14)


@pytest.mark.parametrize("op_type", ["Add", "Sub", "Mul", "Div"])
def test_legacy_broadcast_aligns_second_input_at_axis(op_type):
    a = floats(2, 3, 4, 5)
    b = floats(3, 4) + 5
    numpy_op = {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Div": np.divide}[op_type]
    want = numpy_op(a, b[np.newaxis, :, :, np.newaxis])  # b's first axis sits on a's axis 1
    assert_same(run(node(op_type, 2, broadcast=1, axis=1), [a, b], 6), want)
    # negative axis counts from the end of a; without axis the old broadcast aligned trailing dimensions
    assert_same(run(node(op_type, 2, broadcast=1, axis=-3), [a, b], 6), want)
    c = floats(4, 5) + 5
    assert_same(run(node(op_type, 2, broadcast=1), [a, c], 1), numpy_op(a, c))


def test_pow_keeps_the_base_type_with_another_exponent_type():
    x = np.array([1.5, -2.0, 3.0], dtype=np.float32)
    for exponent in (np.array([2, 3, -1], dtype=np.int64), np.array([0.5, 2.0, 1.5], dtype=np.float64)):
        matches_ort(node("Pow", 2), [x, exponent], 15)
    base = np.array([1, 2, 3], dtype=np.int32)
    matches_ort(node("Pow", 2), [base, np.array([1.0, 2.0, 3.0], dtype=np.float32)], 15)


def test_pow_with_constant_square_exponent():
    x = floats(4, 5)
    two = np.array(2.0, dtype=np.float32)
    prepared = run(node("Pow", 2), [x, two], 13, constant_inputs=[1])
    assert_same(prepared, x * x)
    assert_same(run(node("Pow", 2), [x, two], 13), x * x)


@pytest.mark.parametrize("fmod", [0, 1])
def test_mod_sign_follows_onnx(fmod):
    a = np.array([-7, 7, -7, 7, 5, -4], dtype=np.int32)
    b = np.array([3, -3, -3, 3, 5, 3], dtype=np.int32)
    python_mod = math.fmod if fmod else (lambda x, y: x % y)  # C's sign rule, or Python's (the divisor's)
    want = np.array([python_mod(x, y) for x, y in zip(a.tolist(), b.tolist(), strict=True)], dtype=np.int32)
    assert_same(run(node("Mod", 2, fmod=fmod), [a, b], 13), want)
    matches_ort(node("Mod", 2, fmod=fmod), [a, b], 13)
    if fmod:
        matches_ort(node("Mod", 2, fmod=1), [floats(6), floats(6) + 10], 13)


@pytest.mark.parametrize(
    "op_type", ["Sqrt", "Exp", "Log", "Neg", "Abs", "Reciprocal", "Floor", "Ceil", "Round", "Sign", "Sin", "Cos",
                "Tan", "Atan", "Erf", "Sigmoid", "Tanh", "Softplus", "Softsign", "Relu", "Elu", "Selu",
                "HardSigmoid", "Mish"],
)
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_unary_float_ops_keep_dtype_and_match_onnxruntime(op_type, dtype):
    x = floats(3, 7, dtype=dtype)
    if op_type in ("Sqrt", "Log"):
        x = np.abs(x) + dtype(0.1)
    if op_type == "Round":
        x = np.array([-2.5, -1.5, -0.5, 0.5, 1.5, 2.5, 0.4999, -3.7], dtype=dtype)
    opset = 18 if op_type == "Mish" else 13
    # onnxruntime lacks many float16/float64 kernels: its float32 result is the reference for every type
    want = run_ort(node(op_type), [x.astype(np.float32)], opset).astype(dtype)
    tolerance = 2e-3 if dtype == np.float16 else 1e-5
    assert_same(run(node(op_type), [x], opset), want, rtol=tolerance, atol=tolerance)


def test_erf_is_accurate_across_the_range():
    x = np.concatenate([np.linspace(-7, 7, 20001), [0.0, -0.0, 1e-30, -1e-12, 5.999, 6.0, 6.001, np.inf, -np.inf]])
    want = np.array([math.erf(v) for v in x])
    have = erf(x)
    assert have.dtype == np.float64
    np.testing.assert_allclose(have, want, rtol=1e-14, atol=2e-15)
    # float32: no worse than rounding the exact value to float32
    x32 = x.astype(np.float32)
    want32 = np.array([math.erf(float(v)) for v in x32])
    assert np.max(np.abs(erf(x32).astype(np.float64) - want32)) <= 6e-8
    assert np.isnan(erf(np.array([np.nan], dtype=np.float32))).all()


def test_variadic_ops_broadcast_any_number_of_inputs():
    xs = [floats(2, 1, 4), floats(3, 1), floats(4), floats(1)]
    aligned = np.broadcast_arrays(*xs)
    for op_type, want in (("Sum", sum(xs)), ("Mean", sum(xs) / 4), ("Max", np.maximum.reduce(aligned)),
                          ("Min", np.minimum.reduce(aligned))):
        assert_same(run(node(op_type, 4), xs, 13), want.astype(np.float32))
        matches_ort(node(op_type, 4), xs, 13)
    single = floats(5)
    assert_same(run(node("Sum", 1), [single], 13), single)


def test_logic_and_where():
    a, b = rng.random((3, 4)) > 0.5, rng.random((4,)) > 0.5
    for op_type in ("And", "Or", "Xor"):
        matches_ort(node(op_type, 2), [a, b], 13)
    matches_ort(node("Not"), [a], 13)
    matches_ort(node("Where", 3), [a, floats(3, 4), floats(1, 4)], 16)


def test_isinf_and_isnan_detection_flags():
    x = np.array([np.inf, -np.inf, np.nan, 0.0, -1.0], dtype=np.float32)
    for negative in (0, 1):
        for positive in (0, 1):
            matches_ort(node("IsInf", detect_negative=negative, detect_positive=positive), [x], 13)
    matches_ort(node("IsNaN"), [x], 13)


@pytest.mark.parametrize("to", [TensorProto.INT32, TensorProto.INT64, TensorProto.UINT8, TensorProto.BOOL,
                                TensorProto.FLOAT16, TensorProto.DOUBLE, TensorProto.INT8])
def test_cast_from_float_truncates_like_c(to):
    x = np.array([-2.7, -0.5, 0.0, 0.5, 2.7, 100.2], dtype=np.float32)
    if to == TensorProto.UINT8:
        x = np.abs(x)  # negative to unsigned is undefined
    matches_ort(node("Cast", to=to), [x], 13)


def test_cast_between_integer_bool_and_float_types():
    ints = np.array([-3, 0, 1, 70000], dtype=np.int64)
    for to in (TensorProto.FLOAT, TensorProto.INT32, TensorProto.BOOL, TensorProto.INT16):
        matches_ort(node("Cast", to=to), [ints], 13)
    matches_ort(node("Cast", to=TensorProto.FLOAT), [np.array([True, False])], 13)
    # Cast-1 names the type as a string
    assert_same(run(node("Cast", to="INT32"), [np.array([2.9, -2.9], dtype=np.float32)], 1),
                np.array([2, -2], dtype=np.int32))
    matches_ort(node("CastLike", 2), [np.array([1.9, -1.9], dtype=np.float32), np.array([0], dtype=np.int8)], 15)


# --------------------------------------------------------------------------------------------------------------
# Activations


@pytest.mark.parametrize(
    ("op_type", "attrs", "opset"),
    [("LeakyRelu", {"alpha": 0.1}, 13), ("LeakyRelu", {"alpha": 3.0}, 13), ("Elu", {"alpha": 0.7}, 13),
     ("Selu", {}, 13), ("Selu", {"alpha": 2.0, "gamma": 3.0}, 13), ("Celu", {"alpha": 2.0}, 13),
     ("HardSigmoid", {"alpha": 0.3, "beta": 0.4}, 13), ("HardSwish", {}, 14), ("ThresholdedRelu", {"alpha": 0.5}, 13),
     ("Shrink", {"bias": 0.2, "lambd": 1.0}, 13), ("Gelu", {}, 20), ("Gelu", {"approximate": "tanh"}, 20),
     ("Softplus", {}, 13), ("Sigmoid", {}, 13), ("Mish", {}, 18)],
)
def test_activations_match_onnxruntime_including_extremes(op_type, attrs, opset):
    x = np.concatenate([floats(50), np.array([-1000, -100, -30, -0.0, 0, 30, 100, 1000], dtype=np.float32)])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow on the way either
        have = run(node(op_type, **attrs), [x], opset)
    assert_same(have, run_ort(node(op_type, **attrs), [x], opset), rtol=1e-5, atol=1e-6)


def test_sigmoid_tails_are_exact():
    x = np.array([-100.0, -50.0, 50.0, 100.0], dtype=np.float64)
    have = run(node("Sigmoid"), [x], 13)
    np.testing.assert_allclose(have, [math.exp(-100.0), math.exp(-50.0), 1.0, 1.0], rtol=1e-14)


def test_prelu_slope_broadcasts_per_channel():
    x = floats(2, 3, 4, 5)
    slope = np.array([0.1, 0.2, 0.3], dtype=np.float32)
    want = np.where(x < 0, x * slope[:, None, None], x)
    assert_same(run(node("PRelu", 2), [x, slope], 6), want)  # the pre-opset-7 per-channel rule
    assert_same(run(node("PRelu", 2), [x, slope], 9), want)  # what old exporters still write
    full_slope = floats(3, 1, 1)
    matches_ort(node("PRelu", 2), [x, full_slope], 9)
    matches_ort(node("PRelu", 2), [x, floats(5)], 16)  # a 1-D slope matching the last axis stays there


def test_clip_attribute_form():
    x = floats(4, 6)
    assert_same(run(node("Clip", min=-1.0, max=2.0), [x], 6), np.minimum(np.maximum(x, -1), 2).astype(np.float32))
    matches_ort(node("Clip", min=-1.0, max=2.0), [x], 6)
    matches_ort(node("Clip", min=-0.5), [x], 6)  # an absent bound is no bound


def test_clip_bounds_that_are_not_scalars_are_refused_at_load():
    # (found by tools/fuzz_models.py: "cannot reshape array of size 2 into shape ()" was all the message said)
    x = floats(4, 6)
    with pytest.raises(ModelError, match=r"'bound' \(Clip\): min must be a scalar; it has shape \[2\]"):
        low, high = np.array([-1.0, 0.0], np.float32), np.array(2.0, np.float32)
        run(node("Clip", 3, name="bound"), [x, low, high], 13, (1, 2))
    # a one-value tensor of shape [1], as some exporters write the bound, is taken
    got = run(node("Clip", 3), [x, np.array([-1.0], np.float32), np.array([2.0], np.float32)], 13, (1, 2))
    assert_same(got, np.clip(x, -1, 2).astype(np.float32))


@pytest.mark.parametrize("constant", [False, True])
def test_clip_input_form(constant):
    x = floats(4, 6)
    low, high = np.array(-1.0, dtype=np.float32), np.array(2.0, dtype=np.float32)
    consts = (1, 2) if constant else ()
    assert_same(run(node("Clip", 3), [x, low, high], 13, consts), np.clip(x, -1.0, 2.0).astype(np.float32))
    matches_ort(node("Clip", 3), [x, low, high], 13)
    only_high = node("Clip", ["in0", "", "in2"])
    assert_same(run(only_high, [x, None, high], 13, consts), np.minimum(x, np.float32(2.0)))
    matches_ort(only_high, [x, None, high], 13)
    # min above max: everything becomes max
    assert_same(run(node("Clip", 3), [x, high, low], 13, consts), np.full_like(x, -1.0))
    ints = np.arange(-5, 5, dtype=np.int32)
    matches_ort(node("Clip", 3), [ints, np.array(-2, dtype=np.int32), np.array(3, dtype=np.int32)], 13)


@pytest.mark.parametrize("op_type", ["Softmax", "LogSoftmax", "Hardmax"])
@pytest.mark.parametrize(("opset", "attrs"), [(11, {}), (11, {"axis": 2}), (11, {"axis": 0}), (13, {}),
                                              (13, {"axis": 1}), (13, {"axis": -3})])
def test_normalizers_in_both_axis_semantics(op_type, opset, attrs):
    x = floats(2, 3, 4)
    x[0, 1, 2] = x[0, 1, 3] = 10.0  # a tie: Hardmax takes the first
    matches_ort(node(op_type, **attrs), [x], opset)


def test_softmax_semantics_differ_before_and_after_opset_13():
    x = floats(2, 3, 4)
    flattened = np.exp(x) / np.exp(x).sum(axis=(1, 2), keepdims=True)
    per_axis = np.exp(x) / np.exp(x).sum(axis=1, keepdims=True)
    assert_same(run(node("Softmax", axis=1), [x], 11), flattened, rtol=1e-5)
    assert_same(run(node("Softmax", axis=1), [x], 13), per_axis, rtol=1e-5)


def test_log_softmax_is_exact_at_extreme_logits():
    logits = np.array([[0.0, -145.0, -1000.0, -90.0], [1000.0, 0.0, 999.0, -3.4e38]], dtype=np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        have = run(node("LogSoftmax", axis=1), [logits], 13)
    assert np.isfinite(have).all()
    want = logits.astype(np.float64) - logits.max(axis=1, keepdims=True)
    want -= np.log(np.exp(want).sum(axis=1, keepdims=True))
    assert_same(have, want.astype(np.float32), rtol=1e-6, atol=0)
    matches_ort(node("LogSoftmax", axis=1), [logits], 13, rtol=1e-6, atol=0)
    softmax = run(node("Softmax", axis=1), [logits], 13)
    np.testing.assert_allclose(softmax.sum(axis=1), 1.0, rtol=1e-6)


@pytest.mark.parametrize(("opset", "shape", "axis"), [(13, (1, 10_000), -1), (11, (1, 100, 100), 1)])
def test_softmax_over_many_large_logits_sums_to_one(opset, shape, axis):
    # each exponential is finite (e^80 < float32's max) but ten thousand of them are not: skipping the shift by
    # the maximum there would divide by inf and give zeros
    logits = np.random.default_rng(3).uniform(79.0, 80.0, shape).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        have = run(node("Softmax", axis=axis), [logits], opset)
    np.testing.assert_allclose(have.reshape(shape[0], -1).sum(axis=1), 1.0, rtol=1e-4)
    matches_ort(node("Softmax", axis=axis), [logits], opset)


# --------------------------------------------------------------------------------------------------------------
# Reductions

REDUCTIONS = ["ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2",
              "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare"]


def axes_input_opset(op_type: str) -> int:
    return 13 if op_type == "ReduceSum" else 18


@pytest.mark.parametrize("op_type", REDUCTIONS)
@pytest.mark.parametrize("keepdims", [0, 1])
@pytest.mark.parametrize("axes", [[1], [0, -1], []])
def test_reductions_axes_attribute_and_input_agree_with_onnxruntime(op_type, keepdims, axes):
    x = np.abs(floats(3, 4, 5, scale=1.0)) + 0.5  # positive, so the log reductions are defined
    attr_opset = 11  # axes attribute
    by_attribute = node(op_type, axes=axes, keepdims=keepdims) if axes else node(op_type, keepdims=keepdims)
    matches_ort(by_attribute, [x], attr_opset, rtol=1e-5)
    from_attribute = run(by_attribute, [x], attr_opset)

    opset = axes_input_opset(op_type)
    axes_array = np.array(axes, dtype=np.int64)
    by_input = node(op_type, 2, keepdims=keepdims)
    matches_ort(by_input, [x, axes_array], opset, rtol=1e-5)
    assert_same(run(by_input, [x, axes_array], opset, constant_inputs=[1]), from_attribute)
    omitted = node(op_type, ["in0"], keepdims=keepdims)
    if not axes:  # an omitted axes input reduces everything too
        assert_same(run(omitted, [x], opset), from_attribute)


@pytest.mark.parametrize("op_type", REDUCTIONS)
def test_reductions_noop_with_empty_axes(op_type):
    x = floats(3, 4)
    opset = axes_input_opset(op_type)
    proto = node(op_type, 2, noop_with_empty_axes=1)
    assert_same(run(proto, [x, np.array([], dtype=np.int64)], opset), x)
    reduced = run(node(op_type, ["in0"], noop_with_empty_axes=0, keepdims=0), [np.abs(x)], opset)
    assert reduced.shape == ()


@pytest.mark.parametrize("op_type", ["ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd",
                                     "ReduceSumSquare"])
@pytest.mark.parametrize("dtype", [np.int32, np.int64])
def test_integer_reductions_keep_their_type(op_type, dtype):
    x = rng.integers(-9, 9, size=(3, 4)).astype(dtype)
    matches_ort(node(op_type, axes=[1], keepdims=0), [x], 11)


def test_reduce_log_sum_exp_is_stable():
    x = np.array([[1000.0, 1000.0, -np.inf], [-np.inf, -np.inf, -np.inf]], dtype=np.float32)
    have = run(node("ReduceLogSumExp", axes=[1], keepdims=0), [x], 13)
    assert_same(have, np.array([1000.0 + math.log(2.0), -np.inf], dtype=np.float32))


def test_reduce_max_of_empty_set_is_the_identity():
    empty = np.zeros((2, 0, 3), dtype=np.float32)
    have = run(node("ReduceMax", 2, keepdims=1), [empty, np.array([1], dtype=np.int64)], 18)
    assert_same(have, np.full((2, 1, 3), -np.inf, dtype=np.float32))
    have = run(node("ReduceSum", 2, keepdims=0), [empty, np.array([1], dtype=np.int64)], 13)
    assert_same(have, np.zeros((2, 3), dtype=np.float32))


@pytest.mark.parametrize("op_type", ["ArgMax", "ArgMin"])
@pytest.mark.parametrize("attrs", [{}, {"axis": 1}, {"axis": -1, "keepdims": 0}, {"axis": 1, "select_last_index": 1},
                                   {"axis": 0, "keepdims": 0, "select_last_index": 1}])
def test_arg_reductions_return_int64_and_handle_ties(op_type, attrs):
    x = rng.integers(0, 3, size=(4, 5)).astype(np.float32)  # many ties
    have = run(node(op_type, **attrs), [x], 13)
    assert have.dtype == np.int64
    matches_ort(node(op_type, **attrs), [x], 13)


def kernel(op_type: str, opset: int, **attrs):
    """One kernel instance, to check that what it caches between runs does not leak from one input to the next."""
    load_all_kernels()
    spec = NodeSpec(op_type=op_type, inputs=["in0"], outputs=["out"], attrs=attrs, opset=opset, consts=[None])
    return resolve(op_type, opset)(spec)


def test_kernels_reused_on_other_types_and_ranks():
    relu = kernel("Relu", 13)
    for x in (floats(3, 4), floats(5, dtype=np.float16), np.arange(-3, 3, dtype=np.int8), floats(2, dtype=float)):
        assert_same(relu.run(x), np.where(x > 0, x, 0).astype(x.dtype))
    softmax, reduce_sum = kernel("Softmax", 11, axis=1), kernel("ReduceSum", 11, axes=[-1], keepdims=0)
    for x in (floats(2, 3), floats(2, 3, 4), floats(4, 5)):
        want = np.exp(x) / np.exp(x).sum(axis=tuple(range(1, x.ndim)), keepdims=True)
        assert_same(softmax.run(x), want, rtol=1e-5)
        assert_same(reduce_sum.run(x), x.sum(axis=-1), rtol=1e-5)


# --------------------------------------------------------------------------------------------------------------
# ONNX's own conformance cases

ELEMENTWISE_OPS = {
    "Add", "Sub", "Mul", "Div", "Pow", "Sqrt", "Exp", "Log", "Neg", "Abs", "Reciprocal", "Erf", "Floor", "Ceil",
    "Round", "Sign", "Sin", "Cos", "Tan", "Asin", "Acos", "Atan", "Sinh", "Cosh", "Asinh", "Acosh", "Atanh", "Sum",
    "Max", "Min", "Mean", "Mod", "Equal", "Less", "LessOrEqual", "Greater", "GreaterOrEqual", "Where", "Not", "And",
    "Or", "Xor", "IsNaN", "IsInf", "BitShift", "BitwiseAnd", "BitwiseOr", "BitwiseXor", "BitwiseNot", "Cast",
    "CastLike",
}
ACTIVATION_OPS = {
    "Relu", "LeakyRelu", "PRelu", "Sigmoid", "Tanh", "Elu", "Selu", "Celu", "HardSigmoid", "HardSwish", "Softplus",
    "Softsign", "ThresholdedRelu", "Mish", "Clip", "Gelu", "Softmax", "LogSoftmax", "Hardmax", "Shrink",
}
REDUCE_OPS = set(REDUCTIONS) | {"ArgMax", "ArgMin"}
MATH_OPS = ELEMENTWISE_OPS | ACTIVATION_OPS | REDUCE_OPS

# Conformance cases expected to fail, each with its reason. Empty: every single-node case in plain numeric types
# passes. (Cases with string, bfloat16 or float8 tensors are not selected by cases_for at all.)
KNOWN_FAILURES: dict[str, str] = {}

SINGLE_NODE_CASES = [case for case in cases_for(MATH_OPS, 10**6) if len(case.model.graph.node) == 1]


def test_conformance_cases_cover_every_math_op():
    load_all_kernels()
    covered = {case.model.graph.node[0].op_type for case in SINGLE_NODE_CASES}
    assert len(SINGLE_NODE_CASES) > 400
    assert {"Add", "Cast", "Softmax", "LogSoftmax", "Clip", "ReduceSum", "ArgMax", "Erf"} <= covered


@pytest.mark.parametrize("case", SINGLE_NODE_CASES, ids=lambda case: case.name)
def test_onnx_conformance_case(case):
    if case.name in KNOWN_FAILURES:
        pytest.xfail(KNOWN_FAILURES[case.name])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # some cases divide by zero or take log(0) on purpose
        check_case_with_kernels(case)
