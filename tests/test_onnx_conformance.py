"""ONNX's own node conformance cases (from the onnx wheel) through the whole loader, for every supported op.

This is the standard other runtimes are held to; it needs nothing outside the project.
"""

from __future__ import annotations

import onnx
import pytest
from onnx_node_cases import as_value, assert_same_value, cases_for

import nn_core

# case name -> why it is expected to fail; each entry is a real, explained limitation
KNOWN_FAILURES: dict[str, str] = {}

CASES = cases_for(set(nn_core.SUPPORTED_OPS), nn_core.MAX_OPSET)


def test_the_suite_is_substantial():
    assert len(CASES) > 800, f"only {len(CASES)} conformance cases selected"


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_node_case(case, tmp_path):
    if case.name in KNOWN_FAILURES:
        pytest.xfail(KNOWN_FAILURES[case.name])
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
