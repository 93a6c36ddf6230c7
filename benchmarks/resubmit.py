"""Re-submitting a spec whose hidden states are all cached vs its first run; an analysis-only change.

    python -m benchmarks.resubmit            # packaged gemma3-270m, 2 concepts x 2 languages, all 64 pairs
    python -m benchmarks.resubmit --quick    # tiny random model, 8 pairs, one repeat

Each repeat uses a fresh temporary MLflow store (sqlite) and result store, and runs, each as
``submit()`` in a new Python process (what ``mvp submit`` costs a user):

1. the first run (every item runs the model; the model itself is already converted);
2. the same spec again (every item's states come from the cache);
3. the spec with one more analysis (transferability): must run zero forward passes.

Figures: re-submit time / first-run time, median over repeats (goal <= 0.05), of ``submit()``'s own
duration and, for reference, of the whole process (interpreter start and imports included); and
the forward passes of the analysis-only change, counted as the items that ran the model
(``summary.computed``) and the summed ``PairStates.seconds`` logged by its extraction runs (goal: 0).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from benchmarks import _common as c

NAME = "resubmit"

SPEC = """name: bench-resubmit
model: {{name: "{model}", device: cpu}}
data: {{dataset: builtin:values, concepts: [morality, toxicity], languages: [en, fr]{max_pairs}}}
analyses: [{analyses}]
tracking: {{uri: "sqlite:///{folder}/mlflow.db"}}
results: {{dir: "{folder}/results"}}
{resources}"""


def write_spec(folder: Path, model: str, analyses: list[str], max_pairs: int | None, name: str,
               threads: int | None = None) -> Path:
    """``threads``: the worker's CPUs (and so its torch threads), resources.cpus_per_worker."""
    path = folder / f"{name}.yaml"
    path.write_text(SPEC.format(model=model, folder=folder, analyses=", ".join(analyses),
                                max_pairs=f", max_pairs: {max_pairs}" if max_pairs else "",
                                resources=f"resources: {{cpus_per_worker: {threads}}}\n" if threads else ""))
    return path


def main(argv: list[str] | None = None) -> int:
    bench = c.submit_bench(__doc__, argv)
    args, repeats, meta, tmp, model, model_name = (bench.args, bench.repeats, bench.meta, bench.tmp, bench.model,
                                                   bench.model_name)
    max_pairs = 8 if args.quick else None
    c.say(f"resubmit: {model_name}, 2 concepts x 2 languages, {max_pairs or 'all'} pairs, {repeats} repeat(s), "
          "each submit in a fresh process")
    runs = []
    for r in range(repeats):
        folder = Path(tempfile.mkdtemp(dir=tmp.name, prefix=f"repeat{r}-"))
        base = write_spec(folder, model, ["recognition", "consistency"], max_pairs, "spec", args.threads)
        more = write_spec(folder, model, ["recognition", "consistency", "transferability"], max_pairs, "spec-more",
                          args.threads)
        first = c.submit_in_subprocess(base)
        again = c.submit_in_subprocess(base)
        change = c.submit_in_subprocess(more)
        for label, out in (("first", first), ("resubmit", again), ("add an analysis", change)):
            if not out["ok"]:
                raise RuntimeError(f"{label} submission failed: {out['failures']}")
            c.say(f"  repeat {r + 1}/{repeats} {label}: submit {out['seconds']:.1f} s, process "
                  f"{out['process_seconds']:.1f} s, items computed {len(out['computed'])}, cached {len(out['cached'])}, "
                  f"forward {out['forward_seconds']} s")
        runs.append({"first": first, "resubmit": again, "analysis_change": change})

    ratio = c.median_ratio([r["resubmit"]["seconds"] for r in runs], [r["first"]["seconds"] for r in runs])
    ratio_process = c.median_ratio([r["resubmit"]["process_seconds"] for r in runs],
                                   [r["first"]["process_seconds"] for r in runs])
    forward_items = max(len(r["analysis_change"]["computed"]) for r in runs)
    forward_seconds = max(r["analysis_change"]["forward_seconds"] or 0.0 for r in runs)
    resubmit_items = max(len(r["resubmit"]["computed"]) for r in runs)
    rows = [{"submission": k, "submit_s": c.median([r[k]["seconds"] for r in runs]),
             "process_s": c.median([r[k]["process_seconds"] for r in runs]),
             "items_computed": c.median([len(r[k]["computed"]) for r in runs]),
             "items_cached": c.median([len(r[k]["cached"]) for r in runs]),
             "forward_s": c.median([r[k]["forward_seconds"] or 0.0 for r in runs])}
            for k in ("first", "resubmit", "analysis_change")]
    c.say("")
    c.say(c.table(rows))
    ratios = {
        "resubmit_over_first_submit_time": c.ratio_entry(ratio, "<= 0.05", ratio <= 0.05),
        "resubmit_over_first_process_time": c.ratio_entry(ratio_process, "info (interpreter start included)", None),
        "analysis_change_forward_passes": c.ratio_entry(float(forward_items), "== 0", forward_items == 0,
                                                        forward_seconds=forward_seconds),
        "resubmit_forward_passes": c.ratio_entry(float(resubmit_items), "== 0", resubmit_items == 0),
    }
    c.report(NAME, args, meta, {
        "model": model_name, "concepts": ["morality", "toxicity"], "languages": ["en", "fr"],
        "max_pairs": max_pairs, "repeats": repeats, "cpus_per_worker": args.threads, "ratios": ratios, "raw": runs})
    tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
