"""gui.rasterize: canvas strokes -> the 28x28 MNIST-style image the model sees."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gui.rasterize import center_of_mass_shift, default_pen_width, rasterize

ROOT = Path(__file__).resolve().parents[1]
STROKES_DIR = Path(__file__).parent / "data" / "strokes"
RECORDINGS = sorted(STROKES_DIR.glob("*.json"))
CANVAS = (280, 280)


def com(image: np.ndarray) -> tuple[float, float]:
    """Centre of mass (row, col) in pixel-index coordinates, computed independently of the module."""
    total = image.sum()
    rows, cols = np.indices(image.shape)
    return float((rows * image).sum() / total), float((cols * image).sum() / total)


def inked_extent(image: np.ndarray, level: float = 0.0) -> tuple[int, int]:
    """(height, width) in pixels of the rows/columns holding any ink above `level`."""
    rows = np.nonzero(image.max(axis=1) > level)[0]
    cols = np.nonzero(image.max(axis=0) > level)[0]
    return int(rows[-1] - rows[0] + 1), int(cols[-1] - cols[0] + 1)


def ellipse(cx: float, cy: float, rx: float, ry: float, n: int = 60) -> list[tuple[float, float]]:
    return [(cx + rx * math.cos(2 * math.pi * k / n), cy + ry * math.sin(2 * math.pi * k / n)) for k in range(n + 1)]


def seven(x0: float, y0: float, size: float) -> list[list[tuple[float, float]]]:
    """A '7' (bar, then diagonal stem) whose box has its top-left at (x0, y0) and height `size`."""
    bar = [(x0 + size * t / 10 * 0.7, y0) for t in range(11)]
    stem = [(x0 + size * 0.7 - size * 0.45 * t / 10, y0 + size * t / 10) for t in range(11)]
    return [bar, stem]


def load_recording(path: Path) -> tuple[int, list[list[tuple[float, float]]], tuple[int, int]]:
    doc = json.loads(path.read_text())
    strokes = [[(float(x), float(y)) for x, y in stroke] for stroke in doc["strokes"]]
    return int(doc["label"]), strokes, (int(doc["canvas_size"][0]), int(doc["canvas_size"][1]))


# --- basic contract ----------------------------------------------------------------------------------------------


def test_shape_dtype_and_range():
    image = rasterize(seven(60, 40, 200), CANVAS)
    assert image.shape == (28, 28)
    assert image.dtype == np.float32
    assert image.min() >= 0.0 and image.max() <= 1.0
    assert image.max() == pytest.approx(1.0, abs=0.02), "stroke cores are full ink, like MNIST"
    assert image[0, 0] == 0.0, "background stays 0"


@pytest.mark.parametrize("strokes", [[], [[]], [[], []]])
def test_no_ink_gives_zeros(strokes):
    image = rasterize(strokes, CANVAS)
    assert image.shape == (28, 28) and image.dtype == np.float32
    assert not image.any()


def test_centre_of_mass_is_mnist_centre():
    # MNIST puts the centre of mass at index (14, 14); a '7' is top-heavy, so box centring would miss it.
    for strokes in (seven(30, 20, 230), [ellipse(140, 140, 50, 110)], [[(50, 200), (240, 60)]]):
        cy, cx = com(rasterize(strokes, CANVAS))
        assert abs(cy - 14) <= 0.5 and abs(cx - 14) <= 0.5, (cy, cx)


def test_ink_box_fits_20x20_and_keeps_aspect():
    # A 0 twice as tall as wide: its height becomes 20 px and its width stays about half of that.
    image = rasterize([ellipse(140, 140, 50, 100)], CANVAS)
    height, width = inked_extent(image)
    assert 20 <= height <= 21  # the 20 px box, plus the partly covered pixel where it straddles a boundary
    full_h, full_w = inked_extent(image, level=0.5)
    assert full_w / full_h == pytest.approx(0.57, abs=0.1)  # (width: 100 px centre line + pen) / (200 + pen)


def test_vertical_line_is_not_stretched_sideways():
    image = rasterize([[(140, 30), (140, 250)]], CANVAS)
    height, width = inked_extent(image)
    assert 20 <= height <= 21
    assert width <= 4, "a '1' stays a thin stroke, not a 20 px wide slab"


def test_horizontal_line_is_not_stretched_vertically():
    image = rasterize([[(20, 100), (260, 104)]], CANVAS)
    height, width = inked_extent(image)
    assert 20 <= width <= 21
    assert height <= 4


def test_a_dot_draws_a_dot():
    for strokes in ([[(100.0, 120.0)]], [[(100.0, 120.0), (100.4, 120.2)]]):
        image = rasterize(strokes, CANVAS)
        assert image.max() > 0.5
        height, width = inked_extent(image)
        assert height <= 5 and width <= 5, "a tap is not magnified into a blob filling the box"
        cy, cx = com(image)
        assert abs(cy - 14) <= 0.5 and abs(cx - 14) <= 0.5


def test_non_square_canvas_and_points_outside_it():
    wide = rasterize(seven(-40, 30, 100), (600, 200))  # dragged past the left edge: still one whole digit
    assert wide.shape == (28, 28) and wide.any()
    assert inked_extent(wide)[0] >= 20


# --- invariances ---------------------------------------------------------------------------------------------------


def test_translation_invariance():
    a = rasterize(seven(20, 20, 150), CANVAS)
    b = rasterize(seven(103.3, 97.7, 150), CANVAS)
    assert np.abs(a - b).mean() < 0.01
    assert np.abs(a - b).max() < 0.2  # sub-pixel placement differs by at most 1/8 px
    one_pixel_off = np.roll(a, 1, axis=1)
    assert np.abs(a - b).sum() < 0.2 * np.abs(a - one_pixel_off).sum()


def test_scale_invariance_with_the_same_pen():
    # The same '7' drawn small and large with the same pen: same image, so the stroke thickness is set
    # relative to the digit, not by the canvas pen (which would give thin large and fat small digits).
    small = rasterize(seven(100, 100, 70), CANVAS)
    large = rasterize(seven(10, 10, 260), CANVAS)
    assert np.abs(small - large).mean() < 0.02
    assert small.sum() == pytest.approx(large.sum(), rel=0.05)


@pytest.mark.parametrize("height", [60, 150, 260])
def test_stroke_width_is_mnist_like(height):
    # A straight stroke of 20 px ink length: mass / length is its width, which MNIST has at about 2-3 px.
    image = rasterize([[(140, 140 - height / 2), (140, 140 + height / 2)]], CANVAS)
    assert 2.0 <= image.sum() / 20 <= 3.2


def test_pen_width_makes_strokes_bolder_or_lighter():
    strokes = seven(40, 30, 200)
    pen = default_pen_width(CANVAS)
    thin, normal, bold = (rasterize(strokes, CANVAS, pen * k).sum() for k in (0.5, 1.0, 2.0))
    assert thin < 0.85 * normal and bold > 1.2 * normal
    assert np.array_equal(rasterize(strokes, CANVAS), rasterize(strokes, CANVAS, pen))


def test_extreme_pens_stay_within_mnist_thickness():
    # A hairline or a marker still gives strokes in MNIST's range, which is what the model can read.
    line = [[(140, 30), (140, 250)]]
    pen = default_pen_width(CANVAS)
    for k in (0.05, 10.0):
        assert 1.4 <= rasterize(line, CANVAS, pen * k).sum() / 20 <= 4.0


def test_center_of_mass_shift_moves_ink_to_the_mnist_centre():
    image = np.zeros((28, 28), np.float32)
    image[3:6, 20:22] = 1.0  # centre of mass at row 4, column 20.5
    dy, dx = center_of_mass_shift(image)
    assert (dy, dx) == pytest.approx((10.0, -6.5))
    assert center_of_mass_shift(rasterize(seven(30, 20, 230), CANVAS)) == pytest.approx((0, 0), abs=0.5)


def test_default_pen_width_grows_with_canvas():
    assert default_pen_width((560, 560)) == pytest.approx(2 * default_pen_width((280, 280)))
    assert default_pen_width((560, 280)) == default_pen_width((280, 280))


points = st.tuples(st.floats(0, 279), st.floats(0, 279))


@settings(max_examples=40, deadline=None)
@given(st.lists(st.lists(points, min_size=1, max_size=12), min_size=1, max_size=4))
def test_any_drawing_gives_a_valid_centred_image(strokes):
    image = rasterize(strokes, CANVAS)
    assert image.shape == (28, 28) and image.dtype == np.float32
    assert np.all((image >= 0) & (image <= 1)) and image.sum() > 0
    height, width = inked_extent(image)
    assert max(height, width) <= 21  # the 20 px box, plus the partly covered pixel where it straddles a boundary
    # Centred by mass, unless that would push ink out of the field: then the ink stays whole, against the edge.
    cy, cx = com(image)
    rows, cols = np.nonzero(image.max(axis=1))[0], np.nonzero(image.max(axis=0))[0]
    assert abs(cy - 14) <= 0.5 or rows[0] == 0 or rows[-1] == 27
    assert abs(cx - 14) <= 0.5 or cols[0] == 0 or cols[-1] == 27


def test_lopsided_drawing_keeps_all_its_ink():
    # A bar with a dot far below: centring by mass alone would push the dot out of the 28x28 field.
    image = rasterize([[(0.0, 0.0), (5.0, 0.0)], [(0.0, 9.0)]], CANVAS)
    assert image[-5:].sum() > 1.0, "the dot is still there"
    assert (image > 0.9).sum(axis=1).max() >= 8, "and so is the bar"
    # All the ink: the 5 px bar at the tap-sized drawing's scale (17.5 / 10 px) 2.5 px wide, its caps and the dot.
    assert image.sum() == pytest.approx(17.5 / 10 * 5 * 2.5 + 2 * math.pi * 2.5**2 / 4, rel=0.1)


def test_rasterize_imports_no_qt():
    code = "import sys, gui.rasterize; assert 'PySide6' not in sys.modules, sorted(sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


# --- end to end: shipped pen recordings through the bundled model -------------------------------------------------

@pytest.fixture(scope="module")
def bundled_model():
    try:
        from nn_core import load
    except ImportError as exc:
        pytest.skip(f"nn_core.load is not available yet ({exc})")
    path = ROOT / "assets" / "lenet5.onnx"
    if not path.exists():
        pytest.skip("assets/lenet5.onnx is not there yet")
    from nn_core.interface import ModelAdapter

    return ModelAdapter(load(str(path)))  # the model seen through the app's image <-> model interface


def test_shipped_recordings_are_well_formed():
    assert len(RECORDINGS) >= 20
    labels = set()
    for path in RECORDINGS:
        label, strokes, size = load_recording(path)
        labels.add(label)
        assert strokes and all(len(s) for s in strokes)
        assert all(0 <= x <= size[0] and 0 <= y <= size[1] for s in strokes for x, y in s)
    assert labels == set(range(10))


@pytest.mark.parametrize("path", RECORDINGS, ids=[p.stem for p in RECORDINGS])
def test_drawn_digit_is_recognised(bundled_model, path):
    label, strokes, size = load_recording(path)
    image = rasterize(strokes, size)
    probs = bundled_model.predict(image)
    assert int(np.argmax(probs)) == label, f"{path.name}: drawn {label}, model says {np.argmax(probs)}"
