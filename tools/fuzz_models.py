"""Fuzz nn_core with hostile ONNX files: every file must load/run or raise nn_core.ModelError, nothing else.

    python tools/fuzz_models.py --seconds 600 --seed 1 [--seeds-dir DIR ...] [--out findings/] [--workers N]

Mutants are made from real models (``assets/lenet5.onnx``, ``tests/models/*.onnx`` and any ``--seeds-dir``):
protobuf-aware mutations (attribute values and types set to extremes, op types swapped, inputs/outputs dropped or
duplicated, initializer dims/types/raw data damaged, external data pointed outside the folder, nodes shuffled,
names collided, random supported nodes inserted, opsets bumped) and byte-level mutations of the serialized file.

Each mutant is loaded and run (``load``, ``run``, ``run_traced`` on generated feeds) in a worker subprocess held
to an address-space rlimit and a per-mutant timeout; workers are reused and restarted after a crash or a hang.
Outcomes: ``ok``, ``ModelError`` (the contract), or BAD: another exception type, a signal/crash, a hang, a
MemoryError (even one wrapped in a ModelError: the engine should refuse before allocating), or a read of a file
outside the model's folder. Every BAD mutant is saved with its traceback under ``--out``; the summary groups
them into distinct failure classes (exception type + the nn_core line that raised it).

The same machinery runs hand-written hostile cases (``tests/hostile_models.py``) in ``tests/test_hostile_models.py``
and a short fixed-seed run in ``tests/test_fuzz.py``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import random
import select
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
THIS = Path(__file__).resolve()
RESULT_TAG = "@@NNCORE-FUZZ-RESULT@@ "
#: the bytes every "secret" file outside a model folder holds; a worker that reads them reports a BAD escape
SECRET_MARK = "NNCORE-SECRET-5f1c0de"
DEFAULT_MEMORY = 3 << 30  # address-space rlimit of a worker (bytes)
FEED_LIMIT = 256 << 20  # inputs larger than this are not fed (load-only check)


# ======================================================================================================
# worker side: runs in the subprocess
# ======================================================================================================

def _make_feeds(model, rng):
    import numpy as np

    feeds = {}
    for spec in model.inputs:
        shape = [d if isinstance(d, int) and d >= 0 else 1 for d in (spec.shape if spec.shape is not None else [1])]
        dtype = spec.dtype if spec.dtype is not None else np.dtype(np.float32)
        count = 1
        for d in shape:
            count *= d
        if count * max(dtype.itemsize, 1) > FEED_LIMIT:
            return None
        if dtype.kind == "f":
            feeds[spec.name] = rng.standard_normal(shape).astype(dtype)
        elif dtype.kind in "iu":
            feeds[spec.name] = rng.integers(0, 2, size=shape).astype(dtype)
        elif dtype.kind == "b":
            feeds[spec.name] = rng.integers(0, 2, size=shape).astype(bool)
        elif dtype.kind == "c":
            feeds[spec.name] = rng.standard_normal(shape).astype(dtype)
        else:
            feeds[spec.name] = np.full(shape, "a", dtype=object)
    return feeds


def _exception_chain(exc):
    seen = []
    while exc is not None and exc not in seen and len(seen) < 20:
        seen.append(exc)
        exc = exc.__cause__ or exc.__context__
    return seen


def _where(exc) -> tuple[str, str]:
    """(innermost nn_core frame 'file:line', innermost frame of all) of an exception's traceback."""
    frames = traceback.extract_tb(exc.__traceback__)
    inner = "?"
    ours = "?"
    for frame in frames:
        filename = frame.filename
        try:
            rel = str(Path(filename).resolve().relative_to(ROOT))
        except ValueError:
            rel = filename if filename.startswith("<") else f"{Path(filename).parent.name}/{Path(filename).name}"
        inner = f"{rel}:{frame.lineno}"
        if rel.startswith("nn_core") or filename == "<nn_core plan>":
            ours = f"{rel}:{frame.lineno}"
    return ours, inner


class _Watch:
    """An audit hook recording every file opened under a forbidden folder (outside the model's folder)."""

    def __init__(self):
        self.forbidden: list[str] = []
        self.hits: list[str] = []
        self.busy = False

    def hook(self, event, args):
        if event != "open" or self.busy or not self.forbidden:
            return
        self.busy = True
        try:
            target = args[0]
            if isinstance(target, int) or str(target).startswith("<"):
                return
            if isinstance(target, bytes):
                target = os.fsdecode(target)
            target = os.path.realpath(os.path.abspath(os.fspath(target)))
            for folder in self.forbidden:
                if target == folder or target.startswith(folder + os.sep):
                    self.hits.append(target)
        except Exception:  # noqa: BLE001 - never let the hook itself fail an open
            pass
        finally:
            self.busy = False


def _shape_of(value) -> object:
    """A JSON-able shape: a tensor's dims, a sequence's list of shapes, None for an empty optional."""
    import numpy as np

    if value is None:
        return None
    if isinstance(value, list):
        return [_shape_of(item) for item in value]
    return list(np.shape(value))


