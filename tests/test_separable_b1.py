"""Depthwise-separable chains at batch 1 (nn_core/ops/separable.py): depthwise -> pointwise -> ... convolutions run
as one step through buffers laid out for the next layer, against the general kernels of the traced plan and
onnxruntime."""

import threading

import numpy as np
import pytest
from helpers import make_model, ort_run, tensor_info
from onnx import helper

import nn_core
from nn_core.errors import ModelError

CHAIN = "Conv+{act}+Conv+{act}"


def _separable_net(rng: np.random.Generator, blocks: list[dict], activation: str | None, channels: int = 16,
                   size: tuple[int, int] = (12, 12), stem: bool = True, bias: bool = True) -> object:
    """x (N, 3 or ``channels``, H, W) -> [3x3 stem conv ->] per block: depthwise conv (the block's pads, strides,
    dilations, kernel) -> activation -> 1x1 conv to the block's ``out`` channels -> activation -> ReduceMean over
    the image. Random weights and biases (or none), so padding, the bias and the activation all show in the
    output."""
    nodes, inits = [], {}
    current, width = "x", 3 if stem else channels

    def weights(name: str, shape: tuple[int, ...]) -> None:
        inits[f"{name}_w"] = (rng.standard_normal(shape) * (2.0 / np.prod(shape[1:])) ** 0.5).astype(np.float32)
        inits[f"{name}_b"] = (rng.standard_normal(shape[0]) * 0.3).astype(np.float32)

    def activate(name: str, value: str) -> str:
        if activation is None:
            return value
        attrs = {"alpha": 0.2} if activation == "LeakyRelu" else {}
        inputs = [value, "lo", "hi"] if activation == "Clip" else [value]
        nodes.append(helper.make_node(activation, inputs, [f"{name}_a"], name=f"{name}_act", **attrs))
        return f"{name}_a"

    if activation == "Clip":
        inits["lo"], inits["hi"] = np.float32(0.0), np.float32(6.0)
    if stem:
        weights("stem", (channels, 3, 3, 3))
        nodes.append(helper.make_node("Conv", ["x", "stem_w", "stem_b"], ["stem"], name="stem", pads=[1, 1, 1, 1]))
        current, width = activate("stem", "stem"), channels
    for index, block in enumerate(blocks):
        kernel = block.get("kernel", (3, 3))
        weights(f"dw{index}", (width, 1, *kernel))
        nodes.append(helper.make_node(
            "Conv", [current, f"dw{index}_w", f"dw{index}_b" if bias else ""], [f"dw{index}"], name=f"dw{index}",
            group=width,
            kernel_shape=list(kernel), pads=block.get("pads", [1, 1, 1, 1]), strides=block.get("strides", [1, 1]),
            dilations=block.get("dilations", [1, 1])))
        current = activate(f"dw{index}", f"dw{index}")
        weights(f"pw{index}", (block["out"], width, 1, 1))
        nodes.append(helper.make_node("Conv", [current, f"pw{index}_w", f"pw{index}_b" if bias else ""],
                                      [f"pw{index}"], name=f"pw{index}"))
        current, width = activate(f"pw{index}", f"pw{index}"), block["out"]
    nodes.append(helper.make_node("ReduceMean", [current], ["y"], name="mean", axes=[2, 3], keepdims=0))
    inputs = [tensor_info("x", ["N", 3 if stem else channels, *size])]
    return make_model(nodes, inputs, [tensor_info("y", ["N", width])], inits)


def _check(model_proto: object, rng: np.random.Generator, batch: int = 1, shape: tuple[int, ...] | None = None
           ) -> nn_core.Model:
    model = nn_core.load_proto(model_proto)
    dims = shape or tuple(d.dim_value for d in model_proto.graph.input[0].type.tensor_type.shape.dim[1:])
    x = rng.standard_normal((batch, *dims)).astype(np.float32)
    got = model.run({"x": x})["y"]
    want, _ = model.run_traced({"x": x})
    np.testing.assert_allclose(got, want["y"], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got, ort_run(model_proto, {"x": x})[0], rtol=1e-4, atol=1e-5)
    return model


