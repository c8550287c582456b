"""Batch-1 speed on the public digit models of ../shared/models: ours beside onnxruntime at one thread, in the same
run, with the geometric mean (issue 10's other yardstick: real files from public projects, not built ones).

Every model of the manifest that onnxruntime runs and that takes one input is measured at its declared batch (1
where the batch axis is free), with batch1_shapes.compare: rounds alternate the two engines, the ratio is the
median of per-round ratios. The folder sits beside the project (CI has it too); the tests never need it.

    python benchmarks/public_models.py                  # every model (~1 min)
    python benchmarks/public_models.py lenet ccoltong   # some, by name (substring match)
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
# first: batch1_shapes holds BLAS to one thread before NumPy loads, and puts the project on the path
from batch1_shapes import ROOT, compare, geometric_mean_line  # noqa: E402

MODELS = ROOT.parent / "shared" / "models"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", help="only the models whose name contains one of these")
    parser.add_argument("--seconds", type=float, default=0.5, help="time budget per model (default 0.5)")
    args = parser.parse_args()
    import onnxruntime as ort

    from nn_core.threads import set_blas_threads

    set_blas_threads(1)  # (in the loaded library too: NumPy may have been imported before the variables were set)
    ort.set_default_logger_severity(3)  # (its warnings about initializers listed as inputs)
    manifest = json.loads((MODELS / "manifest.json").read_text())
    rows = []
    print(f"{'model':50s} {'ours us':>9s} {'ort us':>9s} {'ours/ort':>8s} {'steps':>5s}")
    for entry in manifest["models"]:
        if not entry.get("ort_ok") or len(entry.get("inputs", [])) != 1 \
                or (args.names and not any(name in entry["name"] for name in args.names)):
            continue
        path = MODELS / entry["name"] / entry["file"]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                result = compare(path, args.seconds)
            except Exception as exc:  # noqa: BLE001 - a model the harness cannot feed is reported, not fatal
                print(f"{entry['name']:50s} not measured: {type(exc).__name__}: {str(exc)[:80]}")
                continue
        rows.append(result["ratio"])
        print(f"{entry['name']:50s} {result['ours'] * 1e6:9.1f} {result['ort'] * 1e6:9.1f} "
              f"{result['ratio']:7.2f}x {result['steps']:5d}")
    if rows:
        print("\n" + geometric_mean_line(rows, "public models"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
