"""Run a spec: validate inputs, start model workers on Ray, stream results into MLflow.

Everything that can be checked cheaply (data files, splits, the MLflow store, resources, layer
numbers against the model's depth) is checked before the first extraction runs. Results are logged
as each item finishes, so an interruption loses only the items still running; one failing item is
recorded (child run with its error) and the rest go on.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import ray
from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn,
                           TimeRemainingColumn)

from mvplatform.data import PairSplit, load_split
from mvplatform.extraction import layer_numbers
from mvplatform.models import PACKAGED, converted_dir
from mvplatform.spec import ExtractionItem, Spec, expand
from ray_jobs.resources import WorkerRequest, worker_request
from ray_jobs.worker import RemoteModelWorker
from tracking.runs import SubmissionTracker
from tracking.store import check_store, resolve_tracking_uri


@dataclass
class SubmissionSummary:
    parent_run_id: str
    tracking_uri: str
    experiment: str
    done: list[str] = field(default_factory=list)
    failures: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failures


def read_splits(spec: Spec, base_dir: Path | None) -> dict[tuple[str, str], PairSplit]:
    """Every concept x language split, read up front: a missing file stops the run before any work."""
    return {
        (concept, language): load_split(spec.data.dataset, concept, language, spec.data.test_fraction,
                                        spec.data.seed, spec.data.max_pairs, base_dir)
        for concept in spec.data.concepts
        for language in spec.data.languages
    }


def submit(
    spec: Spec,
    spec_path: Path | None = None,
    address: str | None = None,
    cache_dir: Path | None = None,
    console: Console | None = None,
) -> SubmissionSummary:
    """Run every extraction item of ``spec`` and log it; returns what ran and what failed."""
    console = console or Console()
    start = time.perf_counter()
    items = expand(spec)
    splits = read_splits(spec, spec_path.parent if spec_path else None)
    uri = resolve_tracking_uri(spec.tracking.uri)
    client = check_store(uri)

    started_ray = not ray.is_initialized()
    if started_ray:
        ray.init(address=address, include_dashboard=False, logging_level="ERROR", log_to_driver=False,
                 runtime_env={"env_vars": {"TOKENIZERS_PARALLELISM": "false"}})
    try:
        resources = ray.cluster_resources()
        request = worker_request(spec.resources, resources.get("CPU", 1.0), resources.get("GPU", 0.0))
        tracker = SubmissionTracker(client, spec, spec_path)
        summary = SubmissionSummary(tracker.start(len(items)), uri, spec.experiment)
        console.print(f"[bold]mvp[/] {spec.name}: {len(items)} items on Ray "
                      f"({request.describe()} per worker) -> MLflow {uri} run {summary.parent_run_id}")
        try:
            _run_items(spec, items, splits, request, cache_dir, tracker, summary, console)
        except BaseException:
            tracker.abort()
            raise
        tracker.finish(summary.failures)
    finally:
        if started_ray:
            ray.shutdown()
    summary.seconds = time.perf_counter() - start
    return summary


def _run_items(
    spec: Spec, items: list[ExtractionItem], splits: dict[tuple[str, str], PairSplit], request: WorkerRequest,
    cache_dir: Path | None, tracker: SubmissionTracker, summary: SubmissionSummary, console: Console,
) -> None:
    columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=False) as progress:
        bar = progress.add_task("extract + recognise", total=len(items))
        for model in spec.models:
            mine = [item for item in items if item.model == model]
            note = ""
            if model.name in PACKAGED and not converted_dir(model.name, cache_dir).exists():
                note = " (first use: converting the packaged GGUF once, about 2 minutes)"
            progress.update(bar, description=f"loading {model.short_name}{note}")
            workers = [
                RemoteModelWorker.options(num_cpus=request.num_cpus, num_gpus=request.num_gpus,
                                          max_restarts=spec.resources.max_retries,
                                          max_task_retries=spec.resources.max_retries)
                .remote(model, str(cache_dir) if cache_dir else None, request.threads)
                for _ in range(spec.resources.model_workers)
            ]
            try:
                facts = ray.get(workers[0].describe.remote())
            except (ray.exceptions.RayError,) as exc:
                for item in mine:
                    _record_failure(tracker, summary, item, exc)
                progress.advance(bar, len(mine))
                _kill(workers)
                continue
            layer_numbers(spec.extract, int(facts["n_layers"]))  # SpecError before any extraction
            progress.update(bar, description=f"extract + recognise ({model.short_name} on {facts['device']})")
            pending = {
                workers[i % len(workers)].extract.remote(item.concept, item.language,
                                                         splits[(item.concept, item.language)],
                                                         spec.extract, spec.data.seed): item
                for i, item in enumerate(mine)
            }
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1)
                item = pending.pop(ready[0])
                try:
                    result = ray.get(ready[0])
                except ray.exceptions.RayError as exc:
                    _record_failure(tracker, summary, item, exc)
                else:
                    tracker.log_extraction(result, model.short_name)
                    summary.done.append(item.label)
                progress.advance(bar)
            _kill(workers)


def _record_failure(tracker: SubmissionTracker, summary: SubmissionSummary, item: ExtractionItem, exc: Exception) -> None:
    message = root_cause(exc)
    summary.failures[item.label] = message
    tracker.log_failure(item.label, {"model": item.model.short_name, "concept": item.concept,
                                     "language": item.language}, message)


def root_cause(exc: BaseException) -> str:
    """The user-facing message of an error raised inside a Ray worker."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, BaseException):
        return f"{type(cause).__name__}: {cause}"
    text = str(exc).strip().splitlines()
    return text[-1] if text else type(exc).__name__


def _kill(workers: list[ray.actor.ActorHandle]) -> None:
    """Free a model's workers as soon as its items are done, so the next model gets the resources."""
    for worker in workers:
        ray.kill(worker)
