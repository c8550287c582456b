"""DenseNet's pre-activations: BatchNormalization [-> per-channel Mul/Add] -> Relu read only by an unpadded 1x1
convolution, run as a Max/Min by per-channel bounds with the factors in the convolution's weights
(nn_core/ops/preactivation_max.py), against the general kernels of the traced plan and onnxruntime."""

import numpy as np
import onnxruntime as ort
import pytest
from helpers import make_model, save, tensor_info
from onnx import helper

import nn_core
from nn_core.ops.preactivation_max import ChannelClamp

CHANNELS, OUT = 6, 5


def _preactivation(rng: np.random.Generator, signs: np.ndarray, *, mul_add: bool = True, kernel: int = 1,
                   pads: int = 0, bias: bool = True, relu_is_output: bool = False, size: int = 9,
                   zero_factor: bool = False) -> object:
    """x (N, 6, size, size) -> BatchNormalization [-> Mul -> Add] -> Relu -> Conv to 5 channels; the Mul's
    per-channel values carry ``signs`` (the BatchNormalization's scale stays positive)."""
    scale = rng.uniform(0.5, 1.5, CHANNELS)
    if zero_factor:
        scale[2] = 0.0
    inits = {"scale": scale, "shift": rng.normal(0, 0.3, CHANNELS), "mean": rng.normal(0, 0.3, CHANNELS),
             "var": rng.uniform(0.5, 2.0, CHANNELS),
             "mul": rng.uniform(0.3, 1.2, (CHANNELS, 1, 1)) * signs[:, None, None],
             "add": rng.normal(0, 0.3, (CHANNELS, 1, 1)), "w": rng.normal(0, 0.4, (OUT, CHANNELS, kernel, kernel)),
             "b": rng.normal(0, 0.1, OUT)}
    inits = {name: value.astype(np.float32) for name, value in inits.items()}
    nodes = [helper.make_node("BatchNormalization", ["x", "scale", "shift", "mean", "var"], ["n"], name="bn")]
    last = "n"
    if mul_add:
        nodes += [helper.make_node("Mul", ["n", "mul"], ["m"], name="mul"),
                  helper.make_node("Add", ["m", "add"], ["a"], name="add")]
        last = "a"
    nodes += [helper.make_node("Relu", [last], ["r"], name="relu"),
              helper.make_node("Conv", ["r", "w", "b"] if bias else ["r", "w"], ["y"], name="conv",
                               pads=[pads] * 4)]
    outputs = [tensor_info("y", ["N", OUT, size + 2 * pads - kernel + 1, size + 2 * pads - kernel + 1])]
    if relu_is_output:
        outputs.append(tensor_info("r", ["N", CHANNELS, size, size]))
    return make_model(nodes, [tensor_info("x", ["N", CHANNELS, size, size])], outputs, inits)