MOBILENET_BLOCKS = [{"out": 24}, {"out": 32, "strides": [2, 2]}, {"out": 32}, {"out": 40, "strides": [2, 2]}]


@pytest.mark.parametrize("activation", ["Relu", "Clip", "LeakyRelu", None])
def test_chain_is_one_step_and_matches_the_general_kernels(activation):
    rng = np.random.default_rng(1)
    model = _check(_separable_net(rng, MOBILENET_BLOCKS, activation, size=(13, 11)), rng)
    conv = "Conv" + (f"+{activation}" if activation else "")
    # the stem conv is the chain's head (absorb_head)
    assert model.plan_ops == ["+".join([conv] * (2 * len(MOBILENET_BLOCKS) + 1) + ["ReduceMean"])]


@pytest.mark.parametrize("block", [
    {"out": 8, "pads": [0, 0, 0, 0]},  # no padding: every tap reads the image
    {"out": 8, "pads": [2, 0, 1, 2]},  # uneven padding, a wider right side
    {"out": 8, "pads": [1, 2, 0, 1], "strides": [2, 3]},  # strided columns, a wider left side
    {"out": 8, "pads": [2, 2, 2, 2], "dilations": [2, 2]},
    {"out": 8, "pads": [1, 1, 1, 1], "strides": [2, 1]},  # strided rows only (unit column stride)
    {"out": 8, "kernel": (5, 3), "pads": [2, 1, 2, 1]},
    {"out": 8, "kernel": (1, 1), "pads": [0, 0, 0, 0]},
    {"out": 8, "pads": [1, 5, 1, 5]},  # side padding wider than the image: more than one row of slack
])
def test_chain_geometries_match_the_general_kernels(block):
    rng = np.random.default_rng(2)
    # the block within a chain (its input the chain's buffer) and first (its input the graph's)
    for blocks in ([{"out": 12}, block, {"out": 6}], [block, {"out": 6}]):
        model = _check(_separable_net(rng, blocks, "Relu", channels=12, size=(7, 4)), rng)
        assert max(op.count("Conv") for op in model.plan_ops) == 2 * len(blocks) + 1  # with the stem as head


def test_a_chain_starting_at_a_column_strided_depthwise_conv_gathers_its_columns_from_the_input():
    rng = np.random.default_rng(10)
    blocks = [{"out": 16, "strides": [2, 2]}, {"out": 16}, {"out": 8, "strides": [2, 2]}]
    for size in ((12, 12), (11, 13), (4, 5)):  # odd sizes: windows read past the image's right side
        model = _check(_separable_net(rng, blocks, "Relu", size=size), rng)
        assert model.plan_ops == ["+".join(["Conv+Relu"] * 7 + ["ReduceMean"])]


def test_chain_of_convolutions_without_bias():
    rng = np.random.default_rng(12)
    model = _check(_separable_net(rng, MOBILENET_BLOCKS, "Relu", bias=False), rng)
    assert max(op.count("Conv") for op in model.plan_ops) == 2 * len(MOBILENET_BLOCKS) + 1


