"""Quantized depthwise-separable chains at batch 1 (nn_core/ops/separable_int8.py): the QLinearConv layers of a QDQ
model's depthwise -> pointwise -> ... chain run as one step, each layer's requantized (and looked-up) codes written
centred as float32 into the next layer's buffer. The output codes must equal, bit for bit, the general kernels' of
the traced plan and onnxruntime's."""

import threading

import numpy as np
import onnx
import pytest
from helpers import ort_run
from onnx import helper
from test_separable_b1 import MOBILENET_BLOCKS, _separable_net

import nn_core
from nn_core.ops.qconv_pair import CentredConvPair
from nn_core.ops.separable_int8 import QuantizedSeparableChain
from nn_core.quantize import quantize


def _quantized(rng: np.random.Generator, blocks: list[dict], activation: str | None, **net) -> object:
    """The QDQ model of a separable net, its output the last layer's dequantized codes (the net's ReduceMean
    dropped: its float sums may be taken in another order, the codes and their dequantization may not differ)."""
    proto = quantize(_separable_net(rng, blocks, activation, **net), fmt="qdq", count=20)
    mean = next(node for node in proto.graph.node if node.op_type == "ReduceMean")
    mean.op_type, mean.output[0] = "Identity", "y"
    del mean.attribute[:]
    del proto.graph.output[:]
    proto.graph.output.append(helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None))
    return proto


def _chain_kernels(model: nn_core.Model) -> list[QuantizedSeparableChain]:
    """The plan's chains, also those a stem convolution before them runs as its reader (qconv_pair)."""
    kernels = [step.kernel.chain if isinstance(step.kernel, CentredConvPair) else step.kernel
               for step in model._fast_plan().steps]
    return [kernel for kernel in kernels if isinstance(kernel, QuantizedSeparableChain)]


def _check(model_proto: object, rng: np.random.Generator, batch: int = 1, shape: tuple[int, ...] | None = None,
           scale: float = 1.0) -> nn_core.Model:
    model = nn_core.load_proto(model_proto)
    dims = shape or tuple(d.dim_value for d in model_proto.graph.input[0].type.tensor_type.shape.dim[1:])
    x = (rng.standard_normal((batch, *dims)) * scale).astype(np.float32)
    got = model.run({"x": x})["y"]
    want, _ = model.run_traced({"x": x})
    np.testing.assert_array_equal(got, want["y"])
    np.testing.assert_array_equal(got, ort_run(model_proto, {"x": x})[0])
    return model


@pytest.mark.parametrize("activation", ["Relu", "LeakyRelu", None])
def test_chain_is_one_step_and_bit_exact(activation):
    """With a lookup table after each layer (LeakyRelu), a Relu folded into the codes, or none."""
    rng = np.random.default_rng(1)
    model = _check(_quantized(rng, MOBILENET_BLOCKS, activation, size=(13, 11)), rng)
    assert len(_chain_kernels(model)) == 1
    assert len(_chain_kernels(model)[0].layers) == 2 * len(MOBILENET_BLOCKS)


def test_saturating_inputs_stay_bit_exact():
    """Inputs far outside the calibration range: every layer's codes saturate at both ends."""
    rng = np.random.default_rng(7)
    proto = _quantized(rng, MOBILENET_BLOCKS, "LeakyRelu", size=(9, 10))
    for scale in (0.01, 30.0):
        _check(proto, rng, scale=scale)


@pytest.mark.parametrize("block", [
    {"out": 8, "pads": [0, 0, 0, 0]},
    {"out": 8, "pads": [2, 0, 1, 2]},
    {"out": 8, "pads": [1, 2, 0, 1], "strides": [2, 3]},
    {"out": 8, "pads": [2, 2, 2, 2], "dilations": [2, 2]},
    {"out": 8, "kernel": (5, 3), "pads": [2, 1, 2, 1]},
    {"out": 8, "pads": [1, 5, 1, 5]},
])
def test_chain_geometries_are_bit_exact(block):
    rng = np.random.default_rng(2)
    model = _check(_quantized(rng, [{"out": 12}, block, {"out": 6}], "LeakyRelu", channels=12, size=(9, 8)), rng)
    assert _chain_kernels(model)


@pytest.mark.parametrize("batch", [2, 3])
def test_larger_batches_run_the_layers_kernels(batch):
    rng = np.random.default_rng(3)
    _check(_quantized(rng, MOBILENET_BLOCKS, "LeakyRelu", size=(8, 8)), rng, batch=batch)


def test_a_new_image_size_and_outputs_kept_by_the_caller():
    """A second image size gets its own buffers; an output already handed out is not overwritten by the next
    run."""
    rng = np.random.default_rng(4)
    proto = _quantized(rng, MOBILENET_BLOCKS, "LeakyRelu", size=(8, 8))
    for dim, name in zip(proto.graph.input[0].type.tensor_type.shape.dim[2:], ("H", "W")):
        dim.dim_param = name
    model = nn_core.load_proto(proto)
    x = rng.standard_normal((1, 3, 8, 8)).astype(np.float32)
    first = model.run({"x": x})["y"]
    kept = first.copy()
    model.run({"x": rng.standard_normal((1, 3, 8, 8)).astype(np.float32)})
    np.testing.assert_array_equal(first, kept)
    bigger = rng.standard_normal((1, 3, 11, 6)).astype(np.float32)
    np.testing.assert_array_equal(model.run({"x": bigger})["y"], ort_run(proto, {"x": bigger})[0])


def test_concurrent_runs_each_get_their_own_result():
    rng = np.random.default_rng(5)
    proto = _quantized(rng, MOBILENET_BLOCKS, "LeakyRelu", size=(10, 10))
    model = nn_core.load_proto(proto)
    inputs = [rng.standard_normal((1, 3, 10, 10)).astype(np.float32) for _ in range(4)]
    wants = [ort_run(proto, {"x": x})[0] for x in inputs]
    errors: list[BaseException] = []

    def work(x: np.ndarray, want: np.ndarray) -> None:
        try:
            for _ in range(20):
                np.testing.assert_array_equal(model.run({"x": x})["y"], want)
        except BaseException as exc:  # noqa: BLE001 (reported by the main thread)
            errors.append(exc)

    threads = [threading.Thread(target=work, args=pair) for pair in zip(inputs, wants)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors


def test_codes_the_chain_does_not_take_run_the_layers_kernels():
    """The step run on codes of another type than its first layer's (the kernels in turn decide)."""
    rng = np.random.default_rng(6)
    model = nn_core.load_proto(_quantized(rng, MOBILENET_BLOCKS, "LeakyRelu", size=(8, 8)))
    chain = _chain_kernels(model)[0]
    codes = rng.integers(0, 256, (1, 16, 8, 8)).astype(np.uint8)
    want = codes
    for layer, parameters in zip(chain.layers, chain.parameters):
        want = layer.run(want, *parameters)
    np.testing.assert_array_equal(chain.run(codes), want)
    other = (codes.astype(np.int16) - 128).astype(np.int8)
    want = other
    for layer, parameters in zip(chain.layers, chain.parameters):
        want = layer.run(want, *parameters)
    np.testing.assert_array_equal(chain.run(other), want)
