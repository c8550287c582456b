"""How well are digits drawn on the canvas recognised? A proxy for real pen recordings from unseen writers.

Two recording sets go through gui.rasterize exactly as the app sends them to the model:
  mnist-strokes  MNIST test digits turned into pen strokes (skeleton -> polylines -> random size/place on the
                 280x280 canvas, pen-event sampling); the original image's thickness is lost on the way, so the
                 score shows what the rasteriser's own rendering costs compared with the MNIST image itself.
  synthetic      parametric hand-written-like templates for 0-9 with random slant, aspect, size, wobble.
It prints accuracy overall, on small and large drawings (under 45 % / over 75 % of the canvas height) and per
class; the model's accuracy on the same MNIST images as MNIST drew them (the ceiling); and the ink profile
(stroke width, inked pixels, edge softness) of MNIST vs the rasterised images. --sweep also tries other
rasteriser choices, one at a time (stroke width, blur, supersampling, centring, a fixed canvas pen scaled with
the digit as in plain MNIST normalisation).

    python benchmarks/drawn_digits.py                       # the bundled model (assets/lenet5.onnx)
    python benchmarks/drawn_digits.py --sweep
    python benchmarks/drawn_digits.py --model /work/shared/models/benson_pt28_opset13_softmax/mnist_pt_model.onnx
    python benchmarks/drawn_digits.py --summary assets/lenet5.onnx new.onnx   # accuracy + calibration per set

--summary scores each model on the MNIST test set and on four pen sets drawn through gui.rasterize, with the
expected calibration error (ECE, 15 bins) of its probabilities:
  t10k-strokes    2000 MNIST *test* digits retraced into strokes (writers the training set never had)
  synthetic       2000 parametric template digits (tools/stroke_digits.TEMPLATES)
  writers-tune    writers 100-119 of tools/stroke_digits.Writer, 10 drawings per digit each: the pen styles one
                  may look at while choosing augmentations and calibration
  writers-heldout writers 300-339, 5 drawings per digit each: never looked at while tuning; the figure to quote
  pen (held out)  t10k-strokes + synthetic + writers-heldout together

Needs /work/shared/data/mnist for the MNIST part (a command, not a test). Uses nn_core.load when it can run the
model, else onnxruntime.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import SimpleNamespace

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gui.rasterize import RasterStyle, default_pen_width, rasterize_with_style  # noqa: E402
from nn_core.interface import SCALINGS, ModelAdapter  # noqa: E402
from tools.stroke_digits import (  # noqa: E402
    Placement,
    Strokes,
    load_mnist,
    mnist_strokes,
    synthetic_strokes,
    zhang_suen_thin,
)

CANVAS = (280, 280)  # the app's canvas (gui.strokes.DEFAULT_CANVAS_SIZE)
Classifier = Callable[[np.ndarray], np.ndarray]


class _OrtModel:
    """An onnxruntime session dressed as an nn_core model (inputs, outputs, metadata, run), so that the same
    image <-> model interface (nn_core.interface) feeds it."""

    def __init__(self, path: Path) -> None:
        import onnx
        import onnxruntime as ort

        self.path = path
        self.session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        proto = onnx.load(str(path), load_external_data=False)
        self.metadata = {p.key: p.value for p in proto.metadata_props}
        types = {"tensor(double)": np.float64, "tensor(float16)": np.float16}
        self.inputs = [SimpleNamespace(name=i.name, dtype=types.get(i.type, np.float32),
                                       shape=[d if isinstance(d, int) else None for d in i.shape])
                       for i in self.session.get_inputs()]
        self.outputs = [SimpleNamespace(name=o.name) for o in self.session.get_outputs()]

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return dict(zip([o.name for o in self.outputs], self.session.run(None, feeds)))


def make_classifier(path: Path, scale: str | None, engine: str) -> tuple[Classifier, str]:
    """A function images (N, 28, 28) in [0, 1] -> predicted labels, running the model with nn_core or
    onnxruntime through the app's image <-> model interface; and the name of the engine used."""
    model = None
    if engine in ("auto", "nn_core"):
        try:
            import nn_core

            model, name = nn_core.load(str(path)), "nn_core"
            ModelAdapter(model).predict(np.zeros((28, 28), np.float32))  # fail now, not half-way
        except Exception as exc:  # noqa: BLE001 - any failure means: fall back to the reference runtime
            if engine == "nn_core":
                raise
            print(f"(nn_core cannot run the model yet: {type(exc).__name__}: {exc}; using onnxruntime)")
            model = None
    if model is None:
        model, name = _OrtModel(path), "onnxruntime"
    adapter = ModelAdapter(model)
    scaling = scale or adapter.scaling
    return lambda images: adapter.predict_many(images, scaling).argmax(axis=1), name


