"""Which MLflow store a submission writes to, and a check that it can before any work starts."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from mlflow.tracking import MlflowClient

from mvplatform.errors import TrackingError

DEFAULT_DB = "mlflow.db"


def resolve_tracking_uri(spec_uri: str | None = None, workdir: Path | None = None) -> str:
    """The spec's URI, else ``$MLFLOW_TRACKING_URI``, else a SQLite store in the working directory.

    The default matches MLflow's own, so ``mlflow ui`` (and ``mvp ui``) run in the same folder
    show the same runs.
    """
    if spec_uri:
        return spec_uri
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    return f"sqlite:///{(workdir or Path.cwd()).resolve() / DEFAULT_DB}"


def check_store(uri: str) -> MlflowClient:
    """A client for ``uri`` that has answered one query; a clear error when the store is unusable."""
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)  # "Creating initial tables..." is noise
    client = MlflowClient(tracking_uri=uri)
    try:
        client.search_experiments(max_results=1)
    except Exception as exc:  # noqa: BLE001 - any failure here means the same thing to a user
        raise TrackingError(
            f"MLflow store {uri} cannot be used ({type(exc).__name__}: {str(exc).splitlines()[0][:200]}); "
            "start the server, fix MLFLOW_TRACKING_URI or tracking.uri, or unset both for the local store"
        ) from None
    return client


def artifact_location(uri: str, experiment: str) -> str | None:
    """Artifacts of a new experiment in a SQLite store live beside the database file.

    MLflow's own default is ``./mlruns`` relative to whichever process creates the experiment,
    which scatters artifacts over working directories; other stores keep MLflow's default.
    """
    if not uri.startswith("sqlite:///"):
        return None
    database = Path(uri.removeprefix("sqlite:///"))
    return (database.parent / "mlruns" / experiment).resolve().as_uri()
