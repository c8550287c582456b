"""The views on their own: probabilities headline, activation cards and inspector, preview, summary, canvas."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("pytestqt")

from PySide6.QtCore import QEvent, QPoint, QPointF, Qt  # noqa: E402
from PySide6.QtGui import QColor, QImage, QMouseEvent  # noqa: E402
from PySide6.QtTest import QTest  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402

from gui.activations import GAP_INDEX, ActivationsView, ColourScale, as_maps, as_vector, mosaic  # noqa: E402
from gui.canvas import DrawingCanvas  # noqa: E402
from gui.preview import InputPreview  # noqa: E402
from gui.probabilities import headline  # noqa: E402
from nn_core.plan import NodeRecord  # noqa: E402

LABELS = [str(i) for i in range(10)]


def hover(widget, point: QPointF) -> None:
    """A mouse move with no button down (QTest.mouseMove does not deliver those to a tracking widget here)."""
    event = QMouseEvent(QEvent.Type.MouseMove, point, widget.mapToGlobal(point), Qt.MouseButton.NoButton,
                        Qt.MouseButton.NoButton, Qt.KeyboardModifier.NoModifier)
    QApplication.sendEvent(widget, event)


def distribution(**share) -> np.ndarray:
    probs = np.full(10, 0.0)
    for label, value in share.items():
        probs[int(label[1:])] = value
    rest = 1.0 - probs.sum()
    probs[probs == 0] = rest / np.count_nonzero(probs == 0)
    return probs


def test_headline_shows_the_winner_with_its_confidence():
    big, small = headline(distribution(d7=0.98), LABELS)
    assert big == "7" and small == "98.0 % confident"


def test_headline_calls_a_close_call_a_close_call():
    big, small = headline(distribution(d4=0.48, d9=0.41), LABELS)
    assert big == "4 or 9?" and "48" in small and "41" in small
    assert headline(distribution(d4=0.7, d9=0.2), LABELS)[0] == "4"


def test_headline_is_empty_without_a_prediction():
    assert headline(None, LABELS) == ("–", "Draw a digit")


def test_colour_scale_is_symmetric_for_signed_values_and_starts_at_zero_otherwise():
    signed = ColourScale.for_values(np.array([-0.5, 2.0]))
    assert (signed.low, signed.high, signed.signed) == (-2.0, 2.0, True)
    assert signed.indices(np.array([0.0]))[0] == 127  # zero sits in the middle of the diverging table
    positive = ColourScale.for_values(np.array([0.2, 3.0]))
    assert (positive.low, positive.high, positive.signed) == (0.0, 3.0, False)
    assert positive.indices(np.array([0.0, 3.0])).tolist() == [0, 254]


def test_feature_maps_are_found_in_nchw_and_nhwc_tensors():
    nchw = np.zeros((1, 6, 24, 24), np.float32)
    nchw[0, 2, 5, 7] = 1
    assert as_maps(nchw).shape == (6, 24, 24) and as_maps(nchw)[2, 5, 7] == 1
    nhwc = np.zeros((1, 12, 12, 32), np.float32)
    nhwc[0, 5, 7, 2] = 1
    assert as_maps(nhwc).shape == (32, 12, 12) and as_maps(nhwc)[2, 5, 7] == 1
    assert as_maps(np.zeros((1, 10), np.float32)) is None
    assert as_vector(np.arange(20, dtype=np.float32).reshape(1, 20)).tolist() == list(range(20))
    assert as_vector(np.array([1, 28, 28], np.int64)) is None  # shape tensors are shown as text


def records(count: int) -> list:
    rng = np.random.default_rng(0)
    return [NodeRecord(f"conv_{i}", "Conv", {f"t{i}": rng.normal(size=(1, 8, 12, 12)).astype(np.float32)})
            for i in range(count)] + [NodeRecord("dense", "Gemm", {"logits": rng.normal(size=(1, 10))})]


def shown_view(qtbot, width: int, height: int) -> ActivationsView:
    """An activation view of this size, shown and exposed."""
    view = ActivationsView()
    qtbot.addWidget(view)
    view.resize(width, height)
    view.show()
    qtbot.waitExposed(view)
    return view


def test_only_visible_cards_are_rendered(qtbot):
    view = shown_view(qtbot, 420, 360)
    view.set_records(records(150))
    # the cards are built a few per event-loop turn: wait for the page, then for it to be painted
    qtbot.waitUntil(lambda: not view.building, timeout=10_000)
    qtbot.wait(50)
    rendered = [card for card in view.entries if card.paint_count]
    assert 0 < len(rendered) < 15  # the first few; not all 151
    view.verticalScrollBar().setValue(view.verticalScrollBar().maximum())
    qtbot.wait(50)
    assert view.entries[-2].paint_count > 0 and view.entries[70].paint_count == 0
    before = view.entries[0].paint_count
    view.set_records(records(150))  # new values: still nothing rendered until seen
    qtbot.wait(50)
    assert view.entries[0].paint_count == before


def test_a_repaint_renders_cards_within_the_turns_budget_and_the_rest_on_later_turns(qtbot, monkeypatch):
    import gui.activations as activations

    budget = activations.RenderBudget(seconds=1e-9)  # spent by the first card a turn renders
    monkeypatch.setattr(activations, "RENDER_BUDGET", budget)
    view = shown_view(qtbot, 420, 900)
    view.set_records(records(6))
    qtbot.waitUntil(lambda: not view.building, timeout=10_000)
    cards = view.entries[:4]
    qtbot.waitUntil(lambda: all(card.paint_count for card in cards), timeout=5_000)
    images = [card._cache.image for card in cards]
    before = [card.paint_count for card in cards]
    view.set_records(records(6))  # new values
    qtbot.waitUntil(lambda: budget.available(), timeout=5_000)
    for card in cards:
        card.repaint()  # one turn: only the first renders; the others keep their previous image
    assert [c.paint_count - b for c, b in zip(cards, before)] == [1, 0, 0, 0]
    assert all(card._cache.image is image for card, image in zip(cards[1:], images[1:]))
    qtbot.waitUntil(lambda: all(c.paint_count == b + 1 for c, b in zip(cards, before)), timeout=5_000)


def test_a_mosaic_tiles_the_maps_row_by_row_with_one_pixel_gaps():
    maps = np.arange(7 * 3 * 2, dtype=np.float32).reshape(7, 3, 2)
    scale = ColourScale(0.0, float(maps.max()), False)
    image, rows = mosaic(maps, 3, scale)
    assert rows == 3 and image.shape == (3 * 4 - 1, 3 * 3 - 1) and image.flags.c_contiguous
    tiles = scale.indices(maps)
    expected = np.full(image.shape, GAP_INDEX, np.uint8)
    for i in range(7):
        r, c = divmod(i, 3)
        expected[r * 4: r * 4 + 3, c * 3: c * 3 + 2] = tiles[i]
    np.testing.assert_array_equal(image, expected)  # the two empty cells of the last row stay gap-coloured


def test_pictures_prepared_off_the_ui_thread_are_painted_without_rendering(qtbot):
    import threading

    view = shown_view(qtbot, 420, 400)
    data = records(30)
    view.set_records(data)
    qtbot.waitUntil(lambda: not view.building, timeout=10_000)
    fresh = records(30)
    for record in fresh:
        for value in record.outputs.values():
            value *= 2  # other values than the ones shown
    prepared = {}
    worker = threading.Thread(target=lambda: prepared.update(view.prepare(fresh, lambda: False)))
    worker.start()
    worker.join()
    first, last = view._sight
    assert first == 0 and 0 < last < 20
    assert set(prepared) == set(range(31))  # every card of the page gets its value range
    pictured = [index for index, card in prepared.items() if card.picture is not None]
    assert pictured == list(range(min(30, 2 * last + 2)))  # those in sight and the next screenful
    view.set_records(fresh, prepared=prepared)
    before = [card.paint_count for card in view.entries]
    for card in view.entries[: last + 1]:
        card.repaint()
    assert [card.paint_count for card in view.entries] == before  # painted from the prepared pictures
    card = view.entries[0]
    values = fresh[0].outputs["t0"]
    assert card.value_range() == (float(values.min()), float(values.max()))
    assert card._rendered() is prepared[0].picture
    view.resize(300, 400)  # other columns: the card renders itself
    qtbot.waitUntil(lambda: card.paint_count > before[0], timeout=5_000)
    view.hide()
    assert view.prepare(fresh, lambda: False) == {}  # nothing for a hidden view
    view.show()
    cut_short = view.prepare(fresh, lambda: True)  # a newer drawing waits: ranges only
    assert len(cut_short) == 31 and all(card.picture is None for card in cut_short.values())


def test_cards_show_shape_and_value_range(qtbot):
    view = ActivationsView()
    qtbot.addWidget(view)
    data = records(2)
    view.set_records(data)
    left, right = view.entries[0].header_text()
    values = data[0].outputs["t0"]
    assert "Conv" in left and "conv_0" in left
    assert "[1, 8, 12, 12]" in right
    assert f"{values.min():.4g}" in right and f"{values.max():.4g}" in right
    assert view.entries[-1].kind() == "bars"


def test_clicking_a_map_opens_an_inspector_that_reports_values_on_hover(qtbot):
    view = shown_view(qtbot, 500, 500)
    data = records(1)
    view.set_records(data)
    qtbot.wait(20)
    card = view.entries[0]
    body = card.body_rect()
    # click the second tile of the first row
    rendered = card._rendered()
    image, columns = rendered.image, rendered.columns
    tile_width = card._image_rect(image, body).width() / columns
    QTest.mouseClick(card, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier,
                     QPoint(int(body.x() + tile_width * 1.5), int(body.y() + 5)))
    inspector = view.inspector
    assert inspector is not None and inspector.isVisible() and inspector.map_index == 1
    assert "map 2 of 8" in inspector._title.text()
    grid = inspector._grid
    qtbot.waitExposed(inspector)
    target = grid._target()
    cell = QPointF(target.x() + target.width() * (7.5 / 12), target.y() + target.height() * (3.5 / 12))
    seen = []
    grid.hovered.connect(seen.append)
    hover(grid, cell)
    expected = data[0].outputs["t0"][0, 1, 3, 7]
    assert seen and seen[-1] == f"row 3, col 7: {expected:.4g}"
    # live: new values for the same node refresh the open inspector
    fresh = records(1)
    fresh[0].outputs["t0"][0, 1, 3, 7] = 42.0
    view.set_records(fresh)
    hover(grid, cell + QPointF(1, 0))
    assert seen[-1] == "row 3, col 7: 42"


def test_preview_is_nearest_neighbour(qtbot):
    preview = InputPreview()
    qtbot.addWidget(preview)
    preview.resize(300, 330)
    image = np.zeros((28, 28), np.float32)
    image[::2, ::2] = 1.0  # a checkerboard-ish pattern that smoothing would turn grey
    preview.set_image(image)
    grabbed = preview.grab().toImage().convertToFormat(QImage.Format.Format_RGB32)
    greys = {QColor(grabbed.pixel(x, y)).red() for x in range(40, 260, 3) for y in range(30, 260, 3)}
    assert greys <= {0, 32, 255}  # black, the background, white: no in-between values


def test_canvas_touch_draws_like_the_mouse(qtbot):
    canvas = DrawingCanvas()
    qtbot.addWidget(canvas)
    canvas.resize(300, 300)
    canvas.show()
    qtbot.waitExposed(canvas)
    changes = []
    canvas.strokesChanged.connect(lambda: changes.append(1))
    device = QTest.createTouchDevice()
    QTest.touchEvent(canvas, device).press(0, QPoint(50, 50)).commit()
    QTest.touchEvent(canvas, device).move(0, QPoint(100, 120)).commit()
    QTest.touchEvent(canvas, device).move(0, QPoint(150, 200)).commit()
    QTest.touchEvent(canvas, device).release(0, QPoint(150, 200)).commit()
    strokes = canvas.document.strokes
    assert len(strokes) == 1 and len(strokes[0].points) == 3 and len(changes) >= 3
