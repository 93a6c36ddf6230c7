"""Where a run came from, in the tags MLflow's own UI shows: source, git commit, user, package versions,
and the data files a run read as MLflow dataset inputs (the runs table's Dataset column)."""

from __future__ import annotations

import getpass
import json
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from mlflow.entities import Dataset, DatasetInput, InputTag
from mlflow.utils.mlflow_tags import MLFLOW_GIT_COMMIT, MLFLOW_SOURCE_NAME, MLFLOW_SOURCE_TYPE, MLFLOW_USER

PACKAGES = ("mvp-values", "torch", "transformers", "mlflow", "ray", "optuna", "numpy", "scikit-learn")


def provenance_tags(spec_path: Path | None) -> dict[str, str]:
    """MLflow's source, user and git tags, plus ``versions.{package}`` for what decides the numbers."""
    tags = {MLFLOW_SOURCE_NAME: " ".join(["mvp", *sys.argv[1:]]) if Path(sys.argv[0]).name == "mvp"
            else f"mvp submit {spec_path or ''}".strip(),
            MLFLOW_SOURCE_TYPE: "LOCAL", MLFLOW_USER: _user()}
    commit = git_commit(spec_path.parent if spec_path else Path.cwd())
    if commit:
        tags[MLFLOW_GIT_COMMIT] = commit
    for package in PACKAGES:
        try:
            tags[f"versions.{package}"] = version(package)
        except PackageNotFoundError:
            continue
    return tags


def git_commit(folder: Path) -> str | None:
    """The commit checked out where the spec lives, if it is in a git work tree (never fails a run)."""
    try:
        done = subprocess.run(["git", "rev-parse", "HEAD"], cwd=folder, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 and done.stdout.strip() else None


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def data_input(name: str, path: str, digest: str, context: str = "training") -> DatasetInput:
    """A data file as an MLflow dataset input: name, sha256 digest (first 16 hex) and where it lives."""
    source = Path(path).resolve().as_uri() if not path.startswith("builtin:") else path
    dataset = Dataset(name=name, digest=digest[:16], source_type="local", source=json.dumps({"uri": source}))
    return DatasetInput(dataset, tags=[InputTag("mlflow.data.context", context)])