def _check_one(request: dict, watch: _Watch) -> dict:
    import numpy as np

    import nn_core

    path = request["path"]
    watch.forbidden = [os.path.realpath(f) for f in request.get("forbidden", [])]
    watch.hits = []
    result: dict = {"id": request.get("id"), "stage": "load"}
    rng = np.random.default_rng(0)
    stage = "load"
    try:
        model = nn_core.load(path)
        stage = "feeds"
        try:
            feeds = _make_feeds(model, rng)
        except Exception as exc:  # noqa: BLE001 - the harness, not the engine
            feeds = None
            result["note"] = f"feeds not built: {type(exc).__name__}: {exc}"
        if feeds is None:
            result.setdefault("note", "declared inputs too large to feed: load only")
        else:
            stage = "run"
            outputs = model.run(feeds)
            stage = "run_specialized"  # a shape's second run specializes the plan for it, the third uses that
            for _ in range(2):
                model.run(feeds)
            stage = "run_traced"
            traced, _records = model.run_traced(feeds)
            result["outputs"] = {k: _shape_of(v) for k, v in outputs.items()}
        result["status"] = "ok"
        text = repr(result)
    except BaseException as exc:  # noqa: BLE001 - everything is an outcome here
        hits, watch.forbidden = list(watch.hits), []  # formatting a traceback reads source files (linecache)
        watch.hits = hits
        chain = _exception_chain(exc)
        # where a ModelError came from: its innermost cause; any other exception: itself
        ours, inner = _where(chain[-1] if isinstance(exc, nn_core.ModelError) else exc)
        result["type"] = type(exc).__name__
        result["message"] = str(exc)[:2000]
        result["traceback"] = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))[-12000:]
        result["where"] = ours
        result["inner"] = inner
        if isinstance(exc, nn_core.ModelError):
            result["status"] = "modelerror"
            causes = [type(e).__name__ for e in chain[1:]]
            if causes:
                result["cause"] = causes[-1]
                result["where"] = ours
            if any(isinstance(e, MemoryError) for e in chain):
                result["status"] = "bad"
                result["bad"] = "memory"
        else:
            result["status"] = "bad"
            result["bad"] = "memory" if isinstance(exc, MemoryError) else "exception"
        text = result["message"] + result["traceback"]
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            result["bad"] = "exit"
    result["stage"] = stage
    if watch.hits:
        result["status"] = "bad"
        result["bad"] = "escape"
        result["escape"] = sorted(set(watch.hits))[:5]
        result["message"] = f"opened {result['escape']} outside the model folder; " + result.get("message", "")
    if SECRET_MARK in text:
        result["status"] = "bad"
        result["bad"] = "escape"
        result["escape"] = result.get("escape", []) + ["secret contents in output/message"]
        result["message"] = "the secret's contents show in the outcome; " + result.get("message", "")
    watch.forbidden = []
    return result


def worker_main(memory: int) -> None:
    """Read one JSON request per line on stdin, answer one tagged JSON line per request on stdout."""
    import faulthandler
    import resource

    faulthandler.enable()  # a crash prints the Python stack to stderr, which the parent keeps
    faulthandler.register(signal.SIGUSR1, all_threads=False)  # the parent asks where a hang is
    if memory > 0:
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    watch = _Watch()
    sys.addaudithook(watch.hook)
    sys.path.insert(0, str(ROOT))
    import nn_core  # noqa: F401 - import before the first request: its cost is not a mutant's

    out = sys.stdout
    for line in sys.stdin:
        if not line.strip():
            continue
        request = json.loads(line)
        result = _check_one(request, watch)
        out.write(RESULT_TAG + json.dumps(result, default=str) + "\n")
        out.flush()


# ======================================================================================================
# parent side: a pool of reusable workers
# ======================================================================================================

@dataclass
class Outcome:
    id: str
    status: str  # ok | modelerror | bad
    bad: str = ""  # exception | memory | escape | crash | hang | exit
    type: str = ""
    message: str = ""
    where: str = ""
    inner: str = ""
    traceback: str = ""
    seconds: float = 0.0
    raw: dict = field(default_factory=dict)

    @property
    def signature(self) -> str:
        if self.status != "bad":
            return self.status
        if self.bad in ("crash", "hang"):
            return f"{self.bad}: {self.type.split(' within ')[0]} at {self.where or '?'}"
        return f"{self.bad}: {self.type} at {self.where if self.where != '?' else self.inner}"

    def describe(self) -> str:
        if self.status == "ok":
            return "ok"
        if self.status == "modelerror":
            return f"ModelError: {self.message}"
        return f"BAD {self.bad}: {self.type}: {self.message[:500]} [{self.where} / {self.inner}]"


def _innermost_nn_core_frame(stack: str) -> str:
    """'nn_core/x.py:N' of the innermost engine frame in a faulthandler dump (most recent call first)."""
    blocks = stack.split("most recent call first")
    for line in blocks[-1].splitlines():
        line = line.strip()
        if line.startswith("File ") and "nn_core" in line:
            filename = line.split('"')[1]
            number = line.split(", line ")[1].split()[0]
            try:
                filename = str(Path(filename).resolve().relative_to(ROOT))
            except ValueError:
                pass
            return f"{filename}:{number}"
    return "?"


