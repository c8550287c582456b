"""Small builders shared by the engine tests: one-line ONNX models made with onnx.helper."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BUNDLED = ROOT / "assets" / "lenet5.onnx"


def tensor_info(name: str, shape, elem_type=TensorProto.FLOAT) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem_type, shape)


def make_model(nodes, inputs, outputs, initializers=(), opset: int = 13, **kwargs) -> onnx.ModelProto:
    graph = helper.make_graph(list(nodes), "test", list(inputs), list(outputs),
                              [numpy_helper.from_array(np.asarray(v), name=k) for k, v in dict(initializers).items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], **kwargs)
    model.ir_version = min(model.ir_version, 8)
    return model


def save(model: onnx.ModelProto, path: Path) -> Path:
    onnx.save(model, str(path))
    return path


def ort_run(model: onnx.ModelProto, feeds: dict) -> list[np.ndarray]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def conv_block_nodes(activation: str | None) -> list[onnx.NodeProto]:
    """A LeNet-style block: Conv (x, w, b -> c), then ``activation`` if any (a LeakyRelu's alpha 0.1), then a 2x2
    MaxPool to ``p``."""
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv")]
    last = "c"
    if activation is not None:
        attrs = {"alpha": 0.1} if activation == "LeakyRelu" else {}
        nodes.append(helper.make_node(activation, ["c"], ["a"], name="act", **attrs))
        last = "a"
    nodes.append(helper.make_node("MaxPool", [last], ["p"], name="pool", kernel_shape=[2, 2], strides=[2, 2]))
    return nodes


def in_threads(work, count: int) -> None:
    """Run ``work(index)`` for index 0 .. count - 1, each on its own thread, and wait for all."""
    import threading

    threads = [threading.Thread(target=work, args=(index,)) for index in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def small_cnn(rng: np.random.Generator, with_bn: bool = True, opset: int = 13) -> onnx.ModelProto:
    """conv -> (bn) -> relu -> maxpool -> flatten -> gemm -> relu -> gemm: exercises folding and fusion."""
    w1 = rng.standard_normal((4, 1, 3, 3)).astype(np.float32) * 0.5
    b1 = rng.standard_normal(4).astype(np.float32) * 0.1
    inits = {"w1": w1, "b1": b1,
             "w2": (rng.standard_normal((16, 4 * 4 * 4)) * 0.2).astype(np.float32),
             "b2": rng.standard_normal(16).astype(np.float32) * 0.1,
             "w3": (rng.standard_normal((3, 16)) * 0.3).astype(np.float32),
             "b3": np.zeros(3, np.float32)}
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1])]
    last = "c1"
    if with_bn:
        inits.update(gamma=rng.uniform(0.5, 1.5, 4).astype(np.float32),
                     beta=rng.standard_normal(4).astype(np.float32),
                     mean=rng.standard_normal(4).astype(np.float32), var=rng.uniform(0.5, 2, 4).astype(np.float32))
        nodes.append(helper.make_node("BatchNormalization", ["c1", "gamma", "beta", "mean", "var"], ["bn1"],
                                      name="bn1", epsilon=1e-5))
        last = "bn1"
    nodes += [
        helper.make_node("Relu", [last], ["r1"], name="relu1"),
        helper.make_node("MaxPool", ["r1"], ["p1"], name="pool1", kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Flatten", ["p1"], ["f1"], name="flatten"),
        helper.make_node("Gemm", ["f1", "w2", "b2"], ["g1"], name="fc1", transB=1),
        helper.make_node("Relu", ["g1"], ["r2"], name="relu2"),
        helper.make_node("Gemm", ["r2", "w3", "b3"], ["y"], name="fc2", transB=1),
    ]
    return make_model(nodes, [tensor_info("x", ["N", 1, 8, 8])], [tensor_info("y", ["N", 3])], inits, opset=opset)


def build_kernel(node: onnx.NodeProto, inputs: list, const: set[int] | tuple = (), opset: int = 13):
    """The node's kernel object itself, as the loader makes it, with the inputs at the indices in ``const``
    known at load time (to test what a kernel prepares or fuses)."""
    from nn_core.ops import load_all_kernels, resolve
    from nn_core.ops.attributes import node_attributes
    from nn_core.ops.registry import NodeSpec

    load_all_kernels()
    spec = NodeSpec(op_type=node.op_type, inputs=list(node.input), outputs=list(node.output),
                    attrs=node_attributes(node), opset=opset,
                    consts=[v if i in const else None for i, v in enumerate(inputs)])
    return resolve(node.op_type, opset)(spec)
