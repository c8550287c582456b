"""The int8 study: float vs int8 (quantized by `nn_core quantize`), our engine vs onnxruntime.

    python benchmarks/int8_study.py [--models N] [--out docs/int8]

For the bundled LeNet-5 and the float models of ../shared/models that quantize (absent ones are skipped):
MNIST t10k accuracy (../shared/data/mnist; else the shipped samples), class agreement of the two engines, latency
at batch 1 and 1000 (median; one thread each, as ../shared/scorecard.py), peak memory of a batch-1000 run (the
process's high-water RSS, reset before each run) and file size. Writes REPORT.md and PNG charts (Pillow).
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import nn_core  # noqa: E402
from nn_core.interface import ModelAdapter, load_samples  # noqa: E402
from nn_core.quantize import quantize  # noqa: E402

SHARED = ROOT.parent / "shared"


def median_ms(fn, repeat: int) -> float:
    fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times)) * 1e3


def peak_mb(fn) -> float | None:
    """High-water RSS growth of one call (Linux: /proc/self/clear_refs resets VmHWM)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        status = Path("/proc/self/status").read_text()
    except OSError:
        return None
    rss = int(next(line for line in status.splitlines() if line.startswith("VmRSS")).split()[1])
    fn()
    status = Path("/proc/self/status").read_text()
    hwm = int(next(line for line in status.splitlines() if line.startswith("VmHWM")).split()[1])
    return max(hwm - rss, 0) / 1024


def test_digits():
    mnist = SHARED / "data" / "mnist"
    if (mnist / "t10k-images-idx3-ubyte.gz").exists():
        from nn_core.data import load_mnist

        images, labels = load_mnist(mnist, "t10k")
        return images.astype(np.float32) / np.float32(255), labels.astype(np.int64), "MNIST t10k (10,000)"
    images, labels = load_samples()
    return images, labels, f"shipped samples ({len(images)})"


def candidates(limit: int) -> list[Path]:
    models = [ROOT / "assets" / "lenet5.onnx"]
    manifest = SHARED / "models" / "manifest.json"
    if manifest.exists():
        for entry in json.loads(manifest.read_text()).get("models", []):
            name = entry if isinstance(entry, str) else entry.get("name") or entry.get("folder")
            folder = SHARED / "models" / str(name)
            meta = folder / "meta.json"
            if not meta.exists():
                continue
            info = json.loads(meta.read_text())
            path = folder / info["file"]
            if path.exists() and not any(s in str(name) for s in ("qdq", "quant", "int8", "extdata")):
                models.append(path)
    return models[:limit]


class OrtModel:
    def __init__(self, path: Path):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def run(self, feeds):
        return dict(zip([o.name for o in self.session.get_outputs()], self.session.run(None, feeds)))


def measure(path: Path, adapter_model, images, labels) -> dict:
    ours = nn_core.load(path)
    theirs = OrtModel(path)
    adapter = ModelAdapter(adapter_model)

    def feeds_of(batch):
        return adapter.make_batch_feeds(batch, adapter.scaling)

    result = {"size": path.stat().st_size}
    for engine, model in (("ours", ours), ("ort", theirs)):
        predictions = []
        for start in range(0, len(images), 1000):
            out = model.run(feeds_of(images[start:start + 1000]))
            scores = np.asarray(out[adapter_model.outputs[0].name] if adapter_model.outputs[0].name in out
                                else next(iter(out.values())))
            predictions.append(scores.reshape(len(scores), -1).argmax(1))
        result[f"{engine}_pred"] = np.concatenate(predictions)
        result[f"{engine}_acc"] = float((result[f"{engine}_pred"] == labels).mean() * 100)
        one, thousand = feeds_of(images[:1]), feeds_of(images[:1000])
        result[f"{engine}_b1"] = median_ms(lambda m=model, f=one: m.run(f), 200)
        result[f"{engine}_b1000"] = median_ms(lambda m=model, f=thousand: m.run(f), 5)
        result[f"{engine}_mem"] = peak_mb(lambda m=model, f=thousand: m.run(f))
    result["agree"] = float((result["ours_pred"] == result["ort_pred"]).mean() * 100)
    return result


