"""Run a spec: validate inputs, compute or reuse hidden states on Ray, analyse, stream into MLflow.

Everything that can be checked cheaply (data files, splits, the result store, the MLflow store,
resources, layer numbers against the model's depth) is checked before the first forward pass.
Hidden states are cached by content (:mod:`mvplatform.statestore`): a re-submission, a new
direction method or a new analysis runs no model. Results are logged as each item finishes, so an
interruption loses only the items still running; a failing item is recorded (a FAILED child run
with its error) and the rest go on. When every item is cached and there is nothing to steer, no
model is needed at all, so Ray is not started and the analyses run in this process.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import ray
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from mvplatform.control import MODE_LABELS, LanguageEvaluation, check_control, control_steps
from mvplatform.crosslingual import ConceptAnalysis, analyse_concept
from mvplatform.data import PairSplit
from mvplatform.errors import SpecError, root_cause
from mvplatform.extraction import ExtractionResult, PairStates, evaluate_on, layer_numbers, recognise
from mvplatform.inputs import PreparedData, item_state_key, prepare_data
from mvplatform.models import (
    check_device_available,
    check_local_weights,
    default_cache_dir,
    model_depth,
    model_fingerprint,
)
from mvplatform.organism import ORGANISMS, is_built
from mvplatform.search import StudyResult
from mvplatform.spec import ExtractionItem, ModelSpec, Spec, expand
from mvplatform.statestore import StateStore
from ray_jobs.connect import RayAuthError, check_token_mode, is_auth_failure, token_help
from ray_jobs.control import ControlRun, run_control
from ray_jobs.dispatch import ProgressHooks, dispatch
from ray_jobs.pool import WorkerPool
from ray_jobs.resources import WorkerRequest, worker_request
from tracking.control_runs import ControlTracker
from tracking.organism_runs import build_and_log
from tracking.runs import SubmissionTracker
from tracking.store import check_store, resolve_tracking_uri

T = TypeVar("T")


@dataclass
class SubmissionSummary:
    parent_run_id: str
    tracking_uri: str
    experiment: str
    done: list[str] = field(default_factory=list)
    failures: dict[str, str] = field(default_factory=dict)
    computed: list[str] = field(default_factory=list)  # items that ran the model
    cached: list[str] = field(default_factory=list)  # items whose states came from the result store
    analysed: list[str] = field(default_factory=list)
    seconds: float = 0.0
    resumed: int = 0  # 0: a new parent run; N: the Nth resumption of an interrupted submission
    model_loads: dict[str, list[int]] = field(default_factory=dict)  # model -> loads per worker (0 workers: cached)
    stage_seconds: dict[str, float] = field(default_factory=dict)  # load (within extract), extract, analysis, total
    control: dict[str, str] = field(default_factory=dict)  # model -> Table 2 (markdown)
    control_reused: list[str] = field(default_factory=list)  # mode evaluations read from the result store
    ray: bool = True  # False: every item was cached and nothing needed a model, so Ray was not started

    @property
    def ok(self) -> bool:
        return not self.failures


def submit(
    spec: Spec,
    spec_path: Path | None = None,
    address: str | None = None,
    cache_dir: Path | None = None,
    console: Console | None = None,
    verbose: bool = False,
    force: frozenset[str] = frozenset(),
) -> SubmissionSummary:
    """Run every item and analysis of ``spec`` and log it; returns what ran, what was reused, what failed.

    ``verbose`` forwards the Ray workers' own output (transformers' messages, warnings) to the console.
    ``force`` names steps to recompute whatever is stored (:data:`FORCE_STEPS`, or ``all``).

    When the latest submission of the same spec was interrupted (its parent run is not FINISHED),
    this one resumes it: same parent run, no second child run for an item already logged. A forced
    submission always starts a new parent run.
    """
    console = console or Console()
    force = normalise_force(force)
    start = time.perf_counter()
    items = expand(spec)
    data = prepare_data(spec, spec_path.parent if spec_path else None)
    for warning in data.warnings:
        console.print(f"[yellow]warning[/]: {warning}", highlight=False)
    local_ray = address is None and not os.environ.get("RAY_ADDRESS")
    for model in spec.models:  # config and file headers only: bad names and layers fail before any run exists
        check_local_weights(model)
        if local_ray:
            check_device_available(model)
        depth = model_depth(model, cache_dir)
        layer_numbers(spec.extract, depth)
        check_control(spec, depth, model)
    store = StateStore(Path(spec.results.dir))
    store.check_writable()
    uri = resolve_tracking_uri(spec.tracking.uri)
    with store.submission_lock(spec.name, uri):  # a second submission of this spec is refused, not merged
        client = check_store(uri)
        for model in spec.models:  # an organism is built once, in the driver, as its own MLflow run
            if model.name in ORGANISMS and not is_built(model.name, cache_dir or default_cache_dir()):
                console.print(f"model organism {model.name} is not built yet: building it now (once)")
                build_and_log(model.name, cache_dir or default_cache_dir(), uri, console)

        local = address is None and not os.environ.get("RAY_ADDRESS") and not ray.is_initialized()
        cached_request = no_model_needed(spec, data, items, store, force) if local else None
        in_process = cached_request is not None
        started_ray = not in_process and not ray.is_initialized()
        if started_ray:
            start_ray(address, verbose)
        try:
            if cached_request is not None:
                request = cached_request
            else:
                resources = ray.cluster_resources()
                request = worker_request(spec.resources, resources.get("CPU", 1.0), resources.get("GPU", 0.0))
            tracker = SubmissionTracker(client, spec, spec_path)
            tracker.data_files = {key: (data.files[key], digest) for key, digest in data.digests.items()}
            summary = SubmissionSummary(tracker.start(len(items), resume=not force), uri, spec.experiment)
            summary.resumed, summary.ray = tracker.resumed, not in_process
            if force:
                client.set_tag(summary.parent_run_id, "force", ",".join(sorted(force)))
            where = ("all cached, so no model and no Ray" if in_process
                     else f"on Ray ({request.describe()} per worker)")
            console.print(f"[bold]mvp[/] {spec.name}: {len(items)} items, {where} -> MLflow {uri}, "
                          f"run {summary.parent_run_id}", highlight=False)
            if tracker.resumed:
                console.print(f"resuming the interrupted submission {summary.parent_run_id} (resume {tracker.resumed}): "
                              f"{len(tracker.finished)} child runs already logged are kept", highlight=False)
            runner = _Runner(spec, data, store, request, cache_dir, tracker, summary, console, force)
            try:
                runner.run(items)
            except BaseException:
                tracker.abort()
                raise
            summary.model_loads = {pool.model.short_name: pool.loads for pool in runner.pools}
            summary.stage_seconds = {"load": sum(pool.load_seconds for pool in runner.pools), **runner.stage_seconds,
                                     "total": time.perf_counter() - start}
            tracker.finish(summary.failures, {"model_loads": sum(map(sum, summary.model_loads.values())),
                                              "data_pairs_dropped_empty": data.dropped_empty,
                                              **{f"stage_seconds_{k}": v for k, v in summary.stage_seconds.items()}})
        finally:
            if started_ray:
                ray.shutdown()
        summary.seconds = time.perf_counter() - start
        return summary


def start_ray(address: str | None, verbose: bool) -> None:
    """``ray.init`` with Ctrl-C held back until it returns, then honoured with Ray shut down.

    An interrupt in the middle of Ray's start-up once crashed the driver and left Ray's processes
    running; deferred, it stops the submission cleanly a moment later.
    """
    check_token_mode(address)  # a token-mode cluster refusing this driver: a clear message in ms, not ~20 s
    interrupted: list[int] = []
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, lambda signum, _: interrupted.append(signum)) if in_main_thread else None
    try:
        ray.init(address=address, include_dashboard=False, logging_level="ERROR", log_to_driver=verbose,
                 runtime_env={"env_vars": worker_env()})
    except ConnectionError as exc:
        if is_auth_failure(exc):
            raise RayAuthError(token_help(address or os.environ.get("RAY_ADDRESS", "?"))) from exc
        raise
    finally:
        if in_main_thread:
            signal.signal(signal.SIGINT, previous)
    if interrupted:
        ray.shutdown()
        raise KeyboardInterrupt


def local_gpus() -> int:
    """The GPUs a local Ray would see (it counts CUDA devices the same way, CUDA_VISIBLE_DEVICES included)."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def no_model_needed(spec: Spec, data: PreparedData, items: list[ExtractionItem], store: StateStore,
                    force: frozenset[str]) -> WorkerRequest | None:
    """This machine's worker request when no step needs a model (no control stage, reuse on, every
    item's states stored), else None.

    Then a submission runs without Ray: starting it (and the analysis tasks' worker processes)
    would be most of a cached re-submission's time.
    """
    if spec.control is not None or not spec.results.reuse or "extract" in force:
        return None
    try:
        request = worker_request(spec.resources, float(os.cpu_count() or 1), float(local_gpus()))
    except SpecError:
        return None  # let the Ray path report it against the real cluster
    fingerprints = {model: model_fingerprint(model) for model in spec.models}
    cached = all(store.path(item_state_key(spec, data, item, fingerprints[item.model], request.num_gpus > 0)).is_file()
                 for item in items)
    cached = cached and all(  # data.eval_datasets: their pairs' states too
        store.path(item_state_key(spec, data, item, fingerprints[item.model], request.num_gpus > 0, digest)).is_file()
        for item in items for _, _, digest in data.evals.get((item.concept, item.language), []))
    return request if cached else None


