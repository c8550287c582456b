"""Every hand-written hostile model (tests/hostile_models.py) meets the contract, checked in subprocesses.

For each case, ``nn_core.load`` + ``run`` + ``run_traced`` run in a worker process (tools/fuzz_models.py) under
an address-space rlimit, with a time limit, its cwd a folder other than the model's. The outcome must be "ok" or
a ``nn_core.ModelError``: no other exception, no signal, no hang, no MemoryError (even wrapped), no code from
the file executed (the canary file never appears) and no file outside the model's folder opened (the audit hook
of the worker watches ``outside/`` and the cwd, which hold a recognisable secret).

All cases are checked once per session, two workers in parallel; each parametrized test reports its own case.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT / "tools"))

import fuzz_models  # noqa: E402
import hostile_models  # noqa: E402

TIME_LIMIT = 20.0  # seconds per case
#: address space of a worker (HOSTILE_MEMORY_LIMIT=bytes overrides it, to look past a failure that hits every case)
MEMORY_LIMIT = int(os.environ.get("HOSTILE_MEMORY_LIMIT", 3.5 * (1 << 30)))
SHARED_MODELS = ROOT.parent / "shared" / "models"


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile")
    built = hostile_models.build_all(root)
    requests = []
    for case_id, (path, _description, folder) in built.items():
        timeout = 8.0 if case_id in hostile_models.SLOW_BY_DESIGN else TIME_LIMIT
        requests.append({"id": case_id, "path": str(path), "forbidden": hostile_models.forbidden_dirs(folder),
                         "timeout": timeout})
    cwd = root / "_cwd"
    cwd.mkdir()
    (cwd / "secret.bin").write_bytes(fuzz_models.SECRET_MARK.encode() * 64)
    with fuzz_models.Pool(workers=2, memory=MEMORY_LIMIT, cwd=str(cwd)) as pool:
        results = pool.map(requests)
    table = {}
    for request, outcome in zip(requests, results):
        case_id = request["id"]
        folder = built[case_id][2]
        table[case_id] = (outcome, built[case_id][1], folder)
    return table


@pytest.mark.parametrize("case_id", sorted(hostile_models.CASES))
def test_hostile_case(outcomes, case_id):
    outcome, description, folder = outcomes[case_id]
    canary = hostile_models.canary_path(folder)
    assert not canary.exists(), f"{case_id} ({description}): code from the model file was EXECUTED"
    assert outcome.status in ("ok", "modelerror"), (
        f"{case_id} ({description}): {outcome.describe()}\n{outcome.traceback}"
    )
    if case_id.startswith("real_") or case_id == "model_path_symlink_to_real_model":
        assert outcome.status == "ok", f"the real model {case_id} must load and run: {outcome.describe()}"


def test_every_case_has_a_description(tmp_path):
    for case_id in ["name_nul", "ext_parent_location", "real_lenet5"]:
        path, description, _ = hostile_models.build(tmp_path, case_id)
        assert description and (path.exists() or path.is_symlink())


def _oddball_models():
    manifest = json.loads((SHARED_MODELS / "manifest.json").read_text())
    entries = [m for m in manifest.get("failing_in_onnxruntime", []) if not m["name"].startswith("BAD_")]
    return [SHARED_MODELS / m["name"] / m["file"] for m in entries]


@pytest.mark.skipif(not (SHARED_MODELS / "manifest.json").is_file(),
                    reason=f"{SHARED_MODELS} (the real-model collection) is absent on this machine")
def test_real_models_onnxruntime_rejects_still_load(tmp_path):
    """The real models onnxruntime rejects (opset-6 PyTorch 0.3, DequantizeLinear axis under opset 12, int32
    zero point) load and run under the same limits, and the two non-model files are refused with a ModelError."""
    manifest = json.loads((SHARED_MODELS / "manifest.json").read_text())
    requests = []
    for entry in manifest.get("failing_in_onnxruntime", []):
        path = SHARED_MODELS / entry["name"] / entry["file"]
        requests.append({"id": entry["name"], "path": str(path), "forbidden": [], "timeout": 60.0})
    assert len(_oddball_models()) >= 2
    with fuzz_models.Pool(workers=2, memory=MEMORY_LIMIT, cwd=str(tmp_path)) as pool:
        results = pool.map(requests)
    for request, outcome in zip(requests, results):
        if request["id"].startswith("BAD_"):
            assert outcome.status == "modelerror", f"{request['id']}: {outcome.describe()}"
        else:
            assert outcome.status == "ok", f"{request['id']}: {outcome.describe()}\n{outcome.traceback}"
