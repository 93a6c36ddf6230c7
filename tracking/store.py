"""Which MLflow store a submission writes to, and a check that it can before any work starts."""

from __future__ import annotations

import logging
import os
import re
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path

from filelock import FileLock
from mlflow.tracking import MlflowClient

from mvplatform.errors import TrackingError
from mvplatform.spec import NAME_PATTERN

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


PROBE_TIMEOUT_S = 5  # the first query to a tracking server: one try, this long at most


def check_store(uri: str) -> MlflowClient:
    """A client for ``uri`` that has answered one query; a clear error when the store is unusable.

    For a tracking server the probe makes one attempt with a short timeout: MLflow's own defaults
    (7 retries with exponential backoff, 120 s timeout) would keep an unreachable server's user
    waiting for minutes. Later requests keep MLflow's retries.
    """
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)  # "Creating initial tables..." is noise
    scheme = uri.split(":", 1)[0].split("+", 1)[0] if ":" in uri else ""
    if scheme not in URI_SCHEMES:
        raise TrackingError(f"{uri!r} is not an MLflow tracking URI (from tracking.uri or MLFLOW_TRACKING_URI); "
                            "use sqlite:///path/to/mlflow.db, http://host:port of a tracking server, or a database "
                            "URI (postgresql://, mysql://), or unset both for the local store")
    try:
        # Two first submissions to a new SQLite store would both create its tables; one would die with
        # "table ... already exists". The lock beside the database file makes the second wait.
        with _creation_lock(uri), _environment(MLFLOW_HTTP_REQUEST_MAX_RETRIES="0",
                                               MLFLOW_HTTP_REQUEST_TIMEOUT=str(PROBE_TIMEOUT_S),
                                               MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR="0"):
            client = MlflowClient(tracking_uri=uri)
            client.search_experiments(max_results=1)
            if uri.startswith("sqlite:///"):
                _check_writable(Path(uri.removeprefix("sqlite:///")))
    except OSError as exc:
        raise TrackingError(f"MLflow store {uri} cannot be written ({exc.strerror or exc}); use a writable folder "
                            "(tracking.uri or MLFLOW_TRACKING_URI), or unset both for ./mlflow.db") from None
    except Exception as exc:  # noqa: BLE001 - any failure here means the same thing to a user
        fix = "start the server, fix MLFLOW_TRACKING_URI or tracking.uri, or unset both for the local store"
        if uri.startswith(("http://", "https://")):
            raise TrackingError(f"MLflow tracking server {uri} is unreachable ({_reason(exc)}); nothing was "
                                f"started. {fix[0].upper()}{fix[1:]}") from None
        raise TrackingError(
            f"MLflow store {uri} cannot be used ({type(exc).__name__}: {str(exc).splitlines()[0][:200]}); {fix}"
        ) from None
    return client


def _check_writable(database: Path) -> None:
    """A write probe rolled back at once: a read-only database file otherwise fails only at the first
    run MLflow creates, after minutes of retries. (Permission bits alone say nothing when run as root.)"""
    connection = sqlite3.connect(database, isolation_level=None, timeout=30)
    try:
        version = int(connection.execute("PRAGMA user_version").fetchone()[0])
        connection.execute("BEGIN IMMEDIATE")
        connection.execute(f"PRAGMA user_version = {version}")
        connection.execute("ROLLBACK")
    except sqlite3.OperationalError as exc:
        raise OSError(str(exc)) from None
    finally:
        connection.close()


URI_SCHEMES = frozenset({"sqlite", "http", "https", "postgresql", "mysql", "mssql", "databricks", "file"})


def _creation_lock(uri: str) -> FileLock | nullcontext[None]:
    if not uri.startswith("sqlite:///"):
        return nullcontext()
    database = Path(uri.removeprefix("sqlite:///"))
    database.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(f"{database}.lock", timeout=120)


@contextmanager
def _environment(**values: str) -> Iterator[None]:
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _reason(exc: Exception) -> str:
    text = str(exc)
    if "refused" in text:
        return "connection refused: no server listens there"
    if "timed out" in text.lower() or "timeout" in text.lower():
        return f"no answer within {PROBE_TIMEOUT_S} s"
    if "Name or service not known" in text or "nodename nor servname" in text or "resolve" in text.lower():
        return "host name not found"
    return f"{type(exc).__name__}: {text.strip().splitlines()[0][:200]}" if text.strip() else type(exc).__name__


def artifact_location(uri: str, experiment: str) -> str | None:
    """Artifacts of a new experiment in a SQLite store live beside the database file.

    MLflow's own default is ``./mlruns`` relative to whichever process creates the experiment,
    which scatters artifacts over working directories; other stores keep MLflow's default.
    """
    if not uri.startswith("sqlite:///"):
        return None
    artifacts = (Path(uri.removeprefix("sqlite:///")).parent / "mlruns").resolve()
    location = (artifacts / experiment).resolve()
    if not re.fullmatch(NAME_PATTERN, experiment) or location.parent != artifacts:
        raise TrackingError(f"experiment name {experiment!r} is not a plain name (letters, digits, _ . -, starting "
                            "with a letter or digit); it would place artifacts outside the store. Rename "
                            "tracking.experiment (or the spec's name)")
    return location.as_uri()
