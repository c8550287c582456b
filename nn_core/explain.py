"""Why did the model read this drawing as that digit? Saliency maps on the 28x28 drawing, for any digit model.

    explainer = Explainer(ModelAdapter(model))
    result = explainer.explain(image28)                      # the predicted class, default method
    result = explainer.explain(image28, target=4, contrast=9)  # "why 4 and not 9?"
    result.map                                              # (28, 28) float32, > 0 pushes towards the target

Methods (``METHODS``):

``smoothgrad`` (the default)
    The gradient of the target's log-probability with respect to each pixel of the drawing, averaged over noisy
    copies of it (Smilkov et al., 2017). It passes both sanity checks below on digit models.
``integrated_gradients``
    Pixel times the gradient averaged along the straight path from blank paper to the drawing (Sundararajan et
    al., 2017). Complete (the map sums to the score's change from blank), but like gradient x input it is zero
    off the ink and mostly mirrors the drawing.
``gradient_x_input``
    Pixel times gradient. Fast and sharp, but dominated by the input: it fails the randomization check on
    digits (a random network gives nearly the same map), so it is offered, never the default.
``occlusion``
    Blank a small patch, see how much the score drops (Zeiler & Fergus, 2014). Needs no gradients: the fallback
    for a model with an op the engine cannot differentiate (``Explanation.note`` says so).

The score explained is the target's log-probability, or log p(target) - log p(contrast) for "why this and not
that" (for models that end in Softmax the gradient starts from the logits under it, so a saturated 100 % still
has a gradient). Maps are computed in the model's own input layout and scaling (``ModelAdapter``) and carried
back through them (channels summed, the scaling's slope, padding cropped or the resampling transposed) onto the
28x28 drawing, ink = 1 on 0.

Sanity checks (``randomization_check``, ``deletion_check``) measure whether a method is honest for a model:
the model-parameter randomization test of Adebayo et al. (NeurIPS 2018) and the deletion test of Petsiuk et al.
(RISE, 2018).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import ModelError, UnsupportedOperatorError
from .interface import MNIST_SIZE, ModelAdapter, _fit_image, detect_output_kind
from .scaling import scale_pixels

__all__ = ["DEFAULT_METHOD", "METHODS", "METHOD_NAMES", "DeletionReport", "Explainer", "Explanation",
           "deletion_check", "randomization_check", "randomized_copy", "rank_correlation"]

METHODS = ("smoothgrad", "integrated_gradients", "gradient_x_input", "occlusion")
DEFAULT_METHOD = "smoothgrad"
METHOD_NAMES = {
    "smoothgrad": "SmoothGrad",
    "integrated_gradients": "Integrated Gradients",
    "gradient_x_input": "Gradient × input",
    "occlusion": "Occlusion",
}
GRADIENT_METHODS = ("smoothgrad", "integrated_gradients", "gradient_x_input")
SCALE_SLOPE = {"01": 1.0, "255": 255.0, "mnist_norm": 1.0 / 0.3081, "m11": 2.0, "inv01": -1.0}
PROBABILITY_FLOOR = 1e-12


@dataclass
class Explanation:
    """One saliency map on the 28x28 drawing: > 0 where ink pushes towards ``target`` (away from ``contrast``)."""

    map: np.ndarray  # (28, 28) float32, signed
    method: str  # the method that made it (occlusion when a gradient method had to fall back)
    target: int
    contrast: int | None = None
    requested: str = DEFAULT_METHOD
    note: str | None = None  # why the requested method was not used, for the user
    seconds: float = 0.0
    probabilities: np.ndarray | None = None  # the model's probabilities for the drawing

    @property
    def scale(self) -> float:
        """The largest magnitude in the map (the legend's end), 0 for an empty map."""
        return float(np.max(np.abs(self.map))) if self.map.size else 0.0


@dataclass
class _Head:
    """Where the explained score is read: an output, or the logits under a final (Log)Softmax."""

    value: str  # the value the cotangent is put on
    kind: str  # "logits", "log_probabilities" or "probabilities"


class Explainer:
    """Saliency maps for one adapted model. Thread-safe for concurrent ``explain`` calls on different images
    only through separate instances (each keeps small caches); the app uses one per worker."""

    def __init__(self, adapter: ModelAdapter, smooth_samples: int = 24, smooth_noise: float = 0.15,
                 ig_steps: int = 16, occlusion_patch: int = 4, occlusion_stride: int = 2, seed: int = 0) -> None:
        self.adapter = adapter
        self.model = adapter.model
        self.smooth_samples = smooth_samples
        self.smooth_noise = smooth_noise
        self.ig_steps = ig_steps
        self.occlusion_patch = occlusion_patch
        self.occlusion_stride = occlusion_stride
        self.seed = seed
        layout = adapter.layout
        self._fit_matrix: np.ndarray | None = None  # (H*W, 784) when the model's size needs resampling
        self._padding: tuple[int, int] | None = None
        if (layout.height, layout.width) != (MNIST_SIZE, MNIST_SIZE):
            probe = _fit_image(np.zeros((MNIST_SIZE, MNIST_SIZE), np.float32), layout.height, layout.width)
            padded = layout.height >= MNIST_SIZE and layout.width >= MNIST_SIZE and probe.shape == (
                layout.height, layout.width) and _is_padding(layout.height, layout.width)
            if padded:
                self._padding = ((layout.height - MNIST_SIZE) // 2, (layout.width - MNIST_SIZE) // 2)
            else:
                self._fit_matrix = _resampling_matrix(layout.height, layout.width)
        self._head: _Head | None = None
        self._gradient_error: str | None = None  # why gradients are unavailable, once known

    # --- the image <-> feed chain ---------------------------------------------------------------------------
    @property
    def scaling(self) -> str:
        return self.adapter.scaling

    def _fit(self, images: np.ndarray) -> np.ndarray:
        """(n, 28, 28) ink images -> (n, H, W) at the model's size."""
        layout = self.adapter.layout
        if self._padding is not None:
            top, left = self._padding
            out = np.zeros((len(images), layout.height, layout.width), np.float32)
            out[:, top:top + MNIST_SIZE, left:left + MNIST_SIZE] = images
            return out
        if self._fit_matrix is not None:
            flat = images.reshape(len(images), -1) @ self._fit_matrix.T
            return np.clip(flat, 0.0, 1.0).reshape(len(images), layout.height, layout.width).astype(np.float32)
        return images.astype(np.float32, copy=False)

    def _unfit(self, grads: np.ndarray) -> np.ndarray:
        """(n, H, W) gradients at the model's size -> (n, 28, 28) on the drawing (the transpose of ``_fit``)."""
        if self._padding is not None:
            top, left = self._padding
            return grads[:, top:top + MNIST_SIZE, left:left + MNIST_SIZE]
        if self._fit_matrix is not None:
            return (grads.reshape(len(grads), -1) @ self._fit_matrix).reshape(len(grads), MNIST_SIZE, MNIST_SIZE)
        return grads

    def _per_sample(self, images: np.ndarray) -> np.ndarray:
        """(n, 28, 28) ink images -> (n, *per-sample shape) in the model's layout, scaling and dtype."""
        layout = self.adapter.layout
        pixels = scale_pixels(self._fit(images), self.scaling).astype(np.float32, copy=False)
        if layout.channels > 1:
            axis = -1 if layout.channels_last else 1
            pixels = np.repeat(np.expand_dims(pixels, axis), layout.channels, axis=axis)
        shape = layout.feed_shape[1:] if layout.batch_axis else layout.feed_shape
        return pixels.reshape(len(images), *shape)

    def _back_to_drawing(self, grads: np.ndarray) -> np.ndarray:
        """(n, *per-sample shape) gradients w.r.t. the feed -> (n, 28, 28) gradients w.r.t. the ink."""
        layout = self.adapter.layout
        n = len(grads)
        if layout.channels > 1:
            grads = grads.reshape(n, *((layout.height, layout.width, layout.channels) if layout.channels_last
                                       else (layout.channels, layout.height, layout.width)))
            grads = grads.sum(axis=-1 if layout.channels_last else 1)
        grads = grads.reshape(n, layout.height, layout.width) * np.float32(SCALE_SLOPE[self.scaling])
        return self._unfit(grads)

    def _chunks(self, count: int) -> list[tuple[int, int, int]]:
        """(start, stop, slots) runs covering ``count`` images: ``slots`` rows go into one model run."""
        layout = self.adapter.layout
        if not layout.batch_axis:
            size = 1
        elif layout.dynamic_batch:
            size = max(1, min(count, 64))
        else:
            size = layout.batch
        return [(start, min(start + size, count), size) for start in range(0, count, size)]

    def _feeds(self, samples: np.ndarray, slots: int) -> dict[str, np.ndarray]:
        layout = self.adapter.layout
        if len(samples) < slots:  # a fixed batch: fill the spare rows with copies of the first
            samples = np.concatenate([samples, np.repeat(samples[:1], slots - len(samples), axis=0)])
        if not layout.batch_axis:
            samples = samples[0]
        return {layout.input_name: np.ascontiguousarray(samples, dtype=layout.dtype)}

    # --- scores --------------------------------------------------------------------------------------------
    def _rows(self, value: np.ndarray, used: int) -> np.ndarray:
        """A model output -> (used, classes) score rows."""
        if self.adapter.layout.batch_axis:
            return np.asarray(value).reshape(value.shape[0], -1)[:used]
        return np.asarray(value).reshape(1, -1)

    def _find_head(self) -> _Head:
        if self._head is not None:
            return self._head
        adapter = self.adapter
        if adapter.output_name is None:  # let the adapter pick the score output once
            adapter.scores(self.model.run(adapter.make_feeds(np.zeros((MNIST_SIZE, MNIST_SIZE), np.float32))))
        name = adapter.output_name
        producers = {out: node for node in self.model.nodes for out in node.outputs}
        value = name
        node = producers.get(value)
        while node is not None and node.op_type == "Identity":
            value = node.inputs[0]
            node = producers.get(value)
        if node is not None and node.op_type in ("Softmax", "LogSoftmax") and node.inputs:
            axis = node.attrs.get("axis", -1)
            if axis in (-1, 1):
                self._head = _Head(node.inputs[0], "logits")
                return self._head
        kind = adapter.declared_output_kind
        if kind is None:
            probe = adapter.scores(self.model.run(adapter.make_feeds(np.zeros((MNIST_SIZE, MNIST_SIZE),
                                                                               np.float32))))
            kind = detect_output_kind(np.asarray(probe, np.float64))
        self._head = _Head(name, "probabilities" if kind == "scores01" else kind)
        return self._head

    @staticmethod
    def _softmax(rows: np.ndarray) -> np.ndarray:
        shifted = rows - rows.max(axis=1, keepdims=True)
        exps = np.exp(shifted)
        return exps / exps.sum(axis=1, keepdims=True)

    def _cotangent(self, rows: np.ndarray, kind: str, target: int, contrast: int | None) -> np.ndarray:
        """d objective / d rows for objective = log p(target) [- log p(contrast)]."""
        rows = rows.astype(np.float64)
        out = np.zeros_like(rows)
        if kind == "logits":
            out[:, target] += 1.0
            if contrast is None:
                out -= self._softmax(rows)
            else:
                out[:, contrast] -= 1.0
        elif kind == "log_probabilities":
            out[:, target] += 1.0
            if contrast is not None:
                out[:, contrast] -= 1.0
        else:  # probabilities
            out[:, target] += 1.0 / np.maximum(rows[:, target], PROBABILITY_FLOOR)
            if contrast is not None:
                out[:, contrast] -= 1.0 / np.maximum(rows[:, contrast], PROBABILITY_FLOOR)
        return out

    def _objective(self, probabilities: np.ndarray, target: int, contrast: int | None) -> np.ndarray:
        logs = np.log(np.maximum(probabilities, PROBABILITY_FLOOR))
        return logs[:, target] - (logs[:, contrast] if contrast is not None else 0.0)

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        """(n, classes) probabilities for (n, 28, 28) ink images, batched as the model allows."""
        images = np.asarray(images, np.float32)
        samples = self._per_sample(images)
        adapter = self.adapter
        rows = []
        for start, stop, slots in self._chunks(len(images)):
            outputs = self.model.run(self._feeds(samples[start:stop], slots))
            adapter.scores(outputs)
            value = np.asarray(outputs[adapter.output_name])
            for row in self._rows(value, stop - start):
                rows.append(adapter.interpret({adapter.output_name: row[None] if adapter.layout.batch_axis
                                               else row}))
        return np.stack(rows)

    def gradients(self, images: np.ndarray, target: int, contrast: int | None = None) -> np.ndarray:
        """(n, 28, 28) gradients of log p(target) [- log p(contrast)] with respect to each drawing's ink.

        Raises UnsupportedOperatorError (naming the node) when the model has an op without a gradient rule,
        ModelError when its input is not floating point.
        """
        layout = self.adapter.layout
        if layout.dtype.kind != "f":
            raise ModelError(f"its input is {layout.dtype.name}: integer pixels have no gradient")
        head = self._find_head()
        plan = self.model.gradient_plan()
        params = {name: self.model.graph.constants[name] for name in plan.parameters}
        images = np.asarray(images, np.float32)
        samples = self._per_sample(images)
        out = np.empty((len(images), *samples.shape[1:]), np.float32)
        for start, stop, slots in self._chunks(len(images)):
            feeds = self._feeds(samples[start:stop], slots)
            tape = plan.forward(feeds, params)
            value = tape.values[head.value]
            used = stop - start
            rows = self._rows(value, used)
            cot_rows = self._cotangent(rows, head.kind, target, contrast)
            cotangent = np.zeros(value.size, np.float64)
            if layout.batch_axis:
                cotangent = cotangent.reshape(value.shape[0], -1)
                cotangent[:used] = cot_rows
            else:
                cotangent[:] = cot_rows[0]
            grads = plan.backward(tape, {head.value: cotangent.reshape(value.shape).astype(value.dtype)},
                                  wrt=[layout.input_name])
            grad = grads.get(layout.input_name)
            if grad is None:  # the score does not depend smoothly on the pixels (integers on the way)
                raise ModelError("no gradient reaches the input from the score (the path passes through integer "
                                 "values, e.g. quantization)")
            grad = np.asarray(grad, np.float32)
            out[start:stop] = grad[:used] if layout.batch_axis else grad[None]
        return self._back_to_drawing(out)

    # --- methods -------------------------------------------------------------------------------------------
    def _smoothgrad(self, image: np.ndarray, target: int, contrast: int | None) -> np.ndarray:
        rng = np.random.default_rng(self.seed)
        noise = rng.normal(0.0, self.smooth_noise, (self.smooth_samples, *image.shape)).astype(np.float32)
        return self.gradients(image[None] + noise, target, contrast).mean(axis=0)

    def _integrated_gradients(self, image: np.ndarray, target: int, contrast: int | None) -> np.ndarray:
        alphas = (np.arange(self.ig_steps, dtype=np.float32) + 0.5) / self.ig_steps
        grads = self.gradients(alphas[:, None, None] * image[None], target, contrast)
        return image * grads.mean(axis=0)

    def _gradient_x_input(self, image: np.ndarray, target: int, contrast: int | None) -> np.ndarray:
        return image * self.gradients(image[None], target, contrast)[0]

    def _occlusion(self, image: np.ndarray, target: int, contrast: int | None) -> np.ndarray:
        patch, stride = self.occlusion_patch, self.occlusion_stride
        corners = [(r, c) for r in range(0, MNIST_SIZE - patch + 1, stride)
                   for c in range(0, MNIST_SIZE - patch + 1, stride)]
        ink = image > 0.02
        useful = [(r, c) for r, c in corners if ink[r:r + patch, c:c + patch].any()]  # blanking paper: no change
        base = self._objective(self.probabilities(image[None]), target, contrast)[0]
        total = np.zeros(image.shape, np.float64)
        counts = np.zeros(image.shape, np.float64)
        for r, c in corners:
            counts[r:r + patch, c:c + patch] += 1
        if useful:
            occluded = np.repeat(image[None], len(useful), axis=0)
            for i, (r, c) in enumerate(useful):
                occluded[i, r:r + patch, c:c + patch] = 0.0
            drops = base - self._objective(self.probabilities(occluded), target, contrast)
            for (r, c), drop in zip(useful, drops):
                total[r:r + patch, c:c + patch] += drop
        return (total / np.maximum(counts, 1)).astype(np.float32)

    def gradient_support(self) -> str | None:
        """None when the engine can differentiate the model's score with respect to its input, else the reason."""
        if self._gradient_error is None:
            try:
                self.gradients(np.zeros((1, MNIST_SIZE, MNIST_SIZE), np.float32), 0)
                self._gradient_error = ""
            except (UnsupportedOperatorError, ModelError) as exc:
                self._gradient_error = str(exc) or type(exc).__name__
        return self._gradient_error or None

    def explain(self, image28: np.ndarray, target: int | None = None, contrast: int | None = None,
                method: str = DEFAULT_METHOD) -> Explanation:
        """The map for ``target`` (default: the predicted class), against ``contrast`` when given.

        A gradient method on a model the engine cannot differentiate falls back to occlusion, with a note.
        """
        if method not in METHODS:
            raise ValueError(f"unknown saliency method {method!r}; expected one of {', '.join(METHODS)}")
        started = time.perf_counter()
        image = np.asarray(image28, np.float32).reshape(MNIST_SIZE, MNIST_SIZE)
        probabilities = self.probabilities(image[None])[0]
        if target is None:
            target = int(np.argmax(probabilities))
        if contrast == target:
            contrast = None
        used, note = method, None
        saliency: np.ndarray | None = None
        if method in GRADIENT_METHODS:
            reason = self._gradient_error or None
            if reason is None:
                try:
                    saliency = getattr(self, "_" + method)(image, target, contrast)
                    self._gradient_error = ""
                except (UnsupportedOperatorError, ModelError) as exc:
                    reason = self._gradient_error = str(exc) or type(exc).__name__
            if saliency is None:
                used = "occlusion"
                note = f"{METHOD_NAMES[method]} needs gradients the engine cannot compute for this model " \
                       f"({reason}); showing occlusion instead"
        if saliency is None:
            saliency = self._occlusion(image, target, contrast)
        saliency = np.nan_to_num(np.asarray(saliency, np.float32), nan=0.0, posinf=0.0, neginf=0.0)
        return Explanation(saliency, used, target, contrast, method, note, time.perf_counter() - started,
                           probabilities)


def _is_padding(height: int, width: int) -> bool:
    from .interface import MAX_PADDING

    return MNIST_SIZE <= height <= MNIST_SIZE + MAX_PADDING and MNIST_SIZE <= width <= MNIST_SIZE + MAX_PADDING


def _resampling_matrix(height: int, width: int) -> np.ndarray:
    """The (H*W, 784) matrix of the adapter's resize from 28x28 (linear before its clip): one basis image per
    column."""
    columns = np.empty((height * width, MNIST_SIZE * MNIST_SIZE), np.float32)
    basis = np.zeros((MNIST_SIZE, MNIST_SIZE), np.float32)
    for index in range(MNIST_SIZE * MNIST_SIZE):
        basis.flat[index] = 1.0
        columns[:, index] = _resample_unclipped(basis, height, width).ravel()
        basis.flat[index] = 0.0
    return columns


def _resample_unclipped(image: np.ndarray, height: int, width: int) -> np.ndarray:
    from PIL import Image

    shrinking = height < image.shape[0] or width < image.shape[1]
    resample = Image.Resampling.BOX if shrinking else Image.Resampling.BILINEAR
    return np.asarray(Image.fromarray(image, mode="F").resize((width, height), resample), np.float32)


# --- sanity checks -----------------------------------------------------------------------------------------
def _ranks(values: np.ndarray) -> np.ndarray:
    """Ranks with ties averaged (as Spearman's rho needs: the zeros off the ink are one big tie)."""
    order = np.argsort(values, kind="mergesort")
    ranks = np.empty(len(values), np.float64)
    sorted_values = values[order]
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_values)) + 1]
    ends = np.r_[starts[1:], len(values)]
    for start, end in zip(starts, ends):
        ranks[order[start:end]] = (start + end - 1) / 2.0
    return ranks


