"""The Qt-free teaching layer: the example store on disk (written as taught, readable by a later session,
robust to a damaged file) and the Teacher on a plain Session."""

from __future__ import annotations

import numpy as np
from conftest import stroke_path

from gui.teaching import ExampleStore, Teacher


def test_store_writes_each_example_at_once_and_skips_damaged_files(tmp_path):
    store = ExampleStore(tmp_path / "examples")
    assert len(store) == 0 and not (tmp_path / "examples").exists()  # nothing written until taught
    image = np.zeros((28, 28), np.float32)
    image[10:18, 13:15] = 1.0
    first = store.add(1, image, [{"points": [[1.0, 2.0], [3.0, 4.0]], "width": 18.0}], (280, 280))
    assert (tmp_path / "examples" / f"{first.id}.json").exists()
    assert not list((tmp_path / "examples").glob("*.part"))
    (tmp_path / "examples" / "broken.json").write_text("{not json")
    again = ExampleStore(tmp_path / "examples")
    assert [e.id for e in again.examples] == [first.id] and len(again.skipped) == 1
    images, labels = again.arrays()
    assert images.shape == (1, 28, 28) and labels.tolist() == [1]
    assert again.remove(first.id) and len(ExampleStore(tmp_path / "examples")) == 0


def test_teacher_without_qt_keeps_examples_across_sessions(tmp_path):
    from gui.session import Session, bundled_model_path

    session = Session(predictor_mode="sync")
    session.open_model(bundled_model_path())
    assert session.wait_for_open(30)
    teacher = Teacher(session, tmp_path)
    session.draw(stroke_path("7"))
    example = teacher.teach(7)
    assert example is not None and example.image.shape == (28, 28)
    again = Teacher(session, tmp_path)
    assert [e.id for e in again.examples] == [example.id]
    np.testing.assert_allclose(again.examples[0].image, example.image, atol=1 / 255)
    assert again.examples[0].strokes[0]["points"][0] == list(map(float, stroke_path("7")[0]))
    session.close()
