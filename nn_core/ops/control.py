"""Control flow: If, Loop and Scan, whose bodies are subgraphs compiled like the main graph.

The loader (``nn_core.graph``) replaces each graph attribute by a ``Subgraph``: a nested ``Graph`` whose inputs
are the body's own inputs followed by the outer-scope values it reads. The node receives those outer values as
implicit extra inputs after its declared ones; here each body gets its own compiled plan, built once at load
time, and is called with its formal inputs and its share of the outer values.

A Loop may not run away: iterations beyond ``Limits.max_loop_iterations`` and stacked outputs beyond the
tensor budget are refused with a ``ModelError`` naming the node.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx

from .registry import NodeSpec, Op, register


class Body:
    """A subgraph's compiled plan, called with formal inputs and the node's implicit (outer) inputs."""

    def __init__(self, op: Op, value: Any, key: str):
        from ..graph import Subgraph, standalone_subgraph
        from ..plan import FastPlan

        node = op.node
        if isinstance(value, onnx.GraphProto):  # a kernel built outside the loader: no outer scope
            value = standalone_subgraph(value, node.opset, f"{node.where()} {key}", node.limits)
        if not isinstance(value, Subgraph):
            raise op.fail(f"attribute '{key}' must be a graph")
        self.sub = value
        self.plan = FastPlan(value.graph, value.graph.constants)
        self.function = self.plan.run
        formal = {name: i for i, name in enumerate(value.formal)}
        self.formal_count = len(value.formal)
        # each plan input: ("formal", index) or ("outer", name); formal inputs that are initializers are dropped
        self.sources = [("formal", formal[spec.name]) if spec.name in formal else ("outer", spec.name)
                        for spec in value.graph.inputs]
        self.output_count = len(value.output_specs)
        self.output_dtypes = [spec.dtype for spec in value.output_specs]
        self.output_shapes = [spec.shape for spec in value.output_specs]

    def bind(self, outer_names: list[str]) -> None:
        """Fix where each outer value sits among the node's implicit inputs."""
        position = {name: i for i, name in enumerate(outer_names)}
        self.order = [(kind == "formal", ref if kind == "formal" else position[ref]) for kind, ref in self.sources]

    def __call__(self, formal: list[Any], outer: tuple) -> list[Any]:
        args = [formal[ref] if is_formal else outer[ref] for is_formal, ref in self.order]
        return list(self.function(*args))


def _bodies(op: Op, keys: tuple[str, ...]) -> tuple[list[Body], int]:
    """The node's bodies (bound to its implicit inputs) and how many inputs it declares itself."""
    from ..graph import implicit_inputs

    bodies = []
    for key in keys:
        value = op.attr(key)
        if value is None:
            raise op.fail(f"attribute '{key}' (a graph) is missing")
        bodies.append(Body(op, value, key))
    outer = implicit_inputs(op.attrs)
    for body in bodies:
        body.bind(outer)
    return bodies, len(op.node.inputs) - len(outer)


def _scalar_bool(op: Op, value: Any, what: str) -> bool:
    array = np.asarray(value)
    if array.size != 1:
        raise op.fail(f"{what} must hold one value, got shape {list(array.shape)}")
    return bool(array.reshape(-1)[0])


# ----------------------------------------------------------------------------------------------------------------
# If


@register("If", 1)
class If(Op):
    def __init__(self, node: NodeSpec):
        super().__init__(node)
        (self.then_body, self.else_body), self.declared = _bodies(self, ("then_branch", "else_branch"))
        outputs = len(node.outputs)
        for body, key in ((self.then_body, "then_branch"), (self.else_body, "else_branch")):
            if body.output_count != outputs:
                raise self.fail(f"{key} has {body.output_count} outputs, the node {outputs}")
        self.single = outputs == 1

    def run(self, cond, *outer):
        body = self.then_body if _scalar_bool(self, cond, "the condition") else self.else_body
        values = body([], outer[self.declared - 1:])
        return values[0] if self.single else tuple(values)


# ----------------------------------------------------------------------------------------------------------------
# Loop


def _stack(op: Op, items: list[Any], dtype, what: str) -> Any:
    if items and isinstance(items[0], list):  # a scan output of sequences stays a sequence of them
        return items
    if not items:
        return np.zeros((0,), dtype=dtype or np.float32)
    first = np.asarray(items[0])
    op.check_size((len(items),) + first.shape, first.dtype, what)
    try:
        return np.stack([np.asarray(i) for i in items])
    except ValueError as exc:
        raise op.fail(f"{what}: the iterations produced values of different shapes ({exc})") from None


