"""Signal processing: DFT (opsets 17 and 20), STFT, the Hann/Hamming/Blackman windows and MelWeightMatrix.

Complex values travel as a trailing axis of 2 (real, imaginary); a trailing axis of 1 is a real signal.
"""

from __future__ import annotations

import numpy as np
from onnx import helper

from .registry import NodeSpec, Op, register
from .shape import int_attr


def _scalar_int(op: Op, value, what: str) -> int:
    array = np.asarray(value)
    if array.size != 1 or array.dtype.kind not in "iu":
        raise op.fail(f"{what} must be one integer, got {array.tolist()}")
    return int(array.reshape(-1)[0])


def _complex(op: Op, x: np.ndarray) -> np.ndarray:
    if x.ndim < 2 or x.shape[-1] not in (1, 2):
        raise op.fail(f"input {list(x.shape)} must end in an axis of 1 (real) or 2 (complex)")
    data = x.astype(np.float64)
    return data[..., 0] if x.shape[-1] == 1 else data[..., 0] + 1j * data[..., 1]


def _split(values: np.ndarray, dtype) -> np.ndarray:
    return np.stack([values.real, values.imag], axis=-1).astype(dtype)


def _output_dtype(op: Op, default: int = 1) -> np.dtype:
    try:
        dtype = np.dtype(helper.tensor_dtype_to_np_dtype(int(op.attr("output_datatype", default))))
    except (KeyError, TypeError, ValueError):
        raise op.fail(f"output_datatype {op.attr('output_datatype')} is not a known type") from None
    if dtype.kind not in "fiu":
        raise op.fail(f"output_datatype must be numeric, got {dtype}")
    return dtype


