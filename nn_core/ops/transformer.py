"""The transformer family: Attention (opsets 23-25: masks, causal, KV cache, grouped heads, softcap, sliding
windows), RMSNormalization and RotaryEmbedding; Swish and SwiGLU.

Attention scores are one batched matrix product per call (no per-head loop); the mask, the causal frontier and
the window are folded into one additive bias of shape (..., q, kv) broadcast against the scores.
"""

from __future__ import annotations

import numpy as np
from onnx import helper

from .activations import ones_column, softmax_last_axis_
from .registry import NodeSpec, Op, register
from .shape import finite_attr, int_attr, resolve_axis


def _compute_dtype(x: np.ndarray):
    return np.float64 if x.dtype == np.float64 else np.float32


# the longest score rows whose sums PackedQkvAttention takes as a square of ones (see there)
_SQUARE_SUMS_TOKENS = 32


class PackedQkvAttention:
    """Attention heads from one packed projection ``qkv`` of shape ``target`` = (B, S, P, H, D), as a transformer
    exports it: q, k and v are its slices ``picks`` along P (each (B, H, S, D) after the heads' transpose), the
    scores ``q @ k^T`` divided by (``scale`` = (True, c)) or multiplied by ((False, c)) c, then a softmax over
    the keys and the product with v. ``merge`` 0 returns the heads' outputs (B, H, S, D); 1 transposed to
    (B, S, H, D); 2 reshaped to (B, S, H * D).

    The slices and transposes are views (BLAS reads the strided rows), the scaling and softmax are in place on
    the fresh scores, and merged outputs are written by the second product straight into the (B, S, H, D)
    layout: a dozen graph nodes in about ten NumPy calls. Everything the shapes decide is prepared here, once:
    at batch 1 the Python around the calls costs as much as a few of them. ``bounded``: the caller has proven
    every score within [-UNSHIFTED_BOUND, UNSHIFTED_BOUND] (or NaN), so the softmax needs no test of them."""

    def __init__(self, target: tuple[int, ...], picks: list[int], scale: tuple[bool, float] | None, merge: int,
                 bounded: bool = False):
        self.target = target
        self.picks = picks
        batch, tokens, _, heads, depth = target
        self.scale = None if scale is None else (np.divide if scale[0] else np.multiply, np.float32(scale[1]))
        self.merge = merge
        self.bounded = bounded
        # the scores as rows, and the ones whose product with them is their sums, prepared once (at ~1 us a NumPy
        # call, the look-ups around a call count): for short rows a square of ones, which gives each row's sum
        # repeated along it, so the division is same-shape (about three times as fast as by a column, which NumPy
        # broadcasts row by row) for S more multiply-adds a score; else a column
        self.score_rows = (batch * heads * tokens, tokens)
        self.ones = np.ones((tokens, tokens), np.float32) if tokens <= _SQUARE_SUMS_TOKENS \
            else ones_column(tokens, np.dtype(np.float32))
        self.merged_shape = (batch, tokens, heads, depth)
        self.joined_shape = (batch, tokens, heads * depth)

    def __call__(self, qkv: np.ndarray) -> np.ndarray:
        """The heads' outputs for a float32 ``qkv`` of ``target``'s size."""
        parts = qkv.reshape(self.target).transpose(2, 0, 3, 1, 4)  # (P, B, H, S, D)
        q_pick, k_pick, v_pick = self.picks
        scores = np.matmul(parts[q_pick], parts[k_pick].swapaxes(2, 3))
        if self.scale is not None:
            operation, number = self.scale
            operation(scores, number, out=scores)
        if self.bounded:
            _unshifted_softmax_(scores.reshape(self.score_rows), self.ones)
        else:
            scores = _attention_softmax_(scores)
        if not self.merge:
            return np.matmul(scores, parts[v_pick])
        out = np.empty(self.merged_shape, np.float32)
        np.matmul(scores, parts[v_pick], out=out.transpose(0, 2, 1, 3))
        return out if self.merge == 1 else out.reshape(self.joined_shape)


