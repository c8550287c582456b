"""The app speaks Brazilian Portuguese: the shipped translation loads, covers every string, and is up to date."""

from __future__ import annotations

import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

pytest.importorskip("pytestqt")

from PySide6.QtCore import QCoreApplication, QLocale, QTranslator  # noqa: E402

from gui import translations  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
TS = ROOT / "gui" / "i18n" / "digitscope_pt_BR.ts"
QM = ROOT / "gui" / "i18n" / "digitscope_pt_BR.qm"


def messages(path: Path) -> dict[tuple[str, str], ET.Element]:
    root = ET.parse(path).getroot()
    return {(context.findtext("name"), message.findtext("source")): message.find("translation")
            for context in root.iter("context") for message in context.iter("message")}


def tool(name: str) -> str:
    """pyside6-lupdate / pyside6-lrelease: they ship with PySide6-Essentials, a required dependency, so a missing
    one is a broken install and fails here (no skip)."""
    found = shutil.which(f"pyside6-{name}")
    assert found, f"pyside6-{name} is missing: reinstall PySide6-Essentials"
    return found


def test_the_portuguese_translation_loads_and_translates(qapp):
    translator = QTranslator()
    assert translator.load(str(QM))
    assert translator.translate("MainWindow", "&File") == "&Arquivo"
    assert translator.translate("ProbabilitiesView", "Draw a digit") == "Desenhe um dígito"


def test_every_message_is_translated_and_placeholders_survive():
    found = messages(TS)
    assert len(found) > 90
    for (context, source), translation in found.items():
        assert translation.get("type") not in ("unfinished", "obsolete", "vanished"), (context, source)
        assert translation.text, (context, source)
        placeholders = re.compile(r"\{\w*\}|%\d")  # str.format fields and Qt's %1
        assert sorted(placeholders.findall(source)) == sorted(placeholders.findall(translation.text)), \
            (source, translation.text)
        if "&" in source:
            assert "&" in translation.text, (source, translation.text)  # the menu keeps a mnemonic


def test_the_shipped_qm_is_compiled_from_the_shipped_ts(tmp_path):
    out = tmp_path / "check.qm"
    subprocess.run([tool("lrelease"), str(TS), "-qm", str(out)], check=True, capture_output=True)
    assert out.read_bytes() == QM.read_bytes(), "run: pyside6-lrelease gui/i18n/digitscope_pt_BR.ts"


def test_every_string_in_the_source_is_in_the_ts(tmp_path):
    fresh = tmp_path / "fresh.ts"
    sources = sorted(str(p) for p in (ROOT / "gui").glob("*.py"))
    subprocess.run([tool("lupdate"), *sources, "-ts", str(fresh)], check=True, capture_output=True)
    missing = set(messages(fresh)) - set(messages(TS))
    assert not missing, f"untranslated strings (run pyside6-lupdate, translate, lrelease): {sorted(missing)}"


def test_the_language_follows_the_locale_unless_chosen():
    assert translations.resolve("system", QLocale("pt_BR")) == "pt_BR"
    assert translations.resolve(None, QLocale("pt_PT")) == "pt_BR"  # the nearest we have
    assert translations.resolve("system", QLocale("de_DE")) == "en"
    assert translations.resolve("en", QLocale("pt_BR")) == "en"
    assert translations.resolve("pt_BR", QLocale("en_US")) == "pt_BR"
    assert set(translations.available()) == {"en", "pt_BR"}


def test_the_window_in_portuguese(qtbot, settings):
    from gui import MainWindow

    installed = translations.install("pt_BR")
    try:
        window = MainWindow(settings=settings, predictor_mode="sync")
        qtbot.addWidget(window)
        menus = [action.text() for action in window.menuBar().actions()]
        assert menus[:2] == ["&Arquivo", "&Editar"]
        tabs = [window.tabs.tabText(i) for i in range(window.tabs.count())]
        assert "Ativações" in tabs and "Grafo" in tabs
        assert window.probability_view.headline()[1] == "Desenhe um dígito"
        assert window.summary.nodes.headerData(1, __import__("PySide6.QtCore").QtCore.Qt.Orientation.Horizontal) \
            == "Nó"
        assert window.compare_action.text() == "&Comparar com…"
        assert window.teach_panel.personalize_button.text() == "Personalizar"
        window.set_language("en")
        assert translations.chosen(settings) == "en" and window.language_actions["en"].isChecked()
        window.close()
    finally:
        translations.uninstall(installed)
    assert QCoreApplication.translate("MainWindow", "&File") == "&File"


def test_the_qt_free_modules_speak_portuguese_too(qapp):
    """session, teaching, explain and comparison have no Qt: their messages go through gui.localize, which
    gui.translations points at QCoreApplication.translate."""
    import numpy as np

    from gui import localize
    from gui.comparison import Side, compare

    first = Side("a", np.array([0.1, 0.9]), ["0", "1"])
    second = Side("b", np.array([0.8, 0.2]), ["0", "1"])
    installed = translations.install("pt_BR")
    try:
        assert localize.translate("Teacher", "Learning your examples…") == "Aprendendo seus exemplos…"
        assert compare(first, second).verdict() == "discordam: a diz 1, b diz 0"
    finally:
        translations.uninstall(installed)
    assert compare(first, second).verdict() == "disagree: a says 1, b says 0"


def test_the_wheel_ships_the_translations():
    text = (ROOT / "pyproject.toml").read_text()
    assert '"i18n/*.qm"' in text
