"""The image <-> model interface: a 28x28 digit in, class probabilities out, whatever the model expects.

Models in the wild disagree on everything: NCHW, NHWC, [N,H,W], flat [N,784], a fixed batch of 10, no batch
axis at all, 32x32 or 14x14 inputs, three grey channels, float64, and five conventions for pixel values. The
engine runs the graph as written; this module is the only place that knows about those conventions. The app,
the CLI (`run`), the benchmarks and the tests all use it:

    adapter = ModelAdapter(nn_core.load(path))      # input layout, scaling, output kind, labels from metadata
    feeds = adapter.make_feeds(image28)             # a 28x28 float image, ink = 1.0 on 0.0
    probabilities = adapter.interpret(model.run(feeds))

Metadata keys a model file may carry are named below (``META_*``); ``auto_detect_scaling`` tries every pixel
convention on MNIST test digits shipped with this package (``mnist_samples.npz``). A ``temperature`` key
calibrates the probabilities: the scores are divided by it before the softmax (a model whose temperature is
already folded into its last layer says so in its ``calibration`` record instead, and carries no such key).
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InputError, ModelError
from .scaling import SCALING_DESCRIPTIONS, SCALINGS, scale_pixels

__all__ = ["DEFAULT_SCALING", "InputLayout", "META_CALIBRATION", "META_INPUT_LAYOUT", "META_INPUT_SCALE",
           "META_LABELS", "META_OUTPUT_KIND", "META_TEMPERATURE", "MNIST_SIZE", "ModelAdapter", "OUTPUT_KINDS",
           "SCALINGS", "SCALING_DESCRIPTIONS", "ScalingReport", "auto_detect_scaling", "detect_layout",
           "detect_output_kind", "digit_from_image_file", "folded_calibration", "load_samples", "parse_labels",
           "parse_temperature", "resolve_scaling", "scale_pixels", "softmax", "to_probabilities"]

# Metadata keys (ONNX metadata_props) this interface reads; nn_core.train writes them into the models it makes.
META_LABELS = "labels"  # a JSON list (or "a, b, c") of class names, in output order
META_INPUT_SCALE = "input_scale"  # one of SCALINGS
META_OUTPUT_KIND = "output_kind"  # one of OUTPUT_KINDS
META_INPUT_LAYOUT = "input_layout"  # "nchw", ... (informative: the layout is detected from the declared shape)
META_TEMPERATURE = "temperature"  # a number T > 0: probabilities are softmax(scores / T) (temperature scaling)
# nn_core.train --calibrate's record (JSON): {"temperature": T, "folded_into": layer, ...}; a folded T is in the
# weights already and is never applied again
META_CALIBRATION = "calibration"

MNIST_SIZE = 28
OUTPUT_KINDS = ("logits", "probabilities", "log_probabilities")
DEFAULT_SCALING = "01"
# Smaller than this on a side is not an image (a [N,4] feature vector would otherwise pass as 2x2).
MIN_IMAGE_SIDE = 8
# An image input may be padded (not resampled) up to this much larger than 28: the classic LeNet-5 32x32
# input is MNIST with a 2-pixel border.
MAX_PADDING = 8
SAMPLES_FILE = "mnist_samples.npz"
# The most elements the adapter will ever build for one model input (64 Mi, 256 MiB of float32). A digit model
# takes ~1000; a file declaring [1,1,100000,100000] is refused here instead of being allocated (the model file is
# untrusted input, and the preview and feeds are built on demand from its declared shape).
MAX_INPUT_ELEMENTS = 1 << 26
# A temperature outside this range is not a calibration (T = 1e-30 turns every output into a one-hot 100 %, T = 1e30
# into a uniform 10 %): the file is untrusted, so such a value is ignored with a warning.
TEMPERATURE_RANGE = (1e-3, 1e3)


@dataclass(frozen=True)
class InputLayout:
    """How one image becomes the model's input tensor."""

    input_name: str
    feed_shape: tuple[int, ...]  # the concrete shape fed for one image (batch dimension filled in)
    height: int
    width: int
    channels: int
    channels_last: bool
    batch: int  # copies of the image fed along axis 0 (a fixed batch of 10 gets 10 copies); 1 otherwise
    batch_axis: bool  # False: the model takes a single image without a batch dimension
    dynamic_batch: bool  # True: axis 0 is symbolic, so several images can go in one run
    dtype: np.dtype
    kind: str  # "nchw", "nhwc", "nhw", "flat", "hw" - for the status line and the summary

    def describe(self) -> str:
        shape = ", ".join(str(d) for d in self.feed_shape)
        return f"{self.kind.upper()} [{shape}] {self.dtype.name}"