def rank_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation of two maps (flattened), ties averaged; 0 when either is constant."""
    ra, rb = _ranks(np.ravel(a).astype(np.float64)), _ranks(np.ravel(b).astype(np.float64))
    ra -= ra.mean()
    rb -= rb.mean()
    denominator = np.sqrt((ra * ra).sum() * (rb * rb).sum())
    return float((ra * rb).sum() / denominator) if denominator > 0 else 0.0


def randomized_copy(model: Any, seed: int = 0) -> Any:
    """The same architecture with every learnable weight and bias redrawn at random (Gaussian with each
    tensor's own mean and spread; normalisation statistics kept), for the randomization check."""
    from .model import load_proto
    from .train import parameter_roles

    copy = load_proto(model.to_proto(), model.name)
    rng = np.random.default_rng(seed)
    roles = parameter_roles(copy)
    fresh = {}
    for name, value in copy.initializers.items():
        if roles.get(name) in ("weight", "bias") and value.size > 1:
            spread = float(value.std()) or 0.05
            fresh[name] = rng.normal(float(value.mean()), spread, value.shape).astype(value.dtype)
    copy.set_initializers(fresh)
    return copy


def _adapter_like(adapter: ModelAdapter, model: Any) -> ModelAdapter:
    other = ModelAdapter(model)
    other.set_scaling(adapter.scaling, adapter.scaling_source)
    return other


def randomization_check(adapter: ModelAdapter, images: np.ndarray, method: str = DEFAULT_METHOD,
                        seed: int = 0) -> float:
    """Adebayo et al.'s model-parameter randomization test: the mean Spearman rank correlation, over
    ``images``, between |map| of the trained model and |map| of the same architecture with random weights
    (each explaining its own predicted class). Low means the map depends on what the model learnt."""
    trained = Explainer(adapter)
    random = Explainer(_adapter_like(adapter, randomized_copy(adapter.model, seed)))
    values = []
    for image in np.asarray(images, np.float32):
        a = trained.explain(image, method=method).map
        b = random.explain(image, method=method).map
        values.append(rank_correlation(np.abs(a), np.abs(b)))
    return float(np.mean(values))


@dataclass
class DeletionReport:
    """Mean probability of each drawing's class after blanking fractions of its ink pixels, most salient first
    (``salient``) or at random (``random``); ``fractions`` of the ink blanked at each point."""

    fractions: list[float]
    salient: list[float] = field(default_factory=list)
    random: list[float] = field(default_factory=list)

    @property
    def salient_area(self) -> float:
        return float(np.mean(self.salient))

    @property
    def random_area(self) -> float:
        return float(np.mean(self.random))

    @property
    def passed(self) -> bool:
        return self.salient_area < self.random_area


def deletion_check(adapter: ModelAdapter, images: np.ndarray, method: str = DEFAULT_METHOD,
                   fractions: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5), random_draws: int = 4,
                   seed: int = 0) -> DeletionReport:
    """Petsiuk et al.'s deletion test on the ink: blank the top-ranked ink pixels (ranked by the signed map for
    the predicted class) and as many random ink pixels; a faithful map lowers the class probability faster."""
    explainer = Explainer(adapter)
    rng = np.random.default_rng(seed)
    salient = np.zeros(len(fractions))
    random = np.zeros(len(fractions))
    images = np.asarray(images, np.float32)
    for image in images:
        result = explainer.explain(image, method=method)
        target = result.target
        ink = np.flatnonzero(image.ravel() > 0.1)
        ranked = ink[np.argsort(-result.map.ravel()[ink], kind="stable")]
        batch, kinds = [], []
        for i, fraction in enumerate(fractions):
            count = max(1, int(round(fraction * len(ink))))
            blanked = image.copy().ravel()
            blanked[ranked[:count]] = 0.0
            batch.append(blanked.reshape(image.shape))
            kinds.append(("salient", i))
            for _ in range(random_draws):
                blanked = image.copy().ravel()
                blanked[rng.choice(ink, count, replace=False)] = 0.0
                batch.append(blanked.reshape(image.shape))
                kinds.append(("random", i))
        probabilities = explainer.probabilities(np.stack(batch))[:, target]
        for (kind, i), p in zip(kinds, probabilities):
            if kind == "salient":
                salient[i] += p
            else:
                random[i] += p / random_draws
    count = max(1, len(images))
    return DeletionReport(list(fractions), list(salient / count), list(random / count))
