"""Small pieces the gradient rules share."""

from __future__ import annotations

import numpy as np


def sum_to_shape(grad: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Undo NumPy broadcasting: sum ``grad`` over the axes that broadcasting added or stretched to reach it."""
    shape = tuple(shape)
    if grad.shape == shape:
        return grad
    extra = grad.ndim - len(shape)
    stretched = tuple(extra + i for i, n in enumerate(shape) if n == 1 and grad.shape[extra + i] != 1)
    axes = tuple(range(extra)) + stretched
    summed = grad.sum(axis=axes, keepdims=True) if axes else grad
    return summed.reshape(shape)
