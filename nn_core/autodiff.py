"""Reverse mode over any ONNX graph, on the same kernels that run it.

The gradient plan keeps the graph *as loaded*: no BatchNormalization folded into a convolution, no activation
fused, every node its own kernel, so each gradient belongs to one of the model's own initializers. Floating-point
initializers are not baked into the kernels (as the fast plan does for speed) but passed at run time, so the same
plan serves training: change the weights, run again. Nodes whose inputs are all other constants (shape
arithmetic, integer tables) are still folded once.

Backward walks the nodes in reverse order; each kernel's ``backward`` turns the gradients of its outputs into
gradients of its inputs, which accumulate (fan-out adds up). A node a gradient must pass through whose kernel has
no rule raises ``UnsupportedOperatorError`` naming it — never a silently wrong number.
"""

from __future__ import annotations

import ctypes
import functools
import sys
from collections.abc import Collection, Mapping
from dataclasses import dataclass

import numpy as np

from .errors import ModelError
from .graph import Graph, NodeInfo
from .ops.conv import make_activation
from .ops.conv_pool_train import ConvReluPool, pool_fits
from .plan import Step, _shapes, fold_constants, make_kernel

#: a constant True fed to Dropout's training_mode input in a training plan
_TRAINING_FLAG = "nn_core::training"


@dataclass
class Tape:
    """One forward run remembered for backward: every value by name."""

    values: dict[str, np.ndarray]
    outputs: dict[str, np.ndarray]


