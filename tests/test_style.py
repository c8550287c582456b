"""The code stays `ruff` clean (configuration in pyproject.toml), and the engine stays free of Qt."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest
from helpers import ROOT


def test_ruff_is_clean():
    ruff = shutil.which("ruff")
    if ruff is None:
        pytest.skip("ruff is not installed (it comes with the [test] extra)")
    out = subprocess.run([ruff, "check", "."], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stdout[-3000:]


def test_engine_does_not_import_qt():
    code = "import sys, nn_core, nn_core.__main__; print([m for m in sys.modules if m.startswith('PySide6')])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]"
