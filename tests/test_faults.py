"""Fault tolerance with real local Ray: a model worker killed mid-item is restarted and the item retried."""

from __future__ import annotations

from mlflow.tracking import MlflowClient

from mvplatform.spec import load_spec
from ray_jobs.submit import submit
from tests.test_resume import artifacts_by_item, write_spec


def test_injected_worker_crash_is_retried_and_results_equal_a_clean_run(tiny_model_dir, mvalue_dir, tmp_path,
                                                                         monkeypatch):
    model = tiny_model_dir("qwen2")
    flag = tmp_path / "crashed-once"
    crashed_path, crashed_uri = write_spec(tmp_path / "crashed", model, mvalue_dir)
    clean_path, clean_uri = write_spec(tmp_path / "clean", model, mvalue_dir)

    monkeypatch.setenv("MVP_FAULT_KILL_ONCE", str(flag))  # forwarded to the workers by submit's runtime_env
    crashed = submit(load_spec(crashed_path), crashed_path)
    monkeypatch.delenv("MVP_FAULT_KILL_ONCE")
    clean = submit(load_spec(clean_path), clean_path)

    assert flag.exists(), "the fault hook never fired"
    assert crashed.ok and clean.ok, (crashed.failures, clean.failures)
    assert len(crashed.computed) == len(clean.computed) == 4
    (loads,) = crashed.model_loads.values()
    assert loads == [2]  # the one worker: loaded, killed mid-item, restarted by Ray (loaded again)
    assert list(clean.model_loads.values()) == [[1]]
    assert MlflowClient(tracking_uri=crashed_uri).get_run(crashed.parent_run_id).data.metrics["model_loads"] == 2
    mine = artifacts_by_item(MlflowClient(tracking_uri=crashed_uri), crashed.parent_run_id, tmp_path / "a")
    theirs = artifacts_by_item(MlflowClient(tracking_uri=clean_uri), clean.parent_run_id, tmp_path / "b")
    assert len(mine) == 8 and mine == theirs
