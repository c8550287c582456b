"""From a sorted graph to something cheap to run: kernels built once, constants folded, a generated function.

Two plans come out of one graph. The *fast* plan folds BatchNormalization into convolutions, fuses activations
into the kernel before them, drops dead nodes and frees every intermediate right after its last reader; it is
compiled into one straight-line Python function, so per node the cost is a single call. The *traced* plan keeps
every node of the original graph and records each output, for the per-layer view; it is built only when asked.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from .errors import ModelError, UnsupportedOperatorError
from .graph import Graph, NodeInfo, input_type_problem
from .ops.averaged_conv import fuse_averaged_convs
from .ops.batch1 import batch1_kernel
from .ops.channel_shuffle import carry_depthwise_biases, fuse_shuffled_depthwise
from .ops.channels_last import prefer_channels_last
from .ops.dense_chain import fuse_dense_chains
from .ops.layout_folds import fold_nhwc_flattens
from .ops.pooled_head import fuse_pooled_heads
from .ops.preactivation_max import fold_preactivations_into_pointwise, fuse_channel_clamps
from .ops.qconv_pair import fuse_centred_conv_pairs
from .ops.qgemm_chain import fuse_quantized_gemm_chains
from .ops.quantized import fuse_qdq
from .ops.registry import NodeSpec, Op, Parts, resolve
from .ops.residual_int8 import fuse_conv_pair_lookups
from .ops.separable import fuse_separable_chains
from .ops.separable_int8 import fuse_quantized_separable_chains
from .optimize import (
    FUSABLE_ACTIVATIONS,
    activation_params,
    cancel_squeeze_pairs,
    flatten_batch_reshapes,
    fold_affine_into_conv,
    fold_batchnorm,
    is_default_domain,
    producers_and_readers,
    remove_identities,
    sole_reader,
)
from .string_guard import guard_string_inputs, is_text
from .transformer_fusion import fuse_transformer_steps

_SOURCE_NAME = "<nn_core plan>"
#: the input shapes a plan keeps a specialized function for (a caller cycling through more starts again)
KEPT_SHAPES = 8


@dataclass
class Step:
    node: NodeInfo
    kernel: Op
    inputs: list[str]
    outputs: list[str]
    fused: tuple[str, ...] = ()  # op types of the nodes absorbed into this one (BatchNormalization, Relu...)
    before: tuple[str, ...] = ()  # op types of absorbed nodes that ran before this one (Tanh before a pooling)

    @property
    def label(self) -> str:
        return "+".join((*self.before, self.node.op_type, *self.fused))


@dataclass
class NodeRecord:
    """One node's outputs in a traced run."""

    name: str
    op_type: str
    outputs: dict[str, np.ndarray]
    folded: bool = False  # computed once at load time (all its inputs were constant)


def _shapes(values: list[Any]) -> str:
    return ", ".join("None" if v is None else f"{list(np.shape(v))} {getattr(v, 'dtype', type(v).__name__)}"
                     for v in values)


def make_kernel(node: NodeInfo, graph: Graph, constants: dict[str, np.ndarray], opset: int | None = None) -> Op:
    """The node's kernel, prepared with the constant inputs in ``constants``; at the graph's opset for the node's
    domain unless ``opset`` asks for another version (training mode BatchNormalization exists from opset 14)."""
    opset = graph.opset_for(node.domain) if opset is None else opset
    cls = resolve(node.op_type, opset, node.domain)
    if cls is None:
        raise UnsupportedOperatorError(f"{graph.source}: {node.describe()}: no kernel for {node.op_type} at "
                                       f"opset {opset}")
    spec = NodeSpec(op_type=node.op_type, name=node.name, domain=node.domain, inputs=list(node.inputs),
                    outputs=list(node.outputs), attrs=node.attrs, opset=opset,
                    consts=[constants.get(name) if name else None for name in node.inputs],
                    source=graph.source, limits=graph.limits)
    try:
        return cls(spec)
    except ModelError:
        raise
    except Exception as exc:
        problem = f"{type(exc).__name__}: {exc}"
        raise ModelError(f"{graph.source}: {node.describe()} cannot be prepared: {problem}") from exc


