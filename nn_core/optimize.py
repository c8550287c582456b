"""Load-time graph rewrites that make running cheap without changing any result.

Each pass takes the node list (and the constants) and returns a new node list; the kernels are built after the
passes, so a kernel sees its final weights (a BatchNormalization folded into them, say) and prepares them once.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from .graph import NodeInfo
from .ops.conv import fold_batchnorm_into_conv

# single-input activations a Conv/Gemm/MatMul kernel can apply in place to its own output
FUSABLE_ACTIVATIONS = {"Relu": "relu", "LeakyRelu": "leaky_relu", "Clip": "clip"}


def _use_counts(nodes: list[NodeInfo], graph_outputs: set[str]) -> dict[str, int]:
    counts: dict[str, int] = {name: 1 for name in graph_outputs}
    for node in nodes:
        for name in node.inputs:
            if name:
                counts[name] = counts.get(name, 0) + 1
    return counts


def fold_batchnorm(nodes: list[NodeInfo], constants: dict[str, np.ndarray], graph_outputs: set[str]
                   ) -> list[NodeInfo]:
    """Conv followed only by an inference BatchNormalization becomes one Conv with rescaled weights and bias."""
    uses = _use_counts(nodes, graph_outputs)
    by_input = {node.inputs[0]: node for node in nodes if node.op_type == "BatchNormalization" and node.inputs}
    removed: set[int] = set()
    result: list[NodeInfo] = []
    for node in nodes:
        if id(node) in removed:
            continue
        bn = by_input.get(node.outputs[0]) if node.op_type == "Conv" and node.outputs else None
        weight_name = node.inputs[1] if len(node.inputs) > 1 else ""
        bias_name = node.inputs[2] if len(node.inputs) > 2 else ""
        weight = constants.get(weight_name)
        bias = constants.get(bias_name) if bias_name else None
        if (bn is None or uses.get(node.outputs[0], 0) != 1 or weight is None or weight.dtype.kind != "f"
                or weight.ndim < 3 or (bias_name and (bias is None or bias.shape != weight.shape[:1]))
                or not _foldable_bn(bn, constants, weight.shape[0])):
            result.append(node)
            continue
        scale, shift, mean, var = (constants[n] for n in bn.inputs[1:5])
        epsilon = _scalar(bn.attrs.get("epsilon", 1e-5))
        new_weight, new_bias = fold_batchnorm_into_conv(weight, bias, scale, shift, mean, var, epsilon)
        w_name, b_name = f"{node.name}::bn_folded_weight", f"{node.name}::bn_folded_bias"
        constants[w_name], constants[b_name] = new_weight, new_bias
        result.append(replace(node, inputs=[node.inputs[0], w_name, b_name], outputs=[bn.outputs[0]],
                              name=f"{node.name}+{bn.name}"))
        removed.add(id(bn))
    return result


def _foldable_bn(bn: NodeInfo, constants: dict[str, np.ndarray], channels: int) -> bool:
    """Only a BatchNormalization whose four parameters are constant float vectors of the conv's channel count
    folds; anything else stays a node of its own, whose kernel checks it against the data."""
    if len(bn.inputs) < 5 or any(name not in constants for name in bn.inputs[1:5]):
        return False
    if any(out for out in bn.outputs[1:]) or bn.attrs.get("training_mode", 0):
        return False
    if _scalar(bn.attrs.get("epsilon", 1e-5)) is None:
        return False
    return all(constants[name].shape == (channels,) and constants[name].dtype.kind == "f"
               for name in bn.inputs[1:5])


def remove_identities(nodes: list[NodeInfo], graph_outputs: set[str]) -> list[NodeInfo]:
    """Identity and inference-mode Dropout pass their input through: point their readers at the source."""
    alias: dict[str, str] = {}
    kept: list[NodeInfo] = []
    for node in nodes:
        inputs = [alias.get(name, name) for name in node.inputs]
        passthrough = node.op_type == "Identity" or (
            node.op_type == "Dropout" and not any(node.outputs[1:]) and len(inputs) < 3
        )
        if passthrough and inputs and inputs[0] and node.outputs and node.outputs[0] not in graph_outputs:
            alias[node.outputs[0]] = inputs[0]
            continue
        kept.append(replace(node, inputs=inputs) if inputs != node.inputs else node)
    return kept


def _scalar(value: object) -> float | None:
    """A finite-or-infinite real scalar as a float, or None for anything else (strings, vectors, NaN)."""
    array = np.asarray(value)
    if array.size != 1 or array.dtype.kind not in "biuf":
        return None
    number = float(array.reshape(-1)[0])
    return None if np.isnan(number) else number


def activation_params(node: NodeInfo, constants: dict[str, np.ndarray]) -> dict[str, float] | None:
    """The parameters of a fusable activation node, or None when they are not known at load time (or are not
    plain numbers, in which case the node is left to its own kernel, which reports the problem)."""
    kind = FUSABLE_ACTIVATIONS.get(node.op_type)
    if kind == "relu":
        return {}
    if kind == "leaky_relu":
        alpha = _scalar(node.attrs.get("alpha", 0.01))
        return None if alpha is None else {"alpha": alpha}
    if kind == "clip":
        bounds = [node.attrs.get("min", -np.inf), node.attrs.get("max", np.inf)]
        if len(node.inputs) > 1:  # input form (opset 11+): an omitted bound means no bound
            bounds = [-np.inf, np.inf]
            for index in (1, 2):
                if len(node.inputs) > index and node.inputs[index]:
                    if node.inputs[index] not in constants:
                        return None
                    bounds[index - 1] = constants[node.inputs[index]]
        low, high = _scalar(bounds[0]), _scalar(bounds[1])
        return None if low is None or high is None else {"min": low, "max": high}
    return None
