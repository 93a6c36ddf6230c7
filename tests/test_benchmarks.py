"""Every benchmark runs end to end on tiny random models (--quick) and writes its JSON with its ratios.

The packaged-model paths (the default sizes) are not run here; `benchmarks/run_all.sh` runs them.
The benchmarks that start Ray submissions or fresh processes per load take longer and are marked slow.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# name -> ratio keys its JSON must hold
FAST = {
    "extraction": ["time_mvp_over_full_forward", "memory_mvp_over_full_forward", "time_unsorted_over_sorted_batches"],
    "steering": ["throughput_steered_window_over_unsteered"],
    "trial_batching": ["trials_per_min_batched_over_one_per_generation", "objective_values_identical"],
    "search_efficiency": ["tpe_evaluations_over_grid", "random_evaluations_over_grid"],
    "profile_generation": ["steering_hooks_share_window", "seconds_per_row_64_over_8"],
    "validation_scaling": ["languages_list_time_10000_over_1000", "data_pairs_time_10000_over_1000"],
    "analysis_overhead": ["stage_time_on_over_off", "forward_passes"],
    # the GPU check's CPU rehearsal (exit 0 only when every check passes)
    "gpu_check": ["check:hook_devices", "check:device_map_tokens", "check:bf16_extraction[llama2-7b-shape]",
                  "trials_per_min_8_over_1[smollm2-135m]", "throughput_steered_window_over_unsteered[gemma3-270m]"],
}
SLOW = {
    "cold_load": ["load_time_safetensors_over_gguf"],
    "resubmit": ["resubmit_over_first_submit_time", "analysis_change_forward_passes"],
    "scaling": ["time_2_workers_over_1_worker", "total_time_linear_fit_r2"],
    # steering-vectors, repeng and nnsight side by side (the `peers` extra); ~45 s on 2 busy cores
    "peers": ["extraction_time_mvp_over_fastest_peer[tiny-llama]", "min_cosine_same_read_point[tiny-llama]",
              "steered_tokens_per_s_mvp_over_fastest_peer[tiny-llama]",
              "search_trials_per_min_mvp_over_peer_loop[tiny-llama]"],
    # a two-node Ray cluster + MLflow server on this machine (tests/cluster.py), 8 items
    "cluster_scale": ["overhead_per_item_ms", "status_seconds", "report_seconds"],
}
CASES = [pytest.param(name, keys, id=name) for name, keys in FAST.items()] + [
    pytest.param(name, keys, id=name, marks=pytest.mark.slow) for name, keys in SLOW.items()]


def run_quick(name: str, out: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    # One torch thread: on a shared, busy machine two threads make tiny models crawl (benchmarks/README.md).
    command = [sys.executable, "-m", f"benchmarks.{name}", "--quick", "--threads", "1", "--out", str(out)]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env=env, timeout=600, check=False)


@pytest.mark.parametrize(("name", "keys"), CASES)
def test_benchmark_runs_quick_and_writes_its_ratios(name, keys, tmp_path):
    if name == "peers" and any(importlib.util.find_spec(p) is None for p in ("steering_vectors", "repeng", "nnsight")):
        pytest.skip('needs the peers: pip install -e ".[peers]" and the --no-deps line in pyproject.toml')
    out = tmp_path / f"{name}.json"
    proc = run_quick(name, out)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    document = json.loads(out.read_text())
    assert document["benchmark"] == name and document["quick"] is True
    machine = document["machine"]
    assert {"date", "git_commit", "cores", "torch", "gpu"} <= set(machine)
    for key in keys:
        entry = document["ratios"][key]
        assert isinstance(entry["value"], float) and "goal" in entry
    assert document["raw"]
    lines = [line for line in proc.stdout.strip().splitlines() if line.strip()]
    ratio_lines = [line for line in lines if line.startswith("RATIO ")]
    assert ratio_lines and lines[-len(ratio_lines):] == ratio_lines  # the ratios are printed last
    if name == "resubmit":  # the cached paths must run no model at all
        assert document["ratios"]["analysis_change_forward_passes"]["value"] == 0.0
        assert document["ratios"]["resubmit_forward_passes"]["value"] == 0.0
    if name == "trial_batching":
        assert document["ratios"]["objective_values_identical"]["met"] is True
    if name == "peers":  # steering-vectors and nnsight read the block output: mvp's block_output read, exactly
        assert document["ratios"]["min_cosine_same_read_point[tiny-llama]"]["value"] > 0.999
        assert set(document["raw"]["tiny-llama"]["extraction"]["times_s"]) == {"mvp", "steering_vectors", "repeng",
                                                                               "nnsight"}
