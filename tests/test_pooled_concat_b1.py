"""Issue 10, ImageNet-size models: a Concat on the channel axis that only a MaxPool reads runs as one step that
pools each part and concatenates the pooled parts (channels_last.PooledConcat). Against onnxruntime, the traced
graph and the two kernels run in the graph's order."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import build_kernel, make_model, ort_run, tensor_info
from onnx import helper

import nn_core

POOLS = [{"kernel_shape": [3, 3], "strides": [2, 2]},
         {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]},
         {"kernel_shape": [2, 3], "strides": [2, 1], "ceil_mode": 1},
         {"kernel_shape": [2, 2], "strides": [2, 2], "pads": [0, 1, 1, 0], "dilations": [2, 1]}]


def _fire(rng: np.random.Generator, pool_attrs: dict, size: int = 97, extra_reader: bool = False, axis: int = 1):
    """A stem conv, a 1x1 and a 3x3 expand conv, their Concat, then a MaxPool (and optionally a second reader
    of the Concat)."""
    def w(*shape):
        return (rng.standard_normal(shape) * (2.0 / np.prod(shape[1:])) ** 0.5).astype(np.float32)

    inits = {"w0": w(8, 3, 3, 3), "w1": w(6, 8, 1, 1), "w2": w(10, 8, 3, 3), "b2": w(10, 1)[:, 0]}
    nodes = [helper.make_node("Conv", ["x", "w0"], ["c0"], strides=[2, 2]),
             helper.make_node("Relu", ["c0"], ["r0"]),
             helper.make_node("Conv", ["r0", "w1"], ["c1"]),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Conv", ["r0", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1]),
             helper.make_node("Concat", ["r1", "c2"], ["cat"], axis=axis),
             helper.make_node("MaxPool", ["cat"], ["y"], **pool_attrs)]
    outputs = [tensor_info("y", None)]
    if extra_reader:
        nodes.append(helper.make_node("Relu", ["cat"], ["z"]))
        outputs.append(tensor_info("z", None))
    return make_model(nodes, [tensor_info("x", [1, 3, size, size])], outputs, inits)


@pytest.mark.parametrize("pool_attrs", POOLS)
def test_concat_then_maxpool_pools_the_parts(pool_attrs):
    rng = np.random.default_rng(len(str(pool_attrs)))
    model = _fire(rng, pool_attrs)
    loaded = nn_core.load_proto(model)
    x = rng.standard_normal((1, 3, 97, 97)).astype(np.float32)
    want = ort_run(model, {"x": x})[0]
    for _ in range(2):
        np.testing.assert_allclose(loaded.run({"x": x})["y"], want, rtol=1e-5, atol=1e-5)
    x[0, 2, 40, 41] = np.nan  # (onnxruntime's NaN handling is its own: against the node-by-node graph)
    traced, _ = loaded.run_traced({"x": x})
    assert np.isnan(traced["y"]).any()
    np.testing.assert_allclose(loaded.run({"x": x})["y"], traced["y"], rtol=1e-5, atol=1e-5)  # NaN where it is
    assert "Concat+MaxPool" in [step.label for step in loaded._fast_plan().steps]


@pytest.mark.parametrize("extra_reader, axis", [(True, 1), (False, -3), (False, 2)])
def test_concat_read_elsewhere_or_on_another_axis_stays_apart(extra_reader, axis):
    rng = np.random.default_rng(5)
    pool_attrs = POOLS[0]
    model = _fire(rng, pool_attrs, extra_reader=extra_reader, axis=axis) if axis != 2 else None
    if model is None:  # concatenating along the height: both parts of the same width, the stem's output twice
        inits = {"w0": rng.standard_normal((8, 3, 3, 3)).astype(np.float32)}
        nodes = [helper.make_node("Conv", ["x", "w0"], ["c0"], strides=[2, 2]),
                 helper.make_node("Concat", ["c0", "c0"], ["cat"], axis=2),
                 helper.make_node("MaxPool", ["cat"], ["y"], **pool_attrs)]
        model = make_model(nodes, [tensor_info("x", [1, 3, 97, 97])], [tensor_info("y", None)], inits)
    loaded = nn_core.load_proto(model)
    x = rng.standard_normal((1, 3, 97, 97)).astype(np.float32)
    want = ort_run(model, {"x": x})
    got = loaded.run({"x": x})
    for name, value in zip([o.name for o in model.graph.output], want, strict=True):
        np.testing.assert_allclose(got[name], value, rtol=1e-5, atol=1e-5)
    assert "Concat+MaxPool" not in [step.label for step in loaded._fast_plan().steps]


def test_pooled_concat_of_parts_that_do_not_fit_fails_as_the_concat():
    """Parts of different heights would pool to one size; the step still fails with the Concat's error, and
    takes the two kernels in order for a batch of another size in one part."""
    from nn_core.ops.channels_last import ChannelsLastMaxPool, PooledConcat

    rng = np.random.default_rng(6)
    a = rng.standard_normal((1, 4, 10, 9)).astype(np.float32)
    b = rng.standard_normal((1, 5, 11, 9)).astype(np.float32)
    concat = build_kernel(helper.make_node("Concat", ["a", "b"], ["c"], axis=1, name="cat"), [a, b], ())
    plain = build_kernel(helper.make_node("MaxPool", ["c"], ["y"], kernel_shape=[3, 3], strides=[2, 2]), [a], ())
    pool = ChannelsLastMaxPool(plain.node)
    fused = PooledConcat(concat, pool)
    with pytest.raises(nn_core.ModelError, match="cat.*cannot concatenate"):
        fused.run(a, b)
    with pytest.raises(nn_core.ModelError, match="cat.*cannot concatenate"):
        fused.run(a, np.concatenate([a, a]))
    nhwc = np.ascontiguousarray(b[:, :, :10].transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
    np.testing.assert_array_equal(fused.run(a, None, nhwc), pool.run(concat.run(a, nhwc)))
