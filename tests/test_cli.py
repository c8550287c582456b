"""`python -m nn_core info | run | bench` on the bundled model, as a user would type them."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from helpers import BUNDLED, ROOT
from PIL import Image, ImageDraw


def nn_core_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nn_core", *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=300)


def test_info_describes_the_bundled_model():
    out = nn_core_cli("info", str(BUNDLED), "--nodes")
    assert out.returncode == 0, out.stderr
    assert "input" in out.stdout and "[N,1,28,28]" in out.stdout
    assert "Conv x2" in out.stdout and "parameters" in out.stdout
    assert "labels" in out.stdout


def test_run_on_a_drawn_png_names_the_digit(tmp_path):
    # a dark "1" on white paper, as a user would save from a paint program
    image = Image.new("L", (200, 200), 255)
    ImageDraw.Draw(image).line([(100, 30), (100, 170)], fill=0, width=14)
    path = tmp_path / "one.png"
    image.save(path)
    out = nn_core_cli("run", str(BUNDLED), "--input", str(path))
    assert out.returncode == 0, out.stderr
    top = out.stdout.split("top classes:")[1].split(",")[0].strip()
    assert top.startswith("1:"), out.stdout


def test_run_on_npy_prints_outputs(tmp_path):
    x = np.zeros((2, 1, 28, 28), np.float32)
    np.save(tmp_path / "x.npy", x)
    out = nn_core_cli("run", str(BUNDLED), "--input", str(tmp_path / "x.npy"))
    assert out.returncode == 0, out.stderr
    assert "logits  shape [2, 10]" in out.stdout


def test_bad_model_exits_with_a_message_not_a_traceback(tmp_path):
    page = tmp_path / "m.onnx"
    page.write_text("<html><body>Not found</body></html>")
    out = nn_core_cli("info", str(page))
    assert out.returncode == 2
    assert "HTML page" in out.stderr and "Traceback" not in out.stderr


def test_bench_prints_figures_against_onnxruntime():
    pytest.importorskip("onnxruntime")
    out = nn_core_cli("bench", str(BUNDLED), "--batch", "1,8", "--seconds", "0.05", "--profile", "--no-reference")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    rows = [line.split() for line in lines if line.strip().startswith(("1 ", "8 "))]
    assert len(rows) == 2 and all(row[-1] != "-" or row[4] != "-" for row in rows)
    assert "peak memory" in out.stdout and "onnxruntime" in out.stdout
    assert "Conv+Relu" in out.stdout  # the profile shows the fused plan, per op type and per node
