"""Issue 10, ImageNet-size stems at batch 1: a convolution of few input channels (NCHW columns) with a fused
MaxPool and a channels-last product larger than conv.BANDED_POOL_BYTES makes and pools its product a band of rows
at a time (conv._BandedPool). Against the same kernel pooling the whole product, and onnxruntime."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import build_kernel, make_model, ort_run, tensor_info
from onnx import helper

import nn_core

# MaxPool attributes: padded, ceil_mode, dilated and uneven, side by side, unpadded, stride 1 (bands overlap by
# two rows), a window taller than a band
POOLS = [{"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]},
         {"kernel_shape": [3, 3], "strides": [2, 2], "ceil_mode": 1},
         {"kernel_shape": [2, 3], "strides": [1, 2], "pads": [0, 1, 1, 0], "dilations": [2, 1]},
         {"kernel_shape": [2, 2], "strides": [2, 2]},
         {"kernel_shape": [3, 3], "strides": [2, 2]},
         {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]},
         {"kernel_shape": [5, 2], "strides": [1, 1], "pads": [2, 0, 2, 1]}]


def runners(kernel) -> set[str]:
    """The names of the fast runners a conv kernel made (one per input shape)."""
    return {runner.__name__ for runner in kernel.fast.values()}


#: the convolution attributes of this file's stems
STEM_CONV = {"strides": [2, 2], "pads": [1, 0, 1, 1]}


def pooled_conv(x, w, b, conv_attrs, pool_attrs, act):
    """A channels-last Conv kernel for ``x`` with its MaxPool (and activation ``act``, or none) fused."""
    inputs = ["x", "w", "b"] if b is not None else ["x", "w"]
    kernel = build_kernel(helper.make_node("Conv", inputs, ["y"], **conv_attrs), [x, w, b], (1, 2))
    if act:
        kernel.fuse_activation(*act)
    pool = build_kernel(helper.make_node("MaxPool", ["c"], ["p"], **pool_attrs), [x], ())
    assert kernel.fuse_pool(pool)
    kernel.prefer_channels_last()
    return kernel


@pytest.mark.parametrize("pool_attrs", POOLS)
def test_banded_pooling_equals_pooling_the_whole_product(pool_attrs, monkeypatch):
    """Bands of one to a few pooled rows (BLOCK_BYTES made small) give the values of the whole product's pooling
    bit for bit, with and without bias and ReLU, a NaN included; twice (the runner made on the first call is what
    the second runs); a batch of two takes the chunked path and agrees too."""
    from nn_core.ops import conv

    rng = np.random.default_rng(len(str(pool_attrs)))
    x = rng.standard_normal((1, 3, 41, 37)).astype(np.float32)
    x[0, 1, 17, 20] = np.nan
    w = rng.standard_normal((16, 3, 3, 3)).astype(np.float32)
    b = rng.standard_normal(16).astype(np.float32)
    for bias in (b, None):
        for act in (None, ("relu", {})):
            args = (w, b) if bias is not None else (w,)
            whole = pooled_conv(x, w, bias, STEM_CONV, pool_attrs, act)
            want = whole.run(x, *args)
            assert runners(whole) != {"run_banded"}
            with monkeypatch.context() as small:
                small.setattr(conv, "BANDED_POOL_BYTES", 0)
                small.setattr(conv, "BLOCK_BYTES", 3 * 18 * 16 * 4)  # product rows of 18 x 16 values: 1-3 a band
                banded = pooled_conv(x, w, bias, STEM_CONV, pool_attrs, act)
                for _ in range(2):
                    got = banded.run(x, *args)
                    np.testing.assert_array_equal(got, want, err_msg=str((pool_attrs, bias is None, act)))
                    assert got.strides[1] == got.itemsize  # channels-last
                assert runners(banded) == {"run_banded"}
                pair = np.concatenate([x, x[:, :, ::-1]])
                np.testing.assert_array_equal(banded.run(pair, *args), whole.run(pair, *args))


def test_banded_output_is_fresh_each_run(monkeypatch):
    """The band buffer is reused by every call; the output handed out is not."""
    from nn_core.ops import conv

    rng = np.random.default_rng(1)
    x = rng.standard_normal((1, 3, 41, 37)).astype(np.float32)
    w = rng.standard_normal((16, 3, 3, 3)).astype(np.float32)
    monkeypatch.setattr(conv, "BANDED_POOL_BYTES", 0)
    kernel = pooled_conv(x, w, None, STEM_CONV, POOLS[0], ("relu", {}))
    first = kernel.run(x, w)
    kept = first.copy()
    kernel.run(-x, w)
    np.testing.assert_array_equal(first, kept)


def test_imagenet_stem_runs_in_bands_and_matches_onnxruntime():
    """A SqueezeNet-like stem at 224x224 (3 -> 48 channels, 3x3/2, ReLU, 3x3/2 MaxPool: a 2.4 MB product) takes
    the banded runner in the fast plan, with onnxruntime's values."""
    rng = np.random.default_rng(2)
    w = (rng.standard_normal((48, 3, 3, 3)) * 0.3).astype(np.float32)
    b = (rng.standard_normal(48) * 0.1).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], strides=[2, 2]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("MaxPool", ["r"], ["y"], kernel_shape=[3, 3], strides=[2, 2])]
    model = make_model(nodes, [tensor_info("x", [1, 3, 224, 224])], [tensor_info("y", None)], {"w": w, "b": b})
    assert_banded_stem(model, rng.standard_normal((1, 3, 224, 224)).astype(np.float32), "Conv+Relu+MaxPool", 1e-5)


def assert_banded_stem(model, x: np.ndarray, label: str, tolerance: float) -> None:
    """``model`` (input "x", output "y") is one fast-plan step labelled ``label`` that takes the banded runner,
    and gives onnxruntime's values on ``x`` (twice: the second run reuses the band buffers)."""
    loaded = nn_core.load_proto(model)
    want = ort_run(model, {"x": x})[0]
    for _ in range(2):
        np.testing.assert_allclose(loaded.run({"x": x})["y"], want, rtol=tolerance, atol=tolerance)
    (step,) = loaded._fast_plan().steps
    assert step.label == label
    assert runners(step.kernel) == {"run_banded"}
