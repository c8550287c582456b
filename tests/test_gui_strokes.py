"""The drawing model: strokes, eraser, undo/redo, clear, JSON round trip (no Qt needed)."""

from __future__ import annotations

import json

import pytest

from gui.strokes import StrokeDocument


def line(doc: StrokeDocument, points, width=20.0, eraser=False) -> None:
    doc.begin_stroke(points[0], width, eraser)
    for point in points[1:]:
        doc.extend_stroke(point)
    doc.end_stroke()


def test_points_accumulate_while_drawing_and_revision_changes_per_point():
    doc = StrokeDocument((280, 280))
    doc.begin_stroke((10, 10), 20)
    revisions = [doc.revision]
    for x in range(20, 100, 10):
        assert doc.extend_stroke((x, 10))
        revisions.append(doc.revision)
    assert len(set(revisions)) == len(revisions)  # every point is a visible change
    assert doc.is_drawing and doc.has_ink()
    assert len(doc.visible_strokes()[0].points) == 9
    assert not doc.extend_stroke((90.1, 10.1))  # sub-pixel jitter is not a new point


def test_points_are_clamped_to_the_canvas():
    doc = StrokeDocument((100, 100))
    line(doc, [(-20, 50), (150, 50)])
    xs = [p[0] for p in doc.strokes[0].points]
    assert min(xs) == 0 and max(xs) == 100


def test_undo_redo_work_per_stroke():
    doc = StrokeDocument()
    line(doc, [(10, 10), (50, 50)])
    line(doc, [(60, 10), (60, 90)])
    assert len(doc.strokes) == 2
    assert doc.undo() and len(doc.strokes) == 1
    assert doc.strokes[0].points[0] == (10, 10)
    assert doc.redo() and len(doc.strokes) == 2
    assert doc.undo() and doc.undo() and not doc.strokes
    assert not doc.undo()
    assert doc.redo() and len(doc.strokes) == 1


def test_a_new_stroke_discards_the_redo_history():
    doc = StrokeDocument()
    line(doc, [(10, 10), (50, 50)])
    doc.undo()
    line(doc, [(70, 70), (90, 90)])
    assert not doc.can_redo() and not doc.redo()
    assert doc.strokes[0].points[0] == (70, 70)


def test_clear_is_undoable_and_empty_clear_is_a_no_op():
    doc = StrokeDocument()
    assert not doc.clear()
    line(doc, [(10, 10), (50, 50)])
    line(doc, [(60, 10), (60, 90)])
    assert doc.clear() and not doc.strokes and not doc.has_ink()
    assert doc.undo() and len(doc.strokes) == 2
    assert doc.redo() and not doc.strokes


def test_eraser_cuts_ink_under_its_path_and_is_undoable():
    doc = StrokeDocument()
    line(doc, [(20, 100), (260, 100)], width=10)  # a horizontal bar
    line(doc, [(140, 40), (140, 160)], width=20, eraser=True)  # erase a vertical band through its middle
    pieces = doc.visible_strokes()
    assert len(pieces) == 2
    left, right = sorted(pieces, key=lambda p: p.points[0][0])
    # the gap left between the round caps is the eraser's footprint: x in [130, 150]
    assert max(x for x, _ in left.points) + left.width / 2 == pytest.approx(130, abs=2.5)
    assert min(x for x, _ in right.points) - right.width / 2 == pytest.approx(150, abs=2.5)
    doc.undo()
    assert len(doc.visible_strokes()) == 1


def test_erasing_everything_leaves_no_ink_and_later_ink_is_untouched():
    doc = StrokeDocument()
    line(doc, [(100, 100), (110, 100)], width=10)
    line(doc, [(80, 100), (130, 100)], width=40, eraser=True)
    assert not doc.has_ink()
    line(doc, [(100, 100), (110, 100)], width=10)  # drawn after the eraser: stays
    assert doc.has_ink()


def test_fast_strokes_are_cut_between_far_apart_samples():
    doc = StrokeDocument()
    line(doc, [(0, 100), (280, 100)], width=8)  # just two samples
    line(doc, [(140, 90), (140, 110)], width=10, eraser=True)
    assert len(doc.visible_strokes()) == 2


def test_ink_pen_width_is_length_weighted():
    doc = StrokeDocument()
    assert doc.ink_pen_width() is None
    line(doc, [(0, 10), (200, 10)], width=10)
    line(doc, [(0, 50), (50, 50)], width=30)
    assert doc.ink_pen_width() == pytest.approx((200 * 10 + 50 * 30) / 250)


def test_json_round_trip_and_rescaling(tmp_path):
    doc = StrokeDocument((280, 280))
    line(doc, [(10, 20), (30, 40), (50, 60)], width=18)
    line(doc, [(15, 15), (25, 25)], width=30, eraser=True)
    path = tmp_path / "digit.json"
    doc.save(path)
    again = StrokeDocument((280, 280))
    again.load(path)
    assert [(s.points, s.width, s.eraser) for s in again.strokes] == [(s.points, s.width, s.eraser)
                                                                       for s in doc.strokes]
    assert again.undo() and not again.strokes  # loading is one undoable step
    half = StrokeDocument((140, 140))
    half.load(path)
    assert half.strokes[0].points[1] == pytest.approx((15, 20))
    assert half.strokes[0].width == pytest.approx(9)


@pytest.mark.parametrize("text", ["not json", json.dumps({"format": "other", "strokes": []}),
                                  json.dumps({"format": "digitscope-strokes", "strokes": [{"width": 3}]}),
                                  "[" * 100_000])
def test_malformed_files_raise_value_error_and_keep_the_drawing(text):
    doc = StrokeDocument()
    line(doc, [(10, 10), (20, 20)])
    with pytest.raises(ValueError):
        doc.load_json(text)
    assert len(doc.strokes) == 1
