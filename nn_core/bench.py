"""`python -m nn_core bench`: our latency beside onnxruntime's and onnx's ReferenceEvaluator, in one run.

The references are imported only here, only when installed, and only to be measured against: they are never a
code path of the engine. Timings are interleaved after warm-up, so a noisy, shared machine slows both sides
alike and the ratios hold: short blocks of consecutive calls of each engine in turn (ours x10, theirs x10, ...),
each block's first call left out, so both are measured warm. Alternating call by call (``--block 1``) measures
each engine right after the other has filled the caches with its own weights and buffers: on LeNet-5 at batch 1
that added ~25 us to both sides' ~55-80 us (2026-11-30), a cost neither has when run on its own.
"""

from __future__ import annotations

import argparse
import importlib
import json
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable

import numpy as np


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="path to an .onnx file")
    parser.add_argument("--batch", default="1,64,1000", help="comma-separated batch sizes (default 1,64,1000)")
    parser.add_argument("--threads", type=int, default=1, help="threads for BLAS and onnxruntime (default 1)")
    parser.add_argument("--seconds", type=float, default=2.0, help="time budget per batch size and engine")
    parser.add_argument("--block", type=int, default=10,
                        help="consecutive calls of each engine per turn, the first left out (default 10; 1: "
                             "alternate call by call, each engine timed after the other)")
    parser.add_argument("--profile", action="store_true", help="time per node and per op type (ours)")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurement")
    parser.add_argument("--no-reference", action="store_true", help="skip onnx's ReferenceEvaluator")


def _optional(module: str):
    try:
        return importlib.import_module(module)
    except ImportError:
        return None


def example_input(spec, batch: int, seed: int = 0) -> np.ndarray:
    """Random values in [0, 1) shaped as the input declares, the batch axis (first symbolic dim) set to ``batch``."""
    shape = []
    for i, dim in enumerate(spec.shape or [batch]):
        if isinstance(dim, int) and not (i == 0 and dim == 1 and batch != 1 and len(spec.shape) > 1):
            shape.append(dim)
        else:
            shape.append(batch if i == 0 else 1)
    rng = np.random.default_rng(seed)
    dtype = spec.dtype or np.dtype(np.float32)
    if dtype.kind in "iu":
        return rng.integers(0, 10, size=shape).astype(dtype)
    return rng.random(shape).astype(dtype)


def interleaved_medians(functions: dict[str, Callable[[], object]], seconds: float,
                        max_repeat: int = 2000, block: int = 1) -> dict[str, float]:
    """Median time of each function, measured round-robin after two warm-up calls each: ``block`` consecutive
    calls of each function per turn, the first of a block left out when ``block`` > 1 (so each is timed warm,
    not right after the others)."""
    times: dict[str, list[float]] = {name: [] for name in functions}
    for fn in functions.values():
        fn()
        fn()
    block = max(1, block)
    deadline = time.perf_counter() + seconds * len(functions)
    while True:
        for name, fn in functions.items():
            for call in range(block):
                start = time.perf_counter()
                fn()
                if call or block == 1:
                    times[name].append(time.perf_counter() - start)
        rounds = len(next(iter(times.values())))
        if rounds >= max_repeat or (rounds >= 5 and time.perf_counter() > deadline):
            break
    return {name: statistics.median(values) for name, values in times.items()}


_MEMORY_PROBE = r"""
import os, sys, json
os.environ.setdefault("OPENBLAS_NUM_THREADS", sys.argv[4])
import numpy as np
def rss(field):
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1]) * 1024
engine, path, batch, threads = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
import nn_core
from nn_core.bench import example_input
ours = nn_core.load(path)
x = example_input(ours.inputs[0], batch)
name = ours.inputs[0].name
if engine == "ours":
    run = lambda: ours.run({name: x})
else:
    del ours
    import onnxruntime as ort
    so = ort.SessionOptions(); so.intra_op_num_threads = threads
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    run = lambda: sess.run(None, {name: x})
run()
with open("/proc/self/clear_refs", "w") as f:  # reset the peak to the current resident size
    f.write("5")
base = rss("VmRSS:")
for _ in range(3):
    run()
print(json.dumps({"peak": rss("VmHWM:") - base}))
"""


