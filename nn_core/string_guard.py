"""String tensors kept out of the kernels of operators that take numbers.

NumPy holds ONNX strings as object arrays, and arithmetic on object arrays calls Python's own operators: a
string times an integer is that string repeated, so a file that feeds a string tensor to Mul, MatMul or Conv
with large integers asks for gigabytes (a ``Mul`` of ``"a"`` by 10**9 builds a 1 GB string), and CumSum
concatenates prefixes, quadratic in the length. The ONNX schemas say which inputs may be strings, so:

- ``call_kernel`` (constant folding at load, the traced plan, a shape's first run) checks each call whose
  arguments include a string tensor against the node's schema before the kernel runs (``string_problem``);
- the fast plan's compiled function calls kernels directly, so the steps that may read a string where their
  schema takes numbers get a ``StringGuard`` that checks those arguments first (``guard_string_inputs``). Which
  values may hold strings is worked out at load: the graph inputs declared as strings, the string constants, and
  what the steps make from them or make as strings themselves (an output whose type the schema lets be a string
  independently of the inputs', as LabelEncoder's). Only models with strings get guards.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx

from .errors import ModelError
from .graph import input_type_problem, op_schema

_TEXT_KINDS = "OUS"  # NumPy's kinds of ONNX string tensors (object arrays of str, or fixed-width str/bytes)
_STRING_TYPES = ("tensor(string)", "seq(tensor(string))", "optional(tensor(string))",
                 "optional(seq(tensor(string)))")
#: ops whose output type is set by an attribute that can never name a string here (Cast to STRING is refused)
_NEVER_STRING_OUTPUTS = {"Cast", "CastLike", "EyeLike", "RandomNormal", "RandomUniform", "RandomNormalLike",
                         "RandomUniformLike", "Multinomial", "QuantizeLinear", "DequantizeLinear", "Shape", "Size"}


def is_text(value: Any) -> bool:
    """Whether ``value`` is a string tensor."""
    return isinstance(value, np.ndarray) and value.dtype.kind in _TEXT_KINDS


def string_problem(op_type: str, domain: str, opset: int, values: list[Any]) -> str | None:
    """For arguments that include a string tensor: which one the op's schema does not take, as
    ``input_type_problem`` words it; else None."""
    if not any(is_text(value) for value in values):
        return None
    return input_type_problem(op_type, domain, opset, values)


def _allows_string(type_strs: set[str]) -> bool:
    return any(kind in type_strs for kind in _STRING_TYPES)


def _formal_types(schema: onnx.defs.OpSchema, formal: Any) -> set[str]:
    allowed = {c.type_param_str: set(c.allowed_type_strs) for c in schema.type_constraints}
    return allowed.get(formal.type_str, {formal.type_str})


def _makes_strings(schema: onnx.defs.OpSchema | None, op_type: str) -> bool:
    """Whether the op may output strings from inputs that are not: an output type the schema lets be a string
    and that no input shares (LabelEncoder's, CategoryMapper's). Ops without an ONNX schema (the contrib domain's
    quantized and fused kernels) make numbers."""
    if op_type in _NEVER_STRING_OUTPUTS or schema is None:
        return False
    input_params = {formal.type_str for formal in schema.inputs}
    return any(formal.type_str not in input_params and _allows_string(_formal_types(schema, formal))
               for formal in schema.outputs)


class StringGuard:
    """A step's kernel behind a check of the arguments its schema takes as numbers: a string tensor there is a
    ModelError naming the node and the input, before the kernel runs. Everything else is the kernel's."""

    def __init__(self, kernel: Any, checks: list[tuple[int, str]], where: str, schema_problem: Any):
        self.kernel = kernel
        self.checks = checks  # (argument index, what the message says of it where the schema cannot)
        self.where = where  # "file: node 'n' (Op)"
        self.schema_problem = schema_problem  # arguments -> input_type_problem's wording, or None

    def run(self, *args: Any) -> Any:
        for index, what in self.checks:
            if index < len(args) and is_text(args[index]):
                problem = self.schema_problem(list(args)) or f"{what} is a string tensor; it takes numbers"
                raise ModelError(f"{self.where}: {problem}")
        return self.kernel.run(*args)

    def specialize(self, *args: Any) -> None:
        return None  # (every call goes through ``run`` and its checks)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.kernel, name)


def guard_string_inputs(steps: list[Any], text_inputs: set[str], constants: dict[str, np.ndarray],
                        opset_for: Any, source: str) -> None:
    """Give every step that may read a string where its schema takes numbers a StringGuard (in place)."""
    text = set(text_inputs) | {name for name, value in constants.items() if is_text(value)}
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
            if formal is not None and _allows_string(_formal_types(schema, formal)):
                continue
            checks.append((index, f"input {index} ('{name}')"))
        if checks:
            same_inputs = step.inputs == node.inputs  # (then the arguments are the node's, in its order)
            opset = opset_for(node.domain)

            def schema_problem(args: list[Any], node: Any = node, opset: int = opset, same: bool = same_inputs
                               ) -> str | None:
                try:
                    return input_type_problem(node.op_type, node.domain, opset, args) if same else None
                except Exception:  # noqa: BLE001 - wording the error must not fail: the plain words then
                    return None

            step.kernel = StringGuard(step.kernel, checks, f"{source}: {node.describe()}", schema_problem)
        if any(name in text for name in step.inputs) or _makes_strings(schema, node.op_type):
            text.update(name for name in step.outputs if name)
