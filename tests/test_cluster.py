"""mvp on a real two-node Ray cluster with an MLflow tracking server (issue 18), with faults.

    pytest -m cluster        # about 4-5 minutes on 2 busy cores; not part of the default run

One cluster for the whole module (tests/cluster.py): a Ray head and a second node with token
authentication, and ``mlflow server`` with artifact proxying, all on this machine. Every submission
is ``mvp submit --address`` (or ``ray job submit ... -- mvp submit``) in a process of its own, and
everything is read back through ``MlflowClient`` from the server. The clean cluster run is the
reference of every fault: nothing lost (every item's vectors and accuracy curve byte-identical to
it), nothing duplicated (one child run per step/model/concept/language tag set).
"""

from __future__ import annotations

import os
import signal
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.cluster import BIN, LocalCluster

pytestmark = pytest.mark.cluster

ROOT = Path(__file__).resolve().parents[1]
ITEMS = 4  # 2 concepts x 2 languages
SPEC = """
name: {name}
model: {{name: "{model}", device: cpu, prompt: chat}}
data: {{dataset: "{data}", concepts: [morality, truthfulness], languages: [en, fr]}}
extract: {{batch_size: 8}}
analyses: [{analyses}]
resources: {{model_workers: 1, cpus_per_worker: 1}}
tracking: {{uri: "{uri}"}}
results: {{dir: "{results}"}}
"""
CONTROL = """control:
  concept: morality
  test_instructions: 3
  curve_points: 3
  generation: {max_new_tokens: 3, batch_size: 64}
  search:
    trials: 4
    trials_per_batch: 4
    instructions: 3
    layers: {start: [1, 3], width: [1, 2]}
    strength: [-2.0, 2.0]
    strength_step: 1.0
    guard: {instructions: 2}
"""


@pytest.fixture(scope="module")
def cluster():
    cluster = LocalCluster.create()
    try:
        cluster.start()
    except BaseException:
        cluster.stop()
        raise
    yield cluster
    left = cluster.stop()
    assert left == [], f"processes of the suite's cluster still alive after stopping it: {left}"


@pytest.fixture(scope="module")
def write(cluster, tiny_model_dir, mvalue_dir):
    """name, control?, tracking URI? -> a spec file (results in the driver-only folder).

    Only the reference runs (with control) have a cross-lingual analysis: its Ray task costs a
    worker process start, ~25 s on a busy 2-core machine, and the faults are about the items.
    """
    def make(name: str, control: bool = False, uri: str | None = None) -> Path:
        folder = cluster.root / "specs"
        folder.mkdir(exist_ok=True)
        path = folder / f"{name}.yaml"
        text = SPEC.format(name=name, model=tiny_model_dir("llama"), data=mvalue_dir, uri=uri or cluster.tracking_uri,
                           results=cluster.driver_only / name,
                           analyses="recognition, consistency" if control else "recognition")
        path.write_text(text + (CONTROL if control else ""))
        return path
    return make


@pytest.fixture(scope="module")
def clean(cluster, write):
    """The reference: the spec with its control stage, on the cluster, and the same spec run locally.

    Both submissions run at once (the local one on its own local Ray and SQLite store).
    """
    on_cluster = write("clean", control=True)
    local_uri = f"sqlite:///{cluster.driver_only / 'local.db'}"
    local = write("local", control=True, uri=local_uri)
    a = cluster.popen(cluster.mvp("submit", "--address", cluster.address, str(on_cluster)),
                      log=cluster.root / "clean.log")
    b = cluster.popen(cluster.mvp("submit", str(local)), log=cluster.root / "local.log")
    assert a.wait(300) == 0, (cluster.root / "clean.log").read_text()[-4000:]
    assert b.wait(300) == 0, (cluster.root / "local.log").read_text()[-4000:]
    return parent_of(MlflowClient(cluster.tracking_uri), "clean"), parent_of(MlflowClient(local_uri), "local")


# -- reading back ---------------------------------------------------------------------------------


def parent_of(client: MlflowClient, experiment: str):
    """The latest submission (parent run) of an experiment."""
    found = client.get_experiment_by_name(experiment)
    assert found is not None, f"no experiment {experiment!r}"
    runs = client.search_runs([found.experiment_id], "tags.step = 'submission'",
                              order_by=["attributes.start_time DESC"])
    return runs[0]