def _known(dim: Any) -> int | None:
    return dim if isinstance(dim, (int, np.integer)) and dim > 0 else None


def _square_side(size: int | None) -> int | None:
    if size is None:
        return None
    side = math.isqrt(size)
    return side if side * side == size and side >= MIN_IMAGE_SIDE else None


def _side(dim: Any) -> int:
    """A spatial dimension; unknown ones are taken as MNIST's 28."""
    known = _known(dim)
    return known if known is not None else MNIST_SIZE


def _is_spatial(dim: Any) -> bool:
    known = _known(dim)
    return known is None or known >= MIN_IMAGE_SIDE


def detect_layout(name: str, shape: list | tuple | None, dtype: Any) -> InputLayout:
    """Work out the layout of an image input from its declared shape; raises ModelError if it is not one."""
    dtype = np.dtype(dtype) if dtype is not None else np.dtype(np.float32)  # undeclared: the common case
    if not (np.issubdtype(dtype, np.floating) or np.issubdtype(dtype, np.integer)):
        raise ModelError(f"input {name!r} has element type {dtype}: an image input must be numeric")
    dims = [None] * 4 if shape is None else list(shape)  # unknown rank: assume the commonest, NCHW
    shown = "[" + ", ".join("?" if d is None else str(d) for d in dims) + "]"
    not_image = ModelError(f"input {name!r} with shape {shown} does not look like a single-channel or RGB image "
                           "(expected e.g. [N,1,28,28], [N,28,28,1], [N,28,28] or [N,784])")
    rank = len(dims)

    def build(kind: str, height: int, width: int, channels: int, channels_last: bool, batch_axis: bool,
              per_sample: tuple[int, ...]) -> InputLayout:
        first = _known(dims[0]) if batch_axis else None
        batch = first if first is not None else 1
        feed_shape = ((batch,) if batch_axis else ()) + per_sample
        elements = math.prod(int(d) for d in feed_shape)
        if elements > MAX_INPUT_ELEMENTS:
            fed = "[" + ", ".join(str(d) for d in feed_shape) + "]"
            raise ModelError(f"input {name!r} declares shape {shown}: feeding it one image would take a tensor "
                             f"of {fed} = {elements:,} elements, over the limit of {MAX_INPUT_ELEMENTS:,} "
                             "(this is not a digit-image model, or its declared input is corrupt)")
        return InputLayout(name, feed_shape, height, width, channels, channels_last, batch, batch_axis,
                           batch_axis and first is None, dtype, kind)

    if rank == 4:
        channels_first, channels_lastd = _known(dims[1]), _known(dims[3])
        if channels_first in (1, 3) and _is_spatial(dims[2]) and _is_spatial(dims[3]):
            h, w = _side(dims[2]), _side(dims[3])
            return build("nchw", h, w, channels_first, False, True, (channels_first, h, w))
        if channels_lastd in (1, 3) and _is_spatial(dims[1]) and _is_spatial(dims[2]):
            h, w = _side(dims[1]), _side(dims[2])
            return build("nhwc", h, w, channels_lastd, True, True, (h, w, channels_lastd))
        if channels_first is None and channels_lastd is None:
            return build("nchw", MNIST_SIZE, MNIST_SIZE, 1, False, True, (1, MNIST_SIZE, MNIST_SIZE))
        raise not_image
    if rank == 3:
        last = _square_side(_known(dims[2]))
        if last is not None and all(_known(d) in (1, None) for d in dims[:2]):
            # [N, 1, 784]: a flat image with a singleton axis (a PyTorch export traced with a 3-D dummy)
            return build("flat", last, last, 1, False, True, (1, last * last))
        if _known(dims[0]) == 3 and _is_spatial(dims[1]) and _is_spatial(dims[2]):
            h, w = _side(dims[1]), _side(dims[2])
            return build("chw", h, w, 3, False, False, (3, h, w))
        if _known(dims[1]) and _known(dims[2]) and _is_spatial(dims[1]) and _is_spatial(dims[2]):
            # [N, H, W]; a [1, 28, 28] "CHW without batch" has the same memory layout, so no need to tell apart
            h, w = _side(dims[1]), _side(dims[2])
            return build("nhw", h, w, 1, False, True, (h, w))
        raise not_image
    if rank == 2:
        flat_side = _square_side(_known(dims[1]))
        if _known(dims[0]) is not None and _known(dims[0]) == _known(dims[1]) and _is_spatial(dims[0]):
            h = w = _known(dims[0])
            return build("hw", h, w, 1, False, False, (h, w))
        if flat_side is not None:
            return build("flat", flat_side, flat_side, 1, False, True, (flat_side * flat_side,))
        if _known(dims[1]) is None and _known(dims[0]) is None:
            return build("flat", MNIST_SIZE, MNIST_SIZE, 1, False, True, (MNIST_SIZE * MNIST_SIZE,))
        raise not_image
    if rank == 1:
        flat_side = _square_side(_known(dims[0]))
        if flat_side is not None:
            return build("flat", flat_side, flat_side, 1, False, False, (flat_side * flat_side,))
        raise not_image
    raise not_image


