"""A real submission: YAML -> Ray actor with a tiny model -> MLflow store, read back with the client."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from mvplatform.concepts import ConceptVectors
from mvplatform.spec import load_spec
from ray_jobs.submit import submit
from tests.conftest import TINY_LAYERS, write_mvalue

SPEC = """
name: e2e
model: {{name: "{model}", device: cpu}}
data: {{dataset: "{data}", concepts: [morality, truthfulness], languages: [en, fr], eval_datasets: ["{evaldata}"]}}
extract: {{batch_size: 4}}
analyses: [recognition, consistency]
tracking: {{uri: "{uri}"}}
results: {{dir: "{results}"}}
"""


@pytest.fixture(scope="module")
def submission(tiny_model_dir, mvalue_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("submit")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    path = folder / "spec.yaml"
    # another data set (issue 16): morality in en only, so 3 of the 4 cells are skipped and listed
    evaldata = folder / "other"
    write_mvalue(evaldata, "morality", "en", {"x": {f"{i}": {"pos": f"I helped them {i}.", "neg": f"I hurt them {i}."}
                                                    for i in range(6)}})
    path.write_text(SPEC.format(model=tiny_model_dir("qwen2"), data=mvalue_dir, uri=uri, results=folder / "results",
                                evaldata=evaldata))
    summary = submit(load_spec(path), path)
    return summary, MlflowClient(tracking_uri=uri)


def test_submission_finishes_every_item(submission):
    summary, _ = submission
    assert summary.ok, summary.failures
    assert sorted(summary.done) == sorted(f"{model} / {c} / {lang}" for model in [summary.done[0].split(" / ")[0]]
                                          for c in ("morality", "truthfulness") for lang in ("en", "fr"))


def test_parent_run_holds_spec_summary_and_status(submission):
    summary, client = submission
    parent = client.get_run(summary.parent_run_id)
    assert parent.info.status == "FINISHED"
    assert parent.data.params["data.languages"] == "en,fr"
    assert parent.data.tags["spec"] == "e2e" and len(parent.data.tags["spec_hash"]) == 16
    assert parent.data.metrics["items_done"] == 4 and parent.data.metrics["items_failed"] == 0
    assert parent.data.metrics["data_pairs_dropped_empty"] == 0
    import torch

    assert parent.data.tags["versions.torch"] == torch.__version__ and parent.data.tags["mlflow.user"]
    assert parent.data.tags["mlflow.source.name"].startswith("mvp")
    paths = {a.path for a in client.list_artifacts(summary.parent_run_id, "summary")}
    assert {"summary/recognition.md", "summary/recognition.csv"} <= paths
    assert any(p.endswith(".png") for p in paths)
    assert [a.path for a in client.list_artifacts(summary.parent_run_id, "spec")] == ["spec/spec.yaml"]
    store_folder = Path(client.tracking_uri.removeprefix("sqlite:///")).parent
    assert parent.info.artifact_uri.startswith((store_folder / "mlruns").as_uri())  # beside the store, not cwd


def test_every_child_run_carries_the_source_tags(submission):
    """MLflow's Source and User columns are filled on each child row, as on the submission's."""
    summary, client = submission
    parent = client.get_run(summary.parent_run_id)
    children = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{summary.parent_run_id}'")
    assert len(children) >= 4
    for child in children:
        for key in ("mlflow.source.name", "mlflow.source.type", "mlflow.user"):
            assert child.data.tags[key] == parent.data.tags[key], (child.info.run_name, key)
        assert not any(k.startswith("versions.") for k in child.data.tags)  # package versions: the parent's


def test_child_runs_name_their_data_file_as_an_mlflow_dataset(submission, mvalue_dir):
    """MLflow's Dataset column: each extraction run lists the file it read, with the file's digest."""
    import hashlib

    summary, client = submission
    experiment = client.get_run(summary.parent_run_id).info.experiment_id
    [run] = client.search_runs([experiment], "tags.step = 'extract' and tags.concept = 'morality' and "
                               "tags.language = 'fr'")
    [dataset_input] = run.inputs.dataset_inputs
    data_file = mvalue_dir / "morality" / "morality_fr.json"
    assert dataset_input.dataset.name == "morality_fr"
    assert dataset_input.dataset.digest == hashlib.sha256(data_file.read_bytes()).hexdigest()[:16]
    assert data_file.resolve().as_uri() in dataset_input.dataset.source


def test_child_runs_hold_per_layer_curves_vectors_and_figures(submission, tmp_path):
    summary, client = submission
    parent = client.get_run(summary.parent_run_id)
    children = client.search_runs([parent.info.experiment_id],
                                  f"tags.mlflow.parentRunId = '{summary.parent_run_id}' and tags.step = 'extract'")
    assert len(children) == 4
    fr_morality = [c for c in children if c.data.tags["language"] == "fr" and c.data.tags["concept"] == "morality"]
    child = fr_morality[0]
    assert child.info.run_name.endswith("/ morality / fr / extract") and child.info.status == "FINISHED"
    history = client.get_metric_history(child.info.run_id, "recognition_accuracy")
    assert sorted(m.step for m in history) == list(range(1, TINY_LAYERS + 1))
    best = max(history, key=lambda m: (m.value, -m.step))
    assert child.data.metrics["best_layer"] == best.step
    assert child.data.metrics["best_accuracy"] == pytest.approx(best.value)
    assert child.data.metrics["n_train"] == 8 and child.data.metrics["n_test"] == 2
    local = client.download_artifacts(child.info.run_id, "vectors.safetensors", str(tmp_path))
    vectors = ConceptVectors.load(local)
    assert vectors.layers == list(range(1, TINY_LAYERS + 1)) and vectors.directions.shape == (TINY_LAYERS, 32)
    assert np.isfinite(vectors.directions).all()
    names = {a.path for a in client.list_artifacts(child.info.run_id)}
    assert {"accuracy_per_layer.png", "test_states.safetensors", "accuracy.json"} <= names


def test_cli_refuses_a_bad_spec_with_exit_2_and_starts_nothing(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ndata:\n  languages: [en, xx]\n")
    result = subprocess.run([sys.executable, "-m", "mvplatform.cli", "submit", str(bad)],
                            capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 2
    assert "bad.yaml:3: data.languages: unknown language 'xx'" in result.stderr
    assert not (tmp_path / "mlflow.db").exists()


def test_eval_datasets_give_child_runs_with_eval_accuracy_and_a_parent_table(submission, tmp_path):
    summary, client = submission
    experiment = client.get_run(summary.parent_run_id).info.experiment_id
    runs = client.search_runs([experiment], f"tags.mlflow.parentRunId = '{summary.parent_run_id}' "
                                            "and tags.step = 'eval:other'")
    assert [(r.data.tags["concept"], r.data.tags["language"]) for r in runs] == [("morality", "en")]
    run = runs[0]
    history = client.get_metric_history(run.info.run_id, "eval_accuracy")
    assert sorted(m.step for m in history) == list(range(1, TINY_LAYERS + 1))
    assert all(v * 6 == round(v * 6) for v in (m.value for m in history))  # a share of the 6 pairs
    metrics = run.data.metrics
    assert metrics["eval_pairs"] == 6
    assert metrics["eval_selected_accuracy_ci_low"] <= metrics["eval_selected_accuracy"] <= \
        metrics["eval_selected_accuracy_ci_high"]
    table = Path(client.download_artifacts(summary.parent_run_id, "summary/eval_datasets.md", str(tmp_path))).read_text()
    assert "| other | tiny-qwen20 | morality | en | 6 |" in table
    assert "Skipped (not in that data set): other: morality/fr, other: truthfulness/en, other: truthfulness/fr" in table


def test_missing_data_stops_the_submission_before_any_run(tiny_model_dir, mvalue_dir, tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text(SPEC.format(model=tiny_model_dir("llama"), data=mvalue_dir, uri=f"sqlite:///{tmp_path}/m.db",
                                results=tmp_path / "results", evaldata=mvalue_dir)
                    .replace("[en, fr]", "[en, ja]"))
    result = subprocess.run([sys.executable, "-m", "mvplatform.cli", "submit", str(path)],
                            capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 2
    assert "morality_ja.json: missing data file" in result.stderr
    assert not (tmp_path / "m.db").exists()


def test_cross_lingual_child_runs_hold_matrices_and_heatmaps(submission):
    summary, client = submission
    experiment = client.get_run(summary.parent_run_id).info.experiment_id
    runs = client.search_runs([experiment], f"tags.mlflow.parentRunId = '{summary.parent_run_id}' "
                                            "and tags.step = 'cross-lingual'")
    assert sorted(r.data.tags["concept"] for r in runs) == ["morality", "truthfulness"]
    run = runs[0]
    assert -1.0 <= run.data.metrics["mean_consistency"] <= 1.0
    names = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"consistency_matrix.json", "consistency_heatmap.png"} <= names
    assert len(client.get_metric_history(run.info.run_id, "layer_similarity")) == TINY_LAYERS


def test_resubmitting_with_more_analyses_runs_no_forward_pass(submission, tiny_model_dir, mvalue_dir,
                                                              tmp_path_factory):
    first, client = submission
    assert len(first.computed) == 4 and not first.cached
    folder = Path(client.tracking_uri.removeprefix("sqlite:///")).parent
    path = folder / "spec.yaml"
    text = path.read_text().replace("analyses: [recognition, consistency]",
                                    "analyses: [recognition, consistency, transferability]")
    path.write_text(text.replace("extract: {batch_size: 4}", "extract: {batch_size: 4, method: pca, folds: 5}"))
    second = submit(load_spec(path), path)
    assert second.ok, second.failures
    assert second.computed == [] and sorted(second.cached) == sorted(first.done)
    assert first.ray and not second.ray  # nothing needed a model: no Ray, analyses in this process
    experiment = client.get_run(second.parent_run_id).info.experiment_id
    runs = client.search_runs([experiment], f"tags.mlflow.parentRunId = '{second.parent_run_id}' "
                                            "and tags.step = 'cross-lingual'")
    assert all("transfer_high_to_low" in r.data.metrics or "transfer_within_high" in r.data.metrics for r in runs)
    for run in runs:  # issue 16: bootstrap intervals of consistency and transfer
        metrics = run.data.metrics
        assert metrics["mean_consistency_ci_low"] <= metrics["mean_consistency"] <= metrics["mean_consistency_ci_high"]
        for direction in ("high_to_low", "within_high"):  # paired bootstrap of each direction's mean transfer
            if f"transfer_{direction}" in metrics:
                assert metrics[f"transfer_{direction}_ci_low"] <= metrics[f"transfer_{direction}_ci_high"]
        names = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {"transfer_scores_ci_low.json", "consistency_matrix_ci_high.json"} <= names
    extract = client.search_runs([experiment], f"tags.mlflow.parentRunId = '{second.parent_run_id}' "
                                               "and tags.step = 'extract'")
    assert {r.data.tags["method"] for r in extract} == {"pca"}
    # issue 16: 5-fold recognition over all 10 pairs, intervals, chance and surface baselines, from cached states
    for run in extract:
        metrics = run.data.metrics
        assert metrics["folds"] == 5 and metrics["n_eval"] == 10
        assert metrics["best_accuracy_ci_low"] <= metrics["best_accuracy"] <= metrics["best_accuracy_ci_high"]
        for name in ("baseline_length_rule", "baseline_length_lr", "baseline_bow_lr"):
            assert metrics[f"{name}_ci_low"] <= metrics[name] <= metrics[f"{name}_ci_high"]
        low = client.get_metric_history(run.info.run_id, "recognition_accuracy_ci_low")
        chance = client.get_metric_history(run.info.run_id, "chance_level")
        assert sorted(m.step for m in low) == sorted(m.step for m in chance) == list(range(1, TINY_LAYERS + 1))
    # morality's pairs differ in one word ("helped" / "hurt"): the bag of words gives every pair away
    morality = [r for r in extract if r.data.tags["concept"] == "morality"]
    assert all(r.data.metrics["baseline_bow_lr"] == 1.0 for r in morality)
    assert "summary/baselines.md" in {a.path for a in client.list_artifacts(second.parent_run_id, "summary")}


def test_report_regenerates_tables_and_figures_from_mlflow_alone(submission, tmp_path):
    from tracking.rebuild import report

    summary, client = submission
    files = {f.name for f in report(client, summary.parent_run_id, tmp_path / "report")}
    assert {"recognition.md", "recognition.csv", "consistency_layers_tiny-qwen20.png"} <= files
    table = (tmp_path / "report" / "recognition.md").read_text()
    assert "| morality |" in table and "| en | fr |" in table
    logged = {a.path for a in client.list_artifacts(summary.parent_run_id, "report")}
    assert "report/recognition.md" in logged


def test_compare_lines_up_two_submissions(submission):
    from tracking.readback import compare

    summary, client = submission
    experiment = client.get_run(summary.parent_run_id).info.experiment_id
    parents = client.search_runs([experiment], "tags.step = 'submission'", order_by=["attributes.start_time ASC"])
    labels, rows = compare(client, [p.info.run_id for p in parents[:2]])
    assert len(labels) == 2
    key = next(k for k in rows if k.startswith("best_accuracy") and k.endswith("morality / en"))
    assert all(v is not None and 0 <= v <= 1 for v in rows[key])
