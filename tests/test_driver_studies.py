"""The driver owns every Optuna study (issue 18 item 3): model actors only generate and judge.

A real local Ray with two model actors of a tiny random LLaMA: the studies' journals are written
by this (the driver's) process, the actors never import Optuna, both actors work at once (one
study each), and the trials equal the same study run in-process on a real Controller.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest
import ray

from mvplatform.concepts import ConceptVectors
from mvplatform.data import load_instructions
from mvplatform.models import load_model
from mvplatform.search import run_study
from mvplatform.spec import parse_spec
from mvplatform.statestore import StateStore
from ray_jobs.control import ControlRun, make_controller, run_searches
from ray_jobs.worker import RemoteModelWorker

SPEC = """
name: driver-studies
model: {{name: "{model}", device: cpu, prompt: chat}}
data: {{dataset: "{data}", concepts: [morality], languages: [en, fr]}}
control:
  concept: morality
  test_instructions: 3
  generation: {{max_new_tokens: 3, batch_size: 64}}
  search:
    trials: 6
    trials_per_batch: 3
    instructions: 3
    layers: {{start: [1, 3], width: [1, 2]}}
    strength: [-2.0, 2.0]
    strength_step: 1.0
    guard: {{instructions: 2}}
"""


@pytest.fixture(scope="module")
def setup(tiny_model_dir, mvalue_dir, tmp_path_factory):
    spec = parse_spec(SPEC.format(model=tiny_model_dir("llama"), data=mvalue_dir))
    model = spec.model[0]
    loaded = load_model(model, None)
    hidden = loaded.model.config.hidden_size
    rng = np.random.default_rng(0)
    vectors = {lang: ConceptVectors([1, 2, 3], rng.standard_normal((3, hidden)).astype(np.float32), "mean_diff",
                                    norms=np.full(3, 4.0, dtype=np.float32)) for lang in ("en", "fr")}
    instructions = {lang: load_instructions(lang) for lang in ("en", "fr")}
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    workers = [RemoteModelWorker.options(num_cpus=0).remote(model, None, 1) for _ in range(2)]
    ray.get([w.describe.remote() for w in workers])
    yield spec, loaded, vectors, instructions, workers, tmp_path_factory.mktemp("store")
    ray.shutdown()


def _search(setup, force: bool = False, vectors=None):
    spec, _, stored_vectors, instructions, workers, root = setup
    failures: dict[str, str] = {}
    run = ControlRun(spec, spec.model[0], StateStore(root), force)
    studies = run_searches(run, workers, ["en", "fr"], vectors or stored_vectors, instructions, failures)
    return studies, failures


def _trials(study) -> list[tuple]:
    return [(t.number, t.setting, t.following_rate, t.harmless_rate, t.state, t.feasible) for t in study.trials]


def test_the_driver_writes_the_journals_and_the_actors_never_load_optuna(setup):
    spec, loaded, vectors, instructions, workers, root = setup
    studies, failures = _search(setup)
    assert failures == {} and sorted(studies) == ["en", "fr"]
    journals = sorted((root / "studies").glob("*.journal"))
    assert [p.stem for p in journals] == sorted(s.study_name for s in studies.values())
    assert all(p.stat().st_size > 0 for p in journals)
    assert "optuna.storages" in sys.modules  # the driver's process ran the studies...

    def optuna_modules(actor: object) -> list[str]:
        return sorted(m for m in sys.modules if m.startswith("optuna"))

    def rows(actor: object) -> int:
        return actor._control[1].stats.rows  # type: ignore[attr-defined]

    assert ray.get([w.__ray_call__.remote(optuna_modules) for w in workers]) == [[], []]  # ...not the actors
    # one study per actor, at once: each actor generated one study's batches
    per_actor = sorted(ray.get([w.__ray_call__.remote(rows) for w in workers]))
    assert per_actor == sorted(s.rows_generated for s in studies.values()) and per_actor[0] > 0
    for study in studies.values():
        assert len(study.trials) == 6 and study.resumed_trials == 0

    # The same study in-process, on a real Controller over the same model: the same trials.
    language = "fr"
    split = instructions[language]
    harmful = list(split.search["harmful"].values())[:3]
    harmless = list(split.search["harmless"].values())
    local = run_study(make_controller(loaded, spec.control, None), language, vectors[language], harmful, harmless,
                      spec.control.search, None, studies[language].study_name)
    assert _trials(local) == _trials(studies[language])
    assert local.baseline_following == studies[language].baseline_following
    assert local.rows_generated == studies[language].rows_generated


def test_a_resubmission_reuses_the_driver_study_and_force_deletes_it(setup):
    studies, _ = _search(setup)  # stored by the test above, or fresh when run alone
    again, failures = _search(setup)
    assert failures == {}
    for language, study in again.items():
        assert study.resumed_trials == 6 and study.rows_generated == 0
        assert _trials(study) == _trials(studies[language])
    forced, _ = _search(setup, force=True)
    for language, study in forced.items():
        assert study.resumed_trials == 0 and study.rows_generated > 0
        assert _trials(study) == _trials(studies[language])  # same seed, same trials


def test_a_failing_study_fails_its_language_with_the_actors_message(setup):
    spec, _, vectors, _, _, _ = setup
    shallow = {lang: ConceptVectors([1], v.directions[:1], v.method, norms=v.norms[:1]) for lang, v in vectors.items()}
    shallow["en"] = vectors["en"]
    studies, failures = _search(setup, vectors=shallow)
    assert sorted(studies) == ["en"]
    message = failures[f"{spec.model[0].short_name} / control search / fr"]
    assert message.startswith("ValueError: no concept vectors for layers")
