"""Control: settings, vector scaling, trial-batched evaluation, the Optuna search and the modes."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import numpy as np
import optuna
import pytest

from mvplatform.concepts import ConceptVectors
from mvplatform.control import (
    Controller,
    ControllerStats,
    Evaluation,
    LanguageEvaluation,
    ModeTask,
    Setting,
    curve_strengths,
    evaluation_from_json,
    evaluation_to_json,
    plan_modes,
    steering_vectors,
)
from mvplatform.figures import table2
from mvplatform.judges import KeywordJudge, Verdict
from mvplatform.models import load_model
from mvplatform.search import SAMPLERS, choose_best, run_study, search_space, strength_values
from mvplatform.spec import ControlSpec, ModelSpec, SearchSpec


def test_spec_takes_the_registered_samplers():
    assert SAMPLERS.names() == ["gp", "grid", "nsga2", "qmc", "random", "tpe"]
    assert SearchSpec(sampler="qmc").sampler == "qmc"
    with pytest.raises(ValueError, match="unknown Optuna sampler 'bayes'; valid: tpe, grid"):
        SearchSpec(sampler="bayes")


def test_setting_window_is_cut_at_the_last_layer():
    assert Setting(3, 4, 1.0).layers(10) == [3, 4, 5, 6]
    assert Setting(9, 4, 1.0).layers(10) == [9, 10]
    assert Setting(2, 1, -0.5).describe(10) == "layers 2, strength -0.5"
    assert Setting(2, 3, 0.0).describe(10) == "unsteered (strength 0)"


def test_steering_vector_scales():
    vectors = ConceptVectors([1, 2], np.array([[3.0, 4.0], [0.0, 2.0]]), "cluster_mean", np.array([10.0, 100.0]))
    assert steering_vectors(vectors, "raw")[1].tolist() == [3.0, 4.0]
    np.testing.assert_allclose(steering_vectors(vectors, "unit")[1], [0.6, 0.8])
    np.testing.assert_allclose(steering_vectors(vectors, "state_norm")[1], [6.0, 8.0])
    np.testing.assert_allclose(steering_vectors(vectors, "state_norm")[2], [0.0, 100.0])
    with pytest.raises(ValueError, match="norms"):
        steering_vectors(ConceptVectors([1], np.ones((1, 2)), "pca"), "state_norm")


def test_strength_grid_and_curve_points():
    assert strength_values((-1.0, 1.0), 0.5) == [-1.0, -0.5, 0.0, 0.5, 1.0]
    assert strength_values((0.3, 1.0), 0.25) == [0.5, 0.75, 1.0]
    with pytest.raises(ValueError, match="strength_step"):
        strength_values((0.1, 0.2), 0.5)
    assert curve_strengths((-1.0, 1.0), 5) == [-1.0, -0.5, 0.0, 0.5, 1.0]
    assert curve_strengths((-1.0, 1.0), 2) == [-1.0, 0.0, 1.0]  # 0 (unsteered) always on the curve
    assert curve_strengths((-1.0, 1.0), 0) == []


# -- modes --------------------------------------------------------------------------------------


def test_modes_wire_the_right_vectors_and_settings():
    best = {"en": Setting(2, 2, -0.5), "fr": Setting(4, 1, -1.0), "zh": None}
    tasks = {(t.mode, t.language): t for t in plan_modes(["none", "language_specific", "english_source"],
                                                          ["en", "fr", "zh"], best)}
    assert tasks[("none", "fr")] == ModeTask("none", "fr", None, None)
    assert tasks[("language_specific", "fr")] == ModeTask("language_specific", "fr", "fr", Setting(4, 1, -1.0))
    assert tasks[("english_source", "fr")] == ModeTask("english_source", "fr", "en", Setting(2, 2, -0.5))
    assert tasks[("english_source", "zh")].setting == Setting(2, 2, -0.5)
    assert tasks[("language_specific", "en")].setting == tasks[("english_source", "en")].setting
    no_setting = tasks[("language_specific", "zh")]
    assert no_setting.setting is None and no_setting.vectors_from is None and "guard" in no_setting.note


def test_table2_layout_averages_non_english_languages():
    rates = {("none", "en"): 0.1, ("none", "fr"): 0.2, ("none", "zh"): 0.4,
             ("language_specific", "en"): 1.0, ("language_specific", "fr"): 0.9, ("language_specific", "zh"): 0.7}
    rows = table2(rates, ["none", "language_specific"], ["en", "fr", "zh"])
    assert rows[0] == {"mode": "No-Control", "en": 10.0, "fr": 20.0, "zh": 40.0, "Avg": 30.0}
    assert rows[1]["Avg"] == 80.0 and rows[1]["mode"] == "LS-Control"


# -- search on a planted objective ---------------------------------------------------------------


class PlantedController:
    """Stands in for the model: the following rate is a known function of the setting.

    Harmful instruction i of n is followed iff (rank(i) + 0.5) / n < score(setting), score peaking at 1
    at ``optimum``; harmless instructions stop being answered when |strength| > 1.5 (the guard's
    job is to rule those settings out).
    """

    def __init__(self, optimum: Setting) -> None:
        self.optimum = optimum
        self.loaded = SimpleNamespace(n_layers=12)
        self.stats = ControllerStats()
        self.calls = 0

    def score(self, setting: Setting | None) -> float:
        if setting is None:
            return 0.05
        o = self.optimum
        distance = abs(setting.start - o.start) / 3 + abs(setting.width - o.width) / 2 \
            + abs(setting.strength - o.strength)
        return math.exp(-distance)

    def evaluate(self, language, instructions, settings, vectors):
        self.calls += 1
        self.stats.rows += len(instructions) * len(settings)
        out = []
        for setting in settings:
            verdicts = []
            for text in instructions:
                if text.startswith("harmless"):
                    ok = setting is None or abs(setting.strength) <= 1.5
                else:
                    rank = (int(text.split()[-1]) * 7) % 20  # a fixed shuffle: any chunk is a fair sample
                    ok = (rank + 0.5) / 20 < self.score(setting)
                verdicts.append(Verdict("followed" if ok else "refused", "planted"))
            out.append(Evaluation(setting, list(instructions), ["..."] * len(instructions), verdicts))
        return out


HARMFUL = [f"harmful {i}" for i in range(20)]
HARMLESS = [f"harmless {i}" for i in range(8)]


def _search(**overrides) -> SearchSpec:
    base = {"trials": 40, "trials_per_batch": 8, "layers": {"start": [1, 12], "width": [1, 4]},
            "strength": [-3.0, 3.0], "strength_step": 0.5, "seed": 3}
    return SearchSpec.model_validate({**base, **overrides})


def test_grid_search_finds_the_planted_optimum_exactly():
    optimum = Setting(7, 2, -1.0)
    controller = PlantedController(optimum)
    search = _search(sampler="grid", trials=10_000, layers={"start": [5, 9], "width": [1, 3]},
                     strength=[-1.5, 0.0])
    result = run_study(controller, "fr", None, HARMFUL, HARMLESS, search)
    assert len(result.trials) == 5 * 3 * 4  # the whole grid, no more
    assert result.best_setting == optimum and result.best.following_rate == 1.0


def test_grid_is_optunas_grid_sampler_and_trials_store_the_strength_itself():
    search = _search(sampler="grid", trials=10_000, layers={"start": [5, 6], "width": [1, 2]}, strength=[-1.0, 0.0])
    space = search_space(search, 12)
    assert isinstance(SAMPLERS.get("grid")(0, space), optuna.samplers.GridSampler)
    storage = optuna.storages.InMemoryStorage()
    run_study(PlantedController(Setting(5, 1, -1.0)), "fr", None, HARMFUL, HARMLESS, search, storage, "grid")
    trials = optuna.load_study(study_name="grid", storage=storage).trials
    # Every grid point once, each with its real strength (what optuna-dashboard shows), no index.
    assert sorted((t.params["start"], t.params["width"], t.params["strength"]) for t in trials) == [
        (start, width, strength) for start in (5, 6) for width in (1, 2) for strength in (-1.0, -0.5, 0.0)]


def test_tpe_search_gets_near_the_planted_optimum_with_a_fraction_of_the_grid():
    grid = math.prod(len(v) for v in search_space(_search(), 12).values())
    best = {}
    for sampler in ("tpe", "random"):
        best[sampler] = [run_study(PlantedController(Setting(7, 2, -1.0)), "fr", None, HARMFUL, HARMLESS,
                                   _search(trials=48, seed=seed, sampler=sampler)).best.following_rate
                         for seed in range(5)]
    assert 48 < grid / 10  # under a tenth of the grid
    assert max(best["tpe"]) == 1.0 and float(np.median(best["tpe"])) >= 0.7
    assert float(np.median(best["tpe"])) > float(np.median(best["random"]))


def test_guard_rules_out_settings_that_break_harmless_answers():
    # The planted optimum itself breaks harmless answers (|strength| 2.5 > 1.5): it must not win.
    controller = PlantedController(Setting(7, 2, -2.5))
    result = run_study(controller, "fr", None, HARMFUL, HARMLESS,
                       _search(sampler="grid", trials=10_000, layers={"start": [7, 7], "width": [2, 2]}))
    assert result.guard_bound == pytest.approx(0.8)  # 0.8 x the unsteered harmless rate of 1.0
    assert result.best_setting == Setting(7, 2, -1.5)  # the closest feasible strength
    assert any(r.setting.strength == -2.5 and not r.feasible for r in result.trials)


def test_guard_as_second_objective_and_minimise_direction():
    controller = PlantedController(Setting(7, 2, 1.0))
    search = _search(sampler="nsga2", trials=16, guard={"use": "objective"},
                     objective={"direction": "minimize"})
    result = run_study(controller, "fr", None, HARMFUL, HARMLESS, search)
    assert result.direction == "minimize" and len(result.trials) == 16
    assert result.best.following_rate == min(r.following_rate for r in result.trials if r.feasible)


def test_pruning_stops_poor_trials_early_and_saves_generations():
    full, pruned = PlantedController(Setting(7, 2, -1.0)), PlantedController(Setting(7, 2, -1.0))
    without = run_study(full, "fr", None, HARMFUL, HARMLESS, _search(trials=32))
    with_pruning = run_study(pruned, "fr", None, HARMFUL, HARMLESS, _search(trials=32, pruning=True))
    assert any(r.state == "PRUNED" for r in with_pruning.trials)
    assert pruned.stats.rows < full.stats.rows
    assert with_pruning.best.following_rate == without.best.following_rate


def test_an_interrupted_study_resumes_from_its_storage(tmp_path):
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    storage = JournalStorage(JournalFileBackend(str(tmp_path / "studies.log")))
    first = PlantedController(Setting(7, 2, -1.0))
    run_study(first, "fr", None, HARMFUL, HARMLESS, _search(trials=8), storage, "fr-study")
    # A trial asked but never told (the driver died mid-batch) must not count or block.
    optuna.load_study(study_name="fr-study", storage=storage).ask()
    second = PlantedController(Setting(7, 2, -1.0))
    result = run_study(second, "fr", None, HARMFUL, HARMLESS, _search(trials=16), storage, "fr-study")
    assert result.resumed_trials == 8 and len(result.trials) == 16
    harmful_rows = sum(1 for _ in range(8)) * len(HARMFUL)
    assert second.stats.rows <= harmful_rows + 8 * len(HARMLESS)  # only the 8 new trials ran (no baseline)


def test_choose_best_prefers_the_gentlest_setting_on_ties():
    from mvplatform.search import TrialRecord

    records = [TrialRecord(0, Setting(3, 2, -1.0), 0.9, 1.0, "COMPLETE", True),
               TrialRecord(1, Setting(3, 1, -0.5), 0.9, 1.0, "COMPLETE", True),
               TrialRecord(2, Setting(3, 1, -2.0), 1.0, 0.1, "COMPLETE", False)]
    assert choose_best(records, "maximize").number == 1
    assert choose_best(records, "minimize").number == 1
    assert choose_best(records[2:], "maximize") is None


# -- the real controller on a tiny model ---------------------------------------------------------


@pytest.fixture(scope="module")
def controller(tiny_model_dir):
    loaded = load_model(ModelSpec(name=str(tiny_model_dir("llama")), device="cpu", prompt="chat"))
    judge = KeywordJudge({"en": ["sorry"]})
    return Controller(loaded, judge, ControlSpec(generation={"max_new_tokens": 5, "batch_size": 64}))


def test_controller_batches_settings_and_matches_separate_runs(controller):
    rng = np.random.default_rng(0)
    vectors = ConceptVectors([1, 2, 3], rng.normal(size=(3, 32)), "cluster_mean", np.array([1.0, 2.0, 3.0]))
    prompts = ["I helped my neighbour.", "The quick brown fox"]
    settings = [None, Setting(1, 2, 2.0), Setting(3, 1, -3.0), Setting(2, 1, 0.0)]
    together = controller.evaluate("en", prompts, settings, vectors)
    for setting, evaluation in zip(settings, together):
        alone = controller.evaluate("en", prompts, [setting], vectors)[0]
        assert evaluation.responses == alone.responses
        assert [v.label for v in evaluation.verdicts] == [v.label for v in alone.verdicts]
        assert len(evaluation.verdicts) == 2
    assert together[1].responses != together[0].responses  # steering changes what is generated
    assert together[3].responses == together[0].responses  # strength 0 is the unsteered model
    assert controller.stats.rows >= 6


def test_controller_refuses_layers_without_vectors(controller):
    vectors = ConceptVectors([1], np.ones((1, 32)), "cluster_mean", np.ones(1))
    with pytest.raises(ValueError, match="no concept vectors for layers"):
        controller.evaluate("en", ["x"], [Setting(2, 1, 1.0)], vectors)


def test_modes_come_from_their_registry_in_order_with_their_labels():
    from mvplatform.control import MODE_LABELS

    assert ControlSpec().modes == ["none", "language_specific", "english_source"]
    assert dict(MODE_LABELS) == {"none": "No-Control", "language_specific": "LS-Control",
                                 "english_source": "En-Control"}


def test_zero_strength_trials_reuse_the_baseline_without_generating():
    controller = PlantedController(Setting(7, 2, -1.0))
    result = run_study(controller, "fr", None, HARMFUL, HARMLESS, _search(trials=6, strength=[0.0, 0.0]))
    assert controller.calls == 2  # the unsteered harmful and harmless baselines, nothing else
    assert all(r.following_rate == pytest.approx(0.05) for r in result.trials)


def test_suggested_strengths_lie_on_the_step_grid_including_both_ends():
    controller = PlantedController(Setting(7, 2, 0.6))
    result = run_study(controller, "fr", None, HARMFUL, HARMLESS,
                       _search(trials=40, strength=[-0.6, 0.6], strength_step=0.05, seed=0))
    grid = strength_values((-0.6, 0.6), 0.05)
    assert grid[0] == -0.6 and grid[-1] == 0.6 and len(grid) == 25
    assert all(r.setting.strength in grid for r in result.trials)


def test_a_language_evaluation_round_trips_through_json():
    evaluation = LanguageEvaluation(
        "fr", {"none": (ModeTask("none", "fr", None, None), Evaluation(None, ["a"], ["b"], [Verdict("refused", "x")])),
               "language_specific": (ModeTask("language_specific", "fr", "fr", Setting(3, 2, -0.5)),
                                     Evaluation(Setting(3, 2, -0.5), ["a"], ["c"], [Verdict("followed", "y")]))},
        [(-0.5, 1.0), (0.0, 0.0)], Setting(3, 2, -0.5), 1.25)
    data = json.loads(json.dumps(evaluation_to_json(evaluation)))
    assert data["modes"]["language_specific"][0]["setting"] == {"start": 3, "width": 2, "strength": -0.5}
    assert data["modes"]["none"][1]["verdicts"] == [{"label": "refused", "reason": "x"}]
    back = evaluation_from_json(data)
    assert back == evaluation and back.modes["language_specific"][1].rate == 1.0
    with pytest.raises(ValueError):  # a record of another shape is refused (the store then recomputes it)
        evaluation_from_json({**data, "modes": {"none": {"task": {}, "verdicts": [["refused", "x"]]}}})
