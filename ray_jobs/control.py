"""The control stage on Ray: one Optuna study per language, then every mode per language, on the
model workers that already hold the model (PAPER.md section 5).

The driver owns every study: it runs Optuna's ask/tell (:func:`mvplatform.search.run_study`) and
writes the study's journal file in its own result store, and the model actors only generate and
judge each batch of trials (:class:`RemoteController`, one actor call per batch). So no worker
reads or writes the driver's disk, and ``--force`` deletes the only copy of a study. Studies run
several at once, each in a driver thread holding one free actor for its duration, so
``resources.model_workers: 4`` runs four languages at once. A study's journal is named by the
content of everything the study depends on: a re-submission resumes an interrupted study and
reuses a finished one without generating anything. A language's mode evaluation is a JSON record
in the store under its content key, so a re-submission reuses it too.

The driver runs the searches (:func:`run_searches`), then the modes (:func:`run_modes`, jobs to the
pool's free actors through :func:`ray_jobs.dispatch.dispatch`).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ray

from mvplatform.concepts import ConceptVectors
from mvplatform.control import (
    MODE_LABELS,
    Controller,
    ControllerStats,
    Evaluation,
    LanguageEvaluation,
    ModeTask,
    Setting,
    curve_strengths,
    evaluate_language,
    evaluation_from_json,
    evaluation_to_json,
    plan_modes,
    search_languages,
)
from mvplatform.data import InstructionSplit
from mvplatform.errors import root_cause
from mvplatform.extraction import ExtractionResult
from mvplatform.judges import build_judge
from mvplatform.models import LoadedModel, load_model, model_fingerprint
from mvplatform.search import StudyResult, run_study
from mvplatform.spec import ControlSpec, ModelSpec, Spec
from mvplatform.statestore import StateStore, array_digest, content_key
from ray_jobs.dispatch import ProgressHooks, dispatch


@dataclass(frozen=True)
class EvaluationJob:
    control: ControlSpec
    language: str
    tasks: list[ModeTask]
    vectors: dict[str, ConceptVectors]
    harmful: list[str]
    curve: list[float]


def make_controller(loaded: LoadedModel, control: ControlSpec, cache_dir: Path | None) -> Controller:
    judge = build_judge(control.judge, load=lambda spec: load_model(spec, cache_dir))
    return Controller(loaded, judge, control)


def run_evaluation_job(controller: Controller, job: EvaluationJob) -> LanguageEvaluation:
    return evaluate_language(controller, job.language, job.tasks, job.vectors, job.harmful, job.curve)


def evaluate_settings(controller: Controller, language: str, instructions: list[str],
                      settings: list[Setting | None], vectors: ConceptVectors | None
                      ) -> tuple[list[Evaluation], ControllerStats]:
    """One batch of a driver's study, on the actor: the evaluations and what generating them cost."""
    before = ControllerStats(**vars(controller.stats))
    evaluations = controller.evaluate(language, instructions, settings, vectors)
    after = controller.stats
    return evaluations, ControllerStats(after.rows - before.rows, after.generate_calls - before.generate_calls,
                                        after.new_tokens - before.new_tokens, after.seconds - before.seconds)


# ---------------------------------------------------------------------------------------------
# Driver side


@dataclass(frozen=True)
class ModelDepth:
    """The one fact about the actor's model that a study reads on the driver."""

    n_layers: int


class RemoteController:
    """The driver's stand-in for an actor's :class:`Controller`, with what ``run_study`` uses.

    ``evaluate`` is one blocking call to the actor, which keeps the real controller (and judge);
    the study's vectors go to Ray's object store once and travel to the actor by reference.
    """

    def __init__(self, worker: Any, control: ControlSpec, n_layers: int, vectors: ConceptVectors) -> None:
        self.worker, self.control, self.vectors = worker, control, vectors
        self.loaded = ModelDepth(n_layers)
        self.stats = ControllerStats()
        self._vectors_ref: ray.ObjectRef | None = None

    def evaluate(self, language: str, instructions: list[str], settings: list[Setting | None],
                 vectors: ConceptVectors | None) -> list[Evaluation]:
        sent: ConceptVectors | ray.ObjectRef | None = vectors
        if vectors is not None and vectors is self.vectors:
            if self._vectors_ref is None:
                self._vectors_ref = ray.put(vectors)
            sent = self._vectors_ref
        evaluations, cost = ray.get(self.worker.control_evaluate_settings.remote(
            self.control, language, instructions, settings, sent))
        for name, value in vars(cost).items():
            setattr(self.stats, name, getattr(self.stats, name) + value)
        return evaluations