def _fit_image(image28: np.ndarray, height: int, width: int) -> np.ndarray:
    """A 28x28 MNIST-style image at the model's size: padded when a little larger (LeNet-5's 32x32), else
    resampled (area-averaged when shrinking so thin strokes do not vanish)."""
    if (height, width) == image28.shape:
        return image28
    src_h, src_w = image28.shape
    if src_h <= height <= src_h + MAX_PADDING and src_w <= width <= src_w + MAX_PADDING:
        top, left = (height - src_h) // 2, (width - src_w) // 2
        out = np.zeros((height, width), dtype=np.float32)
        out[top:top + src_h, left:left + src_w] = image28
        return out
    from PIL import Image  # only models with unusual input sizes need Pillow here

    shrinking = height < src_h or width < src_w
    resample = Image.Resampling.BOX if shrinking else Image.Resampling.BILINEAR
    resized = Image.fromarray(np.ascontiguousarray(image28, dtype=np.float32), mode="F").resize(
        (width, height), resample)
    return np.clip(np.asarray(resized, dtype=np.float32), 0.0, 1.0)


def softmax(scores: np.ndarray) -> np.ndarray:
    shifted = scores - np.max(scores)  # subtract the max so exp never overflows
    exps = np.exp(shifted)
    return exps / exps.sum()


def detect_output_kind(scores: np.ndarray) -> str:
    """Guess what a score vector is: probabilities, log-probabilities or logits."""
    if scores.size and np.all(scores >= -1e-6) and np.all(scores <= 1 + 1e-6):
        return "probabilities" if abs(float(scores.sum()) - 1.0) < 1e-3 else "scores01"
    if scores.size and np.all(scores <= 1e-6) and abs(float(np.exp(scores).sum()) - 1.0) < 1e-3:
        return "log_probabilities"
    return "logits"


def to_probabilities(scores: np.ndarray, kind: str | None = None, temperature: float | None = None) -> np.ndarray:
    """Class probabilities (float64, summing to 1) from one score vector of the given or detected kind.

    ``temperature`` T (temperature scaling): logits and log-probabilities are divided by T before the softmax;
    probabilities become softmax(log p / T), the same thing. Independent [0, 1] scores are left as they are.
    """
    scores = np.nan_to_num(np.asarray(scores, dtype=np.float64).ravel(), nan=0.0, posinf=1e30, neginf=-1e30)
    kind = kind or detect_output_kind(scores)
    if temperature is not None and temperature != 1.0 and kind != "scores01":
        if kind == "probabilities":
            scores = np.log(np.maximum(scores, 1e-300))
        return softmax(scores / temperature)
    if kind == "probabilities":
        probs = np.clip(scores, 0.0, None)
    elif kind == "scores01":
        # independent sigmoid outputs in [0, 1] that do not sum to 1: normalising keeps their ranking and
        # proportions, where a softmax over values this close together would flatten them to near-uniform
        probs = scores.copy()
    elif kind == "log_probabilities":
        return softmax(scores)  # exp then renormalise, computed stably (log-probs can reach -145)
    else:
        return softmax(scores)
    total = probs.sum()
    return probs / total if total > 0 else np.full(scores.size, 1.0 / scores.size)


