"""About 1000 items on a two-node Ray cluster with an MLflow tracking server: the per-item overhead.

    python -m benchmarks.cluster_scale --threads 1   # 9 tiny models x 7 concepts x 16 languages = 1008 items
    python -m benchmarks.cluster_scale --quick       # 2 x 2 x 2 = 8 items

Starts the cluster of tests/cluster.py on this machine (a Ray head and a second node, 1 CPU each,
token authentication; ``mlflow server`` with a SQLite store and artifact proxying), then one
``mvp submit --address`` of tiny random models (different seeds, so no two share cached states)
on the built-in pairs (``max_pairs: 8``: 6 train / 2 test), recognition only with
``extract.intervals: false`` (the permutation chance level and surface baselines are analysis work,
measured by ``analysis_overhead``; here the platform's own cost), one model worker of 1 CPU per model. Then ``mvp status SPEC`` and ``mvp report SPEC`` against the server, which then
holds more than 1000 child runs, each in a fresh process as a user runs them.

Figures:

- ``overhead_per_item_ms``: the extraction stage's wall time, plus the wait at its end for the
  extraction runs still being written to MLflow in the background (stage ``tracking``), less the
  model loads and less the forward passes (the summed ``seconds`` of the extraction runs,
  ``PairStates.seconds``), per item: what the driver (Ray dispatch, recognition, result store) and
  MLflow add to each item.
  Goal <= 50 ms. It assumes the forward passes run one at a time (one worker, models one after
  another); were they to overlap, the figure would be a lower bound (``raw`` has every part).
- ``status_seconds``, ``report_seconds``: wall time of ``mvp status`` / ``mvp report`` with all the
  child runs there (process start and imports included). Goal < 10 s each. ``raw`` also holds the
  same commands run inside the benchmark's process (imports already paid) and the bare start of
  a process importing mvp and MLflow, which a busy machine makes the larger part.
"""

from __future__ import annotations

import json
import re
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import _common as c

NAME = "cluster_scale"
CONCEPTS = ["morality", "deontology", "utilitarianism", "fairness", "truthfulness", "toxicity", "harmfulness"]
LANGUAGES = ["en", "fr", "zh", "es", "pt", "vi", "ca", "id", "ja", "ko", "fi", "hu", "ta", "te", "sw", "ny"]

SPEC = """name: cluster-scale
model:
{models}
data: {{dataset: builtin:values, concepts: [{concepts}], languages: [{languages}], max_pairs: 8}}
extract: {{batch_size: 8, intervals: false}}
analyses: [recognition]
resources: {{model_workers: 1, cpus_per_worker: 1}}
tracking: {{uri: "{uri}"}}
results: {{dir: "{results}"}}
"""


