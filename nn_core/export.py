"""Converts between a trainable ``Sequential`` and an ONNX model, the file format the engine loads.

``to_onnx``/``export_onnx`` write a trained model; ``from_onnx`` reads a chain-shaped graph (such as the bundled
LeNet-5) back into layers, so a shipped model can be fine-tuned or back-propagated to its input for saliency.

Each layer becomes one standard operator (Conv, Relu, MaxPool, Flatten, Gemm, ...). A BatchNorm2d right after a
Conv2d is folded into the convolution's weights and bias — the inference-time result is identical and the graph
is one node shorter per stage; a BatchNorm2d anywhere else becomes a BatchNormalization node. Dropout is the
identity at inference and is left out.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from .errors import UnsupportedOperatorError
from .layers import (
    AvgPool2d,
    BatchNorm2d,
    Conv2d,
    Dropout,
    Flatten,
    Layer,
    Linear,
    MaxPool2d,
    ReLU,
    Sequential,
    Sigmoid,
    Tanh,
)

OPSET = 13
PRODUCER_NAME = "digitscope"
PRODUCER_VERSION = "0.1.0"
INPUT_NAME = "input"
OUTPUT_NAME = "logits"


def fold_batchnorm(conv: Conv2d, norm: BatchNorm2d) -> tuple[np.ndarray, np.ndarray]:
    """Weights and bias of one convolution equal to ``norm(conv(x))`` in inference mode."""
    scale = norm.gamma.value.astype(np.float64) / np.sqrt(norm.running_var.astype(np.float64) + norm.eps)
    weight = conv.weight.value.astype(np.float64) * scale[:, None, None, None]
    bias = conv.bias.value.astype(np.float64) if conv.bias is not None else np.zeros(conv.out_channels)
    bias = (bias - norm.running_mean) * scale + norm.beta.value
    return weight.astype(np.float32), bias.astype(np.float32)


class _GraphBuilder:
    """Accumulates nodes and initializers, naming each node after its layer kind and position (conv1, relu2)."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.current = INPUT_NAME
        self._counts: dict[str, int] = {}

    def add(self, kind: str, op_type: str, params: dict[str, np.ndarray] | None = None, **attrs) -> None:
        self._counts[kind] = self._counts.get(kind, 0) + 1
        name = f"{kind}{self._counts[kind]}"
        inputs = [self.current]
        for param_name, value in (params or {}).items():
            tensor_name = f"{name}.{param_name}"
            self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(value, np.float32), tensor_name))
            inputs.append(tensor_name)
        output = f"{name}_out"
        self.nodes.append(helper.make_node(op_type, inputs, [output], name=name, **attrs))
        self.current = output


def _add_layer(builder: _GraphBuilder, layer: Layer, following: Layer | None) -> bool:
    """Appends the nodes of one layer; returns True when it also consumed ``following`` (a folded BatchNorm)."""
    if isinstance(layer, Conv2d):
        folded = isinstance(following, BatchNorm2d)
        if folded:
            weight, bias = fold_batchnorm(layer, following)
        else:
            weight = layer.weight.value
            bias = layer.bias.value if layer.bias is not None else np.zeros(layer.out_channels, np.float32)
        ph, pw = layer.padding
        builder.add("conv", "Conv", {"weight": weight, "bias": bias}, kernel_shape=list(layer.kernel),
                    strides=list(layer.stride), pads=[ph, pw, ph, pw])
        return folded
    if isinstance(layer, BatchNorm2d):
        builder.add("batchnorm", "BatchNormalization", {"scale": layer.gamma.value, "bias": layer.beta.value,
                    "mean": layer.running_mean, "var": layer.running_var}, epsilon=float(layer.eps))
    elif isinstance(layer, Linear):
        bias = layer.bias.value if layer.bias is not None else np.zeros(layer.out_features, np.float32)
        builder.add("fc", "Gemm", {"weight": layer.weight.value, "bias": bias}, transB=1)
    elif isinstance(layer, AvgPool2d):  # before MaxPool2d: AvgPool2d derives from it
        builder.add("avgpool", "AveragePool", kernel_shape=list(layer.kernel), strides=list(layer.stride))
    elif isinstance(layer, MaxPool2d):
        builder.add("pool", "MaxPool", kernel_shape=list(layer.kernel), strides=list(layer.stride))
    elif isinstance(layer, ReLU):
        builder.add("relu", "Relu")
    elif isinstance(layer, Tanh):
        builder.add("tanh", "Tanh")
    elif isinstance(layer, Sigmoid):
        builder.add("sigmoid", "Sigmoid")
    elif isinstance(layer, Flatten):
        builder.add("flatten", "Flatten", axis=1)
    elif isinstance(layer, Dropout):
        pass  # the identity at inference
    else:
        raise TypeError(f"cannot export layer {type(layer).__name__} to ONNX")
    return False


