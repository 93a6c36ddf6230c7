"""Concept vectors as MLflow logged models (issue 20): the Models tab, metrics linked, registrable.

Each extraction child run's vectors become one logged model: a pyfunc (``tracking/vector_model.py``,
numpy and safetensors only) whose ``predict`` projects hidden states onto a layer's concept direction,
with a signature (float32 ``[-1, hidden]`` in, one score per row out, parameter ``layer`` defaulting
to the layer chosen on the training pairs, else the best one). A pyfunc rather than bare files, so
``mlflow.pyfunc.load_model("models:/<id>")`` gives something that computes mvp's recognition score,
and ``mlflow.register_model`` accepts it. The run's summary metrics are logged with the model's id,
so the Models tab shows them beside it.
"""

from __future__ import annotations

import os
import re
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from mlflow.entities import LoggedModel, LoggedModelOutput
from mlflow.environment_variables import MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR
from mlflow.models.signature import ModelSignature
from mlflow.store.artifact.artifact_repo import ArtifactRepository
from mlflow.tracking import MlflowClient
from mlflow.types.schema import ParamSchema, ParamSpec, Schema, TensorSpec

from mvplatform import __version__
from mvplatform.extraction import ExtractionResult

MODEL_TYPE = "mvp-concept-vectors"
MODEL_CODE = Path(__file__).with_name("vector_model.py")
_QUIET = threading.Lock()  # _quiet() changes process-wide state (an environment variable, warning filters)


def default_layer(result: ExtractionResult) -> int:
    """The layer ``predict`` scores at unless told: chosen on the training pairs when known, else the best."""
    return result.selected[0] if result.selected is not None else result.best[0]


def model_name(result: ExtractionResult) -> str:
    """``{model}-{concept}-{language}`` with the model's path characters made safe (MLflow names refuse '/')."""
    model = re.sub(r"[^A-Za-z0-9_.-]+", "-", result.model).strip("-.") or "model"
    return f"{model}-{result.concept}-{result.language}"


def create_vector_model(client: MlflowClient, experiment_id: str, run_id: str, result: ExtractionResult) -> LoggedModel:
    """A PENDING logged model for the run's vectors (so metrics can name it before its files are up)."""
    tags = {"model": result.model, "concept": result.concept, "language": result.language, "spec_step": "extract"}
    params = {"method": result.vectors.method, "layers": ",".join(map(str, result.vectors.layers)),
              "default_layer": str(default_layer(result)), "mvp_version": __version__}
    return client.create_logged_model(experiment_id, name=model_name(result), source_run_id=run_id, tags=tags,
                                      params=params, model_type=MODEL_TYPE)


def delete_run_models(client: MlflowClient, experiment_id: str, run_id: str) -> int:
    """Delete every logged model whose source is ``run_id``; returns how many.

    A resumed submission deletes its unfinished child runs and logs the items again; their models
    (PENDING if the driver died before the files were up, READY if it died after) would otherwise stay
    in the Models tab beside the new ones, pointing at a deleted run.
    """
    ids: list[str] = []
    token = None
    while True:  # every page first: deleting while paging would shift the pages' offsets
        page = client.search_logged_models([experiment_id], filter_string=f"source_run_id = '{run_id}'",
                                           page_token=token)
        ids += [model.model_id for model in page]
        token = page.token
        if not token:
            break
    for model_id in ids:
        client.delete_logged_model(model_id)
    return len(ids)


def signature(hidden: int, layer: int) -> ModelSignature:
    """float32 ``[-1, hidden]`` states in, ``[-1]`` scores out, parameter ``layer`` (1-based)."""
    return ModelSignature(inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, hidden))]),
                          outputs=Schema([TensorSpec(np.dtype(np.float64), (-1,))]),
                          params=ParamSchema([ParamSpec("layer", "long", layer)]))


@contextmanager
def _quiet() -> Iterator[None]:
    """No MLflow artifact progress bars, nor its advice to add an input example (the signature says what the
    model takes), in a submission's console while a model is written. (MLflow's advice to type ``predict``
    still shows: type hints would make it read a wrong input schema, so there are none.)
    """
    previous = os.environ.get(MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR.name)
    os.environ[MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR.name] = "false"
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*input example", category=UserWarning)
            yield
    finally:
        if previous is None:
            os.environ.pop(MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR.name, None)
        else:
            os.environ[MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR.name] = previous


def upload_vector_model(client: MlflowClient, model: LoggedModel, run_id: str, result: ExtractionResult,
                        vectors_path: Path, folder: Path, repository: ArtifactRepository | None = None) -> None:
    """Write the pyfunc around ``vectors_path`` into ``folder``, log it to the model, mark it READY.

    ``repository``: the model's artifact store when the caller has it (saves a lookup request per model).
    """
    from mlflow.pyfunc import save_model

    hidden = int(np.asarray(result.vectors.directions).shape[-1])
    with _QUIET, _quiet():
        save_model(str(folder), python_model=str(MODEL_CODE), artifacts={"vectors": str(vectors_path)},
                   signature=signature(hidden, default_layer(result)), pip_requirements=["numpy", "safetensors"],
                   metadata={"model": result.model, "concept": result.concept, "language": result.language,
                             "layers": list(result.vectors.layers), "method": result.vectors.method})
    if repository is None:
        client.log_model_artifacts(model.model_id, str(folder))
    else:
        repository.log_artifacts(str(folder))
    client.finalize_logged_model(model.model_id, "READY")
    client.log_outputs(run_id, [LoggedModelOutput(model.model_id, 0)])
