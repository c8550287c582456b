"""Issue 10, light_resnet50 at batch 1: a residual sum of two 1x1 convolutions (a ResNet block's last convolution
and its shortcut projection, either strided) and the ReLU after it run as one matmul over stacked columns
(ops/residual.py ProjectedResidual). Against onnxruntime, the separate kernels and the traced graph."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import make_model, ort_run, tensor_info
from onnx import helper

import nn_core
from nn_core.ops.residual import ProjectedResidual, ResidualConv


def _block(size: int, batch: int, strides: list[int], sum_op: str, projection_last: bool, relu: bool,
           biases: bool) -> object:
    """A stem convolution (channels-last output), a main branch of a 3x3 (of ``strides``) then a 1x1 convolution,
    and a 1x1 projection of the stem's output (of ``strides``), summed (and rectified)."""
    rng = np.random.default_rng(size + batch)
    inits = {name: (rng.standard_normal(shape) * 0.3).astype(np.float32) for name, shape in (
        ("ws", (16, 3, 3, 3)), ("wm", (8, 16, 3, 3)), ("wc", (24, 8, 1, 1)), ("wp", (24, 16, 1, 1)),
        ("bc", (24,)), ("bp", (24,)))}
    main_inputs, projection_inputs = (["m", "wc", "bc"], ["s", "wp", "bp"]) if biases else (["m", "wc"], ["s", "wp"])
    nodes = [helper.make_node("Conv", ["x", "ws"], ["s"], pads=[1, 1, 1, 1]),
             helper.make_node("Conv", ["s", "wm"], ["m"], pads=[1, 1, 1, 1], strides=strides),
             helper.make_node("Conv", main_inputs, ["c"]),
             helper.make_node("Conv", projection_inputs, ["p"], strides=strides)]
    if not projection_last:  # the main branch's last convolution is the one taken into the sum's step
        nodes[2], nodes[3] = nodes[3], nodes[2]
    nodes.append(helper.make_node(sum_op, ["c", "p"] if projection_last else ["p", "c"], ["t"]))
    nodes.append(helper.make_node("Relu", ["t"], ["y"]) if relu else helper.make_node("Identity", ["t"], ["y"]))
    return make_model(nodes, [tensor_info("x", [batch, 3, size, size])], [tensor_info("y", None)], inits)


CASES = [  # (size, batch, strides, sum, projection last, relu, biases)
    (97, 1, [2, 2], "Sum", True, True, True),  # ResNet's later stages; odd size: 49x49 outputs
    (96, 1, [1, 1], "Add", False, True, True),  # its first stage: neither strided
    (98, 1, [2, 3], "Add", True, False, True),  # asymmetric strides, no ReLU
    (96, 2, [2, 2], "Sum", False, True, False),  # batch 2, no biases
    (101, 1, [1, 1], "Add", True, True, False),
]


