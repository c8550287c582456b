"""Keras-style channels-last flattens (Transpose to NHWC, Reshape to (N, C*H*W)) folded into the first dense
layer's weights (nn_core/ops/layout_folds.py), against the general kernels of the traced plan."""

from pathlib import Path

import numpy as np
import pytest
from helpers import make_model, save, tensor_info
from onnx import helper

import nn_core
from nn_core import ModelError

MODELS = Path(__file__).resolve().parent / "models"
FOLDED = ("Transpose+Reshape+", "Transpose+Flatten+")


def _flatten_head(rng: np.random.Generator, shape: list[int] | None, head: str, width: int = 24,
                  perm: tuple[int, ...] = (0, 2, 3, 1), flatten_axis: int = 1) -> object:
    """x (N, C, H, W) -> Transpose(perm) -> Reshape(shape) (Flatten(flatten_axis) when ``shape`` is None) ->
    ``head``: one Gemm, Gemm+Relu+Gemm+Softmax, or MatMul+Add+MatMul+Add+Softmax, whose first layer takes
    ``width`` inputs."""
    inits = {"w1": (rng.standard_normal((8, width)) * 0.3).astype(np.float32),
             "b1": (rng.standard_normal(8) * 0.1).astype(np.float32),
             "w2": (rng.standard_normal((5, 8)) * 0.3).astype(np.float32),
             "b2": (rng.standard_normal(5) * 0.1).astype(np.float32)}
    nodes = [helper.make_node("Transpose", ["x"], ["t"], name="to_nhwc", perm=list(perm))]
    if shape is None:
        nodes.append(helper.make_node("Flatten", ["t"], ["f"], name="flatten", axis=flatten_axis))
    else:
        inits["shape"] = np.array(shape, np.int64)
        nodes.append(helper.make_node("Reshape", ["t", "shape"], ["f"], name="flatten"))
    if head == "gemm":
        nodes.append(helper.make_node("Gemm", ["f", "w1", "b1"], ["y"], name="fc1", transB=1))
        out_width = 8
    elif head == "gemm_chain":
        nodes += [helper.make_node("Gemm", ["f", "w1", "b1"], ["h"], name="fc1", transB=1),
                  helper.make_node("Relu", ["h"], ["r"], name="relu"),
                  helper.make_node("Gemm", ["r", "w2", "b2"], ["z"], name="fc2", transB=1),
                  helper.make_node("Softmax", ["z"], ["y"], name="softmax", axis=1)]
        out_width = 5
    else:
        inits["w1"], inits["w2"] = inits["w1"].T.copy(), inits["w2"].T.copy()
        nodes += [helper.make_node("MatMul", ["f", "w1"], ["m1"], name="dense1"),
                  helper.make_node("Add", ["m1", "b1"], ["h"], name="add1"),
                  helper.make_node("MatMul", ["h", "w2"], ["m2"], name="dense2"),
                  helper.make_node("Add", ["m2", "b2"], ["z"], name="add2"),
                  helper.make_node("Softmax", ["z"], ["y"], name="softmax", axis=-1)]
        out_width = 5
    return make_model(nodes, [tensor_info("x", ["N", "C", "H", "W"])], [tensor_info("y", ["N", out_width])], inits)


def _load(tmp_path, proto) -> nn_core.Model:
    return nn_core.load(save(proto, tmp_path / "head.onnx"))


def _assert_matches_general(model, x: np.ndarray) -> np.ndarray:
    got = model.run({"x": x})["y"]
    want, _ = model.run_traced({"x": x})
    np.testing.assert_allclose(got, want["y"], rtol=1e-5, atol=1e-6)
    return got


@pytest.mark.parametrize("head", ["gemm", "gemm_chain", "matmul_chain"])
@pytest.mark.parametrize("shape", [[-1, 24], [0, -1], [0, 24], None])
@pytest.mark.parametrize("batch", [1, 3])
def test_flatten_folds_into_the_dense_layer(tmp_path, head, shape, batch):
    rng = np.random.default_rng(5)
    model = _load(tmp_path, _flatten_head(rng, shape, head))
    assert len(model.plan_ops) == 1 and model.plan_ops[0].startswith(FOLDED)
    _assert_matches_general(model, rng.standard_normal((batch, 4, 2, 3)).astype(np.float32))


