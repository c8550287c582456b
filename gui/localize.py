"""Translation for the Qt-free modules (session, teaching, explain, comparison): a hook, not a dependency.

``translate(context, text)`` returns ``text`` as it is until the Qt side installs a real translator (importing
``gui.translations`` installs ``QCoreApplication.translate``), so scripts and tests without Qt get English.
Write the call with literal strings, ``translate("Teacher", "Learning your examples…")``, never an f-string or a
variable: ``pyside6-lupdate`` finds the calls by that shape and lists them in ``gui/i18n/*.ts``. Fill the
placeholders after translating: ``translate("Session", "Could not open {name}: {error}").format(...)``.
"""

from __future__ import annotations

from collections.abc import Callable

Translator = Callable[[str, str], str]


def _identity(_context: str, text: str) -> str:
    return text


_translator: Translator = _identity


def translate(context: str, text: str) -> str:
    """``text`` in the user's language (``context`` is the group it is filed under in the .ts)."""
    return _translator(context, text)


def set_translator(function: Translator | None) -> None:
    """Route ``translate`` through ``function`` (None: back to English as written)."""
    global _translator
    _translator = function or _identity
