"""ONNX's own node conformance cases (from the onnx wheel) through the whole loader, for every supported op.

This is the standard other runtimes are held to; it needs nothing outside the project.
"""

from __future__ import annotations

import onnx
import pytest
from onnx_node_cases import EXTRA_TYPES, PLAIN_TYPES, as_value, assert_same_value, cases_for

import nn_core

# case name -> why it is expected to fail; each entry is a real, explained limitation
KNOWN_FAILURES: dict[str, str] = {}

CASES = cases_for(set(nn_core.SUPPORTED_OPS), nn_core.MAX_OPSET, PLAIN_TYPES | EXTRA_TYPES)


def test_the_suite_is_substantial():
    assert len(CASES) > 800, f"only {len(CASES)} conformance cases selected"


# random generators: no two runtimes draw the same values (ONNX says so, even with a seed), so only what a draw
# must be is compared — shape, dtype, and for Bernoulli values of 0 and 1
RANDOM_OPS = {"Bernoulli", "RandomUniformLike", "RandomNormalLike", "RandomUniform", "RandomNormal"}


def _check_random_case(model, case) -> None:
    import numpy as np

    for inputs, outputs in case.data_sets:
        names = [i.name for i in case.model.graph.input][: len(inputs)]
        got = model.run(dict(zip(names, [as_value(v) for v in inputs])))
        for want, have in zip(outputs, got.values()):
            want = as_value(want)
            assert have.shape == want.shape and have.dtype == want.dtype
            if case.name.startswith("test_bernoulli"):
                assert set(np.unique(have).tolist()) <= {0, 1}


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_node_case(case, tmp_path):
    if case.name in KNOWN_FAILURES:
        pytest.xfail(KNOWN_FAILURES[case.name])
    if {n.op_type for n in case.model.graph.node} & RANDOM_OPS:
        _check_random_case(nn_core.load_proto(case.model, case.name), case)
        return
    path = tmp_path / "m.onnx"
    onnx.save(case.model, str(path))
    model = nn_core.load(path)
    for inputs, outputs in case.data_sets:
        inputs = [as_value(v) for v in inputs]
        names = [i.name for i in case.model.graph.input][: len(inputs)]
        got = model.run(dict(zip(names, inputs)))
        assert len(got) == len(case.model.graph.output)
        for index, (want, have) in enumerate(zip(outputs, got.values())):
            assert_same_value(have, as_value(want), f"output {index}")
