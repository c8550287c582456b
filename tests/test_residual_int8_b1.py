"""A QLinearConv whose uint8 codes only a residual sum's pair table reads, run as one step with the lookup
(nn_core/ops/residual_int8.py): the pair index made from the convolution's sums. Held bit-exact to the plan
without the step (the convolution's codes, then the lookup) and to the unfused graph."""

import numpy as np
import pytest
from test_int8_lookup import QDQ, assert_exact, zero_points

import nn_core
from nn_core import plan
from nn_core.ops.residual_int8 import ConvPairLookup

rng = np.random.default_rng(17)


def _residual(dtype: type, op: str, conv_first: bool, zero_point_shift: int = 0, float_out: bool = False):
    """x -> Q/DQ -> Conv -> Relu -> Q (a) -> DQ -> Conv -> Q/DQ (c); DQ(a) and DQ(c) -> ``op`` (c first or second)
    -> Relu -> Q/DQ (or read as float by a GlobalAveragePool)."""
    low, odd = zero_points(dtype)
    b = QDQ(dtype)
    _, x = b.qdq("x", 0.02, odd)
    a = b.node("Relu", [b.conv(x, 0.02, 3)])
    qa, a_dq = b.qdq(a, 0.04, low)
    c = b.conv(a_dq, 0.04, 3)
    _, c_dq = b.qdq(c, 0.05, odd + zero_point_shift)
    a_again = b.node("DequantizeLinear", [qa, b.const(np.array(0.04, np.float32)), b.const(np.array(low, dtype))])
    total = b.node("Relu", [b.node(op, [c_dq, a_again] if conv_first else [a_again, c_dq])])
    if float_out:
        return b.model(b.node("GlobalAveragePool", [total]))
    _, y = b.qdq(total, 0.06, low)
    return b.model(y)


def _pair_steps(model: nn_core.Model) -> list[ConvPairLookup]:
    return [s.kernel for s in model._fast_plan().steps if isinstance(s.kernel, ConvPairLookup)]


def _check_against_the_plan_without(proto) -> nn_core.Model:
    ours = assert_exact(proto, rounds=2, onnxruntime=False)  # (onnxruntime runs the sum as QLinearAdd)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(plan, "fuse_conv_pair_lookups", lambda steps, outputs: steps)
        without = nn_core.load_proto(proto)
    assert not _pair_steps(without)
    for batch in (1, 3):
        for scale in (0.05, 1.0, 30.0):
            x = (rng.standard_normal((batch, 3, 8, 8)) * scale).astype(np.float32)
            np.testing.assert_array_equal(ours.run({"x": x})["y"], without.run({"x": x})["y"])
    return ours


@pytest.mark.parametrize("op", ["Add", "Sub"])
@pytest.mark.parametrize("conv_first", [False, True])
@pytest.mark.parametrize("zero_point_shift", [0, 1])  # the convolution's output zero point even and odd
def test_convolution_and_pair_lookup_are_one_step(op, conv_first, zero_point_shift):
    ours = _check_against_the_plan_without(_residual(np.uint8, op, conv_first, zero_point_shift))
    assert [k.conv_is_first for k in _pair_steps(ours)] == [conv_first]
    assert "QLinearConv+QLinearLookup" in ours.plan_ops, ours.plan_ops


def test_float_pair_table():
    ours = _check_against_the_plan_without(_residual(np.uint8, "Add", False, float_out=True))
    assert _pair_steps(ours)[0].table.dtype == np.float32


def test_int8_codes_keep_the_two_steps():
    """An int8 code's byte is not its value plus a constant: the convolution and the lookup stay apart."""
    ours = assert_exact(_residual(np.int8, "Add", False), rounds=1, onnxruntime=False)
    assert not _pair_steps(ours)


def test_other_codes_of_another_shape_run_the_two_kernels():
    model = nn_core.load_proto(_residual(np.uint8, "Add", False))
    step = next(s for s in model._fast_plan().steps if isinstance(s.kernel, ConvPairLookup))
    kernel = step.kernel
    x = rng.integers(0, 256, (1, 3, 8, 8)).astype(np.uint8)
    other = rng.integers(0, 256, (1, 1, 8, 8)).astype(np.uint8)  # broadcast along the channels
    codes = kernel.conv.run(x, *kernel.conv_parameters)
    np.testing.assert_array_equal(kernel.run(x, other), kernel.lookup.run(other, codes, kernel.table))
