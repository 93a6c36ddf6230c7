"""Reading submissions back from what MLflow holds: find a run, its children, its spec; ``mvp status``
(items done / total, failures, time per stage, also while it runs) and ``mvp compare`` (the key metrics
of several submissions side by side).
"""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from mlflow.entities import Run
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from mvplatform.errors import TrackingError
from mvplatform.spec import Spec, load_spec


def find_submission(client: MlflowClient, ref: str) -> Run:
    """A parent run by id, or the latest submission of a spec file."""
    if Path(ref).suffix in (".yaml", ".yml") or Path(ref).is_file():
        spec = load_spec(ref)
        experiment = client.get_experiment_by_name(spec.experiment)
        runs = [] if experiment is None else client.search_runs(
            [experiment.experiment_id], f"tags.step = 'submission' and tags.spec = '{spec.name}'",
            order_by=["attributes.start_time DESC"], max_results=1)
        if not runs:
            raise TrackingError(f"no submission of {ref} in the MLflow store {client.tracking_uri}; run mvp submit {ref}")
        return runs[0]
    try:
        run = client.get_run(ref)
    except MlflowException:
        raise TrackingError(f"no run {ref!r} in the MLflow store {client.tracking_uri}; give a parent run id "
                            "(printed by mvp submit) or a spec file") from None
    if run.data.tags.get("step") != "submission":
        raise TrackingError(f"run {ref} is a {run.data.tags.get('step', 'non-mvp')} run; give its parent submission run")
    return run


PAGE = 1000  # runs per search request; every page is read, so no submission is cut off at a count


def search_all(client: MlflowClient, experiment_id: str, query: str) -> list[Run]:
    """Every run matching ``query``, a page at a time (MLflow's page tokens)."""
    runs: list[Run] = []
    token = None
    while True:
        page = client.search_runs([experiment_id], query, max_results=PAGE, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def children(client: MlflowClient, parent: Run, step: str, status: str = "FINISHED") -> list[Run]:
    """The parent's child runs of one ``step`` in one MLflow ``status``, all of them."""
    return search_all(client, parent.info.experiment_id,
                      f"tags.mlflow.parentRunId = '{parent.info.run_id}' and tags.step = '{step}' "
                      f"and attributes.status = '{status}'")


def submission_spec(client: MlflowClient, parent: Run) -> Spec:
    with tempfile.TemporaryDirectory() as tmp:
        path = client.download_artifacts(parent.info.run_id, "spec.resolved.json", tmp)
        return Spec.model_validate(json.loads(Path(path).read_text()))


CELL_METRICS = ("best_accuracy", "best_accuracy_ci_low", "best_accuracy_ci_high", "best_chance_level",
                "selected_accuracy", "selected_accuracy_ci_low", "selected_accuracy_ci_high",
                "baseline_length_rule", "baseline_length_lr", "baseline_bow_lr")


def key_metrics(client: MlflowClient, parent: Run) -> dict[str, float]:
    """The numbers worth comparing across submissions, by readable name."""
    out: dict[str, float] = {}
    for run in children(client, parent, "extract"):
        tags = run.data.tags
        for name in CELL_METRICS:  # the number, its interval, chance and surface baselines (issue 16)
            if name in run.data.metrics:
                out[f"{name} {tags['model']} / {tags['concept']} / {tags['language']}"] = run.data.metrics[name]
    for run in children(client, parent, "cross-lingual"):
        tags, metrics = run.data.tags, run.data.metrics
        for name in sorted(metrics):
            if name == "mean_consistency" or name.startswith(("transfer_", "r_")):
                out[f"{name} {tags['model']} / {tags['concept']}"] = metrics[name]
    if "mean_best_accuracy" in parent.data.metrics:
        out["mean_best_accuracy"] = parent.data.metrics["mean_best_accuracy"]
    return out


def compare(client: MlflowClient, refs: list[str]) -> tuple[list[str], dict[str, list[float | None]]]:
    """(run labels, metric -> one value per run, None where a run lacks it)."""
    parents = [find_submission(client, ref) for ref in refs]
    metrics = [key_metrics(client, p) for p in parents]
    names = sorted(set().union(*metrics), key=lambda n: (n != "mean_best_accuracy", n))
    labels = [f"{p.data.tags.get('spec', '?')} {p.info.run_id[:8]}" for p in parents]
    return labels, {name: [m.get(name) for m in metrics] for name in names}


def latest_submission(client: MlflowClient) -> Run:
    """The most recently started submission in the store, whatever its experiment."""
    experiments = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(experiments, "tags.step = 'submission'", order_by=["attributes.start_time DESC"],
                              max_results=1) if experiments else []
    if not runs:
        raise TrackingError(f"no submission in the MLflow store {client.tracking_uri}; run mvp submit SPEC")
    return runs[0]


@dataclass(frozen=True)
class SubmissionStatus:
    """What ``mvp status`` prints: read back from the parent run's tags and metrics and its child runs."""

    run_id: str
    spec: str
    experiment: str
    status: str  # MLflow's: RUNNING, FINISHED, FAILED, KILLED
    items_done: int
    items_total: int | None
    failures: dict[str, str]  # item label -> error
    analyses_done: int
    stage_seconds: dict[str, float]
    elapsed: float  # seconds from start to end (or to now while running)
    idle: float | None  # seconds since the last progress update, while RUNNING
    resumed: int
    model_loads: float | None


def submission_status(client: MlflowClient, parent: Run, now_ms: int | None = None) -> SubmissionStatus:
    info, tags, metrics = parent.info, parent.data.tags, parent.data.metrics
    now_ms = now_ms if now_ms is not None else int(time.time() * 1000)
    # Only the runs it prints about, each search filtered on the server: with 1000 extraction runs,
    # reading them all (metrics, params, tags) was most of the command's time.
    failures = {f"{r.data.tags.get('model')} / {r.data.tags.get('concept')} / {r.data.tags.get('language')}":
                r.data.tags.get("error", "") for r in children(client, parent, "extract", "FAILED")}
    if "items_done" in tags:
        done = int(tags["items_done"])
    elif "items_done" in metrics:
        done = int(metrics["items_done"])
    else:
        done = len(children(client, parent, "extract"))
    total = int(tags["items_total"]) if "items_total" in tags else None
    end = info.end_time if info.status != "RUNNING" and info.end_time else now_ms
    idle = None
    if info.status == "RUNNING" and "progress_time" in tags:
        idle = max(0.0, (now_ms - int(tags["progress_time"])) / 1000)
    analyses = len(children(client, parent, "cross-lingual"))
    stages = {k.removeprefix("stage_seconds_"): v for k, v in metrics.items() if k.startswith("stage_seconds_")}
    experiment = client.get_experiment(info.experiment_id).name
    return SubmissionStatus(info.run_id, tags.get("spec", "?"), experiment, info.status, done, total, failures,
                            analyses, stages, max(0.0, (end - info.start_time) / 1000), idle,
                            int(tags.get("resumed", "0")), metrics.get("model_loads"))