class StudyCancelled(Exception):
    """Raised between batches in a study's thread when the driver stops the search stage."""


def study_name(spec: Spec, model: ModelSpec, language: str, vectors: ConceptVectors, texts: list[str]) -> str:
    """A name that changes whenever anything the study's outcome depends on changes."""
    control = spec.control
    assert control is not None
    relevant = control.model_dump(mode="json", exclude={"modes", "curve_points", "test_instructions", "languages"})
    key = content_key({"model": model_fingerprint(model), "directions": array_digest(vectors.directions),
                       "norms": array_digest(vectors.norms), "control": relevant, "texts": texts}, 12)
    return f"{model.short_name}-{control.concept}-{language}-{key}"


def evaluation_key(model: ModelSpec, job: EvaluationJob) -> str:
    """Content key of a language's mode evaluation: model, vectors, settings, instructions, control spec."""
    vectors = {source: [array_digest(v.directions), array_digest(v.norms)] for source, v in job.vectors.items()}
    tasks = [[t.mode, t.vectors_from, None if t.setting is None else [t.setting.start, t.setting.width,
                                                                      t.setting.strength]] for t in job.tasks]
    control = job.control.model_dump(mode="json", exclude={"search", "languages"})
    key = content_key({"model": model_fingerprint(model), "vectors": vectors, "tasks": tasks, "curve": job.curve,
                       "harmful": job.harmful, "control": control}, 16)
    return f"{model.short_name}-{job.control.concept}-{job.language}-{key}"


@dataclass(frozen=True)
class ControlRun:
    """What both phases of one model's control stage share."""

    spec: Spec
    model: ModelSpec
    store: StateStore
    force: bool  # recompute studies and evaluations whatever is stored
    hooks: ProgressHooks = field(default_factory=ProgressHooks)

    @property
    def control(self) -> ControlSpec:
        assert self.spec.control is not None
        return self.spec.control


@dataclass
class ControlOutcome:
    studies: dict[str, StudyResult]
    evaluations: list[LanguageEvaluation]
    failures: dict[str, str]
    reused: list[str]


def run_control(run: ControlRun, workers: list, results: list[ExtractionResult],
                instructions: dict[str, InstructionSplit],
                on_study: Callable[[StudyResult], None] | None = None,
                on_language: Callable[[LanguageEvaluation], None] | None = None) -> ControlOutcome:
    """Search every language that needs it, then evaluate every mode on the test instructions.

    ``on_study(result)`` and ``on_language(evaluation)`` are called as each finishes (logging).
    """
    control, model = run.control, run.model
    vectors = {r.language: r.vectors for r in results if r.concept == control.concept and r.model == model.short_name}
    failures = {f"{model.short_name} / control / {language}": f"no {control.concept} vectors for {language} "
                "(its extraction failed)" for language in run.spec.control_languages if language not in vectors}
    wanted = search_languages(control, run.spec.control_languages)
    to_search = [lang for lang in wanted if lang in vectors]
    if len(wanted) - len(to_search) + len(failures):  # keep the count honest for languages not controlled
        run.hooks.advance(len(wanted) - len(to_search) + len(failures))
    studies = run_searches(run, workers, to_search, vectors, instructions, failures, on_study)
    evaluations, reused = run_modes(run, workers, vectors, studies, instructions, failures, on_language)
    return ControlOutcome(studies, evaluations, failures, reused)


@dataclass(frozen=True)
class StudyJob:
    """One language's study, run by the driver (its journal is in the driver's result store)."""

    language: str
    vectors: ConceptVectors
    harmful: list[str]
    harmless: list[str]
    storage_path: Path
    study_name: str


