"""The int8 study: float vs int8 (quantized by `nn_core quantize`), our engine vs onnxruntime.

    python benchmarks/int8_study.py [--out docs/int8] [--rounds 5]

Rows: the bundled LeNet-5 (float, and quantized by `nn_core quantize` as QDQ and QOperator); a float MLP of the
corpus quantized dynamically by onnxruntime's quantize_dynamic and by `nn_core quantize --dynamic`; the int8
models of ../shared/models as published (with their float sibling where the corpus has one). For each: accuracy
(bundled/MLP: MNIST t10k from ../shared/data/mnist, else the shipped samples; corpus models: the 200 digits of
their expected.npz, fed the way they were published, extra inputs included, as ../shared/scorecard.py does),
class agreement of the two engines, latency at batch 1 and 1000 (one thread each; ours and onnxruntime
interleaved, ``--rounds`` rounds, the ratio is the median of the per-round ratios; a model with a fixed batch
of 1 runs 1000 single images for "batch 1000"), peak memory of one batch-1000 run (each engine in a fresh
subprocess: growth of ru_maxrss over the run; ours also tracemalloc's peak of the run's allocations) and size.
For an int8 model made from a float one (the bundled model, the MLP, blank11), also our int8 time over our float
time, alternating in the same run. ``--only WORD...`` measures only the rows naming one of the words and keeps
the other rows of OUT/results.json. Writes REPORT.md and PNG charts (Pillow).
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import re  # noqa: E402
import subprocess  # noqa: E402
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
MODELS = SHARED / "models"
CORPUS_INT8 = ["rivka_zoo12_dynquant_convinteger", "rivka_zoo13_qdq_static", "rivka_blank11_dynquant_matmulinteger",
               "rivka_blank11_qdq_int32bias", "rivka_zoo12_qdq_opset12_axis", "silidada_ppq_qdq_fpga_int8"]
CORPUS_FLOAT = {"rivka_blank11_pt28_bn_fp32": "rivka_blank11"}
# int8 models of the corpus and the float model they were quantized from (same inputs)
CORPUS_SIBLING = {"rivka_blank11_dynquant_matmulinteger": "rivka_blank11_pt28_bn_fp32",
                  "rivka_blank11_qdq_int32bias": "rivka_blank11_pt28_bn_fp32"}
MLP = "mushfiq_pt21_mlp_opset12"


def test_digits():
    mnist = SHARED / "data" / "mnist"
    if (mnist / "t10k-images-idx3-ubyte.gz").exists():
        from nn_core.data import load_mnist

        images, labels = load_mnist(mnist, "t10k")
        return images.astype(np.float32) / np.float32(255), labels.astype(np.int64), "MNIST t10k (10,000)"
    images, labels = load_samples()
    return images, labels, f"shipped samples ({len(images)})"


def ort_session(path: Path):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class Workload:
    """How a model is fed: ``feeds(n)`` -> a list of feed dicts (one for a batch, n for a fixed batch of 1),
    ``scores(outputs)`` -> (rows, classes), and the digits + labels for accuracy."""

    def __init__(self, path: Path, feeds, score_name, images=None, labels=None):
        self.path, self._feeds, self.score_name, self.images, self.labels = path, feeds, score_name, images, labels

    def feeds(self, images) -> list[dict]:
        return self._feeds(images)

    def scores(self, outputs: dict) -> np.ndarray:
        value = outputs[self.score_name] if self.score_name in outputs else next(iter(outputs.values()))
        value = np.asarray(value)
        return value.reshape(len(value) if value.ndim > 1 else 1, -1)


def t10k_workload(path: Path, adapter_model, images, labels) -> Workload:
    adapter = ModelAdapter(adapter_model)
    dynamic = adapter.layout.dynamic_batch

    def feeds(batch):
        if dynamic:
            return [adapter.make_batch_feeds(batch, adapter.scaling)]
        return [adapter.make_feeds(image) for image in batch]

    return Workload(path, feeds, adapter_model.outputs[0].name, images, labels)


def corpus_workload(folder: Path) -> Workload | None:
    """A corpus model fed as ../shared/scorecard.py feeds it: expected.npz's inputs, its run mode, extra inputs
    under the graph's real names."""
    import onnx

    meta = json.loads((folder / "meta.json").read_text())
    path = folder / meta["file"]
    z = np.load(folder / "expected.npz")
    if "labels" not in z.files or not path.exists():
        return None
    mode, name, x = str(z["run_mode"]), str(z["input_name"]), z["x"]
    extra = {k[len("extra_input_"):]: z[k] for k in z.files if k.startswith("extra_input_")}
    if extra:
        graph_inputs = [i.name for i in onnx.load(str(path), load_external_data=False).graph.input]
        plain = {re.sub(r"\W", "_", g.split(":")[0]).rstrip("_"): g for g in graph_inputs}
        extra = {plain.get(k.rstrip("_"), k): v for k, v in extra.items()}

    def feeds(batch):
        if mode == "batch":
            reps = -(-len(batch) // len(x))
            whole = np.concatenate([x] * reps)[:len(batch)] if len(batch) != len(x) else x
            more = {k: (np.concatenate([v] * reps)[:len(batch)] if len(batch) != len(x) else v)
                    for k, v in extra.items()}
            return [{name: whole, **more}]
        return [{name: x[i % len(x)], **extra} for i in range(len(batch))]

    indices = np.arange(len(z["labels"]))
    return Workload(path, feeds, meta.get("score_output"), indices, np.asarray(z["labels"]).astype(np.int64))


def median_seconds(run, feeds: list[dict], inner: int) -> float:
    """The median over ``inner`` passes of the time ``run`` takes over all of ``feeds``."""
    times = []
    for _ in range(inner):
        start = time.perf_counter()
        for f in feeds:
            run(f)
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def interleaved(ours, theirs, feeds: list[dict], inner: int, rounds: int) -> tuple[float, float, float]:
    """Median ms of ours and onnxruntime, and the median of the per-round ratios."""
    run_ours = ours.run
    names = None

    def run_ort(f):
        return theirs.run(names, f)

    run_ours(feeds[0]), run_ort(feeds[0])
    a, b = [], []
    for _ in range(rounds):
        a.append(median_seconds(run_ours, feeds, inner))
        b.append(median_seconds(run_ort, feeds, inner))
    return float(np.median(a)) * 1e3, float(np.median(b)) * 1e3, float(np.median(np.array(a) / np.array(b)))


def interleaved_runs(first, second, feeds: list[dict], inner: int, rounds: int) -> float:
    """The median over rounds of first's time / second's time, the two alternating (both our engine: an int8
    model against its float sibling on the same feeds)."""
    first(feeds[0]), second(feeds[0])
    ratios = []
    for _ in range(rounds):
        ratios.append(median_seconds(first, feeds, inner) / median_seconds(second, feeds, inner))
    return float(np.median(ratios))


PEAK_SCRIPT = r"""
import os, sys, json, resource, tracemalloc
for v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(v, "1")
import numpy as np
engine, model_path, feeds_path = sys.argv[1:4]
sys.path.insert(0, sys.argv[4])
run_big = sys.argv[5] == "1"
data = np.load(feeds_path, allow_pickle=True)
feeds = list(data["feeds"])
small = list(data["small"])
if engine == "ours":
    import nn_core
    model = nn_core.load(model_path)
    run = model.run
else:
    import onnxruntime as ort
    o = ort.SessionOptions(); o.intra_op_num_threads = o.inter_op_num_threads = 1
    session = ort.InferenceSession(model_path, o, providers=["CPUExecutionProvider"])
    run = lambda f: session.run(None, f)
for f in small:
    run(f)
traced = None
if engine == "ours":
    tracemalloc.start()
if run_big:
    for f in feeds:
        run(f)
if engine == "ours":
    traced = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
try:  # this process's own high-water mark: ru_maxrss would start at the parent's RSS at fork (kept by exec)
    status = open("/proc/self/status").read()
    after = int(status.split("VmHWM:")[1].split()[0])
except (OSError, IndexError, ValueError):
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"maxrss": after / 1024, "traced": traced}))
"""


def peak_memory(engine: str, path: Path, feeds: list[dict], small: list[dict], work: Path) -> dict:
    """Peak memory of one batch-1000 run: two fresh processes load the model and the feeds and warm up on one
    image; one of them then makes the batch-1000 run. The difference of their peak RSS (MiB; VmHWM, the
    process's own high-water mark, else ru_maxrss) is what the run adds to the process's peak (the median of 3
    pairs); for ours also tracemalloc's peak of the run's allocations."""
    store = work / "feeds.npz"
    holder = np.empty(len(feeds), object)
    holder[:] = feeds
    small_holder = np.empty(len(small), object)
    small_holder[:] = small
    np.savez(store, feeds=holder, small=small_holder)

    def child(big: bool) -> dict:
        done = subprocess.run([sys.executable, "-c", PEAK_SCRIPT, engine, str(path), str(store), str(ROOT),
                               "1" if big else "0"], capture_output=True, text=True, timeout=600)
        return json.loads(done.stdout.strip().splitlines()[-1])

    try:
        growth, traced = [], None
        for _ in range(3):
            base, full = child(False), child(True)
            growth.append(max(full["maxrss"] - base["maxrss"], 0.0))
            traced = full["traced"]
        return {"rss": float(np.median(growth)), "traced": traced}
    except Exception as exc:  # noqa: BLE001 - a figure the study cannot get is reported as missing
        print(f"  peak memory {engine} {path.name}: {exc}", flush=True)
        return {"rss": None, "traced": None}


def measure(workload: Workload, rounds: int, work: Path, float_path: Path | None = None) -> dict:
    """One row; with ``float_path`` (the float model this int8 one was made from, same inputs) also our int8 time
    over our float time at batch 1 and 1000, measured alternating in this run."""
    path = workload.path
    ours = nn_core.load(path)
    theirs = ort_session(path)
    result = {"size": path.stat().st_size}
    images, labels = workload.images, workload.labels
    for engine, run in (("ours", ours.run), ("ort", lambda f: dict(zip([o.name for o in theirs.get_outputs()],
                                                                        theirs.run(None, f))))):
        predictions = []
        for start in range(0, len(images), 1000):
            chunk = images[start:start + 1000]
            scores = [workload.scores(run(f)) for f in workload.feeds(chunk)]
            predictions.append(np.concatenate(scores)[:len(chunk)].argmax(1))
        result[f"{engine}_pred"] = np.concatenate(predictions)
        result[f"{engine}_acc"] = float((result[f"{engine}_pred"] == labels).mean() * 100)
    result["agree"] = float((result["ours_pred"] == result["ort_pred"]).mean() * 100)
    thousand = images[np.arange(1000) % len(images)]
    one, many = workload.feeds(images[:1]), workload.feeds(thousand)
    result["ours_b1"], result["ort_b1"], result["b1_ratio"] = interleaved(ours, theirs, one, 200, rounds * 3)
    result["ours_b1000"], result["ort_b1000"], result["b1000_ratio"] = interleaved(ours, theirs, many, 1, rounds)
    result["fixed_batch"] = len(many) > 1
    if float_path is not None:
        float_model = nn_core.load(float_path)
        result["vs_float_b1"] = interleaved_runs(ours.run, float_model.run, one, 200, rounds * 3)
        result["vs_float_b1000"] = interleaved_runs(ours.run, float_model.run, many, 1, rounds)
    for engine in ("ours", "ort"):
        peak = peak_memory(engine, path, many, one, work)
        result[f"{engine}_mem"] = peak["rss"]
        if engine == "ours":
            result["ours_traced"] = peak["traced"]
    return result


# ---------------------------------------------------------------- charts (Pillow)


COLORS = {"ours": (200, 90, 60), "onnxruntime": (240, 170, 140), "file": (90, 90, 200)}


def bar_chart(path: Path, title: str, unit: str, groups: list[str], series: dict[str, list[float]]) -> None:
    from PIL import Image, ImageDraw

    width, height, left, bottom, top = max(900, 90 + 100 * len(groups)), 420, 70, 90, 50
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
        draw.text((x0, height - bottom + 8), group, fill="black")
    for s, name in enumerate(series):
        x = left + s * 150
        draw.rectangle([x, height - 30, x + 12, height - 18], fill=COLORS.get(name, "grey"))
        draw.text((x + 18, height - 30), name, fill="black")
    image.save(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "docs" / "int8"))
    parser.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds (ratios: their median)")
    parser.add_argument("--skip-corpus", action="store_true", help="only the bundled model and the MLP")
    parser.add_argument("--only", nargs="*", default=[],
                        help="measure only the rows whose model or variant name contains one of these words")
    parser.add_argument("--from-results", action="store_true",
                        help="redraw REPORT.md and the charts from OUT/results.json (no measuring)")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.from_results:
        saved = json.loads((out / "results.json").read_text())
        write_report(out, saved["rows"], saved["data"], saved["rounds"], saved.get("load"), saved.get("cores"))
        return 0
    images, labels, data_name = test_digits()
    work = Path(tempfile.mkdtemp(prefix="int8_study_"))
    loads = [os.getloadavg()[0]]  # how busy the machine was (a shared machine slows both engines alike)
    rows: list[dict] = []

    def add(model: str, variant: str, workload: Workload | None, note: str = "", float_path: Path | None = None
            ) -> None:
        if workload is None or (args.only and not any(word in f"{model} {variant}" for word in args.only)):
            return
        try:
            m = measure(workload, args.rounds, work, float_path)
        except Exception as exc:  # noqa: BLE001 - a model the study cannot use is reported and skipped
            print(f"skip {model} {variant}: {type(exc).__name__}: {str(exc)[:200]}", flush=True)
            rows.append({"model": model, "variant": variant, "error": f"{type(exc).__name__}: {str(exc)[:120]}"})
            return
        m.update(model=model, variant=variant, note=note)
        loads.append(os.getloadavg()[0])
        rows.append(m)
        print(model, variant, {k: v for k, v in m.items() if not k.endswith("pred")}, flush=True)

    # the bundled model: float, and nn_core quantize's QDQ and QOperator
    bundled = ROOT / "assets" / "lenet5.onnx"
    float_model = nn_core.load(bundled)
    qdq, qop = work / "lenet5.int8.onnx", work / "lenet5.int8.qop.onnx"
    quantize(bundled, qdq)
    quantize(bundled, qop, fmt="qoperator")
    for variant, path in (("float", bundled), ("int8 QDQ", qdq), ("int8 QOp", qop)):
        add("bundled lenet5", variant, t10k_workload(path, float_model, images, labels),
            float_path=None if path == bundled else bundled)

    # a dynamically quantized MLP (onnxruntime's quantize_dynamic and ours)
    mlp_folder = MODELS / MLP
    if (mlp_folder / "meta.json").exists():
        mlp = mlp_folder / json.loads((mlp_folder / "meta.json").read_text())["file"]
        mlp_model = nn_core.load(mlp)
        ort_dyn, ours_dyn = work / "mlp.ort_dynamic.onnx", work / "mlp.nn_core_dynamic.onnx"
        try:
            import logging

            from onnxruntime.quantization import QuantType, quantize_dynamic

            logging.getLogger().setLevel(logging.ERROR)
            quantize_dynamic(str(mlp), str(ort_dyn), weight_type=QuantType.QUInt8)
        except Exception as exc:  # noqa: BLE001
            print(f"onnxruntime quantize_dynamic: {exc}")
        quantize(mlp, ours_dyn, dynamic=True)
        add(MLP, "float", t10k_workload(mlp, mlp_model, images, labels))
        if ort_dyn.exists():
            add(MLP, "int8 dynamic (onnxruntime quantize_dynamic)", t10k_workload(ort_dyn, mlp_model, images, labels),
                float_path=mlp)
        add(MLP, "int8 dynamic (nn_core quantize --dynamic)", t10k_workload(ours_dyn, mlp_model, images, labels),
            float_path=mlp)

    # the corpus's int8 models as published, and the float sibling of blank11
    if not args.skip_corpus:
        for name in [*CORPUS_FLOAT, *CORPUS_INT8]:
            folder = MODELS / name
            if (folder / "meta.json").exists():
                variant = "float" if name in CORPUS_FLOAT else "int8 (published)"
                sibling = CORPUS_SIBLING.get(name)
                float_path = None
                if sibling and (MODELS / sibling / "meta.json").exists():
                    float_path = MODELS / sibling / json.loads((MODELS / sibling / "meta.json").read_text())["file"]
                add(name, variant, corpus_workload(folder), "200 digits of expected.npz", float_path)
    rows = [{k: v for k, v in r.items() if not k.endswith("pred")} for r in rows]
    if args.only and (out / "results.json").exists():  # a partial run replaces its rows, keeps the others
        fresh = {(r["model"], r["variant"]): r for r in rows}
        saved = json.loads((out / "results.json").read_text())["rows"]
        rows = [fresh.pop((r["model"], r["variant"]), r) for r in saved] + list(fresh.values())
    load = [round(min(loads), 2), round(max(loads), 2)]
    (out / "results.json").write_text(json.dumps({"data": data_name, "rounds": args.rounds, "load": load,
                                                  "cores": os.cpu_count(), "rows": rows}, indent=1))
    write_report(out, rows, data_name, args.rounds, load, os.cpu_count())
    return 0