def children(client: MlflowClient, parent) -> list:
    return client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'",
                              max_results=5000)


def finished_extractions(client: MlflowClient, experiment: str) -> int:
    try:
        found = client.get_experiment_by_name(experiment)
        if found is None:
            return 0
        return len(client.search_runs([found.experiment_id], "tags.step = 'extract' and attributes.status = 'FINISHED'"))
    except Exception:  # noqa: BLE001 - the server may be down on purpose, or the experiment not there yet
        return 0


def wait_for(condition, what: str, timeout: float = 180, driver=None) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if driver is not None and driver.poll() is not None:
            raise AssertionError(f"the driver exited ({driver.returncode}) before {what}")
        assert time.monotonic() < deadline, f"not within {timeout} s: {what}"
        time.sleep(0.2)


def item_bytes(client: MlflowClient, parent, folder: Path) -> dict[tuple, bytes]:
    """(concept, language, file) -> bytes of each extraction child's accuracy curve and vectors."""
    out = {}
    for run in children(client, parent):
        if run.data.tags.get("step") != "extract":
            continue
        for name in ("accuracy.json", "vectors.safetensors"):
            local = client.download_artifacts(run.info.run_id, name, str(folder / run.info.run_id))
            out[(run.data.tags["concept"], run.data.tags["language"], name)] = Path(local).read_bytes()
    return out


def metrics_by_child(client: MlflowClient, parent) -> dict[tuple, dict[str, float]]:
    """child key -> its metrics, timings left out (they differ between any two runs)."""
    out = {}
    for run in children(client, parent):
        tags = run.data.tags
        key = (tags.get("step"), tags.get("concept"), tags.get("language"), tags.get("mode"))
        out[key] = {k: v for k, v in run.data.metrics.items() if "seconds" not in k}
    return out


def assert_nothing_lost_or_duplicated(client: MlflowClient, parent, reference_client, reference, tmp: Path) -> None:
    runs = children(client, parent)
    keys = Counter((r.data.tags.get("step"), r.data.tags.get("model"), r.data.tags.get("concept"),
                    r.data.tags.get("language"), r.data.tags.get("mode")) for r in runs)
    assert set(keys.values()) == {1}, f"duplicated child runs: {[k for k, n in keys.items() if n > 1]}"
    extract = [r for r in runs if r.data.tags.get("step") == "extract"]
    assert len(extract) == ITEMS and all(r.info.status == "FINISHED" for r in extract), (
        [(r.data.tags.get("concept"), r.data.tags.get("language"), r.info.status) for r in extract])
    assert not any(k[0] == "cross-lingual" for k in keys)  # the fault runs analyse nothing across languages
    mine = item_bytes(client, parent, tmp / "mine")
    theirs = item_bytes(reference_client, reference, tmp / "reference")
    assert len(mine) == 2 * ITEMS and mine == theirs  # byte-identical accuracy curves and vectors
    parent = client.get_run(parent.info.run_id)
    assert parent.info.status == "FINISHED", parent.info.status
    assert parent.data.tags["items_done"] == parent.data.tags["items_total"] == str(ITEMS)


# -- the cluster itself ---------------------------------------------------------------------------


def test_token_authentication_is_on_and_the_tracking_server_checks_host_headers(cluster):
    """Ray's dashboard refuses a request without the cluster's token; MLflow accepts only --allowed-hosts."""
    jobs = f"{cluster.dashboard}/api/jobs/"
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(jobs, timeout=10)
    assert refused.value.code in (401, 403)
    token = cluster.token.read_text().strip()
    with urllib.request.urlopen(urllib.request.Request(jobs, headers={"Authorization": f"Bearer {token}"}),
                                timeout=10) as answer:
        assert answer.status == 200

    port = cluster.tracking_uri.rsplit(":", 1)[1]
    search = f"{cluster.tracking_uri}/api/2.0/mlflow/experiments/search?max_results=1"
    named = urllib.request.Request(search, headers={"Host": f"mlflow.internal:{port}"})
    with urllib.request.urlopen(named, timeout=10) as answer:  # listed in --allowed-hosts
        assert answer.status == 200
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(urllib.request.Request(search, headers={"Host": f"other.example:{port}"}), timeout=10)
    assert refused.value.code == 403 and b"Invalid Host header" in refused.value.read()


