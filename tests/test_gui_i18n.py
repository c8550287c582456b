"""The app speaks Brazilian Portuguese: the shipped translation loads, covers every string, and is up to date."""

from __future__ import annotations

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


def tool(name: str) -> str | None:
    return shutil.which(f"pyside6-{name}")


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
        for placeholder in ("{name}", "{error}", "{digit}", "%1", "%2", "{count}", "{version}"):
            assert source.count(placeholder) == translation.text.count(placeholder), (source, translation.text)
        if "&" in source:
            assert "&" in translation.text, (source, translation.text)  # the menu keeps a mnemonic


@pytest.mark.skipif(tool("lrelease") is None, reason="pyside6-lrelease is not installed")
def test_the_shipped_qm_is_compiled_from_the_shipped_ts(tmp_path):
    out = tmp_path / "check.qm"
    subprocess.run([tool("lrelease"), str(TS), "-qm", str(out)], check=True, capture_output=True)
    assert out.read_bytes() == QM.read_bytes(), "run: pyside6-lrelease gui/i18n/digitscope_pt_BR.ts"


@pytest.mark.skipif(tool("lupdate") is None, reason="pyside6-lupdate is not installed")
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
        window.set_language("en")
        assert translations.chosen(settings) == "en" and window.language_actions["en"].isChecked()
        window.close()
    finally:
        translations.uninstall(installed)
    assert QCoreApplication.translate("MainWindow", "&File") == "&File"


def test_the_wheel_ships_the_translations():
    text = (ROOT / "pyproject.toml").read_text()
    assert '"i18n/*.qm"' in text