# ---------------------------------------------------------------- charts (Pillow)


COLORS = {"float ours": (90, 90, 200), "float ort": (160, 160, 230), "int8 ours": (200, 90, 60),
          "int8 ort": (240, 170, 140)}


def bar_chart(path: Path, title: str, unit: str, groups: list[str], series: dict[str, list[float]]) -> None:
    from PIL import Image, ImageDraw

    width, height, left, bottom, top = 900, 420, 70, 90, 50
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    draw.text((left, 15), f"{title} ({unit})", fill="black")
    peak = max([v for values in series.values() for v in values if v is not None] + [1e-9])
    plot_h = height - top - bottom
    group_w = (width - left - 20) / max(len(groups), 1)
    bar_w = group_w * 0.8 / max(len(series), 1)
    draw.line([(left, top), (left, height - bottom), (width - 10, height - bottom)], fill="black")
    for tick in range(5):
        value = peak * tick / 4
        y = height - bottom - plot_h * tick / 4
        draw.text((5, y - 6), f"{value:.3g}", fill="black")
        draw.line([(left - 3, y), (left, y)], fill="black")
    for g, group in enumerate(groups):
        x0 = left + g * group_w + group_w * 0.1
        for s, (name, values) in enumerate(series.items()):
            value = values[g]
            if value is None:
                continue
            h = plot_h * value / peak
            x = x0 + s * bar_w
            draw.rectangle([x, height - bottom - h, x + bar_w - 2, height - bottom], fill=COLORS.get(name, "grey"))
        draw.text((x0, height - bottom + 8), group[:22], fill="black")
    for s, name in enumerate(series):
        x = left + s * 150
        draw.rectangle([x, height - 30, x + 12, height - 18], fill=COLORS.get(name, "grey"))
        draw.text((x + 18, height - 30), name, fill="black")
    image.save(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=4, help="how many models (the bundled one first)")
    parser.add_argument("--out", default=str(ROOT / "docs" / "int8"))
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    images, labels, data_name = test_digits()
    rows = []
    work = Path(tempfile.mkdtemp(prefix="int8_study_"))
    for path in candidates(args.models):
        label = path.parent.name if path.parent.name != "assets" else "bundled lenet5"
        try:
            float_model = nn_core.load(path)
            adapter = ModelAdapter(float_model)
            if not adapter.layout.dynamic_batch:
                print(f"skip {label}: fixed batch")
                continue
            int8_path = work / f"{label}.int8.onnx"
            qop_path = work / f"{label}.int8.qop.onnx"
            start = time.perf_counter()
            quantize(path, int8_path)
            quantize_s = time.perf_counter() - start
            quantize(path, qop_path, fmt="qoperator")
        except Exception as exc:  # noqa: BLE001 - a model the study cannot use is reported and skipped
            print(f"skip {label}: {type(exc).__name__}: {str(exc)[:160]}")
            continue
        row = {"model": label, "quantize_s": quantize_s}
        for kind, p in (("float", path), ("qdq", int8_path), ("qop", qop_path)):
            row[kind] = measure(p, float_model, images, labels)
            print(label, kind, {k: v for k, v in row[kind].items() if not k.endswith("pred")}, flush=True)
        rows.append(row)
    write_report(out, rows, data_name)
    return 0


def fmt(value, digits=2):
    return "n/a" if value is None else f"{value:.{digits}f}"


