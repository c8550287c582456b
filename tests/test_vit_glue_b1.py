"""The small helpers the ViT's fused steps run on every call (issue 10, batch-1 speed): each must give what the
plain NumPy expression gives, bit for bit, whatever the batch."""

from __future__ import annotations

import numpy as np
import pytest

from nn_core.transformer_fusion import _TILED_BIAS_ELEMENTS, _bias_adder


@pytest.mark.parametrize("rows", [0, 1, 2, 32, 33, _TILED_BIAS_ELEMENTS // 72 + 1])
def test_bias_adder_equals_the_broadcast_addition_for_any_row_count(rows):
    """Small products take the bias repeated over their rows, large ones (past _TILED_BIAS_ELEMENTS) the
    broadcast row; row counts change from call to call (the batch), each keeping its own repeated bias."""
    rng = np.random.default_rng(rows)
    bias = rng.standard_normal(72).astype(np.float32)
    add = _bias_adder(bias)
    for count in (rows, 3, rows):  # (a row count met again reads its kept copy)
        y = rng.standard_normal((count, 72)).astype(np.float32)
        expected = y + bias
        add(y)
        np.testing.assert_array_equal(y, expected)


def test_bias_adder_keeps_nan_and_infinities_where_the_addition_does():
    bias = np.array([1.0, -np.inf, np.nan, 0.0], np.float32)
    y = np.array([[np.inf, 1.0, 2.0, np.nan], [0.0, np.inf, -1.0, 3.0]], np.float32)
    with np.errstate(invalid="ignore"):  # (inf - inf)
        expected = y + bias
        _bias_adder(bias)(y)
    np.testing.assert_array_equal(y, expected)


@pytest.mark.parametrize("constant_first", [True, False])
def test_residual_sum_with_a_constant_equals_the_addition_at_every_batch(constant_first):
    """A ViT's patch tokens plus their positions: the positions broadcast over the batch while small (batch 1,
    2), the constant itself past _TILED_BIAS_ELEMENTS; a shape the addition would grow or that has another
    width goes to the chain (None)."""
    from nn_core.transformer_fusion import _residual_sum

    rng = np.random.default_rng(7)
    positions = rng.standard_normal((1, 16, 24)).astype(np.float32)
    total = _residual_sum([None, "x"] if constant_first else ["x", None], positions, 24)
    big = _TILED_BIAS_ELEMENTS // (16 * 24) + 1
    for batch in (1, 2, big, 2):
        x = rng.standard_normal((batch, 16, 24)).astype(np.float32)
        np.testing.assert_array_equal(total(x), positions + x if constant_first else x + positions)
    assert total(rng.standard_normal((2, 16, 23)).astype(np.float32)) is None  # another width
    assert total(rng.standard_normal((16, 24)).astype(np.float32)) is None  # the addition would grow it
    assert total(rng.standard_normal((2, 16, 24))) is None  # float64: the chain's


@pytest.mark.parametrize("tokens", [1, 16, 32, 33, 40])
@pytest.mark.parametrize("merge", [0, 1, 2])
def test_bounded_attention_sums_by_a_square_or_a_column_of_ones(tokens, merge):
    """Short score rows (up to _SQUARE_SUMS_TOKENS) take their sums from a square of ones, longer ones from a
    column: both are the softmax within float32 rounding, and a NaN row stays NaN."""
    from nn_core.ops.transformer import _SQUARE_SUMS_TOKENS, PackedQkvAttention

    batch, heads, depth = 2, 3, 5
    rng = np.random.default_rng(tokens)
    qkv = (rng.standard_normal((batch, tokens, 3 * heads * depth)) * 0.5).astype(np.float32)
    attention = PackedQkvAttention((batch, tokens, 3, heads, depth), [2, 0, 1], None, merge, bounded=True)
    assert attention.ones.shape == ((tokens, tokens) if tokens <= _SQUARE_SUMS_TOKENS else (tokens, 1))
    parts = qkv.astype(np.float64).reshape(batch, tokens, 3, heads, depth).transpose(2, 0, 3, 1, 4)
    scores = parts[2] @ parts[0].swapaxes(2, 3)
    weights = np.exp(scores - scores.max(-1, keepdims=True))
    expected = (weights / weights.sum(-1, keepdims=True)) @ parts[1]  # (B, H, S, D)
    if merge:
        expected = expected.transpose(0, 2, 1, 3)
    if merge == 2:
        expected = expected.reshape(batch, tokens, heads * depth)
    np.testing.assert_allclose(attention(qkv), expected, rtol=2e-5, atol=1e-6)
    qkv[1, 0, :] = np.nan  # a token's query, key and value: every score row of the second image meets it
    out = attention(qkv)
    assert np.isnan(out[1]).all() and np.isfinite(out[0]).all()
