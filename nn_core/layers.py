"""Trainable layers on NumPy: each one knows its forward pass, its backward pass and its parameters.

Every layer keeps what its backward pass needs from its last ``forward`` call, so the usual loop is
``loss = criterion(model.forward(x), y); model.backward(criterion.backward())`` followed by an optimizer step.
``training`` only selects the semantics (batch statistics, dropout): backward also works after an inference-mode
forward, which is what saliency maps and fine-tuning a loaded model need. Layers compute in the dtype of their
input (float32 for training, float64 for gradient checks after ``astype(np.float64)``). Image tensors are NCHW,
the layout of the ONNX graphs that ``nn_core.export`` writes.

The hot paths avoid Python loops over pixels: a convolution is one im2col (a strided view, copied once) and one
matrix product; pooling takes k*k strided slices. The only loops run over kernel offsets (at most k*k).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from .errors import ModelError
from .ops.windows import checked_windows


class Parameter:
    """A learnable array and the gradient accumulated for it by the last backward pass."""

    def __init__(self, value: np.ndarray, name: str, decay: bool = True) -> None:
        self.value = value
        self.grad = np.zeros_like(value)
        self.name = name
        # Weight decay suits weights; on biases and normalisation scales it only fights the fit.
        self.decay = decay

    def astype(self, dtype: np.dtype) -> None:
        self.value = self.value.astype(dtype)
        self.grad = np.zeros_like(self.value)

    def __repr__(self) -> str:
        return f"Parameter({self.name}, shape={self.value.shape}, dtype={self.value.dtype})"


class Layer:
    """Base class: layers without parameters only override ``forward`` and ``backward``."""

    training = True

    def forward(self, x: np.ndarray, training: bool | None = None) -> np.ndarray:
        raise NotImplementedError

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def parameters(self) -> list[Parameter]:
        return []

    def buffers(self) -> dict[str, np.ndarray]:
        """Non-learned state that inference needs (BatchNorm running statistics)."""
        return {}

    def zero_grad(self) -> None:
        for p in self.parameters():
            p.grad[...] = 0

    def astype(self, dtype: np.dtype) -> Layer:
        for p in self.parameters():
            p.astype(dtype)
        for name, value in self.buffers().items():
            setattr(self, name, value.astype(dtype))
        return self

    def _is_training(self, training: bool | None) -> bool:
        return self.training if training is None else training

    def __call__(self, x: np.ndarray, training: bool | None = None) -> np.ndarray:
        return self.forward(x, training)


class LayerError(ModelError, ValueError):
    """A layer built with an impossible geometry (a stride of 0, a kernel larger than its input...). It is a
    ModelError because ``nn_core.export.from_onnx`` builds layers from the attributes of a model file."""


def _pair(value: int | tuple[int, int], name: str = "size", minimum: int = 1) -> tuple[int, int]:
    """``value`` (one int or two) as a pair of ints, each >= ``minimum``; LayerError for anything else (floats,
    strings, negative or zero sizes, the wrong number of values)."""
    items = [value, value] if isinstance(value, (int, np.integer)) else value
    try:
        pair = list(items)  # type: ignore[arg-type]
    except TypeError:
        pair = []
    if len(pair) != 2 or any(isinstance(v, bool) or not isinstance(v, (int, np.integer)) for v in pair):
        raise LayerError(f"{name} {value!r} must be an integer or a pair of integers")
    if any(v < minimum for v in pair):
        raise LayerError(f"{name} {value!r} must be >= {minimum}")
    return int(pair[0]), int(pair[1])


def _offset_slices(
    kernel: tuple[int, int], stride: tuple[int, int], out_hw: tuple[int, int]
) -> Iterator[tuple[slice, slice]]:
    """For each kernel offset (i, j): the rows and columns of the input that offset sees in every window."""
    (kh, kw), (sh, sw), (ho, wo) = kernel, stride, out_hw
    for i in range(kh):
        for j in range(kw):
            yield slice(i, i + sh * (ho - 1) + 1, sh), slice(j, j + sw * (wo - 1) + 1, sw)


def _out_hw(layer: str, shape: tuple[int, ...], kernel: tuple[int, int], stride: tuple[int, int]) -> tuple[int, int]:
    """Output height and width of a window sliding over the (already padded) spatial axes of an NCHW ``shape``;
    LayerError when the input is not NCHW or the kernel does not fit in it."""
    if len(shape) != 4 or shape[2] < kernel[0] or shape[3] < kernel[1]:
        raise LayerError(f"{layer}: kernel {kernel} does not fit an input of shape {tuple(shape)} (padded)")
    return (shape[2] - kernel[0]) // stride[0] + 1, (shape[3] - kernel[1]) // stride[1] + 1


class Conv2d(Layer):
    """2-D convolution (cross-correlation, as in ONNX Conv) with stride and symmetric zero padding.

    Inside, the work is done channels-last: im2col rows are then runs of contiguous channel values, the matrix
    product's result is already the NHWC output, and the NCHW tensor handed on is a transposed view of it (the
    element-wise layers and pooling keep that memory order, so the next im2col reads contiguous channel runs).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] = 0,
        bias: bool = True,
        rng: np.random.Generator | None = None,
    ) -> None:
        rng = rng if rng is not None else np.random.default_rng(0)
        self.in_channels, self.out_channels = in_channels, out_channels
        if isinstance(in_channels, bool) or not isinstance(in_channels, (int, np.integer)) or in_channels < 1 or \
                isinstance(out_channels, bool) or not isinstance(out_channels, (int, np.integer)) or out_channels < 1:
            raise LayerError(f"Conv2d: channels {in_channels!r} -> {out_channels!r} must be positive integers")
        self.kernel = _pair(kernel_size, "Conv2d kernel_size")
        self.stride = _pair(stride, "Conv2d stride")
        self.padding = _pair(padding, "Conv2d padding", minimum=0)
        fan_in = in_channels * self.kernel[0] * self.kernel[1]
        # He initialisation: keeps the activation variance steady through ReLU layers.
        weight = rng.normal(0.0, np.sqrt(2.0 / fan_in), (out_channels, in_channels, *self.kernel))
        self.weight = Parameter(weight.astype(np.float32), "weight")
        self.bias = Parameter(np.zeros(out_channels, np.float32), "bias", decay=False) if bias else None
        # Set to False on a network's first layer: nothing upstream of the image learns, so skip that gradient.
        self.needs_input_grad = True
        self._cols: np.ndarray | None = None
        self._input_shape: tuple[int, ...] = ()

    def parameters(self) -> list[Parameter]:
        return [self.weight] + ([self.bias] if self.bias is not None else [])

    def _weight_rows(self) -> np.ndarray:
        """The weight as (F, kh*kw*C): one row per filter, ordered like a channels-last im2col row."""
        return self.weight.value.transpose(0, 2, 3, 1).reshape(self.out_channels, -1)

    def forward(self, x: np.ndarray, training: bool | None = None) -> np.ndarray:
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise LayerError(f"Conv2d: input of shape {x.shape} is not NCHW with {self.in_channels} channels")
        n, c = x.shape[:2]
        (kh, kw), (sh, sw), (ph, pw) = self.kernel, self.stride, self.padding
        x_nhwc = x.transpose(0, 2, 3, 1)
        if ph or pw:
            x_nhwc = np.pad(x_nhwc, ((0, 0), (ph, ph), (pw, pw), (0, 0)))
        ho, wo = _out_hw("Conv2d", x_nhwc.transpose(0, 3, 1, 2).shape, self.kernel, self.stride)
        if any(s < 0 for s in x_nhwc.strides):  # a flipped view: the windows need it in positive-stride memory
            x_nhwc = np.ascontiguousarray(x_nhwc)
        s_n, s_h, s_w, s_c = x_nhwc.strides
        windows = checked_windows(x_nhwc, (n, ho, wo, kh, kw, c), (s_n, s_h * sh, s_w * sw, s_h, s_w, s_c))
        cols = windows.reshape(n * ho * wo, kh * kw * c)  # the one copy of im2col
        out = cols @ self._weight_rows().T
        if self.bias is not None:
            out += self.bias.value
        self._cols, self._input_shape = cols, x.shape
        return out.reshape(n, ho, wo, self.out_channels).transpose(0, 3, 1, 2)

    def backward(self, grad_out: np.ndarray) -> np.ndarray | None:
        if self._cols is None:
            raise RuntimeError("Conv2d.backward called without a forward pass")
        n, f, ho, wo = grad_out.shape
        grad_rows = grad_out.transpose(0, 2, 3, 1).reshape(n * ho * wo, f)
        (kh, kw), (ph, pw) = self.kernel, self.padding
        c = self._input_shape[1]
        grad_w = (grad_rows.T @ self._cols).reshape(f, kh, kw, c).transpose(0, 3, 1, 2)
        self.weight.grad += grad_w
        if self.bias is not None:
            self.bias.grad += grad_rows.sum(axis=0)
        if not self.needs_input_grad:
            return None
        h, w = self._input_shape[2], self._input_shape[3]
        grad_padded = np.zeros((n, h + 2 * ph, w + 2 * pw, c), dtype=grad_out.dtype)
        # col2im, one kernel offset at a time: that offset's (F, C) slice of the weight maps the output gradient
        # to the pixels it read. A small matmul per offset yields contiguous (N, Ho, Wo, C) blocks whose adds run
        # over whole rows, several times faster than one big matmul followed by scattered narrow adds.
        weight = self.weight.value
        for index, (rows, columns) in enumerate(_offset_slices(self.kernel, self.stride, (ho, wo))):
            contribution = grad_rows @ weight[:, :, index // kw, index % kw]
            grad_padded[:, rows, columns, :] += contribution.reshape(n, ho, wo, c)
        return grad_padded[:, ph : ph + h, pw : pw + w, :].transpose(0, 3, 1, 2)


class Linear(Layer):
    """Fully connected layer ``y = x W^T + b``; W is (out, in), the layout of ONNX Gemm with transB=1."""

    def __init__(
        self, in_features: int, out_features: int, bias: bool = True, rng: np.random.Generator | None = None
    ) -> None:
        rng = rng if rng is not None else np.random.default_rng(0)
        self.in_features, self.out_features = in_features, out_features
        weight = rng.normal(0.0, np.sqrt(2.0 / in_features), (out_features, in_features))
        self.weight = Parameter(weight.astype(np.float32), "weight")
        self.bias = Parameter(np.zeros(out_features, np.float32), "bias", decay=False) if bias else None
        self._x: np.ndarray | None = None

    def parameters(self) -> list[Parameter]:
        return [self.weight] + ([self.bias] if self.bias is not None else [])

    def forward(self, x: np.ndarray, training: bool | None = None) -> np.ndarray:
        self._x = x
        out = x @ self.weight.value.T
        if self.bias is not None:
            out += self.bias.value
        return out

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        if self._x is None:
            raise RuntimeError("Linear.backward called without a forward pass")
        self.weight.grad += grad_out.T @ self._x
        if self.bias is not None:
            self.bias.grad += grad_out.sum(axis=0)
        return grad_out @ self.weight.value


class ReLU(Layer):
    def forward(self, x: np.ndarray, training: bool | None = None) -> np.ndarray:
        out = np.maximum(x, 0)
        self._positive = x > 0
        return out

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        return grad_out * self._positive


class Tanh(Layer):
    def forward(self, x: np.ndarray, training: bool | None = None) -> np.ndarray:
        out = np.tanh(x)
        self._out = out
        return out

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        return grad_out * (1 - self._out * self._out)


class Sigmoid(Layer):
    def forward(self, x: np.ndarray, training: bool | None = None) -> np.ndarray:
        # Written with exp(-|x|) so that neither branch overflows for large |x|.
        e = np.exp(-np.abs(x))
        out = np.where(x >= 0, 1 / (1 + e), e / (1 + e)).astype(x.dtype, copy=False)
        self._out = out
        return out

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        return grad_out * self._out * (1 - self._out)


class MaxPool2d(Layer):
    """Max pooling without padding (floor mode). The gradient goes to the first maximum of each window, the
    ONNX/PyTorch convention; the windows are visited as k*k strided slices, so any memory layout works."""

    def __init__(self, kernel_size: int | tuple[int, int], stride: int | tuple[int, int] | None = None) -> None:
        self.kernel = _pair(kernel_size, f"{type(self).__name__} kernel_size")
        self.stride = _pair(stride, f"{type(self).__name__} stride") if stride is not None else self.kernel

    def forward(self, x: np.ndarray, training: bool | None = None) -> np.ndarray:
        out_hw = _out_hw(type(self).__name__, x.shape, self.kernel, self.stride)
        out = None
        for rows, columns in _offset_slices(self.kernel, self.stride, out_hw):
            # np.maximum of two views keeps the input's memory order (channels-last after a Conv2d).
            out = x[:, :, rows, columns] if out is None else np.maximum(out, x[:, :, rows, columns])
        self._input, self._output = x, out
        return out

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        x, out = self._input, self._output
        grad = np.zeros_like(x, dtype=grad_out.dtype)
        overlapping = self.stride[0] < self.kernel[0] or self.stride[1] < self.kernel[1]
        # The gradient not yet handed to a window's (first) maximum; zeroed where it has been.
        remaining = grad_out
        for rows, columns in _offset_slices(self.kernel, self.stride, grad_out.shape[2:]):
            share = remaining * (x[:, :, rows, columns] == out)
            if overlapping:
                grad[:, :, rows, columns] += share
            else:
                grad[:, :, rows, columns] = share
            remaining = remaining - share
        return grad


class AvgPool2d(MaxPool2d):
    """Average pooling without padding (every window is full, so the divisor is always kh*kw)."""

    def forward(self, x: np.ndarray, training: bool | None = None) -> np.ndarray:
        out_hw = _out_hw(type(self).__name__, x.shape, self.kernel, self.stride)
        total = None
        for rows, columns in _offset_slices(self.kernel, self.stride, out_hw):
            total = x[:, :, rows, columns].copy() if total is None else total + x[:, :, rows, columns]
        self._input = x
        return total / x.dtype.type(self.kernel[0] * self.kernel[1])

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        grad = np.zeros_like(self._input, dtype=grad_out.dtype)
        share = grad_out / grad_out.dtype.type(self.kernel[0] * self.kernel[1])
        for rows, columns in _offset_slices(self.kernel, self.stride, grad_out.shape[2:]):
            grad[:, :, rows, columns] += share
        return grad


class Flatten(Layer):
    """Flattens everything after the batch axis (ONNX Flatten with axis=1)."""

    def forward(self, x: np.ndarray, training: bool | None = None) -> np.ndarray:
        self._input_shape = x.shape
        return x.reshape(x.shape[0], -1)

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        return grad_out.reshape(self._input_shape)


class Dropout(Layer):
    """Inverted dropout: scales the kept activations at training time so inference is the identity."""

    def __init__(self, rate: float = 0.5, rng: np.random.Generator | None = None) -> None:
        if not 0 <= rate < 1:
            raise ValueError(f"Dropout rate must be in [0, 1), got {rate}")
        self.rate = rate
        self.rng = rng if rng is not None else np.random.default_rng(0)
        self._mask: np.ndarray | None = None

    def forward(self, x: np.ndarray, training: bool | None = None) -> np.ndarray:
        if not self._is_training(training) or self.rate == 0:
            self._mask = None
            return x
        keep = 1 - self.rate
        self._mask = (self.rng.random(x.shape, dtype=np.float32) < keep).astype(x.dtype) / x.dtype.type(keep)
        return x * self._mask

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        return grad_out if self._mask is None else grad_out * self._mask


class BatchNorm2d(Layer):
    """Per-channel batch normalisation of NCHW tensors, with running statistics for inference."""

    def __init__(self, channels: int, momentum: float = 0.1, eps: float = 1e-5) -> None:
        self.channels, self.momentum, self.eps = channels, momentum, eps
        self.gamma = Parameter(np.ones(channels, np.float32), "scale", decay=False)
        self.beta = Parameter(np.zeros(channels, np.float32), "bias", decay=False)
        self.running_mean = np.zeros(channels, np.float32)
        self.running_var = np.ones(channels, np.float32)
        self._eval_input: np.ndarray | None = None  # set by an inference-mode forward, for its backward

    def parameters(self) -> list[Parameter]:
        return [self.gamma, self.beta]

    def buffers(self) -> dict[str, np.ndarray]:
        return {"running_mean": self.running_mean, "running_var": self.running_var}

    def forward(self, x: np.ndarray, training: bool | None = None) -> np.ndarray:
        if not self._is_training(training):
            inv_std = (1 / np.sqrt(self.running_var + self.eps)).astype(x.dtype)
            scale = self.gamma.value * inv_std
            shift = self.beta.value - self.running_mean * scale
            shape = (1, self.channels, 1, 1)
            self._eval_input, self._inv_std = x, inv_std
            return x * scale.reshape(shape).astype(x.dtype) + shift.reshape(shape).astype(x.dtype)
        self._eval_input = None
        n, c, h, w = x.shape
        wide = _WideChannels(x)
        mean = wide.channel_mean(wide.rows)
        centred = wide.rows - wide.tile(mean)
        var = wide.channel_mean(centred * centred)
        inv_std = 1 / np.sqrt(var + x.dtype.type(self.eps))
        x_hat = centred * wide.tile(inv_std)
        count = wide.count
        m = self.momentum
        # The running variance uses the unbiased estimate, as PyTorch and the ONNX spec's training mode do.
        self.running_mean = ((1 - m) * self.running_mean + m * mean).astype(self.running_mean.dtype)
        unbiased = var * (count / max(count - 1, 1))
        self.running_var = ((1 - m) * self.running_var + m * unbiased).astype(self.running_var.dtype)
        self._wide, self._x_hat, self._inv_std = wide, x_hat, inv_std
        return wide.to_nchw(x_hat * wide.tile(self.gamma.value) + wide.tile(self.beta.value))

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        if self._eval_input is not None:
            return self._backward_eval(grad_out)
        wide, x_hat = self._wide, self._x_hat
        grad_rows = wide.reshape_like(grad_out)
        self.gamma.grad += wide.channel_sum(grad_rows * x_hat)
        self.beta.grad += wide.channel_sum(grad_rows)
        grad_x_hat = grad_rows * wide.tile(self.gamma.value)
        mean_grad = wide.channel_mean(grad_x_hat)
        mean_grad_dot = wide.channel_mean(grad_x_hat * x_hat)
        grad_rows = grad_x_hat - wide.tile(mean_grad) - x_hat * wide.tile(mean_grad_dot)
        return wide.to_nchw(grad_rows * wide.tile(self._inv_std))


    def _backward_eval(self, grad_out: np.ndarray) -> np.ndarray:
        """Backward of the inference-mode affine map: the statistics are constants there."""
        shape = (1, self.channels, 1, 1)
        x_hat = (self._eval_input - self.running_mean.reshape(shape)) * self._inv_std.reshape(shape)
        self.gamma.grad += np.sum(grad_out * x_hat, axis=(0, 2, 3))
        self.beta.grad += grad_out.sum(axis=(0, 2, 3))
        return grad_out * (self.gamma.value * self._inv_std).reshape(shape)


class _WideChannels:
    """An NCHW tensor seen as a channels-last matrix whose rows hold several pixels' channel vectors.

    Per-channel statistics are column sums of the (N*H*W, C) channels-last matrix, but NumPy is slow on such
    narrow rows (C is 16 or 32): packing k pixels per row, (N*H*W/k, k*C), makes every row long enough for the
    vectorised inner loops, and per-channel vectors are then tiled k times to broadcast.
    """

    def __init__(self, x: np.ndarray) -> None:
        n, c, h, w = x.shape
        self.shape, self.channels, self.count = x.shape, c, n * h * w
        self.pack = next(k for k in (32, 16, 8, 4, 2, 1) if self.count % k == 0 and k * c <= 1024)
        self.rows = self.reshape_like(x)

    def reshape_like(self, x: np.ndarray) -> np.ndarray:
        return x.transpose(0, 2, 3, 1).reshape(-1, self.pack * self.channels)

    def channel_sum(self, rows: np.ndarray) -> np.ndarray:
        return rows.sum(axis=0).reshape(self.pack, self.channels).sum(axis=0)

    def channel_mean(self, rows: np.ndarray) -> np.ndarray:
        return self.channel_sum(rows) / rows.dtype.type(self.count)

    def tile(self, per_channel: np.ndarray) -> np.ndarray:
        return np.tile(per_channel, self.pack)

    def to_nchw(self, rows: np.ndarray) -> np.ndarray:
        n, c, h, w = self.shape
        return rows.reshape(n, h, w, c).transpose(0, 3, 1, 2)


class Sequential(Layer):
    """Layers applied in order; backward runs them in reverse."""

    def __init__(self, *layers: Layer) -> None:
        self.layers = list(layers)

    def __iter__(self) -> Iterator[Layer]:
        return iter(self.layers)

    def __len__(self) -> int:
        return len(self.layers)

    def __getitem__(self, index: int) -> Layer:
        return self.layers[index]

    def forward(self, x: np.ndarray, training: bool | None = None) -> np.ndarray:
        training = self._is_training(training)
        for layer in self.layers:
            x = layer.forward(x, training)
        return x

    def backward(self, grad_out: np.ndarray) -> np.ndarray | None:
        """Back-propagates through every layer; None when the first layer skips its input gradient."""
        for layer in reversed(self.layers):
            grad_out = layer.backward(grad_out)
        return grad_out

    def parameters(self) -> list[Parameter]:
        return [p for layer in self.layers for p in layer.parameters()]

    def astype(self, dtype: np.dtype) -> Sequential:
        for layer in self.layers:
            layer.astype(dtype)
        return self

    def train(self) -> Sequential:
        self._set_mode(True)
        return self

    def eval(self) -> Sequential:
        self._set_mode(False)
        return self

    def _set_mode(self, training: bool) -> None:
        self.training = training
        for layer in self.layers:
            if isinstance(layer, Sequential):
                layer._set_mode(training)
            else:
                layer.training = training

    def predict(self, x: np.ndarray, batch_size: int = 1000) -> np.ndarray:
        """Inference-mode outputs for a whole array, computed in batches to bound memory."""
        parts = [self.forward(x[i : i + batch_size], training=False) for i in range(0, len(x), batch_size)]
        return np.concatenate(parts) if parts else np.zeros((0,), np.float32)


class SoftmaxCrossEntropy:
    """Mean cross-entropy of softmax(logits) against integer labels, computed stably via log-sum-exp.

    ``label_smoothing`` spreads that much probability mass evenly over all classes in the target.
    """

    def __init__(self, label_smoothing: float = 0.0) -> None:
        self.label_smoothing = label_smoothing

    def forward(self, logits: np.ndarray, labels: np.ndarray) -> float:
        shifted = logits - logits.max(axis=1, keepdims=True)
        log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        n, k = logits.shape
        target = np.full((n, k), self.label_smoothing / k, dtype=logits.dtype)
        target[np.arange(n), labels] += 1 - self.label_smoothing
        self._probs, self._target = np.exp(log_probs), target
        return float(-(target * log_probs).sum() / n)

    __call__ = forward

    def backward(self) -> np.ndarray:
        """Gradient of the mean loss with respect to the logits of the last ``forward`` call."""
        return (self._probs - self._target) / self._probs.shape[0]


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(axis=-1, keepdims=True)