def run_searches(run: ControlRun, workers: list, languages: list[str], vectors: dict[str, ConceptVectors],
                 instructions: dict[str, InstructionSplit], failures: dict[str, str],
                 on_study: Callable[[StudyResult], None] | None = None) -> dict[str, StudyResult]:
    """One Optuna study per language on the driver, as many at once as there are workers.

    Each study's thread holds one free worker for the study's duration; results, failures (into
    ``failures``) and progress are handled here, on the calling thread, as studies finish.
    """
    control, model = run.control, run.model
    run.hooks.describe(f"control search ({model.short_name}: {len(languages)} studies)")
    jobs = []
    for language in languages:
        split = instructions[language]
        harmful = list(split.search["harmful"].values())[: control.search.instructions]
        harmless = list(split.search["harmless"].values())
        name = study_name(run.spec, model, language, vectors[language], harmful + harmless)
        path = run.store.study_path(name)
        if run.force and path.exists():
            path.unlink()
        jobs.append(StudyJob(language, vectors[language], harmful, harmless, path, name))
    studies: dict[str, StudyResult] = {}
    if not jobs:
        return studies
    free: queue.SimpleQueue = queue.SimpleQueue()
    for worker in workers:
        free.put(worker)
    stop = threading.Event()

    def search(job: StudyJob) -> StudyResult:
        worker = free.get()  # never waits: at most len(workers) studies run at once
        try:
            if stop.is_set():
                raise StudyCancelled(job.language)
            return _driver_study(run.control, worker, job, stop)
        finally:
            free.put(worker)

    executor = ThreadPoolExecutor(max_workers=len(workers), thread_name_prefix="mvp-study")
    futures: dict[Future, StudyJob] = {executor.submit(search, job): job for job in jobs}
    try:
        for future in as_completed(futures):
            job = futures[future]
            try:
                study = future.result()
            except Exception as exc:  # noqa: BLE001 - a failed study fails its language, not the submission
                failures[f"{model.short_name} / control search / {job.language}"] = root_cause(exc)
            else:
                studies[job.language] = study
                if on_study is not None:
                    on_study(study)
            run.hooks.advance(1)
    finally:  # interrupted (Ctrl-C): running studies stop after their current batch
        stop.set()
        executor.shutdown(wait=True, cancel_futures=True)
    return studies


def _driver_study(control: ControlSpec, worker: Any, job: StudyJob, stop: threading.Event) -> StudyResult:
    """Run one study here, its batches generated and judged by ``worker``."""
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    def check(done: int, total: int) -> None:
        if stop.is_set():
            raise StudyCancelled(job.language)

    n_layers = int(ray.get(worker.describe.remote())["n_layers"])
    job.storage_path.parent.mkdir(parents=True, exist_ok=True)
    storage = JournalStorage(JournalFileBackend(str(job.storage_path)))
    return run_study(RemoteController(worker, control, n_layers, job.vectors), job.language, job.vectors,
                     job.harmful, job.harmless, control.search, storage, job.study_name, on_batch=check)


def run_modes(run: ControlRun, workers: list, vectors: dict[str, ConceptVectors], studies: dict[str, StudyResult],
              instructions: dict[str, InstructionSplit], failures: dict[str, str],
              on_language: Callable[[LanguageEvaluation], None] | None = None
              ) -> tuple[list[LanguageEvaluation], list[str]]:
    """Every mode of every language with vectors, reusing stored evaluations; (evaluations, reused languages)."""
    control, model = run.control, run.model
    languages = [lang for lang in run.spec.control_languages if lang in vectors]
    best = {language: study.best_setting for language, study in studies.items()}
    tasks = plan_modes(control.modes, languages, best)
    curve = curve_strengths(control.search.strength, control.curve_points)
    run.hooks.describe(f"control modes ({model.short_name}: {', '.join(MODE_LABELS[m] for m in control.modes)})")
    evaluations: list[LanguageEvaluation] = []
    reused: list[str] = []  # languages whose evaluation came from the result store

    def done(job: tuple[str, str], evaluation: LanguageEvaluation, stored: bool = False) -> None:
        if not stored:
            run.store.put_record("control", job[1], evaluation_to_json(evaluation))
        evaluations.append(evaluation)
        if on_language is not None:
            on_language(evaluation)
        run.hooks.advance(1)

    def failed(job: tuple[str, str], exc: Exception) -> None:
        failures[f"{model.short_name} / control modes / {job[0]}"] = root_cause(exc)
        run.hooks.advance(1)

    jobs: dict[tuple[str, str], EvaluationJob] = {}
    for language in languages:
        own = [t for t in tasks if t.language == language]
        needed = {t.vectors_from for t in own if t.vectors_from} | {language}
        harmful = list(instructions[language].test["harmful"].values())[: control.test_instructions]
        job = EvaluationJob(control, language, own, {src: vectors[src] for src in needed if src in vectors},
                            harmful, curve if language in studies else [])
        key = evaluation_key(model, job)
        stored = None if run.force else _stored_evaluation(run.store, key)
        if stored is not None:
            reused.append(language)
            done((language, key), stored, stored=True)
        else:
            jobs[(language, key)] = job
    dispatch(jobs, lambda job, worker: worker.control_evaluate.remote(jobs[job]), done, failed, workers)
    order = {lang: i for i, lang in enumerate(run.spec.control_languages)}
    evaluations.sort(key=lambda e: order[e.language])
    return evaluations, reused


def _stored_evaluation(store: StateStore, key: str) -> LanguageEvaluation | None:
    record = store.get_record("control", key)
    try:
        return None if record is None else evaluation_from_json(record)
    except (ValueError, KeyError, TypeError):  # unreadable: recompute
        return None
