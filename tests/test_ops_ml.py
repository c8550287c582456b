"""ai.onnx.ml kernels (nn_core/ops/ml.py) against onnxruntime on small random scikit-learn-style models."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import make_model, ort_run, tensor_info
from onnx import TensorProto, helper
from onnx_node_cases import cases_for, check_case_with_kernels
from test_ops_shape import one_node_model

from nn_core import ModelError
from nn_core.ops.testing import run_node

ML = "ai.onnx.ml"


def both_ways(node, x: np.ndarray, elem_type=TensorProto.FLOAT, output_types=None) -> tuple[list, list]:
    """(our outputs, onnxruntime's). Output types can be spelled out: ONNX shape inference skips some ml ops."""
    if output_types is None:
        model = one_node_model(node, [tensor_info("x", list(x.shape), elem_type)], 13, domain_opsets=[(ML, 1)])
    else:
        outputs = [tensor_info(name, None, kind) for name, kind in zip(node.output, output_types, strict=True)]
        model = make_model([node], [tensor_info("x", list(x.shape), elem_type)], outputs, opset=13)
        model.opset_import.append(helper.make_opsetid(ML, 1))
    return run_node(node, [x], 1), ort_run(model, {"x": x})


def assert_same(got: list, want: list) -> None:
    assert len(got) == len(want)
    for have, expected in zip(got, want, strict=True):
        assert have.shape == expected.shape
        if expected.dtype == object or np.issubdtype(expected.dtype, np.integer):
            assert have.tolist() == expected.tolist()
        else:
            assert have.dtype == expected.dtype
            np.testing.assert_allclose(have, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("post_transform", ["NONE", "SOFTMAX", "LOGISTIC"])
@pytest.mark.parametrize("labels", [dict(classlabels_ints=[3, 5, 7, 9]), dict(classlabels_strings=list("abcd"))])
def test_linear_classifier(post_transform, labels):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((6, 5)).astype(np.float32)
    node = helper.make_node("LinearClassifier", ["x"], ["label", "scores"], domain=ML, multi_class=1,
                            coefficients=rng.standard_normal(20).tolist(), intercepts=rng.standard_normal(4).tolist(),
                            post_transform=post_transform, **labels)
    assert_same(*both_ways(node, x))


@pytest.mark.parametrize("post_transform", ["NONE", "SOFTMAX", "LOGISTIC"])
def test_binary_linear_classifier_reports_both_classes(post_transform):
    rng = np.random.default_rng(4)
    x = rng.standard_normal((7, 3)).astype(np.float32)
    node = helper.make_node("LinearClassifier", ["x"], ["label", "scores"], domain=ML, classlabels_strings=["n", "p"],
                            coefficients=rng.standard_normal(3).tolist(), intercepts=[0.1],
                            post_transform=post_transform)
    assert_same(*both_ways(node, x))


@pytest.mark.parametrize("norm", ["MAX", "L1", "L2"])
def test_normalizer(norm):
    x = np.random.default_rng(1).uniform(0.1, 3, (4, 6)).astype(np.float32)
    node = helper.make_node("Normalizer", ["x"], ["y"], domain=ML, norm=norm)
    assert_same(*both_ways(node, x, output_types=[TensorProto.FLOAT]))


def test_array_feature_extractor_picks_last_axis_columns():
    x = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    node = helper.make_node("ArrayFeatureExtractor", ["x", "i"], ["y"], domain=ML)
    for constant in ((), (1,)):  # indices given at run time, or a constant checked once and by range per width
        (y,) = run_node(node, [x, np.array([3, 0], np.int64)], 1, constant_inputs=constant)
        np.testing.assert_array_equal(y, x[..., [3, 0]])
        with pytest.raises(ModelError, match="index out of range for last dim 4"):
            run_node(node, [x, np.array([4, 0], np.int64)], 1, constant_inputs=constant)


@pytest.mark.parametrize("kernel", ["RBF", "LINEAR", "POLY", "SIGMOID"])
def test_svm_classifier_one_vs_one(kernel):
    rng = np.random.default_rng(2)
    per_class, features = [3, 2, 4], 5
    total = sum(per_class)
    node = helper.make_node(
        "SVMClassifier", ["x"], ["label", "scores"], domain=ML, kernel_type=kernel,
        kernel_params=[0.2, 0.5, 2.0], vectors_per_class=per_class, classlabels_ints=[0, 1, 2],
        support_vectors=rng.standard_normal(total * features).tolist(),
        coefficients=rng.standard_normal(2 * total).tolist(), rho=rng.standard_normal(3).tolist(),
    )
    x = rng.integers(-3, 4, size=(8, features)).astype(np.int64)  # integer features, as the digits SVC has
    assert_same(*both_ways(node, x, TensorProto.INT64, [TensorProto.INT64, TensorProto.FLOAT]))


def test_conformance_case_for_array_feature_extractor():
    cases = cases_for({"ArrayFeatureExtractor"}, 10**6)
    assert cases
    for case in cases:
        check_case_with_kernels(case)
