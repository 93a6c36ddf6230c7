"""The control stage on Ray: one Optuna study per language, then every mode per language, on the
model workers that already hold the model (PAPER.md section 5).

Studies run inside the model actors (an actor runs its study's batches back to back, with no
round trip per trial) and spread over the pool's workers, so ``resources.model_workers: 4`` runs
four languages at once. A study's trials are stored in a journal file under the result store,
named by the content of everything the study depends on: a re-submission resumes an interrupted
study and reuses a finished one without generating anything. A language's mode evaluation is a
JSON record in the store under its content key, so a re-submission reuses it too.

The driver runs the searches (:func:`run_searches`), then the modes (:func:`run_modes`); jobs
go to the pool's free actors through :func:`ray_jobs.dispatch.dispatch`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from mvplatform.concepts import ConceptVectors
from mvplatform.control import (
    MODE_LABELS,
    Controller,
    LanguageEvaluation,
    ModeTask,
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
class StudyJob:
    control: ControlSpec
    language: str
    vectors: ConceptVectors
    harmful: list[str]
    harmless: list[str]
    storage_path: str
    study_name: str


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


def run_study_job(controller: Controller, job: StudyJob) -> StudyResult:
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    Path(job.storage_path).parent.mkdir(parents=True, exist_ok=True)
    storage = JournalStorage(JournalFileBackend(job.storage_path))
    return run_study(controller, job.language, job.vectors, job.harmful, job.harmless, job.control.search,
                     storage, job.study_name)


def run_evaluation_job(controller: Controller, job: EvaluationJob) -> LanguageEvaluation:
    return evaluate_language(controller, job.language, job.tasks, job.vectors, job.harmful, job.curve)


# ---------------------------------------------------------------------------------------------
# Driver side


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


def run_searches(run: ControlRun, workers: list, languages: list[str], vectors: dict[str, ConceptVectors],
                 instructions: dict[str, InstructionSplit], failures: dict[str, str],
                 on_study: Callable[[StudyResult], None] | None = None) -> dict[str, StudyResult]:
    """One Optuna study per language, each on the first free worker; failures go into ``failures``."""
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
        jobs.append(StudyJob(control, language, vectors[language], harmful, harmless, str(path), name))
    studies: dict[str, StudyResult] = {}

    def done(job: StudyJob, study: StudyResult) -> None:
        studies[job.language] = study
        if on_study is not None:
            on_study(study)
        run.hooks.advance(1)

    def failed(job: StudyJob, exc: Exception) -> None:
        failures[f"{model.short_name} / control search / {job.language}"] = root_cause(exc)
        run.hooks.advance(1)

    dispatch(jobs, lambda job, worker: worker.control_study.remote(job), done, failed, workers)
    return studies


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
