"""Every gradient rule against central finite differences in float64, over ONNX's own node cases.

For each single-node conformance case whose op has a gradient rule, the floating-point inputs are promoted to
float64, a random cotangent is drawn for every floating output, and the rule's input gradients are compared with
central differences of ``sum(<output, cotangent>)`` at a sample of elements of every floating input. Points where
the function has a kink or a jump (ReLU at 0, Sign at 0, pooling ties, clipping bounds) are recognised by their
one-sided differences, or differences at two step sizes, disagreeing, and skipped: there the derivative is not
defined and any subgradient is right. Outputs that are NaN or infinite at the case's point carry no cotangent.
"""

from __future__ import annotations

import numpy as np
import pytest
from onnx_node_cases import as_array, cases_for, model_opset

import nn_core
from nn_core.ops.attributes import node_attributes
from nn_core.ops.registry import NodeSpec, resolve

EPS = 1e-6
SAMPLES = 16  # elements checked per input


def _kernel_class(node, opset):
    return resolve(node.op_type, opset, node.domain)


def _gradient_cases() -> list:
    chosen = []
    for case in cases_for(set(nn_core.SUPPORTED_OPS), nn_core.MAX_OPSET):
        graph = case.model.graph
        if len(graph.node) != 1:
            continue
        node = graph.node[0]
        cls = _kernel_class(node, model_opset(case.model, node.domain))
        if cls is None or not cls.has_gradient():
            continue
        inputs = [as_array(v) for v in case.data_sets[0][0]]
        if not any(np.asarray(x).dtype.kind == "f" for x in inputs):
            continue
        chosen.append(case)
    return chosen


CASES = _gradient_cases()


def _setup(case):
    graph = case.model.graph
    node = graph.node[0]
    opset = model_opset(case.model, node.domain)
    raw = [as_array(v) for v in case.data_sets[0][0]]
    by_name = dict(zip([i.name for i in graph.input], raw))
    inputs = [by_name.get(name) if name else None for name in node.input]
    inputs = [x.astype(np.float64) if x is not None and x.dtype.kind == "f" else x for x in inputs]
    consts = [x if x is not None and x.dtype.kind != "f" else None for x in inputs]
    spec = NodeSpec(op_type=node.op_type, name=node.name or "node", domain=node.domain, inputs=list(node.input),
                    outputs=list(node.output), attrs=node_attributes(node), opset=opset, consts=consts)
    return _kernel_class(node, opset)(spec), inputs


def _outputs(kernel, inputs) -> list[np.ndarray]:
    result = kernel.run(*inputs)
    return [np.asarray(v) for v in (result if isinstance(result, tuple) else (result,))]


def test_the_rules_cover_the_ops_a_digit_model_uses():
    required = {"Add", "Sub", "Mul", "Div", "Pow", "Sqrt", "Relu", "LeakyRelu", "Clip", "Sigmoid", "Tanh",
                "HardSwish", "HardSigmoid", "Erf", "Gelu", "Softmax", "LogSoftmax", "Conv", "ConvTranspose",
                "MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "Gemm", "MatMul",
                "BatchNormalization", "LayerNormalization", "ReduceMean", "ReduceSum", "Dropout", "Concat", "Split",
                "Transpose", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Slice", "Gather", "Pad", "Resize",
                "Upsample", "Identity", "Expand", "Neg", "Exp", "Log", "Where", "Cast"}
    from nn_core.ops.registry import all_kernels

    with_rule = {op for (domain, op), versions in all_kernels().items()
                 if domain == "" and all(cls.has_gradient() for _, cls in versions)}
    assert required <= with_rule, f"no gradient rule (at every version) for {sorted(required - with_rule)}"


def test_the_gradient_suite_is_substantial():
    assert len(CASES) > 300, f"only {len(CASES)} node cases have a gradient rule to check"


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_rule_matches_finite_differences(case):
    kernel, inputs = _setup(case)
    outputs = _outputs(kernel, inputs)
    again = _outputs(kernel, inputs)
    if any(not np.array_equal(a, b, equal_nan=True) for a, b in zip(outputs, again)):
        pytest.skip("the op is random (a fresh draw each run): finite differences do not apply")
    if any(o.dtype.kind == "f" and o.dtype != np.float64 for o in outputs):
        pytest.skip("the op computes in a lower precision than float64 (e.g. a Cast): differences would be noise")
    if all(x is None or x.dtype.kind != "f" or x.size == 0 for x in inputs):
        pytest.skip("every floating-point input is empty: there is no element to differentiate by")
    rng = np.random.default_rng(0)
    # outputs that are NaN or infinite at the case's point (cases that test edge values) carry no cotangent
    cotangents = [np.where(np.isfinite(o), rng.standard_normal(o.shape), 0.0) if o.dtype.kind == "f" else None
                  for o in outputs]
    if all(c is None for c in cotangents):
        pytest.skip("no floating-point output")

    finite = [np.isfinite(o) if c is not None else None for o, c in zip(outputs, cotangents)]

    def loss(values) -> float:
        """The scalar whose gradient the rule gives; NaN where a nudge leaves the op's domain (the forward
        refuses it, or the output changes shape: a float depth of OneHot, the limit of Range)."""
        try:
            outs = _outputs(kernel, values)
        except nn_core.ModelError:
            return float("nan")
        if any(o.shape != base.shape for o, base in zip(outs, outputs)):
            return float("nan")
        return float(sum(np.sum(np.where(m, o * c, 0.0)) for o, c, m in zip(outs, cotangents, finite)
                         if c is not None))

    grads = list(kernel.backward(inputs, outputs, cotangents))
    grads += [None] * (len(inputs) - len(grads))
    checked = 0
    for index, (x, grad) in enumerate(zip(inputs, grads)):
        if x is None or x.dtype.kind != "f" or x.size == 0:
            continue
        if grad is not None:
            assert np.shape(grad) == x.shape, f"input {index}: gradient shape {np.shape(grad)} vs {x.shape}"
        rule = np.zeros(x.shape) if grad is None else np.asarray(grad, np.float64)
        for flat in rng.choice(x.size, size=min(SAMPLES, x.size), replace=False):
            where = np.unravel_index(flat, x.shape)
            values = {}
            for step in (-EPS, -EPS / 2, 0.0, EPS / 2, EPS):
                shifted = x.copy()
                shifted[where] += step
                values[step] = loss([shifted if i == index else v for i, v in enumerate(inputs)])
            if not all(np.isfinite(list(values.values()))):
                continue  # the edge of the op's domain (acosh at 1, an input that is itself NaN)
            left, right = (values[0.0] - values[-EPS]) / EPS, (values[EPS] - values[0.0]) / EPS
            central = (values[EPS] - values[-EPS]) / (2 * EPS)
            finer = (values[EPS / 2] - values[-EPS / 2]) / EPS
            if abs(left - right) > 1e-3 * (1 + abs(left) + abs(right)) or abs(central - finer) > 1e-3 * (
                    1 + abs(central)):
                continue  # a kink or a jump (ReLU at 0, Sign at 0): no derivative to compare with
            have = rule[where]
            if not np.isfinite(have) and not all(m is None or m.all() for m in finite):
                continue  # NaN cotangent-times-NaN from an output masked as non-finite: no value to compare
            assert abs(have - central) <= 1e-4 * (1 + abs(central)), (
                f"input {index} ({case.model.graph.node[0].input[index]}) at {tuple(int(i) for i in where)}: "
                f"rule {have:.6g}, finite differences {central:.6g}")
            checked += 1
    if not checked:
        pytest.skip("every sampled point is a kink, a jump or outside the op's domain (an edge-value case)")