def fmt(value, digits=2):
    return "n/a" if value is None else f"{value:.{digits}f}"


def write_report(out: Path, rows: list[dict], data_name: str, rounds: int, load: list[float] | None = None,
                 cores: int | None = None) -> None:
    good = [r for r in rows if "error" not in r]
    labels = [f"{r['model'].replace('bundled ', '')[:15]}\n{r['variant'][:15]}" for r in good]
    for key, title, unit in (("b1", "latency batch 1", "ms"), ("b1000", "latency batch 1000", "ms"),
                             ("mem", "peak memory batch 1000 (peak RSS growth)", "MiB")):
        bar_chart(out / f"{key}.png", title, unit, labels, {"ours": [r[f"ours_{key}"] for r in good],
                                                            "onnxruntime": [r[f"ort_{key}"] for r in good]})
    bar_chart(out / "size.png", "file size", "KiB", labels, {"file": [r["size"] / 1024 for r in good]})
    lines = ["# int8 study: float vs int8, nn_core vs onnxruntime", "",
             "Made by `python benchmarks/int8_study.py` (one thread per engine; ours and onnxruntime interleaved "
             f"in {rounds * 3} rounds at batch 1 (200 runs each), {rounds} at batch 1000; a ratio is the median of "
             "the per-round ratios, so it holds on a noisy machine better than the absolute times). Accuracy: "
             f"{data_name} for the bundled model and the MLP; the 200 digits of expected.npz (fed as published, "
             "as ../shared/scorecard.py does) for corpus models. `int8 QDQ` / `int8 QOp` = `nn_core quantize "
             "MODEL` (static, percentile calibration on 500 shipped MNIST training digits, int8 per-channel "
             "weights) / with `--format qoperator`. Models with a fixed batch of 1 (marked *) run 1000 single "
             "images for batch 1000. Peak memory: peak RSS (VmHWM) of a fresh process that loads the model and "
             "the feeds, warms up on one image and makes one batch-1000 run, minus that of the same process "
             "without the run (median of 3 pairs); `traced` = tracemalloc's peak of our run's allocations. "
             "`ours int8/float`: our engine's time on the int8 model over its time on the float model it was "
             "quantized from, the two alternating in the same run (median of the per-round ratios; < 1: int8 "
             "faster)." + (f" The 1-minute load average ranged {load[0]:.1f}-{load[1]:.1f} on {cores} cores while "
                           "it ran (other work shares the machine: absolute times vary, the same-run ratios less)."
                           if load else ""), "",
             "| model | variant | size KiB | acc ours % | acc ort % | agree % | b1 ours ms | b1 ort ms | "
             "**b1 ours/ort** | b1000 ours ms | b1000 ort ms | **b1000 ours/ort** | **ours int8/float b1** | "
             "**ours int8/float b1000** | peak MiB ours (traced) | peak MiB ort |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['model']} | {r['variant']} | {r['error']} |" + " |" * 13)
            continue
        star = "*" if r["fixed_batch"] else ""
        versus = " | ".join(f"**{r[k]:.2f}**" if r.get(k) is not None else "-"
                            for k in ("vs_float_b1", "vs_float_b1000"))
        lines.append(f"| {r['model']}{star} | {r['variant']} | {r['size'] / 1024:.0f} | {r['ours_acc']:.2f} "
                     f"| {r['ort_acc']:.2f} | {r['agree']:.2f} | {r['ours_b1']:.3f} | {r['ort_b1']:.3f} | "
                     f"**{r['b1_ratio']:.2f}** | {r['ours_b1000']:.1f} | {r['ort_b1000']:.1f} | "
                     f"**{r['b1000_ratio']:.2f}** | {versus} | {fmt(r['ours_mem'], 1)} "
                     f"({fmt(r.get('ours_traced'), 1)}) | {fmt(r['ort_mem'], 1)} |")
    by = {(r["model"], r["variant"]): r for r in good}
    b = {v: by.get(("bundled lenet5", v)) for v in ("float", "int8 QDQ", "int8 QOp")}
    if all(b.values()):
        lines += ["", "## The bundled model", "",
                  f"- accuracy float {b['float']['ours_acc']:.2f} %, int8 {b['int8 QDQ']['ours_acc']:.2f} % "
                  f"({b['int8 QDQ']['ours_acc'] - b['float']['ours_acc']:+.2f} points); file "
                  f"{b['int8 QDQ']['size'] / b['float']['size']:.0%} of float",
                  f"- onnxruntime agrees with our engine on {b['int8 QDQ']['agree']:.2f} % of the digits' classes "
                  f"(QDQ), {b['int8 QOp']['agree']:.2f} % (QOperator)",
                  f"- int8 ours/ort: QDQ batch 1 {b['int8 QDQ']['b1_ratio']:.2f}x, batch 1000 "
                  f"{b['int8 QDQ']['b1000_ratio']:.2f}x; QOp batch 1 {b['int8 QOp']['b1_ratio']:.2f}x, batch 1000 "
                  f"{b['int8 QOp']['b1000_ratio']:.2f}x",
                  "- our int8 vs our float at batch 1000 (alternating in the same run): QDQ "
                  f"{fmt(b['int8 QDQ'].get('vs_float_b1000'))}x, QOp "
                  f"{fmt(b['int8 QOp'].get('vs_float_b1000'))}x (< 1: int8 faster)"]
    lines += ["", "![batch 1](b1.png)", "![batch 1000](b1000.png)", "![memory](mem.png)", "![size](size.png)", "",
              "## Notes", "",
              "- QDQ files run as the integer ops onnxruntime fuses them into (`fuse_qdq` in the fast plan); the "
              "integer products run on float32 BLAS, exact while every partial sum stays below 2**24 (K split "
              "where it would not).",
              "- quantize_dynamic's chains (DynamicQuantizeLinear -> MatMulInteger/ConvInteger -> Cast -> Mul "
              "[-> Add]) run as one kernel each (DynamicQuantizeMatMul / DynamicQuantizeConv, the latter with its "
              "Relu and MaxPool; a Relu before a chain is folded into its quantization), and "
              "`x.view(x.size(0), -1)`'s five shape nodes as one Flatten.",
              "- Where onnxruntime stays far ahead the work is compute- or bandwidth-bound: onnxruntime's int8 "
              "GEMM uses VNNI / u8s8 instructions (several times the multiply-adds per instruction of float32 FMA, "
              "a quarter of the weight bytes), NumPy has no integer GEMM, so our int8 runs on float32 BLAS at "
              "best at the speed of our float model: `ours int8/float` near 1 is that floor, and the float "
              "sibling's `ours/ort` (blank11: ~1.5-1.9x, convolutions at BLAS peak) bounds what the int8 row can "
              "reach. At batch 1 the dynamic MLP's first layer is a 784x256 matrix-vector product over 800 KB of "
              "float32 weights (~11 us alone) where onnxruntime reads 200 KB of uint8.",
              "- Raw figures: results.json."]
    (out / "REPORT.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {out / 'REPORT.md'}")


if __name__ == "__main__":
    sys.exit(main())
