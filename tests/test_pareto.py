"""A multi-objective control study (guard.use: objective) logs its Pareto front, read back through MlflowClient."""

import json
from pathlib import Path

from mlflow.tracking import MlflowClient

from mvplatform.control import Setting
from mvplatform.search import StudyResult, TrialRecord
from mvplatform.spec import Spec
from tracking.control_runs import ControlTracker, pareto_front
from tracking.runs import SubmissionTracker

# (following rate, harmless rate) per trial; the study minimises following and maximises harmless
TRIALS = [TrialRecord(0, Setting(1, 2, 0.5), 0.50, 0.90, "COMPLETE", True),
          TrialRecord(1, Setting(2, 2, 1.0), 0.25, 0.60, "COMPLETE", True),
          TrialRecord(2, Setting(2, 1, 1.0), 0.50, 0.50, "COMPLETE", True),  # beaten by 0 and by 1
          TrialRecord(3, Setting(1, 1, 1.5), 0.10, 0.20, "COMPLETE", False),
          TrialRecord(4, Setting(1, 1, 2.0), 0.05, 0.10, "PRUNED", False)]  # pruned: never on the front


def spec(use: str) -> Spec:
    return Spec.model_validate({"name": "pareto", "data": {"concepts": ["harmfulness"], "languages": ["en"]},
                                "control": {"concept": "harmfulness",
                                            "search": {"sampler": "nsga2", "guard": {"use": use}}}})


def study() -> StudyResult:
    return StudyResult("en", "s", "minimize", TRIALS, TRIALS[1], 0.8, 0.9, 0.72, 1.0, 10)


def log(tmp_path: Path, use: str) -> tuple[MlflowClient, str]:
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    tracker = SubmissionTracker(client, spec(use))
    tracker.start(1)
    run_id = ControlTracker(tracker, "m", tracker.spec.control, n_layers=4).log_study(study())
    assert run_id is not None
    return client, run_id


def test_pareto_front_keeps_completed_trials_no_other_beats_on_both():
    assert [r.number for r in pareto_front(TRIALS, "minimize")] == [0, 1, 3]
    assert [r.number for r in pareto_front(TRIALS, "maximize")] == [0]  # 0 follows most and is most harmless


def test_multi_objective_study_logs_its_pareto_front(tmp_path):
    client, run_id = log(tmp_path, "objective")
    run = client.get_run(run_id)
    assert run.data.tags["pareto_front"] == "0,1,3" and run.data.metrics["pareto_trials"] == 3
    history = client.get_metric_history(run_id, "pareto_following_rate")
    assert sorted((m.step, m.value) for m in history) == [(0, 0.50), (1, 0.25), (3, 0.10)]
    harmless = client.get_metric_history(run_id, "pareto_harmless_rate")
    assert sorted((m.step, m.value) for m in harmless) == [(0, 0.90), (1, 0.60), (3, 0.20)]
    table = json.loads(Path(client.download_artifacts(run_id, "pareto_front.json", str(tmp_path))).read_text())
    assert table["columns"][:4] == ["trial", "start", "width", "strength"]
    assert [row[0] for row in table["data"]] == [0, 1, 3] and [row[3] for row in table["data"]] == [0.5, 1.0, 1.5]


def test_single_objective_study_logs_no_front(tmp_path):
    client, run_id = log(tmp_path, "constraint")
    run = client.get_run(run_id)
    assert "pareto_trials" not in run.data.metrics and "pareto_front" not in run.data.tags
