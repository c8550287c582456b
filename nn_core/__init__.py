"""nn_core: a from-scratch neural-network engine on NumPy that runs ONNX models.

    import nn_core
    model = nn_core.load("assets/lenet5.onnx")
    scores = model.run({"input": images})["logits"]
"""

from __future__ import annotations

from .errors import InputError, ModelError, UnsupportedOperatorError
from .limits import DEFAULT_LIMITS, Limits
from .model import Model, load, load_proto
from .ops import load_all_kernels
from .ops.registry import MAX_OPSET, supported_ops
from .tensor import Tensor

load_all_kernels()

#: every ONNX operator the engine has a kernel for (default domain, plus the few ai.onnx.ml classifiers)
SUPPORTED_OPS: frozenset[str] = supported_ops() | supported_ops("ai.onnx.ml")


__all__ = ["DEFAULT_LIMITS", "InputError", "Limits", "MAX_OPSET", "Model", "ModelError", "SUPPORTED_OPS", "Tensor",
           "UnsupportedOperatorError", "load", "load_proto"]
__version__ = "0.1.0"