def write_report(out: Path, rows: list[dict], data_name: str) -> None:
    groups = [r["model"] for r in rows]
    for key, title, unit in (("b1", "latency batch 1", "ms"), ("b1000", "latency batch 1000", "ms"),
                             ("mem", "peak memory batch 1000", "MiB")):
        bar_chart(out / f"{key}.png", title, unit, groups, {
            "float ours": [r["float"][f"ours_{key}"] for r in rows],
            "float ort": [r["float"][f"ort_{key}"] for r in rows],
            "int8 ours": [r["qdq"][f"ours_{key}"] for r in rows], "int8 ort": [r["qdq"][f"ort_{key}"] for r in rows]})
    bar_chart(out / "size.png", "file size", "KiB", groups, {"float ours": [r["float"]["size"] / 1024 for r in rows],
                                                           "int8 ours": [r["qdq"]["size"] / 1024 for r in rows]})
    lines = ["# int8 study: float vs int8, nn_core vs onnxruntime", "",
             "Made by `python benchmarks/int8_study.py` (one thread per engine; medians of 200 runs at batch 1, "
             f"5 at batch 1000). Accuracy on {data_name}. int8 = `nn_core quantize MODEL` (static, QDQ, percentile "
             "calibration on 500 shipped MNIST training digits, int8 per-channel weights); `int8 QOp` = the same "
             "model with `--format qoperator` (QLinearConv/QGemm: what our engine runs once the plan fuses QDQ "
             "groups, see below). Peak memory = growth of the process's high-water RSS over one batch-1000 run.", "",
             "| model | variant | size KiB | acc ours % | acc ort % | classes agree % | b1 ours ms | b1 ort ms | "
             "b1 ours/ort | b1000 ours ms | b1000 ort ms | b1000 ours/ort | peak MiB ours | peak MiB ort |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        for kind, name in (("float", "float"), ("qdq", "int8 QDQ"), ("qop", "int8 QOp")):
            m = r[kind]
            lines.append(f"| {r['model']} | {name} | {m['size'] / 1024:.0f} | {m['ours_acc']:.2f} "
                         f"| {m['ort_acc']:.2f} | {m['agree']:.2f} | {m['ours_b1']:.3f} | {m['ort_b1']:.3f} | "
                         f"{m['ours_b1'] / m['ort_b1']:.2f} | {m['ours_b1000']:.1f} | {m['ort_b1000']:.1f} | "
                         f"{m['ours_b1000'] / m['ort_b1000']:.2f} | {fmt(m['ours_mem'], 1)} | "
                         f"{fmt(m['ort_mem'], 1)} |")
    if rows:
        b = rows[0]
        lines += ["", "## The bundled model", "",
                  f"- accuracy float {b['float']['ours_acc']:.2f} %, int8 {b['qdq']['ours_acc']:.2f} % "
                  f"({b['qdq']['ours_acc'] - b['float']['ours_acc']:+.2f} points); file "
                  f"{b['qdq']['size'] / b['float']['size']:.0%} of float",
                  f"- onnxruntime agrees with our engine on {b['qdq']['agree']:.2f} % of the digits' classes (QDQ), "
                  f"{b['qop']['agree']:.2f} % (QOperator, where the outputs are bit-identical)",
                  f"- int8 QOp ours/ort: batch 1 {b['qop']['ours_b1'] / b['qop']['ort_b1']:.2f}x, batch 1000 "
                  f"{b['qop']['ours_b1000'] / b['qop']['ort_b1000']:.2f}x; int8 QDQ ours/ort: batch 1 "
                  f"{b['qdq']['ours_b1'] / b['qdq']['ort_b1']:.2f}x, batch 1000 "
                  f"{b['qdq']['ours_b1000'] / b['qdq']['ort_b1000']:.2f}x",
                  "- our int8 (QOp) vs our float at batch 1000: "
                  f"{b['qop']['ours_b1000'] / b['float']['ours_b1000']:.2f}x"]
    lines += ["", "![batch 1](b1.png)", "![batch 1000](b1000.png)", "![memory](mem.png)", "![size](size.png)", "",
              "## Notes", "",
              "- QDQ files run in our engine today as float kernels between Quantize/DequantizeLinear pairs (the "
              "weights' DequantizeLinear folds at load). `nn_core.ops.quantized.fuse_qdq` rewrites those groups "
              "into the integer ops (exactly as onnxruntime fuses them); once the fast plan calls it, QDQ files run "
              "like the QOp rows.",
              "- Timings on a shared 2-core machine: ratios are more stable than absolute times."]
    (out / "REPORT.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {out / 'REPORT.md'}")


if __name__ == "__main__":
    sys.exit(main())