def to_onnx(
    model: Sequential,
    input_shape: tuple[int, ...] = (1, 28, 28),
    metadata: dict[str, str] | None = None,
    doc_string: str = "",
    graph_name: str = "digitscope_model",
) -> onnx.ModelProto:
    """The ONNX model of ``model`` in inference mode: input ``input`` [N, *input_shape], output ``logits``."""
    builder = _GraphBuilder()
    layers = list(model)
    index = 0
    while index < len(layers):
        following = layers[index + 1] if index + 1 < len(layers) else None
        index += 2 if _add_layer(builder, layers[index], following) else 1
    # The last node writes the graph output directly under its public name.
    builder.nodes[-1].output[0] = OUTPUT_NAME
    out_features = _output_features(model, input_shape)
    graph = helper.make_graph(
        builder.nodes,
        graph_name,
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["N", *input_shape])],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["N", out_features])],
        builder.initializers,
    )
    onnx_model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name=PRODUCER_NAME,
        producer_version=PRODUCER_VERSION,
        doc_string=doc_string,
    )
    # IR version 8 is the one every onnxruntime since 1.14 reads.
    onnx_model.ir_version = 8
    helper.set_model_props(onnx_model, dict(metadata or {}))
    onnx.checker.check_model(onnx_model, full_check=True)
    return onnx_model


def _output_features(model: Sequential, input_shape: tuple[int, ...]) -> int:
    probe = model.forward(np.zeros((1, *input_shape), np.float32), training=False)
    return int(probe.shape[1])


def export_onnx(model: Sequential, path: str | Path, **kwargs) -> onnx.ModelProto:
    """Writes ``to_onnx(model, **kwargs)`` to ``path`` (creating its folder) and returns the model proto."""
    onnx_model = to_onnx(model, **kwargs)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save_model(onnx_model, str(path))
    return onnx_model


def _node_attributes(node: onnx.NodeProto) -> dict:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _layer_from_node(node: onnx.NodeProto, weights: dict[str, np.ndarray]) -> Layer | None:
    """The trainable layer equal to one ONNX node (None for inference no-ops); UnsupportedOperatorError else."""
    attrs = _node_attributes(node)
    where = f"node '{node.name}' ({node.op_type})"

    def unsupported(reason: str) -> UnsupportedOperatorError:
        return UnsupportedOperatorError(f"{where}: {reason}; only plain chains of LeNet-style layers can be imported")

    def param(position: int) -> np.ndarray:
        if position >= len(node.input) or node.input[position] not in weights:
            raise unsupported(f"input {position} is not an initializer")
        return weights[node.input[position]].astype(np.float32)

    op = node.op_type
    if op == "Conv":
        pads = list(attrs.get("pads", [0, 0, 0, 0]))
        if attrs.get("group", 1) != 1 or set(attrs.get("dilations", [1, 1])) != {1} or \
                attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET") or pads[:2] != pads[2:]:
            raise unsupported("groups, dilations, auto_pad or asymmetric pads")
        weight = param(1)
        conv = Conv2d(weight.shape[1], weight.shape[0], weight.shape[2:], attrs.get("strides", [1, 1]), pads[:2],
                      bias=len(node.input) > 2 and bool(node.input[2]))
        conv.weight.value = weight
        if conv.bias is not None:
            conv.bias.value = param(2)
        return conv
    if op == "Gemm":
        if attrs.get("transA", 0) or attrs.get("alpha", 1.0) != 1.0 or attrs.get("beta", 1.0) != 1.0:
            raise unsupported("transA, alpha or beta")
        weight = param(1) if attrs.get("transB", 0) else param(1).T.copy()
        linear = Linear(weight.shape[1], weight.shape[0], bias=len(node.input) > 2 and bool(node.input[2]))
        linear.weight.value = weight
        if linear.bias is not None:
            linear.bias.value = np.broadcast_to(param(2), (weight.shape[0],)).copy()
        return linear
    if op in ("MaxPool", "AveragePool"):
        if any(attrs.get("pads", [0])) or attrs.get("ceil_mode", 0) or set(attrs.get("dilations", [1])) != {1}:
            raise unsupported("pads, ceil_mode or dilations")
        kernel = attrs["kernel_shape"]
        pool = MaxPool2d if op == "MaxPool" else AvgPool2d
        return pool(tuple(kernel), tuple(attrs.get("strides", kernel)))
    if op == "BatchNormalization":
        norm = BatchNorm2d(len(param(1)), eps=attrs.get("epsilon", 1e-5))
        norm.gamma.value, norm.beta.value = param(1), param(2)
        norm.running_mean, norm.running_var = param(3), param(4)
        return norm
    if op == "Flatten":
        if attrs.get("axis", 1) != 1:
            raise unsupported("axis other than 1")
        return Flatten()
    simple = {"Relu": ReLU, "Tanh": Tanh, "Sigmoid": Sigmoid}
    if op in simple:
        return simple[op]()
    if op in ("Dropout", "Identity"):
        return None
    raise unsupported("no trainable layer for this operator")


def from_onnx(source: str | Path | onnx.ModelProto) -> Sequential:
    """Rebuilds a ``Sequential`` from an ONNX graph that is a single chain of supported layers.

    The result can be fine-tuned or back-propagated to its input (saliency maps) with the same layers the
    training uses. Graphs with branches, or operators without a trainable counterpart, raise
    ``UnsupportedOperatorError`` naming the node.
    """
    proto = source if isinstance(source, onnx.ModelProto) else onnx.load(str(source))
    graph = proto.graph
    weights = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    current = next(i.name for i in graph.input if i.name not in weights)
    layers: list[Layer] = []
    for node in graph.node:
        data_inputs = [name for name in node.input if name and name not in weights]
        if data_inputs != [current] or len(node.output) < 1:
            raise UnsupportedOperatorError(f"node '{node.name}' ({node.op_type}) does not continue a single chain "
                                           f"from '{current}'; only sequential graphs can be imported")
        layer = _layer_from_node(node, weights)
        if layer is not None:
            layers.append(layer)
        current = node.output[0]
    return Sequential(*layers).eval()
