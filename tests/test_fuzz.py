"""A short, deterministic run of the mutation fuzzer (tools/fuzz_models.py): no mutant may end BAD.

The mutants are fixed by (seed, index), so every run checks the same ones; the time bound only protects CI
from a slow machine. A longer hunt: ``python tools/fuzz_models.py --seconds 600 --seed 1``.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

import onnx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))

import fuzz_models  # noqa: E402

MUTANTS = 2000
SECONDS = 45.0  # a bound for slow machines only: 2000 mutants take ~15 s on two cores


def test_fixed_seed_mutants_meet_the_contract(tmp_path):
    report = fuzz_models.fuzz(seconds=SECONDS, seed=20240, out=str(tmp_path / "findings"), workers=2,
                              max_mutants=MUTANTS, timeout=10.0, verbose=False)
    assert report.tried > 0
    assert report.bad == 0, report.summary()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 2**32 - 1), st.sampled_from([p.name for p in fuzz_models.default_seeds()]))
def test_mutator_yields_bytes_and_a_description(seed, seed_name):
    """The mutator itself never fails: any (seed, model) gives a serialized mutant and the steps taken."""
    seeds = {p.name: p.read_bytes() for p in fuzz_models.default_seeds()}
    import nn_core

    data, steps = fuzz_models.make_mutant(seeds[seed_name], seed_name, random.Random(seed),
                                          sorted(nn_core.SUPPORTED_OPS))
    assert isinstance(data, bytes) and steps
    if not any(step.startswith("bytes_") for step in steps):
        onnx.load_model_from_string(data)  # proto-level mutants stay parseable protobuf