def _schema_problem(kernel: Any, node: NodeInfo, inputs: list[str], values: list[Any],
                    problem_of: Callable[..., str | None]) -> str | None:
    """``problem_of(op_type, domain, opset, values)`` for a step (``kernel`` running ``node`` on the values of
    ``inputs``) whose arguments are its node's inputs and whose kernel's NodeSpec gives the op's version (a fused
    kernel may not); None otherwise, or if that fails (it names a failure, and must not fail in its turn)."""
    spec = getattr(kernel, "node", None)
    opset = getattr(spec, "opset", None)
    if inputs != node.inputs or getattr(spec, "op_type", None) != node.op_type or not isinstance(opset, int):
        return None
    try:
        return problem_of(node.op_type, node.domain, opset, values)
    except Exception:  # noqa: BLE001
        return None


def _type_wording(kernel: Any, node: NodeInfo, inputs: list[str], values: list[Any]) -> str | None:
    """What the op's schema says is wrong with the types of ``values`` (_schema_problem), or None."""
    return _schema_problem(kernel, node, inputs, values, input_type_problem)


class FusedStepFailure(ModelError):
    """A kernel's failure inside a step that fused several nodes: named by the step's first node, which need not
    be the node whose values broke it (Model.run then runs the graph node by node to name that one)."""


def step_failure(source: str, step: Step, values: list[Any], exc: Exception) -> ModelError:
    """The error for ``step``'s kernel failing on ``values``: the node, the shapes and dtypes it was given and the
    kernel's exception -- led by the cause when a value breaks the op's schema types (integer logits fed to
    Softmax), which the kernel's own exception seldom says."""
    detail = f"failed on inputs {_shapes(values)}: {type(exc).__name__}: {exc}"
    error = FusedStepFailure if step.fused or step.before else ModelError
    problem = _type_wording(step.kernel, step.node, step.inputs, values)
    if problem is not None:
        return error(f"{source}: {step.node.describe()}: {problem} ({detail})")
    return error(f"{source}: {step.node.describe()} {detail}")


def call_kernel(step: Step, args: list[Any], source: str) -> list[Any]:
    """Run one step outside the compiled function, with its failure named; a string tensor where the op takes
    numbers is refused before the kernel runs (string_guard)."""
    if any(is_text(arg) for arg in args):
        problem = _type_wording(step.kernel, step.node, step.inputs, args)
        if problem is not None:
            raise ModelError(f"{source}: {step.node.describe()}: {problem}")
    try:
        result = step.kernel.run(*args)
    except ModelError:
        raise
    except Exception as exc:  # noqa: BLE001 - the one boundary: anything a kernel raises is named
        raise step_failure(source, step, args, exc) from exc
    values = list(result) if isinstance(result, tuple) else [result]
    if len(values) < len(step.outputs):
        raise ModelError(f"{source}: {step.node.describe()} declares {len(step.outputs)} outputs but its kernel "
                         f"produces {len(values)}")
    return values


def fold_constants(graph: Graph, nodes: list[NodeInfo], constants: dict[str, np.ndarray]
                   ) -> tuple[list[NodeInfo], set[str]]:
    """Evaluate every node whose inputs are all constant; returns the remaining nodes and the folded names."""
    remaining, folded = [], set()
    for node in nodes:
        if all(not name or name in constants for name in node.inputs):
            kernel = make_kernel(node, graph, constants)
            if kernel.foldable:
                step = Step(node, kernel, node.inputs, node.outputs)
                values = call_kernel(step, [constants[n] if n else None for n in node.inputs], graph.source)
                for name, value in zip(node.outputs, values):
                    if name:
                        constants[name] = np.asarray(value) if not isinstance(value, np.ndarray) else value
                folded.add(node.name)
                continue
        remaining.append(node)
    return remaining, folded


def _absorb_sole_readers(steps: list[Step], graph_outputs: set[str], take: Callable[[Step, Step], bool]
                         ) -> list[Step]:
    """Each step whose sole reader ``take(step, reader)`` takes in (the kernel absorbing it when it returns True)
    becomes one step with the reader: it writes the reader's outputs, its label gains the reader's op type, and the
    reader's step is dropped."""
    _, readers = producers_and_readers(steps)
    dropped: set[int] = set()
    for step in steps:
        reader = None if id(step) in dropped else sole_reader(readers, step, graph_outputs)
        if reader is not None and take(step, reader):
            step.outputs = list(reader.outputs)
            step.fused = (*step.fused, reader.node.op_type)
            dropped.add(id(reader))
    return [s for s in steps if id(s) not in dropped]


