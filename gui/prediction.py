"""One traced run of a model on one drawing, as a plain value (no Qt): used by the predictor and the opener."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from nn_core.interface import ModelAdapter


@dataclass
class Prediction:
    """One run of the model on one drawing."""

    image: np.ndarray  # the 28x28 drawing (ink = 1)
    probabilities: np.ndarray
    labels: list[str]
    records: list = field(default_factory=list)  # nn_core trace records: .name, .op_type, .outputs
    seconds: float = 0.0  # engine time, traced run included
    generation: int = 0  # which model produced it (a result from a replaced model is dropped)
    error: str | None = None
    drawing: int = 0  # which drawing it is for: the session's drawing number when the image was submitted


def run_prediction(adapter: ModelAdapter, image: np.ndarray, generation: int = 0, drawing: int = 0) -> Prediction:
    """Run the traced model on one image; errors come back in the Prediction instead of being raised."""
    start = time.perf_counter()
    try:
        probabilities, records = adapter.predict_traced(image)
    except Exception as exc:  # noqa: BLE001 - any engine failure must reach the user, not kill the worker
        return Prediction(image, np.zeros(0), [], [], time.perf_counter() - start, generation,
                          f"{type(exc).__name__}: {exc}", drawing)
    seconds = time.perf_counter() - start
    return Prediction(image, probabilities, adapter.labels(len(probabilities)), records, seconds, generation,
                      drawing=drawing)
