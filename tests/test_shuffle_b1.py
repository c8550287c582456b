"""ShuffleNet's channel shuffle before a depthwise conv (nn_core/ops/channel_shuffle.py): the depthwise conv runs
first with its channels in the input's order and its output is shuffled, against the traced plan's general
kernels (the steps as written) and onnxruntime."""

import numpy as np
import pytest
from helpers import make_model, ort_run, tensor_info
from onnx import TensorProto, helper

import nn_core

SHUFFLED = "Reshape+Transpose+Reshape+Conv"


def _shuffle_unit(rng: np.random.Generator, size: int, strides: int, groups: int = 4, channels: int = 24,
                  split: list[int] | None = None, merge: list[int] | None = None, relu: bool = False) -> object:
    """x (N, 8, size, size) -> grouped 1x1 conv to ``channels`` -> Reshape ``split`` -> Transpose (0, 2, 1, 3, 4)
    -> Reshape ``merge`` -> 3x3 depthwise conv (pads 1, ``strides``) [-> Relu] -> grouped 1x1 conv to 16."""
    inits = {
        "w1": (rng.standard_normal((channels, 8 // groups if 8 % groups == 0 else 8, 1, 1)) * 0.3).astype(np.float32),
        "b1": rng.standard_normal(channels).astype(np.float32),
        "split": np.array(split or [0, groups, -1, size, size], np.int64),
        "merge": np.array(merge or [0, -1, size, 0], np.int64),
        "dw": (rng.standard_normal((channels, 1, 3, 3)) * 0.3).astype(np.float32),
        "db": rng.standard_normal(channels).astype(np.float32),
        "w2": (rng.standard_normal((16, channels // groups, 1, 1)) * 0.3).astype(np.float32),
    }
    first_groups = groups if 8 % groups == 0 else 1
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["g1"], name="g1", group=first_groups),
             helper.make_node("Reshape", ["g1", "split"], ["r1"], name="split"),
             helper.make_node("Transpose", ["r1"], ["t"], name="transpose", perm=[0, 2, 1, 3, 4]),
             helper.make_node("Reshape", ["t", "merge"], ["r2"], name="merge"),
             helper.make_node("Conv", ["r2", "dw", "db"], ["d"], name="dw", group=channels, pads=[1, 1, 1, 1],
                              strides=[strides, strides])]
    last = "d"
    if relu:
        nodes.append(helper.make_node("Relu", ["d"], ["dr"], name="relu"))
        last = "dr"
    nodes.append(helper.make_node("Conv", [last, "w2"], ["y"], name="g2", group=groups))
    return make_model(nodes, [tensor_info("x", ["N", 8, size, size])], [tensor_info("y", None)], inits)


def _check(proto: object, x: np.ndarray) -> nn_core.Model:
    model = nn_core.load_proto(proto)
    got = model.run({"x": x})["y"]
    want, _ = model.run_traced({"x": x})
    np.testing.assert_allclose(got, want["y"], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(got, ort_run(proto, {"x": x})[0], rtol=1e-4, atol=1e-4)
    return model


@pytest.mark.parametrize("strides", [1, 2])
@pytest.mark.parametrize("size", [9, 100])  # NCHW convolutions, and the large-image channels-last plan
@pytest.mark.parametrize("batch", [1, 2])
def test_depthwise_conv_runs_before_the_shuffle_with_the_same_values(strides, size, batch):
    rng = np.random.default_rng(strides * 100 + size + batch)
    model = _check(_shuffle_unit(rng, size, strides), rng.standard_normal((batch, 8, size, size)).astype(np.float32))
    assert SHUFFLED in model.plan_ops


def test_a_fused_activation_and_explicit_target_shapes():
    rng = np.random.default_rng(5)
    proto = _shuffle_unit(rng, 10, 1, groups=2, channels=12, split=[1, 2, 6, 10, 10], merge=[1, 12, 10, 10],
                          relu=True)
    model = _check(proto, rng.standard_normal((1, 8, 10, 10)).astype(np.float32))
    assert SHUFFLED + "+Relu" in model.plan_ops


def test_a_reshape_pair_that_is_not_a_channel_shuffle_runs_as_written():
    # the split and the transpose move a row axis, not a channel group: the same step, the steps' own order
    rng = np.random.default_rng(6)
    proto = _shuffle_unit(rng, 10, 1, split=[0, 0, 2, 5, 10], merge=[0, 24, 10, 10])
    model = _check(proto, rng.standard_normal((1, 8, 10, 10)).astype(np.float32))
    assert SHUFFLED in model.plan_ops


def test_the_shuffled_output_is_fresh():
    rng = np.random.default_rng(7)
    proto = _shuffle_unit(rng, 8, 1)
    del proto.graph.node[-1]  # the depthwise conv's output is the graph's
    del proto.graph.output[:]
    proto.graph.output.append(tensor_info("d", None))
    model = nn_core.load_proto(proto)
    first_x, second_x = (rng.standard_normal((1, 8, 8, 8)).astype(np.float32) for _ in range(2))
    first = model.run({"x": first_x})["d"]
    kept = first.copy()
    model.run({"x": second_x})
    np.testing.assert_array_equal(first, kept)
    want, _ = model.run_traced({"x": first_x})
    np.testing.assert_allclose(first, want["d"], rtol=1e-4, atol=1e-4)


def test_a_split_shape_fed_at_run_time_keeps_the_steps_as_written():
    # the fused step keeps its group count per input shape: a target shape that can change between runs must not
    # be answered from it (the second run's 4 groups would have been shuffled as the first run's 2)
    rng = np.random.default_rng(4)
    channels, size = 24, 6
    inits = {"merge": np.array([0, -1, size, size], np.int64),
             "dw": rng.standard_normal((channels, 1, 3, 3)).astype(np.float32),
             "db": rng.standard_normal(channels).astype(np.float32)}
    nodes = [helper.make_node("Reshape", ["x", "split"], ["r1"], name="split"),
             helper.make_node("Transpose", ["r1"], ["t"], name="transpose", perm=[0, 2, 1, 3, 4]),
             helper.make_node("Reshape", ["t", "merge"], ["r2"], name="merge"),
             helper.make_node("Conv", ["r2", "dw", "db"], ["y"], name="dw", group=channels, pads=[1, 1, 1, 1])]
    inputs = [tensor_info("x", [1, channels, size, size]),
              helper.make_tensor_value_info("split", TensorProto.INT64, [5])]
    model = nn_core.load_proto(make_model(nodes, inputs, [tensor_info("y", None)], inits))
    assert not any("Reshape+Transpose+Reshape+Conv" in op for op in model.plan_ops)
    x = rng.standard_normal((1, channels, size, size)).astype(np.float32)
    for groups in (2, 4):
        feeds = {"x": x, "split": np.array([0, groups, -1, size, size], np.int64)}
        want, _ = model.run_traced(feeds)
        np.testing.assert_allclose(model.run(feeds)["y"], want["y"], rtol=1e-4, atol=1e-4, err_msg=f"{groups}")