@pytest.mark.parametrize("case", range(len(CASES)))
def test_projected_residual_is_one_step_and_matches_onnxruntime(case):
    size, batch, strides, sum_op, projection_last, relu, biases = CASES[case]
    model = _block(size, batch, strides, sum_op, projection_last, relu, biases)
    loaded = nn_core.load_proto(model)
    kernels = [type(step.kernel) for step in loaded._fast_plan().steps]
    assert kernels.count(ProjectedResidual) == 1 and len(kernels) == 3
    x = np.random.default_rng(case).standard_normal((batch, 3, size, size)).astype(np.float32)
    first = loaded.run({"x": x})["y"]
    kept = first.copy()
    np.testing.assert_allclose(first, ort_run(model, {"x": x})[0], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(first, loaded.run_traced({"x": x})[0]["y"], rtol=1e-4, atol=1e-4)
    second = loaded.run({"x": x * 0.5})["y"]
    np.testing.assert_array_equal(first, kept)  # a fresh output: the one a caller holds is untouched
    np.testing.assert_allclose(second, ort_run(model, {"x": x * 0.5})[0], rtol=1e-4, atol=1e-4)


def test_inputs_not_channels_last_run_the_two_kernels_and_the_sum():
    """The step's kernel called with NCHW-contiguous images (and a NaN, which the ReLU keeps) gives the values of
    the separate kernels: the convolutions, then the sum and the ReLU."""
    model = _block(97, 1, [2, 2], "Sum", True, True, True)
    loaded = nn_core.load_proto(model)
    step = next(step for step in loaded._fast_plan().steps if isinstance(step.kernel, ProjectedResidual))
    kernel = step.kernel
    rng = np.random.default_rng(3)
    values = dict(loaded._fast_plan().constants)
    main = rng.standard_normal((1, 8, 49, 49)).astype(np.float32)
    stem = rng.standard_normal((1, 16, 97, 97)).astype(np.float32)
    main[0, 2, 5, 7] = np.nan
    images = {"m": main, "s": stem}
    args = [images[name] if name in images else values[name] for name in step.inputs]
    first, second = kernel.convs
    want = np.maximum(first.run(*args[:3]) + second.run(*args[3:]), 0)
    got = kernel.run(*args)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    assert np.isnan(got[0, :, 5, 7]).all()
    images = {name: np.ascontiguousarray(a.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
              for name, a in images.items()}
    got_fast = kernel.run(*(images[name] if name in images else values[name] for name in step.inputs))
    np.testing.assert_allclose(got_fast, want, rtol=1e-5, atol=1e-5)
    assert np.isnan(got_fast[0, :, 5, 7]).all()


def test_a_residual_of_a_3x3_convolution_stays_a_residual_conv():
    """Only two 1x1 convolutions are stacked: a 3x3 projection keeps the ResidualConv step and its own."""
    model = _block(96, 1, [1, 1], "Add", True, True, True)
    for node in model.graph.node:
        if node.output[0] == "p":
            node.attribute.append(helper.make_attribute("pads", [1, 1, 1, 1]))
            node.input[1] = "wm3"
    rng = np.random.default_rng(4)
    model.graph.initializer.append(nn_core_tensor("wm3", (rng.standard_normal((24, 16, 3, 3)) * 0.3)))
    loaded = nn_core.load_proto(model)
    kernels = [type(step.kernel) for step in loaded._fast_plan().steps]
    assert ProjectedResidual not in kernels and ResidualConv in kernels
    x = rng.standard_normal((1, 3, 96, 96)).astype(np.float32)
    np.testing.assert_allclose(loaded.run({"x": x})["y"], ort_run(model, {"x": x})[0], rtol=1e-4, atol=1e-4)


def test_stacked_column_buffer_is_checked_against_the_limits():
    """The stacked columns (the two inputs' 64 channels side by side) are refused by name past the node's Limits,
    which every tensor of the model is within (the widest, 97 * 97 * 64 floats, 2.3 MiB)."""
    rng = np.random.default_rng(5)
    inits = {name: (rng.standard_normal(shape) * 0.3).astype(np.float32) for name, shape in (
        ("ws", (64, 3, 3, 3)), ("wm", (64, 64, 1, 1)), ("wc", (4, 64, 1, 1)), ("wp", (4, 64, 1, 1)))}
    nodes = [helper.make_node("Conv", ["x", "ws"], ["s"], pads=[1, 1, 1, 1]),
             helper.make_node("Conv", ["s", "wm"], ["m"]),
             helper.make_node("Conv", ["m", "wc"], ["c"]),
             helper.make_node("Conv", ["s", "wp"], ["p"], name="projection"),
             helper.make_node("Add", ["c", "p"], ["y"])]
    model = make_model(nodes, [tensor_info("x", [1, 3, 97, 97])], [tensor_info("y", None)], inits)
    loaded = nn_core.load_proto(model, limits=nn_core.Limits(max_tensor_bytes=3 * 2**20))
    assert ProjectedResidual in [type(step.kernel) for step in loaded._fast_plan().steps]
    with pytest.raises(nn_core.ModelError, match="projection.*stacked column buffer"):
        loaded.run({"x": np.zeros((1, 3, 97, 97), np.float32)})


def nn_core_tensor(name: str, value: np.ndarray):
    from onnx import numpy_helper

    return numpy_helper.from_array(value.astype(np.float32), name=name)
