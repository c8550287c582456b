"""Batch-1 speed across model shapes: ours beside onnxruntime at one thread, in the same run (issue 10).

The window runs one image at a time, so what matters there is batch-1 latency, where per-node Python overhead and
kernels that do badly on small tensors (depthwise convolutions, attention) show. The set: the bundled LeNet and
the other digit models in tests/models, the torch-exported fixtures (depthwise-separable, residual, U-Net, ViT,
Keras NHWC), a MobileNet-style net built with GraphBuilder, int8 variants (``nn_core.quantize``, QDQ and
QOperator), and the onnx wheel's light ImageNet topologies with seeded random weights (benchmarks/light_models.py).

Timing: after warm-up, rounds alternate ours and onnxruntime (the order flips each round); in a round each engine
runs the same number of times, enough for a few milliseconds, and the round's ratio is ours/theirs. The ratio
reported is the median of those per-round ratios (a shared, noisy machine slows both sides of a round alike);
the times are medians per run. The geometric mean is over every model of the set.

    python benchmarks/batch1_shapes.py                  # the whole set (~3 min)
    python benchmarks/batch1_shapes.py --quick          # without the ImageNet-size models
    python benchmarks/batch1_shapes.py lenet5 vit_l17   # some, by name (substring match)
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import math  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import onnx  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

#: the torch-exported gradient fixtures of tests/models/grad used here (their batch axis made symbolic)
FIXTURES = ["dwsep_l11", "dwsep_d20", "resnet_l13", "unet_l13", "vit_l17", "vit_d20", "keras_nhwc_l12",
            "cnn_bn2d_l15", "lenet_avgpool_l10", "upsample_l13"]
#: light ImageNet topologies of the onnx wheel; vgg19 and zfnet512 (GEMM-bound, ~1 s a run) are left out
LIGHT = ["squeezenet", "shufflenet", "inception_v1", "inception_v2", "resnet50", "densenet121", "bvlc_alexnet"]


def mobilenet_style() -> onnx.ModelProto:
    """Depthwise-separable blocks (3x3 depthwise + BN + ReLU, 1x1 pointwise + BN + ReLU) on a 28x28 digit."""
    from nn_core.builder import GraphBuilder

    b = GraphBuilder(input=("input", [None, 1, 28, 28]), seed=0, name="mobilenet_style")
    x = b.relu(b.batch_norm(b.conv(b.input, 32, 3, pads=1, bias=False)))
    for out, stride in ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (256, 1)):
        c = b.shape(x)[1]
        x = b.relu(b.batch_norm(b.conv(x, c, 3, strides=stride, pads=1, groups=c, bias=False)))
        x = b.relu(b.batch_norm(b.conv(x, out, 1, bias=False)))
    x = b.gemm(b.flatten(b.global_avg_pool(x)), 10, init="glorot")
    return b.build([x], output_names=["logits"])


def symbolic_batch(proto: onnx.ModelProto) -> onnx.ModelProto:
    """The model with its inputs' and outputs' first axis named 'N' (the fixtures were exported at batch 2)."""
    proto = onnx.ModelProto.FromString(proto.SerializeToString())
    for value in list(proto.graph.input) + list(proto.graph.output):
        dims = value.type.tensor_type.shape.dim
        if dims:
            dims[0].ClearField("dim_value")
            dims[0].dim_param = "N"
    del proto.graph.value_info[:]
    return proto


def _runs_at_batch_1(path: Path) -> bool:
    import onnxruntime as ort

    import nn_core
    from nn_core.bench import example_input

    try:
        ours = nn_core.load(str(path))
        x = example_input(ours.inputs[0], 1)
        ours.run({ours.inputs[0].name: x})
        ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {ours.inputs[0].name: x})
        return True
    except Exception:  # noqa: BLE001
        return False


def build_set(workdir: Path, names: list[str], quick: bool) -> list[tuple[str, Path]]:
    """(label, path) of each model of the set, written into ``workdir`` where they are made here."""
    from nn_core.quantize import quantize

    models: list[tuple[str, Path]] = [("lenet5", ROOT / "assets" / "lenet5.onnx")]
    models += [(p.stem, p) for p in sorted((ROOT / "tests" / "models").glob("*.onnx"))]
    for name in FIXTURES:
        fixed = ROOT / "tests" / "models" / "grad" / f"{name}.onnx"
        path = workdir / f"{name}.onnx"
        onnx.save(symbolic_batch(onnx.load(str(fixed))), str(path))
        if not _runs_at_batch_1(path):  # a Reshape with the export's batch 2 written in: run it at its batch
            path = fixed
        models.append((name, path))
    path = workdir / "mobilenet_style.onnx"
    onnx.save(mobilenet_style(), str(path))
    models.append(("mobilenet_style", path))

    def wanted(label: str) -> bool:
        return not names or any(n in label for n in names)

    for label, source in (("lenet5", ROOT / "assets" / "lenet5.onnx"), ("mobilenet_style", path),
                          ("resnet_l13", workdir / "resnet_l13.onnx")):
        for fmt in ("qdq", "qoperator"):
            if label != "lenet5" and fmt == "qoperator":
                continue
            out = workdir / f"{label}_int8_{fmt}.onnx"
            if wanted(out.stem):
                quantize(source, out, fmt=fmt, count=200)
            models.append((out.stem, out))
    if not quick:
        from light_models import materialize

        for name in LIGHT:
            out = workdir / f"light_{name}.onnx"
            if wanted(out.stem):
                onnx.save(materialize(name), str(out))
            models.append((out.stem, out))
    return [(label, p) for label, p in models if wanted(label)]


def compare(path: Path, seconds: float) -> dict:
    """Batch-1 medians of ours and onnxruntime, and the median of per-round ratios."""
    import onnxruntime as ort

    import nn_core
    from nn_core.bench import example_input

    ours = nn_core.load(str(path))
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    spec = ours.inputs[0]
    batch = 1 if not spec.shape or not isinstance(spec.shape[0], int) else spec.shape[0]
    x = example_input(spec, batch)
    feeds = {spec.name: x}
    got = list(ours.run(feeds).values())[0]
    want = session.run(None, feeds)[0]
    scale = float(np.abs(want).max()) or 1.0
    err = float(np.abs(np.asarray(got, np.float64) - want).max()) / scale

    def mine():
        ours.run(feeds)

    def theirs():
        session.run(None, feeds)

    for fn in (mine, theirs, mine, theirs):
        fn()
    start = time.perf_counter()
    theirs()
    mine()
    once = time.perf_counter() - start
    per_round = max(1, int(0.004 / max(once, 1e-7)))  # each side runs ~2+ ms a round
    ratios, a_times, b_times = [], [], []
    deadline = time.perf_counter() + seconds
    rounds = 0
    while rounds < 5 or (time.perf_counter() < deadline and rounds < 400):
        pair = (mine, theirs) if rounds % 2 == 0 else (theirs, mine)
        spent = {}
        for fn in pair:
            t0 = time.perf_counter()
            for _ in range(per_round):
                fn()
            spent[fn] = (time.perf_counter() - t0) / per_round
        a_times.append(spent[mine])
        b_times.append(spent[theirs])
        ratios.append(spent[mine] / spent[theirs])
        rounds += 1
    return {"batch": batch, "ours": statistics.median(a_times), "ort": statistics.median(b_times),
            "ratio": statistics.median(ratios), "rounds": rounds, "err": err, "nodes": len(ours.nodes),
            "steps": len(ours._fast_plan().steps)}


def geometric_mean_line(ratios: list[float], what: str) -> str:
    """The closing line of a speed table: the geometric mean of the ours/onnxruntime ratios, worst and best."""
    mean = math.exp(sum(math.log(r) for r in ratios) / len(ratios))
    return f"geometric mean ours/ort over {len(ratios)} {what}: {mean:.2f}x (worst {max(ratios):.2f}x, best " \
           f"{min(ratios):.2f}x)"


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:9.3f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", help="only the models whose label contains one of these")
    parser.add_argument("--seconds", type=float, default=1.5, help="time budget per model (default 1.5)")
    parser.add_argument("--quick", action="store_true", help="leave out the ImageNet-size light models")
    args = parser.parse_args()
    from nn_core.threads import set_blas_threads

    # the environment variables above reach OpenBLAS only if NumPy was not loaded before this module (a wrapper
    # script importing NumPy first left BLAS on every core): set the count in the loaded library too
    set_blas_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        models = build_set(Path(tmp), args.names, args.quick)
        print("batch-1 latency, 1 thread, ours vs onnxruntime in the same run (median of per-round ratios)")
        print(f"{'model':32s} {'batch':>5} {'nodes':>5} {'steps':>5} {'ours ms':>9} {'ort ms':>9} {'ours/ort':>8} "
              f"{'rounds':>6} {'rel err':>8}")
        ratios = []
        for label, path in models:
            try:
                r = compare(path, args.seconds)
            except Exception as exc:  # noqa: BLE001 - report and go on with the set
                print(f"{label:32s} failed: {type(exc).__name__}: {str(exc).splitlines()[0][:120]}")
                continue
            ratios.append(r["ratio"])
            print(f"{label:32s} {r['batch']:5d} {r['nodes']:5d} {r['steps']:5d} {_ms(r['ours'])} {_ms(r['ort'])} "
                  f"{r['ratio']:7.2f}x {r['rounds']:6d} {r['err']:8.1e}", flush=True)
        if ratios:
            print("\n" + geometric_mean_line(ratios, "models"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