class Worker:
    """One worker subprocess; ``check`` sends a request and waits for its answer (restarting when needed)."""

    def __init__(self, memory: int = DEFAULT_MEMORY, cwd: str | None = None):
        self.memory = memory
        self.cwd = cwd or tempfile.gettempdir()
        self.proc: subprocess.Popen | None = None
        self.buffer = b""
        self.stderr_file = None
        self.started = 0

    def _start(self) -> None:
        env = dict(os.environ)
        for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            env[var] = "1"
        env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
        self.stderr_file = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            [sys.executable, str(THIS), "--worker", "--memory", str(self.memory)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.stderr_file, cwd=self.cwd, env=env,
            start_new_session=True,
        )
        self.buffer = b""
        self.started += 1

    def stop(self) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            self.proc.wait()
            for stream in (self.proc.stdin, self.proc.stdout):
                try:
                    stream.close()
                except OSError:
                    pass
            self.proc = None
        if self.stderr_file is not None:
            self.stderr_file.close()
            self.stderr_file = None

    def _hang_stack(self) -> str:
        """Ask the stuck worker for its Python stack (faulthandler on SIGUSR1) and return it."""
        try:
            self.proc.send_signal(signal.SIGUSR1)
        except (ProcessLookupError, OSError):
            return ""
        time.sleep(0.5)
        return self._stderr_tail()

    def _stderr_tail(self) -> str:
        if self.stderr_file is None:
            return ""
        self.stderr_file.seek(0, os.SEEK_END)
        size = self.stderr_file.tell()
        self.stderr_file.seek(max(0, size - 6000))
        return self.stderr_file.read().decode("utf-8", "replace")

    def check(self, case_id: str, path: str, forbidden: list[str] = (), timeout: float = 10.0) -> Outcome:
        if self.proc is None or self.proc.poll() is not None:
            self.stop()
            self._start()
        request = json.dumps({"id": case_id, "path": path, "forbidden": list(forbidden)}) + "\n"
        start = time.monotonic()
        try:
            self.proc.stdin.write(request.encode())
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            pass
        deadline = start + timeout
        fd = self.proc.stdout.fileno()
        while True:
            while b"\n" in self.buffer:
                line, self.buffer = self.buffer.split(b"\n", 1)
                text = line.decode("utf-8", "replace")
                if text.startswith(RESULT_TAG):
                    raw = json.loads(text[len(RESULT_TAG):])
                    return Outcome(case_id, raw["status"], raw.get("bad", ""), raw.get("type", ""),
                                   raw.get("message", ""), raw.get("where", ""), raw.get("inner", ""),
                                   raw.get("traceback", ""), time.monotonic() - start, raw)
            left = deadline - time.monotonic()
            if left <= 0:
                stack = self._hang_stack()
                self.stop()
                where = _innermost_nn_core_frame(stack)
                return Outcome(case_id, "bad", "hang", f"no answer within {timeout:g} s", stack[-1500:], where,
                               where, stack, time.monotonic() - start)
            ready, _, _ = select.select([fd], [], [], min(left, 1.0))
            if not ready:
                continue
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                code = self.proc.wait()
                tail = self._stderr_tail()
                self.stop()
                what = f"killed by signal {signal.Signals(-code).name}" if code < 0 else f"exit status {code}"
                where = _innermost_nn_core_frame(tail)
                return Outcome(case_id, "bad", "crash", what, tail[-2000:], where, where, tail,
                               time.monotonic() - start)
            self.buffer += chunk


class Pool:
    """``workers`` Workers used from as many threads: ``map(requests)`` -> outcomes in request order."""

    def __init__(self, workers: int = 2, memory: int = DEFAULT_MEMORY, cwd: str | None = None):
        self.workers = [Worker(memory, cwd) for _ in range(max(1, workers))]

    def close(self) -> None:
        for worker in self.workers:
            worker.stop()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def map(self, requests: list[dict], default_timeout: float = 20.0) -> list[Outcome]:
        results: list[Outcome | None] = [None] * len(requests)
        lock = threading.Lock()
        position = [0]

        def loop(worker: Worker):
            while True:
                with lock:
                    index = position[0]
                    position[0] += 1
                if index >= len(requests):
                    return
                req = requests[index]
                results[index] = worker.check(req["id"], req["path"], req.get("forbidden", ()),
                                              req.get("timeout", default_timeout))

        threads = [threading.Thread(target=loop, args=(w,), daemon=True) for w in self.workers]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return results  # type: ignore[return-value]


# ======================================================================================================
# the mutator
# ======================================================================================================

EXTREME_INTS = [0, -1, 1, 2, -2, 3, 2**31 - 1, 2**31, -(2**31), 2**32, 2**63 - 1, -(2**63), 10**6, 100000, 65536]
EXTREME_FLOATS = [0.0, -0.0, -1.0, 1e-45, 1e38, -1e38, 3.4e38, math.inf, -math.inf, math.nan, 1e-7, 0.5, 2.0]
ATTR_NAMES = ["strides", "pads", "dilations", "kernel_shape", "group", "axis", "axes", "perm", "alpha", "beta",
              "epsilon", "min", "max", "keepdims", "to", "transA", "transB", "auto_pad", "ceil_pad", "ceil_mode",
              "count_include_pad", "mode", "blocksize", "value", "output_padding", "output_shape", "k", "largest",
              "sorted", "split", "starts", "ends", "shape", "allowzero", "storage_order", "num_outputs",
              "direction", "exclusive", "reverse", "detect_positive", "lambd", "bias", "size", "p", "gamma",
              "momentum", "training_mode", "noop_with_empty_axes", "select_last_index", "batch_dims", "reduction",
              "coordinate_transformation_mode", "scales", "sizes", "nearest_mode", "cubic_coeff_a", "upper",
              "saturate", "block_size", "stash_type", "equation", "approximate", "fmod", "seed", "dtype"]