def parse_labels(metadata: dict[str, str]) -> list[str] | None:
    text = metadata.get(META_LABELS)
    if not text:
        return None
    try:
        labels = json.loads(text)
    except RecursionError:  # a hostile file's "[[[[…": no labels rather than a model that cannot open
        return None
    except json.JSONDecodeError:
        labels = [part.strip() for part in text.split(",")]  # be lenient: "0,1,2,..." is a common spelling
    if isinstance(labels, list) and labels and all(isinstance(lab, (str, int)) for lab in labels):
        return [str(lab) for lab in labels]
    return None


def parse_temperature(metadata: dict[str, str]) -> tuple[float | None, str | None]:
    """The ``temperature`` metadata value, validated: (T, None), (None, None) when absent, or (None, warning)
    when it is not a finite number in ``TEMPERATURE_RANGE`` (the file is untrusted; the value is then ignored)."""
    text = metadata.get(META_TEMPERATURE)
    if text is None:
        return None, None
    shown = repr(text if len(text) <= 40 else text[:40] + "…")
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None, f"metadata temperature {shown} is not a number: ignored"
    low, high = TEMPERATURE_RANGE
    if not math.isfinite(value) or value <= 0:
        return None, f"metadata temperature {shown} is not a finite number > 0: ignored"
    if not low <= value <= high:
        return None, f"metadata temperature {shown} is outside {low:g}..{high:g}: ignored"
    folded = folded_calibration(metadata)
    if folded is not None and math.isclose(folded[0], value, rel_tol=1e-3):
        return None, f"metadata temperature {shown} is already folded into {folded[1]}: not applied twice"
    return value, None


def folded_calibration(metadata: dict[str, str]) -> tuple[float, str] | None:
    """(T, layer) when the ``calibration`` record says a temperature is folded into the weights, else None."""
    try:
        record = json.loads(metadata.get(META_CALIBRATION) or "null")
        temperature, layer = float(record["temperature"]), str(record["folded_into"])
    except (ValueError, TypeError, KeyError, RecursionError):
        return None
    return (temperature, layer) if math.isfinite(temperature) and temperature > 0 and layer else None


def resolve_scaling(metadata: dict[str, str], remembered: str | None) -> tuple[str, str]:
    """The scaling to use and where it came from: the file's metadata, the user's remembered choice, default."""
    declared = metadata.get(META_INPUT_SCALE)
    if declared in SCALINGS:
        return declared, "metadata"
    if remembered in SCALINGS:
        return remembered, "remembered"
    return DEFAULT_SCALING, "default"


