"""A non-editable install works: build the wheel, install it into a fresh venv, start the app offscreen from it.

Offline: the wheel is built without build isolation and installed with ``--no-index --no-deps`` into a venv
that sees this interpreter's site-packages for the dependencies (numpy, onnx, Pillow, PySide6). The script then
runs in that venv from a folder outside the checkout, and first checks that ``gui`` and ``nn_core`` really come
from the venv, not from the checkout.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import time
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ("pyproject.toml", "README.md", "gui", "nn_core", "assets")
BUDGET_SECONDS = 60

APP_SCRIPT = textwrap.dedent("""
    import sys
    from pathlib import Path

    import gui, nn_core
    venv = Path(sys.prefix).resolve()
    for module in (gui, nn_core):
        assert Path(module.__file__).resolve().is_relative_to(venv), f"{module.__name__} from {module.__file__}"

    import numpy as np
    from PySide6.QtCore import QSettings
    from PySide6.QtWidgets import QApplication

    from gui.session import bundled_model_path
    from gui.window import MainWindow
    from nn_core.interface import auto_detect_scaling, load_samples

    app = QApplication([])
    settings = QSettings(str(Path(sys.argv[1]) / "settings.ini"), QSettings.Format.IniFormat)
    window = MainWindow(None, settings=settings, predictor_mode="sync")  # the bundled model, waited for
    window.show()
    assert window.model is not None, window.last_error
    assert window.model_path == bundled_model_path() and window.model_path.resolve().is_relative_to(venv)

    session = window.session
    session.draw([(140.0, 50.0 + 4 * i) for i in range(46)], width=18.0)  # a "1", drawn through the session
    assert int(np.argmax(session.probabilities)) == 1, session.probabilities

    images, labels = load_samples()  # package data of nn_core
    assert int(np.argmax(session.adapter.predict(images[0]))) == labels[0]
    report = auto_detect_scaling(window.model, window.adapter)
    assert report.best == "01" and report.accuracy["01"] >= 0.9, report

    assert session.auto_detect_scaling()  # the app's own path: in the background, handed back to the UI thread
    while session.detecting:
        app.processEvents()
    assert window.adapter.scaling == "01" and window.last_error is None, window.last_error
    window.close()
    print("app ok")
""")


def build_wheel(tmp_path: Path) -> Path:
    source = tmp_path / "src"
    source.mkdir()
    for name in SOURCES:  # a copy: building in the checkout would leave build/ and egg-info behind
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(path, source / name)
    dist = tmp_path / "dist"
    # offline with this interpreter's setuptools when it can build wheels itself; else pip fetches the backend
    offline = ["--no-build-isolation", "--no-index"] if can_build_here() else []
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", *offline, "-q", "-w", str(dist), str(source)],
        cwd=tmp_path)
    (wheel,) = dist.glob("digitscope-*.whl")
    return wheel


def can_build_here() -> bool:
    """setuptools is installed and builds wheels without the separate ``wheel`` package (70.1+), or both are."""
    try:
        import setuptools
    except ImportError:
        return False
    version = tuple(int(part) for part in setuptools.__version__.split(".")[:2] if part.isdigit())
    if version >= (70, 1):
        return True
    try:
        import wheel  # noqa: F401
    except ImportError:
        return False
    return True


def run(command: list[str], cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=BUDGET_SECONDS)
    assert result.returncode == 0, f"{' '.join(command)}\n{result.stdout}\n{result.stderr}"
    return result


@pytest.mark.skipif(sys.platform == "win32", reason="venv layout differs; CI runs Linux")
def test_the_installed_wheel_starts_the_app_on_its_bundled_model(tmp_path):
    started = time.perf_counter()
    wheel = build_wheel(tmp_path)

    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    top_level = {name.split("/")[0] for name in names if not name.startswith("digitscope-")}
    assert top_level == {"gui", "nn_core"}, top_level
    assert {"gui/assets/lenet5.onnx", "nn_core/mnist_samples.npz"} <= set(names)
    for package in ("gui", "nn_core"):  # every folder with Python code is installed (pyproject lists them)
        folders = {p.parent.relative_to(ROOT).as_posix() for p in (ROOT / package).rglob("*.py")
                   if "__pycache__" not in p.parts}
        missing = sorted(f for f in folders if not any(n.startswith(f + "/") for n in names))
        assert not missing, f"not in the wheel (add them to [tool.setuptools] packages): {missing}"

    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)], cwd=tmp_path)
    python = venv / "bin" / "python"
    run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-index", "--no-deps", "-q",
         str(wheel)], cwd=tmp_path)
    assert (venv / "bin" / "digitscope").exists() and (venv / "bin" / "nn-core").exists()
    site_packages = venv_file(venv, "gui").parent
    installed = {p.name for p in site_packages.iterdir() if not p.name.endswith((".dist-info", ".pth"))}
    assert installed == {"gui", "nn_core"}, installed  # no generic top-level "assets"

    env = {key: value for key, value in os.environ.items() if not key.startswith("PYTHON")}
    env.update(QT_QPA_PLATFORM="offscreen", PIP_DISABLE_PIP_VERSION_CHECK="1")
    home = tmp_path / "home"
    home.mkdir()
    result = run([str(python), "-s", "-c", APP_SCRIPT, str(home)], cwd=home, env=env)
    assert "app ok" in result.stdout
    info = run([str(python), "-s", "-m", "nn_core", "info", str(venv_file(venv, "gui/assets/lenet5.onnx"))],
               cwd=home, env=env)
    assert "Conv x2" in info.stdout

    elapsed = time.perf_counter() - started
    assert elapsed < BUDGET_SECONDS, f"build + install + start took {elapsed:.1f} s"


def venv_file(venv: Path, relative: str) -> Path:
    (found,) = venv.glob(f"lib/python*/site-packages/{relative}")
    return found
