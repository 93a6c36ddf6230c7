"""System metrics on the parent run: off by default, on with MLflow's own switch (or mvp submit --system-metrics)."""

import time

from mlflow.tracking import MlflowClient

from mvplatform.cli import _parser
from mvplatform.spec import Spec
from tracking.runs import SubmissionTracker


def submission(tmp_path, seconds: float) -> tuple[MlflowClient, str]:
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    tracker = SubmissionTracker(client, Spec.model_validate({"name": "sysmetrics"}))
    parent = tracker.start(0)
    time.sleep(seconds)
    tracker.finish({})
    return client, parent


def test_off_by_default(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING", raising=False)
    client, parent = submission(tmp_path, 0.0)
    assert not [k for k in client.get_run(parent).data.metrics if k.startswith("system/")]


def test_switched_on_the_parent_run_gets_system_metrics(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING", "true")
    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "1")
    client, parent = submission(tmp_path, 2.5)
    metrics = client.get_run(parent).data.metrics
    assert 0 <= metrics["system/cpu_utilization_percentage"] <= 100
    assert metrics["system/system_memory_usage_megabytes"] > 0
    assert client.get_run(parent).info.status == "FINISHED"


def test_submit_flag_sets_mlflows_switch(monkeypatch):
    args = _parser().parse_args(["submit", "spec.yaml", "--system-metrics"])
    assert args.system_metrics is True
    assert _parser().parse_args(["submit", "spec.yaml"]).system_metrics is False