AUTO_PADS = [b"NOTSET", b"SAME_UPPER", b"SAME_LOWER", b"VALID", b"", b"BOGUS", b"\x00", b"SAME_UPPER\n"]


def _random_dims(rng: random.Random, rank: int | None = None) -> list[int]:
    rank = rng.choice([0, 1, 2, 3, 4, 5, 8, 40]) if rank is None else rank
    return [rng.choice([0, 1, 2, 3, 7, 28, -1, 2**31, 10**5, 2**40, 2**62]) for _ in range(rank)]


def _random_attribute(rng: random.Random, name: str):
    from onnx import AttributeProto, helper

    kind = rng.choice(["int", "ints", "float", "floats", "string", "strings", "tensor", "hugelist", "empty",
                       "graph", "sparse"])
    if kind == "int":
        return helper.make_attribute(name, rng.choice(EXTREME_INTS))
    if kind == "ints":
        return helper.make_attribute(name, [rng.choice(EXTREME_INTS) for _ in range(rng.choice([0, 1, 2, 4, 8]))],
                                     attr_type=AttributeProto.INTS)
    if kind == "float":
        return helper.make_attribute(name, rng.choice(EXTREME_FLOATS))
    if kind == "floats":
        return helper.make_attribute(name, [rng.choice(EXTREME_FLOATS) for _ in range(rng.choice([0, 1, 2, 4]))],
                                     attr_type=AttributeProto.FLOATS)
    if kind == "string":
        return helper.make_attribute(name, rng.choice(AUTO_PADS + [b"abc", "é".encode(), b"1.5", b"nan"]))
    if kind == "strings":
        return helper.make_attribute(name, [b"a", b"", b"\xff\xfe"], attr_type=AttributeProto.STRINGS)
    if kind == "tensor":
        return helper.make_attribute(name, _random_tensor(rng, "t"))
    if kind == "hugelist":
        return helper.make_attribute(name, [rng.choice([1, 2, -1, 0])] * rng.choice([33, 100, 5000]),
                                     attr_type=AttributeProto.INTS)
    if kind == "graph":
        graph = helper.make_graph([], "g", [], [])
        return helper.make_attribute(name, graph)
    if kind == "sparse":
        return helper.make_attribute(name, _random_sparse(rng))
    attr = AttributeProto()
    attr.name = name
    attr.type = rng.choice([0, AttributeProto.INTS, AttributeProto.TENSOR, 99])
    return attr


def _random_tensor(rng: random.Random, name: str):
    import numpy as np
    from onnx import TensorProto, numpy_helper

    choice = rng.random()
    if choice < 0.5:
        dtype = rng.choice([np.float32, np.int64, np.int32, np.uint8, np.int8, np.float16, np.float64, np.bool_])
        shape = rng.choice([(), (1,), (2,), (4,), (2, 3), (1, 1, 3, 3), (0,), (3, 0)])
        array = (np.asarray(np.random.default_rng(rng.randrange(1 << 30)).standard_normal(shape)) * 3).astype(dtype)
        return numpy_helper.from_array(array, name)
    tensor = TensorProto()
    tensor.name = name
    tensor.data_type = rng.choice([1, 7, 6, 2, 3, 8, 9, 10, 11, 16, 17, 21, 22, 23, 0, 99, 30])
    tensor.dims.extend(_random_dims(rng, rng.choice([0, 1, 2, 4])))
    tensor.raw_data = bytes(rng.randrange(256) for _ in range(rng.choice([0, 1, 4, 8, 16, 64])))
    return tensor


def _random_sparse(rng: random.Random):
    from onnx import TensorProto, helper

    values = TensorProto()
    values.name = f"sp{rng.randrange(1000)}"
    values.data_type = rng.choice([1, 7, 99, 0])
    count = rng.choice([0, 1, 2, 3])
    values.dims.append(count)
    values.raw_data = struct.pack(f"<{count}f", *[1.0] * count) if values.data_type == 1 else b"\x00" * 8 * count
    indices = TensorProto()
    indices.name = values.name + "_i"
    indices.data_type = rng.choice([7, 7, 1, 6])
    indices.dims.extend(rng.choice([[count], [count, 2], [count + 1]]))
    n = 1
    for d in indices.dims:
        n *= d
    indices.raw_data = struct.pack(f"<{n}q", *[rng.choice([0, 1, -1, 5, 2**40]) for _ in range(n)])
    return helper.make_sparse_tensor(values, indices, _random_dims(rng, rng.choice([1, 2])))


def _value_names(model) -> list[str]:
    g = model.graph
    names = [v.name for v in g.input] + [t.name for t in g.initializer] + [v.name for v in g.output]
    for node in g.node:
        names.extend(node.input)
        names.extend(node.output)
    return [n for n in dict.fromkeys(names) if n] or ["x"]


