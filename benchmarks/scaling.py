"""Scaling of a submission with languages x concepts x pairs, and with Ray model workers.

    python -m benchmarks.scaling            # packaged gemma3-270m, up to 4 languages x 2 concepts x 16 pairs
    python -m benchmarks.scaling --quick    # tiny random model, seconds per submission

Every submission is a real ``submit()`` in a fresh Python process, with ``results.reuse: false``
(states recomputed), a fresh MLflow store and the recognition analysis only. Measured:

- total submission time and forward time (summed ``PairStates.seconds``) as the work grows in
  items (languages x concepts: 1x1, 2x1, 2x2, 4x2 at 16 pairs) and in pairs (2x2 at 8, 16, 32),
  with a least-squares line time = fixed + per_input x inputs (expected linear; the fixed part is
  Ray start, model load and MLflow);
- ``resources.model_workers`` 2 vs 1 on the largest size with the platform's default CPU split (on
  2 cores: two actors of 1 CPU / 1 torch thread each vs one of 2 CPUs / 2 threads), and one worker
  of 1 CPU, interleaved, as ratios of total time.

``--threads N`` sets ``resources.cpus_per_worker`` (so the worker's torch threads) for the size
runs; the worker comparison always uses the variants above.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import _common as c

NAME = "scaling"
LANGUAGES = ["en", "fr", "zh", "sw"]
CONCEPTS = ["morality", "toxicity"]

SPEC = """name: bench-scaling
model: {{name: "{model}", device: cpu}}
data: {{dataset: builtin:values, concepts: [{concepts}], languages: [{languages}], max_pairs: {pairs}}}
analyses: [recognition]
resources: {{model_workers: {workers}{cpus}}}
results: {{dir: "{folder}/results", reuse: false}}
tracking: {{uri: "sqlite:///{folder}/mlflow.db"}}
"""


def run(model: str, root: Path, languages: int, concepts: int, pairs: int, workers: int,
        threads: int | None = None) -> dict[str, Any]:
    folder = Path(tempfile.mkdtemp(dir=root, prefix=f"l{languages}c{concepts}p{pairs}w{workers}-"))
    path = folder / "spec.yaml"
    path.write_text(SPEC.format(model=model, folder=folder, concepts=", ".join(CONCEPTS[:concepts]),
                                languages=", ".join(LANGUAGES[:languages]), pairs=pairs, workers=workers,
                                cpus=f", cpus_per_worker: {threads}" if threads else ""))
    out = c.submit_in_subprocess(path)
    if not out["ok"]:
        raise RuntimeError(f"submission failed: {out['failures']}")
    out.update({"languages": languages, "concepts": concepts, "pairs": pairs, "workers": workers,
                "items": languages * concepts, "inputs": languages * concepts * pairs * 2})
    c.say(f"  {languages} lang x {concepts} concepts x {pairs} pairs, {workers} worker(s): {out['seconds']:.1f} s "
          f"(forward {out['forward_seconds'] or 0:.1f} s, {len(out['computed'])} items computed)")
    return out


def main(argv: list[str] | None = None) -> int:
    bench = c.submit_bench(__doc__, argv)
    args, repeats, meta, tmp, model, model_name = (bench.args, bench.repeats, bench.meta, bench.tmp, bench.model,
                                                   bench.model_name)
    root = Path(tmp.name)
    base_pairs = 4 if args.quick else 16
    sizes = [(1, 1, base_pairs)] if args.quick else [
        (1, 1, 16), (2, 1, 16), (2, 2, 16), (2, 2, 8), (2, 2, 32)]
    largest = (2, 1, base_pairs) if args.quick else (4, 2, 16)
    c.say(f"scaling: {model_name}, reuse false, a fresh process per submission")
    results: list[dict[str, Any]] = [run(model, root, *size, 1, args.threads) for size in sizes]
    # Workers on the largest size, interleaved (A B C, C B A, ...), with the platform's default CPU split
    # (1 worker: every core and as many torch threads; 2 workers: half each), and 1 worker on 1 CPU to
    # tell the effect of the second worker from that of torch's thread count.
    cores = int(meta["cores_usable"] or 1)
    variants = {"1 worker (default CPUs)": (1, None), "2 workers (default CPUs)": (2, None),
                "1 worker, 1 CPU": (1, 1)}
    workers: dict[str, list[dict[str, Any]]] = {k: [] for k in variants}
    for r in range(repeats):
        for label in (list(variants) if r % 2 == 0 else list(variants)[::-1]):
            w, threads = variants[label]
            out = run(model, root, *largest, w, threads)
            out["worker_cpus"] = threads or max(1, cores // w)
            workers[label].append(out)
    same = {None: "1 worker (default CPUs)", 1: "1 worker, 1 CPU"}.get(args.threads)
    results += workers[same] if same else []  # the largest size, run with the size runs' CPU setting

    one = [r for r in results if r["workers"] == 1]
    x = np.array([r["inputs"] for r in one], dtype=float)
    y = np.array([r["seconds"] for r in one])
    f = np.array([r["forward_seconds"] or 0.0 for r in one])
    slope, intercept = np.polyfit(x, y, 1)
    f_slope, f_intercept = np.polyfit(x, f, 1)
    r2 = 1 - np.sum((y - (slope * x + intercept)) ** 2) / max(np.sum((y - y.mean()) ** 2), 1e-12)
    f_r2 = 1 - np.sum((f - (f_slope * x + f_intercept)) ** 2) / max(np.sum((f - f.mean()) ** 2), 1e-12)
    rows = [{"langs x concepts x pairs": f"{r['languages']}x{r['concepts']}x{r['pairs']}", "items": r["items"],
             "inputs": r["inputs"], "workers": r["workers"], "total_s": r["seconds"],
             "forward_s": r["forward_seconds"], "fit_total_s": intercept + slope * r["inputs"]}
            for r in sorted(results, key=lambda r: (r["inputs"], r["workers"]))]
    worker_rows = [{"workers": label, "cpus_per_worker": v[0]["worker_cpus"],
                    "median_total_s": c.median([r["seconds"] for r in v]),
                    "median_forward_s": c.median([r["forward_seconds"] or 0.0 for r in v]),
                    "ratio_vs_1_worker_default": c.median_ratio([r["seconds"] for r in v],
                                                                [r["seconds"] for r in workers["1 worker (default CPUs)"]])}
                   for label, v in workers.items()]
    ratio = c.median_ratio([r["seconds"] for r in workers["2 workers (default CPUs)"]],
                           [r["seconds"] for r in workers["1 worker (default CPUs)"]])
    ratio_1cpu = c.median_ratio([r["seconds"] for r in workers["2 workers (default CPUs)"]],
                                [r["seconds"] for r in workers["1 worker, 1 CPU"]])
    c.say("")
    c.say(c.table(rows))
    c.say(f"\nmodel workers at {largest[0]} languages x {largest[1]} concepts x {largest[2]} pairs "
          f"({repeats} interleaved repeats)")
    c.say(c.table(worker_rows))
    c.say(f"linear fit, total:   {intercept:.1f} s fixed + {1000 * slope:.1f} ms per input (R^2 {r2:.3f})")
    c.say(f"linear fit, forward: {f_intercept:.1f} s + {1000 * f_slope:.1f} ms per input (R^2 {f_r2:.3f})")
    ratios = {"time_2_workers_over_1_worker": c.ratio_entry(ratio, "info (< 1: two workers help)", None,
                                                            size=list(largest), cpus="default split"),
              "time_2_workers_over_1_worker_1_cpu": c.ratio_entry(ratio_1cpu, "info", None, size=list(largest)),
              "total_time_linear_fit_r2": c.ratio_entry(float(r2), "info (1 = linear)", None,
                                                        fixed_s=float(intercept), per_input_ms=1000 * float(slope)),
              "forward_time_linear_fit_r2": c.ratio_entry(float(f_r2), "info (1 = linear)", None,
                                                          fixed_s=float(f_intercept), per_input_ms=1000 * float(f_slope))}
    c.report(NAME, args, meta, {
        "model": model_name, "repeats_workers": repeats, "cpus_per_worker": args.threads, "ratios": ratios,
        "table": rows, "workers_table": worker_rows, "raw": {"sizes": results, "workers": workers}})
    tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
