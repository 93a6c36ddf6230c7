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
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TaskID, TextColumn,
                           TimeElapsedColumn, TimeRemainingColumn)

from mvplatform.control import MODE_LABELS, LanguageEvaluation
from mvplatform.crosslingual import ConceptAnalysis, analyse_concept
from mvplatform.data import (InstructionSplit, PairSplit, check_lengths, load_eval_pairs, load_instructions, load_split,
                             pair_file, pair_texts, resolve_dataset, sandbox_root_for, split_warnings)
from mvplatform.errors import SpecError
from mvplatform.extraction import ExtractionResult, PairStates, evaluate_on, layer_numbers, recognise
from mvplatform.models import (PACKAGED, check_device_available, check_local_weights, converted_dir,
                               default_cache_dir, model_depth, model_fingerprint)
from mvplatform.organism import ORGANISMS, is_built
from mvplatform.spec import ExtractionItem, ModelSpec, Spec, expand
from mvplatform.search import StudyResult
from mvplatform.statestore import StateStore, file_digest, state_key
from ray_jobs.control import control_steps, run_control
from ray_jobs.resources import WorkerRequest, worker_request
from ray_jobs.worker import RemoteModelWorker
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


@dataclass(frozen=True)
class PreparedData:
    splits: dict[tuple[str, str], PairSplit]
    digests: dict[tuple[str, str], str]  # sha256 of each data file: part of the state cache key
    instructions: dict[str, InstructionSplit] = field(default_factory=dict)  # control languages
    warnings: list[str] = field(default_factory=list)  # weak but usable data: printed, never fatal
    dropped_empty: int = 0  # pairs with an empty side, over all files (logged as data_pairs_dropped_empty)
    # (concept, language) -> [(data set name, all its pairs as test pairs, file digest)]: data.eval_datasets
    evals: dict[tuple[str, str], list[tuple[str, PairSplit, str]]] = field(default_factory=dict)
    eval_skipped: list[str] = field(default_factory=list)  # "name: concept/language" an eval data set lacks
    files: dict[tuple[str, str], str] = field(default_factory=dict)  # (concept, language) -> its data file


def prepare_data(spec: Spec, base_dir: Path | None) -> PreparedData:
    """Every split and control instruction set, read up front: a bad file stops the run before any work."""
    sandbox = sandbox_root_for(spec.data.sandbox, spec.data.data_root, base_dir)
    root = resolve_dataset(spec.data.dataset, base_dir, sandbox)
    splits, digests, warnings, dropped_empty, files = {}, {}, [], 0, {}
    for concept in spec.data.concepts:
        for language in spec.data.languages:
            splits[(concept, language)] = load_split(spec.data.dataset, concept, language, spec.data.test_fraction,
                                                     spec.data.seed, spec.data.max_pairs, base_dir, sandbox)
            path = pair_file(root, concept, language)
            digests[(concept, language)] = file_digest(path)
            files[(concept, language)] = str(path)
            check_lengths(pair_texts(splits[(concept, language)]), path, spec.data.max_input_chars)
            warnings += split_warnings(splits[(concept, language)], path, language)
            dropped_empty += len(splits[(concept, language)].dropped_empty)
    instructions = {}
    if spec.control is not None:
        for language in spec.control_languages:
            instructions[language] = load_instructions(language, spec.control.search_fraction, spec.data.seed,
                                                       spec.control.instructions, base_dir, sandbox)
            texts = {f"{kind} {i}": text for part in (instructions[language].search, instructions[language].test)
                     for kind, items in part.items() for i, text in items.items()}
            check_lengths(texts, Path(spec.control.instructions) / f"{language}.json", spec.data.max_input_chars)
    evals, skipped = prepare_evals(spec, base_dir, sandbox)
    return PreparedData(splits, digests, instructions, warnings, dropped_empty, evals, skipped, files)