def _mutate_proto(model, rng: random.Random, supported_ops: list[str]) -> list[str]:
    """Apply one random protobuf-aware mutation in place; returns a short description of it."""
    from onnx import TensorProto, helper

    g = model.graph
    nodes = list(g.node)
    kind = rng.choice([
        "attr_value", "attr_value", "attr_value", "attr_type", "attr_add", "attr_add", "op_swap", "op_swap",
        "drop_input", "dup_input", "drop_output", "dup_output", "empty_name", "init_dims", "init_dims",
        "init_type", "init_truncate", "init_external", "value_info", "value_info", "shuffle", "rename_collide",
        "insert_node", "insert_node", "insert_node", "opset", "ir_version", "sparse_init", "constant_node",
        "remove_node", "output_change", "domain",
    ])
    node = rng.choice(nodes) if nodes else None
    if kind == "attr_value" and node is not None and node.attribute:
        attr = rng.choice(node.attribute)
        new = _random_attribute(rng, attr.name)
        if rng.random() < 0.6:  # keep the type, extreme value
            if attr.type == attr.INT:
                new = helper.make_attribute(attr.name, rng.choice(EXTREME_INTS))
            elif attr.type == attr.INTS:
                values = list(attr.ints) or [1]
                values[rng.randrange(len(values))] = rng.choice(EXTREME_INTS)
                if rng.random() < 0.3:
                    values = values[: rng.randrange(len(values) + 1)] if rng.random() < 0.5 else values * 2
                new = helper.make_attribute(attr.name, values, attr_type=attr.INTS)
            elif attr.type == attr.FLOAT:
                new = helper.make_attribute(attr.name, rng.choice(EXTREME_FLOATS))
            elif attr.type == attr.TENSOR:
                new = helper.make_attribute(attr.name, _random_tensor(rng, attr.t.name))
        attr.CopyFrom(new)
        return [f"attr_value {node.op_type}.{attr.name}"]
    if kind == "attr_type" and node is not None and node.attribute:
        attr = rng.choice(node.attribute)
        attr.CopyFrom(_random_attribute(rng, attr.name))
        return [f"attr_type {node.op_type}.{attr.name}"]
    if kind == "attr_add" and node is not None:
        name = rng.choice(ATTR_NAMES)
        kept = [a for a in node.attribute if a.name != name]
        del node.attribute[:]
        node.attribute.extend(kept + [_random_attribute(rng, name)])
        return [f"attr_add {node.op_type}.{name}"]
    if kind == "op_swap" and node is not None:
        old = node.op_type
        node.op_type = rng.choice(supported_ops)
        return [f"op_swap {old}->{node.op_type}"]
    if kind == "drop_input" and node is not None and node.input:
        index = rng.randrange(len(node.input))
        if rng.random() < 0.5:
            del node.input[index]
        else:
            node.input[index] = ""
        return [f"drop_input {node.op_type}[{index}]"]
    if kind == "dup_input" and node is not None:
        names = _value_names(model)
        node.input.append(rng.choice(names + list(node.input or [""])))
        return [f"dup_input {node.op_type}"]
    if kind == "drop_output" and node is not None and node.output:
        if rng.random() < 0.5:
            del node.output[:]
        else:
            node.output[rng.randrange(len(node.output))] = ""
        return [f"drop_output {node.op_type}"]
    if kind == "dup_output" and node is not None:
        node.output.append(rng.choice(_value_names(model)) if rng.random() < 0.5 else f"extra{rng.randrange(99)}")
        return [f"dup_output {node.op_type}"]
    if kind == "empty_name" and node is not None:
        node.name = rng.choice(["", "x\n    pass  #", "dup", nodes[0].name, "a\x0cb", "a\u2028b", "q'\"\\"])
        return ["node_name"]
    if kind in ("init_dims", "init_type", "init_truncate", "init_external") and g.initializer:
        tensor = rng.choice(g.initializer)
        if kind == "init_dims":
            dims = list(tensor.dims)
            if dims and rng.random() < 0.7:
                dims[rng.randrange(len(dims))] = rng.choice([0, -1, 1, 2, 2**31, 10**6, 2**62])
            else:
                dims = _random_dims(rng)
            del tensor.dims[:]
            tensor.dims.extend(dims)
        elif kind == "init_type":
            tensor.data_type = rng.choice([0, 1, 2, 3, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 16, 17, 19, 21, 23, 99])
        elif kind == "init_truncate":
            if tensor.raw_data:
                tensor.raw_data = tensor.raw_data[: rng.randrange(len(tensor.raw_data))]
            else:
                del tensor.float_data[len(tensor.float_data) // 2:]
                del tensor.int64_data[len(tensor.int64_data) // 2:]
        else:
            tensor.data_location = TensorProto.EXTERNAL
            del tensor.external_data[:]
            location = rng.choice(["../outside/secret.bin", "secret.bin", "/etc/hostname", "weights.bin",
                                   "", ".", "a\x00b", "sidecar.bin"])
            entries = {"location": location}
            if rng.random() < 0.7:
                entries["offset"] = rng.choice(["0", "-8", "abc", "1e3", str(2**70), "4"])
            if rng.random() < 0.7:
                entries["length"] = rng.choice(["0", "-1", "xyz", str(2**62), "16", "4"])
            for key, value in entries.items():
                entry = tensor.external_data.add()
                entry.key, entry.value = key, value
        return [f"{kind} {tensor.name}"]
    if kind == "value_info":
        infos = list(g.input) + list(g.output) + list(g.value_info)
        if infos:
            info = rng.choice(infos)
            tt = info.type.tensor_type
            if rng.random() < 0.3:
                tt.elem_type = rng.choice([0, 2, 7, 8, 9, 10, 11, 16, 99])
            else:
                del tt.shape.dim[:]
                for d in _random_dims(rng):
                    dim = tt.shape.dim.add()
                    if d >= 0:
                        dim.dim_value = d
                    else:
                        dim.dim_param = rng.choice(["N", "", "batch"])
            return [f"value_info {info.name}"]
    if kind == "shuffle" and nodes:
        rng.shuffle(nodes)
        del g.node[:]
        g.node.extend(nodes)
        return ["shuffle"]
    if kind == "rename_collide" and node is not None and node.output:
        names = _value_names(model)
        index = rng.randrange(len(node.output))
        node.output[index] = rng.choice(names)
        return [f"rename_collide {node.op_type}"]
    if kind == "insert_node":
        names = _value_names(model)
        op = rng.choice(supported_ops)
        count = rng.choice([0, 1, 1, 2, 2, 3, 5])
        inputs = [rng.choice(names) for _ in range(count)]
        out = f"fz{rng.randrange(10**6)}"
        attrs = [_random_attribute(rng, rng.choice(ATTR_NAMES)) for _ in range(rng.choice([0, 0, 1, 2]))]
        new = helper.make_node(op, inputs, [out] + ([f"{out}b"] if rng.random() < 0.2 else []))
        new.attribute.extend({a.name: a for a in attrs}.values())
        if op in ("LinearClassifier", "SVMClassifier", "Normalizer", "ArrayFeatureExtractor"):
            new.domain = "ai.onnx.ml"
        position = rng.randrange(len(nodes) + 1)
        g.node.insert(position, new)
        # feed it onward: into a later node's input, or make it a graph output
        later = list(g.node)[position + 1:]
        if later and rng.random() < 0.7:
            target = rng.choice(later)
            if target.input:
                target.input[rng.randrange(len(target.input))] = out
        else:
            g.output.append(helper.make_empty_tensor_value_info(out))
        return [f"insert_node {op}"]
    if kind == "opset":
        if model.opset_import and rng.random() < 0.8:
            entry = rng.choice(model.opset_import)
            entry.version = rng.choice([1, 5, 6, 7, 9, 11, 13, 17, 21, 28, 29, 999, 0, -1, 2**62])
        elif rng.random() < 0.5:
            del model.opset_import[:]
        else:
            model.opset_import.add().version = rng.choice([1, 13, 999])
        return ["opset"]
    if kind == "ir_version":
        model.ir_version = rng.choice([1, 3, 7, 10, 11, 99, 2**62, -1])
        return ["ir_version"]
    if kind == "sparse_init":
        sparse = _random_sparse(rng)
        if g.initializer and rng.random() < 0.5:
            sparse.values.name = rng.choice(g.initializer).name
        g.sparse_initializer.append(sparse)
        return ["sparse_init"]
    if kind == "constant_node" and node is not None and node.input:
        out = f"cst{rng.randrange(10**6)}"
        attr_name = rng.choice(["value", "value_float", "value_floats", "value_int", "value_ints", "sparse_value",
                                "value_string"])
        attr = _random_attribute(rng, attr_name)
        const = helper.make_node("Constant", [], [out])
        const.attribute.append(attr)
        g.node.insert(0, const)
        node.input[rng.randrange(len(node.input))] = out
        return [f"constant_node {attr_name}"]
    if kind == "remove_node" and nodes:
        del g.node[rng.randrange(len(nodes))]
        return ["remove_node"]
    if kind == "output_change" and g.output:
        g.output[rng.randrange(len(g.output))].name = rng.choice(_value_names(model) + [""])
        return ["output_change"]
    if kind == "domain" and node is not None:
        node.domain = rng.choice(["ai.onnx.ml", "com.microsoft", "ai.onnx", "", "x" * 300])
        return ["domain"]
    return []


def _mutate_bytes(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    buf = bytearray(data)
    kind = rng.choice(["flip", "flip", "set", "insert", "delete", "truncate", "splice", "varint"])
    if not buf:
        return bytes(rng.randrange(256) for _ in range(64)), "random"
    for _ in range(rng.choice([1, 1, 2, 4, 16])):
        pos = rng.randrange(len(buf))
        if kind == "flip":
            buf[pos] ^= 1 << rng.randrange(8)
        elif kind == "set":
            buf[pos] = rng.choice([0, 0xFF, 0x7F, 0x80, 0x01, rng.randrange(256)])
        elif kind == "insert":
            buf[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.choice([1, 2, 8])))
        elif kind == "delete":
            del buf[pos: pos + rng.choice([1, 2, 8, 64])]
        elif kind == "truncate":
            del buf[pos:]
            break
        elif kind == "splice":
            start = rng.randrange(len(buf))
            chunk = buf[start: start + rng.choice([4, 16, 256])]
            buf[pos:pos] = chunk
        elif kind == "varint":  # a huge varint: lengths and dims become enormous
            buf[pos:pos + 1] = b"\xff\xff\xff\xff\xff\xff\xff\xff\x7f"
        if not buf:
            break
    return bytes(buf), f"bytes_{kind}"


def make_mutant(seed_data: bytes, seed_name: str, rng: random.Random, supported_ops: list[str]
                ) -> tuple[bytes, list[str]]:
    """One mutant of a serialized seed model: a few proto mutations, sometimes followed by byte mutations."""
    import onnx

    steps: list[str] = []
    if rng.random() < 0.15:
        data, what = _mutate_bytes(seed_data, rng)
        return data, [what]
    model = onnx.load_model_from_string(seed_data)
    for _ in range(rng.choice([1, 1, 1, 2, 2, 3, 5])):
        for _attempt in range(8):  # a mutation that does not apply to this model (no attributes...) is redrawn
            try:
                done = _mutate_proto(model, rng, supported_ops)
            except (ValueError, TypeError, OverflowError, IndexError) as exc:  # the mutation itself failed
                done = [f"(skipped: {type(exc).__name__})"]
            steps += done
            if done:
                break
    if not steps:
        data, what = _mutate_bytes(seed_data, rng)
        return data, [what]
    try:
        data = model.SerializeToString()
    except Exception:  # noqa: BLE001 - an unserializable mutation: fall back to bytes
        data, what = _mutate_bytes(seed_data, rng)
        return data, steps + [what]
    if rng.random() < 0.07:
        data, what = _mutate_bytes(data, rng)
        steps.append(what)
    return data, steps


def default_seeds() -> list[Path]:
    return [ROOT / "assets" / "lenet5.onnx", *sorted((ROOT / "tests" / "models").glob("*.onnx"))]


def _seed_files(seed_dirs: list[str]) -> list[Path]:
    files = default_seeds()
    for folder in seed_dirs:
        for path in sorted(Path(folder).rglob("*.onnx")):
            if path.stat().st_size < 8 << 20:  # small enough to mutate quickly, no external data
                files.append(path)
    return [f for f in dict.fromkeys(files) if f.is_file()]


def _prepare_folder(folder: Path) -> tuple[Path, Path, list[str]]:
    """A model folder with a sidecar, a secret outside it and a secret in the workers' cwd."""
    (folder / "model").mkdir(parents=True, exist_ok=True)
    (folder / "outside").mkdir(exist_ok=True)
    (folder / "cwd").mkdir(exist_ok=True)
    secret = (SECRET_MARK * 8).encode()
    (folder / "outside" / "secret.bin").write_bytes(secret)
    (folder / "cwd" / "secret.bin").write_bytes(secret)
    (folder / "model" / "sidecar.bin").write_bytes(bytes(range(256)) * 16)
    return folder / "model", folder / "cwd", [str(folder / "outside"), str(folder / "cwd")]


@dataclass
class FuzzReport:
    tried: int = 0
    counts: Counter = field(default_factory=Counter)
    classes: dict = field(default_factory=dict)  # signature -> (count, first outcome, mutant path, steps)
    wrapped: Counter = field(default_factory=Counter)  # ModelErrors wrapping an internal exception, by where
    wrapped_example: dict = field(default_factory=dict)  # where -> the first such message (to judge its wording)
    seconds: float = 0.0

    @property
    def bad(self) -> int:
        return self.counts["bad"]

    def summary(self) -> str:
        lines = [f"mutants tried: {self.tried} in {self.seconds:.0f} s — ok {self.counts['ok']}, "
                 f"ModelError {self.counts['modelerror']}, BAD {self.counts['bad']}"]
        bad_kinds = Counter(info[1].bad for info in self.classes.values() for _ in range(info[0]))
        if bad_kinds:
            lines.append("BAD by kind: " + ", ".join(f"{k} {v}" for k, v in bad_kinds.most_common()))
        for signature, (count, outcome, saved, steps) in sorted(self.classes.items(), key=lambda kv: -kv[1][0]):
            lines.append(f"  [{count:4d}x] {signature}")
            lines.append(f"         {outcome.message.splitlines()[0][:200] if outcome.message else ''}")
            lines.append(f"         first: {saved}  ({'; '.join(steps)[:200]})")
        if self.wrapped:
            lines.append("ModelErrors wrapping an internal exception (contract kept, message may be poor):")
            for where, count in self.wrapped.most_common(15):
                lines.append(f"  [{count:4d}x] {where}")
                lines.append(f"         {self.wrapped_example[where].splitlines()[0][:300]}")
        return "\n".join(lines)


def fuzz(seconds: float = 600, seed: int = 1, seed_dirs: list[str] = (), out: str | None = "findings",
         workers: int = 2, max_mutants: int | None = None, timeout: float = 10.0, memory: int = DEFAULT_MEMORY,
         verbose: bool = True) -> FuzzReport:
    """Generate and check mutants until ``seconds`` pass or ``max_mutants`` are tried; returns the report.

    Mutant ``i`` depends only on (``seed``, ``i``), so a run bounded by ``max_mutants`` is deterministic.
    """
    sys.path.insert(0, str(ROOT))
    import nn_core

    supported = sorted(nn_core.SUPPORTED_OPS)
    seeds = [(p.name, p.read_bytes()) for p in _seed_files(list(seed_dirs))]
    report = FuzzReport()
    out_dir = Path(out) if out else None
    scratch = Path(tempfile.mkdtemp(prefix="nncore-fuzz-"))
    start = time.monotonic()
    lock = threading.Lock()
    counter = [0]
    stop = [False]

    def next_index() -> int | None:
        with lock:
            if stop[0] or time.monotonic() - start > seconds or (max_mutants is not None
                                                                 and counter[0] >= max_mutants):
                return None
            counter[0] += 1
            return counter[0] - 1

    def loop(slot: int):
        folder = scratch / f"w{slot}"
        model_dir, cwd, forbidden = _prepare_folder(folder)
        worker = Worker(memory, str(cwd))
        try:
            while True:
                index = next_index()
                if index is None:
                    return
                rng = random.Random(seed * 1_000_003 + index)
                seed_name, seed_data = seeds[rng.randrange(len(seeds))]
                try:
                    data, steps = make_mutant(seed_data, seed_name, rng, supported)
                except Exception as exc:  # noqa: BLE001 - a mutator bug must not stop the run
                    data, steps = seed_data, [f"mutator failed: {type(exc).__name__}: {exc}"]
                path = model_dir / "model.onnx"
                path.write_bytes(data)
                outcome = worker.check(f"{seed_name}#{index}", str(path), forbidden, timeout)
                with lock:
                    report.tried += 1
                    report.counts[outcome.status] += 1
                    if outcome.status == "modelerror" and outcome.raw.get("cause"):
                        where = f"{outcome.raw['cause']} at {outcome.inner}"
                        report.wrapped[where] += 1
                        report.wrapped_example.setdefault(where, outcome.message)
                    if outcome.status == "bad":
                        signature = outcome.signature
                        saved = ""
                        if out_dir is not None:
                            key = hashlib.sha1(signature.encode()).hexdigest()[:10]
                            target = out_dir / key
                            target.mkdir(parents=True, exist_ok=True)
                            existing = len(list(target.glob("*.onnx")))
                            if existing < 5:
                                name = f"seed{seed}_{index}_{seed_name.replace('.onnx', '')}"
                                (target / f"{name}.onnx").write_bytes(data)
                                (target / f"{name}.txt").write_text(
                                    f"signature: {signature}\nseed model: {seed_name}\nmutations: {steps}\n"
                                    f"reproduce: python tools/fuzz_models.py --replay {target / (name + '.onnx')}"
                                    f"\n\n{outcome.type}: {outcome.message}\n\n{outcome.traceback}\n")
                                saved = str(target / f"{name}.onnx")
                        if signature in report.classes:
                            count, first, first_saved, first_steps = report.classes[signature]
                            report.classes[signature] = (count + 1, first, first_saved or saved, first_steps)
                        else:
                            report.classes[signature] = (1, outcome, saved, steps)
                            if verbose:
                                print(f"NEW BAD #{index} ({seed_name}; {'; '.join(steps)[:150]}): {signature}",
                                      flush=True)
                    if verbose and report.tried % 500 == 0:
                        print(f"... {report.tried} mutants, ok {report.counts['ok']}, ModelError "
                              f"{report.counts['modelerror']}, BAD {report.counts['bad']}", flush=True)
        finally:
            worker.stop()

    threads = [threading.Thread(target=loop, args=(i,), daemon=True) for i in range(max(1, workers))]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            while thread.is_alive():
                thread.join(0.5)
    except KeyboardInterrupt:
        stop[0] = True
        for thread in threads:
            thread.join()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    report.seconds = time.monotonic() - start
    return report


def replay(path: str, timeout: float = 30.0, memory: int = DEFAULT_MEMORY) -> Outcome:
    worker = Worker(memory)
    try:
        return worker.check(Path(path).name, str(Path(path).resolve()), [], timeout)
    finally:
        worker.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=600)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--seeds-dir", action="append", default=[], help="more seed models (folders searched for"
                        " *.onnx); may repeat")
    parser.add_argument("--out", default="findings", help="where BAD mutants and their tracebacks are saved")
    parser.add_argument("--workers", type=int, default=max(1, min(4, os.cpu_count() or 1)))
    parser.add_argument("--max-mutants", type=int, default=None)
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds per mutant before it counts as a hang")
    parser.add_argument("--memory", type=int, default=DEFAULT_MEMORY, help="worker address-space limit, bytes")
    parser.add_argument("--replay", metavar="FILE", help="check one saved file and print its outcome")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker_main(args.memory)
        return 0
    if args.replay:
        outcome = replay(args.replay, max(args.timeout, 30.0), args.memory)
        print(outcome.describe())
        if outcome.traceback:
            print(outcome.traceback)
        return 1 if outcome.status == "bad" else 0
    report = fuzz(args.seconds, args.seed, args.seeds_dir, args.out, args.workers, args.max_mutants, args.timeout,
                  args.memory)
    print(report.summary())
    return 1 if report.bad else 0


if __name__ == "__main__":
    sys.exit(main())
