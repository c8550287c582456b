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

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from .errors import ModelError
from .graph import Graph
from .plan import Step, call_kernel, fold_constants, make_kernel


@dataclass
class Tape:
    """One forward run remembered for backward: every value by name."""

    values: dict[str, np.ndarray]
    outputs: dict[str, np.ndarray]


class GradientPlan:
    """The loaded graph, unfused, with floating-point initializers as run-time parameters."""

    def __init__(self, graph: Graph):
        self.graph = graph
        #: names of the initializers gradients are taken for (the trainable weights)
        self.parameters = [name for name, value in graph.constants.items() if value.dtype.kind == "f"]
        fixed = {name: value for name, value in graph.constants.items() if value.dtype.kind != "f"}
        remaining, _ = fold_constants(graph, graph.nodes, fixed)
        self.fixed = fixed
        self.steps = [Step(node, make_kernel(node, graph, fixed), list(node.inputs), list(node.outputs))
                      for node in remaining]
        self.input_names = [spec.name for spec in graph.inputs]
        self.output_names = [spec.name for spec in graph.outputs]

    def forward(self, feeds: Mapping[str, np.ndarray], parameters: Mapping[str, np.ndarray]) -> Tape:
        values: dict[str, np.ndarray] = dict(self.fixed)
        values.update(parameters)
        values.update(feeds)
        source = self.graph.source
        for step in self.steps:
            outputs = call_kernel(step, [values[name] if name else None for name in step.inputs], source)
            for name, value in zip(step.outputs, outputs):
                if name:
                    values[name] = value if isinstance(value, np.ndarray) else np.asarray(value)
        return Tape(values, {name: values[name] for name in self.output_names})

    def backward(self, tape: Tape, cotangents: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Gradients of ``sum(<output, cotangent>)`` for every value that one reaches, keyed by name."""
        grads: dict[str, np.ndarray] = {}
        for name, cotangent in cotangents.items():
            if name not in tape.outputs:
                raise ModelError(f"{self.graph.source}: '{name}' is not an output of the model; outputs are "
                                 f"{', '.join(self.output_names)}")
            value = tape.outputs[name]
            cotangent = np.asarray(cotangent, dtype=value.dtype if value.dtype.kind == "f" else np.float64)
            if cotangent.shape != value.shape:
                raise ModelError(f"{self.graph.source}: the cotangent of '{name}' has shape "
                                 f"{list(cotangent.shape)}, the output {list(value.shape)}")
            _accumulate(grads, name, cotangent)
        for step in reversed(self.steps):
            out_grads = [grads.get(name) if name else None for name in step.outputs]
            if all(g is None for g in out_grads):
                continue
            inputs = [tape.values[name] if name else None for name in step.inputs]
            wanted = [bool(name) and _differentiable(tape.values[name]) for name in step.inputs]
            if not any(wanted):
                continue
            outputs = [tape.values.get(name) if name else None for name in step.outputs]
            in_grads = self._rule(step, inputs, outputs, out_grads)
            for name, want, grad in zip(step.inputs, wanted, in_grads):
                if want and grad is not None:
                    _accumulate(grads, name, grad)
        return grads

    def _rule(self, step: Step, inputs, outputs, out_grads) -> list[np.ndarray | None]:
        try:
            result = step.kernel.backward(inputs, outputs, out_grads)
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

def _differentiable(value: np.ndarray | None) -> bool:
    return value is not None and np.asarray(value).dtype.kind in "fc"


def _accumulate(grads: dict[str, np.ndarray], name: str, grad: np.ndarray) -> None:
    if name in grads:
        grads[name] = grads[name] + grad  # a new array: the first may belong to a kernel or the caller
    else:
        grads[name] = grad