class GradientPlan:
    """The loaded graph, unfused, with floating-point initializers as run-time parameters.

    ``training=True`` makes the plan behave as the graph does while it is trained, on the same kernels and the
    same file: every BatchNormalization normalises with the batch's statistics (its kernel's training mode) and
    also returns its updated running mean and variance (``running_statistics``), and every Dropout drops units
    with the plan's generator ``rng`` (seeded by ``seed``; a ``seed`` attribute in the file is ignored so that
    each step draws a new mask). Inference plans (the default) compute what ``Model.run`` computes.
    """

    def __init__(self, graph: Graph, training: bool = False, seed: int | np.random.Generator | None = None):
        self.graph = graph
        self.training = training
        if training:
            _keep_freed_memory()
        self.rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
        #: names of the initializers gradients are taken for (the trainable weights)
        self.parameters = [name for name, value in graph.constants.items() if value.dtype.kind == "f"]
        fixed = {name: value for name, value in graph.constants.items() if value.dtype.kind != "f"}
        remaining, _ = fold_constants(graph, graph.nodes, fixed)
        if training:
            fixed[_TRAINING_FLAG] = np.array(True)
        self.fixed = fixed
        #: (running mean initializer, running var initializer, value holding the new mean, ... the new var)
        self.running: list[tuple[str, str, str, str]] = []
        self._needed_cache: dict[frozenset[str], set[str]] = {}
        self.steps = [self._step(node) for node in remaining]
        self.input_names = [spec.name for spec in graph.inputs]
        self.output_names = [spec.name for spec in graph.outputs]
        # the hot loops' view of the steps: (step, bound run, inputs, outputs) and (step, takes ``wanted``)
        # the step making each single-output value, and how many step inputs read each value: the fusion passes'
        # view of the graph
        producer = {step.outputs[0]: step for step in self.steps if len(step.outputs) == 1 and step.outputs[0]}
        readers: dict[str, int] = {}
        for step in self.steps:
            for name in step.inputs:
                if name:
                    readers[name] = readers.get(name, 0) + 1
        runs = self._relus_into_convs(producer, readers) if training else {}
        fused = self._relus_into_pools(producer, readers)
        self._forward_steps = [(step, runs.get(id(step), step.kernel.run), step.inputs, step.outputs)
                               for step in self.steps]
        # training forwards whose weights are trained run Conv -> Relu -> MaxPool 2x2 blocks as one unit
        # (ConvReluPool): (unit, conv step, relu step) by the pool step's id
        self._blocks = self._conv_relu_pools(runs, fused, producer) if training else {}
        self._forward_cache: tuple[frozenset[str], list] | None = None
        self._backward_steps = [(step, type(step.kernel).accepts_wanted(), fused.get(id(step)))
                                for step in reversed(self.steps)]

    def _step(self, node: NodeInfo) -> Step:
        if self.training and node.op_type == "BatchNormalization" and node.domain in ("", "ai.onnx"):
            # the same kernel in training mode (opset 15 semantics), its running statistics as extra outputs
            y = node.outputs[0]
            new_mean, new_var = f"{y}::running_mean", f"{y}::running_var"
            attrs = {**node.attrs, "training_mode": 1}
            attrs.pop("spatial", None)
            attrs.pop("is_test", None)
            trained = NodeInfo(node.name, node.op_type, node.domain, list(node.inputs[:5]), [y, new_mean, new_var],
                               attrs, node.parameters)
            kernel = make_kernel(trained, self.graph, self.fixed, opset=max(self.graph.opset_for(""), 15))
            mean, var = trained.inputs[3], trained.inputs[4]
            if mean in self.graph.constants and var in self.graph.constants:
                self.running.append((mean, var, new_mean, new_var))
            return Step(trained, kernel, trained.inputs, trained.outputs)
        if self.training and node.op_type == "Dropout" and node.domain in ("", "ai.onnx"):
            inputs = list(node.inputs[:2]) + [""] * (2 - len(node.inputs[:2])) + [_TRAINING_FLAG]
            outputs = [node.outputs[0], node.outputs[1] if len(node.outputs) > 1 and node.outputs[1]
                       else f"{node.outputs[0]}::mask"]
            trained = NodeInfo(node.name, node.op_type, node.domain, inputs, outputs, dict(node.attrs),
                               node.parameters)
            kernel = make_kernel(trained, self.graph, self.fixed)
            kernel.seed = None  # a fresh mask every step, from the plan's generator
            kernel.rng = _PlanRng(self)
            return Step(trained, kernel, trained.inputs, trained.outputs)
        return Step(node, make_kernel(node, self.graph, self.fixed), list(node.inputs), list(node.outputs))

    def running_statistics(self, tape: Tape) -> dict[str, np.ndarray]:
        """The BatchNormalization running means and variances after a training-mode forward, by initializer."""
        result = {}
        for mean, var, new_mean, new_var in self.running:
            if new_mean in tape.values:
                result[mean], result[var] = tape.values[new_mean], tape.values[new_var]
        return result

    def forward(self, feeds: Mapping[str, np.ndarray], parameters: Mapping[str, np.ndarray],
                wrt: Collection[str] | None = None) -> Tape:
        """Run the plan, remembering every value. ``wrt``: the values the coming ``backward`` will take
        gradients for (a training step's weights): a Conv -> Relu -> MaxPool 2x2 block whose weights are among
        them and whose inside is not then runs as one unit (ConvReluPool), the ReLU's and the convolution's
        values being the pooled output then; every other value is the same either way."""
        values: dict[str, np.ndarray] = dict(self.fixed)
        values.update(parameters)
        values.update(feeds)
        step = None
        try:
            for step, run, inputs, outputs in self._steps_for(wrt):
                result = run(*[values[name] if name else None for name in inputs])
                if type(result) is np.ndarray and len(outputs) == 1:
                    if outputs[0]:
                        values[outputs[0]] = result
                    continue
                results = list(result) if isinstance(result, tuple) else [result]
                if len(results) < len(outputs):
                    raise ModelError(f"{self.graph.source}: {step.node.describe()} declares {len(outputs)} outputs "
                                     f"but its kernel produces {len(results)}")
                for name, value in zip(outputs, results):
                    if name:
                        values[name] = value if isinstance(value, np.ndarray) else np.asarray(value)
        except ModelError:
            raise
        except Exception as exc:  # noqa: BLE001 - named as call_kernel names a kernel's failure
            assert step is not None
            args = [values.get(name) if name else None for name in step.inputs]
            raise ModelError(f"{self.graph.source}: {step.node.describe()} failed on inputs {_shapes(args)}: "
                             f"{type(exc).__name__}: {exc}") from exc
        return Tape(values, {name: values[name] for name in self.output_names})

    def backward(self, tape: Tape, cotangents: Mapping[str, np.ndarray],
                 wrt: Collection[str] | None = None) -> dict[str, np.ndarray]:
        """Gradients of ``sum(<output, cotangent>)`` for every value that one reaches, keyed by name.

        ``wrt``: only these values' gradients are wanted (training some weights): the walk then skips every
        node no path from them passes through (training the last layers never runs the convolutions' rules),
        tells each rule that takes ``wanted`` which of its inputs' gradients are used, and runs a ReLU feeding
        only a MaxPool as one rule (so the ReLU's output has no gradient in the result; ask for it in ``wrt``
        to get one). The ``wrt`` values' gradients are the same either way.
        """
        needed = self._needed(frozenset(wrt)) if wrt is not None else None
        grads: dict[str, np.ndarray] = {}
        for name, cotangent in cotangents.items():
            # a graph output, or any value of the run (a loss may start from the logits under a final Softmax)
            if name not in tape.values or name in self.fixed:
                raise ModelError(f"{self.graph.source}: '{name}' is not an output of the model; outputs are "
                                 f"{', '.join(self.output_names)}")
            value = tape.values[name]
            cotangent = np.asarray(cotangent, dtype=value.dtype if value.dtype.kind == "f" else np.float64)
            if cotangent.shape != value.shape:
                raise ModelError(f"{self.graph.source}: the cotangent of '{name}' has shape "
                                 f"{list(cotangent.shape)}, the output {list(value.shape)}")
            _accumulate(grads, name, cotangent)
        values = tape.values
        for step, accepts_wanted, relu in self._backward_steps:
            out_grads = [grads.get(name) if name else None for name in step.outputs]
            if all(g is None for g in out_grads):
                continue
            inputs = [values[name] if name else None for name in step.inputs]
            wanted = [value is not None and value.dtype.kind in "fc" and (needed is None or name in needed)
                      for name, value in zip(step.inputs, inputs)]
            if not any(wanted):
                continue
            block = self._blocks.get(id(step))
            if block is not None and self._block_backward(block, step, grads, needed, values):
                continue
            outputs = [values.get(name) if name else None for name in step.outputs]
            target = step.inputs
            if relu is not None and needed is not None and self._fuses(relu, step, grads, needed, wrt, values):
                # ReLU then MaxPool: each window's gradient reaches the ReLU's input through its first maximum,
                # where the ReLU passes it iff that maximum is positive; so mask the (4x smaller) output
                # gradient by max > 0, and the ReLU's own rule (a full-size pass) is never run
                out_grads = [np.multiply(out_grads[0], outputs[0] > 0)]
                target = relu.inputs
            in_grads = self._rule(step, inputs, outputs, out_grads, wanted if accepts_wanted else None)
            for name, want, grad in zip(target, wanted, in_grads):
                if want and grad is not None:
                    _accumulate(grads, name, grad)
        return grads

    def _relus_into_convs(self, producer: dict[str, Step], readers: dict[str, int]) -> dict[int, object]:
        """Training plans: a Conv whose output only a Relu reads (not a graph output) applies that ReLU to its
        output chunk by chunk while still in cache, and the Relu step passes the array on: both names hold the
        ReLU's output. Nothing reads the Conv's own output but the Relu, whose rule's mask (input > 0) is the
        same on its output, and Conv's rule never reads its output. The forward run of each step changed, by the
        step's id."""
        runs: dict[int, object] = {}
        for step in self.steps:
            if (step.node.op_type != "Relu" or step.node.domain not in ("", "ai.onnx") or len(step.inputs) != 1
                    or not step.inputs[0] or len(step.outputs) != 1):
                continue
            conv = producer.get(step.inputs[0])
            run_activated = getattr(conv.kernel, "run_activated", None) if conv is not None else None
            if (conv is None or conv.node.op_type != "Conv" or conv.node.domain not in ("", "ai.onnx")
                    or run_activated is None or getattr(conv.kernel, "act", None) is not None
                    or getattr(conv.kernel, "pool", None) is not None or readers.get(step.inputs[0]) != 1
                    or step.inputs[0] in self.output_names or id(conv) in runs):
                continue
            runs[id(conv)] = functools.partial(run_activated, make_activation("relu", {}))
            runs[id(step)] = _passed_on
        return runs

    def _conv_relu_pools(self, runs: dict[int, object], fused: dict[int, Step], producer: dict[str, Step]
                         ) -> dict[int, tuple]:
        """Training plans: Conv -> Relu -> MaxPool 2x2 chains whose Relu already runs inside the Conv (each
        value read only by the next node, none a graph output): (unit, conv step, relu step), by the pool
        step's id. Whether a unit runs is decided per forward (``_steps_for``) and per input shape (the unit)."""
        blocks = {}
        for step in self.steps:
            relu = fused.get(id(step))
            conv = producer.get(relu.inputs[0]) if relu is not None else None
            if conv is None or runs.get(id(relu)) is not _passed_on or id(conv) not in runs \
                    or not pool_fits(step.kernel) or len(conv.inputs) < 2 or not conv.inputs[0]:
                continue
            blocks[id(step)] = (ConvReluPool(conv.kernel, step.kernel), conv, relu)
        return blocks

    def _steps_for(self, wrt: Collection[str] | None) -> list:
        """The forward steps of a run whose backward takes gradients for ``wrt`` (cached for the last ``wrt``)."""
        if wrt is None or not self._blocks:
            return self._forward_steps
        key = frozenset(wrt)
        if self._forward_cache is not None and self._forward_cache[0] == key:
            return self._forward_cache[1]
        replaced = {}
        for step_id, (unit, conv, relu) in self._blocks.items():
            inside = (conv.outputs[0], relu.outputs[0])
            if any(name in key for name in conv.inputs[1:3] if name) and not any(name in key for name in inside):
                replaced[id(conv)] = functools.partial(_block_forward, unit, _run_of(self._forward_steps, conv))
                replaced[step_id] = functools.partial(_block_pool, unit, _kernel_run(self.steps, step_id))
        chosen = [(step, replaced.get(id(step), run), inputs, outputs)
                  for step, run, inputs, outputs in self._forward_steps]
        self._forward_cache = (key, chosen)
        return chosen

    def _relus_into_pools(self, producer: dict[str, Step], readers: dict[str, int]) -> dict[int, Step]:
        """MaxPool steps (no Indices output) whose input is a Relu's output read by nothing else: the Relu's
        step, by the pool step's id."""
        fused = {}
        for step in self.steps:
            if (step.node.op_type != "MaxPool" or step.node.domain not in ("", "ai.onnx") or len(step.inputs) != 1
                    or len(step.outputs) != 1 or not step.inputs[0]):
                continue
            relu = producer.get(step.inputs[0])
            if (relu is not None and relu.node.op_type == "Relu" and relu.node.domain in ("", "ai.onnx")
                    and len(relu.inputs) == 1 and relu.inputs[0] and readers.get(step.inputs[0]) == 1
                    and step.inputs[0] not in self.output_names):
                fused[id(step)] = relu
        return fused

    def _block_backward(self, block: tuple, pool: Step, grads, needed, values) -> bool:
        """The gradient of a Conv -> Relu -> MaxPool block that its forward ran as one unit, into the Conv's
        inputs; False (nothing done) when the forward ran node by node. (Such a forward holds no value of the
        block's inside, so its values get no gradient even when ``backward`` is asked for every value.)"""
        unit, conv, relu = block
        x, y = values.get(conv.inputs[0]), values.get(pool.outputs[0])
        dy = grads.get(pool.outputs[0])
        if dy is None or not unit.matches(x, y) or conv.outputs[0] in grads or relu.outputs[0] in grads:
            return False
        inputs = [values[name] if name else None for name in conv.inputs]
        wanted = [value is not None and value.dtype.kind == "f" and (needed is None or name in needed)
                  for name, value in zip(conv.inputs, inputs)]
        w, b = inputs[1], inputs[2] if len(inputs) > 2 else None
        try:
            in_grads = unit.backward(x, w, b, y, dy, wanted[0], wanted[1], len(wanted) > 2 and wanted[2])
        except ModelError:
            raise
        except Exception as exc:  # noqa: BLE001 - a rule's failure is named like a kernel's
            raise ModelError(f"{self.graph.source}: the gradient of {conv.node.describe()} (with its ReLU and "
                             f"pooling) failed: {type(exc).__name__}: {exc}") from exc
        for name, want, grad in zip(conv.inputs, wanted, in_grads):
            if want and grad is not None:
                _accumulate(grads, name, grad)
        return True

    @staticmethod
    def _fuses(relu: Step, pool: Step, grads, needed, wrt, values) -> bool:
        """Whether this backward may run a Relu -> MaxPool pair as one rule: only the weights' gradients are
        asked for (the ReLU's output then gets no entry of its own) and nothing else flows into it."""
        between, source = pool.inputs[0], relu.inputs[0]
        value = values.get(source)
        return (between not in grads and between not in wrt and source in needed and value is not None
                and value.dtype.kind == "f" and values[between].dtype == value.dtype)

    def _needed(self, wrt: frozenset[str]) -> set[str]:
        """The values that depend on something in ``wrt`` (their gradients lead back to it), and ``wrt``."""
        cached = self._needed_cache.get(wrt)
        if cached is None:
            cached = set(wrt)
            for step in self.steps:
                if any(name in cached for name in step.inputs if name):
                    cached.update(name for name in step.outputs if name)
            self._needed_cache = {wrt: cached}
        return cached

    def _rule(self, step: Step, inputs, outputs, out_grads, wanted=None) -> list[np.ndarray | None]:
        try:
            if wanted is None:
                result = step.kernel.backward(inputs, outputs, out_grads)
            else:
                result = step.kernel.backward(inputs, outputs, out_grads, wanted=wanted)
        except ModelError:
            raise
        except Exception as exc:  # noqa: BLE001 - a rule's failure is named like a kernel's
            raise ModelError(f"{self.graph.source}: the gradient of {step.node.describe()} failed: "
                             f"{type(exc).__name__}: {exc}") from exc
        result = list(result)
        if len(result) < len(inputs):
            result += [None] * (len(inputs) - len(result))
        for value, grad in zip(inputs, result):
            if grad is not None and np.shape(grad) != np.shape(value):
                raise ModelError(f"{self.graph.source}: the gradient rule of {step.node.describe()} returned shape "
                                 f"{list(np.shape(grad))} for an input of shape {list(np.shape(value))}")
        return result

