"""ONNX's own node conformance cases (shipped in the onnx wheel), selected for the ops the engine supports."""

from __future__ import annotations

import functools
import warnings

import numpy as np
import onnx
from onnx import numpy_helper

PLAIN_TYPES = {
    onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16, onnx.TensorProto.INT8,
    onnx.TensorProto.UINT8, onnx.TensorProto.INT16, onnx.TensorProto.UINT16, onnx.TensorProto.INT32,
    onnx.TensorProto.UINT32, onnx.TensorProto.INT64, onnx.TensorProto.UINT64, onnx.TensorProto.BOOL,
}


def as_array(value) -> np.ndarray:
    return numpy_helper.to_array(value) if isinstance(value, onnx.TensorProto) else np.asarray(value)


def model_opset(model: onnx.ModelProto, domain: str = "") -> int:
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx") and domain in ("", "ai.onnx") or entry.domain == domain:
            return entry.version
    return 1


@functools.lru_cache(maxsize=1)
def all_cases() -> tuple:
    """Every node case of the onnx wheel; generating them takes seconds, so once per test session."""
    from onnx.backend.test.case.node import collect_testcases

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return tuple(collect_testcases(None))


def cases_for(supported: set[str], max_opset: int) -> list:
    """The node cases whose every op is in ``supported``, with plain numeric types only (as the scorecard)."""
    chosen = []
    for case in all_cases():
        ops = {n.op_type for n in case.model.graph.node}
        if not ops <= supported or case.name.startswith("test_gradient"):
            continue
        values = list(case.model.graph.input) + list(case.model.graph.output)
        if any(v.type.tensor_type.elem_type not in PLAIN_TYPES for v in values):
            continue
        if model_opset(case.model) > max_opset:
            continue
        chosen.append(case)
    return chosen


def check_case_with_kernels(case) -> None:
    """Run a single-node case straight through its kernel (no loader); raise AssertionError on mismatch."""
    from nn_core.ops.testing import run_node

    graph = case.model.graph
    assert len(graph.node) == 1, "multi-node case"
    node = graph.node[0]
    for inputs, outputs in case.data_sets:
        inputs = [as_array(v) for v in inputs]
        outputs = [as_array(v) for v in outputs]
        names = [i.name for i in graph.input][: len(inputs)]
        by_name = dict(zip(names, inputs))
        feeds = [by_name.get(name) if name else None for name in node.input]
        got = run_node(node, feeds, model_opset(case.model, node.domain))
        for want, have in zip(outputs, got):
            np.testing.assert_allclose(np.asarray(have), want, rtol=1e-3, atol=1e-5)
            assert np.asarray(have).shape == want.shape, f"shape {np.asarray(have).shape} vs {want.shape}"


if __name__ == "__main__":  # python tests/onnx_node_cases.py Relu Conv ...: quick report while writing kernels
    import sys

    from nn_core.ops import load_all_kernels, supported_ops

    load_all_kernels()
    wanted = set(sys.argv[1:]) or set(supported_ops())
    passed, failures = 0, []
    for case in cases_for(wanted & set(supported_ops()), 10**6):
        if len(case.model.graph.node) != 1:
            continue
        try:
            check_case_with_kernels(case)
            passed += 1
        except Exception as exc:  # report every failure, keep going
            first_line = str(exc).splitlines()[0][:150] if str(exc) else ""
            failures.append(f"{case.name}: {type(exc).__name__}: {first_line}")
    for line in failures:
        print("FAIL", line)
    print(f"{passed} passed, {len(failures)} failed")
