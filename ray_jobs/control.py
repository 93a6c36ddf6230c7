"""The control stage on Ray: one Optuna study per language, then every mode per language, on the
model workers that already hold the model (PAPER.md section 5).

Studies run inside the model actors (an actor runs its study's batches back to back, with no
round trip per trial) and spread over the pool's workers, so ``resources.model_workers: 4`` runs
four languages at once. A study's trials are stored in a journal file under the result store,
named by the content of everything the study depends on: a re-submission resumes an interrupted
study and reuses a finished one without generating anything.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import ray
from rich.progress import Progress, TaskID

from mvplatform.concepts import ConceptVectors
from mvplatform.control import (MODE_LABELS, Controller, LanguageEvaluation, ModeTask,
                                curve_strengths, evaluate_language, evaluation_from_json, evaluation_to_json,
                                plan_modes)
from mvplatform.data import InstructionSplit
from mvplatform.extraction import ExtractionResult
from mvplatform.judges import build_judge
from mvplatform.models import LoadedModel, load_model, model_fingerprint
from mvplatform.search import StudyResult, run_study
from mvplatform.spec import ControlSpec, ModelSpec, Spec


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


def search_languages(control: ControlSpec, languages: list[str]) -> list[str]:
    """Languages that need a study: all for LS-Control, English alone for En-Control, none otherwise."""
    if "language_specific" in control.modes:
        return list(languages)
    return ["en"] if "english_source" in control.modes else []


def study_name(spec: Spec, model: ModelSpec, language: str, vectors: ConceptVectors, job_texts: list[str]) -> str:
    """A name that changes whenever anything the study's outcome depends on changes."""
    control = spec.control
    assert control is not None
    digest = hashlib.sha256()
    digest.update(json.dumps(model_fingerprint(model), sort_keys=True).encode())
    digest.update(np.ascontiguousarray(vectors.directions, dtype=np.float32).tobytes())
    if vectors.norms is not None:
        digest.update(np.ascontiguousarray(vectors.norms, dtype=np.float32).tobytes())
    relevant = control.model_dump(mode="json", exclude={"modes", "curve_points", "test_instructions", "languages"})
    digest.update(json.dumps(relevant, sort_keys=True).encode())
    digest.update("\x00".join(job_texts).encode())
    return f"{model.short_name}-{control.concept}-{language}-{digest.hexdigest()[:12]}"


def evaluation_key(spec: Spec, model: ModelSpec, job: EvaluationJob) -> str:
    """Content key of a language's mode evaluation: model, vectors, settings, instructions, control spec."""
    digest = hashlib.sha256()
    digest.update(json.dumps(model_fingerprint(model), sort_keys=True).encode())
    for source in sorted(job.vectors):
        digest.update(source.encode())
        digest.update(np.ascontiguousarray(job.vectors[source].directions, dtype=np.float32).tobytes())
        if job.vectors[source].norms is not None:
            digest.update(np.ascontiguousarray(job.vectors[source].norms, dtype=np.float32).tobytes())
    tasks = [[t.mode, t.vectors_from, None if t.setting is None else [t.setting.start, t.setting.width,
                                                                      t.setting.strength]] for t in job.tasks]
    control = job.control.model_dump(mode="json", exclude={"search", "languages"})
    digest.update(json.dumps([tasks, job.curve, job.harmful, control], sort_keys=True).encode())
    return f"{model.short_name}-{job.control.concept}-{job.language}-{digest.hexdigest()[:16]}"


def _read_evaluation(path: Path) -> LanguageEvaluation | None:
    try:
        return evaluation_from_json(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, KeyError, TypeError):  # absent or unreadable: recompute
        return None


def _write_evaluation(path: Path, evaluation: LanguageEvaluation) -> None:
    """Atomic: a crash never leaves a half-written file that a later run trusts."""
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_suffix(f".tmp-{os.getpid()}")
    staging.write_text(json.dumps(evaluation_to_json(evaluation), ensure_ascii=False), encoding="utf-8")
    os.replace(staging, path)


@dataclass
class ControlOutcome:
    studies: dict[str, StudyResult]
    evaluations: list[LanguageEvaluation]
    failures: dict[str, str]
    reused: list[str]


