"""nn_core: a from-scratch neural-network engine on NumPy that runs ONNX models.

    import nn_core
    model = nn_core.load("assets/lenet5.onnx")
    scores = model.run({"input": images})["logits"]

    nn_core.fit(model, images, labels, epochs=1)       # trains the graph's own initializers, in place
    mine = nn_core.finetune(model, my_digits, my_labels)  # a new model that reads these too
    mine.save("mine.onnx")
"""

from __future__ import annotations

from .errors import InputError, ModelError, UnsupportedOperatorError
from .limits import DEFAULT_LIMITS, Limits
from .model import Model, load, load_proto
from .ops import load_all_kernels
from .ops.registry import MAX_OPSET, supported_ops
from .tensor import Tensor

load_all_kernels()

from .builder import GraphBuilder  # noqa: E402 - after the kernels: the training stack builds on them
from .finetune import finetune  # noqa: E402
from .train import History, fit  # noqa: E402

#: every ONNX operator the engine has a kernel for (default domain, plus the few ai.onnx.ml classifiers)
SUPPORTED_OPS: frozenset[str] = supported_ops() | supported_ops("ai.onnx.ml")


__all__ = ["DEFAULT_LIMITS", "GraphBuilder", "History", "InputError", "Limits", "MAX_OPSET", "Model", "ModelError",
           "SUPPORTED_OPS", "Tensor", "UnsupportedOperatorError", "finetune", "fit", "load", "load_proto"]
__version__ = "0.1.0"
