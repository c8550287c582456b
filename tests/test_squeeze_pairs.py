"""cancel_squeeze_pairs: a model run on one unbatched image, each layer wrapped in Squeeze / Unsqueeze (PyTorch's
dynamo export), plans like the batched model; pairs that are not inverses stay."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import make_model, ort_run, tensor_info
from onnx import helper

import nn_core


def _axes(opset: int, name: str, axes: list[int]) -> tuple[list, dict, dict]:
    """(extra inputs, attributes, initializers) giving a Squeeze / Unsqueeze these axes at ``opset``."""
    if opset >= 13:
        return [name], {}, {name: np.array(axes, np.int64)}
    return [], {"axes": axes}, {}


def _unbatched_cnn(opset: int, middle: str = "Relu", squeeze_axes=(0,), unsqueeze_axes=(0,),
                   extra_output: str | None = None) -> object:
    """x (1, 12, 12) -> Unsqueeze -> Conv 3x3 -> Squeeze -> ``middle`` -> Unsqueeze -> MaxPool -> Squeeze ->
    Unsqueeze -> Conv 3x3 -> Squeeze -> Flatten-by-Reshape -> MatMul."""
    rng = np.random.default_rng(opset)
    inits = {"w1": (rng.standard_normal((4, 1, 3, 3)) * 0.5).astype(np.float32),
             "w2": (rng.standard_normal((6, 4, 3, 3)) * 0.3).astype(np.float32),
             "shape": np.array([1, -1], np.int64),
             "fc": (rng.standard_normal((216, 10)) * 0.1).astype(np.float32),
             "slope": np.array([0.1], np.float32),
             "channel_slope": (rng.random((4, 1, 1)) * 0.3).astype(np.float32)}
    nodes = []

    def squeeze(op: str, source: str, target: str, axes) -> None:
        extra, attrs, more = _axes(opset, f"{target}_axes", list(axes))
        inits.update(more)
        nodes.append(helper.make_node(op, [source, *extra], [target], name=target, **attrs))

    squeeze("Unsqueeze", "x", "u0", [0])
    nodes.append(helper.make_node("Conv", ["u0", "w1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]))
    squeeze("Squeeze", "c1", "s1", squeeze_axes)
    if middle == "PRelu":
        nodes.append(helper.make_node("PRelu", ["s1", "slope"], ["r1"], name="act"))
    elif middle == "PRelu_channels":
        nodes.append(helper.make_node("PRelu", ["s1", "channel_slope"], ["r1"], name="act"))
    else:
        nodes.append(helper.make_node(middle, ["s1"], ["r1"], name="act"))
    squeeze("Unsqueeze", "r1", "u1", unsqueeze_axes)
    nodes.append(helper.make_node("MaxPool", ["u1"], ["p1"], name="pool", kernel_shape=[2, 2], strides=[2, 2]))
    squeeze("Squeeze", "p1", "s2", [0])
    squeeze("Unsqueeze", "s2", "u2", [0])
    nodes.append(helper.make_node("Conv", ["u2", "w2"], ["c2"], name="conv2", pads=[1, 1, 1, 1]))
    squeeze("Squeeze", "c2", "s3", [0])
    nodes += [helper.make_node("Reshape", ["s3", "shape"], ["f"], name="flatten"),
              helper.make_node("MatMul", ["f", "fc"], ["y"], name="fc")]
    outputs = [tensor_info("y", [1, 10])] + ([tensor_info(extra_output, None)] if extra_output else [])
    return make_model(nodes, [tensor_info("x", [1, 12, 12])], outputs, inits, opset=opset)


def _check(proto, x: np.ndarray) -> nn_core.Model:
    model = nn_core.load_proto(proto)
    got = model.run({"x": x})
    for name, want in zip([o.name for o in proto.graph.output], ort_run(proto, {"x": x}), strict=True):
        np.testing.assert_allclose(got[name], want, rtol=1e-4, atol=1e-5)
    traced, _ = model.run_traced({"x": x})
    np.testing.assert_allclose(got["y"], traced["y"], rtol=1e-4, atol=1e-5)
    return model


@pytest.mark.parametrize("opset", [11, 13, 18])
@pytest.mark.parametrize("middle", ["Relu", "Sigmoid", "PRelu"])
def test_wrapped_layers_plan_as_batched_ones(opset, middle):
    x = np.random.default_rng(1).standard_normal((1, 12, 12)).astype(np.float32)
    model = _check(_unbatched_cnn(opset, middle), x)
    ops = model.plan_ops
    # the pairs went: the first conv takes its activation and pooling, the second conv follows it directly
    assert not any(op.startswith("Unsqueeze") for op in ops[1:]), ops
    assert any(op.startswith("Conv+" + middle) for op in ops) or any("MaxPool" in op for op in ops), ops
    assert sum(op.startswith(("Squeeze", "Unsqueeze")) for op in ops) == 2, ops  # the graph's own ends


@pytest.mark.parametrize("case", [
    {"squeeze_axes": (0,), "unsqueeze_axes": (1,)},  # not inverses: (4, 12, 12) -> (4, 1, 12, 12)
    {"middle": "PRelu_channels"},  # a per-channel slope broadcasts by rank
    {"extra_output": "r1"},  # the op's output is a graph output: it must stay as it is
])
def test_pairs_that_are_not_inverses_stay(case):
    proto = _unbatched_cnn(13, **case)
    x = np.random.default_rng(2).standard_normal((1, 12, 12)).astype(np.float32)
    if case.get("unsqueeze_axes") == (1,):  # a different model: only check the wrapping stays
        ops = nn_core.load_proto(proto).plan_ops
        assert sum(op.startswith(("Squeeze", "Unsqueeze")) for op in ops) >= 4, ops
        return
    model = _check(proto, x)
    assert sum(op.startswith(("Squeeze", "Unsqueeze")) for op in model.plan_ops) >= 4, model.plan_ops


def _rescanned(nodes, graph_outputs):
    """The rule by its plain reading, as the oracle: cancel the first pair (in node order) and look again from
    the first node, until none is left. Quadratic; the pass must give the same nodes."""
    from dataclasses import replace

    from nn_core.optimize import _AXIS_FREE_ELEMENTWISE, producers_and_readers, sole_reader

    def axes(node):
        return sorted(node.attrs["axes"])

    changed = True
    while changed:
        changed = False
        _, readers = producers_and_readers(nodes)
        for first in nodes:
            if first.op_type not in ("Squeeze", "Unsqueeze"):
                continue
            inverse = "Unsqueeze" if first.op_type == "Squeeze" else "Squeeze"
            middle, last = None, sole_reader(readers, first, graph_outputs)
            if last is not None and last.op_type in _AXIS_FREE_ELEMENTWISE and last.inputs == first.outputs:
                middle, last = last, sole_reader(readers, last, graph_outputs)
            if last is None or last.op_type != inverse or last.inputs[0] != (middle or first).outputs[0] \
                    or axes(last) != axes(first) or (middle is None and last.outputs[0] in graph_outputs):
                continue
            source, target = first.inputs[0], last.outputs[0]
            if middle is not None:
                kept = replace(middle, inputs=[source], outputs=[target])
                nodes = [kept if node is middle else node for node in nodes if node is not first and node is not last]
            else:
                nodes = [replace(node, inputs=[source if name == target else name for name in node.inputs])
                         for node in nodes if node is not first and node is not last]
            changed = True
            break
    return nodes


def test_the_pass_cancels_what_rescanning_after_every_rewrite_does():
    """Random chains of Squeeze / Unsqueeze (mostly axes [0]), elementwise ops, two-input Adds and graph outputs,
    values read several times: the pass (a heap of positions, looking again only where a rewrite can make a
    match) leaves the same nodes as the plain rescanning rule. (Seeded: these graphs hold pairs that only match
    after another pair two nodes on went.)"""
    import random

    from nn_core.graph import NodeInfo
    from nn_core.optimize import cancel_squeeze_pairs

    rng = random.Random(0)
    for _ in range(3000):
        values, nodes = ["x"], []
        for index in range(rng.randint(1, 24)):
            op = rng.choice(["Squeeze", "Unsqueeze", "Squeeze", "Unsqueeze", "Relu", "Sigmoid", "Add"])
            source, out = rng.choice(values[-2:]), f"v{index}"
            inputs = [source, rng.choice(values)] if op == "Add" else [source]
            attrs = {"axes": rng.choice([[0], [0], [1]])} if "queeze" in op else {}
            nodes.append(NodeInfo(f"n{index}", op, "", inputs, [out], attrs))
            values.append(out)
        outputs = {values[-1]} | ({rng.choice(values[1:])} if rng.random() < 0.3 else set())
        assert cancel_squeeze_pairs(list(nodes), {}, outputs) == _rescanned(list(nodes), outputs), nodes

