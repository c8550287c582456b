"""Pixel-value conventions of digit models: how an image with ink = 1.0 on 0.0 is fed to a given model.

The codes are the ones model metadata (`input_scale`) and the public corpus use.
"""

from __future__ import annotations

import numpy as np

# in the order auto-detection prefers them when several score the same (most common first)
SCALINGS = ("01", "mnist_norm", "m11", "255", "inv01")
SCALING_DESCRIPTIONS = {
    "01": "0..1, ink = 1 (x/255)",
    "255": "0..255 raw pixels",
    "mnist_norm": "MNIST normalised ((x-0.1307)/0.3081)",
    "m11": "-1..1 (x/127.5-1)",
    "inv01": "inverted 0..1 (dark ink on white)",
}


def scale_pixels(image01: np.ndarray, code: str) -> np.ndarray:
    """Map an image with ink = 1.0 on a 0.0 background to the value convention ``code``."""
    if code == "01":
        return image01
    if code == "255":
        return image01 * 255.0
    if code == "mnist_norm":
        return (image01 - 0.1307) / 0.3081
    if code == "m11":
        return image01 * 2.0 - 1.0
    if code == "inv01":
        return 1.0 - image01
    raise ValueError(f"unknown input scaling {code!r}; expected one of {', '.join(SCALINGS)}")
