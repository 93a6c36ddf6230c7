"""The MLflow pyfunc model of one cell's concept vectors (logged as MLflow "models from code").

MLflow copies this file into each logged model, so it imports only numpy and safetensors: the model
loads and predicts without mvp installed. ``predict`` projects hidden states onto the concept
direction of one layer, the score mvp's recognition compares: a contrast pair is recognised when its
positive input scores above its negative one.

    model = mlflow.pyfunc.load_model("models:/m-...")       # the Models tab lists the ids
    scores = model.predict(states, params={"layer": 12})    # states: float32 [n, hidden] at mvp layer 12
"""

from __future__ import annotations

import mlflow
import numpy as np
from mlflow.pyfunc import PythonModel
from safetensors.numpy import load_file


class ConceptVectorModel(PythonModel):
    """Concept directions per 1-based decoder layer; predict = projection onto one layer's direction."""

    # no type hints on these two: MLflow would read them as a (wrong) input schema; the signature says it
    def load_context(self, context):
        tensors = load_file(context.artifacts["vectors"])
        self.directions = {int(layer): tensors["directions"][i].astype(np.float64)
                           for i, layer in enumerate(tensors["layers"])}

    def predict(self, context, model_input, params=None):
        layer = int((params or {})["layer"])
        if layer not in self.directions:
            raise ValueError(f"no concept vector for layer {layer}; layers: {sorted(self.directions)}")
        states = np.asarray(model_input, dtype=np.float64)  # [n, hidden]
        return states @ self.directions[layer]  # [n]


mlflow.models.set_model(ConceptVectorModel())