def peak_memory(engine: str, path: str, batch: int, threads: int) -> float | None:
    """Peak resident memory a run adds, above the loaded model and its input, in a fresh process (bytes)."""
    try:
        out = subprocess.run([sys.executable, "-c", _MEMORY_PROBE, engine, path, str(batch), str(threads)],
                             capture_output=True, text=True, timeout=300, check=True)
        return float(json.loads(out.stdout.strip().splitlines()[-1])["peak"])
    except (subprocess.SubprocessError, ValueError, KeyError, IndexError):
        return None


def _fmt_time(seconds: float) -> str:
    return f"{seconds * 1e6:9.1f} us" if seconds < 1e-2 else f"{seconds * 1e3:9.2f} ms"


def main(args: argparse.Namespace) -> int:
    from .model import load

    ours = load(args.model)
    spec = ours.inputs[0]
    ort = _optional("onnxruntime")
    session = None
    if ort is not None:
        options = ort.SessionOptions()
        options.intra_op_num_threads = args.threads
        options.inter_op_num_threads = 1
        try:
            session = ort.InferenceSession(args.model, options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime refuses some files we run
            print(f"onnxruntime cannot run this model: {str(exc).splitlines()[0][:150]}")
    reference = None
    if not args.no_reference and _optional("onnx.reference") is not None:
        from onnx.reference import ReferenceEvaluator

        try:
            reference = ReferenceEvaluator(args.model)
        except Exception:
            reference = None
    fixed_batch = spec.shape[0] if spec.shape and isinstance(spec.shape[0], int) else None
    batches = [int(b) for b in args.batch.split(",") if b.strip()]
    if fixed_batch is not None and (len(spec.shape) > 1):
        batches = sorted({fixed_batch}) if any(b != fixed_batch for b in batches) else batches
        print(f"(the model's batch size is fixed at {fixed_batch})")
    order = f"blocks of {args.block} calls, warm" if args.block > 1 else "call by call"
    print(f"{args.model}: {len(ours.nodes)} nodes, {ours.parameter_count:,} parameters; {args.threads} thread(s); "
          f"medians of interleaved runs ({order})")
    header = f"{'batch':>6} {'ours':>12} {'per image':>12} {'onnxruntime':>12} {'ours/ort':>9} {'reference':>12} " \
             f"{'ref/ours':>9}"
    print(header)
    for batch in batches:
        a, b, ref_time = measure_batch(ours, session, reference, {spec.name: example_input(spec, batch)},
                                       args.seconds, with_reference=batch <= 64, block=args.block)
        print(f"{batch:6d} {_fmt_time(a)} {_fmt_time(a / batch)} "
              f"{_fmt_time(b) if b else '           -'} {f'{a / b:8.2f}x' if b else '        -'} "
              f"{_fmt_time(ref_time) if ref_time else '           -'} "
              f"{f'{ref_time / a:8.1f}x' if ref_time else '        -'}")
    if not args.no_memory:
        batch = max(batches)
        mine = peak_memory("ours", args.model, batch, args.threads)
        theirs = peak_memory("ort", args.model, batch, args.threads) if session is not None else None
        if mine is not None:
            line = f"peak memory of a batch-{batch} run (above model + input): ours {mine / 2**20:.1f} MiB"
            if theirs:
                line += f", onnxruntime {theirs / 2**20:.1f} MiB, ratio {mine / max(theirs, 1):.2f}"
            print(line)
    if args.profile:
        feeds = {spec.name: example_input(spec, batches[0])}
        print_profile(ours, feeds, args.seconds)
        if session is not None:
            print_reference_profile(ort, args.model, args.threads, feeds, args.seconds)
    return 0


def measure_batch(ours, session, reference, feeds: dict, seconds: float, with_reference: bool, block: int = 1
                  ) -> tuple[float, float | None, float | None]:
    """Median seconds per run of ours, onnxruntime (None if absent) and the ReferenceEvaluator (None if skipped)."""
    functions: dict[str, Callable[[], object]] = {"ours": lambda: ours.run(feeds)}
    if session is not None:
        functions["ort"] = lambda: session.run(None, feeds)
    # large batches take long enough per call that a block would only stretch the time budget
    medians = interleaved_medians(functions, seconds, block=block if _timed(functions["ours"]) < 0.01 else 1)
    ref_time = None
    if reference is not None and with_reference:  # far slower: timed on its own, a bounded number of times
        once = _timed(lambda: reference.run(None, feeds))
        repeat = max(1, min(30, int(seconds / max(once, 1e-6))))
        ref_time = statistics.median(_timed(lambda: reference.run(None, feeds)) for _ in range(repeat))
    return medians["ours"], medians.get("ort"), ref_time


def _timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def print_profile(model, feeds, seconds: float) -> None:
    """Time per node and per op type of the optimised plan (as run, i.e. after fusion)."""
    per_node: dict[str, list[float]] = defaultdict(list)
    kinds: dict[str, str] = {}
    deadline = time.perf_counter() + seconds
    rounds = 0
    while rounds < 5 or (time.perf_counter() < deadline and rounds < 1000):
        for step, spent in model.profile(feeds):
            per_node[step.node.name].append(spent)
            kinds[step.node.name] = step.label
        rounds += 1
    node_time = {name: statistics.median(v) for name, v in per_node.items()}
    total = sum(node_time.values()) or 1.0
    batch = next(iter(feeds.values())).shape[0] if next(iter(feeds.values())).ndim else 1
    print(f"\nprofile (batch {batch}, median of {rounds} runs; sum of nodes {_fmt_time(total).strip()}):")
    by_op: dict[str, float] = defaultdict(float)
    for name, spent in node_time.items():
        by_op[kinds[name]] += spent
    print(f"{'op type':28s} {'time':>12} {'share':>7}")
    for op, spent in sorted(by_op.items(), key=lambda kv: -kv[1]):
        print(f"{op:28s} {_fmt_time(spent)} {spent / total * 100:6.1f}%")
    print(f"\n{'node':40s} {'op':16s} {'time':>12} {'share':>7}")
    for name, spent in sorted(node_time.items(), key=lambda kv: -kv[1])[:40]:
        print(f"{name[:40]:40s} {kinds[name][:16]:16s} {_fmt_time(spent)} {spent / total * 100:6.1f}%")


def reference_node_times(ort, path: str, threads: int, feeds: dict, seconds: float) -> dict[tuple[str, str], float]:
    """onnxruntime's own per-node kernel times (its profiler), median microseconds by (node, op type): where
    the gap to the reference is, node by node. onnxruntime fuses and inserts nodes of its own (reorders to its
    blocked layout), so its nodes are not ours one for one; the op types say what they are."""
    import json
    import os

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.enable_profiling = True
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    deadline = time.perf_counter() + seconds
    runs = 0
    while runs < 5 or (time.perf_counter() < deadline and runs < 1000):
        session.run(None, feeds)
        runs += 1
    trace = session.end_profiling()
    try:
        with open(trace) as f:
            events = json.load(f)
    finally:
        os.remove(trace)
    times: dict[tuple[str, str], list[float]] = defaultdict(list)
    for event in events:
        name = event.get("name", "")
        if event.get("cat") == "Node" and name.endswith("_kernel_time"):
            times[(name[: -len("_kernel_time")], event.get("args", {}).get("op_name", "?"))].append(event["dur"])
    return {key: statistics.median(values) for key, values in times.items()}


def print_reference_profile(ort, path: str, threads: int, feeds: dict, seconds: float) -> None:
    times = reference_node_times(ort, path, threads, feeds, seconds)
    if not times:
        return
    total = sum(times.values()) or 1.0
    print(f"\nonnxruntime's profile (its own nodes; sum of nodes {_fmt_time(total * 1e-6).strip()}):")
    by_op: dict[str, float] = defaultdict(float)
    for (_, op), spent in times.items():
        by_op[op] += spent
    print(f"{'op type':28s} {'time':>12} {'share':>7}")
    for op, spent in sorted(by_op.items(), key=lambda kv: -kv[1]):
        print(f"{op[:28]:28s} {_fmt_time(spent * 1e-6)} {spent / total * 100:6.1f}%")
    print(f"\n{'node':40s} {'op':16s} {'time':>12} {'share':>7}")
    for (name, op), spent in sorted(times.items(), key=lambda kv: -kv[1])[:40]:
        print(f"{name[:40]:40s} {op[:16]:16s} {_fmt_time(spent * 1e-6)} {spent / total * 100:6.1f}%")