@register("Loop", 1)
class Loop(Op):
    def __init__(self, node: NodeSpec):
        super().__init__(node)
        (self.body,), declared = _bodies(self, ("body",))
        self.declared = declared
        self.carried = declared - 2
        formal = self.body.formal_count
        if formal != self.carried + 2:
            raise self.fail(f"the body takes {formal} inputs; with {self.carried} loop-carried values it must take"
                            f" {self.carried + 2} (iteration number, condition, the carried values)")
        self.scans = self.body.output_count - 1 - self.carried
        if self.scans < 0:
            raise self.fail(f"the body gives {self.body.output_count} outputs, fewer than the condition and the"
                            f" {self.carried} loop-carried values")
        if len(node.outputs) > self.carried + self.scans:
            raise self.fail(f"the node declares {len(node.outputs)} outputs; the body gives {self.carried} "
                            f"loop-carried and {self.scans} scan outputs")
        self.limit = node.limits.max_loop_iterations
        self.single = len(node.outputs) == 1

    def run(self, trip_count, cond, *rest):
        state = list(rest[: self.carried])
        outer = rest[self.carried:]
        trips = None
        if trip_count is not None:
            trips = int(np.asarray(trip_count).reshape(-1)[0]) if np.size(trip_count) == 1 else None
            if trips is None:
                raise self.fail(f"the trip count must hold one value, got shape {list(np.shape(trip_count))}")
        going = True if cond is None else _scalar_bool(self, cond, "the condition")
        count_dtype = np.int64
        scans: list[list[Any]] = [[] for _ in range(self.scans)]
        scan_bytes = 0
        iteration = 0
        while going and (trips is None or iteration < trips):
            if iteration >= self.limit:
                bound = "no trip count" if trips is None else f"a trip count of {trips}"
                raise self.fail(f"the loop ({bound}) is still running after {self.limit:,} iterations, the limit "
                                "(nn_core.Limits.max_loop_iterations) — refusing a loop that would run away")
            outs = self.body([np.array(iteration, count_dtype), np.array(going), *state], outer)
            going = _scalar_bool(self, outs[0], "the body's condition output")
            state = outs[1: 1 + self.carried]
            for k, value in enumerate(outs[1 + self.carried:]):
                scans[k].append(value)
                scan_bytes += getattr(value, "nbytes", 0)
            if scan_bytes > self.node.limits.max_tensor_bytes:
                self.check_size((scan_bytes,), np.uint8, "the loop's stacked scan outputs")
            iteration += 1
        dtypes = self.body.output_dtypes[1 + self.carried:]
        values = state + [_stack(self, items, dtypes[k], f"scan output {k}") for k, items in enumerate(scans)]
        values = values[: len(self.node.outputs)]
        return values[0] if self.single else tuple(values)


# ----------------------------------------------------------------------------------------------------------------
# Scan