def prepare_evals(spec: Spec, base_dir: Path | None, sandbox: Path | None
                  ) -> tuple[dict[tuple[str, str], list[tuple[str, PairSplit, str]]], list[str]]:
    """Every pair of every ``data.eval_datasets`` entry, per concept x language the spec extracts.

    A missing folder or a path outside the sandbox stops the run; a concept or language the data set
    lacks is skipped and listed.
    """
    evals: dict[tuple[str, str], list[tuple[str, PairSplit, str]]] = defaultdict(list)
    skipped: list[str] = []
    cells = sorted({(item.concept, item.language) for item in expand(spec)})
    names = eval_names(spec.data.eval_datasets)
    for index, (dataset, name) in enumerate(zip(spec.data.eval_datasets, names)):
        for concept, language in cells:
            found = load_eval_pairs(dataset, concept, language, index, base_dir, sandbox)
            if found is None:
                skipped.append(f"{name}: {concept}/{language}")
                continue
            path, pairs = found
            split = PairSplit([], pairs)
            check_lengths(pair_texts(split), path, spec.data.max_input_chars)
            evals[(concept, language)].append((name, split, file_digest(path)))
    return dict(evals), skipped


def eval_names(datasets: list[str]) -> list[str]:
    """A short, unique name per eval data set: its folder's name (``_2``, ``_3`` on repeats)."""
    names: list[str] = []
    for dataset in datasets:
        base = Path(dataset.removeprefix("builtin:")).name or "eval"
        name, k = base, 2
        while name in names:
            name, k = f"{base}_{k}", k + 1
        names.append(name)
    return names


def check_control(spec: Spec, n_layers: int, model: ModelSpec) -> None:
    """Control settings that need the model's depth: refused before any work, like extract.layers."""
    control = spec.control
    if control is None:
        return
    first = control.search.layers.start[0]
    if first > n_layers:
        raise SpecError(f"control.search.layers.start: windows start at layer {first} or later, but "
                        f"{model.name} has {n_layers} decoder layers; use a start range within 1..{n_layers}")
    if spec.extract.layers != "all":
        reach = range(first, min(n_layers, control.search.layers.start[1] + control.search.layers.width[1] - 1) + 1)
        missing = [layer for layer in reach if layer not in spec.extract.layers]
        if missing:
            raise SpecError(f"control.search.layers: windows can reach layers {missing} that extract.layers "
                            "does not extract; set extract.layers: all or narrow the window ranges")


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
    interrupted: list[int] = []
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, lambda signum, _: interrupted.append(signum)) if in_main_thread else None
    try:
        ray.init(address=address, include_dashboard=False, logging_level="ERROR", log_to_driver=verbose,
                 runtime_env={"env_vars": worker_env()})
    finally:
        if in_main_thread:
            signal.signal(signal.SIGINT, previous)
    if interrupted:
        ray.shutdown()
        raise KeyboardInterrupt


def item_state_key(spec: Spec, data: PreparedData, item: ExtractionItem, fingerprint: dict[str, str],
                   on_gpu: bool, digest: str | None = None) -> str:
    """The result-store key of an item's hidden states: model, data file and every setting they depend on.

    ``digest``: another data file's (an eval data set's pairs for this item), else the item's own.
    """
    d, e = spec.data, spec.extract
    params = {"test_fraction": d.test_fraction, "seed": d.seed, "max_pairs": d.max_pairs, "token": e.token,
              "read": e.read, "accelerator": "gpu" if on_gpu else "cpu"}  # "read" (issue 23) also retires pre-23 states
    if digest is not None:
        params["eval"] = True  # every pair is a test pair: a different layout from the item's split
    return state_key(fingerprint, digest or data.digests[(item.concept, item.language)], params)


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


