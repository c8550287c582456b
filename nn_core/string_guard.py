"""String tensors kept out of the kernels of operators that take numbers.

NumPy holds ONNX strings as object arrays, and arithmetic on object arrays calls Python's own operators: a
string times an integer is that string repeated, so a file that feeds a string tensor to Mul, MatMul or Conv
with large integers asks for gigabytes (a ``Mul`` of ``"a"`` by 10**9 builds a 1 GB string), and CumSum
concatenates prefixes, quadratic in the length. The ONNX schemas say which inputs may be strings, so:

- ``call_kernel`` (constant folding at load, the traced plan, a shape's first run) checks each call whose
  arguments include a string tensor (``is_text``) against the node's schema before the kernel runs;
- the fast plan's compiled function calls kernels directly, so the steps that may read a string where their
  schema takes numbers get a ``StringGuard`` that checks those arguments first (``guard_string_inputs``). Which
  values may hold strings is worked out at load: the graph inputs declared as strings, the string constants, and
  what the steps make from them or make as strings themselves (an output whose type the schema lets be a string
  independently of the inputs', as LabelEncoder's). Only models with strings get guards.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import onnx

from .errors import ModelError
from .graph import ValueSpec, formal_types, op_schema

#: (kernel, node, its step's input names, arguments) -> the op schema's words for what is wrong, or None
Wording = Callable[[Any, Any, list[str], list[Any]], "str | None"]
_TEXT_KINDS = "OUS"  # NumPy's kinds of ONNX string tensors (object arrays of str, or fixed-width str/bytes)
_STRING_TYPES = ("tensor(string)", "seq(tensor(string))", "optional(tensor(string))",
                 "optional(seq(tensor(string)))")
#: ops whose output type is set by an attribute that can never name a string here (Cast to STRING is refused)
_NEVER_STRING_OUTPUTS = {"Cast", "CastLike", "EyeLike", "RandomNormal", "RandomUniform", "RandomNormalLike",
                         "RandomUniformLike", "Multinomial", "QuantizeLinear", "DequantizeLinear", "Shape", "Size"}


def is_text(value: Any) -> bool:
    """Whether ``value`` is a string tensor."""
    return isinstance(value, np.ndarray) and value.dtype.kind in _TEXT_KINDS


def _allows_string(type_strs: set[str]) -> bool:
    return any(kind in type_strs for kind in _STRING_TYPES)


def _makes_strings(schema: onnx.defs.OpSchema | None, op_type: str) -> bool:
    """Whether the op may output strings from inputs that are not: an output type the schema lets be a string
    and that no input shares (LabelEncoder's, CategoryMapper's). Ops without an ONNX schema (the contrib domain's
    quantized and fused kernels) make numbers."""
    if op_type in _NEVER_STRING_OUTPUTS or schema is None:
        return False
    input_params = {formal.type_str for formal in schema.inputs}
    return any(formal.type_str not in input_params and _allows_string(formal_types(schema, formal))
               for formal in schema.outputs)


class StringGuard:
    """A step's kernel behind a check of the arguments its schema takes as numbers: a string tensor there is a
    ModelError naming the node and the input, before the kernel runs. Everything else is the kernel's."""

    def __init__(self, step: Any, checks: list[tuple[int, str]], where: str, wording: Wording):
        # (the step's parts, not the step, whose kernel this becomes: no reference cycle through the plan; and
        # not under the kernel's own attribute names, which __getattr__ hands on: ``node`` is its NodeSpec)
        self.kernel, self.step_node, self.step_inputs = step.kernel, step.node, list(step.inputs)
        self.checks = checks  # (argument index, what the message says of it where the schema cannot)
        self.where = where  # "file: node 'n' (Op)"
        self.wording = wording

    def run(self, *args: Any) -> Any:
        for index, what in self.checks:
            if index < len(args) and is_text(args[index]):
                problem = self.wording(self.kernel, self.step_node, self.step_inputs, list(args)) \
                    or f"{what} is a string tensor; it takes numbers"
                raise ModelError(f"{self.where}: {problem}")
        return self.kernel.run(*args)

    def specialize(self, *args: Any) -> None:
        return None  # (every call goes through ``run`` and its checks)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.kernel, name)


def guard_string_inputs(steps: list[Any], inputs: list[ValueSpec], constants: dict[str, np.ndarray],
                        opset_for: Callable[[str], int], source: str, wording: Wording) -> None:
    """Give every step that may read a string where its schema takes numbers a StringGuard (in place), which
    words a refusal with ``wording(kernel, node, inputs, arguments)`` where it can."""
    text = {v.name for v in inputs if v.dtype is not None and np.dtype(v.dtype).kind in _TEXT_KINDS}
    text |= {name for name, value in constants.items() if is_text(value)}
    for step in steps:
        node = step.node
        schema = op_schema(node.op_type, opset_for(node.domain), node.domain)
        checks = []
        for index, name in enumerate(step.inputs):
            if not name or name not in text:
                continue
            position = node.inputs.index(name) if name in node.inputs else None
            formal = None
            if schema is not None and position is not None and schema.inputs:
                formal = schema.inputs[min(position, len(schema.inputs) - 1)]
            if formal is not None and _allows_string(formal_types(schema, formal)):
                continue
            checks.append((index, f"input {index} ('{name}')"))
        if checks:
            step.kernel = StringGuard(step, checks, f"{source}: {node.describe()}", wording)
        if any(name in text for name in step.inputs) or _makes_strings(schema, node.op_type):
            text.update(name for name in step.outputs if name)