@register("DFT", 17)
class DFT(Op):
    def __init__(self, node: NodeSpec):
        super().__init__(node)
        self.axis_attr = int_attr(self, "axis", 1)
        self.inverse = bool(int_attr(self, "inverse", 0))
        self.onesided = bool(int_attr(self, "onesided", 0))

    def run(self, x, dft_length=None, axis=None):
        if self.node.opset >= 20:
            axis = -2 if axis is None else _scalar_int(self, axis, "axis")
        else:
            axis = self.axis_attr
        rank = x.ndim
        if not -rank <= axis < rank or axis % rank == rank - 1:
            raise self.fail(f"axis {axis} must be a signal axis of the input {list(x.shape)}")
        axis %= rank
        signal = _complex(self, x)
        if dft_length is None:
            length = 2 * (x.shape[axis] - 1) if self.inverse and self.onesided else x.shape[axis]
        else:
            length = _scalar_int(self, dft_length, "dft_length")
        if length <= 0:
            raise self.fail(f"dft_length must be positive, got {length}")
        shape = list(signal.shape)
        shape[axis] = length
        self.check_size(shape + [2], x.dtype)
        self.check_work(float(np.prod(shape)) * max(np.log2(length), 1) * 4)
        if self.inverse:
            if self.onesided:
                return np.fft.irfft(signal, n=length, axis=axis)[..., None].astype(x.dtype)
            return _split(np.fft.ifft(signal, n=length, axis=axis), x.dtype)
        result = np.fft.fft(signal, n=length, axis=axis)
        if self.onesided:
            result = np.take(result, np.arange(length // 2 + 1), axis=axis)
        return _split(result, x.dtype)


@register("STFT", 17)
class STFT(Op):
    def __init__(self, node: NodeSpec):
        super().__init__(node)
        self.onesided = bool(int_attr(self, "onesided", 1))

    def run(self, signal, frame_step, window=None, frame_length=None):
        data = _complex(self, signal)  # (batch, length)
        if data.ndim != 2:
            raise self.fail(f"signal {list(signal.shape)} must be (batch, length, 1 or 2)")
        step = _scalar_int(self, frame_step, "frame_step")
        if window is not None:
            window = np.asarray(window).astype(np.float64).reshape(-1)
        if frame_length is not None:
            size = _scalar_int(self, frame_length, "frame_length")
            if window is not None and window.size != size:
                raise self.fail(f"window of {window.size} values does not match frame_length {size}")
        elif window is not None:
            size = window.size
        else:
            raise self.fail("STFT needs a window or a frame_length")
        length = data.shape[1]
        if step <= 0 or size <= 0 or size > length:
            raise self.fail(f"frame_step {step} and frame length {size} must be positive and fit {length} samples")
        frames = (length - size) // step + 1
        bins = size // 2 + 1 if self.onesided and signal.shape[-1] == 1 else size
        self.check_size((data.shape[0], frames, bins, 2), signal.dtype)
        self.check_work(float(data.shape[0]) * frames * size * max(np.log2(size), 1) * 4)
        index = np.arange(frames)[:, None] * step + np.arange(size)[None, :]
        framed = data[:, index]  # (batch, frames, size)
        if window is not None:
            framed = framed * window
        result = np.fft.fft(framed, axis=-1)[..., :bins]
        return _split(result, signal.dtype)


class _Window(Op):
    def __init__(self, node: NodeSpec):
        super().__init__(node)
        self.periodic = bool(int_attr(self, "periodic", 1))
        self.dtype = _output_dtype(self)

    def run(self, size):
        n = _scalar_int(self, size, "size")
        if n < 0:
            raise self.fail(f"size must not be negative, got {n}")
        self.check_size((n,), self.dtype)
        period = n if self.periodic else n - 1
        phase = 2 * np.pi * np.arange(n) / (period if period > 0 else 1)
        return self.formula(phase).astype(self.dtype)


@register("HannWindow", 17)
class HannWindow(_Window):
    @staticmethod
    def formula(phase):
        return 0.5 - 0.5 * np.cos(phase)


@register("HammingWindow", 17)
class HammingWindow(_Window):
    @staticmethod
    def formula(phase):
        a0 = 25 / 46
        return a0 - (1 - a0) * np.cos(phase)


@register("BlackmanWindow", 17)
class BlackmanWindow(_Window):
    @staticmethod
    def formula(phase):
        return 0.42 - 0.5 * np.cos(phase) + 0.08 * np.cos(2 * phase)


@register("MelWeightMatrix", 17)
class MelWeightMatrix(Op):
    def __init__(self, node: NodeSpec):
        super().__init__(node)
        self.dtype = _output_dtype(self)

    def run(self, num_mel_bins, dft_length, sample_rate, lower_edge_hertz, upper_edge_hertz):
        bins = _scalar_int(self, num_mel_bins, "num_mel_bins")
        length = _scalar_int(self, dft_length, "dft_length")
        rate = _scalar_int(self, sample_rate, "sample_rate")
        low = float(np.asarray(lower_edge_hertz).reshape(-1)[0])
        high = float(np.asarray(upper_edge_hertz).reshape(-1)[0])
        if bins <= 0 or length <= 0 or rate <= 0 or not 0 <= low < high:
            raise self.fail(f"num_mel_bins {bins}, dft_length {length}, sample_rate {rate} must be positive and"
                            f" 0 <= lower_edge_hertz {low} < upper_edge_hertz {high}")
        spectrogram_bins = length // 2 + 1
        self.check_size((spectrogram_bins, bins), self.dtype)
        mel_low = 2595 * np.log10(1 + low / 700)
        mel_high = 2595 * np.log10(1 + high / 700)
        step = (mel_high - mel_low) / (bins + 2)
        mels = np.arange(bins + 2) * step + mel_low
        hertz = 700 * (10 ** (mels / 2595) - 1)
        edges = ((length + 1) * hertz // rate).astype(np.int64)
        edges = np.clip(edges, 0, spectrogram_bins - 1)
        out = np.zeros((spectrogram_bins, bins))
        for i in range(bins):
            left, center, right = edges[i], edges[i + 1], edges[i + 2]
            if center == left:
                out[center, i] = 1
            else:
                j = np.arange(left, center + 1)
                out[j, i] = (j - left) / (center - left)
            if right > center:
                j = np.arange(center, right)
                out[j, i] = (right - j) / (right - center)
        return out.astype(self.dtype)
