"""Real-size vision models with real (random) weights, from the topologies the onnx wheel ships.

onnx's `backend/test/data/light/light_*.onnx` are ResNet-50, Inception, SqueezeNet... with every weight replaced by
a ConstantOfShape(0.02) node to keep the wheel small. Here each of those nodes becomes an initializer of seeded
random values (BatchNormalization variances positive, scales near 1) so the network computes something
non-trivial, as a trained model would.

    python benchmarks/light_models.py resnet50 --threads 2     # ours vs onnxruntime, 224x224, same run
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

LIGHT_DIR = Path(onnx.__file__).resolve().parent / "backend" / "test" / "data" / "light"


def light_model_path(name: str) -> Path:
    return LIGHT_DIR / f"light_{name}.onnx"


def materialize(name: str, seed: int = 0, logits: bool = True) -> onnx.ModelProto:
    """The light model ``name`` with each ConstantOfShape weight replaced by a seeded random initializer.

    With ``logits``, a final Softmax is dropped so the output compared is the scores themselves: with random
    weights the softmax saturates to 0 and 1, which would hide any difference.
    """
    model = onnx.load(str(light_model_path(name)))
    graph = model.graph
    last = graph.node[len(graph.node) - 1]
    if logits and last.op_type == "Softmax" and last.output[0] == graph.output[0].name:
        graph.output[0].name = last.input[0]
        graph.node.remove(last)
    shapes = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    rng = np.random.default_rng(seed)
    bn_roles = {}
    for node in graph.node:
        if node.op_type == "BatchNormalization":
            for role, value in zip(("x", "scale", "bias", "mean", "var"), node.input):
                bn_roles[value] = role
    kept_nodes, new_inits = [], []
    for node in graph.node:
        if node.op_type != "ConstantOfShape" or node.input[0] not in shapes:
            kept_nodes.append(node)
            continue
        shape = tuple(int(d) for d in shapes[node.input[0]])
        out = node.output[0]
        role = bn_roles.get(out)
        if role == "scale":
            value = rng.uniform(0.5, 1.5, shape)
        elif role == "var":
            value = rng.uniform(0.5, 2.0, shape)
        elif role in ("bias", "mean"):
            value = rng.normal(0.0, 0.1, shape)
        else:  # conv / dense weights: He initialisation keeps activations in a sane range through 50 layers
            fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
            std = np.sqrt(2.0 / max(fan_in, 1)) if len(shape) > 1 else 0.1
            value = rng.normal(0.0, std, shape)
        new_inits.append(numpy_helper.from_array(value.astype(np.float32), name=out))
    del graph.node[:]
    graph.node.extend(kept_nodes)
    used = {name for node in kept_nodes for name in node.input}
    remaining = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(remaining + new_inits)
    # drop graph inputs nothing reads any more (the shape tensors, and an unused data-queue input)
    inputs = [v for v in graph.input if v.name in used]
    del graph.input[:]
    graph.input.extend(inputs)
    return model


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name", nargs="?", default="resnet50", help="resnet50, inception_v1, squeezenet, ...")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(args.threads)
    import tempfile

    import onnxruntime as ort

    import nn_core
    from nn_core.bench import interleaved_medians

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, f"{args.name}.onnx")
        onnx.save(materialize(args.name), path)
        ours = nn_core.load(path)
        options = ort.SessionOptions()
        options.intra_op_num_threads = args.threads
        session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        spec = ours.inputs[0]
        x = np.random.default_rng(1).random([d if isinstance(d, int) else 1 for d in spec.shape]).astype(np.float32)
        got = list(ours.run({spec.name: x}).values())[0]
        want = session.run(None, {spec.name: x})[0]
        err = float(np.abs(got - want).max())
        scale = float(np.abs(want).max())
        medians = interleaved_medians({"ours": lambda: ours.run({spec.name: x}),
                                       "ort": lambda: session.run(None, {spec.name: x})}, args.seconds, 200)
        print(f"{args.name} {list(x.shape)}, {args.threads} threads: ours {medians['ours'] * 1e3:.1f} ms, "
              f"onnxruntime {medians['ort'] * 1e3:.1f} ms, ours/ort = {medians['ours'] / medians['ort']:.2f}; "
              f"max|diff| {err:.2e} (output scale {scale:.2e})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
