"""How many threads BLAS (NumPy's matmul) uses, settable after NumPy is imported.

OpenBLAS reads OPENBLAS_NUM_THREADS only once, when NumPy loads it, and `python -m nn_core` imports NumPy (through
the package) before any command runs; so the thread count is also set through OpenBLAS's own C function, found in
the shared library NumPy loaded.
"""

from __future__ import annotations

import ctypes
import os

_SETTERS = ("scipy_openblas_set_num_threads64_", "scipy_openblas_set_num_threads", "openblas_set_num_threads64_",
            "openblas_set_num_threads")


def _openblas_libraries() -> list[str]:
    try:
        with open("/proc/self/maps") as maps:
            return sorted({line.split()[-1] for line in maps if "openblas" in line.lower() and ".so" in line})
    except OSError:  # not Linux: fall back to the environment variable alone
        return []


def set_blas_threads(count: int) -> bool:
    """Use ``count`` BLAS threads from now on; returns True if the running BLAS library took it."""
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(count)
    for path in _openblas_libraries():
        library = ctypes.CDLL(path)
        for name in _SETTERS:
            setter = getattr(library, name, None)
            if setter is not None:
                setter(ctypes.c_int(count))
                return True
    return False