def test_chain_without_stem_reads_an_nchw_graph_input_and_keeps_it():
    rng = np.random.default_rng(3)
    proto = _separable_net(rng, [{"out": 10}, {"out": 12, "strides": [2, 2]}], "Relu", channels=9, size=(9, 9),
                           stem=False)
    model = nn_core.load_proto(proto)
    assert model.plan_ops == ["+".join(["Conv+Relu"] * 4 + ["ReduceMean"])]
    x = rng.standard_normal((1, 9, 9, 9)).astype(np.float32)
    kept = x.copy()
    got = model.run({"x": x})["y"]
    want, _ = model.run_traced({"x": x})
    np.testing.assert_allclose(got, want["y"], rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(x, kept)


@pytest.mark.parametrize("batch", [2, 3])
def test_larger_batches_run_the_layers_kernels(batch):
    rng = np.random.default_rng(4)
    model = _check(_separable_net(rng, MOBILENET_BLOCKS, "Relu"), rng, batch=batch)
    # and a single image after them still takes the chain's buffers correctly
    x = rng.standard_normal((1, 3, 12, 12)).astype(np.float32)
    want, _ = model.run_traced({"x": x})
    np.testing.assert_allclose(model.run({"x": x})["y"], want["y"], rtol=1e-4, atol=1e-5)


def test_a_new_image_size_gets_its_own_buffers():
    rng = np.random.default_rng(5)
    proto = _separable_net(rng, MOBILENET_BLOCKS, "Relu")
    proto.graph.input[0].type.tensor_type.shape.dim[2].dim_param = "H"
    proto.graph.input[0].type.tensor_type.shape.dim[3].dim_param = "W"
    for shape in ((3, 12, 12), (3, 9, 16), (3, 12, 12)):
        _check(proto, rng, shape=shape)


def test_outputs_are_fresh_and_not_overwritten_by_the_next_run():
    rng = np.random.default_rng(6)
    proto = _separable_net(rng, [{"out": 8}], "Relu", size=(6, 6))
    proto.graph.node.pop()  # drop the ReduceMean: the chain's output is the graph's
    del proto.graph.output[:]
    proto.graph.output.append(tensor_info("pw0_a", ["N", 8, 6, 6]))
    model = nn_core.load_proto(proto)
    assert model.plan_ops == ["Conv+Relu+Conv+Relu+Conv+Relu"]
    first_x, second_x = (rng.standard_normal((1, 3, 6, 6)).astype(np.float32) for _ in range(2))
    first = model.run({"x": first_x})["pw0_a"]
    kept = first.copy()
    second = model.run({"x": second_x})["pw0_a"]
    np.testing.assert_array_equal(first, kept)
    want, _ = model.run_traced({"x": second_x})
    np.testing.assert_allclose(second, want["pw0_a"], rtol=1e-4, atol=1e-5)


def test_a_depthwise_output_read_twice_is_not_fused():
    rng = np.random.default_rng(7)
    proto = _separable_net(rng, [{"out": 16}], "Relu", size=(6, 6))
    # the depthwise activation is also added to the pointwise conv's: it must stay visible
    proto.graph.node.insert(len(proto.graph.node) - 1,
                            helper.make_node("Add", ["pw0_a", "dw0_a"], ["sum"], name="sum"))
    proto.graph.node[-1].input[0] = "sum"
    model = nn_core.load_proto(proto)
    assert all(op.count("Conv") == 1 for op in model.plan_ops if "Conv" in op)
    x = rng.standard_normal((1, 3, 6, 6)).astype(np.float32)
    want, _ = model.run_traced({"x": x})
    np.testing.assert_allclose(model.run({"x": x})["y"], want["y"], rtol=1e-4, atol=1e-5)


def test_concurrent_runs_each_get_their_own_result():
    rng = np.random.default_rng(8)
    model = nn_core.load_proto(_separable_net(rng, MOBILENET_BLOCKS, "Relu"))
    images = [rng.standard_normal((1, 3, 12, 12)).astype(np.float32) for _ in range(4)]
    wants = [model.run_traced({"x": x})[0]["y"] for x in images]
    failures = []

    def worker(index: int) -> None:
        for _ in range(30):
            got = model.run({"x": images[index]})["y"]
            if not np.allclose(got, wants[index], rtol=1e-4, atol=1e-5):
                failures.append(index)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(images))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures


