"""One registry of kernels: an ONNX operator at an opset version maps to one small class.

A model's node gets the kernel registered for the highest ``since`` version not above the model's opset for the
node's domain (the rule onnx's own reference evaluator follows). Kernels are built once at load time with the
node's attributes and its constant inputs, so they can do their preparation (weight layout, parsed attributes)
once; ``run`` is then called on every inference with NumPy arrays and must stay lean.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import ModelError, UnsupportedOperatorError
from ..limits import DEFAULT_LIMITS, Limits, check_tensor, check_work

DEFAULT_DOMAIN = ""
ML_DOMAIN = "ai.onnx.ml"
#: the highest opset of the default domain the kernels are checked against (the onnx 1.23 wheel's node cases,
#: whose operator versions up to opset 28 changed types, not the meaning, of the supported ops)
MAX_OPSET = 28

# (domain, op_type) -> list of (since_version, kernel class), kept sorted by version
_KERNELS: dict[tuple[str, str], list[tuple[int, type[Op]]]] = {}


def canonical_domain(domain: str) -> str:
    return DEFAULT_DOMAIN if domain in ("", "ai.onnx") else domain


@dataclass
class NodeSpec:
    """What a kernel is told about its node at load time."""

    op_type: str
    name: str = ""
    domain: str = DEFAULT_DOMAIN
    inputs: list[str] = field(default_factory=list)  # "" marks an omitted optional input
    outputs: list[str] = field(default_factory=list)
    attrs: dict[str, Any] = field(default_factory=dict)
    opset: int = 0  # the model's opset for this node's domain
    consts: list[np.ndarray | None] = field(default_factory=list)  # constant value of each input, if known
    source: str = ""  # the model's file name, for messages
    limits: Limits = DEFAULT_LIMITS

    def describe(self) -> str:
        return f"node '{self.name}' ({self.op_type})" if self.name else f"a {self.op_type} node"

    def where(self) -> str:
        """File and node, the prefix of every message about this node."""
        return f"{self.source}: {self.describe()}" if self.source else self.describe()


@dataclass(frozen=True)
class Parts:
    """What a fused kernel's ``specialize`` may hand back for inputs its fused path does not take: run the step as
    these runners in turn, as the plan would run separate steps (no call of the fused kernel in between): each is
    (runner, how many arguments it takes: the first's are that many of the step's first inputs, a later one's
    the output of the one before and then the step's next inputs, one fewer)."""

    runs: tuple[tuple[Callable[..., Any], int], ...]


class Op:
    """Base of all kernels. Subclasses implement ``run(*inputs)``.

    ``run`` receives one NumPy array per declared input (None for omitted optional inputs) and returns one
    array for single-output nodes or a tuple of arrays for nodes with several outputs.
    """

    # set by @register
    op_type: str = ""
    since: int = 1
    domain: str = DEFAULT_DOMAIN
    # deterministic kernels may be evaluated at load time when all their inputs are constant
    foldable: bool = True

    def __init__(self, node: NodeSpec):
        self.node = node
        self.attrs = node.attrs

    def attr(self, name: str, default: Any = None) -> Any:
        return self.attrs.get(name, default)

    def const(self, index: int) -> np.ndarray | None:
        """The load-time value of input ``index``, or None when it is only known at run time."""
        consts = self.node.consts
        return consts[index] if index < len(consts) else None

    def fail(self, message: str) -> ModelError:
        return ModelError(f"{self.node.where()}: {message}")

    def check_size(self, shape, dtype=np.float32, what: str = "output") -> None:
        """Refuse (ModelError) a tensor this node is about to allocate when it is over the size budget."""
        check_tensor(self.node.limits, self.node.where(), what, shape, dtype)

    def check_work(self, work: float, what: str = "the computation") -> None:
        """Refuse (ModelError) a run of this node that would take more than the compute budget."""
        check_work(self.node.limits, self.node.where(), what, work)

    def fuse_activation(self, kind: str, params: dict[str, float]) -> bool:
        """Absorb a following elementwise activation (``relu``, ``clip``...). Return True if absorbed."""
        return False

    def run(self, *inputs: np.ndarray | None) -> np.ndarray | tuple[np.ndarray, ...]:
        raise NotImplementedError

    def specialize(self, *inputs: np.ndarray | None) -> Callable[..., Any] | Parts | None:
        """A callable that does what ``run`` does, faster for inputs of exactly these shapes and dtypes (the
        constant ones the same) and through ``run`` for any other; or, from a fused kernel, its Parts; or None,
        as here (FastPlan.specialize asks right after ``run`` had these inputs)."""
        return None

    def backward(self, inputs: list[np.ndarray | None], outputs: list[np.ndarray],
                 grads: list[np.ndarray | None], wanted: Sequence[bool] | None = None) -> list[np.ndarray | None]:
        """The op's gradient rule (reverse mode), beside its kernel.

        Given the forward ``inputs`` and ``outputs`` of one run and ``grads``, the gradient of the loss with
        respect to each output (None where no gradient flows), return the gradient with respect to each input,
        each the shape of that input — None for inputs that are not differentiable (indices, shapes, integer
        data) or that no output depends on smoothly. Kernels without a rule inherit this refusal.

        ``wanted`` (optional keyword, one bool per input, None meaning all): the input gradients the caller
        will use. A rule that can save work (a convolution skipping its input's gradient when that input is the
        image, or its weight's when the weights are frozen) declares the keyword and may return None where
        ``wanted`` is False; the gradient plan passes it only to rules whose signature declares it (looked up
        once per kernel class, ``accepts_wanted``), so rules without it need no change. The rule must not
        modify ``inputs``, ``outputs`` or ``grads``.
        """
        raise UnsupportedOperatorError(f"{self.node.where()}: the engine has no gradient rule for "
                                       f"{self.node.op_type}, so it cannot differentiate through this node")

    @classmethod
    def has_gradient(cls) -> bool:
        return cls.backward is not Op.backward

    @classmethod
    def accepts_wanted(cls) -> bool:
        """Whether this kernel's ``backward`` takes the ``wanted`` keyword (checked once per class)."""
        accepts = cls.__dict__.get("_accepts_wanted")
        if accepts is None:
            accepts = "wanted" in inspect.signature(cls.backward).parameters and cls.backward is not Op.backward
            cls._accepts_wanted = accepts
        return accepts


def register(op_type: str, since: int = 1, domain: str = DEFAULT_DOMAIN) -> Callable[[type[Op]], type[Op]]:
    """Class decorator: ``@register("Softmax", 13)`` makes the class the kernel of Softmax from opset 13 on."""

    def decorate(cls: type[Op]) -> type[Op]:
        versions = _KERNELS.setdefault((canonical_domain(domain), op_type), [])
        versions.append((since, cls))
        versions.sort(key=lambda item: item[0])
        cls.op_type, cls.since, cls.domain = op_type, since, canonical_domain(domain)
        return cls

    return decorate


def resolve(op_type: str, opset: int, domain: str = DEFAULT_DOMAIN) -> type[Op] | None:
    """The kernel class for ``op_type`` at ``opset``: the highest registered version not above it."""
    versions = _KERNELS.get((canonical_domain(domain), op_type))
    if not versions:
        return None
    chosen = None
    for since, cls in versions:
        if since <= opset:
            chosen = cls
    return chosen


def supported_ops(domain: str = DEFAULT_DOMAIN) -> frozenset[str]:
    return frozenset(op for (dom, op) in _KERNELS if dom == canonical_domain(domain))


def all_kernels() -> dict[tuple[str, str], list[tuple[int, type[Op]]]]:
    return {key: list(value) for key, value in _KERNELS.items()}