class WorkerPool:
    """The model-holding actors of one model, started on first need and killed on exit.

    Extraction and control share the pool, so a model is loaded once per worker per submission,
    and not at all when every result comes from the store.
    """

    def __init__(self, model: ModelSpec, spec: Spec, request: WorkerRequest, cache_dir: Path | None) -> None:
        self.model, self.spec, self.request, self.cache_dir = model, spec, request, cache_dir
        self._workers: list | None = None
        self.error: Exception | None = None
        self.n_layers = 0
        self.device = ""
        self.loads: list[int] = []  # model loads per worker (1 + Ray restarts), known once the pool closes
        self.load_seconds = 0.0  # until the first worker answered (the others load alongside)

    def workers(self, progress: Progress | None = None, bar: TaskID | None = None) -> list | None:
        """The live actors (loading the model on first call), or None when loading failed."""
        if self._workers is not None or self.error is not None:
            return self._workers
        if progress is not None and bar is not None:
            note = ""
            if self.model.name in PACKAGED and not converted_dir(self.model.name, self.cache_dir).exists():
                note = " (first use: converting the packaged GGUF once, about 2 minutes)"
            progress.update(bar, description=f"loading {self.model.short_name}{note}")
        retries = self.spec.resources.max_retries
        workers = [
            RemoteModelWorker.options(num_cpus=self.request.num_cpus, num_gpus=self.request.num_gpus,
                                      max_restarts=retries, max_task_retries=retries)
            .remote(self.model, str(self.cache_dir) if self.cache_dir else None, self.request.threads)
            for _ in range(self.spec.resources.model_workers)
        ]
        start = time.perf_counter()
        try:
            facts = ray.get(workers[0].describe.remote())
        except ray.exceptions.RayError as exc:
            self.error = exc
            for worker in workers:
                ray.kill(worker)
            return None
        self.n_layers, self.device = int(facts["n_layers"]), str(facts["device"])
        self.load_seconds = time.perf_counter() - start
        self._workers = workers
        return workers

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.loads = [1 + actor_restarts(worker) for worker in self._workers or []]
        for worker in self._workers or []:  # free the resources for the next model
            ray.kill(worker)
        self._workers = None


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

    def run(self, items: list[ExtractionItem]) -> None:
        n_analyses = len(self.spec.models) * len(self.spec.data.concepts) if self.cross else 0
        columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn())
        with Progress(*columns, console=self.console) as progress:
            n_control = control_steps(self.spec) * len(self.spec.models)
            n_eval = sum(len(self.data.evals.get((i.concept, i.language), [])) for i in items)
            bar = progress.add_task("items", total=len(items) + n_analyses + n_control + n_eval)
            for skipped in self.data.eval_skipped:
                progress.console.print(f"  data.eval_datasets: {skipped} not in that data set, skipped", highlight=False)
            self.tracker.eval_skipped = list(self.data.eval_skipped)
            for model in self.spec.models:
                with WorkerPool(model, self.spec, self.request, self.cache_dir) as pool:
                    results = self._extract_model(model, [i for i in items if i.model == model], pool, progress,
                                                  bar)
                    if self.data.evals:
                        self._evaluate_model(model, pool, results, progress, bar)
                    if self.spec.control is not None:
                        self._control_model(model, pool, results, progress, bar)
                # After the pool is gone: its actors hold the CPUs the analysis tasks need.
                if self.cross:
                    self._analyse_model(model, results, progress, bar)

    # -- extraction -----------------------------------------------------------------------------

    @_timed("extract")
    def _extract_model(self, model: ModelSpec, items: list[ExtractionItem], pool: WorkerPool, progress: Progress,
                       bar: TaskID) -> list[ExtractionResult]:
        self.pools.append(pool)
        results: list[ExtractionResult] = []
        fingerprint = model_fingerprint(model)
        keys = {item: item_state_key(self.spec, self.data, item, fingerprint, self.request.num_gpus > 0)
                for item in items}
        reuse = self.spec.results.reuse and "extract" not in self.force
        cached = {item: self.store.get(keys[item]) for item in items} if reuse else {}
        todo = [item for item in items if cached.get(item) is None]
        for item in items:
            if cached.get(item) is not None:
                self._finish_item(item, cached[item], True, results, progress, bar)
        if not todo:
            return results
        workers = pool.workers(progress, bar)
        if workers is None:
            for item in todo:
                self._record_failure(item, pool.error or RuntimeError("model failed to load"))
            progress.advance(bar, len(todo))
            return results
        layer_numbers(self.spec.extract, pool.n_layers)  # SpecError before any forward pass
        progress.update(bar, description=f"extract ({model.short_name} on {pool.device})")
        pending = {
            workers[i % len(workers)].states.remote(self.data.splits[(item.concept, item.language)],
                                                    self.spec.extract): item
            for i, item in enumerate(todo)
        }
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            item = pending.pop(ready[0])
            try:
                states: PairStates = ray.get(ready[0])
            except ray.exceptions.RayError as exc:
                self._record_failure(item, exc)
                progress.advance(bar)
                continue
            self.store.put(keys[item], states)
            self._finish_item(item, states, False, results, progress, bar)
        return results

    @_timed("eval")
    def _evaluate_model(self, model: ModelSpec, pool: WorkerPool, results: list[ExtractionResult], progress: Progress,
                        bar: TaskID) -> None:
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
                    self._log_eval(result, states, name, progress, bar)
        if not todo:
            return
        workers = pool.workers(progress, bar)
        if workers is None:
            for result, name, _, _ in todo:
                self.summary.failures[f"{model.short_name} / {result.concept} / {result.language} / eval {name}"] = (
                    root_cause(pool.error or RuntimeError("model failed to load")))
            progress.advance(bar, len(todo))
            return
        progress.update(bar, description=f"eval data sets ({model.short_name} on {pool.device})")
        pending = {workers[i % len(workers)].states.remote(split, self.spec.extract): (result, name, key)
                   for i, (result, name, split, key) in enumerate(todo)}
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            result, name, key = pending.pop(ready[0])
            try:
                states: PairStates = ray.get(ready[0])
            except ray.exceptions.RayError as exc:
                self.summary.failures[f"{model.short_name} / {result.concept} / {result.language} / eval {name}"] = (
                    root_cause(exc))
                progress.advance(bar)
                continue
            self.store.put(key, states)
            self._log_eval(result, states, name, progress, bar)

    def _log_eval(self, result: ExtractionResult, states: PairStates, name: str, progress: Progress,
                  bar: TaskID) -> None:
        evaluation = evaluate_on(result, states, name, self.spec.data.seed)
        self.tracker.log_eval(evaluation)
        chosen = evaluation.selected
        shown = "" if chosen is None else f", at the training-chosen layer {100 * chosen.point:.1f}%"
        progress.console.print(f"  {result.model} / {result.concept} / {result.language} on {name}: best layer "
                               f"{evaluation.best_layer} {100 * evaluation.best.point:.1f}%{shown} "
                               f"({evaluation.n_pairs} pairs)", highlight=False)
        progress.advance(bar)

    def _finish_item(self, item: ExtractionItem, states: PairStates, cached: bool,
                     results: list[ExtractionResult], progress: Progress, bar: TaskID) -> None:
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
        progress.console.print(f"  {item.label}: best layer {layer}, recognition {100 * accuracy:.1f}% ({source})",
                               highlight=False)
        progress.advance(bar)

    def _record_failure(self, item: ExtractionItem, exc: Exception) -> None:
        message = root_cause(exc)
        self.summary.failures[item.label] = message
        self.tracker.log_failure(item.label, {"model": item.model.short_name, "concept": item.concept,
                                              "language": item.language}, message)

    # -- control --------------------------------------------------------------------------------

    @_timed("control")
    def _control_model(self, model: ModelSpec, pool: WorkerPool, results: list[ExtractionResult],
                       progress: Progress, bar: TaskID) -> None:
        """Steering search and No/LS/En-Control on the same workers (model already loaded)."""
        control = self.spec.control
        assert control is not None
        workers = pool.workers(progress, bar)
        if workers is None:
            self.summary.failures[f"{model.short_name} / control"] = root_cause(pool.error or RuntimeError("load"))
            progress.advance(bar, control_steps(self.spec))
            return
        check_control(self.spec, pool.n_layers, model)
        logger = ControlTracker(self.tracker, model.short_name, control, pool.n_layers)
        store_root = Path(self.spec.results.dir)

        def on_study(study: StudyResult) -> None:
            path = store_root / "studies" / f"{study.study_name}.journal"
            logger.log_study(study, str(path))
            best = study.best.setting.describe(pool.n_layers) if study.best else "no setting met the guard"
            rate = f", following {100 * study.best.following_rate:.1f}%" if study.best else ""
            progress.console.print(
                f"  {model.short_name} / {control.concept} / {study.language}: search {len(study.trials)} trials "
                f"({study.resumed_trials} stored), best {best}{rate} (unsteered {100 * study.baseline_following:.1f}%, "
                f"{study.seconds:.0f} s)", highlight=False)

        def on_language(evaluation: LanguageEvaluation) -> None:
            logger.log_language(evaluation)
            rates = ", ".join(f"{MODE_LABELS[m]} {100 * r.rate:.1f}%" for m, (_, r) in evaluation.modes.items())
            progress.console.print(f"  {model.short_name} / {control.concept} / {evaluation.language}: {rates} "
                                   f"({evaluation.seconds:.0f} s)", highlight=False)

        outcome = run_control(self.spec, model, workers, pool.n_layers, results, self.data.instructions, store_root,
                              "control" in self.force, progress, bar, on_study, on_language)
        self.summary.failures.update(outcome.failures)
        self.summary.control_reused += [f"{model.short_name} / {lang}" for lang in outcome.reused]
        if outcome.evaluations:
            table = logger.log_summary(outcome.evaluations, outcome.studies)
            self.summary.control[model.short_name] = str(table["markdown"])

    # -- analyses -------------------------------------------------------------------------------

    @_timed("analysis")
    def _analyse_model(self, model: ModelSpec, results: list[ExtractionResult], progress: Progress,
                       bar: TaskID) -> None:
        by_concept: dict[str, list[ExtractionResult]] = defaultdict(list)
        for result in results:
            by_concept[result.concept].append(result)
        progress.update(bar, description=f"cross-lingual analyses ({model.short_name})")
        settings = self.spec.analysis_for(model)  # the model's own high-resource group, when it has one
        pending = {}
        for concept in self.spec.data.concepts:
            label = f"{model.short_name} / {concept} / cross-lingual"
            if len(by_concept[concept]) < 2:
                self.summary.failures[label] = "fewer than 2 languages succeeded; nothing to compare"
            elif not ray.is_initialized():  # everything was cached: no Ray, analyse in this process
                self._log_analysis(label, analyse_concept(by_concept[concept], self.cross, settings))
            else:
                ref = _analyse_remote.options(num_cpus=1).remote(by_concept[concept], self.cross, settings)
                pending[ref] = label
                continue
            progress.advance(bar)
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            label = pending.pop(ready[0])
            try:
                self._log_analysis(label, ray.get(ready[0]))
            except ray.exceptions.RayError as exc:
                self.summary.failures[label] = root_cause(exc)
            progress.advance(bar)
        for result in results:  # the consistency bootstrap is done: free the training states it needed
            if result.evidence is not None:
                result.evidence.release_train_states()

    def _log_analysis(self, label: str, analysis: ConceptAnalysis) -> None:
        self.tracker.log_analysis(analysis)
        self.summary.analysed.append(label)


def actor_restarts(actor: object) -> int:
    """How often Ray restarted an actor after its process died (0 when the count cannot be read)."""
    try:
        from ray._private import state  # the GCS actor table; the public state API needs the dashboard

        return int(state.actors(actor._actor_id.hex()).get("NumRestarts", 0))  # type: ignore[attr-defined]
    except Exception:  # noqa: BLE001 - a count for the record, never worth failing a submission
        return 0


def root_cause(exc: BaseException) -> str:
    """The user-facing message of an error raised inside a Ray worker."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, BaseException):
        return f"{type(cause).__name__}: {cause}"
    text = str(exc).strip().splitlines()
    return text[-1] if text else type(exc).__name__
