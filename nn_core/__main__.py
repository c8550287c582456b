"""`python -m nn_core COMMAND`: info · run · bench · train · eval."""

from __future__ import annotations

import argparse
import os
import sys


def _set_threads_from_argv(argv: list[str]) -> None:
    """BLAS reads its thread count when NumPy is imported, so --threads must be applied before that.

    `bench` defaults to one thread, like the onnxruntime session it is compared with.
    """
    value = "1" if argv[:1] == ["bench"] else None
    for index, arg in enumerate(argv):
        if arg.startswith("--threads="):
            value = arg.split("=", 1)[1]
        elif arg == "--threads" and index + 1 < len(argv):
            value = argv[index + 1]
    if value:
        for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[var] = value


def build_parser() -> argparse.ArgumentParser:
    from . import bench, cli

    parser = argparse.ArgumentParser(prog="python -m nn_core", description="digitscope's from-scratch ONNX engine")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    cli.add_info_arguments(commands.add_parser("info", help="describe a model: inputs, outputs, ops, parameters"))
    cli.add_run_arguments(commands.add_parser("run", help="run a model on an image or .npy input"))
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
    _set_threads_from_argv(argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    from . import bench, cli
    from .errors import ModelError

    handlers = {"info": cli.info_command, "run": cli.run_command, "bench": bench.main}
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
