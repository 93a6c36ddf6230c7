"""A driver killed with SIGKILL mid-run resumes on re-submit: same parent run, no duplicate child runs,
results bit-identical to a clean run's."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import ray
from mlflow.tracking import MlflowClient

from mvplatform.cli import main
from mvplatform.spec import load_spec
from ray_jobs.submit import submit
from tracking.runs import child_key

SPEC = """
name: resume
model: {{name: "{model}", device: cpu}}
data: {{dataset: "{data}", concepts: [morality, truthfulness], languages: [en, fr]}}
extract: {{batch_size: 4}}
analyses: [{analyses}]
resources: {{model_workers: 1}}
tracking: {{uri: "{uri}"}}
results: {{dir: "{results}"}}
"""
ITEMS = 4  # 2 concepts x 2 languages


def write_spec(folder: Path, model: Path, data: Path, analyses: str = "recognition") -> tuple[Path, str]:
    """A spec of 4 items; cross-lingual analyses only when asked (their Ray tasks cost seconds)."""
    folder.mkdir(parents=True, exist_ok=True)
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    path = folder / "spec.yaml"
    path.write_text(SPEC.format(model=model, data=data, uri=uri, results=folder / "results", analyses=analyses))
    return path, uri


def session_pids(sid: int) -> list[int]:
    out = subprocess.run(["ps", "-eo", "pid=,sid=,stat="], capture_output=True, text=True, check=True).stdout
    return [int(pid) for pid, s, stat in (line.split() for line in out.splitlines())
            if int(s) == sid and not stat.startswith("Z")]  # zombies are dead, only not yet reaped


def kill_session(sid: int, timeout: float = 20.0) -> None:
    """SIGKILL the driver's whole session: the driver and the local Ray it started (gcs, raylet, workers).

    Ray workers sit in process groups of their own inside the driver's session, so the session id
    (the driver was started with start_new_session) is what finds them all.
    """
    deadline = time.monotonic() + timeout
    while pids := session_pids(sid):
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if time.monotonic() > deadline:
            raise AssertionError(f"processes of the killed driver still alive: {pids}")
        time.sleep(0.2)


def finished_extract_children(client: MlflowClient) -> int:
    try:
        experiment = client.get_experiment_by_name("resume")
        if experiment is None:
            return 0
        return len(client.search_runs([experiment.experiment_id],
                                      "tags.step = 'extract' and attributes.status = 'FINISHED'"))
    except Exception:  # noqa: BLE001 - the store may not exist yet
        return 0


def children(client: MlflowClient, parent_id: str) -> list:
    experiment = client.get_run(parent_id).info.experiment_id
    return client.search_runs([experiment], f"tags.mlflow.parentRunId = '{parent_id}'", max_results=1000)


def artifacts_by_item(client: MlflowClient, parent_id: str, folder: Path) -> dict[tuple, bytes]:
    out = {}
    for run in children(client, parent_id):
        if run.data.tags["step"] != "extract":
            continue
        key = (run.data.tags["concept"], run.data.tags["language"])
        for name in ("accuracy.json", "vectors.safetensors"):
            local = client.download_artifacts(run.info.run_id, name, str(folder / run.info.run_id))
            out[key + (name,)] = Path(local).read_bytes()
    return out


def test_killed_driver_resumes_without_duplicates(tiny_model_dir, mvalue_dir, tmp_path, capsys):
    model = tiny_model_dir("qwen2")
    path, uri = write_spec(tmp_path / "resumed", model, mvalue_dir, "recognition, consistency")
    client = MlflowClient(tracking_uri=uri)
    # Each item sleeps 1 s in the worker (test-only hook), so the kill lands between items.
    env = {**os.environ, "MVP_FAULT_SLOW_SECONDS": "1"}
    log = (tmp_path / "driver.log").open("w")
    driver = subprocess.Popen([sys.executable, "-m", "mvplatform.cli", "submit", str(path)], cwd=tmp_path,
                              env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        while finished_extract_children(client) < 1:
            assert driver.poll() is None, (tmp_path / "driver.log").read_text()
            assert time.monotonic() < deadline, "no child run finished within 90 s"
            time.sleep(0.1)
    finally:
        kill_session(driver.pid)
        driver.wait()
    logged_before = finished_extract_children(client)
    assert 1 <= logged_before < ITEMS, "the kill must interrupt the submission midway"
    (interrupted,) = client.search_runs([client.get_experiment_by_name("resume").experiment_id],
                                        "tags.step = 'submission'")
    assert interrupted.info.status == "RUNNING"  # SIGKILL: nobody marked it
    tags = interrupted.data.tags  # progress tags were updated as items finished
    assert tags["items_total"] == str(ITEMS) and logged_before - 1 <= int(tags["items_done"]) <= logged_before
    assert main(["status", str(path)]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "RUNNING" in out and f"{tags['items_done']}/{ITEMS} done, 0 failed" in out

    clean_path, clean_uri = write_spec(tmp_path / "clean", model, mvalue_dir)  # extraction alone is compared
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    try:
        resumed = submit(load_spec(path), path)
        clean = submit(load_spec(clean_path), clean_path)
    finally:
        ray.shutdown()

    assert resumed.ok and clean.ok, (resumed.failures, clean.failures)
    assert resumed.parent_run_id == interrupted.info.run_id and resumed.resumed == 1
    assert len(resumed.done) == ITEMS and len(resumed.computed) + len(resumed.cached) == ITEMS
    assert len(resumed.cached) >= logged_before  # what the killed driver finished is not recomputed
    parents = client.search_runs([interrupted.info.experiment_id], "tags.step = 'submission'")
    assert [p.info.run_id for p in parents] == [interrupted.info.run_id]
    parent = client.get_run(interrupted.info.run_id)
    assert parent.info.status == "FINISHED" and parent.data.tags["resumed"] == "1"
    keys = Counter(child_key(run.data.tags) for run in children(client, resumed.parent_run_id))
    assert set(keys.values()) == {1}, keys
    assert sum(1 for k in keys if k[0] == "extract") == ITEMS
    assert sum(1 for k in keys if k[0] == "cross-lingual") == 2
    assert all(r.info.status == "FINISHED" for r in children(client, resumed.parent_run_id))

    assert parent.data.tags["items_done"] == parent.data.tags["items_total"] == str(ITEMS)
    assert parent.data.metrics["stage_seconds_extract"] > 0 and parent.data.metrics["stage_seconds_analysis"] > 0
    assert main(["status", str(path)]) == 0  # the spec's latest submission: the resumed one
    out = " ".join(capsys.readouterr().out.split())
    assert "FINISHED" in out and f"{ITEMS}/{ITEMS} done, 0 failed" in out and "resumed │ 1 time(s)" in out
    assert "extract" in out and "analysis" in out and "MLflow run open" in out
    mine = artifacts_by_item(client, resumed.parent_run_id, tmp_path / "a")
    theirs = artifacts_by_item(MlflowClient(tracking_uri=clean_uri), clean.parent_run_id, tmp_path / "b")
    assert len(mine) == 2 * ITEMS and mine == theirs  # bit-identical accuracy curves and vectors


def test_a_killed_submission_is_resumed_and_a_finished_one_is_not(tiny_model_dir, mvalue_dir, tmp_path):
    path, uri = write_spec(tmp_path, tiny_model_dir("qwen2"), mvalue_dir)
    path.write_text(path.read_text().replace("[morality, truthfulness]", "[morality]"))
    client = MlflowClient(tracking_uri=uri)
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    try:
        first = submit(load_spec(path), path)
        before = {r.info.run_id for r in children(client, first.parent_run_id)}
        client.set_terminated(first.parent_run_id, "KILLED")  # as after Ctrl-C
        second = submit(load_spec(path), path)
        third = submit(load_spec(path), path)
    finally:
        ray.shutdown()
    assert first.ok and second.ok and third.ok
    assert second.parent_run_id == first.parent_run_id and second.resumed == 1
    assert {r.info.run_id for r in children(client, first.parent_run_id)} == before  # nothing logged twice
    assert client.get_run(first.parent_run_id).info.status == "FINISHED"
    assert third.parent_run_id != first.parent_run_id and third.resumed == 0  # FINISHED: a new submission
    assert third.computed == [] and len(third.cached) == 2


def test_force_extract_recomputes_cached_states(tiny_model_dir, mvalue_dir, tmp_path, capsys):
    path, uri = write_spec(tmp_path, tiny_model_dir("qwen2"), mvalue_dir)
    path.write_text(path.read_text().replace("[morality, truthfulness]", "[morality]"))
    client = MlflowClient(tracking_uri=uri)
    first = submit(load_spec(path), path)
    assert len(first.computed) == 2
    client.set_terminated(first.parent_run_id, "KILLED")  # even an interrupted run is not resumed when forced
    assert main(["submit", str(path), "--force", "extract"]) == 0
    parents = client.search_runs([client.get_run(first.parent_run_id).info.experiment_id], "tags.step = 'submission'",
                                 order_by=["attributes.start_time DESC"])
    forced = parents[0]
    assert len(parents) == 2 and forced.info.run_id != first.parent_run_id
    assert forced.data.tags["force"] == "extract"
    states = [r.data.tags["states"] for r in children(client, forced.info.run_id) if r.data.tags["step"] == "extract"]
    assert states == ["computed", "computed"]  # two forward passes again, nothing from the cache
    assert "2 ran the model" in " ".join(capsys.readouterr().out.split())


def test_force_all_names_every_step():
    from ray_jobs.submit import FORCE_STEPS, normalise_force

    assert normalise_force({"all"}) == frozenset(FORCE_STEPS) == frozenset({"extract", "control"})
    assert normalise_force(["extract"]) == frozenset({"extract"})


def test_status_reads_progress_failures_and_stage_times_back(tmp_path, monkeypatch, capsys):
    from mlflow.entities import Metric

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    client = MlflowClient(tracking_uri=uri)
    experiment = client.create_experiment("s")
    stale = int(time.time() * 1000) - 20 * 60 * 1000  # a driver that stopped reporting 20 minutes ago
    parent = client.create_run(experiment, tags={"step": "submission", "spec": "s", "items_total": "3",
                                                 "items_done": "1", "items_failed": "1",
                                                 "progress_time": str(stale)}).info.run_id
    client.log_batch(parent, metrics=[Metric("stage_seconds_extract", 12.5, stale, 0),
                                      Metric("stage_seconds_load", 3.25, stale, 0)])
    failed = client.create_run(experiment, tags={"mlflow.parentRunId": parent, "step": "extract", "model": "m",
                                                 "concept": "morality", "language": "sw",
                                                 "error": "RayActorError: the worker died"}).info.run_id
    client.set_terminated(failed, "FAILED")

    assert main(["status"]) == 0  # no argument: the latest submission in the store
    out = " ".join(capsys.readouterr().out.split())
    assert f"submission {parent}" in out and "1/3 done, 1 failed" in out
    assert "RUNNING" in out
    assert "no progress for 20 min: if its driver is gone, mvp submit the same spec again to resume it" in out
    assert "extract 12.5 s, load 3.2 s" in out or "load 3.2 s, extract 12.5 s" in out
    assert "failed m / morality / sw: RayActorError: the worker died" in out
    assert main(["status", "0123456789abcdef"]) == 2  # an unknown run id: a clear error, exit 2
