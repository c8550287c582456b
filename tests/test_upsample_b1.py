"""Batch-1 kernels of the upsampling models (issue 10): the 1x1 convolution of a one-image NCHW input (batch1.py's
ChannelsLastPointwisePlan, a 2-D dot) against the general pointwise kernel."""

from __future__ import annotations

import numpy as np
import pytest

# (input shape, output channels): one input channel (the skip branch of upsample_l13), odd sizes, 1x1 images,
# batches of 2 and 3 (the stacked matmul)
POINTWISE_CASES = [((1, 1, 28, 28), 4), ((1, 1, 7, 5), 3), ((1, 3, 9, 11), 6), ((1, 5, 1, 1), 2),
                   ((2, 1, 6, 5), 4), ((3, 4, 5, 3), 7)]


@pytest.mark.parametrize("case", POINTWISE_CASES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_pointwise_nchw_input_matches_the_general_kernel(case, dtype):
    from nn_core.ops.batch1 import ChannelsLastPointwisePlan
    from nn_core.ops.conv import _PointwisePlan, make_activation

    shape, out = case
    rng = np.random.default_rng(sum(shape) + out)
    x = rng.standard_normal(shape).astype(dtype)
    w = rng.standard_normal((out, shape[1], 1, 1)).astype(dtype)
    tolerance = 1e-5 if dtype == np.float32 else 1e-12
    for bias in (None, rng.standard_normal(out).astype(dtype)):
        for act in (None, make_activation("relu", {})):
            general, plan = _PointwisePlan(shape, out, bias is not None), \
                ChannelsLastPointwisePlan(shape, out, bias is not None)
            want = general.run(x, general.prepare(w, bias, 1), act)
            run = plan.runner(plan.prepare(w, bias, 1), act)
            got = run(x)
            assert got.shape == want.shape and got.dtype == want.dtype and got.flags.c_contiguous
            np.testing.assert_allclose(got, want, rtol=tolerance, atol=tolerance)
            # the output is the caller's: the next call leaves it as it was
            kept = got.copy()
            np.testing.assert_allclose(run(-x), general.run(-x, general.prepare(w, bias, 1), act), rtol=tolerance,
                                       atol=tolerance)
            np.testing.assert_array_equal(got, kept)
