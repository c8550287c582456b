"""Every node case of the onnx wheel through nn_core and through onnxruntime, counted side by side.

    python tools/node_case_scorecard.py                 # both counts
    python tools/node_case_scorecard.py --failures      # also list the cases each runtime fails, with the reason
    python tools/node_case_scorecard.py --only LSTM     # only the cases whose ops include these

A case passes when the runtime loads the model, runs every data set and every output matches the expected value
(same shape, same dtype for tensors, ``allclose(rtol=1e-3, atol=1e-5)``, NaN where NaN is expected; strings and
sequences compared element by element). Each case runs in a worker process with a time limit, so a crash or a
hang counts as a failure of that case only.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sys
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
TIMEOUT = 60.0


def _cases():
    from onnx.backend.test.case.node import collect_testcases

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return [c for c in collect_testcases(None) if c.kind == "node"]


def _to_value(value):
    """A data-set value as nn_core/onnxruntime take it: arrays, lists of arrays (sequences), None (optional)."""
    import onnx
    from onnx import numpy_helper

    if isinstance(value, onnx.TensorProto):
        return numpy_helper.to_array(value)
    if isinstance(value, (onnx.SequenceProto, onnx.OptionalProto, onnx.MapProto)):
        return numpy_helper.to_python(value) if hasattr(numpy_helper, "to_python") else value
    if isinstance(value, list):
        return [_to_value(v) for v in value]
    return value


def _compare(want, have, where: str) -> None:
    if want is None:
        if have is not None:
            raise AssertionError(f"{where}: expected None (empty optional), got {type(have).__name__}")
        return
    if isinstance(want, list):
        if not isinstance(have, list):
            raise AssertionError(f"{where}: expected a sequence, got {type(have).__name__}")
        if len(want) != len(have):
            raise AssertionError(f"{where}: sequence of {len(have)} items, expected {len(want)}")
        for i, (w, h) in enumerate(zip(want, have)):
            _compare(w, h, f"{where}[{i}]")
        return
    want = np.asarray(want)
    if have is None or isinstance(have, list):
        raise AssertionError(f"{where}: expected a tensor, got {type(have).__name__}")
    have = np.asarray(have)
    if have.shape != want.shape:
        raise AssertionError(f"{where}: shape {list(have.shape)}, expected {list(want.shape)}")
    if want.dtype.kind in "OUS":
        if have.dtype.kind not in "OUS" or not all(str(a) == str(b) for a, b in zip(have.ravel(), want.ravel())):
            raise AssertionError(f"{where}: strings differ")
        return
    if have.dtype != want.dtype:
        raise AssertionError(f"{where}: dtype {have.dtype}, expected {want.dtype}")
    if want.dtype.kind == "V" or str(want.dtype) in ("bfloat16",) or want.dtype.itemsize == 1 and want.dtype.kind \
            not in "biu":
        want, have = want.astype(np.float32), have.astype(np.float32)
    try:
        np.testing.assert_allclose(have.astype(np.float64) if have.dtype.kind in "fiub" else have,
                                   want.astype(np.float64) if want.dtype.kind in "fiub" else want,
                                   rtol=1e-3, atol=1e-5, equal_nan=True)
    except AssertionError as exc:
        lines = str(exc).splitlines()
        raise AssertionError(f"{where}: values differ ({lines[4] if len(lines) > 4 else ''})") from None


def _run_nn_core(case, feeds: dict, outputs: list) -> None:
    import nn_core

    model = nn_core.load_proto(case.model, case.name)
    for inputs, expected in zip(feeds, outputs):
        got = model.run(inputs)
        got = list(got.values())
        if len(got) != len(expected):
            raise AssertionError(f"{len(got)} outputs, expected {len(expected)}")
        for i, (w, h) in enumerate(zip(expected, got)):
            _compare(w, h, f"output {i}")


def _run_onnxruntime(case, feeds: dict, outputs: list) -> None:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.log_severity_level = 4
    session = ort.InferenceSession(case.model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    for inputs, expected in zip(feeds, outputs):
        got = session.run(None, inputs)
        if len(got) != len(expected):
            raise AssertionError(f"{len(got)} outputs, expected {len(expected)}")
        for i, (w, h) in enumerate(zip(expected, got)):
            _compare(w, h, f"output {i}")


def _check(args: tuple[int, str]) -> tuple[str, str | None]:
    index, runtime = args
    case = _CASES[index]
    names = [i.name for i in case.model.graph.input]
    feeds, outputs = [], []
    for inputs, expected in case.data_sets:
        feeds.append({name: _to_value(v) for name, v in zip(names, inputs)})
        outputs.append([_to_value(v) for v in expected])
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with np.errstate(all="ignore"):
                (_run_nn_core if runtime == "nn_core" else _run_onnxruntime)(case, feeds, outputs)
        return case.name, None
    except BaseException as exc:  # noqa: BLE001 - any failure of the case is its result
        text = str(exc).replace("\n", " ")
        return case.name, f"{type(exc).__name__}: {text[:300]}"


_CASES: list = []


def _init(selected: list[int]) -> None:
    global _CASES
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    _CASES = _cases()


def run(runtime: str, indices: list[int], workers: int) -> dict[str, str | None]:
    results: dict[str, str | None] = {}
    ctx = mp.get_context("fork")
    with ctx.Pool(workers, initializer=_init, initargs=(indices,), maxtasksperchild=200) as pool:
        pending = [(i, pool.apply_async(_check, ((i, runtime),))) for i in indices]
        for i, handle in pending:
            try:
                name, error = handle.get(TIMEOUT)
            except mp.TimeoutError:
                name, error = _CASES[i].name, f"timeout after {TIMEOUT:.0f} s"
            except Exception as exc:  # noqa: BLE001 - a worker that died
                name, error = _CASES[i].name, f"worker failed: {type(exc).__name__}: {exc}"
            results[name] = error
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--failures", action="store_true", help="list every failing case with its reason")
    parser.add_argument("--only", nargs="*", default=None, help="only cases using one of these op types")
    parser.add_argument("--runtime", choices=["both", "nn_core", "onnxruntime"], default="both")
    parser.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2)))
    args = parser.parse_args()
    global _CASES
    _CASES = _cases()
    indices = list(range(len(_CASES)))
    if args.only:
        wanted = set(args.only)
        indices = [i for i in indices if {n.op_type for n in _CASES[i].model.graph.node} & wanted]
    runtimes = ["nn_core", "onnxruntime"] if args.runtime == "both" else [args.runtime]
    results = {rt: run(rt, indices, args.workers) for rt in runtimes}
    if args.failures:
        for rt in runtimes:
            for name, error in sorted(results[rt].items()):
                if error is not None:
                    print(f"FAIL {rt:11s} {name}: {error}")
    total = len(indices)
    counts = {rt: sum(e is None for e in results[rt].values()) for rt in runtimes}
    print(f"node cases of onnx {__import__('onnx').__version__}: {total}")
    for rt in runtimes:
        print(f"  {rt:12s} passes {counts[rt]:5d} of {total}")
    if len(runtimes) == 2:
        ours, theirs = results["nn_core"], results["onnxruntime"]
        only_ours = sum(ours[n] is None and theirs[n] is not None for n in ours)
        only_theirs = sum(ours[n] is not None and theirs[n] is None for n in ours)
        print(f"  passed by nn_core only: {only_ours}, by onnxruntime only: {only_theirs}")


if __name__ == "__main__":
    main()