def stroke_width(images: np.ndarray) -> np.ndarray:
    """Per-image stroke width estimate in pixels: ink mass / skeleton length (same estimator for every set)."""
    skeleton = zhang_suen_thin(images >= 0.5)
    return images.sum(axis=(1, 2)) / np.maximum(skeleton.sum(axis=(1, 2)), 1)


def ink_profile(images: np.ndarray) -> str:
    """Median stroke width, mean inked pixels per digit and share of inked pixels above 0.5 (edge softness)."""
    inked = images > 1 / 255
    width, dark = np.median(stroke_width(images)), np.mean(images[inked] > 0.5)
    per_digit = np.mean(inked.sum(axis=(1, 2)))
    return f"width {width:.2f}  inked px {per_digit:5.1f}  >0.5 {dark:.2f}"


def drawn_height(recording: Strokes) -> float:
    """Height of the drawing's centre lines as a fraction of the canvas height."""
    ys = [y for stroke in recording for _, y in stroke]
    return (max(ys) - min(ys)) / CANVAS[1]


def per_class_line(name: str, predicted: np.ndarray, labels: np.ndarray, heights: np.ndarray | None = None) -> str:
    """Overall accuracy, accuracy on small (< 45 % of the canvas) and large (> 75 %) drawings, then per class."""
    cells = []
    for d in range(10):
        mask = labels == d
        cells.append(f"{100 * np.mean(predicted[mask] == d):5.1f}" if mask.any() else "    -")
    sizes = ["     -", "     -"]
    if heights is not None:
        sizes = [f"{100 * np.mean(predicted[m] == labels[m]):6.2f}" for m in (heights < 0.45, heights > 0.75)]
    return f"{name:<26} {100 * np.mean(predicted == labels):6.2f} {sizes[0]} {sizes[1]}  " + " ".join(cells)


def rasterize_all(recordings: Sequence[Strokes], style: RasterStyle, pen: float | None = None) -> np.ndarray:
    return np.stack([rasterize_with_style(s, CANVAS, pen, style) for s in recordings])


def sweep_styles(base: RasterStyle) -> list[tuple[str, RasterStyle, float | None]]:
    """Rasteriser variants to compare, one choice changed at a time; (name, style, pen width)."""
    variants: list[tuple[str, RasterStyle, float | None]] = [("default", base, None)]
    for width in (1.6, 2.0, 2.2, 2.8, 3.2):
        variants.append((f"stroke_width={width}", dataclasses.replace(base, stroke_width=width), None))
    for blur in (0.4, 0.7):
        variants.append((f"blur={blur}", dataclasses.replace(base, blur=blur), None))
    for ss in (1, 2, 4):
        variants.append((f"supersample={ss}", dataclasses.replace(base, supersample=ss), None))
    variants.append(("centring=box", dataclasses.replace(base, centring="box"), None))
    absolute = dataclasses.replace(base, relative_width=False)
    pen = default_pen_width(CANVAS)
    for factor in (0.5, 1.0, 1.5):
        variants.append((f"canvas pen {pen * factor:.0f}px (scaled)", absolute, pen * factor))
    return variants


def make_scorer(path: Path, engine: str = "auto") -> Callable[[np.ndarray], np.ndarray]:
    """A function images (N, 28, 28) in [0, 1] -> class probabilities (N, 10) through the app's interface."""
    model = None
    if engine in ("auto", "nn_core"):
        try:
            import nn_core

            model = nn_core.load(str(path))
        except Exception:  # noqa: BLE001 - fall back to the reference runtime
            if engine == "nn_core":
                raise
    adapter = ModelAdapter(model if model is not None else _OrtModel(path))
    return lambda images: adapter.predict_many(images, adapter.scaling)


def expected_calibration_error(probabilities: np.ndarray, labels: np.ndarray, bins: int = 15) -> float:
    from nn_core.evaluate import expected_calibration_error as ece

    return ece(probabilities, labels, bins)