def _one_in_one_out(step: Step, *op_types: str) -> bool:
    """``step`` is a default-domain node of one of ``op_types`` with one input and one output."""
    return step.node.op_type in op_types and is_default_domain(step.node) and len(step.inputs) == 1 \
        and len(step.outputs) == 1


def fuse_activations(steps: list[Step], constants: dict[str, np.ndarray], graph_outputs: set[str]) -> list[Step]:
    """A kernel whose sole reader is an activation it can apply (``fuse_activation``) applies it to its output."""

    def take(step: Step, activation: Step) -> bool:
        kind = FUSABLE_ACTIVATIONS.get(activation.node.op_type)
        if kind is None or not is_default_domain(activation.node):
            return False
        params = activation_params(activation.node, constants)
        return params is not None and step.kernel.fuse_activation(kind, params)

    return _absorb_sole_readers(steps, graph_outputs, take)


def fuse_biases(steps: list[Step], constants: dict[str, np.ndarray], graph_outputs: set[str]) -> list[Step]:
    """A MatMul whose only reader is an Add of a constant vector takes the addition in (``fuse_bias``): a dense
    layer exported as MatMul + Add runs as one step, and a Relu after it can then be fused as well."""

    def take(step: Step, add: Step) -> bool:
        fuse = getattr(step.kernel, "fuse_bias", None)
        if fuse is None or add.node.op_type != "Add" or not is_default_domain(add.node) or len(add.inputs) != 2 \
                or len(add.outputs) != 1:
            return False
        other = add.inputs[1] if add.inputs[0] == step.outputs[0] else add.inputs[0]
        return other != step.outputs[0] and other in constants and fuse(constants[other])

    return _absorb_sole_readers(steps, graph_outputs, take)


def fuse_pools(steps: list[Step], graph_outputs: set[str]) -> list[Step]:
    """A convolution whose only reader is a MaxPool pools each chunk while it is still in cache (kernels that
    can do this have ``fuse_pool``)."""

    def take(step: Step, pool: Step) -> bool:
        fuse = getattr(step.kernel, "fuse_pool", None)
        return fuse is not None and _one_in_one_out(pool, "MaxPool") and fuse(pool.kernel)

    return _absorb_sole_readers(steps, graph_outputs, take)


def fuse_normalizers(steps: list[Step], graph_outputs: set[str]) -> list[Step]:
    """A dense layer whose only reader is a Softmax or LogSoftmax normalises its own fresh output in place
    (kernels that can do this have ``fuse_normalizer``): a classifier's head is one step."""

    def take(step: Step, normalizer: Step) -> bool:
        fuse = getattr(step.kernel, "fuse_normalizer", None)
        return fuse is not None and _one_in_one_out(normalizer, "Softmax", "LogSoftmax") and fuse(normalizer.kernel)

    return _absorb_sole_readers(steps, graph_outputs, take)


def fuse_flattens(steps: list[Step], graph_outputs: set[str]) -> list[Step]:
    """A kernel whose only reader is a Flatten(axis=1) hands over the flattened result itself (kernels that can
    do this have ``fuse_flatten``: GlobalAveragePool, whose (N, C) means then come from one product)."""

    def take(step: Step, flatten: Step) -> bool:
        fuse = getattr(step.kernel, "fuse_flatten", None)
        return fuse is not None and _one_in_one_out(flatten, "Flatten") \
            and flatten.node.attrs.get("axis", 1) == 1 and fuse()

    return _absorb_sole_readers(steps, graph_outputs, take)


def fuse_preactivations(steps: list[Step], graph_outputs: set[str]) -> list[Step]:
    """A Tanh or Sigmoid whose only reader is a one-input kernel that can apply it first (``fuse_preactivation``:
    AveragePool; LeNet-5's conv -> tanh -> average pooling) becomes part of that kernel's step. After every
    pass that replaces kernels, which would drop what a kernel absorbed."""
    _, readers = producers_and_readers(steps)
    dropped: set[int] = set()
    for step in steps:
        if not _one_in_one_out(step, "Tanh", "Sigmoid") or step.fused:
            continue
        user = sole_reader(readers, step, graph_outputs)
        if user is None or user.inputs != step.outputs:
            continue
        fuse = getattr(user.kernel, "fuse_preactivation", None)
        if fuse is not None and fuse(step.node.op_type):
            user.inputs = list(step.inputs)
            user.before = (*step.before, step.node.op_type, *user.before)
            dropped.add(id(step))
    return [s for s in steps if id(s) not in dropped]


