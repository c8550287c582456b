"""Batch-1 int8 requantization with a table over channels-last sums (issue 10): _TableRequantizer works the sums
as rows in memory order with its per-channel multiplier and table offsets tiled over a row. Held bit-exact
against the same requantizer on the same sums stored channel-first (the broadcasting passes it used before),
against _Requantizer's codes looked up, and, on a quantized depthwise-separable model, against onnxruntime and
against the plan without the rows."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

import nn_core
from nn_core.ops.quantized import _Requantizer, _TableRequantizer

rng = np.random.default_rng(17)


def channels_last(sums: np.ndarray) -> np.ndarray:
    """A copy of ``sums`` (N, C, H, W) stored channels-last: the layout the depthwise and pointwise plans hand
    out."""
    return sums.transpose(0, 2, 3, 1).copy().transpose(0, 3, 1, 2)


def sums_of(shape: tuple[int, ...]) -> np.ndarray:
    """Integer sums with every half of a small multiplier among them and some far past the 8-bit range."""
    values = np.concatenate([np.arange(-700, 700), rng.integers(-60000, 60000, 3000)])
    return rng.permutation(np.resize(values, int(np.prod(shape)))).astype(np.float32).reshape(shape)


@pytest.mark.parametrize("shape", [(1, 64, 28, 28), (1, 5, 7, 9), (2, 16, 6, 6), (1, 256, 7, 7), (1, 3, 1, 1)])
@pytest.mark.parametrize("per_channel_multiplier", [True, False])
@pytest.mark.parametrize("per_channel_table", [True, False])
@pytest.mark.parametrize("dtype, zero_point", [(np.uint8, 0), (np.uint8, 131), (np.int8, -7), (np.int8, 0)])
def test_channels_last_sums_give_the_channel_first_values(shape, per_channel_multiplier, per_channel_table, dtype,
                                                         zero_point):
    """Rows of the whole output (one row of 315 values for 5 channels of 7x9, rows of 12544 for 64 channels of
    28x28, a batch of 2) give what the same sums stored channel-first give, and _Requantizer's codes looked up;
    the result keeps the channels-last layout, and a second call (the kept rows) gives the same."""
    channels = shape[1]
    multiplier = rng.uniform(0.001, 0.6, channels if per_channel_multiplier else 1).astype(np.float32)
    multiplier[:2] = [0.5, 0.25][: min(2, multiplier.size)]  # products landing on halves
    table = rng.integers(0, 256, (channels, 256) if per_channel_table else (256,)).astype(np.uint8)
    plain = _Requantizer(multiplier, np.array(zero_point, dtype), dtype, 1, 4)
    sums = sums_of(shape)
    codes = plain(sums.copy()).view(np.uint8)
    want = table[np.arange(channels).reshape(1, -1, 1, 1), codes] if per_channel_table else table[codes]
    requant = _TableRequantizer(plain, table, 4)
    np.testing.assert_array_equal(requant(sums.copy()), want)  # (C-contiguous: the broadcasting passes)
    for _ in range(2):
        got = requant(channels_last(sums))
        np.testing.assert_array_equal(got, want)
        assert got.transpose(0, 2, 3, 1).flags.c_contiguous


def test_only_channels_last_layouts_are_worked_as_rows():
    """Channel-first storage, a view with gaps and a per-tensor multiplier with a single table keep the
    broadcasting passes (nothing to tile); a channels-last layout of a per-channel requantizer gets rows."""
    plain = _Requantizer(np.array([0.5, 0.25, 0.1], np.float32), np.array(3, np.uint8), np.uint8, 1, 4)
    requant = _TableRequantizer(plain, rng.integers(0, 256, (3, 256)).astype(np.uint8), 4)
    sums = sums_of((1, 3, 40, 40))
    assert requant._channel_rows(sums) is None
    assert requant._channel_rows(np.zeros((1, 3, 40, 44), np.float32)[..., :40]) is None
    rows = requant._channel_rows(channels_last(sums))
    assert rows is not None and rows[1] == (1, 4800)
    assert requant._channel_rows(np.zeros((0, 40, 40, 3), np.float32).transpose(0, 3, 1, 2)) is None  # (no rows)
    assert requant(np.zeros((0, 40, 40, 3), np.float32).transpose(0, 3, 1, 2)).shape == (0, 3, 40, 40)
    scalar = _TableRequantizer(_Requantizer(np.array(0.5, np.float32), np.array(3, np.uint8), np.uint8, 1, 4),
                               rng.integers(0, 256, 256).astype(np.uint8), 4)
    assert scalar._channel_rows(channels_last(sums)) is None


def separable_model() -> onnx.ModelProto:
    """Conv -> BN -> ReLU, then depthwise (stride 1 and 2) and pointwise blocks, as the benchmark's MobileNet-style
    net, smaller: the depthwise and pointwise convolutions of 16 and 32 channels run channels-last."""
    from nn_core.builder import GraphBuilder

    b = GraphBuilder(input=("input", [None, 1, 15, 15]), seed=3, name="separable")
    x = b.relu(b.batch_norm(b.conv(b.input, 16, 3, pads=1, bias=False)))
    for out, stride in ((16, 1), (32, 2), (32, 1)):
        c = b.shape(x)[1]
        x = b.relu(b.batch_norm(b.conv(x, c, 3, strides=stride, pads=1, groups=c, bias=False)))
        x = b.relu(b.batch_norm(b.conv(x, out, 1, bias=False)))
    x = b.gemm(b.flatten(b.global_avg_pool(x)), 10, init="glorot")
    return b.build([x], output_names=["logits"])


def test_quantized_separable_model_matches_onnxruntime_and_the_plan_without_rows(tmp_path):
    """The QDQ model nn_core.quantize makes of the net: every channels-last convolution's requantizer works
    rows, and the logits equal onnxruntime's and those of the same plan with the rows refused, bit for bit, at
    batch 1 and 3."""
    import onnxruntime as ort

    from nn_core.quantize import quantize

    source, path = tmp_path / "float.onnx", tmp_path / "int8.onnx"
    onnx.save(separable_model(), str(source))
    quantize(source, path, fmt="qdq", count=20)
    ours, without = nn_core.load(str(path)), nn_core.load(str(path))

    class Refused(dict):
        def get(self, key, default=None):
            return None

    rows_kept = 0
    def requantizers(model: nn_core.Model) -> list[_TableRequantizer]:
        """The table requantizers of the plan's convolutions, also of those inside a separable chain's step."""
        kernels = [k for step in model._fast_plan().steps for k in getattr(step.kernel, "layers", [step.kernel])]
        return [k.requant for k in kernels if isinstance(getattr(k, "requant", None), _TableRequantizer)]

    for requant in requantizers(without):
        requant.layouts = Refused()
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    for batch in (1, 3):
        for scale in (0.3, 1.0, 4.0):
            x = (rng.standard_normal((batch, 1, 15, 15)) * scale).astype(np.float32)
            got = ours.run({"input": x})["logits"]
            np.testing.assert_array_equal(got, without.run({"input": x})["logits"])
            np.testing.assert_array_equal(got, session.run(None, {"input": x})[0])
    for requant in requantizers(ours):
        rows_kept += sum(entry is not None for entry in requant.layouts.values())
    assert rows_kept >= 5
