"""Issue 10, ImageNet-size stems at batch 1 (ResNet-50's 7x7/2 convolution of 3 channels with a 3x3/2 MaxPool): a
channels-last convolution whose one image goes in blocks of output rows makes and pools its product a band of rows
at a time (conv._BandedPool), each row's columns made in the pooling's column phases (even columns, then odd) so
the pooling's column pass reads contiguous runs. Against the same kernel pooling the whole product (bit for bit),
the phase-split pooling against the plain one, and onnxruntime."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import build_kernel, make_model, tensor_info
from onnx import helper
from test_banded_pool_b1 import assert_banded_stem, pooled_conv, runners

# MaxPool attributes: ResNet's (two phases), ceil_mode, side by side, unpadded over an odd width (one phase),
# stride 1 (one phase), stride 3 (three phases where the width allows), a dilated window
POOLS = [{"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]},
         {"kernel_shape": [3, 3], "strides": [2, 2], "ceil_mode": 1},
         {"kernel_shape": [2, 2], "strides": [2, 2]},
         {"kernel_shape": [3, 3], "strides": [2, 2]},
         {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]},
         {"kernel_shape": [3, 4], "strides": [3, 3], "pads": [0, 1, 2, 2]},
         {"kernel_shape": [2, 3], "strides": [1, 2], "pads": [0, 1, 1, 0], "dilations": [2, 1]}]

# (input height and width, kernel size, convolution attributes): a 7x7/2 stem of an even output width (30), an
# odd one (29), and a 6x6/1 one of width 24 (phases of 2 and 3)
STEMS = [((60, 60), 7, {"strides": [2, 2], "pads": [3, 3, 3, 3]}),
         ((59, 58), 7, {"strides": [2, 2], "pads": [3, 2, 2, 3]}),
         ((31, 24), 6, {"pads": [2, 3, 3, 2]})]


def _unfused(x, args, conv_attrs, pool_attrs, act) -> np.ndarray:
    """The general kernels one after another: Conv, its activation, MaxPool."""
    inputs = ["x", "w", "b"][: 1 + len(args)]
    conv_kernel = build_kernel(helper.make_node("Conv", inputs, ["y"], **conv_attrs), [x, *args], (1, 2))
    y = conv_kernel.run(x, *args)
    if act:
        y = np.maximum(y, 0)
    return build_kernel(helper.make_node("MaxPool", ["c"], ["p"], **pool_attrs), [y], ()).run(y)


def _blocked_and_banded(patch) -> None:
    """Blocks of two or three output rows, every product banded."""
    from nn_core.ops import conv

    patch.setattr(conv, "BLOCK_BYTES", 3 * 30 * 148 * 4)
    patch.setattr(conv, "BANDED_POOL_BYTES", 0)


@pytest.mark.parametrize("size, kernel_size, conv_attrs", STEMS)
@pytest.mark.parametrize("pool_attrs", POOLS)
def test_blocked_banded_stem_equals_pooling_the_whole_product(size, kernel_size, conv_attrs, pool_attrs, monkeypatch):
    """The blocked channels-last plan's banded runner gives the values of the same plan pooling its whole product,
    bit for bit, with and without bias and ReLU, a NaN included; twice (the runner made on the first call is what
    the second runs); the output is channels-last; a batch of two takes the chunked path and agrees too."""
    from nn_core.ops import conv

    rng = np.random.default_rng(len(str((size, pool_attrs))))
    x = rng.standard_normal((1, 3, *size)).astype(np.float32)
    x[0, 2, 9, 11] = np.nan
    w = rng.standard_normal((16, 3, kernel_size, kernel_size)).astype(np.float32)
    b = rng.standard_normal(16).astype(np.float32)
    for bias in (b, None):
        for act in (None, ("relu", {})):
            args = (w, b) if bias is not None else (w,)
            context = str((size, pool_attrs, bias is None, act))
            with monkeypatch.context() as patch:
                _blocked_and_banded(patch)
                patch.setattr(conv, "_banded_pooling", lambda *_: None)
                whole = pooled_conv(x, w, bias, conv_attrs, pool_attrs, act)
                want = whole.run(x, *args)
                assert runners(whole) == {"run_pooled"}, context
            with monkeypatch.context() as patch:
                _blocked_and_banded(patch)
                banded = pooled_conv(x, w, bias, conv_attrs, pool_attrs, act)
                for _ in range(2):
                    got = banded.run(x, *args)
                    np.testing.assert_array_equal(got, want, err_msg=context)
                    assert got.strides[1] == got.itemsize  # channels-last
                assert runners(banded) == {"run_banded"}, context
                (plan, _), = banded.plans.values()
                assert isinstance(plan, conv._ChannelsLastPlan) and plan.block_rows < plan.out_sizes[0]
                pair = np.concatenate([x, x[:, :, ::-1]])
                np.testing.assert_array_equal(banded.run(pair, *args), whole.run(pair, *args), err_msg=context)


def test_column_phases_follow_the_pooling_stride():
    """As many phases as the pooling's column stride, one where the stride is wider than the product."""
    from nn_core.ops import conv

    x = np.zeros((1, 3, 8, 8), np.float32)
    for attrs, width, phases in [(POOLS[0], 30, 2), (POOLS[0], 29, 2), (POOLS[4], 30, 1), (POOLS[5], 24, 3),
                                 (POOLS[5], 25, 3), (POOLS[5], 2, 1)]:
        pool = build_kernel(helper.make_node("MaxPool", ["c"], ["p"], **attrs), [x], ())
        assert conv._column_phases(pool, np.zeros((1, 4, 9, width), np.float32)) == phases, (attrs, width)