def _rewritten_node(template: NodeInfo, name: str, op_type: str, domain: str, inputs: list[str],
                    outputs: list[str], attrs: dict[str, Any]) -> NodeInfo:
    return replace(template, name=name, op_type=op_type, domain=domain, inputs=inputs, outputs=outputs, attrs=attrs)


def drop_dead_steps(steps: list[Step], graph_outputs: set[str]) -> list[Step]:
    needed = set(graph_outputs)
    kept: list[Step] = []
    for step in reversed(steps):
        if any(name in needed for name in step.outputs if name):
            kept.append(step)
            needed.update(name for name in step.inputs if name)
    return kept[::-1]


def _specialized(step: Step, args: list[Any]) -> Callable[..., Any] | Parts | None:
    """What ``step``'s kernel specializes for ``args`` (FastPlan.specialize), or None: also when asking raises,
    as specializing is only a faster way to the same values -- a kernel's mistake there must not make a shape
    that runs fail on every call (the step then keeps its ``run``)."""
    specialize = getattr(step.kernel, "specialize", None)
    if specialize is None:
        return None
    try:
        return specialize(*args)
    except Exception:  # noqa: BLE001 - see the docstring
        return None


def _output_checker(source_label: str, steps: list[Step]) -> Callable[[Any, int, int], Any]:
    """The generated plan's check that a multi-output kernel handed back as many values as its node declares."""

    def checked_outputs(result: Any, count: int, index: int) -> Any:
        if not isinstance(result, tuple) or len(result) < count:
            got = len(result) if isinstance(result, tuple) else 1
            raise ModelError(f"{source_label}: {steps[index].node.describe()} declares {count} outputs "
                             f"but its kernel produces {got}")
        return result

    return checked_outputs