def _check(tmp_path, proto, x: np.ndarray, plan_ops: list[str] | None) -> nn_core.Model:
    path = save(proto, tmp_path / "preactivation.onnx")
    model = nn_core.load(path)
    if plan_ops is not None:
        assert model.plan_ops == plan_ops
    got = model.run({"x": x})
    want, _ = model.run_traced({"x": x})
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    reference = session.run(None, {"x": x})
    for index, name in enumerate(got):
        np.testing.assert_allclose(got[name], want[name], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(got[name], reference[index], rtol=1e-5, atol=1e-5)
    return model


POSITIVE, NEGATIVE = np.ones(CHANNELS), -np.ones(CHANNELS)
MIXED = np.array([1, -1, -1, 1, 1, -1])


@pytest.mark.parametrize(("signs", "bounds"), [(POSITIVE, "Max"), (NEGATIVE, "Min"), (MIXED, "Max+Min")])
@pytest.mark.parametrize("batch", [1, 2])
@pytest.mark.parametrize("size", [9, 64])  # 64x64: the channels-last plan of large images
def test_preactivation_becomes_bounds_and_matches(tmp_path, signs, bounds, batch, size):
    rng = np.random.default_rng(5)
    x = rng.normal(0, 1, (batch, CHANNELS, size, size)).astype(np.float32)
    _check(tmp_path, _preactivation(rng, signs, size=size), x, [bounds, "Conv"])


@pytest.mark.parametrize("bias", [True, False])
def test_batchnorm_straight_to_relu(tmp_path, bias):
    rng = np.random.default_rng(6)
    x = rng.normal(0, 1, (1, CHANNELS, 7, 7)).astype(np.float32)
    _check(tmp_path, _preactivation(rng, POSITIVE, mul_add=False, bias=bias, size=7), x, ["Max", "Conv"])


def test_strided_pointwise_takes_it(tmp_path):
    rng = np.random.default_rng(8)
    proto = _preactivation(rng, MIXED)
    conv = proto.graph.node[-1]
    conv.attribute.append(helper.make_attribute("strides", [2, 2]))
    proto.graph.output[0].CopyFrom(tensor_info("y", ["N", OUT, 5, 5]))
    x = rng.normal(0, 1, (1, CHANNELS, 9, 9)).astype(np.float32)
    _check(tmp_path, proto, x, ["Max+Min", "Conv"])


@pytest.mark.parametrize("case", ["padded 3x3", "padded 1x1", "relu output kept", "zero factor"])
def test_preactivation_left_alone(tmp_path, case):
    """A padded or larger kernel (whose borders would miss the bias share), a ReLU output the caller sees, or a
    zero factor (no bound) keep the affine step."""
    rng = np.random.default_rng(9)
    options = {"padded 3x3": {"kernel": 3, "pads": 1}, "padded 1x1": {"pads": 1},
               "relu output kept": {"relu_is_output": True}, "zero factor": {"zero_factor": True}}[case]
    x = rng.normal(0, 1, (2, CHANNELS, 9, 9)).astype(np.float32)
    model = _check(tmp_path, _preactivation(rng, MIXED, **options), x, None)
    assert model.plan_ops[0].startswith("BatchNormalization") and "Max" not in model.plan_ops
    assert not any(isinstance(step.kernel, ChannelClamp) for step in model._fast_plan().steps)


def test_outputs_are_fresh_and_nan_propagates(tmp_path):
    rng = np.random.default_rng(10)
    model = nn_core.load(save(_preactivation(rng, MIXED), tmp_path / "preactivation.onnx"))
    first_x, second_x = (rng.normal(0, 1, (1, CHANNELS, 9, 9)).astype(np.float32) for _ in range(2))
    first_x[0, :, 2, 3] = np.nan
    first = model.run({"x": first_x})["y"]
    kept = first.copy()
    model.run({"x": second_x})
    np.testing.assert_array_equal(first, kept)
    assert np.isnan(first[0, :, 2, 3]).all() and not np.isnan(np.delete(first.reshape(OUT, -1), 2 * 9 + 3, 1)).any()


def test_clamp_of_another_type_or_channel_count_runs_the_original_kernels(tmp_path):
    rng = np.random.default_rng(11)
    model = nn_core.load(save(_preactivation(rng, MIXED), tmp_path / "preactivation.onnx"))
    clamp = next(step.kernel for step in model._fast_plan().steps if isinstance(step.kernel, ChannelClamp))
    x64 = rng.normal(0, 1, (1, CHANNELS, 4, 4))
    want = np.minimum(np.maximum(x64, clamp.floor), clamp.ceiling)
    np.testing.assert_allclose(clamp.run(x64), want, rtol=1e-6)
    # a wrong channel count fails in the Max kernel, which the plan names (node and shapes) as a ModelError
    with pytest.raises(ValueError, match="broadcast"):
        clamp.run(rng.normal(0, 1, (1, CHANNELS + 1, 4, 4)).astype(np.float32))