@pytest.mark.parametrize("width", [24, 23, 25])
@pytest.mark.parametrize("pool_attrs", [POOLS[0], POOLS[1], POOLS[3], POOLS[5]])
def test_phased_pooling_equals_plain_pooling(pool_attrs, width):
    """_ChannelsLastPool over columns stored phase by phase (phases of unequal lengths where the stride does not
    divide the width) gives the plain pooling of the same values; a column stride other than the phases is
    refused."""
    from nn_core.ops import conv

    rng = np.random.default_rng(3)
    source = rng.standard_normal((1, 11, width, 5)).astype(np.float32)  # (image, row, column, channel)
    stride = pool_attrs["strides"][1]
    phased = np.concatenate([source[:, :, phase::stride] for phase in range(stride)], axis=2)
    pool = build_kernel(helper.make_node("MaxPool", ["c"], ["p"], **pool_attrs), [source], ())
    nchw = source.transpose(0, 3, 1, 2)
    plan = pool.plan(nchw)
    want = conv._ChannelsLastPool(plan, nchw.shape)(nchw)
    got = conv._ChannelsLastPool(plan, nchw.shape, phases=stride)(phased.transpose(0, 3, 1, 2))
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(got, pool.run(np.ascontiguousarray(nchw)))
    with pytest.raises(ValueError):
        conv._ChannelsLastPool(plan, nchw.shape, phases=stride + 1)


def test_banded_stem_output_is_fresh_each_run(monkeypatch):
    """The band and column buffers are reused by every call; the output handed out is not."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((1, 3, 60, 60)).astype(np.float32)
    w = rng.standard_normal((16, 3, 7, 7)).astype(np.float32)
    _blocked_and_banded(monkeypatch)
    kernel = pooled_conv(x, w, None, STEMS[0][2], POOLS[0], ("relu", {}))
    first = kernel.run(x, w)
    kept = first.copy()
    kernel.run(-x, w)
    assert runners(kernel) == {"run_banded"}
    np.testing.assert_array_equal(first, kept)


def test_resnet_stem_runs_in_phased_bands_and_matches_onnxruntime():
    """ResNet-50's stem at 224x224 (3 -> 64 channels, 7x7/2, BatchNormalization, ReLU, 3x3/2 MaxPool: a 3.2 MB
    product) takes the banded runner in the fast plan, with onnxruntime's values."""
    rng = np.random.default_rng(2)
    w = (rng.standard_normal((64, 3, 7, 7)) * 0.1).astype(np.float32)
    scale, shift, mean = (rng.random(64) + 0.5).astype(np.float32), rng.standard_normal(64).astype(np.float32), \
        (rng.standard_normal(64) * 0.1).astype(np.float32)
    var = (rng.random(64) + 0.5).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], strides=[2, 2], pads=[3, 3, 3, 3]),
             helper.make_node("BatchNormalization", ["c", "s", "h", "m", "v"], ["n"]),
             helper.make_node("Relu", ["n"], ["r"]),
             helper.make_node("MaxPool", ["r"], ["y"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])]
    model = make_model(nodes, [tensor_info("x", [1, 3, 224, 224])], [tensor_info("y", None)],
                       {"w": w, "s": scale, "h": shift, "m": mean, "v": var})
    assert_banded_stem(model, rng.standard_normal((1, 3, 224, 224)).astype(np.float32),
                       "Conv+BatchNormalization+Relu+MaxPool", 1e-4)


