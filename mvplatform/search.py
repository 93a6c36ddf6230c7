"""Optuna search over the steering window and strength for one model, concept and language.

The study uses Optuna's ask/tell interface so that ``trials_per_batch`` trials are asked together
and evaluated in one trial-batched generation (:meth:`Controller.evaluate`); TPE's constant liar
keeps a batch's trials apart. The utility guard (harmless instructions must still be answered)
is an Optuna constraint or a second objective. Studies live in an Optuna storage (a journal file
in the result store), so an interrupted study resumes where it stopped.

Trials suggest the real values (``start``, ``width``, ``strength``), so ``optuna-dashboard`` shows
the strength itself. optuna is imported inside the functions that run it: naming a sampler (the
spec's validation, ``mvp list samplers``) does not load it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mvplatform.concepts import ConceptVectors
from mvplatform.control import Setting
from mvplatform.registry import SAMPLERS

if TYPE_CHECKING:
    import optuna

    from mvplatform.control import Controller
    from mvplatform.spec import SearchSpec

    # (seed, the discrete space of search_space) -> sampler
    SamplerFactory = Callable[[int, dict[str, list]], optuna.samplers.BaseSampler]

GUARD_CONSTRAINT = "harmless_answer_rate"
UNSTEERED = Setting(0, 0, 0.0)  # the memo key of every zero-strength setting


@SAMPLERS.register("tpe", help="Optuna TPE (default)")
def _tpe(seed: int, space: dict[str, list]) -> optuna.samplers.BaseSampler:
    import optuna

    return optuna.samplers.TPESampler(seed=seed, multivariate=True, constant_liar=True, n_startup_trials=8)


@SAMPLERS.register("grid", help="every point of the discretised space, in a seeded random order")
def _grid(seed: int, space: dict[str, list]) -> optuna.samplers.BaseSampler:
    import optuna

    class BatchedGridSampler(optuna.samplers.GridSampler):
        """Optuna's GridSampler without its ``study.stop()`` in ``tell()``, which raises outside
        ``study.optimize``; run_study asks at most the grid's size of trials instead."""

        def after_trial(self, study: optuna.Study, trial: optuna.trial.FrozenTrial,
                        state: optuna.trial.TrialState, values: Any) -> None:
            return None

    return BatchedGridSampler(space, seed=seed)


@SAMPLERS.register("random", help="uniform random")
def _random(seed: int, space: dict[str, list]) -> optuna.samplers.BaseSampler:
    import optuna

    return optuna.samplers.RandomSampler(seed=seed)


@SAMPLERS.register("qmc", help="quasi-Monte Carlo (Sobol)")
def _qmc(seed: int, space: dict[str, list]) -> optuna.samplers.BaseSampler:
    import optuna

    return optuna.samplers.QMCSampler(seed=seed, warn_independent_sampling=False)


@SAMPLERS.register("gp", help="Gaussian process")
def _gp(seed: int, space: dict[str, list]) -> optuna.samplers.BaseSampler:
    import optuna

    return optuna.samplers.GPSampler(seed=seed)


@SAMPLERS.register("nsga2", help="NSGA-II (multi-objective, e.g. guard.use: objective)")
def _nsga2(seed: int, space: dict[str, list]) -> optuna.samplers.BaseSampler:
    import optuna

    return optuna.samplers.NSGAIISampler(seed=seed)


def search_space(search: SearchSpec, n_layers: int) -> dict[str, list]:
    """The discrete space every sampler draws from (and the grid enumerates)."""
    lo, hi = search.layers.start
    starts = list(range(lo, min(hi, n_layers) + 1))
    widths = list(range(search.layers.width[0], search.layers.width[1] + 1))
    strengths = strength_values(search.strength, search.strength_step)
    return {"start": starts, "width": widths, "strength": strengths}


def strength_values(bounds: tuple[float, float], step: float) -> list[float]:
    """Multiples of ``step`` within ``bounds`` (the grid's strengths; TPE samples the same points)."""
    first, last = math.ceil(bounds[0] / step - 1e-9), math.floor(bounds[1] / step + 1e-9)
    values = [round(k * step, 10) for k in range(first, last + 1)]
    if not values:
        raise ValueError(f"no multiple of strength_step {step} lies in {list(bounds)}; use a smaller step")
    return values


def _suggest(trial: optuna.trial.BaseTrial, space: dict[str, list], step: float) -> Setting:
    start = trial.suggest_int("start", space["start"][0], space["start"][-1])
    width = trial.suggest_int("width", space["width"][0], space["width"][-1])
    # Optuna checks the range's divisibility by the step in decimal, so both ends stay in; a
    # sampled value is low + k * step in binary floating point, rounded here to the grid's value.
    strengths = space["strength"]
    strength = round(trial.suggest_float("strength", strengths[0], strengths[-1], step=step), 10)
    trial.set_user_attr("strength", strength)
    return Setting(start, width, strength)