def test_spatial_shapes_and_channel_counts_change_between_runs(tmp_path):
    """The permutation depends on C and H*W only: (2, 3) and (3, 2) positions share it, another C rebuilds it,
    and each run matches the general kernels."""
    rng = np.random.default_rng(11)
    model = _load(tmp_path, _flatten_head(rng, [0, -1], "gemm_chain"))
    for shape in [(2, 4, 2, 3), (2, 4, 3, 2), (2, 2, 3, 4), (1, 6, 1, 4), (2, 4, 2, 3), (1, 24, 1, 1)]:
        _assert_matches_general(model, rng.standard_normal(shape).astype(np.float32))


def test_named_row_count_folds_only_for_that_batch(tmp_path):
    """A Reshape to [2, -1] flattens a batch of two; a batch of one becomes (2, 12), which the dense layer
    refuses, as the general kernels do."""
    rng = np.random.default_rng(2)
    model = _load(tmp_path, _flatten_head(rng, [2, -1], "gemm_chain"))
    assert model.plan_ops[0].startswith(FOLDED)
    _assert_matches_general(model, rng.standard_normal((2, 4, 2, 3)).astype(np.float32))
    with pytest.raises(ModelError):
        model.run({"x": rng.standard_normal((1, 4, 2, 3)).astype(np.float32)})


def test_other_sizes_and_ranks_run_the_original_kernels(tmp_path):
    rng = np.random.default_rng(4)
    model = _load(tmp_path, _flatten_head(rng, [-1, 24], "gemm"))
    # eight values per image: Reshape([-1, 24]) makes one row of three images, as the general kernels do
    _assert_matches_general(model, rng.standard_normal((3, 2, 2, 2)).astype(np.float32))
    with pytest.raises(ModelError):
        model.run({"x": rng.standard_normal((1, 4, 2, 2)).astype(np.float32)})


@pytest.mark.parametrize("perm", [(0, 3, 1, 2), (0, 1, 3, 2)])
def test_other_permutations_are_not_folded(tmp_path, perm):
    rng = np.random.default_rng(6)
    model = _load(tmp_path, _flatten_head(rng, [0, -1], "gemm", perm=perm))
    assert model.plan_ops[:2] == ["Transpose", "Reshape"]
    _assert_matches_general(model, rng.standard_normal((2, 4, 2, 3)).astype(np.float32))


def test_flatten_of_another_axis_is_not_folded(tmp_path):
    """Flatten(axis=2) of the (N, H, W, C) tensor is (N * H, W * C): not a row per image."""
    rng = np.random.default_rng(12)
    model = _load(tmp_path, _flatten_head(rng, None, "gemm", width=12, flatten_axis=2))
    assert model.plan_ops[:2] == ["Transpose", "Flatten"]
    _assert_matches_general(model, rng.standard_normal((2, 4, 2, 3)).astype(np.float32))


def test_transposed_value_read_elsewhere_is_not_folded(tmp_path):
    rng = np.random.default_rng(8)
    proto = _flatten_head(rng, [0, -1], "gemm")
    proto.graph.output.append(tensor_info("t", ["N", "H", "W", "C"]))
    model = _load(tmp_path, proto)
    assert not any(op.startswith(FOLDED) for op in model.plan_ops)


def test_folded_output_is_fresh(tmp_path):
    rng = np.random.default_rng(9)
    model = _load(tmp_path, _flatten_head(rng, [0, -1], "gemm_chain"))
    first = model.run({"x": rng.standard_normal((2, 4, 2, 3)).astype(np.float32)})["y"]
    kept = first.copy()
    model.run({"x": rng.standard_normal((2, 4, 2, 3)).astype(np.float32)})
    np.testing.assert_array_equal(first, kept)


@pytest.mark.parametrize(("path", "batch"), [(MODELS / "keras_nhwc_unsorted.onnx", 1),
                                             (MODELS / "grad" / "keras_nhwc_l12.onnx", 2)])
