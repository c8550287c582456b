"""Gradient rules of shape, nn and norm kernels in the forms ONNX's node cases miss, against float64 central
differences: Gemm with a run-time transposed B and a broadcast C, batched broadcasting MatMul, BatchNormalization
in training mode (opset 14 and the legacy five outputs), Resize linear x2 on NCHW as torch exports it, and a few
more (Pad reflect/edge, Gather with negative indices, Einsum with an ellipsis and a diagonal, Dropout training)."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

from nn_core.ops import load_all_kernels
from nn_core.ops.attributes import node_attributes
from nn_core.ops.registry import NodeSpec, resolve

load_all_kernels()
EPS = 1e-6
RNG = np.random.default_rng(7)


def kernel(op, n_inputs, n_outputs=1, opset=18, consts=None, **attrs):
    inputs = [f"i{k}" for k in range(n_inputs)]
    outputs = [f"o{k}" for k in range(n_outputs)]
    node = helper.make_node(op, inputs, outputs, **attrs)
    consts = list(consts or []) + [None] * (n_inputs - len(consts or []))
    spec = NodeSpec(op, "node", "", inputs, outputs, node_attributes(node), opset, consts)
    return resolve(op, opset)(spec)


def outputs_of(k, inputs):
    result = k.run(*inputs)
    return [np.asarray(v) for v in (result if isinstance(result, tuple) else (result,))]


def check(k, inputs, samples=24, only=None):
    """Every floating input's rule (or those listed in ``only``) against central differences of
    sum(<outputs, random cotangents>)."""
    outputs = outputs_of(k, inputs)
    cotangents = [RNG.standard_normal(o.shape) if o.dtype.kind == "f" else None for o in outputs]

    def loss(values):
        return sum(float(np.sum(o * c)) for o, c in zip(outputs_of(k, values), cotangents) if c is not None)

    grads = list(k.backward(inputs, outputs, cotangents)) + [None] * len(inputs)
    for index, x in enumerate(inputs):
        if x is None or x.dtype.kind != "f" or (only is not None and index not in only):
            continue
        rule = np.zeros(x.shape) if grads[index] is None else grads[index]
        assert np.shape(rule) == x.shape
        for flat in RNG.choice(x.size, size=min(samples, x.size), replace=False):
            where = np.unravel_index(flat, x.shape)
            moved = []
            for step in (EPS, -EPS):
                shifted = x.copy()
                shifted[where] += step
                moved.append(loss([shifted if i == index else v for i, v in enumerate(inputs)]))
            central = (moved[0] - moved[1]) / (2 * EPS)
            assert abs(rule[where] - central) <= 1e-5 * (1 + abs(central)), (index, where, rule[where], central)


def r(*shape):
    return RNG.standard_normal(shape)


@pytest.mark.parametrize("trans_a", [0, 1])
@pytest.mark.parametrize("c_shape", [(7,), (1, 7), (5, 1), (5, 7), ()])
def test_gemm_with_run_time_transposed_b_and_broadcast_c(trans_a, c_shape):
    a = r(3, 5) if trans_a else r(5, 3)
    check(kernel("Gemm", 3, transA=trans_a, transB=1, alpha=0.7, beta=1.3, opset=13), [a, r(7, 3), r(*c_shape)])


def test_gemm_without_c_and_plain_b():
    check(kernel("Gemm", 2, alpha=2.0, opset=13), [r(4, 6), r(6, 2)])


def test_gemm_backward_is_two_products_without_copies():
    k = kernel("Gemm", 3, transB=1, opset=13)
    x, w, b = (v.astype(np.float32) for v in (r(128, 600), r(120, 600), r(120)))
    y = k.run(x, w, b)
    dx, dw, db = k.backward([x, w, b], [y], [np.ones_like(y)])
    assert dx.dtype == dw.dtype == db.dtype == np.float32
    assert (dx.shape, dw.shape, db.shape) == (x.shape, w.shape, b.shape)
    np.testing.assert_allclose(dw, np.ones_like(y).T @ x, rtol=1e-5)


@pytest.mark.parametrize("shapes", [((2, 1, 3, 4), (5, 4, 2)), ((3, 4), (2, 4, 5)), ((4,), (2, 4, 3)),
                                    ((2, 3, 4), (4,)), ((4,), (4,)), ((6, 2, 3), (3, 5)), ((1, 3, 4), (2, 4, 2))])
def test_batched_matmul_broadcasting(shapes):
    check(kernel("MatMul", 2, opset=13), [r(*shapes[0]), r(*shapes[1])])


@pytest.mark.parametrize("shape", [(4, 3, 2, 2), (6, 2), (3, 2, 5)])
def test_batchnorm_training_mode(shape):
    params = [r(shape[1]), r(shape[1]), r(shape[1]), RNG.uniform(0.5, 2, shape[1])]
    check(kernel("BatchNormalization", 5, 3, opset=15, training_mode=1, momentum=0.8, epsilon=1e-3),
          [r(*shape), *params])


def test_batchnorm_training_mode_output_y_only():
    params = [r(3), r(3), r(3), RNG.uniform(0.5, 2, 3)]
    check(kernel("BatchNormalization", 5, 1, opset=15, training_mode=1), [r(4, 3, 2, 2), *params])


def test_legacy_batchnorm_training_outputs():
    params = [r(3), r(3), r(3), RNG.uniform(0.5, 2, 3)]
    check(kernel("BatchNormalization", 5, 5, opset=9, momentum=0.9), [r(4, 3, 2, 2), *params])


def test_batchnorm_inference_spatial_zero():
    params = [r(3, 2, 2), r(3, 2, 2), r(3, 2, 2), RNG.uniform(0.5, 2, (3, 2, 2))]
    check(kernel("BatchNormalization", 5, opset=7, spatial=0), [r(2, 3, 2, 2), *params])


@pytest.mark.parametrize("transform", ["pytorch_half_pixel", "half_pixel", "align_corners", "asymmetric"])
@pytest.mark.parametrize("mode", ["linear", "nearest"])
def test_resize_by_two_on_nchw_as_torch_exports_it(transform, mode):
    scales = np.array([1, 1, 2, 2], np.float32)
    k = kernel("Resize", 3, opset=13, consts=[None, np.zeros(0, np.float32), scales], mode=mode,
               coordinate_transformation_mode=transform, nearest_mode="floor")
    check(k, [r(2, 3, 4, 5), np.zeros(0, np.float32), scales], only=(0,))  # the scales: a step function here


def test_resize_gradient_is_the_transpose_of_the_interpolation():
    x = r(1, 2, 5, 3)
    scales = np.array([1, 1, 2, 2], np.float32)
    k = kernel("Resize", 3, opset=13, consts=[None, None, scales], mode="linear",
               coordinate_transformation_mode="pytorch_half_pixel")
    y = k.run(x, None, scales)
    g = r(*y.shape)
    (dx,) = k.backward([x, None, scales], [y], [g])[:1]
    assert np.isclose(np.sum(dx * x), np.sum(g * y))  # <A^T g, x> == <g, A x> for the linear map A


@pytest.mark.parametrize("mode", ["reflect", "edge", "constant", "wrap"])
def test_pad_modes(mode):
    pads = np.array([0, 1, 2, -1, 0, 2, 1, 3], np.int64)
    check(kernel("Pad", 3, opset=18, consts=[None, pads], mode=mode), [r(2, 3, 4, 5), pads, np.array(0.5)])


def test_gather_with_negative_and_repeated_indices():
    indices = np.array([[0, -1], [2, 0]], np.int64)
    check(kernel("Gather", 2, opset=13, axis=1), [r(3, 4, 2), indices])


@pytest.mark.parametrize("equation", ["...ij,...jk->...ik", "ii->i", "bij,bjk", "ij->", "i,i->i", "...ii->...i"])
def test_einsum(equation):
    shapes = {"...ij,...jk->...ik": [(2, 1, 3, 4), (3, 4, 2)], "ii->i": [(3, 3)], "bij,bjk": [(2, 3, 4), (2, 4, 5)],
              "ij->": [(3, 4)], "i,i->i": [(5,), (5,)], "...ii->...i": [(2, 3, 3)]}[equation]
    check(kernel("Einsum", len(shapes), opset=13, equation=equation), [r(*s) for s in shapes])


def test_dropout_training_uses_the_mask_of_its_own_run():
    k = kernel("Dropout", 3, 1, opset=13)
    x, ratio, training = r(64), np.array(0.4), np.array(True)
    y = k.run(x, ratio, training)
    g = r(64)
    dx = k.backward([x, ratio, training], [y], [g])[0]
    kept = y != 0
    np.testing.assert_allclose(dx, np.where(kept, g / 0.6, 0.0))


def test_split_with_a_missing_output_gradient():
    k = kernel("Split", 2, 3, opset=18, consts=[None, np.array([1, 2, 3])], axis=1)
    x = r(2, 6)
    outs = outputs_of(k, [x, np.array([1, 2, 3])])
    grads = [r(*outs[0].shape), None, r(*outs[2].shape)]
    dx = k.backward([x, np.array([1, 2, 3])], outs, grads)[0]
    np.testing.assert_array_equal(dx[:, 1:3], 0)
    np.testing.assert_array_equal(dx[:, :1], grads[0])