@dataclass
class TrialRecord:
    number: int
    setting: Setting
    following_rate: float | None
    harmless_rate: float | None
    state: str  # COMPLETE | PRUNED
    feasible: bool
    seconds: float = 0.0


@dataclass
class StudyResult:
    """A finished study: every trial, the chosen setting and what the search cost."""

    language: str
    study_name: str
    direction: str
    trials: list[TrialRecord]
    best: TrialRecord | None
    baseline_following: float
    baseline_harmless: float | None
    guard_bound: float | None
    seconds: float
    rows_generated: int
    resumed_trials: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    importances: dict[str, float] = field(default_factory=dict)

    @property
    def best_setting(self) -> Setting | None:
        return self.best.setting if self.best else None


def run_study(controller: Controller, language: str, vectors: ConceptVectors, harmful: list[str],
              harmless: list[str], search: SearchSpec, storage: optuna.storages.BaseStorage | str | None = None,
              study_name: str = "mvp-control", on_batch: Callable[[int, int], None] | None = None) -> StudyResult:
    """Search the window and strength on the search instructions; resumes a stored study of this name.

    ``on_batch(done, total)`` is called after each batch of trials (for progress display).
    """
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    start_time = time.perf_counter()
    n_layers = controller.loaded.n_layers
    rows_before = controller.stats.rows
    space = search_space(search, n_layers)
    guard = search.guard
    multi = guard is not None and guard.use == "objective"
    directions = [search.objective.direction] + (["maximize"] if multi else [])
    sampler = SAMPLERS.get(search.sampler)(search.seed, space)  # samplers read the trials' constraints
    pruner = optuna.pruners.MedianPruner(n_startup_trials=4) if search.pruning and not multi else None
    study = optuna.create_study(study_name=study_name, storage=storage, sampler=sampler, pruner=pruner,
                                directions=directions, load_if_exists=True)
    for stale in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        study.tell(stale.number, state=optuna.trial.TrialState.FAIL)  # asked before a crash, never told

    # Unsteered rates: the guard's reference and the search's starting point (stored for resumes).
    if "baseline_following" not in study.user_attrs:
        base = controller.evaluate(language, harmful, [None], None)[0]
        study.set_user_attr("baseline_following", base.rate)
        if guard is not None:
            study.set_user_attr("baseline_harmless",
                                controller.evaluate(language, harmless[: guard.instructions], [None], None)[0].rate)
    baseline_harmless = study.user_attrs.get("baseline_harmless")
    bound = guard.min_relative * baseline_harmless if guard is not None and baseline_harmless is not None else None

    # A sampler that enumerates the space (Optuna's GridSampler) has no more than its points to offer.
    enumerates = isinstance(sampler, optuna.samplers.GridSampler)
    target = min(search.trials, math.prod(len(v) for v in space.values())) if enumerates else search.trials
    finished = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    resumed = len(study.get_trials(deepcopy=False, states=finished))
    # Strength 0 is the unsteered model whatever the window: such trials reuse the baseline for free.
    memo: dict[Setting, tuple[float, float | None]] = {UNSTEERED: (study.user_attrs["baseline_following"],
                                                                   baseline_harmless)}
    while (done := len(study.get_trials(deepcopy=False, states=finished))) < target:
        batch = [study.ask() for _ in range(min(search.trials_per_batch, target - done))]
        settings = [_suggest(trial, space, search.strength_step) for trial in batch]
        _evaluate_batch(controller, language, vectors, harmful, harmless, search, study, batch, settings, memo,
                        bound, multi)
        if on_batch is not None:
            on_batch(len(study.get_trials(deepcopy=False, states=finished)), target)

    records = [_record(t) for t in study.get_trials(deepcopy=False, states=finished)]
    if multi and bound is not None:  # the guard is an objective here; the chosen setting must still meet it
        for record in records:
            record.feasible = record.harmless_rate is not None and record.harmless_rate >= bound
    best = choose_best(records, search.objective.direction)
    importances: dict[str, float] = {}
    if len([r for r in records if r.state == "COMPLETE"]) >= 4 and not multi:
        try:
            importances = {k: float(v) for k, v in optuna.importance.get_param_importances(study).items()}
        except (RuntimeError, ValueError, ZeroDivisionError):  # e.g. every trial scored the same
            importances = {}
    return StudyResult(language, study_name, search.objective.direction, records, best,
                       float(study.user_attrs["baseline_following"]), baseline_harmless, bound,
                       time.perf_counter() - start_time, controller.stats.rows - rows_before, resumed,
                       importances=importances)