class ModelAdapter:
    """A loaded nn_core model seen as "28x28 image in, class probabilities out"."""

    def __init__(self, model: Any, remembered_scaling: str | None = None) -> None:
        self.model = model
        self.metadata: dict[str, str] = dict(getattr(model, "metadata", {}) or {})
        self.layout = self._choose_input(model)
        self.scaling, self.scaling_source = resolve_scaling(self.metadata, remembered_scaling)
        declared_kind = self.metadata.get(META_OUTPUT_KIND)
        self.declared_output_kind = declared_kind if declared_kind in OUTPUT_KINDS else None
        self.metadata_labels = parse_labels(self.metadata)
        self.warnings: list[str] = []  # what in the file was ignored, and why (shown with the model)
        self.temperature, warning = parse_temperature(self.metadata)
        if warning:
            self.warnings.append(warning)
            warnings.warn(f"{_model_name(model)}: {warning}", UserWarning, stacklevel=2)
        self._output_name: str | None = None

    # --- input side ----------------------------------------------------------------------------------------
    @staticmethod
    def _choose_input(model: Any) -> InputLayout:
        inputs = list(model.inputs)
        if not inputs:
            raise ModelError(f"{_model_name(model)}: the model has no inputs")
        errors = []
        for spec in inputs:
            try:
                return detect_layout(spec.name, spec.shape, spec.dtype)
            except ModelError as exc:
                errors.append(str(exc))
        raise ModelError(f"{_model_name(model)}: no input takes an image: " + "; ".join(errors))

    def set_scaling(self, code: str, source: str = "user") -> None:
        scale_pixels(np.zeros(1, np.float32), code)  # validates the code
        self.scaling, self.scaling_source = code, source

    def model_image(self, image28: np.ndarray) -> np.ndarray:
        """The image as the model sees it (its size), still with ink = 1 on 0: for the preview."""
        return _fit_image(np.asarray(image28, dtype=np.float32), self.layout.height, self.layout.width)

    def _per_sample(self, image28: np.ndarray, scaling: str) -> np.ndarray:
        layout = self.layout
        pixels = scale_pixels(self.model_image(image28), scaling)
        if layout.channels > 1:  # a grey digit shown to an RGB model: the same image in every channel
            axis = -1 if layout.channels_last else 0
            pixels = np.repeat(np.expand_dims(pixels, axis), layout.channels, axis=axis)
        return pixels

    def _cast(self, values: np.ndarray) -> np.ndarray:
        dtype = self.layout.dtype
        if np.issubdtype(dtype, np.integer):
            info = np.iinfo(dtype)
            values = np.clip(np.rint(values), info.min, info.max)
        return np.ascontiguousarray(values, dtype=dtype)

    def make_feeds(self, image28: np.ndarray, scaling: str | None = None) -> dict[str, np.ndarray]:
        """Feeds for one image: replicated over a fixed batch, reshaped to the model's layout."""
        layout = self.layout
        sample = self._per_sample(image28, scaling or self.scaling)
        per_sample_shape = layout.feed_shape[1:] if layout.batch_axis else layout.feed_shape
        sample = sample.reshape(per_sample_shape)
        if layout.batch_axis:
            sample = np.broadcast_to(sample, (layout.batch, *per_sample_shape))
        return {layout.input_name: self._cast(sample)}

    def make_batch_feeds(self, images28: np.ndarray, scaling: str) -> dict[str, np.ndarray]:
        """Feeds for several images in one run; only for models with a symbolic batch axis."""
        layout = self.layout
        if not layout.dynamic_batch:
            raise ValueError("this model takes a fixed batch; feed images one run at a time")
        per_sample_shape = layout.feed_shape[1:]
        stacked = np.stack([self._per_sample(image, scaling).reshape(per_sample_shape) for image in images28])
        return {layout.input_name: self._cast(stacked)}

    # --- output side ---------------------------------------------------------------------------------------
    def _score_vectors(self, outputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Each numeric output reduced to the score vector of the first image."""
        vectors = {}
        for name, value in outputs.items():
            value = np.asarray(value)
            if not (np.issubdtype(value.dtype, np.floating) or np.issubdtype(value.dtype, np.integer)):
                continue  # e.g. sklearn's string "label" output
            if self.layout.batch_axis and value.ndim >= 2 and value.shape[0] >= 1:
                value = value[0]
            vector = value.ravel()
            if vector.size >= 2 and np.issubdtype(value.dtype, np.floating):
                vectors[name] = vector
        return vectors

    def _pick_output(self, vectors: dict[str, np.ndarray]) -> str:
        if not vectors:
            raise ModelError(f"{_model_name(self.model)}: no output is a vector of class scores "
                             f"(outputs: {', '.join(o.name for o in self.model.outputs)})")
        wanted = len(self.metadata_labels) if self.metadata_labels else 10
        matching = [name for name, vec in vectors.items() if vec.size == wanted]
        if matching:
            return matching[0]
        return min(vectors, key=lambda name: vectors[name].size)  # the classifier head is the small one

    def scores(self, outputs: dict[str, np.ndarray]) -> np.ndarray:
        vectors = self._score_vectors(outputs)
        if self._output_name not in vectors:
            self._output_name = self._pick_output(vectors)
        return vectors[self._output_name]

    @property
    def output_name(self) -> str | None:
        return self._output_name

    def interpret(self, outputs: dict[str, np.ndarray]) -> np.ndarray:
        return to_probabilities(self.scores(outputs), self.declared_output_kind, self.temperature)

    def labels(self, count: int) -> list[str]:
        if self.metadata_labels and len(self.metadata_labels) == count:
            return list(self.metadata_labels)
        return [str(i) for i in range(count)]

    # --- running -------------------------------------------------------------------------------------------
    def predict(self, image28: np.ndarray, scaling: str | None = None) -> np.ndarray:
        return self.interpret(self.model.run(self.make_feeds(image28, scaling)))

    def predict_traced(self, image28: np.ndarray) -> tuple[np.ndarray, list]:
        outputs, records = self.model.run_traced(self.make_feeds(image28))
        return self.interpret(outputs), records

    def predict_many(self, images28: np.ndarray, scaling: str) -> np.ndarray:
        """Probabilities for a stack of images, batched when the model allows it: shape (n, classes)."""
        per_sample = math.prod(self.layout.feed_shape[1:]) if self.layout.batch_axis else 0
        if self.layout.dynamic_batch and len(images28) * per_sample <= MAX_INPUT_ELEMENTS:
            outputs = self.model.run(self.make_batch_feeds(images28, scaling))
            self.scores(outputs)  # picks the score output
            batch_scores = np.asarray(outputs[self._output_name])
            batch_scores = batch_scores.reshape(len(images28), -1)
            return np.stack([to_probabilities(row, self.declared_output_kind, self.temperature)
                             for row in batch_scores])
        return np.stack([self.predict(image, scaling) for image in images28])


def digit_from_image_file(path: str | Path) -> np.ndarray:
    """An image file (a scan, a paint-program drawing) as a 28x28 MNIST-style digit: grey, ink = 1.0 on 0.0.

    Dark ink on light paper is inverted; the whole picture is resized to 28x28 (the adapter then fits it to the
    model's own size). Raises InputError when the file cannot be read as an image.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(path) as opened:
            grey = ImageOps.grayscale(opened)
    except (OSError, UnidentifiedImageError) as exc:
        raise InputError(f"{path}: cannot read the image ({exc})") from None
    pixels = np.asarray(grey, dtype=np.float32) / 255.0
    if pixels.mean() > 0.5:  # dark ink on a light background: invert to MNIST's bright ink
        pixels = 1.0 - pixels
    resized = Image.fromarray(pixels, mode="F").resize((MNIST_SIZE, MNIST_SIZE), Image.Resampling.LANCZOS)
    return np.clip(np.asarray(resized, dtype=np.float32), 0.0, 1.0)


def _model_name(model: Any) -> str:
    path = getattr(model, "path", None)
    return Path(path).name if path else "model"


def load_samples() -> tuple[np.ndarray, np.ndarray]:
    """The shipped MNIST test digits: float32 images (n, 28, 28) with ink = 1, and int labels (n,)."""
    source = resources.files(__package__).joinpath(SAMPLES_FILE)
    with resources.as_file(source) as path, np.load(path) as data:
        return data["images"].astype(np.float32) / 255.0, data["labels"].astype(np.int64)


@dataclass
class ScalingReport:
    best: str
    accuracy: dict[str, float] = field(default_factory=dict)  # scaling code -> share of samples right
    samples: int = 0


def auto_detect_scaling(model: Any, adapter: ModelAdapter | None = None,
                        samples: tuple[np.ndarray, np.ndarray] | None = None) -> ScalingReport:
    """Try every scaling on the shipped MNIST digits and pick the most accurate one.

    Ties go to the adapter's current scaling, then to the commoner conventions (the order of ``SCALINGS``):
    a model trained on 0..1 is often still right on 0..255 input, and then 0..1 is the better guess.
    """
    adapter = adapter or ModelAdapter(model)
    images, labels = samples if samples is not None else load_samples()
    accuracy: dict[str, float] = {}
    for code in SCALINGS:
        try:
            probs = adapter.predict_many(images, code)
        except ModelError:
            accuracy[code] = 0.0
            continue
        accuracy[code] = float(np.mean(np.argmax(probs, axis=1) == labels))
    order = [adapter.scaling] + [code for code in SCALINGS if code != adapter.scaling]
    best = max(order, key=lambda code: (accuracy[code], -order.index(code)))
    return ScalingReport(best=best, accuracy=accuracy, samples=len(labels))