# Softmax needs no shift by the row maximum while every score lies in [-UNSHIFTED_BOUND, UNSHIFTED_BOUND]: then
# exp neither overflows (e^64 ~ 6e27, so a row of up to 5e10 of them sums below float32's 3.4e38) nor underflows
# (e^-64 ~ 1.6e-28 is a normal float32). The sum of squares bounds every score (max |s| <= sqrt(sum s^2)); it is
# one BLAS dot product (~0.4 us on a small ViT's scores) where the exact test, a maximum and a minimum over all
# scores, is two reductions (~1 us each). Its float32 rounding (relative n * 2^-24) is far inside the margin left
# below 64^2; NaN and infinities fail the comparison.
UNSHIFTED_BOUND = 64.0
_SQUARES_BOUND = 0.9 * UNSHIFTED_BOUND ** 2


def _attention_softmax_(scores: np.ndarray) -> np.ndarray:
    """Softmax over the last axis of fresh, C-contiguous float32 attention ``scores``, in place: when the sum of
    their squares shows every score is small, exp and the row sums (one product by a column of ones) without the
    shift; otherwise ``softmax_last_axis_``, which decides from the scores' exact range."""
    flat = scores.reshape(-1)
    if flat.dot(flat) <= _SQUARES_BOUND:
        _unshifted_softmax_(scores.reshape(-1, scores.shape[-1]), ones_column(scores.shape[-1], scores.dtype))
        return scores
    return softmax_last_axis_(scores)


def _unshifted_softmax_(rows: np.ndarray, ones: np.ndarray) -> None:
    """Softmax of each row of fresh, C-contiguous 2-D float32 ``rows`` known to lie within
    [-UNSHIFTED_BOUND, UNSHIFTED_BOUND] (or NaN, which stays NaN), in place: exp, and the row sums as one product
    by ``ones``, a column of ones as long as a row (or a square of them: the sums repeated along the rows)."""
    np.exp(rows, out=rows)
    rows /= rows.dot(ones)


@register("RMSNormalization", 23)
class RMSNormalization(Op):
    def __init__(self, node: NodeSpec):
        super().__init__(node)
        self.axis = int_attr(self, "axis", -1)
        self.epsilon = finite_attr(self, "epsilon", 1e-5)
        if self.epsilon < 0:
            raise self.fail(f"epsilon must not be negative, got {self.epsilon}")

    def run(self, x, scale):
        axis = resolve_axis(self, self.axis, x.ndim)
        acc = x.astype(_compute_dtype(x), copy=False)
        mean_square = np.mean(acc * acc, axis=tuple(range(axis, x.ndim)), keepdims=True)
        y = acc / np.sqrt(mean_square + self.epsilon) * scale
        return y.astype(x.dtype, copy=False)