def _evaluate_batch(controller: Controller, language: str, vectors: ConceptVectors, harmful: list[str],
                    harmless: list[str], search: SearchSpec, study: optuna.Study, batch: list[optuna.Trial],
                    settings: list[Setting], memo: dict[Setting, tuple[float, float | None]],
                    bound: float | None, multi: bool) -> None:
    """Judge a batch of trials together; repeated settings reuse their earlier result."""
    import optuna

    started = time.perf_counter()
    settings = [UNSTEERED if s.strength == 0 else s for s in settings]
    fresh = sorted({s for s in settings if s not in memo})
    # Pruning evaluates the harmful instructions in chunks and reports the running rate after each.
    chunks = 4 if search.pruning and not multi else 1
    size = math.ceil(len(harmful) / chunks)
    followed = {s: 0 for s in fresh}
    judged = {s: 0 for s in fresh}
    alive = list(fresh)
    pruned: set[Setting] = set()
    for step in range(chunks):
        part = harmful[step * size : (step + 1) * size]
        if not part or not alive:
            break
        for evaluation in controller.evaluate(language, part, list(alive), vectors):
            followed[evaluation.setting] += sum(v.followed for v in evaluation.verdicts)
            judged[evaluation.setting] += len(evaluation.verdicts)
        if chunks > 1 and step < chunks - 1:
            for trial, setting in zip(batch, settings):
                if setting in alive:
                    trial.report(followed[setting] / judged[setting], step)
                    if trial.should_prune():
                        pruned.add(setting)
            alive = [s for s in alive if s not in pruned]
    harmless_rates: dict[Setting, float | None] = {s: None for s in fresh}
    if search.guard is not None and alive:
        for evaluation in controller.evaluate(language, harmless[: search.guard.instructions], alive, vectors):
            harmless_rates[evaluation.setting] = evaluation.rate
    seconds = (time.perf_counter() - started) / max(1, len(batch))
    for s in fresh:
        if s not in pruned:
            memo[s] = (followed[s] / judged[s], harmless_rates[s])
    for trial, setting in zip(batch, settings):
        trial.set_user_attr("layers", [] if setting == UNSTEERED else setting.layers(controller.loaded.n_layers))
        trial.set_user_attr("seconds", seconds)
        if setting in pruned:
            trial.set_user_attr("following_rate", followed[setting] / max(1, judged[setting]))
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            continue
        rate, harmless_rate = memo[setting]
        trial.set_user_attr("following_rate", rate)
        if harmless_rate is not None:
            trial.set_user_attr("harmless_rate", harmless_rate)
        if bound is not None and harmless_rate is not None and not multi:
            trial.set_constraint(GUARD_CONSTRAINT, bound - harmless_rate)  # <= 0: feasible
        study.tell(trial, [rate, harmless_rate] if multi else rate)


def _record(trial: optuna.trial.FrozenTrial) -> TrialRecord:
    params = trial.params  # studies stored before the strength was a parameter kept it as a user attribute
    strength = params.get("strength", trial.user_attrs.get("strength", 0.0))
    setting = Setting(int(params["start"]), int(params["width"]), round(float(strength), 10))
    return TrialRecord(trial.number, setting, trial.user_attrs.get("following_rate"),
                       trial.user_attrs.get("harmless_rate"), trial.state.name,
                       all(v <= 0 for v in trial.constraints.values()), float(trial.user_attrs.get("seconds", 0.0)))


def choose_best(records: list[TrialRecord], direction: str) -> TrialRecord | None:
    """The best feasible completed trial; ties go to the gentlest intervention, then the earliest.

    Following rates on a few dozen instructions tie often; preferring the smallest |strength| and
    the narrowest window picks the setting that changes the model least for the same effect.
    """
    candidates = [r for r in records if r.state == "COMPLETE" and r.feasible and r.following_rate is not None]
    if not candidates:
        return None
    sign = -1.0 if direction == "maximize" else 1.0
    return min(candidates, key=lambda r: (sign * r.following_rate, abs(r.setting.strength), r.setting.width,
                                          r.number))


def trial_table(result: StudyResult) -> list[dict[str, Any]]:
    """One row per trial, for logging and for people."""
    return [{"trial": r.number, "start": r.setting.start, "width": r.setting.width,
             "strength": r.setting.strength, "following_rate": r.following_rate,
             "harmless_rate": r.harmless_rate, "state": r.state, "feasible": r.feasible} for r in result.trials]

