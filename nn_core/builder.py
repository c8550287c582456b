"""A small builder of ONNX graphs with freshly initialised weights: how a new model is made to be trained.

    b = GraphBuilder(input=("input", [None, 1, 28, 28]), seed=0)
    x = b.relu(b.conv(b.input, 12, 5, pads=2))
    x = b.gemm(b.flatten(b.max_pool(x, 2)), 10, init="glorot")
    proto = b.build([x], metadata={"output_kind": "logits"}, output_names=["logits"])

Every method adds one node and returns the name of its output. Weights are drawn from a seeded generator: He
(normal, std sqrt(2 / fan_in)) for layers followed by a rectifier, Glorot (uniform, sqrt(6 / (fan_in + fan_out)))
on request, biases zero. The result is a plain ``onnx.ModelProto``: ``nn_core.load_proto`` turns it into a Model
that runs, differentiates and trains in place (its initializers are the weights), and ``Model.save`` writes it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import numpy as np
import onnx
from onnx import helper, numpy_helper

#: the opset fresh graphs declare (BatchNormalization and Dropout with their training-mode semantics, >= 14)
OPSET = 17


def _pair(value: int | Sequence[int]) -> list[int]:
    return [int(value)] * 2 if isinstance(value, (int, np.integer)) else [int(v) for v in value]


def _pads(value: int | Sequence[int]) -> list[int]:
    if isinstance(value, (int, np.integer)):
        return [int(value)] * 4
    value = [int(v) for v in value]
    return value * 2 if len(value) == 2 else value


class GraphBuilder:
    """Builds a feed-forward ONNX graph node by node, tracking each value's shape (batch axis symbolic)."""

    def __init__(self, input: tuple[str, Sequence[int | None]] = ("input", (None, 1, 28, 28)), *,
                 seed: int | np.random.Generator = 0, dtype=np.float32, name: str = "model", opset: int = OPSET):
        self.rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
        self.dtype = np.dtype(dtype)
        self.name, self.opset = name, opset
        self.input, shape = input[0], list(input[1])
        self.shapes: dict[str, list[int | None]] = {self.input: shape}
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._counts: dict[str, int] = {}

    # ---- plumbing ----------------------------------------------------------------------------------------
    def _name(self, prefix: str, name: str | None) -> str:
        if name:
            return name
        self._counts[prefix] = self._counts.get(prefix, 0) + 1
        return f"{prefix}{self._counts[prefix]}"

    def _node(self, op: str, inputs: list[str], name: str, shape: list[int | None], **attrs) -> str:
        out = f"{name}_out"
        self.nodes.append(helper.make_node(op, inputs, [out], name=name, **attrs))
        self.shapes[out] = shape
        return out

    def _weight(self, name: str, value: np.ndarray) -> str:
        self.initializers.append(numpy_helper.from_array(np.asarray(value, dtype=self.dtype), name))
        return name

    def _init(self, shape: tuple[int, ...], fan_in: int, fan_out: int, init: str) -> np.ndarray:
        if init == "he":
            return self.rng.normal(0.0, np.sqrt(2.0 / fan_in), shape)
        if init == "glorot":
            limit = np.sqrt(6.0 / (fan_in + fan_out))
            return self.rng.uniform(-limit, limit, shape)
        raise ValueError(f"unknown initialisation {init!r} (he or glorot)")

    def shape(self, x: str) -> list[int | None]:
        return list(self.shapes[x])

    # ---- layers ------------------------------------------------------------------------------------------
    def conv(self, x: str, out_channels: int, kernel: int | Sequence[int], *, strides: int | Sequence[int] = 1,
             pads: int | Sequence[int] = 0, dilations: int | Sequence[int] = 1, groups: int = 1,
             bias: bool = True, init: str = "he", name: str | None = None) -> str:
        """2-D convolution (NCHW), weight [out, in/groups, kh, kw]."""
        n, c, h, w = self.shapes[x]
        kh, kw = _pair(kernel)
        sh, sw = _pair(strides)
        dh, dw = _pair(dilations)
        top, left, bottom, right = _pads(pads)
        name = self._name("conv", name)
        fan_in = c // groups * kh * kw
        inputs = [x, self._weight(f"{name}.weight", self._init((out_channels, c // groups, kh, kw), fan_in,
                                                                out_channels * kh * kw // groups, init))]
        if bias:
            inputs.append(self._weight(f"{name}.bias", np.zeros(out_channels)))
        oh = (h + top + bottom - dh * (kh - 1) - 1) // sh + 1
        ow = (w + left + right - dw * (kw - 1) - 1) // sw + 1
        return self._node("Conv", inputs, name, [n, out_channels, oh, ow], kernel_shape=[kh, kw],
                          pads=[top, left, bottom, right], strides=[sh, sw], dilations=[dh, dw], group=groups)

    def gemm(self, x: str, out_features: int, *, bias: bool = True, init: str = "he",
             name: str | None = None) -> str:
        """Dense layer ``x @ W.T + b`` (Gemm transB=1), weight [out, in] as torch's Linear."""
        n, features = self.shapes[x]
        name = self._name("fc", name)
        inputs = [x, self._weight(f"{name}.weight", self._init((out_features, features), features, out_features,
                                                                init))]
        if bias:
            inputs.append(self._weight(f"{name}.bias", np.zeros(out_features)))
        return self._node("Gemm", inputs, name, [n, out_features], transB=1)

    def batch_norm(self, x: str, *, epsilon: float = 1e-5, momentum: float = 0.9, name: str | None = None) -> str:
        """BatchNormalization over axis 1 (scale 1, bias 0, running mean 0, var 1); ``momentum`` as ONNX defines
        it: running = running * momentum + batch * (1 - momentum)."""
        channels = self.shapes[x][1]
        name = self._name("bn", name)
        inputs = [x] + [self._weight(f"{name}.{part}", value(channels)) for part, value in
                        (("weight", np.ones), ("bias", np.zeros), ("running_mean", np.zeros),
                         ("running_var", np.ones))]
        return self._node("BatchNormalization", inputs, name, self.shape(x), epsilon=epsilon, momentum=momentum)

    def dropout(self, x: str, ratio: float = 0.5, *, name: str | None = None) -> str:
        """Dropout: the identity at inference, drops ``ratio`` of the units when trained."""
        name = self._name("dropout", name)
        self.initializers.append(numpy_helper.from_array(np.array(ratio, dtype=self.dtype), f"{name}.ratio"))
        return self._node("Dropout", [x, f"{name}.ratio"], name, self.shape(x))

    def _pool(self, op: str, x: str, kernel, strides, pads, name: str | None, prefix: str, **extra) -> str:
        n, c, h, w = self.shapes[x]
        kh, kw = _pair(kernel)
        sh, sw = _pair(kernel if strides is None else strides)
        top, left, bottom, right = _pads(pads)
        oh, ow = (h + top + bottom - kh) // sh + 1, (w + left + right - kw) // sw + 1
        return self._node(op, [x], self._name(prefix, name), [n, c, oh, ow], kernel_shape=[kh, kw],
                          strides=[sh, sw], pads=[top, left, bottom, right], **extra)

    def max_pool(self, x: str, kernel: int | Sequence[int] = 2, strides=None, *, pads=0,
                 name: str | None = None) -> str:
        return self._pool("MaxPool", x, kernel, strides, pads, name, "pool")

    def avg_pool(self, x: str, kernel: int | Sequence[int] = 2, strides=None, *, pads=0,
                 name: str | None = None) -> str:
        return self._pool("AveragePool", x, kernel, strides, pads, name, "avgpool")

    def global_avg_pool(self, x: str, *, name: str | None = None) -> str:
        n, c = self.shapes[x][:2]
        return self._node("GlobalAveragePool", [x], self._name("gap", name), [n, c, 1, 1])

    def flatten(self, x: str, *, name: str | None = None) -> str:
        shape = self.shapes[x]
        return self._node("Flatten", [x], self._name("flatten", name), [shape[0], int(np.prod(shape[1:]))],
                          axis=1)

    def _unary(self, op: str, x: str, name: str | None, prefix: str, **attrs) -> str:
        return self._node(op, [x], self._name(prefix, name), self.shape(x), **attrs)

    def relu(self, x: str, *, name: str | None = None) -> str:
        return self._unary("Relu", x, name, "relu")

    def leaky_relu(self, x: str, alpha: float = 0.01, *, name: str | None = None) -> str:
        return self._unary("LeakyRelu", x, name, "leakyrelu", alpha=alpha)

    def sigmoid(self, x: str, *, name: str | None = None) -> str:
        return self._unary("Sigmoid", x, name, "sigmoid")

    def tanh(self, x: str, *, name: str | None = None) -> str:
        return self._unary("Tanh", x, name, "tanh")

    def softmax(self, x: str, *, axis: int = -1, name: str | None = None) -> str:
        return self._unary("Softmax", x, name, "softmax", axis=axis)

    def log_softmax(self, x: str, *, axis: int = -1, name: str | None = None) -> str:
        return self._unary("LogSoftmax", x, name, "logsoftmax", axis=axis)

    def add(self, a: str, b: str, *, name: str | None = None) -> str:
        return self._node("Add", [a, b], self._name("add", name), self.shape(a))

    # ---- the model ---------------------------------------------------------------------------------------
    def build(self, outputs: Sequence[str], metadata: dict[str, str] | None = None, *,
              output_names: Sequence[str] | None = None, doc_string: str = "") -> onnx.ModelProto:
        """The ModelProto: graph input, the nodes, ``outputs`` (renamed to ``output_names`` if given)."""
        nodes = list(self.nodes)
        outputs = list(outputs)
        if output_names:
            renames = dict(zip(outputs, output_names))
            for node in nodes:
                node.output[:] = [renames.get(o, o) for o in node.output]
                node.input[:] = [renames.get(i, i) for i in node.input]
            for old, new in renames.items():
                self.shapes[new] = self.shapes[old]
            outputs = [renames.get(o, o) for o in outputs]
        elem = helper.np_dtype_to_tensor_dtype(self.dtype)

        def info(name: str) -> onnx.ValueInfoProto:
            dims = ["N" if d is None else int(d) for d in self.shapes[name]]
            return helper.make_tensor_value_info(name, elem, dims)

        graph = helper.make_graph(nodes, self.name, [info(self.input)], [info(o) for o in outputs],
                                  list(self.initializers))
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", self.opset)],
                                  producer_name="digitscope", producer_version=_version(), doc_string=doc_string)
        model.ir_version = 8
        for key, value in (metadata or {}).items():
            model.metadata_props.add(key=key, value=value if isinstance(value, str) else json.dumps(value))
        onnx.checker.check_model(model)
        return model


def _version() -> str:
    from . import __version__

    return __version__


LABELS = [str(d) for d in range(10)]

#: the metadata a digit classifier built here carries (``training`` and ``test_accuracy`` are added by training)
DIGIT_METADATA = {
    "labels": json.dumps(LABELS),
    "input_scale": "01",
    "input_layout": "nchw",
    "input_description": "28x28 grey digit, ink 1.0 on background 0.0 (pixel/255), MNIST-style: the digit's "
                         "bounding box scaled into 20x20 keeping its aspect, centred by centre of mass",
    "output_kind": "logits",
}


def lenet5(seed: int | np.random.Generator = 0, channels: tuple[int, int] = (12, 24),
           hidden: tuple[int, int] = (120, 84), batchnorm: bool = False, dropout: float = 0.0,
           metadata: dict[str, str] | None = None, dtype=np.float32) -> onnx.ModelProto:
    """A fresh LeNet-5, the bundled model's shape: conv5x5(pad 2) -> relu -> pool -> conv5x5 -> relu -> pool ->
    flatten -> dense -> relu -> dense -> relu -> dense -> logits. 28x28 -> C1x28x28 -> C1x14x14 -> C2x10x10 ->
    C2x5x5 -> hidden[0] -> hidden[1] -> 10. ``batchnorm`` adds BatchNormalization after each convolution (kept
    in the file; the engine folds it into the convolution when it runs), ``dropout`` a Dropout after fc1."""
    c1, c2 = channels
    b = GraphBuilder(input=("input", [None, 1, 28, 28]), seed=seed, name="lenet5", dtype=dtype)
    x = b.conv(b.input, c1, 5, pads=2, name="conv1")
    if batchnorm:
        x = b.batch_norm(x, name="bn1")
    x = b.max_pool(b.relu(x, name="relu1"), 2, name="pool1")
    x = b.conv(x, c2, 5, name="conv2")
    if batchnorm:
        x = b.batch_norm(x, name="bn2")
    x = b.max_pool(b.relu(x, name="relu2"), 2, name="pool2")
    x = b.relu(b.gemm(b.flatten(x, name="flatten1"), hidden[0], name="fc1"), name="relu3")
    if dropout:
        x = b.dropout(x, dropout, name="dropout1")
    x = b.relu(b.gemm(x, hidden[1], name="fc2"), name="relu4")
    x = b.gemm(x, 10, init="glorot", name="fc3")
    doc = (f"LeNet-5 (conv {c1}/{c2}, dense {hidden[0]}/{hidden[1]}, ReLU, max-pool"
           f"{', batch norm' if batchnorm else ''}{f', dropout {dropout}' if dropout else ''}) built by digitscope")
    return b.build([x], {**DIGIT_METADATA, **(metadata or {})}, output_names=["logits"], doc_string=doc)
