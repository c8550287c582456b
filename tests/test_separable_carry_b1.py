"""A separable chain's depthwise bias carried into the pointwise conv after it (nn_core/ops/separable.py,
_carrying_finisher): the depthwise sums are clamped to the activation's bounds shifted by the bias, and the bias
reaches the output through the pointwise weights. Against the general kernels of the traced plan and
onnxruntime, with biases that move many values across the bounds."""

import numpy as np
import pytest
from helpers import make_model, ort_run, tensor_info
from onnx import helper
from test_separable_b1 import MOBILENET_BLOCKS, _check, _separable_net

import nn_core
from nn_core.errors import ModelError
from nn_core.ops import separable
from nn_core.ops.separable import SeparableChain


def _chain(model: nn_core.Model) -> SeparableChain:
    (chain,) = [s.kernel for s in model._fast_plan().steps if isinstance(s.kernel, SeparableChain)]
    return chain


@pytest.mark.parametrize(("activation", "bounds"), [("Relu", (0.0, np.inf)), ("Clip", (0.0, 6.0)),
                                                   (None, (-np.inf, np.inf)), ("LeakyRelu", None)])
def test_the_bias_is_carried_only_past_a_clamp_or_no_activation(activation, bounds):
    rng = np.random.default_rng(3)
    model = _check(_separable_net(rng, MOBILENET_BLOCKS, activation), rng)
    chain = _chain(model)
    assert [chain._carried_bounds(kernel) for kernel in chain.kernels[::2]] == [bounds] * len(MOBILENET_BLOCKS)


def test_no_depthwise_bias_leaves_both_epilogues_as_they_are():
    rng = np.random.default_rng(4)
    model = _check(_separable_net(rng, MOBILENET_BLOCKS, "Relu", bias=False), rng)
    assert _chain(model)._carried_bounds(_chain(model).kernels[0]) is None


def _one_pair(rng: np.random.Generator, depthwise_bias: np.ndarray, activation: list[helper.NodeProto],
              pointwise_bias: bool, channels: int = 16, size: int = 9) -> object:
    """x -> depthwise 3x3 (pads 1, the given bias) -> ``activation`` nodes (reading 'dw', ending in 'act') ->
    1x1 conv to 8 channels [+ bias] -> y: the chain's output itself, no reduction that could hide a value."""
    inits = {"dw_w": rng.standard_normal((channels, 1, 3, 3)).astype(np.float32),
             "dw_b": depthwise_bias.astype(np.float32),
             "pw_w": (rng.standard_normal((8, channels, 1, 1)) * 0.3).astype(np.float32),
             "lo": np.float32(-0.5), "hi": np.float32(1.5)}
    if pointwise_bias:
        inits["pw_b"] = rng.standard_normal(8).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "dw_w", "dw_b"], ["dw"], group=channels, pads=[1, 1, 1, 1]),
             *activation,
             helper.make_node("Conv", ["act", "pw_w", "pw_b" if pointwise_bias else ""], ["y"])]
    return make_model(nodes, [tensor_info("x", ["N", channels, size, size])],
                      [tensor_info("y", ["N", 8, size, size])], inits)


CLAMPS = {
    "relu": [helper.make_node("Relu", ["dw"], ["act"])],
    "clip": [helper.make_node("Clip", ["dw", "lo", "hi"], ["act"])],
    "clip_min_only": [helper.make_node("Clip", ["dw", "lo"], ["act"])],
    "clip_max_only": [helper.make_node("Clip", ["dw", "", "hi"], ["act"])],
    "none": [helper.make_node("Identity", ["dw"], ["act"])],
}