FORCE_STEPS = ("extract", "control")  # mvp submit --force STEP; "all" = every one


def normalise_force(force: frozenset[str] | set[str] | list[str] | tuple[str, ...]) -> frozenset[str]:
    """``{"all"}`` -> every step; refuses unknown names."""
    steps = frozenset(force)
    unknown = steps - set(FORCE_STEPS) - {"all"}
    if unknown:
        raise SpecError(f"--force {', '.join(sorted(unknown))}: unknown step; choose from {', '.join(FORCE_STEPS)}, all")
    return frozenset(FORCE_STEPS) if "all" in steps else steps


def worker_env() -> dict[str, str]:
    """Environment for Ray workers (also on a remote cluster, which does not share the driver's).

    ``MVP_*`` variables (the model cache ``MVP_CACHE_DIR``, the test-only ``MVP_FAULT_*`` hooks of
    :mod:`ray_jobs.worker`) and Hugging Face's offline/cache settings travel with the job.
    """
    env = {"TOKENIZERS_PARALLELISM": "false"}
    for name, value in os.environ.items():
        if name.startswith("MVP_") or name in ("HF_HOME", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
            env[name] = value
    # Under `ray job submit` the job's runtime_env already reaches every worker, and Ray refuses a
    # ray.init runtime_env that sets one of its variables again.
    job = json.loads(os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR", "{}") or "{}")
    taken = ((job.get("runtime_env") or {}).get("env_vars") or {}).keys()
    return {name: value for name, value in env.items() if name not in taken}


@ray.remote
def _analyse_remote(results: list[ExtractionResult], analyses: list[str], settings) -> ConceptAnalysis:  # noqa: ANN001
    return analyse_concept(results, analyses, settings)


def _timed(stage: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
    """Adds a _Runner method's wall time to ``stage_seconds[stage]`` (logged as ``stage_seconds_{stage}``)."""
    def wrap(method: Callable[..., T]) -> Callable[..., T]:
        @functools.wraps(method)
        def timed(self: _Runner, *args: Any, **kwargs: Any) -> T:
            start = time.perf_counter()
            try:
                return method(self, *args, **kwargs)
            finally:
                self.stage_seconds[stage] += time.perf_counter() - start
        return timed
    return wrap


class _Runner:
    """Drives one submission's items through cache, workers, recognition, analyses and tracking."""

    def __init__(self, spec: Spec, data: PreparedData, store: StateStore, request: WorkerRequest,
                 cache_dir: Path | None, tracker: SubmissionTracker, summary: SubmissionSummary,
                 console: Console, force: frozenset[str] = frozenset()) -> None:
        self.spec, self.data, self.store, self.request = spec, data, store, request
        self.cache_dir, self.tracker, self.summary, self.console = cache_dir, tracker, summary, console
        self.force = force  # steps to recompute whatever is stored (FORCE_STEPS)
        self.pools: list[WorkerPool] = []  # every model's pool, for its load count once closed
        self.stage_seconds: dict[str, float] = defaultdict(float)  # wall time per stage (see _timed)
        self.cross = spec.cross_lingual
        self.hooks = ProgressHooks()  # set by run() to the console's progress bar

    def run(self, items: list[ExtractionItem]) -> None:
        n_analyses = len(self.spec.models) * len(self.spec.data.concepts) if self.cross else 0
        columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn())
        with Progress(*columns, console=self.console) as progress:
            n_control = control_steps(self.spec) * len(self.spec.models)
            n_eval = sum(len(self.data.evals.get((i.concept, i.language), [])) for i in items)
            bar = progress.add_task("items", total=len(items) + n_analyses + n_control + n_eval)
            self.hooks = ProgressHooks(lambda n: progress.advance(bar, n),
                                       lambda text: progress.update(bar, description=text),
                                       lambda line: progress.console.print(line, highlight=False))
            for skipped in self.data.eval_skipped:
                self.hooks.note(f"  data.eval_datasets: {skipped} not in that data set, skipped")
            self.tracker.eval_skipped = list(self.data.eval_skipped)
            for model in self.spec.models:
                with WorkerPool(model, self.spec, self.request, self.cache_dir) as pool:
                    self.pools.append(pool)
                    results = self._extract_model(model, [i for i in items if i.model == model], pool)
                    if self.data.evals:
                        self._evaluate_model(model, pool, results)
                    if self.spec.control is not None:
                        self._control_model(model, pool, results)
                # After the pool is gone: its actors hold the CPUs the analysis tasks need.
                if self.cross:
                    self._analyse_model(model, results)
            self._flush_tracking()

    @_timed("tracking")
    def _flush_tracking(self) -> None:
        """The extraction runs still being written to MLflow in the background (tracking/writer.py)."""
        self.tracker.flush()

    # -- extraction -----------------------------------------------------------------------------

    @_timed("extract")
    def _extract_model(self, model: ModelSpec, items: list[ExtractionItem], pool: WorkerPool) -> list[ExtractionResult]:
        results: list[ExtractionResult] = []
        fingerprint = model_fingerprint(model)
        keys = {item: item_state_key(self.spec, self.data, item, fingerprint, self.request.num_gpus > 0)
                for item in items}
        reuse = self.spec.results.reuse and "extract" not in self.force
        cached = {item: self.store.get(keys[item]) for item in items} if reuse else {}
        todo = [item for item in items if cached.get(item) is None]
        for item in items:
            if cached.get(item) is not None:
                self._finish_item(item, cached[item], True, results)
        if not todo:
            return results
        workers = pool.workers(self.hooks.describe)
        if workers is None:
            for item in todo:
                self._record_failure(item, pool.error or RuntimeError("model failed to load"))
            self.hooks.advance(len(todo))
            return results
        layer_numbers(self.spec.extract, pool.n_layers)  # SpecError before any forward pass
        self.hooks.describe(f"extract ({model.short_name} on {pool.device})")

        def computed(item: ExtractionItem, states: PairStates) -> None:
            self.store.put(keys[item], states)
            self._finish_item(item, states, False, results)

        def failed(item: ExtractionItem, exc: Exception) -> None:
            self._record_failure(item, exc)
            self.hooks.advance(1)

        dispatch(todo, lambda item, worker: worker.states.remote(self.data.splits[(item.concept, item.language)],
                                                                 self.spec.extract), computed, failed, workers,
                 note=self.hooks.note)
        return results

    @_timed("eval")
    def _evaluate_model(self, model: ModelSpec, pool: WorkerPool, results: list[ExtractionResult]) -> None:
        """data.eval_datasets: each cell's vectors on every pair of each other data set (states cached too)."""
        fingerprint = model_fingerprint(model)
        reuse = self.spec.results.reuse and "extract" not in self.force
        todo: list[tuple[ExtractionResult, str, PairSplit, str]] = []
        for result in results:
            item = ExtractionItem(model, result.concept, result.language)
            for name, split, digest in self.data.evals.get((result.concept, result.language), []):
                key = item_state_key(self.spec, self.data, item, fingerprint, self.request.num_gpus > 0, digest)
                states = self.store.get(key) if reuse else None
                if states is None:
                    todo.append((result, name, split, key))
                else:
                    self._log_eval(result, states, name)
        if not todo:
            return
        workers = pool.workers(self.hooks.describe)

        def failed(job: tuple[ExtractionResult, str, PairSplit, str], exc: Exception) -> None:
            result, name = job[0], job[1]
            self.summary.failures[f"{model.short_name} / {result.concept} / {result.language} / eval {name}"] = (
                root_cause(exc))
            self.hooks.advance(1)

        if workers is None:
            for job in todo:
                failed(job, pool.error or RuntimeError("model failed to load"))
            return
        self.hooks.describe(f"eval data sets ({model.short_name} on {pool.device})")

        def computed(job: tuple[ExtractionResult, str, PairSplit, str], states: PairStates) -> None:
            self.store.put(job[3], states)
            self._log_eval(job[0], states, job[1])

        dispatch(todo, lambda job, worker: worker.states.remote(job[2], self.spec.extract), computed, failed, workers)

    def _log_eval(self, result: ExtractionResult, states: PairStates, name: str) -> None:
        evaluation = evaluate_on(result, states, name, self.spec.data.seed)
        self.tracker.log_eval(evaluation)
        chosen = evaluation.selected
        shown = "" if chosen is None else f", at the training-chosen layer {100 * chosen.point:.1f}%"
        self.hooks.note(f"  {result.model} / {result.concept} / {result.language} on {name}: best layer "
                        f"{evaluation.best_layer} {100 * evaluation.best.point:.1f}%{shown} "
                        f"({evaluation.n_pairs} pairs)")
        self.hooks.advance(1)

    def _finish_item(self, item: ExtractionItem, states: PairStates, cached: bool,
                     results: list[ExtractionResult]) -> None:
        result = recognise(states, item.model.short_name, item.concept, item.language, self.spec.extract,
                           self.spec.data.seed, cached, self.data.splits[(item.concept, item.language)])
        self.tracker.log_extraction(result)
        if not self.cross and result.evidence is not None:  # no consistency bootstrap will need them
            result.evidence.release_train_states()
        results.append(result)
        self.summary.done.append(item.label)
        (self.summary.cached if cached else self.summary.computed).append(item.label)
        layer, accuracy = result.best
        source = "cached" if cached else f"{states.seconds:.1f} s"
        self.hooks.note(f"  {item.label}: best layer {layer}, recognition {100 * accuracy:.1f}% ({source})")
        self.hooks.advance(1)

    def _record_failure(self, item: ExtractionItem, exc: Exception) -> None:
        message = root_cause(exc)
        self.summary.failures[item.label] = message
        self.tracker.log_failure(item.label, {"model": item.model.short_name, "concept": item.concept,
                                              "language": item.language}, message)

    # -- control --------------------------------------------------------------------------------

    @_timed("control")
    def _control_model(self, model: ModelSpec, pool: WorkerPool, results: list[ExtractionResult]) -> None:
        """Steering search and No/LS/En-Control on the same workers (model already loaded)."""
        control = self.spec.control
        assert control is not None
        workers = pool.workers(self.hooks.describe)
        if workers is None:
            self.summary.failures[f"{model.short_name} / control"] = root_cause(pool.error or RuntimeError("load"))
            self.hooks.advance(control_steps(self.spec))
            return
        check_control(self.spec, pool.n_layers, model)
        logger = ControlTracker(self.tracker, model.short_name, control, pool.n_layers)

        def on_study(study: StudyResult) -> None:
            logger.log_study(study, str(self.store.study_path(study.study_name)))
            best = study.best.setting.describe(pool.n_layers) if study.best else "no setting met the guard"
            rate = f", following {100 * study.best.following_rate:.1f}%" if study.best else ""
            self.hooks.note(
                f"  {model.short_name} / {control.concept} / {study.language}: search {len(study.trials)} trials "
                f"({study.resumed_trials} stored), best {best}{rate} (unsteered {100 * study.baseline_following:.1f}%, "
                f"{study.seconds:.0f} s)")

        def on_language(evaluation: LanguageEvaluation) -> None:
            logger.log_language(evaluation)
            rates = ", ".join(f"{MODE_LABELS[m]} {100 * r.rate:.1f}%" for m, (_, r) in evaluation.modes.items())
            self.hooks.note(f"  {model.short_name} / {control.concept} / {evaluation.language}: {rates} "
                            f"({evaluation.seconds:.0f} s)")

        run = ControlRun(self.spec, model, self.store, "control" in self.force, self.hooks)
        outcome = run_control(run, workers, results, self.data.instructions, on_study, on_language)
        self.summary.failures.update(outcome.failures)
        self.summary.control_reused += [f"{model.short_name} / {lang}" for lang in outcome.reused]
        if outcome.evaluations:
            table = logger.log_summary(outcome.evaluations, outcome.studies)
            self.summary.control[model.short_name] = str(table["markdown"])

    # -- analyses -------------------------------------------------------------------------------

    @_timed("analysis")
    def _analyse_model(self, model: ModelSpec, results: list[ExtractionResult]) -> None:
        by_concept: dict[str, list[ExtractionResult]] = defaultdict(list)
        for result in results:
            by_concept[result.concept].append(result)
        self.hooks.describe(f"cross-lingual analyses ({model.short_name})")
        settings = self.spec.analysis_for(model)  # the model's own high-resource group, when it has one
        remote: list[str] = []
        for concept in self.spec.data.concepts:
            label = f"{model.short_name} / {concept} / cross-lingual"
            if len(by_concept[concept]) < 2:
                self.summary.failures[label] = "fewer than 2 languages succeeded; nothing to compare"
            elif not ray.is_initialized():  # everything was cached: no Ray, analyse in this process
                self._log_analysis(label, analyse_concept(by_concept[concept], self.cross, settings))
            else:
                remote.append(concept)
                continue
            self.hooks.advance(1)

        def analysed(concept: str, analysis: ConceptAnalysis) -> None:
            self._log_analysis(f"{model.short_name} / {concept} / cross-lingual", analysis)
            self.hooks.advance(1)

        def failed(concept: str, exc: Exception) -> None:
            self.summary.failures[f"{model.short_name} / {concept} / cross-lingual"] = root_cause(exc)
            self.hooks.advance(1)

        dispatch(remote, lambda concept, _: _analyse_remote.options(num_cpus=1).remote(
            by_concept[concept], self.cross, settings), analysed, failed)
        for result in results:  # the consistency bootstrap is done: free the training states it needed
            if result.evidence is not None:
                result.evidence.release_train_states()

    def _log_analysis(self, label: str, analysis: ConceptAnalysis) -> None:
        self.tracker.log_analysis(analysis)
        self.summary.analysed.append(label)