def run_control(spec: Spec, model: ModelSpec, workers: list, n_layers: int, results: list[ExtractionResult],
                instructions: dict[str, InstructionSplit], store_root: Path, force: bool,
                progress: Progress, bar: TaskID, on_study=None, on_language=None) -> ControlOutcome:  # noqa: ANN001
    """Search every language that needs it, then evaluate every mode on the test instructions.

    ``on_study(result)`` and ``on_language(evaluation)`` are called as each finishes (logging).
    """
    from ray_jobs.submit import root_cause  # the driver module; imported late to avoid a cycle

    control = spec.control
    assert control is not None
    languages = spec.control_languages
    vectors = {r.language: r.vectors for r in results if r.concept == control.concept and r.model == model.short_name}
    failures: dict[str, str] = {}
    for language in languages:
        if language not in vectors:
            failures[f"{model.short_name} / control / {language}"] = (
                f"no {control.concept} vectors for {language} (its extraction failed)")
    studies: dict[str, StudyResult] = {}
    to_search = [lang for lang in search_languages(control, languages) if lang in vectors]
    skipped = len(search_languages(control, languages)) - len(to_search) + len(failures)
    if skipped:  # keep the bar's count honest for languages that cannot be controlled
        progress.advance(bar, skipped)
    progress.update(bar, description=f"control search ({model.short_name}: {len(to_search)} studies)")
    pending = {}
    for i, language in enumerate(to_search):
        split = instructions[language]
        harmful = list(split.search["harmful"].values())[: control.search.instructions]
        harmless = list(split.search["harmless"].values())
        name = study_name(spec, model, language, vectors[language], harmful + harmless)
        path = store_root / "studies" / f"{name}.journal"
        if force and path.exists():
            path.unlink()
        job = StudyJob(control, language, vectors[language], harmful, harmless, str(path), name)
        pending[workers[i % len(workers)].control_study.remote(job)] = language
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1)
        language = pending.pop(ready[0])
        try:
            studies[language] = ray.get(ready[0])
        except ray.exceptions.RayError as exc:
            failures[f"{model.short_name} / control search / {language}"] = root_cause(exc)
        else:
            if on_study is not None:
                on_study(studies[language])
        progress.advance(bar)

    best = {language: study.best_setting for language, study in studies.items()}
    tasks = plan_modes(control.modes, [lang for lang in languages if lang in vectors], best)
    curve = curve_strengths(control.search.strength, control.curve_points)
    progress.update(bar, description=f"control modes ({model.short_name}: "
                                     f"{', '.join(MODE_LABELS[m] for m in control.modes)})")
    pending: dict = {}
    evaluations: list[LanguageEvaluation] = []
    reused: list[str] = []  # languages whose evaluation came from the result store
    for i, language in enumerate(lang for lang in languages if lang in vectors):
        own = [t for t in tasks if t.language == language]
        needed = {t.vectors_from for t in own if t.vectors_from} | {language}
        harmful = list(instructions[language].test["harmful"].values())[: control.test_instructions]
        job = EvaluationJob(control, language, own, {src: vectors[src] for src in needed if src in vectors},
                            harmful, curve if language in studies else [])
        path = store_root / "control" / f"{evaluation_key(spec, model, job)}.json"
        stored = None if force else _read_evaluation(path)
        if stored is not None:
            reused.append(language)
            evaluations.append(stored)
            if on_language is not None:
                on_language(stored)
            progress.advance(bar)
            continue
        pending[workers[i % len(workers)].control_evaluate.remote(job)] = (language, path)
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1)
        language, path = pending.pop(ready[0])
        try:
            evaluation = ray.get(ready[0])
        except ray.exceptions.RayError as exc:
            failures[f"{model.short_name} / control modes / {language}"] = root_cause(exc)
        else:
            _write_evaluation(path, evaluation)
            evaluations.append(evaluation)
            if on_language is not None:
                on_language(evaluation)
        progress.advance(bar)
    order = {lang: i for i, lang in enumerate(languages)}
    evaluations.sort(key=lambda e: order[e.language])
    return ControlOutcome(studies, evaluations, failures, reused)


def control_steps(spec: Spec) -> int:
    """Progress-bar units of the control stage per model: studies plus per-language evaluations."""
    if spec.control is None:
        return 0
    languages = spec.control_languages
    return len(search_languages(spec.control, languages)) + len(languages)
