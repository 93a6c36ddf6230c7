"""Fault tolerance with real local Ray: a model worker killed mid-item is restarted and the item retried."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
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


@pytest.mark.parametrize("error", [torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
                                   MemoryError(), RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: "
                                                               "can't allocate memory: you tried to allocate 1 bytes. "
                                                               "Error code 12 (Cannot allocate memory); out of memory")])
def test_out_of_memory_on_load_names_model_dtype_memory_needed_and_available(error, tiny_model_dir, monkeypatch):
    from transformers import AutoModelForCausalLM

    from mvplatform.errors import ModelError
    from mvplatform.models import load_model
    from mvplatform.spec import ModelSpec

    folder = tiny_model_dir("llama")
    n_params = sum(p.numel() for p in AutoModelForCausalLM.from_pretrained(folder).parameters())

    def fail(*args, **kwargs):
        raise error

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", fail)
    with pytest.raises(ModelError) as info:
        load_model(ModelSpec(name=str(folder), device="cpu", dtype="float32"))
    message = str(info.value)
    assert message.startswith(f"out of memory loading model {str(folder)!r} on cpu")
    assert f"needs {n_params:,} parameters x 4 bytes (float32) = {n_params * 4 / 2**20:.1f} MiB" in message
    assert "GiB RAM available on this machine" in message
    assert "model.dtype: bfloat16" in message and "resources.model_workers" in message


def test_other_load_errors_are_not_reported_as_out_of_memory(tiny_model_dir, monkeypatch):
    from transformers import AutoModelForCausalLM

    from mvplatform.models import load_model
    from mvplatform.spec import ModelSpec

    def fail(*args, **kwargs):
        raise RuntimeError("size mismatch for lm_head.weight")

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", fail)
    with pytest.raises(RuntimeError, match="size mismatch"):
        load_model(ModelSpec(name=str(tiny_model_dir("llama")), device="cpu"))


UNREACHABLE = "http://127.0.0.1:9"  # the discard port: nothing listens


def test_unreachable_mlflow_fails_fast_with_exit_2_and_a_clear_message(tiny_model_dir, mvalue_dir, tmp_path):
    path, _ = write_spec(tmp_path, tiny_model_dir("qwen2"), mvalue_dir)
    path.write_text("\n".join(line for line in path.read_text().splitlines() if not line.startswith("tracking:")))
    env = {**os.environ, "MLFLOW_TRACKING_URI": UNREACHABLE}
    start = time.monotonic()  # baseline in the same run: start-up and the imports a submission needs
    subprocess.run([sys.executable, "-c", "import mlflow, ray, mvplatform.cli, ray_jobs.submit, tracking.runs"],
                   check=True, cwd=tmp_path, env=env, timeout=120)
    imports = time.monotonic() - start
    start = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "mvplatform.cli", "submit", str(path)], capture_output=True,
                            text=True, cwd=tmp_path, env=env, timeout=120)
    seconds = time.monotonic() - start
    assert result.returncode == 2, result.stderr
    message = " ".join(result.stderr.split())
    assert f"MLflow tracking server {UNREACHABLE} is unreachable (connection refused" in message
    assert "nothing was started" in message
    # Beyond start-up and imports, failing takes seconds; MLflow's default retries would take minutes.
    assert seconds < imports + 15, (seconds, imports)
    assert "Ray" not in result.stdout + result.stderr


def test_unreachable_mlflow_is_refused_before_ray_starts(tiny_model_dir, mvalue_dir, tmp_path, monkeypatch):
    import ray

    from mvplatform.errors import TrackingError

    path, _ = write_spec(tmp_path, tiny_model_dir("qwen2"), mvalue_dir)
    path.write_text(path.read_text().replace(f"sqlite:///{tmp_path / 'mlflow.db'}", UNREACHABLE))

    def no_ray(*args, **kwargs):
        raise AssertionError("Ray started before the MLflow store was checked")

    monkeypatch.setattr(ray, "init", no_ray)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "7")  # the user's own setting comes back after the probe
    monkeypatch.delenv("MLFLOW_HTTP_REQUEST_TIMEOUT", raising=False)
    start = time.monotonic()
    with pytest.raises(TrackingError, match="unreachable"):
        submit(load_spec(path), path)
    assert time.monotonic() - start < 10
    assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "7" and "MLFLOW_HTTP_REQUEST_TIMEOUT" not in os.environ


def test_worker_env_forwards_mvp_variables_but_not_those_a_ray_job_already_sets(monkeypatch):
    import json

    from ray_jobs.submit import worker_env

    monkeypatch.setenv("MVP_CACHE_DIR", "/shared/mvp-cache")
    monkeypatch.setenv("MVP_FAULT_KILL_ONCE", "/tmp/x")
    monkeypatch.delenv("RAY_JOB_CONFIG_JSON_ENV_VAR", raising=False)
    env = worker_env()
    assert env["MVP_CACHE_DIR"] == "/shared/mvp-cache" and env["MVP_FAULT_KILL_ONCE"] == "/tmp/x"
    assert env["TOKENIZERS_PARALLELISM"] == "false"
    job = {"runtime_env": {"working_dir": ".", "env_vars": {"MVP_CACHE_DIR": "/shared/mvp-cache"}}}
    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", json.dumps(job))  # what `ray job submit` gives its driver
    env = worker_env()
    assert "MVP_CACHE_DIR" not in env and env["MVP_FAULT_KILL_ONCE"] == "/tmp/x"


def test_example_cluster_config_passes_rays_schema():
    import yaml
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = prepare_config(yaml.safe_load((Path(__file__).parents[1] / "ray_jobs" / "cluster.yaml").read_text()))
    validate_config(config)  # raises on a schema error; starts and contacts nothing
    assert set(config["available_node_types"]) == {"head", "gpu_worker"}
    assert any("pip install -e ." in command for command in config["setup_commands"])
