"""The app in its user's language: Qt translators for digitscope's strings (gui/i18n/*.qm) and Qt's own.

Every user-facing string of the views goes through Qt's translation system (``self.tr`` in a widget,
``QCoreApplication.translate`` elsewhere). ``gui/i18n/digitscope_pt_BR.ts`` is the Brazilian Portuguese source
(Qt Linguist format, refreshed with ``pyside6-lupdate``), ``digitscope_pt_BR.qm`` its compiled form
(``pyside6-lrelease``, shipped with PySide6-Essentials), which is what the app loads. The language follows the
system locale unless the user picked one (View > Language, kept in the settings; it applies at the next start).

The Qt-free modules (session, teaching, explain, comparison) translate through ``gui.localize.translate``, a hook
that importing this module points at ``QCoreApplication.translate`` (English as written until then).
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QCoreApplication, QLibraryInfo, QLocale, QSettings, QTranslator

from gui import localize

I18N_DIR = Path(__file__).resolve().parent / "i18n"
SETTING = "ui/language"
SYSTEM = "system"
LANGUAGES = {"en": "English", "pt_BR": "Português (Brasil)"}  # shown in their own language

localize.set_translator(QCoreApplication.translate)  # the Qt-free modules' messages go through the translators


def available() -> list[str]:
    """Languages with a shipped translation, plus English (the source language)."""
    return ["en"] + sorted(p.stem.removeprefix("digitscope_") for p in I18N_DIR.glob("digitscope_*.qm"))


def resolve(choice: str | None, locale: QLocale | None = None) -> str:
    """The language to use: ``choice`` when it is one we have, else the best match for the system locale."""
    if choice and choice != SYSTEM and choice in available():
        return choice
    name = (locale or QLocale.system()).name()  # "pt_BR", "pt_PT", "en_US"
    languages = available()
    if name in languages:
        return name
    base = name.split("_")[0]
    return next((language for language in languages if language.split("_")[0] == base), "en")


def chosen(settings: QSettings) -> str:
    return str(settings.value(SETTING, SYSTEM) or SYSTEM)


def choose(settings: QSettings, language: str) -> None:
    settings.setValue(SETTING, language)


def install(language: str, app: QCoreApplication | None = None) -> list[QTranslator]:
    """Install the translators for ``language`` (digitscope's and Qt's own dialogs); returns them (keep them
    referenced). English installs none."""
    app = app or QCoreApplication.instance()
    installed: list[QTranslator] = []
    if app is None or language == "en":
        return installed
    ours = QTranslator(app)
    if ours.load(str(I18N_DIR / f"digitscope_{language}.qm")):
        app.installTranslator(ours)
        installed.append(ours)
    qt = QTranslator(app)
    if qt.load(f"qtbase_{language}", QLibraryInfo.path(QLibraryInfo.LibraryPath.TranslationsPath)):
        app.installTranslator(qt)
        installed.append(qt)
    return installed


def uninstall(translators: list[QTranslator], app: QCoreApplication | None = None) -> None:
    app = app or QCoreApplication.instance()
    for translator in translators:
        app.removeTranslator(translator)