@register("RotaryEmbedding", 23)
class RotaryEmbedding(Op):
    def __init__(self, node: NodeSpec):
        super().__init__(node)
        self.interleaved = bool(int_attr(self, "interleaved", 0))
        self.rotary_dim = int_attr(self, "rotary_embedding_dim", 0)
        self.num_heads = int_attr(self, "num_heads", 0)
        if self.rotary_dim < 0 or self.num_heads < 0:
            raise self.fail("rotary_embedding_dim and num_heads must not be negative")

    def run(self, x, cos, sin, position_ids=None):
        shape = x.shape
        if x.ndim == 4:  # (batch, heads, seq, head) -> (batch, seq, heads, head)
            data = np.transpose(x, (0, 2, 1, 3))
        elif x.ndim == 3:
            if not self.num_heads or shape[2] % self.num_heads:
                raise self.fail(f"a 3-D input {list(shape)} needs num_heads dividing its hidden size")
            data = x.reshape(shape[0], shape[1], self.num_heads, shape[2] // self.num_heads)
        else:
            raise self.fail(f"input must be 3-D or 4-D, got shape {list(shape)}")
        head = data.shape[3]
        dim = self.rotary_dim or head
        if dim > head or dim % 2:
            raise self.fail(f"rotary_embedding_dim {dim} must be even and at most the head size {head}")
        if position_ids is not None:
            ids = np.asarray(position_ids).astype(np.int64)
            if ids.size and (ids.min() < 0 or ids.max() >= cos.shape[0] or ids.max() >= sin.shape[0]):
                raise self.fail(f"position_ids reach past the {cos.shape[0]} positions of the caches")
            cos, sin = cos[ids], sin[ids]
        half = dim // 2
        if cos.shape[-1] != half or sin.shape[-1] != half:
            raise self.fail(f"the caches' last dimension ({cos.shape[-1]}, {sin.shape[-1]}) must be "
                            f"rotary_embedding_dim/2 = {half}")
        cos, sin = cos[:, :, None, :], sin[:, :, None, :]
        rotate = data[..., :dim]
        if self.interleaved:
            x1, x2 = rotate[..., 0::2], rotate[..., 1::2]
        else:
            x1, x2 = rotate[..., :half], rotate[..., half:]
        real = cos * x1 - sin * x2
        imag = sin * x1 + cos * x2
        out = np.array(data, copy=True)
        if self.interleaved:
            out[..., 0:dim:2], out[..., 1:dim:2] = real, imag
        else:
            out[..., :half], out[..., half:dim] = real, imag
        if x.ndim == 3:
            return out.reshape(shape)
        return np.ascontiguousarray(np.transpose(out, (0, 2, 1, 3)))


def _softcap(x, cap):
    return np.tanh(x / cap) * cap if cap > 0 else x


@register("Attention", 23)
class Attention(Op):
    def __init__(self, node: NodeSpec):
        super().__init__(node)
        self.is_causal = bool(int_attr(self, "is_causal", 0))
        self.q_heads = int_attr(self, "q_num_heads", None)
        self.kv_heads = int_attr(self, "kv_num_heads", None)
        scale = self.attr("scale")
        self.scale = None if scale is None else finite_attr(self, "scale", 1.0)
        self.softcap = finite_attr(self, "softcap", 0.0)
        self.mode = int_attr(self, "qk_matmul_output_mode", 0)
        if self.mode not in (0, 1, 2, 3):
            raise self.fail(f"qk_matmul_output_mode must be 0..3, got {self.mode}")
        precision = self.attr("softmax_precision")
        self.softmax_dtype = None
        if precision is not None:
            try:
                self.softmax_dtype = np.dtype(helper.tensor_dtype_to_np_dtype(int(precision)))
            except (KeyError, TypeError, ValueError):
                raise self.fail(f"softmax_precision {precision} is not a known type") from None
        self.left = int_attr(self, "left_window_size", -1) if node.opset >= 25 else -1
        self.right = int_attr(self, "right_window_size", -1) if node.opset >= 25 else -1
        if self.left < -1 or self.right < -1:
            raise self.fail("window sizes must be -1 or non-negative")
        for heads in (self.q_heads, self.kv_heads):
            if heads is not None and heads <= 0:
                raise self.fail(f"head counts must be positive, got {heads}")

    def _split_heads(self, x, heads, what):
        if heads is None or x.shape[2] % heads:
            raise self.fail(f"3-D {what} {list(x.shape)} needs q_num_heads/kv_num_heads dividing its hidden size")
        return x.reshape(x.shape[0], x.shape[1], heads, x.shape[2] // heads).transpose(0, 2, 1, 3)

    def run(self, q, k, v, attn_mask=None, past_key=None, past_value=None, nonpad_kv_seqlen=None):
        if not q.ndim == k.ndim == v.ndim or q.ndim not in (3, 4):
            raise self.fail(f"Q, K, V must all be 3-D or all 4-D, got {q.ndim}, {k.ndim}, {v.ndim}")
        three_d = q.ndim == 3
        if three_d:
            q = self._split_heads(q, self.q_heads, "Q")
            k = self._split_heads(k, self.kv_heads, "K")
            v = self._split_heads(v, self.kv_heads, "V")
        if (past_key is None) != (past_value is None):
            raise self.fail("past_key and past_value must be given together")
        if past_key is not None:
            k = np.concatenate((past_key, k), axis=2)
            v = np.concatenate((past_value, v), axis=2)
        present_key, present_value = k, v
        batch, heads, q_len, head_size = q.shape
        kv_len = k.shape[2]
        if k.shape[0] != batch or v.shape[0] != batch or k.shape[3] != head_size or v.shape[2] != kv_len:
            raise self.fail(f"Q {list(q.shape)}, K {list(k.shape)}, V {list(v.shape)} do not fit together")
        kv_heads = k.shape[1]
        if heads != kv_heads:
            if heads % kv_heads or v.shape[1] != kv_heads:
                raise self.fail(f"{heads} query heads cannot share {kv_heads} key/value heads")
            k = np.repeat(k, heads // kv_heads, axis=1)
            v = np.repeat(v, heads // kv_heads, axis=1)
        self.check_size((batch, heads, q_len, kv_len), np.float32, "attention scores")
        self.check_work(float(batch) * heads * q_len * kv_len * (head_size + v.shape[3]))
        dtype = q.dtype
        scale = self.scale if self.scale is not None else 1.0 / np.sqrt(head_size)
        if dtype.itemsize == 2:  # half types: each step rounds to the type, as the ONNX function body does
            acc = dtype.type
            root = dtype.type(np.sqrt(scale))
            # (NumPy's matmul of bfloat16 gives float32: rounded back, as the reference and the function body do)
            scores = np.matmul(q * root, np.swapaxes(k, -1, -2) * root).astype(dtype, copy=False)
        else:
            acc = _compute_dtype(q)
            scores = np.matmul(q.astype(acc) * acc(scale), np.swapaxes(k.astype(acc), -1, -2))
        scores = _softcap(scores, self.softcap)
        bias = self._bias(attn_mask, batch, q_len, kv_len, past_key, nonpad_kv_seqlen, acc)
        with np.errstate(invalid="ignore"):
            biased = scores + bias if bias is not None else scores
        logits = biased.astype(self.softmax_dtype) if self.softmax_dtype is not None else biased
        peak = np.max(logits, axis=-1, keepdims=True)
        peak = np.where(np.isneginf(peak), 0, peak)
        with np.errstate(invalid="ignore", over="ignore"):
            weights = np.exp(logits - peak)
            total = np.sum(weights, axis=-1, keepdims=True)
            weights = weights / np.where(total == 0, 1, total)
        if bias is not None:
            dead = np.isneginf(np.max(bias, axis=-1, keepdims=True))
            if dead.any():
                weights = np.where(dead, 0, weights)
        weights = weights.astype(acc, copy=False)
        y = np.matmul(weights.astype(dtype).astype(acc), v.astype(acc)).astype(dtype)
        if three_d:
            y = y.transpose(0, 2, 1, 3).reshape(batch, q_len, -1)
        outputs = [y, present_key, present_value]
        if len(self.node.outputs) > 3:
            qk = {2: biased, 3: weights}.get(self.mode, scores)
            outputs.append(np.broadcast_to(qk, (batch, heads, q_len, kv_len)).astype(dtype))
        outputs = outputs[: len(self.node.outputs)]
        return outputs[0] if len(outputs) == 1 else tuple(outputs)

    def _bias(self, mask, batch, q_len, kv_len, past_key, nonpad, acc):
        """The additive bias (0 where a key may be attended, -inf where not), or None when nothing masks."""
        bias = None
        if mask is not None:
            mask = np.asarray(mask)
            pad = kv_len - mask.shape[-1]
            if pad < 0:
                raise self.fail(f"attn_mask {list(mask.shape)} is longer than the {kv_len} keys")
            if mask.dtype == np.bool_:
                bias = np.where(mask, acc(0), acc(-np.inf))
            else:
                bias = mask.astype(acc)
            if pad:
                bias = np.pad(bias, [(0, 0)] * (bias.ndim - 1) + [(0, pad)], constant_values=-np.inf)
        offset = None
        if nonpad is not None:
            if past_key is not None:
                raise self.fail("nonpad_kv_seqlen cannot be combined with past_key/past_value")
            nonpad = np.asarray(nonpad).astype(np.int64).reshape(-1)
            if nonpad.shape != (batch,):
                raise self.fail(f"nonpad_kv_seqlen must give one length per batch entry ({batch})")
            offset = (nonpad - q_len).reshape(-1, 1, 1, 1)
        elif past_key is not None:
            offset = past_key.shape[2]
        else:
            offset = 0
        rows = np.arange(q_len).reshape(-1, 1)
        cols = np.arange(kv_len).reshape(1, -1)
        frontier = rows + offset  # (q, 1) or (batch, 1, q, 1)
        allowed = None
        if self.is_causal:
            allowed = cols <= frontier
        if self.left >= 0 or self.right >= 0:
            window = np.ones(np.broadcast_shapes(np.shape(frontier), cols.shape), bool)
            if self.left >= 0:
                window &= frontier - cols <= self.left
            if self.right >= 0:
                window &= cols - frontier <= self.right
            allowed = window if allowed is None else allowed & window
        if nonpad is not None:
            padding = (cols < nonpad.reshape(-1, 1, 1, 1))
            allowed = padding if allowed is None else allowed & padding
        if allowed is not None:
            extra = np.where(allowed, acc(0), acc(-np.inf))
            bias = extra if bias is None else bias + extra
        return bias


@register("Swish", 24)
class Swish(Op):
    def __init__(self, node: NodeSpec):
        super().__init__(node)
        self.alpha = finite_attr(self, "alpha", 1.0)

    def run(self, x):
        acc = x.astype(_compute_dtype(x), copy=False)
        return (acc * (0.5 * (np.tanh(0.5 * self.alpha * acc) + 1))).astype(x.dtype, copy=False)


@register("SwiGLU", 28)
class SwiGLU(Op):
    """swish(a, alpha) * b for two inputs of one shape."""

    def __init__(self, node: NodeSpec):
        super().__init__(node)
        self.alpha = finite_attr(self, "alpha", 1.0)

    def run(self, a, b):
        if a.shape != b.shape:
            raise self.fail(f"A {list(a.shape)} and B {list(b.shape)} must have the same shape")
        acc = a.astype(_compute_dtype(a), copy=False)
        gate = acc * (0.5 * (np.tanh(0.5 * self.alpha * acc) + 1))
        return (gate * b).astype(a.dtype, copy=False)


@register("CausalConvWithState", 27)
class CausalConvWithState(Op):
    """Depthwise causal 1-D convolution that carries its last k-1 inputs between calls (streaming decoders)."""

    def __init__(self, node: NodeSpec):
        super().__init__(node)
        self.activation = self.attr("activation", "none")
        if self.activation not in ("none", "silu", "swish"):
            raise self.fail(f"activation must be none, silu or swish, got '{self.activation}'")

    def run(self, x, weight, bias=None, past_state=None):
        if x.ndim != 3 or weight.ndim != 3 or weight.shape[0] != x.shape[1] or weight.shape[1] != 1:
            raise self.fail(f"input {list(x.shape)} must be (N, C, L) and weight {list(weight.shape)} (C, 1, k)")
        batch, channels, length = x.shape
        k = weight.shape[2]
        if k < 1:
            raise self.fail("the kernel must have at least one tap")
        if past_state is None:
            past_state = np.zeros((batch, channels, k - 1), x.dtype)
        elif past_state.shape != (batch, channels, k - 1):
            raise self.fail(f"past_state {list(past_state.shape)} must be {[batch, channels, k - 1]}")
        padded = np.concatenate([past_state.astype(x.dtype), x], axis=2)
        acc = _compute_dtype(x)
        w = weight[:, 0, :].astype(acc)
        out = np.zeros((batch, channels, length), acc)
        for j in range(k):
            out += padded[:, :, j:j + length].astype(acc) * w[None, :, j:j + 1]
        if bias is not None:
            out += bias.astype(acc).reshape(1, -1, 1)
        out = out.astype(x.dtype).astype(acc)
        if self.activation != "none":
            out = out * (0.5 * (np.tanh(0.5 * out) + 1))
        return out.astype(x.dtype), np.ascontiguousarray(padded[:, :, padded.shape[2] - (k - 1):])


@register("LinearAttention", 27)
class LinearAttention(Op):
    """Recurrent linear attention: a (d_k x d_v) state per head updated each step (linear, gated, delta or
    gated-delta rule) and read by the query."""

    def __init__(self, node: NodeSpec):
        super().__init__(node)
        self.rule = self.attr("update_rule", "gated_delta")
        if self.rule not in ("linear", "gated", "delta", "gated_delta"):
            raise self.fail(f"update_rule must be linear, gated, delta or gated_delta, got '{self.rule}'")
        self.q_heads = int_attr(self, "q_num_heads", None)
        self.kv_heads = int_attr(self, "kv_num_heads", None)
        if not self.q_heads or not self.kv_heads or self.q_heads <= 0 or self.kv_heads <= 0 \
                or self.q_heads % self.kv_heads:
            raise self.fail(f"q_num_heads {self.q_heads} must be a positive multiple of kv_num_heads "
                            f"{self.kv_heads}")
        self.scale = finite_attr(self, "scale", 0.0)
        self.gating = self.rule in ("gated", "gated_delta")
        self.delta = self.rule in ("delta", "gated_delta")

    def _heads(self, x, heads, what):
        if x.ndim != 3 or x.shape[2] % heads:
            raise self.fail(f"{what} {list(x.shape)} must be (B, T, heads*size) with {heads} heads")
        b, t, hd = x.shape
        return x.reshape(b, t, heads, hd // heads).transpose(0, 2, 1, 3).astype(np.float32)

    def run(self, query, key, value, past_state=None, decay=None, beta=None):
        if self.gating != (decay is not None) or self.delta != (beta is not None):
            raise self.fail(f"update_rule '{self.rule}' needs decay {'given' if self.gating else 'omitted'} and "
                            f"beta {'given' if self.delta else 'omitted'}")
        q = self._heads(query, self.q_heads, "query")
        k = self._heads(key, self.kv_heads, "key")
        v = self._heads(value, self.kv_heads, "value")
        b, _, t, d_k = q.shape
        d_v = v.shape[3]
        hk = self.kv_heads
        if k.shape[:3] != (b, hk, t) or k.shape[3] != d_k or v.shape[:3] != (b, hk, t):
            raise self.fail("query, key and value do not fit together")
        self.check_work(float(b) * self.q_heads * t * d_k * d_v * 3)
        if decay is not None:
            if decay.ndim != 3 or decay.shape[2] not in (hk, hk * d_k):
                raise self.fail(f"decay {list(decay.shape)} must end in kv_num_heads or kv_num_heads*d_k")
            g = decay.reshape(b, t, hk, -1).transpose(0, 2, 1, 3).astype(np.float32)
        if beta is not None:
            if beta.ndim != 3 or beta.shape[2] not in (hk, 1):
                raise self.fail(f"beta {list(beta.shape)} must end in kv_num_heads or 1")
            bt = beta.reshape(b, t, beta.shape[2], 1).transpose(0, 2, 1, 3).astype(np.float32)
        if past_state is not None:
            if past_state.shape != (b, hk, d_k, d_v):
                raise self.fail(f"past_state {list(past_state.shape)} must be {[b, hk, d_k, d_v]}")
            state_dtype = past_state.dtype
            state = past_state.astype(np.float32)
        else:
            state_dtype = query.dtype
            state = np.zeros((b, hk, d_k, d_v), np.float32)
        scale = self.scale if self.scale else 1.0 / np.sqrt(d_k)
        group = self.q_heads // hk
        out = np.zeros((b, self.q_heads, t, d_v), np.float32)
        for i in range(t):
            k_t, v_t = k[:, :, i], v[:, :, i]
            if self.gating:
                state = state * np.exp(g[:, :, i])[..., None]
            if self.delta:
                v_t = bt[:, :, i] * (v_t - np.einsum("bhdm,bhd->bhm", state, k_t))
            state = state + k_t[..., :, None] * v_t[..., None, :]
            read = state if group == 1 else np.repeat(state, group, axis=1)
            out[:, :, i] = scale * np.einsum("bhd,bhdm->bhm", q[:, :, i], read)
        y = out.transpose(0, 2, 1, 3).reshape(b, t, self.q_heads * d_v).astype(query.dtype)
        return y, state.astype(state_dtype)


@register("FlexAttention", 1, domain="ai.onnx.preview")
class FlexAttention(Op):
    """Scaled dot-product attention on [B, H, S, D] inputs with optional ``score_mod`` (after Q.K^T * scale) and
    ``prob_mod`` (after the softmax) subgraphs, each taking and giving one [B, Hq, Sq, Skv] tensor in the
    softmax precision; grouped-query heads share K/V heads in contiguous groups."""

    def __init__(self, node: NodeSpec):
        super().__init__(node)
        from ..graph import implicit_inputs
        from .control import Body

        self.mods = {}
        for key in ("score_mod", "prob_mod"):
            if self.attr(key) is not None:
                body = Body(self, self.attr(key), key)
                if body.formal_count != 1 or body.output_count != 1:
                    raise self.fail(f"{key} must take one input and give one output, it takes {body.formal_count} "
                                    f"and gives {body.output_count}")
                self.mods[key] = body
        outer = implicit_inputs(self.attrs) if self.mods else []
        for body in self.mods.values():
            body.bind(outer)
        self.declared = len(node.inputs) - len(outer)
        if self.declared != 3:
            raise self.fail(f"takes Q, K and V, got {self.declared} inputs")
        precision = self.attr("softmax_precision")
        self.precision = None
        if precision is not None:
            if precision not in (1, 10, 11, 16):  # FLOAT, FLOAT16, DOUBLE, BFLOAT16
                raise self.fail(f"softmax_precision {precision} must name a floating-point type")
            # bfloat16 and float16 sums run in float32 here (the closest NumPy has for bfloat16)
            self.precision = np.dtype(np.float64 if precision == 11 else np.float32)
        self.scale = self.attr("scale")
        if self.scale is not None:
            self.scale = finite_attr(self, "scale", None)

    def run(self, q, k, v, *outer):
        if q.ndim != 4 or k.ndim != 4 or v.ndim != 4:
            raise self.fail(f"Q, K and V must be rank 4, got {list(q.shape)}, {list(k.shape)}, {list(v.shape)}")
        batch, heads, length, size = q.shape
        kv_heads, kv_length = k.shape[1], k.shape[2]
        if k.shape[0] != batch or v.shape[:3] != k.shape[:3] or k.shape[3] != size:
            raise self.fail(f"Q {list(q.shape)}, K {list(k.shape)} and V {list(v.shape)} do not fit together")
        if kv_heads == 0 or heads % kv_heads:
            raise self.fail(f"{heads} query heads are not a multiple of {kv_heads} key/value heads")
        self.check_size((batch, heads, length, kv_length), np.float64, "the attention scores")
        self.check_work(float(batch) * heads * length * kv_length * (size + v.shape[3]))
        dtype = self.precision or np.dtype(np.float64 if q.dtype == np.float64 else np.float32)
        group = heads // kv_heads
        if group > 1:
            k, v = np.repeat(k, group, axis=1), np.repeat(v, group, axis=1)
        scale = self.scale if self.scale is not None else 1.0 / np.sqrt(size)
        scores = (q.astype(dtype) @ np.swapaxes(k.astype(dtype), -1, -2)) * dtype.type(scale)
        if "score_mod" in self.mods:
            scores = self._modify("score_mod", scores, outer)
        top = np.max(scores, axis=-1, keepdims=True)
        weights = np.exp(scores - np.where(np.isfinite(top), top, 0))
        probs = weights / np.sum(weights, axis=-1, keepdims=True)
        if "prob_mod" in self.mods:
            probs = self._modify("prob_mod", probs, outer)
        return (probs @ v.astype(dtype)).astype(q.dtype)

    def _modify(self, key: str, value: np.ndarray, outer: tuple) -> np.ndarray:
        result = np.asarray(self.mods[key]([value], outer)[0])
        if result.shape != value.shape:
            raise self.fail(f"{key} turned a {list(value.shape)} tensor into {list(result.shape)}")
        return result.astype(value.dtype, copy=False)