def test_chain_buffers_are_checked_against_the_limits():
    rng = np.random.default_rng(9)
    proto = _separable_net(rng, [{"out": 8}], "Relu", channels=16, size=(40, 40), stem=False)
    x = rng.standard_normal((1, 16, 40, 40)).astype(np.float32)
    # the input and the layers' outputs (100 KB) fit, the depthwise input buffer with its zero rows (105 KB)
    # does not
    small = nn_core.Limits(max_tensor_bytes=104_000)
    with pytest.raises(ModelError, match="dw0.*separable chain input buffer"):
        nn_core.load_proto(proto, limits=small).run({"x": x})


def test_chain_work_is_checked_against_the_limits_per_layer():
    rng = np.random.default_rng(11)
    proto = _separable_net(rng, [{"out": 64}], "Relu", channels=16, size=(12, 12), stem=False)
    x = rng.standard_normal((1, 16, 12, 12)).astype(np.float32)
    # the depthwise conv's 20,736 multiply-adds fit, the pointwise conv's 147,456 do not
    small = nn_core.Limits(max_node_work=100_000)
    with pytest.raises(ModelError, match="pw0"):
        nn_core.load_proto(proto, limits=small).run({"x": x})


def _clipped_pair(rng: np.random.Generator, channels: int = 16) -> object:
    """Depthwise 3x3 -> ReLU6 -> pointwise -> ReLU6: a chain whose unfused output stays finite for an inf input."""
    inits = {"dw_w": (rng.standard_normal((channels, 1, 3, 3)) * 0.5).astype(np.float32),
             "dw_b": rng.standard_normal(channels).astype(np.float32),
             "pw_w": (rng.standard_normal((channels, channels, 1, 1)) * 0.3).astype(np.float32),
             "pw_b": rng.standard_normal(channels).astype(np.float32),
             "lo": np.float32(0.0), "hi": np.float32(6.0)}
    nodes = [helper.make_node("Conv", ["x", "dw_w", "dw_b"], ["dw"], group=channels, pads=[1, 1, 1, 1]),
             helper.make_node("Clip", ["dw", "lo", "hi"], ["dwa"]),
             helper.make_node("Conv", ["dwa", "pw_w", "pw_b"], ["pw"]),
             helper.make_node("Clip", ["pw", "lo", "hi"], ["y"])]
    return make_model(nodes, [tensor_info("x", [1, channels, 6, 6])], [tensor_info("y", None)], inits)


@pytest.mark.parametrize("column", [0, 5])
def test_a_non_finite_value_at_a_row_end_gives_the_layers_values(column):
    # the chain's side padding is zero weights: 0 x inf at the far end of the neighbouring row would be NaN where
    # the layers' zero padding never reads the value; with ReLU6 after it the layers' output is finite
    rng = np.random.default_rng(11)
    model = nn_core.load_proto(_clipped_pair(rng))
    assert any("Conv+Clip+Conv" in op for op in model.plan_ops)
    x = rng.standard_normal((1, 16, 6, 6)).astype(np.float32)
    x[0, :, 2, column] = np.inf
    want, _ = model.run_traced({"x": x})
    assert np.isfinite(want["y"]).all()
    np.testing.assert_allclose(model.run({"x": x})["y"], want["y"], rtol=1e-5, atol=1e-5)
    finite = rng.standard_normal((1, 16, 6, 6)).astype(np.float32)  # and the chain still serves finite inputs
    np.testing.assert_allclose(model.run({"x": finite})["y"], model.run_traced({"x": finite})[0]["y"], rtol=1e-5,
                               atol=1e-5)


def test_a_nan_input_gives_nan_where_the_layers_do():
    rng = np.random.default_rng(12)
    model = nn_core.load_proto(_clipped_pair(rng))
    x = rng.standard_normal((1, 16, 6, 6)).astype(np.float32)
    x[0, 3, 1, 2] = np.nan
    want, _ = model.run_traced({"x": x})
    got = model.run({"x": x})["y"]
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want["y"]))
    np.testing.assert_allclose(got, want["y"], rtol=1e-5, atol=1e-5)