class FastPlan:
    """The optimised graph compiled into one generated Python function."""

    def __init__(self, graph: Graph, constants: dict[str, np.ndarray]):
        self.source_label = graph.source
        outputs = {v.name for v in graph.outputs}
        consts = dict(constants)
        nodes = remove_identities(graph.nodes, outputs)
        nodes = cancel_squeeze_pairs(nodes, consts, outputs)
        nodes = flatten_batch_reshapes(nodes, consts, outputs, _rewritten_node)
        # before folding, which would turn the weights' DequantizeLinear into float weights
        nodes = fuse_qdq(nodes, consts, outputs, _rewritten_node)
        nodes, _ = fold_constants(graph, nodes, consts)
        nodes = fold_batchnorm(nodes, consts, outputs)
        bn_folded = {n.name for n in nodes if "::bn_folded_weight" in "".join(n.inputs)}
        nodes, affine_folded = fold_affine_into_conv(nodes, consts, outputs)
        nodes = fold_preactivations_into_pointwise(nodes, consts, outputs)
        nodes = carry_depthwise_biases(nodes, consts, outputs)

        def absorbed(node: NodeInfo) -> tuple[str, ...]:
            name = node.name[: -len("+affine")] if node.name in affine_folded else node.name
            return (("BatchNormalization",) if name in bn_folded else ()) + affine_folded.get(node.name, ())

        steps = [Step(n, batch1_kernel(make_kernel(n, graph, consts)), list(n.inputs), list(n.outputs),
                      absorbed(n)) for n in nodes]
        steps = fuse_channel_clamps(fuse_biases(steps, consts, outputs), consts, outputs)
        steps = fuse_activations(steps, consts, outputs)
        steps = fuse_transformer_steps(steps, consts, outputs)
        steps = fuse_pools(steps, outputs)
        steps = fuse_activations(steps, consts, outputs)  # (the activations after a fused MaxPool)
        steps = fuse_normalizers(steps, outputs)
        steps = fuse_flattens(steps, outputs)
        steps = prefer_channels_last(steps, graph)
        steps = fuse_preactivations(steps, outputs)
        steps = fuse_shuffled_depthwise(steps, consts, outputs)
        steps = fuse_separable_chains(steps, outputs)
        steps = fuse_quantized_separable_chains(steps, outputs)
        steps = fuse_quantized_gemm_chains(steps, outputs)
        steps = fuse_conv_pair_lookups(steps, outputs)
        steps = fuse_centred_conv_pairs(steps, outputs)
        steps = fuse_dense_chains(steps, consts, outputs)
        steps = fuse_pooled_heads(steps, consts, outputs)
        steps = fold_nhwc_flattens(steps, consts, outputs)
        steps = fuse_averaged_convs(steps, outputs)
        self.steps = drop_dead_steps(steps, outputs)
        guard_string_inputs(self.steps, graph.inputs, consts, graph.opset_for, graph.source, _type_wording)
        self.input_names = [v.name for v in graph.inputs]
        self.output_names = [v.name for v in graph.outputs]
        self.constants = consts
        # callers may call ``function`` themselves (Model.run inlines ``run``); then ``explain`` names a failure
        self.source, self.function, self._line_to_step, self._step_args = \
            self._compile([step.kernel.run for step in self.steps])
        # one input's shape -> the plan function with its specialized steps (``specialize``)
        self.by_shape: dict[tuple[int, ...], Callable[..., tuple]] = {}

    def specialize(self, x: np.ndarray) -> tuple:
        """Run on the one input ``x`` step by step, and keep for inputs of its shape the plan function in which
        each step calls what its kernel's ``specialize`` hands back for the arguments it got, if anything: a
        runner for arguments of exactly those shapes and dtypes (anything else it passes to ``run``), without
        the look-ups and checks ``run`` makes on every call -- a few tenths of a microsecond a step, a few
        percent of a small model at batch 1. The caller gives each shape once, after a run of that shape (on
        the checked path) that made the kernels' own per-shape caches. Returns the run's outputs."""
        values: dict[str, Any] = dict(self.constants)
        values[self.input_names[0]] = x
        runs = []
        for step in self.steps:
            args = [values[n] if n else None for n in step.inputs]
            outs = call_kernel(step, args, self.source_label)
            values.update((n, v) for n, v in zip(step.outputs, outs, strict=False) if n)
            run = _specialized(step, args) or step.kernel.run
            if isinstance(run, Parts) and (len(step.outputs) != 1 or not run.runs or sum(
                    count for _, count in run.runs) - len(run.runs) + 1 != len(step.inputs)):
                run = step.kernel.run  # (parts that do not take the step's inputs: the kernel as it is)
            runs.append(run)
        if len(self.by_shape) >= KEPT_SHAPES:
            self.by_shape.clear()
        self.by_shape[x.shape] = self._compile(runs)[1]  # (its lines are the general function's)
        return tuple(values[n] for n in self.output_names)

    def _compile(self, runs: list[Callable[..., Any] | Parts]
                 ) -> tuple[str, Callable[..., tuple], dict[int, int], list[list[str]]]:
        """Generate and compile the plan function: step ``i`` calls ``runs[i]`` (its kernel's ``run``, or what
        the kernel specialized: a runner, or Parts called in turn on the step's line). Returns the source, the
        function, each step's line and its arguments' names; every plan function has a line per step at the same
        place, so the general one's line map (which ``explain`` reads) serves them all, and a specialization in
        one thread never rebuilds it under an ``explain`` in another.

        Nothing from the file reaches the generated text: values are ``v<n>`` (computed) or ``c<n>`` (constants),
        kernels ``k<step>``; node and value names stay in data (``self.steps``) and only step indices appear in
        comments. A node name with a newline and Python in it therefore stays a name.
        """
        names: dict[str, str] = {}
        namespace: dict[str, Any] = {}

        def ref(value_name: str) -> str:
            if not value_name:
                return "None"
            if value_name not in names:
                if value_name in self.constants:
                    names[value_name] = f"c{len(names)}"
                    namespace[names[value_name]] = self.constants[value_name]
                else:
                    names[value_name] = f"v{len(names)}"
            return names[value_name]

        args = [ref(name) for name in self.input_names]
        last_use: dict[str, int] = {}
        for index, step in enumerate(self.steps):
            for name in step.inputs:
                if name:
                    last_use[name] = index
        keep = set(self.output_names) | set(self.input_names) | set(self.constants)
        lines = [f"def plan({', '.join(args)}):"]
        line_to_step: dict[int, int] = {}
        step_args: list[list[str]] = []
        for index, step in enumerate(self.steps):
            kernel = f"k{index}"
            arg_refs = [ref(n) for n in step.inputs]
            step_args.append(arg_refs)
            call = f"{kernel}({', '.join(arg_refs)})"
            targets = [ref(n) if n else "_" for n in step.outputs]
            run = runs[index]
            if isinstance(run, Parts):
                calls, taken = [], 0
                for part, (function, count) in enumerate(run.runs):
                    namespace[f"{kernel}_{part}"] = function
                    own = arg_refs[taken:taken + count] if part == 0 else ["_t", *arg_refs[taken:taken + count - 1]]
                    taken += count if part == 0 else count - 1
                    calls.append(f"{kernel}_{part}({', '.join(own)})")
                line = "    " + "".join(f"_t = {c}; " for c in calls[:-1]) + f"{targets[0]} = {calls[-1]}" \
                    + ("; del _t" if len(calls) > 1 else "")
            elif len(targets) == 1:
                namespace[kernel] = run
                line = f"    {targets[0]} = {call}"
            else:
                namespace[kernel] = run
                # a kernel must hand back exactly as many values as the node declares outputs
                line = (f"    _r = _outputs({call}, {len(targets)}, {index}); "
                        + "; ".join(f"{t} = _r[{i}]" for i, t in enumerate(targets) if t != "_"))
            line_to_step[len(lines) + 1] = index
            lines.append(f"{line}  # step {index}")
            dead = [n for n in dict.fromkeys(step.inputs) if n and last_use.get(n) == index and n not in keep]
            dead += [n for n in step.outputs if n and n not in last_use and n not in keep]
            if dead:
                lines.append(f"    del {', '.join(ref(n) for n in dead)}")
        lines.append(f"    return ({''.join(ref(n) + ', ' for n in self.output_names)})")
        source = "\n".join(lines) + "\n"
        namespace["_outputs"] = _output_checker(self.source_label, self.steps)
        exec(compile(source, _SOURCE_NAME, "exec"), namespace)  # noqa: S102 - text built from indices only
        # No reference cycle through the plan: the function's globals would hold the function itself (and a bound
        # method of this plan would hold the plan), so a replaced model's weights and kernels would wait for the
        # cyclic garbage collector instead of going when the last reference does.
        return source, namespace.pop("plan"), line_to_step, step_args

    def run(self, *inputs: np.ndarray) -> tuple:
        try:
            return self.function(*inputs)
        except ModelError:
            raise
        except Exception as exc:  # noqa: BLE001 - the one boundary: anything a kernel raises is named
            raise self.explain(exc) from exc

    def explain(self, exc: Exception) -> ModelError:
        """Find the node that failed from the generated code's line number, and the shapes it was given."""
        tb = exc.__traceback__
        while tb is not None and tb.tb_frame.f_code.co_filename != _SOURCE_NAME:
            tb = tb.tb_next
        if tb is None or tb.tb_lineno not in self._line_to_step:
            return ModelError(f"{self.source_label}: {type(exc).__name__}: {exc}")
        index = self._line_to_step[tb.tb_lineno]
        frame = tb.tb_frame
        values = [frame.f_locals.get(a, frame.f_globals.get(a)) for a in self._step_args[index]]
        return step_failure(self.source_label, self.steps[index], values, exc)

    def profile(self, inputs: list[np.ndarray]) -> list[tuple[Step, float]]:
        """Run step by step, timing each (a slower interpreter loop: for `bench --profile` only)."""
        values = dict(self.constants)
        values.update(zip(self.input_names, inputs))
        timings = []
        for step in self.steps:
            args = [values[n] if n else None for n in step.inputs]
            start = time.perf_counter()
            outs = call_kernel(step, args, self.source_label)
            timings.append((step, time.perf_counter() - start))
            values.update((n, v) for n, v in zip(step.outputs, outs) if n)
        return timings


class TracedPlan:
    """Every node of the original graph, un-fused, each output kept: for looking inside the model."""

    def __init__(self, graph: Graph, constants: dict[str, np.ndarray]):
        self.graph = graph
        self.constants = dict(constants)
        remaining, self.folded = fold_constants(graph, graph.nodes, self.constants)
        self.steps = {n.name: Step(n, make_kernel(n, graph, self.constants), n.inputs, n.outputs)
                      for n in remaining}

    def run(self, feeds: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], list[NodeRecord]]:
        values: dict[str, Any] = dict(self.constants)
        values.update(feeds)
        records: list[NodeRecord] = []
        for node in self.graph.nodes:
            step = self.steps.get(node.name)
            if step is not None:
                outs = call_kernel(step, [values[n] if n else None for n in node.inputs], self.graph.source)
                values.update((n, v) for n, v in zip(node.outputs, outs) if n)
            records.append(NodeRecord(node.name, node.op_type,
                                      {n: values[n] for n in node.outputs if n and n in values},
                                      folded=step is None))
        return {v.name: values[v.name] for v in self.graph.outputs}, records
