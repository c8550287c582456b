"""Lookup tables for the float ops between a DequantizeLinear and a QuantizeLinear (``fuse_lookups``): the fast
plan's values are held bit-exact against onnxruntime running the same QDQ file and against our own unfused
(traced) run, on many random inputs."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

import nn_core
from nn_core.ops.quantized import QLinearLookup, _Requantizer, _TableRequantizer
from nn_core.ops.registry import NodeSpec
from nn_core.ops.residual_int8 import ConvPairLookup

rng = np.random.default_rng(5)


class QDQ:
    """A QDQ graph written step by step: float values quantized, dequantized and fed to float ops."""

    def __init__(self, dtype: type, channels: int = 3, size: int = 8, per_channel: bool = True):
        self.dtype, self.channels, self.per_channel = dtype, channels, per_channel
        self.nodes: list = []
        self.inits: list = []
        self.count = 0
        self.input = helper.make_tensor_value_info("x", 1, ["batch", channels, size, size])

    def name(self, stem: str) -> str:
        self.count += 1
        return f"{stem}{self.count}"

    def const(self, value: np.ndarray, stem: str = "c") -> str:
        name = self.name(stem)
        self.inits.append(numpy_helper.from_array(value, name))
        return name

    def node(self, op: str, inputs: list[str], **attrs) -> str:
        out = self.name(op.lower())
        self.nodes.append(helper.make_node(op, inputs, [out], name=out, **attrs))
        return out

    def qdq(self, x: str, scale: float, zero_point: int) -> tuple[str, str]:
        """(q, dq) of ``x`` with per-tensor parameters."""
        s, z = self.const(np.array(scale, np.float32)), self.const(np.array(zero_point, self.dtype))
        q = self.node("QuantizeLinear", [x, s, z])
        return q, self.node("DequantizeLinear", [q, s, z])

    def conv(self, x: str, x_scale: float, out: int, group: int = 1, **attrs) -> str:
        """A quantized convolution (int8 per-channel weights, int32 bias) of the dequantized ``x``."""
        cin = self.channels // group
        w = rng.integers(-127, 128, (out, cin, 3, 3)).astype(np.int8)
        w_scale = rng.uniform(0.002, 0.02, out if self.per_channel else ()).astype(np.float32)
        bias = rng.integers(-500, 500, out).astype(np.int32)
        axis = {"axis": 0} if self.per_channel else {}  # (per-axis parameters exist from opset 13)
        wdq = self.node("DequantizeLinear", [self.const(w, "w"), self.const(w_scale), self.const(
            np.zeros(w_scale.shape, np.int8))], **axis)
        bdq = self.node("DequantizeLinear", [self.const(bias, "b"), self.const(w_scale * np.float32(x_scale)),
                                             self.const(np.zeros(w_scale.shape, np.int32))], **axis)
        self.channels = out
        return self.node("Conv", [x, wdq, bdq], kernel_shape=[3, 3], pads=[1, 1, 1, 1], group=group, **attrs)

    def batch_norm(self, x: str, negative: bool = False) -> str:
        c = self.channels
        scale = rng.uniform(0.5, 2.0, c).astype(np.float32) * (-1 if negative else 1)
        return self.node("BatchNormalization", [x, self.const(scale), self.const(rng.normal(0, 1, c).astype(
            np.float32)), self.const(rng.normal(0, 1, c).astype(np.float32)), self.const(rng.uniform(
                0.5, 2.0, c).astype(np.float32))], epsilon=1e-5)

    def model(self, output: str, opset: int = 13) -> onnx.ModelProto:
        self.nodes.append(helper.make_node("Identity", [output], ["y"]))
        graph = helper.make_graph(self.nodes, "qdq", [self.input], [helper.make_tensor_value_info("y", 1, None)],
                                  self.inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
        model.ir_version = 8
        return model


def zero_points(dtype: type) -> tuple[int, int]:
    return (0, 131) if dtype == np.uint8 else (-128, 3)


def conv_block(dtype: type, chain, *, opset: int = 13, pool: bool = False) -> onnx.ModelProto:
    """x -> Q/DQ -> Conv -> Q/DQ -> ``chain(builder, value)`` -> Q/DQ [-> MaxPool -> Q/DQ] -> Conv -> Q/DQ."""
    low, odd = zero_points(dtype)
    b = QDQ(dtype, per_channel=opset >= 13)
    _, x = b.qdq("x", 0.02, odd)
    y = b.conv(x, 0.02, 6)
    _, y = b.qdq(y, 0.05, odd)
    y = chain(b, y)
    _, y = b.qdq(y, 0.03, low + 1)
    if pool:
        y = b.node("MaxPool", [y], kernel_shape=[2, 2], strides=[2, 2])
        _, y = b.qdq(y, 0.03, low + 1)
    y = b.conv(y, 0.03, 4)
    _, y = b.qdq(y, 0.1, odd)
    return b.model(y, opset)


def inputs(batch: int = 1) -> list[np.ndarray]:
    shape = (batch, 3, 8, 8)
    return [rng.random(shape, dtype=np.float32), (rng.standard_normal(shape) * 3).astype(np.float32),
            (rng.standard_normal(shape) * 0.2).astype(np.float32), (rng.random(shape) > 0.7).astype(np.float32)]


def assert_exact(model: onnx.ModelProto, rounds: int = 4, onnxruntime: bool = True) -> nn_core.Model:
    """Our fast plan gives, bit for bit, the values of the same plan without the tables (the ops the tables stand
    for) and, with ``onnxruntime``, those of onnxruntime's default session (which fuses the convolutions as we
    do; it runs some chains its own way: a residual Add as QLinearAdd, a DequantizeLinear -> QuantizeLinear
    pair folded away, so those are held to our unfused values only)."""
    import onnxruntime as ort

    from nn_core.ops import quantized

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    ours = nn_core.load_proto(model)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(quantized, "fuse_lookups", lambda nodes, *args: nodes)
        unfused = nn_core.load_proto(model)
        assert len(unfused.plan_ops) > len(ours.plan_ops)
    for batch in (1, 3):
        for _ in range(rounds):
            for x in inputs(batch):
                got = ours.run({"x": x})["y"]
                np.testing.assert_array_equal(got, unfused.run({"x": x})["y"])
                if onnxruntime:
                    np.testing.assert_array_equal(got, session.run(None, {"x": x})[0])
    return ours


def bn_relu(b: QDQ, y: str) -> str:
    return b.node("Relu", [b.batch_norm(y)])


@pytest.mark.parametrize("dtype", [np.uint8, np.int8])
def test_batchnorm_relu_between_convolutions_is_looked_up_by_the_convolution(dtype):
    """Conv -> Q/DQ -> BatchNormalization -> Relu -> Q: the chain becomes a per-channel table the convolution
    indexes with its requantized sums (no DequantizeLinear, BatchNormalization or Relu step is left)."""
    ours = assert_exact(conv_block(dtype, bn_relu))
    # (the looked-up codes centred straight into the second convolution's input: one step, qconv_pair)
    assert ours.plan_ops[0] == "QLinearConv+QLinearConv", ours.plan_ops


@pytest.mark.parametrize("dtype", [np.uint8, np.int8])
@pytest.mark.parametrize("chain", ["clip", "clip_attrs", "leaky", "hard_sigmoid", "hard_swish", "requantize"])
def test_per_tensor_chains_are_exact(dtype, chain):
    """Relu6 as Clip (inputs, and attributes before opset 11), LeakyRelu, HardSigmoid, HardSwish, and a bare
    DequantizeLinear -> QuantizeLinear (a rescale): one table of 256 entries, the same values."""
    opset = 10 if chain == "clip_attrs" else 14

    def build(b: QDQ, y: str) -> str:
        if chain == "clip":
            return b.node("Clip", [y, b.const(np.array(0, np.float32)), b.const(np.array(6, np.float32))])
        if chain == "clip_attrs":
            return b.node("Clip", [y], min=0.0, max=6.0)
        if chain == "leaky":
            return b.node("LeakyRelu", [y], alpha=0.1)
        if chain == "hard_sigmoid":
            return b.node("HardSigmoid", [y], alpha=0.3, beta=0.4)
        if chain == "hard_swish":
            return b.node("HardSwish", [y])
        return y

    ours = assert_exact(conv_block(dtype, build, opset=opset), onnxruntime=chain != "requantize")
    assert ours.plan_ops[0] == "QLinearConv+QLinearConv", ours.plan_ops  # (one step: qconv_pair)


def test_negative_batchnorm_before_a_maxpool_keeps_the_pool_after_the_table():
    """A table that is not non-decreasing (a negative BatchNormalization scale) must not let the MaxPool be
    taken before it; the values stay exact."""
    ours = assert_exact(conv_block(np.uint8, lambda b, y: b.node("Relu", [b.batch_norm(y, negative=True)]),
                                   pool=True))
    assert "MaxPool" in ours.plan_ops


def test_monotonic_table_before_a_maxpool_is_pooled_by_the_convolution():
    ours = assert_exact(conv_block(np.uint8, lambda b, y: b.node("Relu", [y]), pool=True))
    assert "MaxPool" not in ours.plan_ops, ours.plan_ops


def residual_block(dtype: type, op: str, conv_first: bool, zero_point_shift: int = 0,
                   float_out: bool = False):
    """x -> Q/DQ -> Conv -> Relu -> Q (a) -> DQ -> Conv -> Q/DQ (c); DQ(a) and DQ(c) -> ``op`` (c first or second)
    -> Relu -> Q/DQ (or read as float by a GlobalAveragePool)."""
    low, odd = zero_points(dtype)
    b = QDQ(dtype)
    _, x = b.qdq("x", 0.02, odd)
    a = b.node("Relu", [b.conv(x, 0.02, 3)])
    qa, a_dq = b.qdq(a, 0.04, low)
    c = b.conv(a_dq, 0.04, 3)
    _, c_dq = b.qdq(c, 0.05, odd + zero_point_shift)
    # the residual reads a's codes again through a DequantizeLinear of its own
    a_again = b.node("DequantizeLinear", [qa, b.const(np.array(0.04, np.float32)), b.const(np.array(low, dtype))])
    total = b.node("Relu", [b.node(op, [c_dq, a_again] if conv_first else [a_again, c_dq])])
    if float_out:
        return b.model(b.node("GlobalAveragePool", [total]))
    _, y = b.qdq(total, 0.06, low)
    return b.model(y)


@pytest.mark.parametrize("dtype", [np.uint8, np.int8])
@pytest.mark.parametrize("op", ["Add", "Mul", "Sub"])
def test_residual_sum_of_two_dequantized_tensors_is_one_pair_table(dtype, op):
    """DQ(a), DQ(b) -> Add -> Relu -> Q (a residual block): one table over all 65536 pairs of codes."""
    ours = assert_exact(residual_block(dtype, op, conv_first=False), onnxruntime=False)
    assert any("QLinearLookup" in label for label in ours.plan_ops) and op not in ours.plan_ops, ours.plan_ops


def test_wide_batchnorm_is_left_to_its_ops():
    """A per-channel table is made for at most 4096 channels (its computation is channels x 256 values): a
    BatchNormalization claiming more stays a node."""
    from nn_core.ops import quantized

    assert quantized._TABLE_CHANNELS == 4096
    b = QDQ(np.uint8)
    _, x = b.qdq("x", 0.02, 3)
    y = b.conv(x, 0.02, 6)
    _, y = b.qdq(y, 0.05, 3)
    c = 5000
    params = [b.const(rng.uniform(0.5, 2, c).astype(np.float32)) for _ in range(4)]
    y = b.node("BatchNormalization", [y, *params])
    _, y = b.qdq(y, 0.05, 3)
    ours = nn_core.load_proto(b.model(y))
    assert "BatchNormalization" in ours.plan_ops


def test_table_requantizer_rounds_ties_to_even_like_the_codes_and_lookup():
    """The float32 rounding trick of _TableRequantizer against _Requantizer's codes looked up, on sums whose
    products land exactly on halves, for both 8-bit types and odd and even zero points."""
    multiplier = np.array([0.5, 0.25, 1.0, 0.125, 0.0371], np.float32)
    sums = np.concatenate([np.arange(-700, 700), rng.integers(-5000, 5000, 2000)]).astype(np.float32)
    sums = np.broadcast_to(sums, (1, 5, 1, sums.size)).copy()
    for dtype, points in ((np.uint8, (0, 1, 7, 128, 255)), (np.int8, (-128, -1, 0, 3, 127))):
        for zero_point in points:
            plain = _Requantizer(multiplier, np.array(zero_point, dtype), dtype, 1, 4)
            table = rng.integers(0, 256, (5, 256)).astype(np.uint8)
            codes = plain(sums.copy()).view(np.uint8)
            want = table[np.arange(5).reshape(1, 5, 1, 1), codes]
            np.testing.assert_array_equal(_TableRequantizer(plain, table, 4)(sums.copy()), want)
            # channels-last storage (a transposed view) gives the same values
            laid = np.ascontiguousarray(sums.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
            np.testing.assert_array_equal(_TableRequantizer(plain, table, 4)(laid), want)


def lookup_kernel(inputs: int, table: np.ndarray | None) -> QLinearLookup:
    names = ["a", "b", "t"][-inputs:] if inputs == 3 else ["x", "t"][:inputs]
    return QLinearLookup(NodeSpec(op_type="QLinearLookup", name="lk", domain="ai.nn_core.fused", inputs=names,
                                  outputs=["y"], consts=[None] * (len(names) - 1) + [table]))


def test_lookup_kernel_refuses_bad_tables_and_inputs_by_name():
    with pytest.raises(nn_core.ModelError, match="'lk'.*table"):
        lookup_kernel(2, np.zeros(255, np.uint8))
    with pytest.raises(nn_core.ModelError, match="'lk'.*table"):
        lookup_kernel(2, np.zeros(256, np.float64))
    with pytest.raises(nn_core.ModelError, match="'lk'.*65536"):
        lookup_kernel(3, np.zeros(256, np.uint8))
    with pytest.raises(nn_core.ModelError, match="'lk'.*x and a table"):
        lookup_kernel(1, None)
    kernel = lookup_kernel(2, np.zeros((4, 256), np.uint8))
    with pytest.raises(nn_core.ModelError, match="'lk'.*4 channels"):
        kernel.run(np.zeros((1, 3, 2, 2), np.uint8), kernel.const(1))
    with pytest.raises(nn_core.ModelError, match="'lk'.*8-bit"):
        kernel.run(np.zeros((1, 4, 2, 2), np.float32), kernel.const(1))


def test_lookup_kernel_indexes_by_byte_per_channel_and_by_pairs():
    table = rng.integers(0, 256, (3, 256)).astype(np.uint8)
    x = rng.integers(-128, 128, (2, 3, 4, 5)).astype(np.int8)
    got = lookup_kernel(2, table).run(x, table)
    np.testing.assert_array_equal(got, table[np.arange(3).reshape(1, 3, 1, 1), x.view(np.uint8)])
    pairs = rng.integers(0, 256, 65536).astype(np.int8)
    a, b = rng.integers(0, 256, (2, 3, 1)).astype(np.uint8), rng.integers(0, 256, (1, 4)).astype(np.uint8)
    got = lookup_kernel(3, pairs).run(a, b, pairs)
    np.testing.assert_array_equal(got, pairs[a.astype(np.intp) * 256 + b])


def test_batchnorm_after_a_quantized_gemm_with_dequantized_parameters():
    """onnxruntime's quantizer writes a BatchNormalization's scale as a DequantizeLinear of int8 codes (folded
    only after the fusions): the chain after the QGemm is still one per-channel table (blank11's classifier)."""
    b = QDQ(np.int8)
    _, x = b.qdq("x", 0.02, 3)
    flat = b.node("Flatten", [x])
    _, flat = b.qdq(flat, 0.02, 3)
    n, k = 16, 3 * 8 * 8
    w = rng.integers(-127, 128, (n, k)).astype(np.int8)
    w_scale = rng.uniform(0.002, 0.02, n).astype(np.float32)
    wdq = b.node("DequantizeLinear", [b.const(w, "w"), b.const(w_scale), b.const(np.zeros(n, np.int8))], axis=0)
    bdq = b.node("DequantizeLinear", [b.const(rng.integers(-500, 500, n).astype(np.int32), "b"),
                                      b.const(w_scale * np.float32(0.02)), b.const(np.zeros(n, np.int32))], axis=0)
    y = b.node("Gemm", [flat, wdq, bdq], transB=1)
    _, y = b.qdq(y, 0.05, -5)
    scale = b.node("DequantizeLinear", [b.const(rng.integers(20, 127, n).astype(np.int8)),
                                        b.const(np.array(0.02, np.float32)), b.const(np.array(0, np.int8))])
    y = b.node("BatchNormalization", [y, scale, *(b.const(v) for v in (
        rng.normal(0, 1, n).astype(np.float32), rng.normal(0, 1, n).astype(np.float32),
        rng.uniform(0.5, 2, n).astype(np.float32)))])
    _, y = b.qdq(y, 0.04, -128)
    ours = assert_exact(b.model(y))
    assert "QLinearLookup" in ours.plan_ops and "BatchNormalization" not in ours.plan_ops, ours.plan_ops


def test_table_after_a_convolution_without_the_float32_path(monkeypatch):
    """A QLinearConv whose sums are not provably below 2**24 runs its exact float64 path; the table it took in
    is then applied to its requantized codes, with the same values."""
    from nn_core.ops import quantized

    monkeypatch.setattr(quantized, "_F32_EXACT", 1.0)  # no convolution takes the float32 path
    ours = assert_exact(conv_block(np.uint8, bn_relu), rounds=1)
    kernel = ours._fast_plan().steps[0].kernel
    assert kernel.fast is None and kernel.lookup is not None


def test_fused_convolution_refuses_a_table_wider_than_its_float32_index():
    """A file may name the fused QLinearConv itself: a per-channel table of more rows than fuse_lookups writes
    (whose row offsets would leave float32's exact integers in _TableRequantizer) is refused by name."""
    from nn_core.ops.quantized import _TABLE_CHANNELS, QuantizingQLinearConv

    rows = _TABLE_CHANNELS + 1
    consts = [None, np.array(0.1, np.float32), np.array(0, np.uint8), np.ones((rows, 1, 1, 1), np.int8),
              np.array(0.1, np.float32), np.array(0, np.int8), np.array(0.1, np.float32), np.array(0, np.uint8),
              None, np.zeros((rows, 256), np.uint8)]
    names = ["x", "xs", "xz", "w", "ws", "wz", "ys", "yz", "", "t"]
    spec = NodeSpec(op_type="QLinearConv", name="wide", domain="ai.nn_core.fused", inputs=names, outputs=["y"],
                    consts=consts)
    with pytest.raises(nn_core.ModelError, match=f"'wide'.*{rows} rows"):
        QuantizingQLinearConv(spec)
    consts[3], consts[9] = consts[3][:-1], consts[9][:-1]
    QuantizingQLinearConv(spec)  # (the widest fuse_lookups writes is accepted)


def float_tail(dtype: type, tail, negative: bool = False) -> onnx.ModelProto:
    """x -> Q/DQ -> Conv -> Q/DQ -> BatchNormalization -> ``tail(builder, value)`` -> y: a chain of table ops
    whose value is read as float (a classifier's tail before its pooling), no QuantizeLinear after it."""
    _, odd = zero_points(dtype)
    b = QDQ(dtype)
    _, x = b.qdq("x", 0.02, odd)
    y = b.conv(x, 0.02, 6)
    _, y = b.qdq(y, 0.05, odd)
    return b.model(tail(b, b.batch_norm(y, negative=negative)))


@pytest.mark.parametrize("dtype", [np.uint8, np.int8])
def test_float_tail_is_a_float_table_the_convolution_looks_up(dtype):
    """Conv -> Q/DQ -> BatchNormalization -> Relu -> GlobalAveragePool: the DequantizeLinear, BatchNormalization
    and Relu become a per-channel table of float32 values the convolution indexes; the same values bit for
    bit (held to our unfused plan: onnxruntime's BatchNormalization may round its float values otherwise, and it
    may sum the pooled values in another order)."""
    ours = assert_exact(float_tail(dtype, lambda b, y: b.node("GlobalAveragePool", [b.node("Relu", [y])])),
                        onnxruntime=False)
    assert ours.plan_ops == ["QLinearConv", "GlobalAveragePool"], ours.plan_ops


def test_float_tail_as_the_graph_output():
    ours = assert_exact(float_tail(np.uint8, lambda b, y: b.node("Relu", [y])), onnxruntime=False)
    assert ours.plan_ops == ["QLinearConv"], ours.plan_ops


@pytest.mark.parametrize("negative", [False, True])
def test_float_table_before_a_maxpool(negative):
    """A MaxPool reading the float table's values is taken into the convolution only when the table is
    non-decreasing per channel (a negative BatchNormalization scale keeps it a step of its own)."""
    ours = assert_exact(float_tail(np.uint8, lambda b, y: b.node(
        "MaxPool", [b.node("Relu", [y])], kernel_shape=[2, 2], strides=[2, 2]), negative=negative),
        onnxruntime=False)
    assert ("MaxPool" in ours.plan_ops) == negative, ours.plan_ops


@pytest.mark.parametrize("dtype", [np.uint8, np.int8])
def test_residual_sum_read_as_float_is_one_float_pair_table(dtype):
    """DQ(a), DQ(b) -> Add -> Relu -> GlobalAveragePool: one float32 table over all 65536 pairs of codes."""
    ours = assert_exact(residual_block(dtype, "Add", conv_first=False, float_out=True), onnxruntime=False)
    # (onnxruntime runs a QLinearAdd)
    assert any("QLinearLookup" in label for label in ours.plan_ops) and "Add" not in ours.plan_ops, ours.plan_ops
    # the lookup, or the convolution making one operand's codes with it (nn_core/ops/residual_int8.py)
    table = next(s.kernel.table if isinstance(s.kernel, ConvPairLookup) else s.kernel.const(2)
                 for s in ours._fast_plan().steps if isinstance(s.kernel, (QLinearLookup, ConvPairLookup)))
    assert table.dtype == np.float32


@pytest.mark.parametrize("layout", ["contiguous", "gaps", "batch", "channels_last"])
def test_requantizers_lay_per_channel_operands_over_the_sums_layout(layout):
    """Sums in C order, NCHW rows with gaps, a batch of 3 or channels-last take the per-channel multiplier and
    rounder spelled out over their shape in their own memory order, made once per shape and strides; the codes
    and looked-up values are the broadcast ones."""
    multiplier = np.array([0.5, 0.25, 1.0, 0.125, 0.0371], np.float32)
    batch = 3 if layout == "batch" else 1
    sums = rng.integers(-3000, 3000, (batch, 5, 6, 9)).astype(np.float32)
    if layout == "gaps":
        padded = np.zeros((batch, 5, 6, 11), np.float32)
        padded[..., :9] = sums
        sums = padded[..., :9]
    if layout == "channels_last":
        sums = np.ascontiguousarray(sums.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
    key = (sums.shape, sums.strides)

    def fresh(values: np.ndarray) -> np.ndarray:  # the sums as a kernel hands them over, kept for the next call
        copied = np.empty_like(values, order="K")
        copied[...] = values
        return values if layout == "gaps" else copied

    plain = _Requantizer(multiplier, np.array(7, np.uint8), np.uint8, 1, 4)
    shaped = multiplier.reshape(1, 5, 1, 1)
    want = np.clip(np.rint(np.array(sums) * shaped) + 7, 0, 255).astype(np.uint8)
    for _ in range(2):
        np.testing.assert_array_equal(plain(fresh(sums)), want)
    assert list(plain.laid_multipliers) == [key]
    laid = plain.laid_multipliers[key]
    assert laid.shape == sums.shape and np.argsort(laid.strides).tolist() == np.argsort(sums.strides).tolist()
    table = rng.integers(0, 256, (5, 256)).astype(np.uint8)
    looked_up = _TableRequantizer(_Requantizer(multiplier, np.array(7, np.uint8), np.uint8, 1, 4), table, 4)
    got = looked_up(fresh(sums))
    np.testing.assert_array_equal(got, table[np.arange(5).reshape(1, 5, 1, 1), want])
    if layout != "channels_last":  # (channels-last sums are worked as rows of channels, _channel_rows)
        # (the rounder is added to the multiplied sums: sums with gaps were multiplied into a fresh array)
        assert [shape for shape, _ in looked_up.laid_rounders] == [sums.shape]


def test_a_per_tensor_multiplier_is_remembered_unlaid():
    """A scalar multiplier stays a scalar; the per-shape answer is still remembered (one lookup a call)."""
    plain = _Requantizer(np.array([0.5], np.float32), np.array(7, np.uint8), np.uint8, 1, 4)
    sums = rng.integers(-3000, 3000, (1, 5, 6, 9)).astype(np.float32)
    want = np.clip(np.rint(sums * np.float32(0.5)) + 7, 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(plain(sums.copy()), want)
    assert [np.ndim(v) for v in plain.laid_multipliers.values()] == [0]