def test_keras_fixtures_fold_their_flatten_and_match_onnxruntime(path, batch):
    ort = pytest.importorskip("onnxruntime")
    model = nn_core.load(path)
    assert any(op.startswith(FOLDED) for op in model.plan_ops)
    assert "Reshape" not in model.plan_ops
    x = np.random.default_rng(1).random((batch, 28, 28, 1)).astype(np.float32)
    name = model.inputs[0].name
    got = list(model.run({name: x}).values())[0]
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    want = session.run(None, {name: x})[0]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def _conv(rng: np.random.Generator, channels: int, out_channels: int, kernel: int, strides: int, pads: int,
          bias: bool, relu: bool) -> object:
    """x (N, channels, H, W) -> Conv (-> Relu) -> y."""
    inits = {"w": (rng.standard_normal((out_channels, channels, kernel, kernel)) * 0.3).astype(np.float32)}
    inputs = ["x", "w"]
    if bias:
        inits["b"] = (rng.standard_normal(out_channels) * 0.1).astype(np.float32)
        inputs.append("b")
    nodes = [helper.make_node("Conv", inputs, ["c" if relu else "y"], name="conv", kernel_shape=[kernel, kernel],
                              strides=[strides, strides], pads=[pads] * 4)]
    if relu:
        nodes.append(helper.make_node("Relu", ["c"], ["y"], name="relu"))
    return make_model(nodes, [tensor_info("x", ["N", channels, "H", "W"])], [tensor_info("y", None)], inits)


@pytest.mark.parametrize(("channels", "out_channels", "kernel", "strides", "pads", "size"), [
    (1, 4, 5, 2, 0, 28),  # keras_nhwc_l12's first layer
    (4, 6, 3, 2, 0, 12),  # and its second
    (3, 5, 3, 1, 1, 9),   # unit strides: full-width columns
    (2, 3, 4, 3, 2, 11),  # odd sizes, padding, a stride past the kernel's half
])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("batch", [2, 3])
def test_small_conv_of_a_few_images_in_one_product(tmp_path, channels, out_channels, kernel, strides, pads, size,
                                                    bias, batch):
    """A small convolution of a few images multiplies their columns side by side (one product, an output seen
    through the product's layout): the general kernels' values, run after run, each output kept intact."""
    rng = np.random.default_rng(size + batch)
    model = _load(tmp_path, _conv(rng, channels, out_channels, kernel, strides, pads, bias, relu=True))
    plan = model._fast_plan()
    first_x, second_x = (rng.standard_normal((batch, channels, size, size)).astype(np.float32) for _ in range(2))
    first = plan.run(first_x)[0]  # (the plan's own output: Model.run hands back a contiguous copy of this one)
    assert not first.flags.c_contiguous  # (the product's (M, image, ...) storage)
    kept = first.copy()
    second = plan.run(second_x)[0]
    np.testing.assert_array_equal(first, kept)
    for x, got in ((first_x, first), (second_x, second)):
        want, _ = model.run_traced({"x": x})
        np.testing.assert_allclose(got, want["y"], rtol=1e-5, atol=1e-5)


def test_larger_conv_of_a_few_images_keeps_the_stacked_product(tmp_path):
    rng = np.random.default_rng(13)
    model = _load(tmp_path, _conv(rng, 8, 16, 3, 2, 0, bias=True, relu=False))
    x = rng.standard_normal((2, 8, 21, 21)).astype(np.float32)
    _assert_matches_general(model, x)
    assert model._fast_plan().run(x)[0].flags.c_contiguous


@pytest.mark.parametrize("head", ["gemm_chain", "matmul_chain"])
def test_the_folded_head_specializes_for_a_shape_and_keeps_its_values(tmp_path, head):
    """From a shape's second run the plan function calls the folded head's specialized runner (its permuted
    chain's buffers on the flatten); its values stay the general kernels', run after run and for new data."""
    rng = np.random.default_rng(5)
    model = _load(tmp_path, _flatten_head(rng, [0, -1], head))
    plan = model._fast_plan()
    shape = (2, 4, 2, 3)
    for _ in range(2):
        _assert_matches_general(model, rng.standard_normal(shape).astype(np.float32))
    head_step = len(plan.steps) - 1
    assert plan.steps[head_step].label.startswith(FOLDED)
    specialized = plan.by_shape[shape].__globals__[f"k{head_step}"]
    assert specialized != plan.steps[head_step].kernel.run
    for _ in range(3):
        x = rng.standard_normal(shape).astype(np.float32)
        np.testing.assert_allclose(specialized(x), model.run_traced({"x": x})[0]["y"], rtol=1e-5, atol=1e-6)
        _assert_matches_general(model, x)
    # an input of another shape given to the specialized runner goes to the folded kernel's run
    other = rng.standard_normal((1, 4, 3, 2)).astype(np.float32)
    np.testing.assert_allclose(specialized(other), model.run_traced({"x": other})[0]["y"], rtol=1e-5, atol=1e-6)