def tiny_models(folder: Path, n: int) -> list[Path]:
    """``n`` tiny random LLaMA models, seeds 0..n-1 (distinct weights, so distinct cache keys)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    tokenizer = c.tiny_tokenizer()
    config = AutoConfig.for_model("llama", vocab_size=len(tokenizer), pad_token_id=0, bos_token_id=1,
                                  eos_token_id=2, **{**c.TINY, "num_hidden_layers": 2, "hidden_size": 32,
                                                     "intermediate_size": 64})
    paths = []
    for seed in range(n):
        path = folder / f"tiny{seed}"
        torch.manual_seed(seed)
        AutoModelForCausalLM.from_config(config).save_pretrained(path)
        tokenizer.save_pretrained(path)
        paths.append(path)
    return paths


def timed(cluster, argv: list[str], timeout: float = 600) -> tuple[float, str]:
    start = time.perf_counter()
    out = cluster.run(argv, timeout=timeout)
    seconds = time.perf_counter() - start
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[2:5])} exited {out.returncode}:\n{out.stdout[-4000:]}")
    return seconds, out.stdout


def main(argv: list[str] | None = None) -> int:
    from mlflow.tracking import MlflowClient

    from mvplatform.cli import main as mvp_main
    from tests.cluster import LocalCluster

    p = c.parser(__doc__.splitlines()[0], repeats=1)
    args = p.parse_args(argv)
    c.apply_threads(args)
    meta = c.machine()
    n_models, concepts, languages = (2, CONCEPTS[:2], LANGUAGES[:2]) if args.quick else (9, CONCEPTS, LANGUAGES)
    items = n_models * len(concepts) * len(languages)
    c.say(f"{NAME}: {n_models} tiny models x {len(concepts)} concepts x {len(languages)} languages = {items} items, "
          "2-node Ray cluster + MLflow server on this machine")
    tmp = tempfile.TemporaryDirectory()
    models = tiny_models(Path(tmp.name), n_models)
    cluster = LocalCluster.create(hide=False)
    try:
        start = time.perf_counter()
        cluster.start()
        startup = time.perf_counter() - start
        c.say(f"  cluster up in {startup:.1f} s (head {cluster.address}, MLflow {cluster.tracking_uri})")
        spec = cluster.root / "scale.yaml"
        spec.write_text(SPEC.format(models="\n".join(f'  - {{name: "{m}", device: cpu}}' for m in models),
                                    concepts=", ".join(concepts), languages=", ".join(languages),
                                    uri=cluster.tracking_uri, results=cluster.driver_only / "scale"))
        submit_seconds, out = timed(cluster, cluster.mvp("submit", "--address", cluster.address, str(spec)),
                                    timeout=3600)
        c.say(f"  submit: {submit_seconds:.1f} s")
        client = MlflowClient(cluster.tracking_uri)
        experiment = client.get_experiment_by_name("cluster-scale")
        parents = client.search_runs([experiment.experiment_id], "tags.step = 'submission'")
        parent = parents[0]
        stages = {k.removeprefix("stage_seconds_"): v for k, v in parent.data.metrics.items()
                  if k.startswith("stage_seconds_")}
        children, token = [], None
        while True:  # every child run, a page at a time
            page = client.search_runs([experiment.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'",
                                      max_results=1000, page_token=token)
            children += page
            token = page.token
            if not token:
                break
        extract = [r for r in children if r.data.tags.get("step") == "extract"]
        forward = float(sum(r.data.metrics.get("seconds", 0.0) for r in extract))
        # the extraction runs still being written when the last item is done count too ("tracking")
        overhead = (stages["extract"] + stages.get("tracking", 0.0) - stages.get("load", 0.0) - forward) / items
        c.say(f"  {len(children)} child runs ({len(extract)} extraction), stages {json.dumps(stages)}, "
              f"forward passes {forward:.1f} s")

        status_seconds, status_out = timed(cluster, cluster.mvp("status", str(spec)))
        done = re.search(r"(\d+)/(\d+) done", " ".join(status_out.split()))
        report_seconds, _ = timed(cluster, cluster.mvp("report", str(spec), "-o", str(cluster.root / "report"),
                                                       "--no-log"))
        c.say(f"  mvp status {status_seconds:.1f} s ({done.group(0) if done else 'no count printed'}), "
              f"mvp report {report_seconds:.1f} s")
        # The same two commands in this process (imports paid), and the bare start of a process with
        # mvp's and MLflow's imports: what grows with the number of runs vs what every command pays.
        in_process = {}
        for name, command in (("status", ["status", str(spec)]),
                              ("report", ["report", str(spec), "-o", str(cluster.root / "report2"), "--no-log"])):
            start = time.perf_counter()
            if mvp_main(command) != 0:
                raise RuntimeError(f"mvp {name} failed in process")
            in_process[name] = time.perf_counter() - start
        imports_seconds, _ = timed(cluster, [sys.executable, "-c", "import mvplatform.cli, mlflow.tracking"])
        c.say(f"  in this process: mvp status {in_process['status']:.1f} s, mvp report {in_process['report']:.1f} s; "
              f"a process importing mvp and MLflow: {imports_seconds:.1f} s")
    finally:
        left = cluster.stop()
        tmp.cleanup()
    if left:
        raise RuntimeError(f"cluster processes left behind: {left}")

    if len(extract) != items or (done is None or done.group(1) != str(items)):
        raise RuntimeError(f"expected {items} extraction runs and '{items}/{items} done', got {len(extract)} and "
                           f"{done.group(0) if done else None}")
    rows = [{"figure": "overhead per item (ms)", "value": 1000 * overhead, "goal": "<= 50"},
            {"figure": "mvp status (s)", "value": status_seconds, "goal": "< 10"},
            {"figure": "mvp report (s)", "value": report_seconds, "goal": "< 10"}]
    c.say(c.table(rows))
    payload = {
        "sizes": {"models": n_models, "concepts": len(concepts), "languages": len(languages), "items": items,
                  "max_pairs": 8, "child_runs": len(children), "nodes": 2, "cpus_per_node": 1},
        "ratios": {
            "overhead_per_item_ms": c.ratio_entry(1000 * overhead, "<= 50", 1000 * overhead <= 50),
            "status_seconds": c.ratio_entry(status_seconds, "< 10", status_seconds < 10),
            "report_seconds": c.ratio_entry(report_seconds, "< 10", report_seconds < 10),
        },
        "raw": {"cluster_start_seconds": startup, "submit_seconds": submit_seconds, "stage_seconds": stages,
                "forward_seconds_sum": forward, "per_item_extract_ms": 1000 * stages["extract"] / items,
                "per_item_forward_ms": 1000 * forward / items, "status_seconds": status_seconds,
                "report_seconds": report_seconds, "extraction_runs": len(extract),
                "status_in_process_seconds": in_process["status"], "report_in_process_seconds": in_process["report"],
                "process_start_with_imports_seconds": imports_seconds},
    }
    c.report(NAME, args, meta, payload,
             note="overhead = (extract stage + tracking flush - model loads - summed forward passes) / items")
    return 0


if __name__ == "__main__":
    sys.exit(main())
