"""A resumed submission leaves one logged model per model x concept x language, none of a deleted run.

Resuming deletes the unfinished child runs and logs their items again; the logged models of those
runs (the Models tab's concept vectors) must go with them, read back here through MlflowClient.
"""

from __future__ import annotations

from collections import Counter

import pytest
from mlflow.entities import LoggedModelStatus
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from mvplatform.spec import load_spec
from ray_jobs.submit import submit
from tests.test_resume import children, write_spec
from tracking.logged_models import delete_run_models


def logged_models(client: MlflowClient, experiment_id: str) -> list:
    """Every live logged model of the experiment (all pages)."""
    models, token = [], None
    while True:
        page = client.search_logged_models([experiment_id], page_token=token)
        models += list(page)
        token = page.token
        if not token:
            return models


def test_resume_deletes_the_logged_models_of_the_child_runs_it_deletes(tiny_model_dir, mvalue_dir, tmp_path):
    path, uri = write_spec(tmp_path, tiny_model_dir("qwen2"), mvalue_dir)
    path.write_text(path.read_text().replace("[morality, truthfulness]", "[morality]"))
    client = MlflowClient(tracking_uri=uri)
    first = submit(load_spec(path), path)
    assert first.ok
    experiment = client.get_run(first.parent_run_id).info.experiment_id
    before = {m.tags["language"]: m for m in logged_models(client, experiment)}
    assert sorted(before) == ["en", "fr"]
    # The driver died after the fr child wrote its model (READY) but before the run was marked FINISHED.
    extract = {r.data.tags["language"]: r for r in children(client, first.parent_run_id)
               if r.data.tags["step"] == "extract"}
    cut_off = extract["fr"].info.run_id
    assert before["fr"].source_run_id == cut_off and before["fr"].status == LoggedModelStatus.READY
    client.update_run(cut_off, status="RUNNING")
    client.set_terminated(first.parent_run_id, "KILLED")

    second = submit(load_spec(path), path)

    assert second.ok and second.parent_run_id == first.parent_run_id and second.resumed == 1
    assert client.get_run(cut_off).info.lifecycle_stage == "deleted"
    after = logged_models(client, experiment)
    keys = Counter((m.tags["model"], m.tags["concept"], m.tags["language"]) for m in after)
    assert sorted(keys.values()) == [1, 1] and {k[2] for k in keys} == {"en", "fr"}, keys
    live = {r.info.run_id for r in children(client, first.parent_run_id)}
    assert all(m.source_run_id in live for m in after)  # none points at a deleted run
    assert all(client.get_run(m.source_run_id).info.lifecycle_stage == "active" for m in after)
    by_language = {m.tags["language"]: m for m in after}
    assert by_language["en"].model_id == before["en"].model_id  # the finished child's model is kept
    assert by_language["fr"].model_id != before["fr"].model_id
    assert by_language["fr"].source_run_id != cut_off
    with pytest.raises(MlflowException, match="not found"):
        client.get_logged_model(before["fr"].model_id)


def test_delete_run_models_deletes_only_that_runs_models_across_pages(tmp_path):
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.create_experiment("models")
    run, other = (client.create_run(experiment).info.run_id for _ in range(2))
    for i in range(53):  # more than one page of search_logged_models (50 a page on the SQL store)
        client.create_logged_model(experiment, name=f"v{i}", source_run_id=run)
    kept = client.create_logged_model(experiment, name="other", source_run_id=other).model_id

    assert delete_run_models(client, experiment, run) == 53
    assert [m.model_id for m in logged_models(client, experiment)] == [kept]
    assert delete_run_models(client, experiment, run) == 0
