"""The engine's one exception family: every message says what is wrong and where."""

from __future__ import annotations


class ModelError(Exception):
    """A model file, a graph or an input that the engine cannot use.

    The message always names the culprit: the file, the node (name and op type), the input and its shape.
    """


class UnsupportedOperatorError(ModelError):
    """The model uses operators (or operator versions) the engine has no kernel for."""


class InputError(ModelError):
    """A feed passed to ``Model.run`` has the wrong name, shape or type."""
