"""Kernels, one small class per ONNX operator and opset version; importing a module registers its kernels."""

from __future__ import annotations

import importlib

from .registry import NodeSpec, Op, register, resolve, supported_ops

# every kernel module; each registers its classes on import
KERNEL_MODULES = ("elementwise", "activations", "reduce", "shape", "nn", "quantized", "contrib_ms", "ml",
                  "control", "recurrent", "transformer", "misc", "spatial", "signal", "sequence", "strings", "image")

_loaded = False


def load_all_kernels() -> None:
    global _loaded
    if _loaded:
        return
    for name in KERNEL_MODULES:
        importlib.import_module(f"{__name__}.{name}")
    _loaded = True


__all__ = ["NodeSpec", "Op", "register", "resolve", "supported_ops", "load_all_kernels"]
