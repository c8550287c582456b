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


# beyond the plain numeric types: strings (object arrays, compared exactly), bfloat16 and the float8 types
# (converted bit-exactly by nn_core.ops.float8), the 4-bit integers and float4
EXTRA_TYPES = {onnx.TensorProto.STRING, onnx.TensorProto.BFLOAT16} | {
    getattr(onnx.TensorProto, name) for name in ("FLOAT8E4M3FN", "FLOAT8E4M3FNUZ", "FLOAT8E5M2", "FLOAT8E5M2FNUZ",
                                                  "FLOAT8E8M0", "INT4", "UINT4", "INT2", "UINT2", "FLOAT4E2M1")
    if hasattr(onnx.TensorProto, name)}


def as_array(value) -> np.ndarray:
    return numpy_helper.to_array(value) if isinstance(value, onnx.TensorProto) else np.asarray(value)


def as_value(value):
    """A data-set value as the model takes and gives it: an array, a list (a sequence) or None (empty optional)."""
    if value is None:
        return None
    if isinstance(value, list):
        return [as_value(v) for v in value]
    return as_array(value)


def value_types_ok(type_proto: onnx.TypeProto, allowed: set[int]) -> bool:
    """Whether a declared type is a tensor of an allowed element type, or a sequence/optional of such."""
    kind = type_proto.WhichOneof("value")
    if kind == "tensor_type":
        return type_proto.tensor_type.elem_type in allowed
    if kind == "sequence_type":
        return value_types_ok(type_proto.sequence_type.elem_type, allowed)
    if kind == "optional_type":
        return value_types_ok(type_proto.optional_type.elem_type, allowed)
    return False


def assert_same_value(have, want, where: str = "output") -> None:
    """Exact structure (sequences item by item, None for an empty optional), same dtype and shape, strings equal,
    numbers within rtol 1e-3 / atol 1e-5."""
    if want is None:
        assert have is None, f"{where}: expected an empty optional, got {type(have).__name__}"
        return
    if isinstance(want, list):
        assert isinstance(have, list), f"{where}: expected a sequence, got {type(have).__name__}"
        assert len(have) == len(want), f"{where}: {len(have)} items, expected {len(want)}"
        for i, (h, w) in enumerate(zip(have, want)):
            assert_same_value(h, w, f"{where}[{i}]")
        return
    want = as_array(want)
    assert isinstance(have, np.ndarray), f"{where}: expected an array, got {type(have).__name__}"
    assert have.shape == want.shape, f"{where}: shape {have.shape}, expected {want.shape}"
    assert have.dtype == want.dtype, f"{where}: dtype {have.dtype}, expected {want.dtype}"
    if want.dtype.kind in "OUS":
        assert have.tolist() == want.tolist(), f"{where}: strings {have.tolist()} != {want.tolist()}"
        return
    if want.dtype.kind not in "biufc" or want.dtype.itemsize == 1 and want.dtype.kind == "f":
        # bfloat16, float8, int4...: the values as float32 (within rtol 1e-3: below their resolution)
        have, want = have.astype(np.float32), want.astype(np.float32)
    np.testing.assert_allclose(have, want, rtol=1e-3, atol=1e-5, err_msg=where)


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


def cases_for(supported: set[str], max_opset: int, types: set[int] = PLAIN_TYPES) -> list:
    """The node cases whose every op is in ``supported`` and whose inputs and outputs are tensors of ``types``
    (plain numeric types unless told; the loader-level conformance adds EXTRA_TYPES), or sequences/optionals of
    them."""
    chosen = []
    for case in all_cases():
        ops = {n.op_type for n in case.model.graph.node}
        if not ops <= supported or case.name.startswith("test_gradient"):
            continue
        values = list(case.model.graph.input) + list(case.model.graph.output)
        if not all(value_types_ok(v.type, types) for v in values):
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
