"""`python -m nn_core COMMAND`: info · run · quantize · bench · train · eval."""

from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    from . import bench, cli

    parser = argparse.ArgumentParser(prog="python -m nn_core", description="digitscope's from-scratch ONNX engine")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    cli.add_info_arguments(commands.add_parser("info", help="describe a model: inputs, outputs, ops, parameters"))
    cli.add_run_arguments(commands.add_parser("run", help="run a model on an image or .npy input"))
    cli.add_quantize_arguments(commands.add_parser("quantize", help="post-training int8 quantization of a model"))
    bench.add_arguments(commands.add_parser("bench", help="time a model against onnxruntime and the reference"))
    try:
        from . import evaluate, train
    except ImportError:  # pragma: no cover - training modules missing in a partial checkout
        return parser
    train.add_arguments(commands.add_parser("train", help="train the bundled LeNet-5 on MNIST"))
    evaluate.add_arguments(commands.add_parser("eval", help="accuracy and confusion matrix on MNIST test digits"))
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "threads", None):
        from .threads import set_blas_threads

        set_blas_threads(args.threads)
    from . import bench, cli
    from .errors import ModelError

    handlers = {"info": cli.info_command, "run": cli.run_command, "bench": bench.main,
                "quantize": cli.quantize_command}
    try:
        if args.command in handlers:
            return int(handlers[args.command](args) or 0)
        from . import evaluate, train

        return int({"train": train.main, "eval": evaluate.main}[args.command](args) or 0)
    except ModelError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
