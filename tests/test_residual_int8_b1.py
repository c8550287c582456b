"""A QLinearConv whose uint8 codes only a residual sum's pair table reads, run as one step with the lookup
(nn_core/ops/residual_int8.py): the pair index made from the convolution's sums. Held bit-exact to the plan
without the step (the convolution's codes, then the lookup) and to the unfused graph."""

import numpy as np
import pytest
from test_int8_lookup import assert_exact, residual_block

import nn_core
from nn_core import plan
from nn_core.ops.residual_int8 import ConvPairLookup

rng = np.random.default_rng(17)


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
    ours = _check_against_the_plan_without(residual_block(np.uint8, op, conv_first, zero_point_shift))
    assert [k.conv_is_first for k in _pair_steps(ours)] == [conv_first]
    assert "QLinearConv+QLinearLookup" in ours.plan_ops, ours.plan_ops


def test_float_pair_table():
    ours = _check_against_the_plan_without(residual_block(np.uint8, "Add", False, float_out=True))
    assert _pair_steps(ours)[0].table.dtype == np.float32


def test_int8_codes_keep_the_two_steps():
    """An int8 code's byte is not its value plus a constant: the convolution and the lookup stay apart."""
    ours = assert_exact(residual_block(np.int8, "Add", False), rounds=1, onnxruntime=False)
    assert not _pair_steps(ours)


def test_other_codes_of_another_shape_run_the_two_kernels():
    model = nn_core.load_proto(residual_block(np.uint8, "Add", False))
    step = next(s for s in model._fast_plan().steps if isinstance(s.kernel, ConvPairLookup))
    kernel = step.kernel
    x = rng.integers(0, 256, (1, 3, 8, 8)).astype(np.uint8)
    other = rng.integers(0, 256, (1, 1, 8, 8)).astype(np.uint8)  # broadcast along the channels
    codes = kernel.conv.run(x, *kernel.conv_parameters)
    np.testing.assert_array_equal(kernel.run(x, other), kernel.lookup.run(other, codes, kernel.table))
