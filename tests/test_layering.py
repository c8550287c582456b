"""Layering that cannot rot: nn_core never imports gui or Qt; gui's application layer never imports Qt.

Two independent checks: the import statements of every source file (static, also catches imports inside
functions and imports of a Qt gui module from a Qt-free one), and importing every module in a fresh
interpreter where PySide6 cannot be imported at all.

gui's modules are Qt-free unless listed in ``QT_VIEWS``: a new module is held to the rule by default, and a new
view is added here on purpose.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
QT_PACKAGES = ("PySide6", "shiboken6", "PyQt5", "PyQt6", "PySide2")
# gui modules that are Qt views (or the bridge to Qt): everything else in gui must work without Qt
QT_VIEWS = {"gui.__main__", "gui.window", "gui.canvas", "gui.activations", "gui.probabilities", "gui.preview",
            "gui.overlay", "gui.teach_panel", "gui.summary", "gui.qt_bridge", "gui.graph_view",
            "gui.translations", "gui.compare_view", "gui.reliability"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules(package: str) -> dict[str, Path]:
    return {module_name(path): path for path in sorted((ROOT / package).rglob("*.py"))
            if "__pycache__" not in path.parts}


def imported_names(path: Path, module: str | None = None) -> set[str]:
    """Every module an import statement in ``path`` (module ``module``) names, relative ones resolved, at any
    depth (inside functions too, and ``importlib.import_module("...")``)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    module = module or module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names: set[str] = set()
    lazy = [f for f in tree.body if isinstance(f, ast.FunctionDef) and f.name == "__getattr__"]
    skipped = {id(n) for f in lazy for n in ast.walk(f)}  # a package's lazy attribute (gui.MainWindow) is allowed
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            names.add(prefix)
            names.update(f"{prefix}.{alias.name}" for alias in node.names)  # `from gui import window`
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant) and \
                isinstance(node.args[0].value, str) and getattr(node.func, "attr", getattr(node.func, "id", "")) in (
                    "import_module", "__import__"):
            names.add(node.args[0].value)
    return names


def is_within(name: str, packages) -> bool:
    return any(name == p or name.startswith(p + ".") for p in packages)


NN_CORE = modules("nn_core")
GUI = modules("gui")
QT_FREE_GUI = {name: path for name, path in GUI.items() if name not in QT_VIEWS}


def test_the_view_list_names_real_modules_and_the_app_layer_is_not_empty():
    assert QT_VIEWS <= set(GUI), f"QT_VIEWS names modules that do not exist: {sorted(QT_VIEWS - set(GUI))}"
    assert {"gui.session", "gui.events", "gui.settings", "gui.predictor", "gui.strokes"} <= set(QT_FREE_GUI)


@pytest.mark.parametrize("name", sorted(NN_CORE))
def test_nn_core_imports_neither_gui_nor_qt(name):
    bad = sorted(n for n in imported_names(NN_CORE[name]) if is_within(n, ("gui", *QT_PACKAGES)))
    assert not bad, f"{name} imports {bad}: nn_core is the engine and must not know about the app or Qt"


@pytest.mark.parametrize("name", sorted(QT_FREE_GUI))
def test_the_app_layer_imports_no_qt_not_even_through_a_view(name):
    imports = imported_names(QT_FREE_GUI[name])
    bad = sorted(n for n in imports if is_within(n, (*QT_PACKAGES, *QT_VIEWS)))
    assert not bad, (f"{name} imports {bad}: it is part of gui's Qt-free application layer (if it really is a "
                     "view, add it to QT_VIEWS in tests/test_layering.py)")


def test_every_engine_and_app_layer_module_imports_with_qt_blocked():
    wanted = sorted(n for n in (*NN_CORE, *QT_FREE_GUI) if not n.endswith("__main__"))
    code = textwrap.dedent(f"""
        import importlib, importlib.abc, sys, traceback
        BLOCKED = {QT_PACKAGES!r}

        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in BLOCKED:
                    raise ImportError(f"{{name}} is blocked: this module must work without Qt")
                return None

        sys.meta_path.insert(0, Block())
        failed = []
        for name in {wanted!r}:
            try:
                importlib.import_module(name)
            except Exception:
                failed.append(name + ": " + traceback.format_exc(limit=3))
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
        if failed or loaded:
            print("\\n".join(failed), "loaded:", loaded)
            sys.exit(1)
    """)
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_checker_sees_imports_everywhere_in_a_file(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text("from PySide6 import QtCore\n\ndef f():\n    from . import window\n"
                     "    import nn_core.interface\n    importlib.import_module('shiboken6')\n")
    names = imported_names(probe, "gui.probe")
    assert {"PySide6", "gui.window", "nn_core.interface", "shiboken6"} <= names
    assert is_within("PySide6.QtCore", QT_PACKAGES) and not is_within("gui.windowing", {"gui.window"})
