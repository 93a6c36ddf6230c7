"""A real control submission: tiny model on Ray, search + No/LS/En-Control, read back from MLflow."""

from __future__ import annotations

import json

import pytest
from mlflow.tracking import MlflowClient

from mvplatform.errors import SpecError
from mvplatform.spec import load_spec
from ray_jobs.submit import submit

SPEC = """
name: control-e2e
model: {{name: "{model}", device: cpu, prompt: chat}}
data: {{dataset: "{data}", concepts: [morality], languages: [en, fr]}}
extract: {{batch_size: 8}}
analyses: [recognition]
control:
  concept: morality
  test_instructions: 3
  curve_points: 3
  generation: {{max_new_tokens: 3, batch_size: 64}}
  search:
    trials: 4
    trials_per_batch: 4
    instructions: 3
    layers: {{start: [1, 3], width: [1, 2]}}
    strength: [-2.0, 2.0]
    strength_step: 1.0
    guard: {{instructions: 2}}
tracking: {{uri: "{uri}"}}
results: {{dir: "{results}"}}
"""


@pytest.fixture(scope="module")
def control_run(tiny_model_dir, mvalue_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("control")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    path = folder / "spec.yaml"
    path.write_text(SPEC.format(model=tiny_model_dir("llama"), data=mvalue_dir, uri=uri, results=folder / "results"))
    summary = submit(load_spec(path), path)
    return summary, MlflowClient(tracking_uri=uri), path, folder


def _children(client, summary, step):
    experiment = client.get_experiment_by_name(summary.experiment)
    return client.search_runs([experiment.experiment_id],
                              f"tags.mlflow.parentRunId = '{summary.parent_run_id}' and tags.step = '{step}'")


def test_control_submission_logs_studies_modes_and_table2(control_run, tmp_path):
    summary, client, _, folder = control_run
    assert summary.ok, summary.failures
    studies = _children(client, summary, "search")
    assert sorted(r.data.tags["language"] for r in studies) == ["en", "fr"]
    for run in studies:
        assert run.data.metrics["trials"] == 4
        history = client.get_metric_history(run.info.run_id, "trial_following_rate")
        assert sorted(m.step for m in history) == [0, 1, 2, 3]
        trials = json.loads(open(client.download_artifacts(run.info.run_id, "trials.json", str(tmp_path))).read())
        assert len(trials) == 4 and {"start", "width", "strength", "following_rate", "harmless_rate"} <= set(trials[0])
    modes = _children(client, summary, "control-mode")
    assert sorted((r.data.tags["language"], r.data.tags["mode"]) for r in modes) == sorted(
        (lang, mode) for lang in ("en", "fr") for mode in ("none", "language_specific", "english_source"))
    by_key = {(r.data.tags["language"], r.data.tags["mode"]): r for r in modes}
    assert by_key[("fr", "english_source")].data.tags["vectors_from"] in ("en", "-")
    assert by_key[("fr", "none")].data.tags["setting"] == "unsteered"
    generations = json.loads(open(client.download_artifacts(by_key[("fr", "none")].info.run_id, "generations.json",
                                                            str(tmp_path))).read())
    assert set(generations["columns"]) == {"instruction", "response", "verdict", "reason"}
    assert len(generations["data"]) == 3
    paths = {a.path for a in client.list_artifacts(summary.parent_run_id, "summary/control/" + summary.done[0].split(" / ")[0])}
    assert any(p.endswith("table2.md") for p in paths) and any(p.endswith("strength_curves.png") for p in paths)
    table = summary.control[summary.done[0].split(" / ")[0]]
    assert "No-Control" in table and "LS-Control" in table and "En-Control" in table and "Avg" in table
    assert list((folder / "results" / "studies").glob("*.journal"))


def test_resubmitting_reuses_finished_studies_and_evaluations(control_run):
    summary, client, path, folder = control_run
    again = submit(load_spec(path), path)
    studies = _children(client, again, "search")
    assert all(r.data.metrics["trials_resumed"] == 4 and r.data.metrics["rows_generated"] == 0 for r in studies)
    assert again.control == summary.control  # the same Table 2, read from the result store
    assert summary.control_reused == [] and sorted(again.control_reused) == sorted(
        f"{m} / {lang}" for m in [summary.done[0].split(" / ")[0]] for lang in ("en", "fr"))
    assert len(list((folder / "results" / "control").glob("*.json"))) == 2


def test_control_window_beyond_the_model_is_refused_before_any_run(control_run):
    _, client, path, _ = control_run
    text = path.read_text().replace("start: [1, 3]", "start: [5, 9]")
    bad = path.with_name("deep.yaml")
    bad.write_text(text.replace("name: control-e2e", "name: control-deep"))
    with pytest.raises(SpecError, match=r"control.search.layers.start: .*3 decoder layers"):
        submit(load_spec(bad), bad)
    assert client.get_experiment_by_name("control-deep") is None