class _ScanBase(Op):
    def _prepare(self, states: int, scan_inputs: int) -> None:
        body = self.body
        if body.formal_count != states + scan_inputs:
            raise self.fail(f"the body takes {body.formal_count} inputs, not {states} states + {scan_inputs} scan "
                            "inputs")
        self.states, self.scan_inputs = states, scan_inputs
        self.scan_outputs = body.output_count - states
        if self.scan_outputs < 0:
            raise self.fail(f"the body gives {body.output_count} outputs, fewer than its {states} states")

        def axis_list(name: str, count: int, default: int = 0) -> list[int]:
            values = self.attr(name) or []
            if not isinstance(values, list) or len(values) not in (0, count):
                raise self.fail(f"attribute '{name}' must list {count} values, got {values}")
            return [int(v) for v in values] or [default] * count

        self.in_axes = axis_list("scan_input_axes", scan_inputs)
        self.in_dirs = axis_list("scan_input_directions", scan_inputs) if self.node.opset >= 9 else \
            axis_list("directions", scan_inputs)
        self.out_axes = axis_list("scan_output_axes", self.scan_outputs)
        self.out_dirs = axis_list("scan_output_directions", self.scan_outputs)
        for d in self.in_dirs + self.out_dirs:
            if d not in (0, 1):
                raise self.fail(f"scan directions must be 0 or 1, got {d}")

    def _scan(self, states: list[Any], inputs: list[np.ndarray], outer: tuple) -> list[Any]:
        axes = []
        for x, axis in zip(inputs, self.in_axes):
            if not -x.ndim <= axis < x.ndim:
                raise self.fail(f"scan input axis {axis} is outside the rank {x.ndim} of an input")
            axes.append(axis % x.ndim)
        lengths = {x.shape[a] for x, a in zip(inputs, axes)}
        if len(lengths) != 1:
            raise self.fail(f"scan inputs have different sequence lengths {sorted(lengths)}")
        length = lengths.pop()
        if length > self.node.limits.max_loop_iterations:
            raise self.fail(f"a scan over {length:,} steps is over the limit of "
                            f"{self.node.limits.max_loop_iterations:,} (nn_core.Limits.max_loop_iterations)")
        collected: list[list[np.ndarray]] = [[] for _ in range(self.scan_outputs)]
        for t in range(length):
            slices = [np.take(x, length - 1 - t if d else t, axis=a) for x, a, d in zip(inputs, axes, self.in_dirs)]
            outs = self.body(states + slices, outer)
            states = outs[: self.states]
            for k, value in enumerate(outs[self.states:]):
                collected[k].append(np.asarray(value))
        results = list(states)
        for k, items in enumerate(collected):
            if self.out_dirs[k]:
                items = items[::-1]
            if not items:
                spec_shape = self.body.output_shapes[self.states + k] or []
                rest = [d if isinstance(d, int) else 0 for d in spec_shape]
                stacked = np.zeros([0] + rest, dtype=self.body.output_dtypes[self.states + k] or np.float32)
            else:
                self.check_size((len(items),) + items[0].shape, items[0].dtype, f"scan output {k}")
                stacked = np.stack(items)
            axis = self.out_axes[k]
            if not -stacked.ndim <= axis < stacked.ndim:
                raise self.fail(f"scan output axis {axis} is outside the rank {stacked.ndim} of scan output {k}")
            results.append(np.moveaxis(stacked, 0, axis % stacked.ndim))
        return results


@register("Scan", 9)
class Scan(_ScanBase):
    def __init__(self, node: NodeSpec):
        super().__init__(node)
        (self.body,), declared = _bodies(self, ("body",))
        self.declared = declared
        scan_inputs = int(self.attr("num_scan_inputs", 0))
        if not 1 <= scan_inputs <= declared:
            raise self.fail(f"num_scan_inputs {scan_inputs} must be between 1 and the {declared} inputs")
        self._prepare(declared - scan_inputs, scan_inputs)
        self.single = len(node.outputs) == 1

    def run(self, *args):
        values = list(args[: self.declared])
        outer = args[self.declared:]
        results = self._scan(values[: self.states], [np.asarray(v) for v in values[self.states:]], outer)
        results = results[: len(self.node.outputs)]
        return results[0] if self.single else tuple(results)


@register("Scan", 8)
class Scan8(_ScanBase):
    """Opset 8: a leading batch axis on every state and scan input, optional per-batch sequence lengths."""

    def __init__(self, node: NodeSpec):
        super().__init__(node)
        (self.body,), declared = _bodies(self, ("body",))
        self.declared = declared
        scan_inputs = int(self.attr("num_scan_inputs", 0))
        if not 1 <= scan_inputs <= declared - 1:
            raise self.fail(f"num_scan_inputs {scan_inputs} must be between 1 and the {declared - 1} inputs")
        self._prepare(declared - 1 - scan_inputs, scan_inputs)
        self.single = len(node.outputs) == 1

    def run(self, sequence_lens, *args):
        values = list(args[: self.declared - 1])
        outer = args[self.declared - 1:]
        states = [np.asarray(v) for v in values[: self.states]]
        inputs = [np.asarray(v) for v in values[self.states:]]
        batch = inputs[0].shape[0]
        per_batch: list[list[np.ndarray]] = []
        for b in range(batch):
            seq = [x[b] for x in inputs]
            if sequence_lens is not None:
                length = int(np.asarray(sequence_lens).reshape(-1)[b])
                seq = [x[:length] for x in seq]
            per_batch.append(self._scan([s[b] for s in states], seq, outer))
        results = [np.stack([r[i] for r in per_batch]) for i in range(len(per_batch[0]))] if per_batch else []
        results = results[: len(self.node.outputs)]
        return results[0] if self.single else tuple(results)