_MEMORY_KEPT = False


def _keep_freed_memory() -> None:
    """Have glibc's malloc keep freed blocks for reuse instead of handing them back to the kernel (once per
    process, best effort, glibc only). A training step allocates and frees tens of megabytes of activations
    and gradients; by default every block over the mmap threshold is a fresh mapping whose pages fault in
    on first touch, which measured a fifth of a LeNet step's CPU time (2,500 page faults, 6 ms of system
    time per step). Memory then stays at the peak of the run, the usual trade of training frameworks."""
    global _MEMORY_KEPT
    if _MEMORY_KEPT:
        return
    _MEMORY_KEPT = True
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    m_trim_threshold, m_mmap_threshold = -1, -3
    mallopt(m_mmap_threshold, 256 << 20)  # blocks below this come from the heap, reused after free
    mallopt(m_trim_threshold, 1 << 30)  # and the heap's free top is kept up to this size


class _PlanRng:
    """Stands in for a Dropout kernel's generator: draws from the plan's current ``rng`` (reseedable)."""

    def __init__(self, plan: GradientPlan):
        self.plan = plan

    def random(self, shape):
        return self.plan.rng.random(shape, dtype=np.float32)


def _run_of(forward_steps: list, wanted: Step):
    """The forward run bound to ``wanted`` in a plan's forward steps."""
    return next(run for step, run, _, _ in forward_steps if step is wanted)


def _kernel_run(steps: list[Step], step_id: int):
    """The kernel's own run of the step with this id."""
    return next(step.kernel.run for step in steps if id(step) == step_id)


def _block_forward(unit: ConvReluPool, fallback, x, w, b=None):
    """A block's Conv step: relu(maxpool(conv)) by the unit (the Relu and MaxPool steps pass it on), or the
    Conv with its ReLU as usual when the unit does not apply to this input."""
    y = unit.forward(x, w, b)
    return fallback(x, w, b) if y is None else y


def _block_pool(unit: ConvReluPool, run, x):
    """A block's MaxPool step: the unit's output passed on, or the pooling when the block ran node by node."""
    plan = unit.active
    return x if plan is not None and plan.output is x else run(x)


def _passed_on(x: np.ndarray) -> np.ndarray:
    """The forward of a Relu whose Conv already applied it (see GradientPlan._relus_into_convs)."""
    return x


def _accumulate(grads: dict[str, np.ndarray], name: str, grad: np.ndarray) -> None:
    if name in grads:
        grads[name] = grads[name] + grad  # a new array: the first may belong to a kernel or the caller
    else:
        grads[name] = grad
