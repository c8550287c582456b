"""The ``temperature`` metadata key: probabilities are softmax(scores / T); an untrusted value is ignored with a
warning; a temperature already folded into the weights is never applied twice."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from helpers import BUNDLED

import nn_core
from nn_core.interface import ModelAdapter, load_samples, parse_temperature, softmax, to_probabilities


def adapter_with(metadata: dict[str, str]) -> ModelAdapter:
    model = nn_core.load(BUNDLED)
    model.metadata.update(metadata)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ModelAdapter(model)


def test_to_probabilities_divides_logits_log_probabilities_and_probabilities_by_the_temperature():
    logits = np.array([2.0, 0.5, -1.0])
    expected = softmax(logits / 2.0)
    np.testing.assert_allclose(to_probabilities(logits, "logits", 2.0), expected)
    log_probabilities = logits - np.log(np.exp(logits).sum())
    np.testing.assert_allclose(to_probabilities(log_probabilities, "log_probabilities", 2.0), expected)
    np.testing.assert_allclose(to_probabilities(np.exp(log_probabilities), "probabilities", 2.0), expected)
    np.testing.assert_allclose(to_probabilities(logits, "logits", None), softmax(logits))


def test_a_temperature_in_the_metadata_softens_every_prediction_of_the_adapter():
    images, _ = load_samples()
    plain = adapter_with({})
    warm = adapter_with({"temperature": "2.5"})
    assert plain.temperature is None and warm.temperature == 2.5 and not warm.warnings
    logits = plain.scores(plain.model.run(plain.make_feeds(images[0])))
    np.testing.assert_allclose(warm.predict(images[0]), softmax(np.asarray(logits, np.float64) / 2.5), rtol=1e-6)
    many_plain, many_warm = plain.predict_many(images[:8], "01"), warm.predict_many(images[:8], "01")
    np.testing.assert_array_equal(many_plain.argmax(axis=1), many_warm.argmax(axis=1))  # same classes
    assert (many_warm.max(axis=1) < many_plain.max(axis=1) + 1e-9).all()  # less sure of them
    np.testing.assert_allclose(many_warm[0], warm.predict(images[0]), rtol=1e-5)


@pytest.mark.parametrize("text", ["nan", "inf", "-inf", "0", "-2", "abc", "", "1e-30", "1e30", "2" * 400])
def test_an_untrusted_temperature_is_ignored_with_a_warning(text):
    value, warning = parse_temperature({"temperature": text})
    assert value is None and "ignored" in warning and len(warning) < 160
    model = nn_core.load(BUNDLED)
    model.metadata["temperature"] = text
    with pytest.warns(UserWarning, match="temperature"):
        adapter = ModelAdapter(model)
    assert adapter.temperature is None and adapter.warnings == [warning]
    images, _ = load_samples()
    np.testing.assert_allclose(adapter.predict(images[0]), adapter_with({}).predict(images[0]))


def test_a_temperature_already_folded_into_the_weights_is_not_applied_again():
    record = json.dumps({"temperature": 1.7, "folded_into": "fc3", "note": "do not apply it again"})
    value, warning = parse_temperature({"temperature": "1.7", "calibration": record})
    assert value is None and "already folded into fc3" in warning
    assert parse_temperature({"calibration": record}) == (None, None)  # the record alone applies nothing
    assert parse_temperature({"temperature": "1.2", "calibration": record}) == (1.2, None)  # a further one does
