"""The trainable layers, the loss, the optimizers and the augmentation: gradients against finite differences."""

from __future__ import annotations

import numpy as np
import pytest

from nn_core.augment import (
    AugmentConfig,
    add_handwriting_styles,
    affine_transform,
    augment_batch,
    centre_of_mass,
    dilate,
    draw_segments,
    erode,
)
from nn_core.layers import (
    AvgPool2d,
    BatchNorm2d,
    Conv2d,
    Dropout,
    Flatten,
    Layer,
    Linear,
    MaxPool2d,
    Parameter,
    ReLU,
    Sequential,
    Sigmoid,
    SoftmaxCrossEntropy,
    Tanh,
)
from nn_core.optim import SGD, Adam, CosineSchedule, StepSchedule


def numeric_gradient(f, array: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """Central differences of the scalar f() with respect to every element of ``array`` (changed in place)."""
    grad = np.zeros_like(array)
    for index in np.ndindex(array.shape):
        old = array[index]
        array[index] = old + eps
        up = f()
        array[index] = old - eps
        down = f()
        array[index] = old
        grad[index] = (up - down) / (2 * eps)
    return grad


def assert_gradients_match(layer: Layer, input_shape: tuple[int, ...], seed: int = 0) -> None:
    """Backward of a random projection of the output equals its finite-difference gradient (float64)."""
    rng = np.random.default_rng(seed)
    layer.astype(np.float64)
    x = rng.normal(size=input_shape)
    projection = rng.normal(size=layer.forward(x, training=True).shape)

    def objective() -> float:
        return float((layer.forward(x, training=True) * projection).sum())

    layer.zero_grad()
    layer.forward(x, training=True)
    grad_x = layer.backward(projection)
    np.testing.assert_allclose(grad_x, numeric_gradient(objective, x), rtol=1e-5, atol=1e-7)
    for p in layer.parameters():
        np.testing.assert_allclose(p.grad, numeric_gradient(objective, p.value), rtol=1e-5, atol=1e-7,
                                   err_msg=f"gradient of {p.name}")


@pytest.mark.parametrize(
    "make_layer, shape",
    [
        (lambda rng: Conv2d(2, 3, 3, rng=rng), (2, 2, 5, 6)),
        (lambda rng: Conv2d(3, 4, 3, stride=2, padding=1, rng=rng), (2, 3, 7, 6)),
        (lambda rng: Conv2d(2, 3, (3, 2), stride=(1, 2), padding=(0, 1), rng=rng), (2, 2, 6, 5)),
        (lambda rng: Conv2d(1, 2, 5, padding=2, bias=False, rng=rng), (2, 1, 6, 6)),
        (lambda rng: Linear(5, 4, rng=rng), (3, 5)),
        (lambda rng: ReLU(), (3, 5)),
        (lambda rng: Tanh(), (3, 5)),
        (lambda rng: Sigmoid(), (3, 5)),
        (lambda rng: MaxPool2d(2), (2, 3, 6, 6)),
        (lambda rng: MaxPool2d(2), (1, 2, 5, 7)),  # floor mode: the ragged border gets no gradient
        (lambda rng: MaxPool2d(3, 2), (2, 2, 7, 8)),  # overlapping windows
        (lambda rng: AvgPool2d(2), (2, 3, 6, 4)),
        (lambda rng: AvgPool2d(3, 2), (2, 2, 7, 7)),
        (lambda rng: Flatten(), (2, 3, 2, 2)),
        (lambda rng: BatchNorm2d(3), (4, 3, 3, 2)),
    ],
    ids=["conv", "conv-stride-pad", "conv-rect", "conv-nobias", "linear", "relu", "tanh", "sigmoid", "maxpool",
         "maxpool-ragged", "maxpool-overlap", "avgpool", "avgpool-overlap", "flatten", "batchnorm"],
)
def test_layer_gradients_match_finite_differences(make_layer, shape):
    assert_gradients_match(make_layer(np.random.default_rng(1)), shape)


def test_whole_network_gradient_reaches_the_input():
    rng = np.random.default_rng(3)
    model = Sequential(Conv2d(1, 3, 3, padding=1, rng=rng), BatchNorm2d(3), ReLU(), MaxPool2d(2),
                       Conv2d(3, 4, 3, rng=rng), Tanh(), Flatten(), Linear(16, 5, rng=rng), Sigmoid(),
                       Linear(5, 3, rng=rng))
    assert_gradients_match(model, (3, 1, 8, 8))


def test_conv2d_matches_direct_convolution():
    rng = np.random.default_rng(4)
    conv = Conv2d(2, 3, 3, stride=2, padding=1, rng=rng)
    conv.bias.value[:] = rng.normal(size=3)
    x = rng.normal(size=(2, 2, 7, 5)).astype(np.float32)
    padded = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    expected = np.zeros((2, 3, 4, 3), np.float32)
    for n, f, i, j in np.ndindex(expected.shape):
        window = padded[n, :, 2 * i : 2 * i + 3, 2 * j : 2 * j + 3]
        expected[n, f, i, j] = (window * conv.weight.value[f]).sum() + conv.bias.value[f]
    out = conv.forward(x, training=False)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


def test_first_layer_can_skip_its_input_gradient_but_still_learns():
    rng = np.random.default_rng(5)
    conv = Conv2d(1, 2, 3, rng=rng)
    conv.needs_input_grad = False
    conv.forward(rng.normal(size=(2, 1, 5, 5)).astype(np.float32), training=True)
    assert conv.backward(np.ones((2, 2, 3, 3), np.float32)) is None
    assert np.abs(conv.weight.grad).sum() > 0


def test_maxpool_gives_a_tied_window_gradient_to_its_first_maximum_only():
    x = np.array([[[[1.0, 3.0], [3.0, 0.0]]]], np.float32)
    pool = MaxPool2d(2)
    assert pool.forward(x, training=True)[0, 0, 0, 0] == 3.0
    grad = pool.backward(np.array([[[[2.0]]]], np.float32))
    np.testing.assert_array_equal(grad, [[[[0.0, 2.0], [0.0, 0.0]]]])


def test_batchnorm_running_statistics_drive_eval_mode():
    rng = np.random.default_rng(6)
    norm = BatchNorm2d(2, momentum=0.5)
    data = (rng.normal(size=(64, 2, 4, 4)) * np.array([2.0, 0.5]).reshape(1, 2, 1, 1) + 3).astype(np.float32)
    for _ in range(30):
        norm.forward(data, training=True)
    np.testing.assert_allclose(norm.running_mean, data.mean(axis=(0, 2, 3)), rtol=1e-3)
    np.testing.assert_allclose(norm.running_var, data.var(axis=(0, 2, 3), ddof=1), rtol=1e-3)
    normalised = norm.forward(data, training=False)
    np.testing.assert_allclose(normalised.mean(axis=(0, 2, 3)), 0, atol=1e-3)
    np.testing.assert_allclose(normalised.std(axis=(0, 2, 3)), 1, atol=1e-2)


def test_dropout_scales_kept_units_and_is_identity_in_eval_mode():
    dropout = Dropout(0.25, rng=np.random.default_rng(7))
    x = np.ones((200, 50), np.float32)
    out = dropout.forward(x, training=True)
    kept = out != 0
    np.testing.assert_allclose(out[kept], 1 / 0.75)
    assert 0.7 < kept.mean() < 0.8
    np.testing.assert_array_equal(dropout.backward(np.full_like(x, 2.0)), 2.0 * out)
    assert dropout.forward(x, training=False) is x


def test_sequential_train_and_eval_modes_switch_every_layer():
    model = Sequential(Linear(3, 3), Dropout(0.5), Sequential(ReLU(), Dropout(0.5)))
    model.eval()
    x = np.ones((4, 3), np.float32)
    np.testing.assert_array_equal(model.forward(x), model.forward(x))
    model.train()
    assert all(layer.training for layer in [model, model[1], model[2], model[2][1]])


def test_loss_gradient_matches_finite_differences():
    rng = np.random.default_rng(8)
    labels = np.array([0, 2, 1, 2])
    for smoothing in (0.0, 0.1):
        loss = SoftmaxCrossEntropy(label_smoothing=smoothing)
        logits = rng.normal(size=(4, 3))
        loss.forward(logits, labels)
        analytic = loss.backward()
        numeric = numeric_gradient(lambda: loss.forward(logits, labels), logits)  # noqa: B023
        np.testing.assert_allclose(analytic, numeric, rtol=1e-5, atol=1e-8)


def test_loss_is_stable_for_huge_logits():
    loss = SoftmaxCrossEntropy()
    logits = np.array([[1e4, 0.0, -1e4], [0.0, 5e3, 0.0]], np.float32)
    value = loss.forward(logits, np.array([0, 0]))
    assert np.isfinite(value)
    assert value == pytest.approx(5e3 / 2, rel=1e-6)  # first row costs ~0, second ~5000
    assert np.isfinite(loss.backward()).all()


def test_loss_matches_naive_cross_entropy_for_moderate_logits():
    rng = np.random.default_rng(9)
    logits = rng.normal(size=(5, 10))
    labels = rng.integers(0, 10, 5)
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    expected = -np.log(probs[np.arange(5), labels]).mean()
    assert SoftmaxCrossEntropy().forward(logits, labels) == pytest.approx(expected, rel=1e-10)


def _quadratic_parameter() -> Parameter:
    return Parameter(np.array([5.0, -3.0]), "w")


@pytest.mark.parametrize("make_optimizer", [
    lambda ps: SGD(ps, lr=0.1, momentum=0.9),
    lambda ps: SGD(ps, lr=0.1, momentum=0.9, nesterov=True),
    lambda ps: Adam(ps, lr=0.1),
], ids=["sgd-momentum", "sgd-nesterov", "adam"])
def test_optimizers_minimise_a_quadratic(make_optimizer):
    p = _quadratic_parameter()
    optimizer = make_optimizer([p])
    for _ in range(300):
        optimizer.zero_grad()
        p.grad += 2 * (p.value - np.array([1.0, 2.0]))  # gradient of |w - (1, 2)|^2
        optimizer.step()
    np.testing.assert_allclose(p.value, [1.0, 2.0], atol=1e-3)


def test_weight_decay_shrinks_decayed_parameters_only():
    decayed, exempt = Parameter(np.array([1.0]), "w"), Parameter(np.array([1.0]), "b", decay=False)
    for optimizer in (SGD([decayed, exempt], lr=0.1, momentum=0.0, weight_decay=0.5),
                      Adam([decayed, exempt], lr=0.01, weight_decay=0.5)):
        decayed.value[:], exempt.value[:] = 1.0, 1.0
        optimizer.zero_grad()
        optimizer.step()  # zero gradients: only the decay moves anything
        assert decayed.value[0] < 1.0
        assert exempt.value[0] == 1.0


def test_learning_rate_schedules():
    cosine = CosineSchedule(0.1, total_steps=110, warmup_steps=10, min_lr=0.001)
    assert cosine(0) == pytest.approx(0.01)
    assert cosine(9) == pytest.approx(0.1)
    assert cosine(60) == pytest.approx((0.1 + 0.001) / 2)
    assert cosine(110) == pytest.approx(0.001)
    rates = [cosine(s) for s in range(10, 111)]
    assert all(a >= b for a, b in zip(rates, rates[1:], strict=False))
    step = StepSchedule(1.0, step_size=5, gamma=0.5)
    assert [step(s) for s in (0, 4, 5, 10)] == [1.0, 1.0, 0.5, 0.25]


def _digit_like_batch() -> np.ndarray:
    images = np.zeros((4, 28, 28), np.float32)
    images[:, 6:22, 12:16] = 1.0  # a thick vertical bar, like a "1"
    return images


def test_affine_identity_and_shift():
    images = np.random.default_rng(10).random((3, 28, 28)).astype(np.float32)
    identity = np.tile(np.eye(2), (3, 1, 1))
    np.testing.assert_allclose(affine_transform(images, identity, np.zeros((3, 2))), images, atol=1e-6)
    shifted = affine_transform(images, identity, np.tile([2.0, -1.0], (3, 1)))  # right 2, up 1
    np.testing.assert_allclose(shifted[:, :-1, 2:], images[:, 1:, :-2], atol=1e-6)
    assert np.all(shifted[:, :, :2] == 0) and np.all(shifted[:, -1, :] == 0)


def test_affine_rotation_by_90_degrees_turns_a_bar():
    bar = _digit_like_batch()[:1]
    rotation = np.array([[[0.0, -1.0], [1.0, 0.0]]])
    turned = affine_transform(bar, rotation, np.zeros((1, 2)))
    np.testing.assert_allclose(turned[0], np.rot90(bar[0]), atol=1e-5)


def test_dilation_and_erosion_change_stroke_thickness():
    images = _digit_like_batch()
    assert dilate(images).sum() > images.sum() > erode(images).sum() > 0
    assert np.all(dilate(images) >= images) and np.all(erode(images) <= images)


def test_augmented_batch_keeps_shape_range_and_the_digit_near_the_centre():
    images = _digit_like_batch()[:, None]
    out = augment_batch(images, AugmentConfig(), np.random.default_rng(11))
    assert out.shape == images.shape and out.dtype == np.float32
    assert out.min() >= 0 and out.max() <= 1 + 1e-6
    assert not np.allclose(out, images)
    ys, xs = np.mgrid[0:28, 0:28]
    for image in out[:, 0]:
        mass = image.sum()
        assert mass > 0.4 * images[0].sum()
        centre = np.array([(image * ys).sum(), (image * xs).sum()]) / mass
        assert np.abs(centre - 13.5).max() < 6


def test_drawn_segment_is_an_anti_aliased_pen_line():
    line = draw_segments(np.zeros((1, 28, 28), np.float32), np.array([[5.0, 10.0]]), np.array([[20.0, 10.0]]),
                         np.array([2.0]))[0]
    assert line.dtype == np.float32
    np.testing.assert_allclose(line[8:13, 12], [0.0, 0.5, 1.0, 0.5, 0.0])  # width 2: soft one-pixel edges
    assert line[10, 5] == 1.0 and line[10, 20] == 1.0 and line[10, 3] == 0.0  # rounded ends
    assert not line[:8].any() and not line[13:].any()


def _labelled_digits() -> tuple[np.ndarray, np.ndarray]:
    """Thin upright "1"s (rows 4-23, columns 13-14), "7"s (top bar and a slanted stem), and a few other digits."""
    images = np.zeros((12, 28, 28), np.float32)
    images[0:4, 4:24, 13:15] = 1.0
    for k in range(4, 8):
        images[k, 4:6, 8:21] = 1.0
        for row in range(6, 24):
            column = 20 - (row - 6) // 2
            images[k, row, column - 1 : column + 1] = 1.0
    images[8:] = np.random.default_rng(15).random((4, 28, 28)) * (np.random.default_rng(16).random((4, 28, 28)) > 0.8)
    labels = np.array([1, 1, 1, 1, 7, 7, 7, 7, 0, 3, 4, 8])
    return images, labels


STYLES_ALWAYS = AugmentConfig(flag_probability=1.0, serif_probability=0.0, crossbar_probability=1.0)


def test_flag_adds_ink_only_at_the_upper_left_of_ones_and_leaves_other_digits_alone():
    images, labels = _labelled_digits()
    kept_images, kept_labels = images.copy(), labels.copy()
    styled, changed = add_handwriting_styles(images, labels, STYLES_ALWAYS, np.random.default_rng(17))
    np.testing.assert_array_equal(labels, kept_labels)
    np.testing.assert_array_equal(images, kept_images)  # the input batch is not written to
    np.testing.assert_array_equal(changed, (labels == 1) | (labels == 7))
    np.testing.assert_array_equal(styled[8:], images[8:])
    for one in range(4):
        added = styled[one] - images[one]
        assert added.min() >= 0 and added.sum() > 5  # a visible stroke, nothing erased
        rows, cols = np.nonzero(added > 0)
        # Ink 20 px tall: the flag is ~30 % of that, from the top (row 4) down to the left of the stem (col 13).
        assert rows.min() >= 3 and rows.max() <= 4 + 0.5 * 20
        assert cols.max() <= 15 and cols.min() < 11


def test_crossbar_crosses_the_stem_of_sevens_near_mid_height():
    images, labels = _labelled_digits()
    styled, _ = add_handwriting_styles(images, labels, STYLES_ALWAYS, np.random.default_rng(18))
    for seven in range(4, 8):
        added = styled[seven] - images[seven]
        rows, cols = np.nonzero(added > 0.5)
        assert 10 <= rows.min() and rows.max() <= 19  # ink spans rows 4-23: mid-height, not the top bar
        stem = 20 - (int(np.median(rows)) - 6) // 2
        assert cols.min() < stem - 2 and cols.max() > stem + 2  # sticks out on both sides


def test_serif_adds_a_foot_on_both_sides_of_the_base():
    images, labels = _labelled_digits()
    config = AugmentConfig(flag_probability=1.0, serif_probability=1.0, crossbar_probability=0.0)
    styled, _ = add_handwriting_styles(images[:4], labels[:4], config, np.random.default_rng(19))
    added = styled - images[:4]
    foot = added[:, 21:26]
    assert foot[:, :, :12].sum(axis=(1, 2)).min() > 1 and foot[:, :, 16:].sum(axis=(1, 2)).min() > 1
    assert not added[:, 12:20].any()  # nothing between the flag and the foot


def test_styles_hit_about_the_configured_share_of_the_class():
    images = np.zeros((1000, 28, 28), np.float32)
    images[:, 4:24, 13:15] = 1.0
    _, changed = add_handwriting_styles(images, np.ones(1000, int), AugmentConfig(), np.random.default_rng(20))
    assert abs(changed.mean() - AugmentConfig().flag_probability) < 0.06


def test_augmenting_with_labels_keeps_flagged_ones_centred_by_mass():
    images, labels = _labelled_digits()
    still = AugmentConfig(rotation_degrees=0.0, scale_range=(1.0, 1.0), shear=0.0, translation_pixels=0.0,
                          dilate_probability=0.0, erode_probability=0.0, flag_probability=1.0,
                          crossbar_probability=1.0)
    out = augment_batch(images[:, None], still, np.random.default_rng(21), labels)[:, 0]
    assert out.shape == images.shape
    np.testing.assert_array_equal(out[8:], images[8:])
    assert (out[:4].sum(axis=(1, 2)) > images[:4].sum(axis=(1, 2)) + 5).all()  # the flag is there
    # Recentred: the app centres drawings by centre of mass, so the training digits must stay centred too.
    np.testing.assert_allclose(centre_of_mass(out[:8]), centre_of_mass(images[:8]), atol=0.1)