def pen_sets(seed: int = 0, mnist: int = 2000, synthetic: int = 200) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The pen sets of --summary (see the module docstring): name -> (images (N, 28, 28) in [0, 1], labels)."""
    from tools.stroke_digits import writer_recordings

    rng = np.random.default_rng(seed)
    images, labels = load_mnist("t10k")
    pick = rng.choice(len(images), size=min(mnist, len(images)), replace=False)
    placement = Placement(canvas_size=CANVAS)
    strokes = [mnist_strokes(images[i], rng, placement) for i in pick]
    synth_labels = np.repeat(np.arange(10), synthetic)
    synth = [synthetic_strokes(int(d), rng, placement) for d in synth_labels]
    sets = {"t10k-strokes": (rasterize_all(strokes, RasterStyle()), labels[pick].astype(int)),
            "synthetic": (rasterize_all(synth, RasterStyle()), synth_labels)}
    for name, writers, per_digit in (("writers-tune", range(100, 120), 10), ("writers-heldout", range(300, 340), 5)):
        recordings = writer_recordings(writers, per_digit, CANVAS, seed=seed)
        drawn = np.stack([rasterize_with_style(r, CANVAS, pen, RasterStyle()) for _, _, r, pen in recordings])
        sets[name] = (drawn, np.array([d for _, d, _, _ in recordings]))
    held = ("t10k-strokes", "synthetic", "writers-heldout")
    sets["pen (held out)"] = (np.concatenate([sets[k][0] for k in held]), np.concatenate([sets[k][1] for k in held]))
    return sets


def summary(paths: Sequence[Path], engine: str, seed: int) -> None:
    """Accuracy and ECE of each model on MNIST t10k and on the pen sets."""
    start = time.perf_counter()
    sets = pen_sets(seed)
    images, labels = load_mnist("t10k")
    sets = {"MNIST t10k": (images.astype(np.float32) / 255, labels.astype(int)), **sets}
    print(f"made the pen sets in {time.perf_counter() - start:.0f}s; accuracy % / ECE % (15 bins)\n")
    print(f"{'set':<17} {'n':>6}  " + "  ".join(f"{p.name[-24:]:>24}" for p in paths))
    scores = {p: make_scorer(p, engine) for p in paths}
    for name, (x, y) in sets.items():
        cells = []
        for p in paths:
            probs = np.concatenate([scores[p](x[i:i + 1000]) for i in range(0, len(x), 1000)])
            accuracy = 100 * np.mean(probs.argmax(axis=1) == y)
            cells.append(f"{accuracy:6.2f} / {100 * expected_calibration_error(probs, y):5.2f}")
        print(f"{name:<17} {len(y):>6}  " + "  ".join(f"{c:>24}" for c in cells))


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=ROOT / "assets" / "lenet5.onnx")
    parser.add_argument("--scale", choices=SCALINGS, help="input scaling (default: the model's metadata)")
    parser.add_argument("--engine", choices=("auto", "nn_core", "onnxruntime"), default="auto")
    parser.add_argument("--mnist", type=int, default=2000, help="MNIST test digits to turn into strokes")
    parser.add_argument("--synthetic", type=int, default=200, help="synthetic recordings per digit")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sweep", action="store_true", help="also compare other rasteriser choices")
    parser.add_argument("--summary", type=Path, nargs="+", metavar="MODEL",
                        help="accuracy and calibration of these models on t10k and the pen sets")
    args = parser.parse_args(argv)
    if args.summary:
        summary(args.summary, args.engine, args.seed)
        return

    classify, engine = make_classifier(args.model, args.scale, args.engine)
    print(f"model {args.model} via {engine}; canvas {CANVAS[0]}x{CANVAS[1]}, default pen "
          f"{default_pen_width(CANVAS):.0f}px")

    rng = np.random.default_rng(args.seed)
    start = time.perf_counter()
    images, labels = load_mnist("t10k")
    pick = rng.choice(len(images), size=min(args.mnist, len(images)), replace=False)
    mnist_images, mnist_labels = images[pick].astype(np.float32) / 255.0, labels[pick].astype(int)
    placement = Placement(canvas_size=CANVAS)
    mnist_recordings = [mnist_strokes(images[i], rng, placement) for i in pick]
    synth_labels = np.repeat(np.arange(10), args.synthetic)
    synth_recordings = [synthetic_strokes(int(d), rng, placement) for d in synth_labels]
    print(f"made {len(mnist_recordings)} MNIST-stroke and {len(synth_recordings)} synthetic recordings "
          f"in {time.perf_counter() - start:.1f}s\n")

    mnist_heights = np.array([drawn_height(r) for r in mnist_recordings])
    synth_heights = np.array([drawn_height(r) for r in synth_recordings])
    columns = ["all %", "small", "large"]
    header = f"{'set / rasteriser':<26} " + " ".join(f"{c:>6}" for c in columns) + "  "
    header += " ".join(f"{d:>5}" for d in range(10))
    print(header)
    print(per_class_line("MNIST images (ceiling)", classify(mnist_images), mnist_labels))
    base = RasterStyle()
    variants = sweep_styles(base) if args.sweep else [("default", base, None)]
    profiles = []
    for name, style, pen in variants:
        drawn = rasterize_all(mnist_recordings, style, pen)
        synth = rasterize_all(synth_recordings, style, pen)
        print(per_class_line(f"mnist-strokes {name}"[:26], classify(drawn), mnist_labels, mnist_heights))
        print(per_class_line(f"synthetic {name}"[:26], classify(synth), synth_labels, synth_heights))
        profiles.append((name, ink_profile(drawn), ink_profile(synth)))
    print("\nink profile at 28x28 (width = ink mass / skeleton length in px; inked px per digit; share of inked px "
          "above 0.5)")
    print(f"  {'MNIST images':<40} {ink_profile(mnist_images)}")
    for name, drawn, synth in profiles:
        print(f"  {'mnist-strokes ' + name:<40} {drawn}")
        print(f"  {'synthetic ' + name:<40} {synth}")

if __name__ == "__main__":
    main()
