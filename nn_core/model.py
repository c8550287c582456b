"""The public face of the engine: ``load(path)`` and the ``Model`` it returns."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn

import numpy as np

from .autodiff import GradientPlan
from .errors import InputError, ModelError
from .graph import Graph, NodeInfo, ValueSpec
from .limits import DEFAULT_LIMITS, Limits
from .onnx_io import check_model, read_model
from .plan import FastPlan, FusedStepFailure, NodeRecord, TracedPlan


class Model:
    """A loaded, prepared ONNX model.

    ``run`` executes the optimised plan; ``run_traced`` executes every original node and returns each node's
    outputs too (built on first use, so plain runs pay nothing for it).
    """

    def __init__(self, proto, path: str | None = None, name: str | None = None, limits: Limits = DEFAULT_LIMITS):
        self.path = path
        self.limits = limits
        self.proto_info = {
            "ir_version": int(proto.ir_version),
            "producer_name": proto.producer_name,
            "producer_version": proto.producer_version,
            "domain": proto.domain,
            "model_version": int(proto.model_version),
            "doc_string": proto.doc_string,
            "graph_name": proto.graph.name,
        }
        self.metadata: dict[str, str] = {p.key: p.value for p in proto.metadata_props}
        self._proto = proto  # what save() writes back, with the current initializers
        label = name or (Path(path).name if path else (proto.graph.name or "model"))
        self.warnings = check_model(proto)
        self.graph = Graph(proto, source=label, limits=limits)
        self._plan: FastPlan | None = FastPlan(self.graph, self.graph.constants)
        self._traced: TracedPlan | None = None
        self._gradients: GradientPlan | None = None
        self._training: GradientPlan | None = None
        self._input_names = [spec.name for spec in self.graph.inputs]
        self._output_names = [spec.name for spec in self.graph.outputs]
        # sequences, optionals and maps leave as Python objects (lists, None), tensors as plain arrays
        self._plain_outputs = all(spec.kind == "tensor" for spec in self.graph.outputs)
        read = {name for node in self.graph.nodes for name in node.inputs} | set(self._output_names)
        # graph inputs no node reads (exporters leave some behind) need not be fed
        self._unused_inputs = {name for name in self._input_names if name not in read}
        # (name, dtype, rank, fixed dims) of inputs whose declaration allows the fast feed check
        self._feed_checks: list[tuple] | None = None
        if all(spec.kind == "tensor" and spec.dtype is not None and spec.shape is not None
               for spec in self.graph.inputs):
            self._feed_checks = [
                (spec.name, spec.dtype, len(spec.shape),
                 tuple((axis, size) for axis, size in enumerate(spec.shape) if isinstance(size, int)))
                for spec in self.graph.inputs
            ]
        # one tensor in, tensors out (the window's case): a feed whose dtype is the declared one (the same dtype
        # object) and whose shape already passed the full check once goes straight to the plan; that check
        # (list building, a generator per input, a dict per output) measured ~5 us of a 70 us LeNet batch-1 run
        self._single_feed = ((*self._feed_checks[0][:2], self._output_names[0] if self._output_names else "")
                             if self._feed_checks is not None and len(self._feed_checks) == 1
                             and self._plain_outputs and not self._unused_inputs else None)
        self._checked_shapes: set[tuple[int, ...]] = set()

    # ---- description -------------------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.graph.source

    @property
    def inputs(self) -> list[ValueSpec]:
        return list(self.graph.inputs)

    @property
    def outputs(self) -> list[ValueSpec]:
        return list(self.graph.outputs)

    @property
    def nodes(self) -> list[NodeInfo]:
        return list(self.graph.nodes)

    @property
    def opset(self) -> int:
        return self.graph.opset_for("")

    @property
    def opsets(self) -> dict[str, int]:
        return {(d or "ai.onnx"): v for d, v in self.graph.opsets.items()}

    @property
    def producer(self) -> str:
        name, version = self.proto_info["producer_name"], self.proto_info["producer_version"]
        return f"{name} {version}".strip() or "unknown"

    @property
    def parameter_count(self) -> int:
        return sum(int(a.size) for a in self.graph.constants.values() if a.dtype.kind in "fiuc")

    def op_counts(self) -> Counter:
        return Counter(node.op_type for node in self.graph.nodes)

    @property
    def plan_source(self) -> str:
        """The generated Python function the fast plan runs (readable: one line per kernel call)."""
        return self._fast_plan().source

    @property
    def plan_ops(self) -> list[str]:
        """What the fast plan runs, one entry per kernel call, fused ops joined by '+' (e.g. 'Conv+Relu')."""
        return [step.label for step in self._fast_plan().steps]

    def __repr__(self) -> str:
        ins = ", ".join(f"{v.name}{v.describe_shape()}" for v in self.inputs)
        outs = ", ".join(f"{v.name}{v.describe_shape()}" for v in self.outputs)
        return f"<nn_core.Model {self.name}: ({ins}) -> ({outs}), {len(self.graph.nodes)} nodes, opset {self.opset}>"

    # ---- running -----------------------------------------------------------------------------------------
    def run(self, feeds: Mapping[str, Any], output_names: list[str] | None = None) -> dict[str, np.ndarray]:
        """Run the model on ``{input_name: array}``; returns ``{output_name: array}`` in graph-output order."""
        single = self._single_feed
        if single is not None and type(feeds) is dict and len(feeds) == 1 and output_names is None:
            array = feeds.get(single[0])
            if type(array) is np.ndarray and array.dtype is single[1] and array.shape in self._checked_shapes:
                plan = self._plan or self._fast_plan()
                function = plan.by_shape.get(array.shape)
                try:
                    try:  # FastPlan.run inlined (one call frame fewer): the generated function, failures named
                        # (a shape's first run here specializes the plan for it: the shape ran once, on the
                        # checked path below, so the kernels have made their per-shape caches)
                        values = function(array) if function is not None else plan.specialize(array)
                    except ModelError:
                        raise
                    except Exception as exc:  # noqa: BLE001
                        raise plan.explain(exc) from exc
                except FusedStepFailure as error:
                    self._raise_located(error, feeds)
                if len(values) == 1:
                    value = values[0]
                    if type(value) is np.ndarray and value.flags.c_contiguous:
                        return {single[2]: value}
                return self._results(values)
        try:  # the boundary of error_boundary, inlined: run is the hot path and try costs nothing in 3.11
            values = (self._plan or self._fast_plan()).run(*self._prepare_feeds(feeds))
        except FusedStepFailure as error:
            self._raise_located(error, feeds)
        except ModelError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise as_model_error(exc, self.name, "running") from exc
        result = self._results(values)
        if output_names is not None:
            return {name: result[name] for name in output_names}
        return result

    def _raise_located(self, error: FusedStepFailure, feeds: Mapping[str, Any]) -> NoReturn:
        """Raise the failure of the graph run node by node on the same ``feeds`` in place of a fused step's
        ``error`` (named by the step's first node): it names the node whose values broke, so a Gemm after a
        Flatten fed a larger image than it was made for is reported as the Gemm's, not as the Conv's that begins
        the step. Where the unfused graph runs, the failure was the fused kernel's own: ``error``, as named."""
        try:
            self.run_traced(feeds)
        except ModelError as located:
            raise located from error
        raise error

    def run_traced(self, feeds: Mapping[str, Any]) -> tuple[dict[str, np.ndarray], list[NodeRecord]]:
        """Run every node of the original graph; returns the outputs and one record per node, in order."""
        with error_boundary(self.name, "tracing"):
            if self._traced is None:
                self._traced = TracedPlan(self.graph, self.graph.constants)
            arrays = self._prepare_feeds(feeds)
            return self._traced.run(dict(zip(self._input_names, arrays)))

    def profile(self, feeds: Mapping[str, Any]):
        with error_boundary(self.name, "profiling"):
            return self._fast_plan().profile(self._prepare_feeds(feeds))

    def _fast_plan(self) -> FastPlan:
        if self._plan is None:  # weights changed since it was built
            self._plan = FastPlan(self.graph, self.graph.constants)
        return self._plan

    # ---- gradients and weights ---------------------------------------------------------------------------
    @property
    def initializers(self) -> dict[str, np.ndarray]:
        """The model's floating-point initializers (its weights), by name. Read-only views."""
        result = {}
        for name, value in self.graph.constants.items():
            if value.dtype.kind == "f":
                view = value.view()
                view.flags.writeable = False
                result[name] = view
        return result

    def set_initializers(self, values: Mapping[str, np.ndarray]) -> None:
        """Replace some floating-point initializers (same shape, same dtype); plans rebuild on next use."""
        for name, value in values.items():
            old = self.graph.constants.get(name)
            if old is None or old.dtype.kind != "f":
                raise ModelError(f"{self.name}: '{name}' is not a floating-point initializer of the model")
            value = np.asarray(value)
            if value.shape != old.shape:
                raise ModelError(f"{self.name}: initializer '{name}' has shape {list(old.shape)}, "
                                 f"got {list(value.shape)}")
        for name, value in values.items():
            self.graph.constants[name] = np.array(value, dtype=self.graph.constants[name].dtype)
        self._plan = None
        self._traced = None

    def gradient_plan(self, training: bool = False) -> GradientPlan:
        """The unfused plan with the weights as run-time parameters, shared by ``vjp`` and training.

        ``training=True``: the plan of the graph in training mode (BatchNormalization on batch statistics,
        Dropout dropping; see ``GradientPlan``), built once and kept like the other.
        """
        if training:
            if self._training is None:
                with error_boundary(self.name, "preparing training of"):
                    self._training = GradientPlan(self.graph, training=True)
            return self._training
        if self._gradients is None:
            with error_boundary(self.name, "preparing gradients of"):
                self._gradients = GradientPlan(self.graph)
        return self._gradients

    def vjp(self, feeds: Mapping[str, Any], cotangents: Mapping[str, Any],
            training: bool = False) -> dict[str, np.ndarray]:
        """Reverse mode: for the graph run on ``feeds``, the gradient of ``sum over outputs <output, cotangent>``
        with respect to every floating-point graph input and initializer, keyed by name, each the shape of its
        value (zeros where nothing flows). Outputs without a cotangent contribute nothing.

        ``training=True`` differentiates the graph in training mode (batch statistics, dropout; the running
        statistics are not updated here — ``nn_core.fit`` does that).
        Raises ``UnsupportedOperatorError`` naming the node when a gradient must pass an op without a rule.
        """
        plan = self.gradient_plan(training)
        with error_boundary(self.name, "differentiating"):
            arrays = self._prepare_feeds(feeds)
            inputs = {name: array for name, array in zip(self._input_names, arrays) if array is not None}
            tape = plan.forward(inputs, {name: self.graph.constants[name] for name in plan.parameters})
            grads = plan.backward(tape, cotangents)
            result: dict[str, np.ndarray] = {}
            for name, array in inputs.items():
                if array.dtype.kind == "f":
                    result[name] = _gradient_or_zeros(grads.get(name), array)
            for name in plan.parameters:
                result[name] = _gradient_or_zeros(grads.get(name), self.graph.constants[name])
            return result

    # ---- writing -----------------------------------------------------------------------------------------
    def to_proto(self, metadata: Mapping[str, str] | None = None, doc_string: str | None = None):
        """The model as an ``onnx.ModelProto``: the file it was read from with the current initializers (a
        trained model's weights) and its metadata merged with ``metadata``."""
        import onnx
        from onnx import numpy_helper

        proto = onnx.ModelProto()
        proto.CopyFrom(self._proto)
        merged = {**self.metadata, **{key: str(value) for key, value in (metadata or {}).items()}}
        del proto.metadata_props[:]
        for key, value in merged.items():
            proto.metadata_props.add(key=key, value=value)
        if doc_string is not None:
            proto.doc_string = doc_string
        graph = proto.graph
        sparse = [t.values.name for t in graph.sparse_initializer]
        del graph.sparse_initializer[:]
        written = set()
        for index, tensor in enumerate(graph.initializer):
            value = self.graph.constants.get(tensor.name)
            if value is not None and value.dtype.kind == "f":
                graph.initializer[index].CopyFrom(numpy_helper.from_array(np.ascontiguousarray(value), tensor.name))
            written.add(tensor.name)
        for name in sparse:  # written out dense, with their current values
            if name not in written:
                graph.initializer.append(numpy_helper.from_array(np.ascontiguousarray(self.graph.constants[name]),
                                                                 name))
        return proto

    def save(self, path: str | os.PathLike[str], metadata: Mapping[str, str] | None = None,
             doc_string: str | None = None) -> None:
        """Write the ONNX file: this graph with its current initializers and its metadata merged with
        ``metadata`` (which the model then also carries)."""
        import onnx

        proto = self.to_proto(metadata, doc_string)
        onnx.save_model(proto, os.fspath(path))
        self.metadata = {p.key: p.value for p in proto.metadata_props}
        self._proto = proto

    def _prepare_feeds(self, feeds: Mapping[str, Any]) -> list[np.ndarray]:
        # fast path for the common call: a dict of arrays that already have the declared dtype and shape
        if self._feed_checks is not None and type(feeds) is dict and len(feeds) == len(self._feed_checks):
            arrays = []
            for name, dtype, ndim, fixed in self._feed_checks:
                array = feeds.get(name)
                if (type(array) is not np.ndarray or array.dtype != dtype or array.ndim != ndim
                        or any(array.shape[axis] != size for axis, size in fixed)):
                    break
                arrays.append(array)
            else:
                if self._single_feed is not None:
                    if len(self._checked_shapes) >= 16:  # a caller cycling through shapes: keep it bounded
                        self._checked_shapes.clear()
                    self._checked_shapes.add(arrays[0].shape)
                return arrays
        return self._checked_feeds(feeds)

    def _checked_feeds(self, feeds: Mapping[str, Any]) -> list[np.ndarray]:
        if not isinstance(feeds, Mapping):
            if len(self._input_names) == 1:  # a bare array for a one-input model
                feeds = {self._input_names[0]: feeds}
            else:
                raise InputError(f"{self.name}: run() takes a dict {{input name: array}}; inputs are "
                                 f"{self._describe_inputs()}")
        unknown = [name for name in feeds if name not in self._input_names]
        if unknown:
            weights = [n for n in unknown if n in self.graph.constants]
            if len(weights) != len(unknown):
                raise InputError(f"{self.name}: unknown input {', '.join(repr(n) for n in unknown)}; the model's "
                                 f"inputs are {self._describe_inputs()}")
        arrays = []
        for spec in self.graph.inputs:
            if spec.name not in feeds:
                if spec.name in self._unused_inputs:
                    arrays.append(None)
                    continue
                raise InputError(f"{self.name}: missing input '{spec.name}' {spec.describe_shape()}"
                                 f"{' ' + str(spec.dtype) if spec.dtype else ''}")
            if spec.kind == "tensor":
                arrays.append(_checked_array(self.name, spec, feeds[spec.name]))
            else:
                arrays.append(_checked_value(self.name, spec, feeds[spec.name]))
        return arrays

    def _results(self, values: list[Any]) -> dict[str, Any]:
        """The outputs by name. Kernels may hand back strided views (a convolution skipping a copy); callers get
        plain arrays. A file can declare a tensor output that its graph computes as a sequence, a map or an
        empty optional: that is refused, naming the output."""
        result = {}
        for spec, value in zip(self.graph.outputs, values):
            if spec.kind == "tensor":
                if type(value) is not np.ndarray and (value is None or isinstance(value, (list, tuple, dict))):
                    computed = "nothing (an empty optional)" if value is None else f"a {type(value).__name__}"
                    raise ModelError(f"{self.name}: output '{spec.name}' is declared a tensor, but the graph "
                                     f"computed {computed}")
                result[spec.name] = _plain_array(value)
            else:
                result[spec.name] = _plain_value(value)
        return result

    def _describe_inputs(self) -> str:
        return ", ".join(f"'{v.name}' {v.describe_shape()}" for v in self.graph.inputs)


def _gradient_or_zeros(grad: np.ndarray | None, value: np.ndarray) -> np.ndarray:
    if grad is None:
        return np.zeros(value.shape, dtype=value.dtype)
    return np.asarray(grad, dtype=value.dtype).reshape(value.shape)


def _plain_array(value: Any) -> np.ndarray:
    """A C-contiguous ndarray (0-d results stay 0-d; NumPy scalars become 0-d arrays)."""
    if type(value) is not np.ndarray:
        return np.asarray(value)
    return value if value.flags.c_contiguous else value.copy()


def _plain_value(value: Any) -> Any:
    """A non-tensor output (sequence, optional, map, or undeclared) as Python values: lists stay lists of plain
    arrays, None (an empty optional) stays None, anything else is a plain array."""
    if value is None or isinstance(value, dict):
        return value
    if isinstance(value, list):
        return [_plain_value(item) for item in value]
    return _plain_array(value)


def _checked_value(model_name: str, spec: ValueSpec, value: Any) -> Any:
    """A feed for a sequence, optional, map or undeclared input: lists of arrays and None pass through as they
    are (the declared kind says which is allowed); a tensor inside is checked against the element dtype."""
    if value is None:
        if spec.kind in ("optional", "unknown"):
            return None
        raise InputError(f"{model_name}: input '{spec.name}' is a {spec.kind}, got None")
    if isinstance(value, (list, tuple)):
        if spec.kind not in ("sequence", "optional", "unknown"):
            raise InputError(f"{model_name}: input '{spec.name}' is a {spec.kind}, got a sequence")
        element = ValueSpec(spec.name, None, spec.dtype)
        nested = ValueSpec(spec.name, None, spec.dtype, "unknown")
        return [_checked_value(model_name, nested, item) if isinstance(item, (list, tuple)) or item is None
                else _checked_array(model_name, element, item) for item in value]
    if isinstance(value, dict):
        if spec.kind not in ("map", "unknown"):
            raise InputError(f"{model_name}: input '{spec.name}' is a {spec.kind}, got a map")
        return value
    if spec.kind == "sequence":
        raise InputError(f"{model_name}: input '{spec.name}' is a sequence (a list of arrays), got "
                         f"{type(value).__name__}")
    return _checked_array(model_name, spec if spec.kind == "optional" else ValueSpec(spec.name, None, None), value)


def _checked_array(model_name: str, spec: ValueSpec, value: Any) -> np.ndarray:
    """The feed as an array of the declared dtype and a shape the declaration allows, or a clear InputError."""
    array = value if type(value) is np.ndarray else np.asarray(value)
    if spec.dtype is not None and array.dtype != spec.dtype:
        if spec.dtype.kind == "O" and array.dtype.kind in "US":  # strings as NumPy's fixed-width text
            return _checked_array(model_name, spec, array.astype(object))
        if array.dtype.kind not in "biuf" or (spec.dtype.kind in "iu" and array.dtype.kind == "f"):
            raise InputError(f"{model_name}: input '{spec.name}' expects {spec.dtype}, got {array.dtype}")
        array = array.astype(spec.dtype)
    shape = spec.shape
    if shape is not None:
        if array.ndim != len(shape) or any(
            isinstance(want, int) and want != got for want, got in zip(shape, array.shape)
        ):
            raise InputError(f"{model_name}: input '{spec.name}' expects shape {spec.describe_shape()}, "
                             f"got [{','.join(map(str, array.shape))}]")
    return array


def load(path: str | os.PathLike[str], limits: Limits | None = None) -> Model:
    """Read, check and prepare the ONNX model at ``path``; raises ModelError naming any problem.

    ``limits`` overrides the default resource budgets (``nn_core.Limits``) a file is held to.
    """
    path = os.fspath(path)
    limits = limits or DEFAULT_LIMITS
    with error_boundary(Path(path).name, "loading"):
        proto = read_model(path, limits)
        return Model(proto, path, limits=limits)


def load_proto(proto, name: str = "model", limits: Limits | None = None) -> Model:
    """Prepare an in-memory ModelProto (its external data, if any, must already be loaded)."""
    with error_boundary(name, "loading"):
        return Model(proto, None, name, limits or DEFAULT_LIMITS)


@contextmanager
def error_boundary(label: str, activity: str) -> Iterator[None]:
    """Whatever a model file makes go wrong inside leaves as a ModelError naming the file.

    Kernels and the loader raise precise ModelErrors themselves; this catches what slips through (a NumPy error
    in a case nobody foresaw, memory exhaustion, recursion) so that callers — the window above all — only ever
    have to handle one exception family.
    """
    try:
        yield
    except ModelError:
        raise
    except Exception as exc:  # noqa: BLE001 - the one boundary, see above
        raise as_model_error(exc, label, activity) from exc


def as_model_error(exc: Exception, label: str, activity: str) -> ModelError:
    if isinstance(exc, MemoryError):
        return ModelError(f"{label}: ran out of memory ({activity} the model)")
    if isinstance(exc, RecursionError):
        return ModelError(f"{label}: the graph is too deeply nested ({activity} the model)")
    return ModelError(f"{label}: {activity} the model failed: {type(exc).__name__}: {exc}")