def test_a_driver_without_token_mode_is_told_how_to_connect(cluster, write):
    """A driver given an address does not turn token authentication on by itself (Ray 2.60): mvp says so,
    from one probe of the GCS, instead of Ray's ConnectionError traceback after ~20 s."""
    spec = write("no-token")
    start = time.monotonic()
    out = cluster.run(cluster.mvp("submit", "--address", cluster.address, str(spec)), timeout=180,
                      RAY_AUTH_MODE=None)  # unset, as in a user's shell
    seconds = time.monotonic() - start
    assert out.returncode == 2, out.stdout[-3000:]
    assert "RAY_AUTH_MODE=token" in out.stdout and "Traceback" not in out.stdout, out.stdout[-3000:]
    assert f"the Ray cluster at {cluster.address} requires token authentication" in out.stdout, out.stdout[-3000:]
    print(f"refused in {seconds:.1f} s (the process start and mvp's imports included)")


def test_cluster_submission_equals_a_local_run(cluster, clean, tmp_path):
    """Vectors, accuracy curves, every child's metrics and Table 2 equal the same spec run locally."""
    mine, theirs = MlflowClient(cluster.tracking_uri), MlflowClient(f"sqlite:///{cluster.driver_only / 'local.db'}")
    parent, local = clean
    assert parent.info.status == local.info.status == "FINISHED"
    assert item_bytes(mine, parent, tmp_path / "a") == item_bytes(theirs, local, tmp_path / "b")
    ours, reference = metrics_by_child(mine, parent), metrics_by_child(theirs, local)
    assert ours == reference
    steps = Counter(key[0] for key in ours)
    assert steps == {"extract": ITEMS, "cross-lingual": 2, "search": 2, "control-mode": 6, "control": 1}, steps
    table = "summary/control/{model}/table2.md"
    model = next(r.data.tags["model"] for r in children(mine, parent) if r.data.tags.get("step") == "extract")
    ours_table = Path(mine.download_artifacts(parent.info.run_id, table.format(model=model), str(tmp_path / "c")))
    local_table = Path(theirs.download_artifacts(local.info.run_id, table.format(model=model), str(tmp_path / "d")))
    assert "LS-Control" in ours_table.read_text() and ours_table.read_text() == local_table.read_text()


def test_only_the_driver_writes_the_result_store(cluster, clean):
    """States, control evaluations and the Optuna studies are in the driver's folder, which no node sees."""
    if not cluster.hide:
        pytest.skip("this machine cannot give the Ray nodes a private mount namespace (unshare -m)")
    results = cluster.driver_only / "clean"
    # 4 items, 3 distinct states: the fixture's truthfulness pairs are the same text in en and fr.
    assert len(list((results / "states").rglob("*.safetensors"))) == 3
    assert len(list((results / "control").glob("*.json"))) == 2
    journals = list((results / "studies").glob("*.journal"))
    assert len(journals) == 2, (
        "the Optuna studies were written on the Ray nodes' own disks, not in the driver's result store: "
        f"{sorted(str(p.relative_to(results)) for p in results.rglob('*') if p.is_file())}")