# (input height and width, pooling): ShuffleNet's stem (3x3/2 convolution, padded 3x3/2 MaxPool: a product small
# enough to be pooled whole) at even and odd output widths, a 3x3/2 MaxPool without padding (SqueezeNet's) and a
# stride 1 one (no phases)
IM2COL_STEMS = [((40, 40), POOLS[0]), ((41, 37), POOLS[0]), ((39, 44), POOLS[3]), ((39, 44), POOLS[1]),
                ((30, 29), POOLS[4])]


@pytest.mark.parametrize("banded", [False, True])
@pytest.mark.parametrize("size, pool_attrs", IM2COL_STEMS)
def test_phased_im2col_stem_equals_the_plain_one(size, pool_attrs, banded, monkeypatch):
    """A convolution of few channels (NCHW columns) made channels-last and (``banded``) made and pooled a band of
    rows at a time from band columns of its own, each row's positions in the pooling's column phases, gives the
    values of the same plan without phases, bit for bit, with and without bias and ReLU, a NaN included, twice;
    a batch of two agrees too; the plain plan agrees with the general kernels run one after another. A product
    pooled whole (not ``banded``) takes the plain runner, its pooling's views made once."""
    from nn_core.ops import conv

    rng = np.random.default_rng(len(str((size, pool_attrs))))
    x = rng.standard_normal((1, 3, *size)).astype(np.float32)
    x[0, 0, 7, 5] = np.nan
    w = rng.standard_normal((24, 3, 3, 3)).astype(np.float32)
    b = rng.standard_normal(24).astype(np.float32)
    conv_attrs = {"strides": [2, 2], "pads": [1, 1, 1, 1]}
    if banded:  # bands of one to a few pooled rows
        monkeypatch.setattr(conv, "BANDED_POOL_BYTES", 0)
        monkeypatch.setattr(conv, "BLOCK_BYTES", 3 * 22 * 24 * 4)
    for bias in (b, None):
        for act in (None, ("relu", {})):
            args = (w, b) if bias is not None else (w,)
            context = str((size, pool_attrs, bias is None, act))
            with monkeypatch.context() as patch:
                patch.setattr(conv, "_column_phases", lambda *_: 1)
                plain = pooled_conv(x, w, bias, conv_attrs, pool_attrs, act)
                want = plain.run(x, *args)
            np.testing.assert_allclose(want, _unfused(x, args, conv_attrs, pool_attrs, act), rtol=1e-5, atol=1e-5,
                                       err_msg=context)
            phased = pooled_conv(x, w, bias, conv_attrs, pool_attrs, act)
            for _ in range(2):
                got = phased.run(x, *args)
                np.testing.assert_array_equal(got, want, err_msg=context)
            (plan, _), = phased.plans.values()
            assert isinstance(plan, conv._Im2colPlan), context
            assert runners(phased) == {"run_banded" if banded else "run_pooled"}, context
            pair = np.concatenate([x, -x])
            np.testing.assert_array_equal(phased.run(pair, *args), plain.run(pair, *args), err_msg=context)
            kept = got.copy()  # the output of a runner whose buffers the next call reuses is not overwritten
            phased.run(-x, *args)
            np.testing.assert_array_equal(got, kept, err_msg=context)


@pytest.mark.parametrize("pool_attrs", [*POOLS, {"kernel_shape": [1, 1]},
                                        {"kernel_shape": [1, 3], "pads": [0, 1, 0, 1]}])
def test_bound_pooling_equals_the_pooling(pool_attrs):
    """_ChannelsLastPool.bound (every view made once over a fixed source, the passes before the last in shared
    scratch buffers) writes what __call__ returns, twice, after the source changed in place; no pass at all (a
    1x1 window) is a copy."""
    from nn_core.ops import conv

    rng = np.random.default_rng(4)
    storage = rng.standard_normal((1, 13, 22, 5)).astype(np.float32)  # (image, row, column, channel)
    source = storage.transpose(0, 3, 1, 2)
    pool = build_kernel(helper.make_node("MaxPool", ["c"], ["p"], **pool_attrs), [source], ())
    separable = conv._ChannelsLastPool(pool.plan(source), source.shape)
    scratch = [np.full(size, np.nan, np.float32) for size in separable.intermediate_sizes()]
    run = separable.bound(source, scratch)
    for _ in range(2):
        want = separable(source)
        got = np.empty(want.transpose(0, 2, 3, 1).shape, np.float32)
        run(got)
        np.testing.assert_array_equal(got.transpose(0, 3, 1, 2), want)
        storage *= -1
