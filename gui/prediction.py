"""One run of a model on one drawing, as a plain value (no Qt): used by the predictor and the opener.

Two kinds of run: the fused plan (``Model.run``) gives the probabilities fast, for the bars; the traced run gives
every node's outputs (the activation cards, the graph view's colours) and costs more on a big model, so the
predictor asks for it only when a view shows it and no newer drawing is waiting.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

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
    traced: bool = True  # records hold every node's outputs (False: the fused run, probabilities only)
    activity: dict[str, float] = field(default_factory=dict)  # node name -> mean |output| (traced runs)
    # view name -> what that view would otherwise compute from this run on the UI thread, computed on the thread
    # that ran it (``Predictor.prepare``)
    prepared: dict[str, Any] = field(default_factory=dict)


def node_activity(records: list) -> dict[str, float]:
    """Mean |a| of each node's first numeric output: what the graph view colours a node by."""
    activity = {}
    for record in records:
        for value in record.outputs.values():
            array = np.asarray(value) if value is not None else None
            if array is not None and array.size and array.dtype.kind in "fiu":
                activity[record.name] = float(np.mean(np.abs(array, dtype=np.float32)
                                                      if array.dtype.kind == "f" else np.abs(array)))
                break
    return activity


def run_prediction(adapter: ModelAdapter, image: np.ndarray, generation: int = 0, drawing: int = 0,
                   traced: bool = True) -> Prediction:
    """Run the model on one image (traced: every node's outputs too); errors come back in the Prediction."""
    start = time.perf_counter()
    try:
        if traced:
            probabilities, records = adapter.predict_traced(image)
        else:
            probabilities, records = adapter.predict(image), []
    except Exception as exc:  # noqa: BLE001 - any engine failure must reach the user, not kill the worker
        return Prediction(image, np.zeros(0), [], [], time.perf_counter() - start, generation,
                          f"{type(exc).__name__}: {exc}", drawing, traced)
    seconds = time.perf_counter() - start
    return Prediction(image, probabilities, adapter.labels(len(probabilities)), records, seconds, generation,
                      drawing=drawing, traced=traced, activity=node_activity(records) if traced else {})