def test_ray_job_submit_runs_the_uploaded_checkout(cluster, clean, write, tmp_path):
    """``ray job submit --working-dir . -- mvp submit``: the driver runs on the head, results equal the clean run."""
    spec = write("job")
    out = cluster.run([str(BIN / "ray"), "job", "submit",
                       "--address", cluster.dashboard, "--working-dir", str(ROOT), "--",
                       sys.executable, "-m", "mvplatform.cli", "submit", str(spec)], cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stdout[-4000:]
    assert "succeeded" in out.stdout
    client = MlflowClient(cluster.tracking_uri)
    parent = parent_of(client, "job")
    assert_nothing_lost_or_duplicated(client, parent, client, clean[0], tmp_path)


# -- faults ---------------------------------------------------------------------------------------


def test_tracking_server_stopped_for_10_s_mid_run(cluster, clean, write, tmp_path):
    """Either the run rides out the outage (MLflow's retries) or it fails clearly and a re-submit resumes it."""
    spec = write("blink")
    client = MlflowClient(cluster.tracking_uri)
    log = cluster.root / "blink.log"
    driver = cluster.popen(cluster.mvp("submit", "--address", cluster.address, str(spec)), log=log,
                           MVP_FAULT_SLOW_SECONDS="2")
    wait_for(lambda: finished_extractions(client, "blink") >= 1, "the first item was logged", driver=driver)
    port = cluster.stop_mlflow()
    stopped = time.monotonic()
    time.sleep(max(0.0, 10 - (time.monotonic() - stopped)))
    cluster.start_mlflow(port)
    code = driver.wait(300)
    output = log.read_text()
    if code != 0:  # it gave up: the message must say why, and a re-submit must finish it without duplicates
        assert "MLflow" in output or "mlflow" in output, output[-4000:]
        again = cluster.run(cluster.mvp("submit", "--address", cluster.address, str(spec)))
        assert again.returncode == 0, again.stdout[-4000:]
        assert "resuming the interrupted submission" in again.stdout
    print(f"tracking server outage: the first submission exited {code}")
    assert_nothing_lost_or_duplicated(client, parent_of(client, "blink"), client, clean[0], tmp_path)


def test_driver_killed_mid_run_resumes_on_resubmit(cluster, clean, write, tmp_path):
    spec = write("driver")
    client = MlflowClient(cluster.tracking_uri)
    driver = cluster.popen(cluster.mvp("submit", "--address", cluster.address, str(spec)),
                           log=cluster.root / "driver.log", MVP_FAULT_SLOW_SECONDS="2")
    wait_for(lambda: finished_extractions(client, "driver") >= 1, "the first item was logged", driver=driver)
    os.killpg(driver.pid, signal.SIGKILL)  # the driver alone: the cluster's processes are in other sessions
    driver.wait()
    interrupted = parent_of(client, "driver")
    assert interrupted.info.status == "RUNNING"
    assert 1 <= finished_extractions(client, "driver") < ITEMS
    again = cluster.run(cluster.mvp("submit", "--address", cluster.address, str(spec)))
    assert again.returncode == 0, again.stdout[-4000:]
    resumed = parent_of(client, "driver")
    assert resumed.info.run_id == interrupted.info.run_id and resumed.data.tags["resumed"] == "1"
    assert_nothing_lost_or_duplicated(client, resumed, client, clean[0], tmp_path)


def test_second_node_lost_mid_item_is_retried_on_the_head(cluster, clean, write, tmp_path):
    """node2's raylet SIGKILLed while its model worker runs an item: the worker restarts on the head.

    The running item's own retries (max_task_retries) are spent on ActorUnavailableError within
    seconds, before Ray marks the node dead; dispatch puts it back in the queue and sends it to the
    worker once the worker answers again, on the head (ray_jobs/dispatch.py).
    """
    spec = write("nodeloss")
    client = MlflowClient(cluster.tracking_uri)
    blocker = cluster.occupy_head_cpu()  # the model worker can only start on node2
    driver = cluster.popen(cluster.mvp("submit", "--address", cluster.address, str(spec)),
                           log=cluster.root / "nodeloss.log", MVP_FAULT_SLOW_SECONDS="5")
    wait_for(lambda: finished_extractions(client, "nodeloss") >= 1, "the first item was logged", driver=driver)
    assert cluster.node_pids("node2", "ModelWorker"), "the model worker is not on node2"
    cluster.kill_raylet("node2")
    assert finished_extractions(client, "nodeloss") < ITEMS, "the node was lost only after the last item"
    os.kill(blocker, signal.SIGKILL)  # the head's CPU is free again for the restarted worker
    code = driver.wait(300)
    output = (cluster.root / "nodeloss.log").read_text()
    assert code == 0, output[-4000:]
    parent = parent_of(client, "nodeloss")
    assert_nothing_lost_or_duplicated(client, parent, client, clean[0], tmp_path)
    assert parent.data.metrics["model_loads"] == 2  # loaded on node2, then again on the head
    assert "worker 0 unreachable" in output and "worker 0 answers again" in output, output[-4000:]
