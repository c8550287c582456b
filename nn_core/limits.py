"""Resource limits: how much a model file may make the engine read, allocate and compute.

A model file is untrusted input. Sizes in it (initializer dims, a shape fed to ``Expand``, a declared input,
``pads`` of a billion) decide how much memory and time a run takes, so every one is checked against a budget
*before* the allocation or the computation happens, and a file over budget is refused with a ``ModelError``
naming the node and the number. The defaults run every real digit model and the ImageNet-size networks
(ResNet-50 at batch 64) with room to spare; a caller with other needs passes its own ``Limits`` to
``nn_core.load``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import ModelError

MiB = 1 << 20
GiB = 1 << 30


@dataclass(frozen=True)
class Limits:
    """Budgets checked at load time and, for sizes only known while running, before each allocation."""

    #: size of the .onnx file itself (read whole into memory)
    max_file_bytes: int = 4 * GiB
    #: all initializers, external data and constant attributes together
    max_constant_bytes: int = 4 * GiB
    #: any one tensor: an initializer, a declared input, an intermediate result a kernel is about to allocate
    max_tensor_bytes: int = 1 * GiB
    #: multiply-adds (or comparable elementary steps) of one node on one run: a 12000^3 MatMul is 1.7e12, the
    #: biggest convolution of ResNet-50 at batch 64 about 1.2e10; 5e10 is a few seconds of BLAS
    max_node_work: float = 5e10
    #: padding of a convolution or pooling window, per side: real models pad by about half a kernel; a file that
    #: pads by 65536 turns a 28x28 digit into a 131000-row feature map that every later layer must carry
    max_pad: int = 1024
    #: nodes in the graph (a file of a million tiny nodes is a denial of service, not a digit model)
    max_nodes: int = 250_000
    #: rank of any tensor
    max_rank: int = 32
    #: iterations of one Loop or Scan node on one run (a trip count of 2**63 with a condition that never turns
    #: false, or a stacked output that grows each turn, runs away; real models loop over a sequence of hundreds)
    max_loop_iterations: int = 100_000


DEFAULT_LIMITS = Limits()


def human_bytes(count: float) -> str:
    for unit, size in (("GiB", GiB), ("MiB", MiB), ("KiB", 1 << 10)):
        if count >= size:
            return f"{count / size:.1f} {unit}"
    return f"{int(count)} bytes"


def element_count(shape) -> int:
    """The exact number of elements of ``shape`` as a Python int (no int64 overflow on hostile dims)."""
    count = 1
    for dim in shape:
        count *= int(dim)
    return count


def tensor_bytes(shape, dtype) -> int:
    return element_count(shape) * np.dtype(dtype).itemsize


def check_tensor(limits: Limits, where: str, what: str, shape, dtype=np.float32) -> None:
    """Raise ModelError when a tensor of ``shape``/``dtype`` is malformed or over ``limits.max_tensor_bytes``.

    ``where`` names the culprit (file and node), ``what`` the tensor ("output", "initializer 'w'", ...).
    """
    dims = [int(d) for d in shape]
    if any(d < 0 for d in dims):
        raise ModelError(f"{where}: {what} would have a negative dimension {dims}")
    if len(dims) > limits.max_rank:
        raise ModelError(f"{where}: {what} would have rank {len(dims)}, over the limit of {limits.max_rank}")
    size = tensor_bytes(dims, dtype)
    if size > limits.max_tensor_bytes:
        raise ModelError(
            f"{where}: {what} of shape {dims} {np.dtype(dtype).name} would take {human_bytes(size)}, over the"
            f" {human_bytes(limits.max_tensor_bytes)} limit per tensor (nn_core.Limits.max_tensor_bytes)"
        )


def check_work(limits: Limits, where: str, what: str, work: float) -> None:
    """Raise ModelError when one node's run would take more than ``limits.max_node_work`` elementary steps."""
    if work > limits.max_node_work:
        raise ModelError(
            f"{where}: {what} would take {work:.3g} multiply-adds, over the limit of {limits.max_node_work:.3g}"
            " per node (nn_core.Limits.max_node_work) — the run would not finish in reasonable time"
        )