@pytest.mark.parametrize("clamp", sorted(CLAMPS))
@pytest.mark.parametrize("pointwise_bias", [True, False])
def test_carried_bias_matches_the_layers(clamp, pointwise_bias):
    rng = np.random.default_rng(5)
    # from well below to well above the bounds: most channels' values end up clamped at one bound or the other
    bias = np.linspace(-4.0, 4.0, 16)
    proto = _one_pair(rng, bias, CLAMPS[clamp], pointwise_bias)
    model = nn_core.load_proto(proto)
    assert _chain(model)._carried_bounds(_chain(model).kernels[0]) is not None
    for size_rng in range(3):
        x = np.random.default_rng(size_rng).standard_normal((1, 16, 9, 9)).astype(np.float32)
        got = model.run({"x": x})["y"]
        want, _ = model.run_traced({"x": x})
        np.testing.assert_allclose(got, want["y"], rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(got, ort_run(proto, {"x": x})[0], rtol=1e-4, atol=1e-5)


def test_carried_bias_at_batch_two_runs_the_layers():
    rng = np.random.default_rng(6)
    proto = _one_pair(rng, np.linspace(-2.0, 2.0, 16), CLAMPS["relu"], True)
    model = nn_core.load_proto(proto)
    x = rng.standard_normal((2, 16, 9, 9)).astype(np.float32)
    np.testing.assert_allclose(model.run({"x": x})["y"], ort_run(proto, {"x": x})[0], rtol=1e-4, atol=1e-5)


def test_nan_input_still_gives_the_layers_values():
    rng = np.random.default_rng(7)
    proto = _one_pair(rng, np.linspace(-2.0, 2.0, 16), CLAMPS["clip"], True)
    model = nn_core.load_proto(proto)
    x = rng.standard_normal((1, 16, 9, 9)).astype(np.float32)
    x[0, 3, 4, 4] = np.nan
    want, _ = model.run_traced({"x": x})
    np.testing.assert_array_equal(np.isnan(model.run({"x": x})["y"]), np.isnan(want["y"]))



# ---- a column-strided layer's kernel columns written phase by phase by the pointwise conv before it

def _phase_written(monkeypatch: pytest.MonkeyPatch, blocks: list[dict], size: tuple[int, int],
                   seed: int) -> list[tuple[int, int]]:
    """Check the net of ``blocks`` (after a first block at unit stride) against the general kernels and
    onnxruntime; the (stride, kernel columns) of each layer whose column buffers were written by phases."""
    built: list[tuple[int, int]] = []
    made = separable._PhaseColumns.__init__

    def counting(self, depthwise, geometry, dtype):
        made(self, depthwise, geometry, dtype)
        built.append((geometry.sw, geometry.kw))

    monkeypatch.setattr(separable._PhaseColumns, "__init__", counting)
    rng = np.random.default_rng(seed)
    for activation in ("Relu", "Clip"):
        _check(_separable_net(rng, [{"out": 12}, *blocks], activation, channels=12, size=size), rng)
    return built


def test_mobilenet_strided_layers_read_phase_written_columns(monkeypatch):
    assert _phase_written(monkeypatch, MOBILENET_BLOCKS, (12, 12), 8) == [(2, 3), (2, 3)] * 2


@pytest.mark.parametrize(("block", "size", "phased"), [
    ({"out": 8, "strides": [2, 2]}, (9, 8), True),  # pads 1: kernel column 0 reads phase 1 shifted left
    ({"out": 8, "strides": [2, 2]}, (8, 9), False),  # odd width: not whole phases, the gathering copies
    ({"out": 8, "strides": [1, 2], "pads": [1, 0, 1, 0]}, (6, 8), False),  # 3 columns from 8: 7 of 8 read
    ({"out": 8, "strides": [2, 3], "kernel": (3, 5), "pads": [1, 1, 1, 1]}, (7, 9), True),  # shifts both ways
    ({"out": 8, "strides": [2, 2], "dilations": [1, 2], "pads": [0, 2, 0, 2]}, (6, 10), True),
    ({"out": 8, "strides": [2, 2], "kernel": (1, 1), "pads": [0, 0, 0, 0]}, (8, 8), True),  # one phase read
    ({"out": 8, "strides": [2, 2], "pads": [1, 0, 1, 1]}, (8, 8), True),  # column 2 reads phase 0 shifted right
    ({"out": 8, "strides": [2, 2], "pads": [1, 2, 1, 0]}, (8, 8), False),  # phase 1 only read shifted: gathered
])
def test_strided_geometries_match_the_general_kernels(monkeypatch, block, size, phased):
    built = _phase_written(monkeypatch, [block, {"out": 6}], size, 9)
    assert bool(built) == phased


def test_phase_written_outputs_are_fresh_and_batch_two_runs_the_layers():
    rng = np.random.default_rng(11)
    proto = _separable_net(rng, [{"out": 12}, *MOBILENET_BLOCKS], "Relu", channels=12, size=(12, 12))
    model = nn_core.load_proto(proto)
    first = rng.standard_normal((1, 3, 12, 12)).astype(np.float32)
    kept = model.run({"x": first})["y"]
    copy = kept.copy()
    model.run({"x": rng.standard_normal((1, 3, 12, 12)).astype(np.float32)})
    np.testing.assert_array_equal(kept, copy)
    x = rng.standard_normal((2, 3, 12, 12)).astype(np.float32)
    np.testing.assert_allclose(model.run({"x": x})["y"], ort_run(proto, {"x": x})[0], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("block", [
    {"out": 8, "strides": [2, 2]},
    {"out": 8, "strides": [1, 2], "pads": [0, 0, 0, 0]},
    {"out": 8, "strides": [2, 3], "kernel": (3, 5), "pads": [1, 2, 1, 0]},  # wide, more left padding
    {"out": 8, "strides": [2, 2], "dilations": [2, 2], "pads": [2, 2, 2, 2]},
])
@pytest.mark.parametrize("size", [(8, 8), (7, 9)])
def test_a_column_strided_first_layer_gathers_from_the_input(block, size):
    rng = np.random.default_rng(12)
    for activation in ("Relu", "Clip", None):
        model = _check(_separable_net(rng, [block, {"out": 6}], activation, channels=12, size=size, stem=False),
                       rng)
        assert model.plan_ops == ["+".join(["Conv"] * 4 if activation is None else [f"Conv+{activation}"] * 4)
                                  + "+ReduceMean"]


# ---- a per-channel mean over the image after the chain, absorbed

def _chain_then(rng: np.random.Generator, tail: list[helper.NodeProto], out_shape: list, opset: int = 13,
                extra: dict | None = None) -> object:
    """x (N, 8, 10, 10) -> depthwise 3x3 (pads 1) + ReLU -> 1x1 to 12 channels + ReLU ('pw') -> ``tail``
    (reading 'pw', ending in 'y')."""
    inits = {"dw_w": rng.standard_normal((8, 1, 3, 3)).astype(np.float32),
             "dw_b": rng.standard_normal(8).astype(np.float32),
             "pw_w": rng.standard_normal((12, 8, 1, 1)).astype(np.float32),
             "pw_b": rng.standard_normal(12).astype(np.float32), **(extra or {})}
    nodes = [helper.make_node("Conv", ["x", "dw_w", "dw_b"], ["dw"], group=8, pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["dw"], ["dwa"]),
             helper.make_node("Conv", ["dwa", "pw_w", "pw_b"], ["pwc"]),
             helper.make_node("Relu", ["pwc"], ["pw"]), *tail]
    return make_model(nodes, [tensor_info("x", ["N", 8, 10, 10])], [tensor_info("y", out_shape)], inits,
                      opset=opset)


MEANS = {
    "gap": ([helper.make_node("GlobalAveragePool", ["pw"], ["y"])], ["N", 12, 1, 1], 13, None),
    "gap_flatten": ([helper.make_node("GlobalAveragePool", ["pw"], ["g"]), helper.make_node("Flatten", ["g"], ["y"])],
                    ["N", 12], 13, None),
    "reduce_keepdims": ([helper.make_node("ReduceMean", ["pw"], ["y"], axes=[2, 3])], ["N", 12, 1, 1], 13, None),
    "reduce_flat_negative_axes": ([helper.make_node("ReduceMean", ["pw"], ["y"], axes=[-1, -2], keepdims=0)],
                                  ["N", 12], 13, None),
    "reduce_axes_input": ([helper.make_node("ReduceMean", ["pw", "axes"], ["y"], keepdims=0)], ["N", 12], 18,
                          {"axes": np.array([2, 3], np.int64)}),
}


@pytest.mark.parametrize("kind", sorted(MEANS))
def test_a_mean_over_the_image_is_absorbed_and_matches(kind):
    tail, out_shape, opset, extra = MEANS[kind]
    rng = np.random.default_rng(13)
    proto = _chain_then(rng, tail, out_shape, opset, extra)
    model = nn_core.load_proto(proto)
    assert len(model.plan_ops) == 1 and model.plan_ops[0].startswith("Conv+Relu+Conv+Relu+")
    for batch in (1, 2, 1):  # batch 2: the layers' kernels, then the mean's
        x = rng.standard_normal((batch, 8, 10, 10)).astype(np.float32)
        got = model.run({"x": x})["y"]
        want, _ = model.run_traced({"x": x})
        assert got.shape == want["y"].shape
        np.testing.assert_allclose(got, want["y"], rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(got, ort_run(proto, {"x": x})[0], rtol=1e-4, atol=1e-5)
    x[0, 2, 5, 5] = np.nan  # the kernels in turn, then the mean: NaN where the layers give it
    want, _ = model.run_traced({"x": x})
    np.testing.assert_array_equal(np.isnan(model.run({"x": x})["y"]), np.isnan(want["y"]))


@pytest.mark.parametrize("tail", [
    [helper.make_node("ReduceMean", ["pw"], ["y"], axes=[1, 2, 3])],  # over the channels too
    [helper.make_node("ReduceMean", ["pw"], ["y"], axes=[3])],
    [helper.make_node("ReduceMax", ["pw"], ["y"], axes=[2, 3])],
    [helper.make_node("ReduceMean", ["pw"], ["m"], axes=[2, 3]), helper.make_node("Add", ["m", "pw"], ["y"])],
])
def test_other_reductions_and_a_shared_output_are_not_absorbed(tail):
    rng = np.random.default_rng(14)
    proto = _chain_then(rng, tail, None)
    model = _check_free(proto, rng)
    assert model.plan_ops[0] == "Conv+Relu+Conv+Relu"


def test_absorbed_means_are_fresh_arrays():
    rng = np.random.default_rng(15)
    tail, out_shape, opset, extra = MEANS["gap_flatten"]
    model = nn_core.load_proto(_chain_then(rng, tail, out_shape, opset, extra))
    first = model.run({"x": rng.standard_normal((1, 8, 10, 10)).astype(np.float32)})["y"]
    kept = first.copy()
    model.run({"x": rng.standard_normal((1, 8, 10, 10)).astype(np.float32)})
    np.testing.assert_array_equal(first, kept)


def _check_free(proto: object, rng: np.random.Generator) -> nn_core.Model:
    """The model against the traced plan and onnxruntime on one image, whatever its output's shape."""
    model = nn_core.load_proto(proto)
    x = rng.standard_normal((1, 8, 10, 10)).astype(np.float32)
    want, _ = model.run_traced({"x": x})
    np.testing.assert_allclose(model.run({"x": x})["y"], want["y"], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(model.run({"x": x})["y"], ort_run(proto, {"x": x})[0], rtol=1e-4, atol=1e-5)
    return model


# ---- a last pointwise conv with a fused MaxPool over side-by-side windows, pooled in the chain

def _pooled_pair(rng: np.random.Generator, size: tuple[int, int], pool: dict, activation: str | None,
                 alpha: float = 0.2, then_chain: bool = False, then_stride: int = 2) -> object:
    """x (N, 8, H, W) -> depthwise 3x3 (pads 1) [+ act] -> 1x1 to 12 [+ act] -> MaxPool(**pool) [-> a depthwise
    3x3 of stride ``then_stride`` and a 1x1 to 6] -> y."""
    inits = {"dw_w": rng.standard_normal((8, 1, 3, 3)).astype(np.float32),
             "dw_b": rng.standard_normal(8).astype(np.float32),
             "pw_w": rng.standard_normal((12, 8, 1, 1)).astype(np.float32),
             "pw_b": rng.standard_normal(12).astype(np.float32),
             "dw2_w": rng.standard_normal((12, 1, 3, 3)).astype(np.float32),
             "pw2_w": rng.standard_normal((6, 12, 1, 1)).astype(np.float32),
             "lo": np.float32(-1.0), "hi": np.float32(2.0)}

    def act(name: str) -> list:
        if activation is None:
            return [helper.make_node("Identity", [name], [f"{name}_a"])]
        attrs = {"alpha": alpha} if activation == "LeakyRelu" else {}
        inputs = [name, "lo", "hi"] if activation == "Clip" else [name]
        return [helper.make_node(activation, inputs, [f"{name}_a"], **attrs)]

    nodes = [helper.make_node("Conv", ["x", "dw_w", "dw_b"], ["dw"], group=8, pads=[1, 1, 1, 1]), *act("dw"),
             helper.make_node("Conv", ["dw_a", "pw_w", "pw_b"], ["pw"]), *act("pw"),
             helper.make_node("MaxPool", ["pw_a"], ["p" if then_chain else "y"], **pool)]
    if then_chain:
        nodes += [helper.make_node("Conv", ["p", "dw2_w"], ["dw2"], group=12, pads=[1, 1, 1, 1],
                                   strides=[then_stride] * 2),
                  helper.make_node("Relu", ["dw2"], ["dw2_a"]), helper.make_node("Conv", ["dw2_a", "pw2_w"], ["y"])]
    return make_model(nodes, [tensor_info("x", ["N", 8, *size])], [tensor_info("y", None)],
                      {k: v for k, v in inits.items() if then_chain or not k.endswith("2_w")})


def _check_pooled(proto: object, rng: np.random.Generator, size: tuple[int, int]) -> nn_core.Model:
    model = nn_core.load_proto(proto)
    for batch in (1, 2, 1):
        x = rng.standard_normal((batch, 8, *size)).astype(np.float32) * 2
        got = model.run({"x": x})["y"]
        want, _ = model.run_traced({"x": x})
        assert got.shape == want["y"].shape
        np.testing.assert_allclose(got, want["y"], rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(got, ort_run(proto, {"x": x})[0], rtol=1e-4, atol=1e-5)
    return model


SQUARE_2 = {"kernel_shape": [2, 2], "strides": [2, 2]}


@pytest.mark.parametrize("activation", ["Relu", "Clip", "LeakyRelu", None])
@pytest.mark.parametrize("size", [(8, 8), (9, 7), (10, 12)])  # odd sizes: the pooling drops a row / column
def test_a_pooled_last_pointwise_conv_is_pooled_in_the_chain(activation, size):
    rng = np.random.default_rng(16)
    model = _check_pooled(_pooled_pair(rng, size, SQUARE_2, activation), rng, size)
    assert len(model.plan_ops) == 1 and model.plan_ops[0].endswith("MaxPool")


@pytest.mark.parametrize("size", [(12, 12), (13, 10), (5, 4)])
@pytest.mark.parametrize("then_stride", [1, 2])
def test_a_pooled_pointwise_conv_inside_a_chain_pools_into_the_next_layers_rows(size, then_stride):
    rng = np.random.default_rng(17)
    proto = _pooled_pair(rng, size, SQUARE_2, "Clip", then_chain=True, then_stride=then_stride)
    model = _check_pooled(proto, rng, size)
    assert model.plan_ops == ["Conv+Clip+Conv+Clip+MaxPool+Conv+Relu+Conv"]


@pytest.mark.parametrize("pool", [{"kernel_shape": [3, 3], "strides": [3, 3]}, SQUARE_2])
def test_pooled_window_sizes_and_an_image_smaller_than_the_window(pool):
    rng = np.random.default_rng(18)
    _check_pooled(_pooled_pair(rng, (11, 9), pool, "Relu"), rng, (11, 9))
    model = nn_core.load_proto(_pooled_pair(rng, (1, 1), pool, "Relu"))  # no window fits: the kernels decide
    assert len(model.plan_ops) == 1
    with pytest.raises(ModelError, match="MaxPool"):  # the pooling's own error, as without the chain
        model.run({"x": np.ones((1, 8, 1, 1), np.float32)})


@pytest.mark.parametrize(("pool", "alpha"), [
    ({"kernel_shape": [2, 2], "strides": [1, 1]}, 0.2),  # overlapping windows
    ({"kernel_shape": [2, 2], "strides": [2, 2], "pads": [1, 1, 1, 1]}, 0.2),
    (SQUARE_2, -0.5),  # a decreasing LeakyRelu does not commute with the maximum
])
def test_other_poolings_are_not_pooled_in_the_chain(pool, alpha):
    rng = np.random.default_rng(19)
    model = _check_pooled(_pooled_pair(rng, (8, 8), pool, "LeakyRelu", alpha=alpha), rng, (8, 8))
    assert not any(op.endswith("MaxPool") and op.count("Conv") == 2 for op in model.plan_ops)


# ---- the dense conv before the first depthwise conv, the chain's head

def _headed(rng: np.random.Generator, head: dict, size: tuple[int, int], channels: int = 2, bias: bool = True,
            activation: str = "Relu", shared: bool = False) -> object:
    """x (N, ``channels``, H, W) -> conv to 8 (``head``: its attributes) [+ bias] + act -> depthwise 3x3
    (pads 1) + ReLU -> 1x1 to 6 -> y [+ the head's output, pooled to 1x1, when ``shared``]."""
    kernel = head.get("kernel_shape", [3, 3])
    inits = {"h_w": rng.standard_normal((8, channels, *kernel)).astype(np.float32),
             "h_b": rng.standard_normal(8).astype(np.float32),
             "dw_w": rng.standard_normal((8, 1, 3, 3)).astype(np.float32),
             "pw_w": rng.standard_normal((6, 8, 1, 1)).astype(np.float32)}
    attrs = {"alpha": 0.1} if activation == "LeakyRelu" else {}
    nodes = [helper.make_node("Conv", ["x", "h_w", "h_b" if bias else ""], ["h"], **head),
             helper.make_node(activation, ["h"], ["ha"], **attrs),
             helper.make_node("Conv", ["ha", "dw_w"], ["dw"], group=8, pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["dw"], ["dwa"]),
             helper.make_node("Conv", ["dwa", "pw_w"], ["y"])]
    outputs = [tensor_info("y", None)]
    if shared:
        nodes.append(helper.make_node("GlobalMaxPool", ["ha"], ["z"]))
        outputs.append(tensor_info("z", None))
    return make_model(nodes, [tensor_info("x", ["N", channels, *size])], outputs, inits)


@pytest.mark.parametrize("head", [
    {"pads": [1, 1, 1, 1]},
    {"pads": [0, 1, 2, 0], "strides": [2, 1]},
    {"kernel_shape": [5, 3], "pads": [2, 1, 2, 1], "dilations": [1, 2]},
    {"kernel_shape": [1, 1]},
    {"kernel_shape": [2, 2], "strides": [2, 2]},
])
@pytest.mark.parametrize("size", [(10, 10), (9, 11)])
def test_the_head_conv_writes_into_the_first_layers_rows(head, size):
    rng = np.random.default_rng(20)
    for bias, activation in ((True, "Relu"), (False, "LeakyRelu")):
        proto = _headed(rng, {**head, "kernel_shape": head.get("kernel_shape", [3, 3])}, size, bias=bias,
                        activation=activation)
        model = nn_core.load_proto(proto)
        assert len(model.plan_ops) == 1
        for batch in (1, 2):
            x = rng.standard_normal((batch, 2, *size)).astype(np.float32)
            want, _ = model.run_traced({"x": x})
            np.testing.assert_allclose(model.run({"x": x})["y"], want["y"], rtol=1e-4, atol=1e-5)
            np.testing.assert_allclose(model.run({"x": x})["y"], ort_run(proto, {"x": x})[0], rtol=1e-4, atol=1e-5)


def test_a_head_whose_output_is_read_elsewhere_stays_a_step():
    rng = np.random.default_rng(21)
    proto = _headed(rng, {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}, (8, 8), shared=True)
    model = nn_core.load_proto(proto)
    assert model.plan_ops[0] == "Conv+Relu" and "Conv+Relu+Conv" in model.plan_ops[1]
    x = rng.standard_normal((1, 2, 8, 8)).astype(np.float32)
    got, want = model.run({"x": x}), ort_run(proto, {"x": x})
    np.testing.assert_allclose(got["y"], want[0], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got["z"], want[1], rtol=1e-4, atol=1e-5)
