"""``digitscope [model.onnx]`` / ``python -m gui [model.onnx]``: start the desktop app."""

from __future__ import annotations

import argparse
import sys

from PySide6.QtCore import QSettings, Qt
from PySide6.QtGui import QColor, QGuiApplication, QPalette
from PySide6.QtWidgets import QApplication

from gui import translations
from gui.window import APPLICATION, ORGANIZATION, MainWindow


def dark_palette() -> QPalette:
    """A dark theme, so the black drawing canvas and the feature maps do not sit in a glaring white frame."""
    palette = QPalette()
    colours = {
        QPalette.ColorRole.Window: QColor(40, 40, 45),
        QPalette.ColorRole.WindowText: QColor(225, 225, 230),
        QPalette.ColorRole.Base: QColor(28, 28, 32),
        QPalette.ColorRole.AlternateBase: QColor(36, 36, 41),
        QPalette.ColorRole.ToolTipBase: QColor(50, 50, 56),
        QPalette.ColorRole.ToolTipText: QColor(230, 230, 235),
        QPalette.ColorRole.Text: QColor(225, 225, 230),
        QPalette.ColorRole.Button: QColor(52, 52, 58),
        QPalette.ColorRole.ButtonText: QColor(225, 225, 230),
        QPalette.ColorRole.Highlight: QColor(70, 140, 230),
        QPalette.ColorRole.HighlightedText: QColor(255, 255, 255),
        QPalette.ColorRole.PlaceholderText: QColor(140, 140, 150),
    }
    for role, colour in colours.items():
        palette.setColor(role, colour)
    palette.setColor(QPalette.ColorGroup.Disabled, QPalette.ColorRole.ButtonText, QColor(120, 120, 128))
    palette.setColor(QPalette.ColorGroup.Disabled, QPalette.ColorRole.WindowText, QColor(120, 120, 128))
    palette.setColor(QPalette.ColorGroup.Disabled, QPalette.ColorRole.Text, QColor(120, 120, 128))
    return palette


def create_window(model: str | None, settings=None, interactive: bool = True) -> MainWindow:
    """The window ``digitscope [model]`` shows: the bundled model at once; a named file opens in the background
    (a huge one must not keep the window away) and, if it cannot be opened, the bundled model stays with the
    error shown."""
    return MainWindow(model, settings=settings, interactive=interactive, open_in_background=model is not None)


def main(argv: list[str] | None = None) -> int:
    args = argparse.ArgumentParser(prog="digitscope", description="Draw a digit, watch a neural network read it.")
    args.add_argument("model", nargs="?", help="an ONNX model to open (default: the bundled LeNet-5)")
    args.add_argument("--lang", help="the interface language (en, pt_BR; default: the system's or View > Language)")
    options, qt_args = args.parse_known_args(sys.argv[1:] if argv is None else argv)

    # Fractional scale factors (125 %, 150 %) are used as they are instead of being rounded to 1x or 2x.
    QGuiApplication.setHighDpiScaleFactorRoundingPolicy(Qt.HighDpiScaleFactorRoundingPolicy.PassThrough)
    app = QApplication.instance() or QApplication([sys.argv[0], *qt_args])
    app.setOrganizationName(ORGANIZATION)
    app.setApplicationName(APPLICATION)
    app.setStyle("Fusion")
    app.setPalette(dark_palette())
    language = translations.resolve(options.lang or translations.chosen(QSettings(ORGANIZATION, APPLICATION)))
    app.translators = translations.install(language, app)  # kept referenced for the app's lifetime
    window = create_window(options.model)
    window.show()
    return app.exec()


if __name__ == "__main__":
    sys.exit(main())
