"""Saliency maps (nn_core.explain): honest (sanity checks with margins), mapped back through every layout and
scaling, and available for any model (occlusion when the engine cannot differentiate it).

The figures each check measures are printed (``pytest -s``): the randomization rank correlation and the
deletion-curve areas per model, and the latency per method.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
from helpers import BUNDLED, HERE, make_model, tensor_info
from onnx import helper

import nn_core
from nn_core import explain
from nn_core.interface import ModelAdapter, load_samples

# (file, scaling): the bundled LeNet-5 and two other shapes of model: NHWC Keras with Softmax, fixed-batch
# PyTorch net on -1..1 pixels ending in global average pooling
MODELS_DIR = HERE / "models"
SHAPES = [(BUNDLED, "01"), (MODELS_DIR / "keras_nhwc_unsorted.onnx", "01"),
          (MODELS_DIR / "torch_avgpool_m11.onnx", "m11")]


def adapter_for(path, scaling) -> ModelAdapter:
    adapter = ModelAdapter(nn_core.load(path))
    adapter.set_scaling(scaling)
    return adapter


@pytest.fixture(scope="module")
def digits():
    images, labels = load_samples()
    return images[:20], labels[:20]


@pytest.mark.parametrize("path,scaling", SHAPES, ids=lambda v: getattr(v, "stem", v))
def test_default_map_passes_the_randomization_and_deletion_checks(path, scaling, digits):
    adapter = adapter_for(path, scaling)
    rho = explain.randomization_check(adapter, digits[0], explain.DEFAULT_METHOD)
    report = explain.deletion_check(adapter, digits[0], explain.DEFAULT_METHOD)
    print(f"\n{path.name}: {explain.DEFAULT_METHOD} randomization rho {rho:.3f}; deletion area salient "
          f"{report.salient_area:.3f} vs random {report.random_area:.3f}")
    # measured: LeNet-5 0.23, Keras NHWC 0.09, torch m11 0.31 ("well below 0.5")
    assert rho < 0.4
    # measured: 0.16 vs 0.77, 0.42 vs 0.74, 0.37 vs 0.67
    assert report.salient_area < report.random_area - 0.2
    assert all(s <= r for s, r in zip(report.salient[1:], report.random[1:], strict=True))


def test_gradient_x_input_mirrors_the_drawing_and_is_not_the_default(digits):
    """Why it is not the default: the randomized network's map is nearly the trained one's (rho ~0.99)."""
    adapter = adapter_for(BUNDLED, "01")
    rho = explain.randomization_check(adapter, digits[0][:8], "gradient_x_input")
    print(f"\ngradient x input randomization rho {rho:.3f}")
    assert rho > 0.8
    assert explain.DEFAULT_METHOD not in ("gradient_x_input", "integrated_gradients")


@pytest.mark.parametrize("path,scaling", SHAPES, ids=lambda v: getattr(v, "stem", v))
def test_gradient_matches_differences_on_real_models(path, scaling, digits):
    """The map of "why 4 and not 9" against one-pixel central differences at every pixel: ReLU and max-pool
    kinks blur single pixels, but a wrong layout or scaling slope would decorrelate or rescale the whole map."""
    explainer = explain.Explainer(adapter_for(path, scaling))
    image = digits[0][3]
    grad = explainer.gradients(image[None], 4, 9)[0].astype(np.float64).ravel()
    eps = 1e-2
    probes = np.repeat(image[None], 2 * image.size, axis=0).reshape(2, image.size, image.size)
    probes[0, np.arange(image.size), np.arange(image.size)] += eps
    probes[1, np.arange(image.size), np.arange(image.size)] -= eps
    p = explainer.probabilities(probes.reshape(-1, 28, 28)).reshape(2, image.size, -1)
    score = np.log(p[..., 4]) - np.log(p[..., 9])
    numeric = (score[0] - score[1]) / (2 * eps)
    assert np.corrcoef(grad, numeric)[0, 1] > 0.9  # measured 0.93 to 0.99
    assert np.dot(grad, numeric) / np.dot(numeric, numeric) == pytest.approx(1.0, abs=0.15)


LAYOUTS = {"nchw": ["N", 1, 28, 28], "nhwc": ["N", 28, 28, 1], "flat": ["N", 784], "nhw": ["N", 28, 28],
           "rgb": ["N", 3, 28, 28], "rgb_nhwc": ["N", 28, 28, 3], "padded32": ["N", 1, 32, 32],
           "resampled14": ["N", 1, 14, 14], "fixed_batch": [10, 1, 28, 28], "single": [1, 784]}


@pytest.mark.parametrize("scaling", ["01", "255", "mnist_norm", "m11", "inv01"])
@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_the_map_is_carried_back_through_layout_and_scaling(layout, scaling):
    """A linear classifier (no kinks) in every input layout and pixel convention: the gradient on the 28x28
    drawing is the derivative of what the model computes from it, to float32 precision."""
    shape = LAYOUTS[layout]
    features = int(np.prod([d for d in shape[1:]]))
    rng = np.random.default_rng(abs(hash(layout)) % 1000)
    weights = (rng.normal(size=(10, features)) * (0.02 if scaling != "255" else 0.0001)).astype(np.float32)
    proto = make_model([helper.make_node("Flatten", ["x"], ["f"]), helper.make_node("Gemm", ["f", "w"], ["y"],
                                                                                    transB=1)],
                       [tensor_info("x", shape)], [tensor_info("y", [shape[0], 10])], {"w": weights})
    helper.set_model_props(proto, {"output_kind": "logits"})
    adapter = ModelAdapter(nn_core.load_proto(proto, f"{layout}.onnx"))
    adapter.set_scaling(scaling)
    explainer = explain.Explainer(adapter)
    image = load_samples()[0][0]
    grad = explainer.gradients(image[None], 3)[0].astype(np.float64)
    assert grad.shape == (28, 28)
    direction = rng.normal(size=image.shape) * ((image > 0.05) & (image < 0.95))  # inside the resize's clip
    eps = 1e-2
    up, down = explainer.probabilities(np.stack([image + eps * direction, image - eps * direction]))
    np.testing.assert_allclose(explainer.probabilities(image[None])[0], adapter.predict(image), atol=1e-5)
    numeric = (np.log(up[3]) - np.log(down[3])) / (2 * eps)
    assert float((grad * direction).sum()) == pytest.approx(numeric, rel=2e-3, abs=1e-4)


def test_why_this_and_not_that_is_the_difference_of_the_two_maps(digits):
    explainer = explain.Explainer(adapter_for(BUNDLED, "01"))
    image = digits[0][0]
    four = explainer.explain(image, target=4, method="gradient_x_input").map
    nine = explainer.explain(image, target=9, method="gradient_x_input").map
    versus = explainer.explain(image, target=4, contrast=9, method="gradient_x_input")
    assert versus.contrast == 9 and versus.target == 4
    np.testing.assert_allclose(versus.map, four - nine, atol=1e-4 * max(1.0, float(np.abs(versus.map).max())))


def test_every_method_gives_a_signed_28x28_map_towards_the_class(digits):
    explainer = explain.Explainer(adapter_for(BUNDLED, "01"))
    image, label = digits[0][1], int(digits[1][1])
    for method in explain.METHODS:
        result = explainer.explain(image, method=method)
        assert result.method == method and result.note is None
        assert result.map.shape == (28, 28) and result.map.dtype == np.float32
        assert result.target == label == int(np.argmax(result.probabilities))
        assert np.isfinite(result.map).all() and result.scale > 0


def quantized_model() -> nn_core.Model:
    """A digit classifier with QuantizeLinear/DequantizeLinear on its input: the engine has no gradient rule."""
    rng = np.random.default_rng(0)
    weights = (rng.normal(size=(10, 784)) * 0.05).astype(np.float32)
    nodes = [helper.make_node("QuantizeLinear", ["x", "scale", "zero"], ["q"], name="quantize"),
             helper.make_node("DequantizeLinear", ["q", "scale", "zero"], ["d"], name="dequantize"),
             helper.make_node("Flatten", ["d"], ["f"]),
             helper.make_node("Gemm", ["f", "w"], ["y"], transB=1)]
    proto = make_model(nodes, [tensor_info("x", ["N", 1, 28, 28])], [tensor_info("y", ["N", 10])],
                       {"w": weights, "scale": np.float32(1 / 255), "zero": np.uint8(0)})
    return nn_core.load_proto(proto, "quantized.onnx")


def test_a_model_without_gradient_rules_falls_back_to_occlusion_with_a_note(digits):
    explainer = explain.Explainer(ModelAdapter(quantized_model()))
    assert "no gradient reaches the input" in (explainer.gradient_support() or "")
    result = explainer.explain(digits[0][0])
    assert result.method == "occlusion" and result.requested == explain.DEFAULT_METHOD
    assert "no gradient" in result.note and "occlusion" in result.note


def test_an_op_without_a_gradient_rule_is_named_in_the_note(digits, monkeypatch):
    from nn_core.ops.conv import Conv

    def refuse(self, inputs, outputs, grads, *args, **kwargs):
        raise nn_core.UnsupportedOperatorError(f"{self.node.where()}: the engine has no gradient rule for Conv")

    monkeypatch.setattr(Conv, "backward", refuse)
    result = explain.Explainer(adapter_for(BUNDLED, "01")).explain(digits[0][0])
    assert result.method == "occlusion" and "no gradient rule for Conv" in result.note
    assert result.map.shape == (28, 28) and np.abs(result.map).max() > 0


def test_rank_correlation_handles_ties():
    a = np.array([0, 0, 0, 1, 2, 3], np.float64)
    assert explain.rank_correlation(a, a) == pytest.approx(1.0)
    assert explain.rank_correlation(a, -a) == pytest.approx(-1.0)
    assert explain.rank_correlation(a, np.ones(6)) == 0.0


def test_randomized_copy_changes_the_weights_only():
    model = nn_core.load(BUNDLED)
    copy = explain.randomized_copy(model)
    assert [n.op_type for n in copy.nodes] == [n.op_type for n in model.nodes]
    assert not np.allclose(copy.initializers["fc3.weight" if "fc3.weight" in copy.initializers
                                              else next(iter(copy.initializers))],
                           model.initializers["fc3.weight" if "fc3.weight" in model.initializers
                                              else next(iter(model.initializers))])


def test_latency_per_method_on_the_bundled_model(digits):
    """Measured and printed; a gradient map of the bundled model takes a few ms (one BLAS thread)."""
    from nn_core.threads import set_blas_threads

    set_blas_threads(1)  # tiny matmuls: extra BLAS threads only contend (the app's own setting)
    explainer = explain.Explainer(adapter_for(BUNDLED, "01"))
    figures = {}
    for method in explain.METHODS:
        explainer.explain(digits[0][0], method=method)
        times = []
        for image in digits[0][:6]:
            started = time.perf_counter()
            explainer.explain(image, method=method)
            times.append(time.perf_counter() - started)
        figures[method] = float(np.median(times)) * 1000
    print("\nlatency (ms, median): " + ", ".join(f"{m} {v:.1f}" for m, v in figures.items()))
    assert figures["gradient_x_input"] < 25
    assert figures[explain.DEFAULT_METHOD] < 250
