"""The `info` and `run` commands: what a model is, and what it says about an input."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from .interface import SCALINGS, ModelAdapter, digit_from_image_file, parse_labels, to_probabilities
from .model import Model, load


def add_info_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="path to an .onnx file")
    parser.add_argument("--nodes", action="store_true", help="list every node")


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="path to an .onnx file")
    parser.add_argument("--input", help="a .npy array (fed as is) or an image (made into an MNIST-style digit)")
    parser.add_argument("--scale", choices=SCALINGS, help="pixel scaling for image inputs "
                        "(default: the model's metadata, else 01 = ink 1.0 on 0.0)")
    parser.add_argument("--top", type=int, default=3, help="how many top classes to print")


def _count(n: int) -> str:
    return f"{n:,}" if n < 10_000 else f"{n:,} ({n / 1e6:.2f} M)" if n >= 1e6 else f"{n:,} ({n / 1e3:.1f} k)"


def info_command(args: argparse.Namespace) -> int:
    model = load(args.model)
    print(f"model      {args.model}")
    print(f"producer   {model.producer}   ir_version {model.proto_info['ir_version']}   "
          f"opsets {', '.join(f'{d} {v}' for d, v in model.opsets.items())}")
    for title, specs in (("inputs", model.inputs), ("outputs", model.outputs)):
        for i, spec in enumerate(specs):
            print(f"{title if i == 0 else '':10s} {spec.name}  {spec.describe_shape()}  {spec.dtype}")
    counts = model.op_counts()
    print(f"nodes      {len(model.nodes)}: " + ", ".join(f"{op} x{n}" for op, n in counts.most_common()))
    print(f"parameters {_count(model.parameter_count)}")
    for key, value in model.metadata.items():
        print(f"metadata   {key}: {value if len(value) < 200 else value[:200] + '...'}")
    for warning in model.warnings:
        print(f"checker    {warning}")
    if args.nodes:
        for node in model.nodes:
            print(f"  {node.name:30s} {node.op_type:22s} {', '.join(node.inputs)} -> {', '.join(node.outputs)}"
                  f"{'   params ' + _count(node.parameters) if node.parameters else ''}")
    return 0


def image_to_input(path: str, model: Model, scale: str | None) -> np.ndarray:
    """An image file as a digit the model can read, through the image <-> model interface."""
    adapter = ModelAdapter(model)
    return next(iter(adapter.make_feeds(digit_from_image_file(path), scale).values()))


def run_command(args: argparse.Namespace) -> int:
    model = load(args.model)
    spec = model.inputs[0]
    if args.input is None:
        shape = [d if isinstance(d, int) else 1 for d in (spec.shape or [1])]
        x = np.zeros(shape, dtype=spec.dtype or np.float32)
        print(f"(no --input: feeding zeros of shape {shape})")
    elif Path(args.input).suffix.lower() == ".npy":
        x = np.load(args.input)
    else:
        x = image_to_input(args.input, model, args.scale)
    outputs = model.run({spec.name: x})
    labels = parse_labels(model.metadata)
    for name, value in outputs.items():
        value = np.asarray(value)
        print(f"{name}  shape {list(value.shape)}  {value.dtype}")
        with np.printoptions(precision=4, suppress=True, linewidth=110, threshold=200):
            print(value)
        if value.dtype.kind == "f" and value.ndim >= 1 and 2 <= value.shape[-1] <= 1000:
            probs = to_probabilities(value.reshape(-1, value.shape[-1])[0])
            order = np.argsort(-probs)[: args.top]
            names = [labels[i] if labels and i < len(labels) else str(i) for i in order]
            tops = ", ".join(f"{name}: {probs[i] * 100:.1f}%" for name, i in zip(names, order))
            print(f"top classes: {tops}")
    return 0


def add_quantize_arguments(parser: argparse.ArgumentParser) -> None:
    from .quantize import FORMATS, METHODS

    parser.add_argument("model", help="path to a float .onnx model")
    parser.add_argument("--out", required=True, help="where to write the quantized .onnx model")
    parser.add_argument("--calibration", help="a folder of digit images or a .npy array [N,28,28] "
                        "(default: MNIST training digits shipped with nn_core)")
    parser.add_argument("--count", type=int, default=500, help="at most this many calibration digits")
    parser.add_argument("--method", choices=METHODS, default="percentile", help="activation range calibration")
    parser.add_argument("--format", choices=FORMATS, default="qdq", dest="fmt",
                        help="qdq: Quantize/DequantizeLinear pairs; qoperator: QLinearConv/QGemm...")
    parser.add_argument("--dynamic", action="store_true", help="weights only, activations quantized at run time "
                        "(MLP-style models: Gemm/MatMul)")


def quantize_command(args: argparse.Namespace) -> int:
    from .quantize import QuantizeReport, quantize

    report = QuantizeReport(args.method, args.fmt, args.dynamic)
    quantize(args.model, args.out, calibration=args.calibration, method=args.method, fmt=args.fmt,
             dynamic=args.dynamic, count=args.count, report=report)
    before, after = Path(args.model).stat().st_size, Path(args.out).stat().st_size
    mode = "dynamic" if args.dynamic else f"static {args.fmt}, {args.method} on {report.calibration_images} digits"
    print(f"wrote {args.out} ({mode}): {after:,} bytes, {after / before:.0%} of {before:,}")
    print(f"int8 nodes {len(report.quantized_nodes)}: {', '.join(report.quantized_nodes)}")
    for node, why in report.skipped.items():
        print(f"float      {node}: {why}")
    return 0
