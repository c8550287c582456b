"""Does nn_core.finetune learn one person's handwriting from one drawing per digit, without forgetting MNIST?

Writers are tools/stroke_digits.Writer styles (flagged and serifed 1s, crossed or hooked 7s, closed or Ч-like 4s,
curly or g-like 9s, flat-topped 3s, looped or Z-like 2s, slashed 0s, b-like 6s, stacked-circle 8s, with a
personal slant, width, rotation, pen and distortion of every shape), drawn as pen recordings and rasterised by the
app's gui.rasterize. For each writer: ten teaching drawings (one per digit) go to nn_core.finetune with its
defaults; the writer's other drawings (--per-digit of each digit, never taught) are read before and after, and
the fine-tuned model is also scored on the 10,000 MNIST test digits (forgetting). Prints one line per writer,
then the means and the fine-tuning time, wall and CPU (one BLAS thread unless --threads).

    python benchmarks/finetune_writers.py                      # held-out writers 200-211, the figures to quote
    python benchmarks/finetune_writers.py --writers 400 411    # the writers for choosing finetune's defaults
    python benchmarks/finetune_writers.py --option steps=40 --option lr=1e-3   # try other finetune options

Needs /work/shared/data/mnist for the forgetting column (a command, not a test).
"""

from __future__ import annotations

import argparse
import ast
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _option(text: str) -> tuple[str, object]:
    key, _, value = text.partition("=")
    try:
        return key, ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return key, value


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=ROOT / "assets" / "lenet5.onnx")
    parser.add_argument("--writers", type=int, nargs=2, default=(200, 211), metavar=("FIRST", "LAST"),
                        help="writer seeds, inclusive (200-211: held out; 400-411: for tuning the defaults)")
    parser.add_argument("--per-digit", type=int, default=10, help="test drawings per digit per writer")
    parser.add_argument("--option", action="append", default=[], type=_option, metavar="KEY=VALUE",
                        help="a nn_core.finetune option (repeatable)")
    parser.add_argument("--mnist", type=int, default=10000, help="MNIST test digits for the forgetting column")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(args.threads)

    import numpy as np

    import nn_core
    from gui.rasterize import rasterize
    from nn_core.threads import set_blas_threads
    from tools.stroke_digits import load_mnist, writer_recordings

    set_blas_threads(args.threads)
    options = dict(args.option)
    model = nn_core.load(str(args.model))
    name, output = model.inputs[0].name, model.outputs[0].name
    mnist, mnist_labels = load_mnist("t10k")
    mnist = (mnist[: args.mnist].astype(np.float32) / 255)[:, None]
    mnist_labels = mnist_labels[: args.mnist].astype(np.int64)

    def accuracy(m: nn_core.Model, x: np.ndarray, y: np.ndarray) -> float:
        scores = np.concatenate([m.run({name: x[i:i + 1000]})[output] for i in range(0, len(x), 1000)])
        return 100 * float(np.mean(scores.argmax(axis=1) == y))

    base_mnist = accuracy(model, mnist, mnist_labels)
    print(f"model {args.model.name}: MNIST t10k {base_mnist:.2f} % ({len(mnist_labels):,} digits); finetune "
          f"options {options or 'defaults'}; {args.threads} BLAS thread(s)\n")
    print(f"{'writer':>6} {'styles (variant per digit)':>28} {'before %':>9} {'after %':>8} {'t10k after':>11} "
          f"{'seconds':>8} {'cpu s':>7}  still wrong after (true->read)")
    rows = []
    for writer in range(args.writers[0], args.writers[1] + 1):
        recordings = writer_recordings([writer], 1 + args.per_digit, seed=args.seed)
        images = np.stack([rasterize(r, (280, 280), pen) for _, _, r, pen in recordings])[:, None]
        labels = np.array([d for _, d, _, _ in recordings], np.int64)
        first = np.zeros(len(labels), bool)
        first[np.searchsorted(labels, np.arange(10))] = True  # each digit's first drawing teaches
        teach_x, teach_y, test_x, test_y = images[first], labels[first], images[~first], labels[~first]
        before = accuracy(model, test_x, test_y)
        started, cpu = time.perf_counter(), time.process_time()
        tuned = nn_core.finetune(model, teach_x, teach_y, **options)
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
        after = accuracy(tuned, test_x, test_y)
        after_mnist = accuracy(tuned, mnist, mnist_labels)
        read = tuned.run({name: test_x})[output].argmax(axis=1)
        wrong = sorted({f"{t}->{r}" for t, r in zip(test_y, read, strict=True) if t != r})
        from tools.stroke_digits import Writer

        variants = "".join(str(v) for v in Writer.make(writer).variants)
        rows.append((before, after, after_mnist, seconds, cpu))
        print(f"{writer:>6} {variants:>28} {before:9.1f} {after:8.1f} {after_mnist:11.2f} {seconds:8.3f} {cpu:7.3f}  "
              f"{' '.join(wrong[:8])}", flush=True)
    mean = np.mean(rows, axis=0)
    worst = np.min([r[2] for r in rows])
    print(f"\n{'mean':>6} {'':>28} {mean[0]:9.1f} {mean[1]:8.1f} {mean[2]:11.2f} {mean[3]:8.3f} {mean[4]:7.3f}")
    print(f"MNIST t10k: {base_mnist:.2f} % before, {mean[2]:.2f} % mean and {worst:.2f} % worst after; "
          f"fine-tuning took {mean[3]:.3f} s on average, {max(r[3] for r in rows):.3f} s at most (CPU time "
          f"{mean[4]:.3f} s on average, {max(r[4] for r in rows):.3f} s at most: on a shared machine the wall "
          "time includes waiting for a core)")


if __name__ == "__main__":
    main()
