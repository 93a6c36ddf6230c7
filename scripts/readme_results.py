"""Prints the README's "What the built-in data shows" section from a submission of experiments/analysis.yaml.

Issue 16: the section is regenerated from the run, not typed by hand, so every number in it has the
run behind it. Everything is read back through MlflowClient (the cells' per-pair results, the
cross-lingual child runs' metrics, the parent's Table 1 CSV); no model runs.

The per-concept means are over the 16 languages' cells at the layer chosen on training pairs. Their
95% intervals come from a bootstrap over *items*: the built-in pairs are parallel (the same ids in
every language), so one resample draws item ids and keeps them in every language at once. A Wilson
interval on the pooled pairs would treat the 16 translations of an item as 16 independent pairs.

    python scripts/readme_results.py experiments/analysis.yaml --figure docs/img/recognition_gemma3-270m.png
"""

from __future__ import annotations

import argparse
import csv
import io
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from mvplatform.catalog import CONCEPTS
from mvplatform.data import load_split
from mvplatform.extraction import ExtractionResult
from mvplatform.spec import Spec, load_spec
from mvplatform.uncertainty import N_BOOT, bootstrap_counts
from tracking.readback import children, find_submission, submission_spec
from tracking.rebuild import load_results
from tracking.store import resolve_tracking_uri


@dataclass(frozen=True)
class Mean:
    """A mean accuracy over cells with its item-bootstrap 95% interval."""

    point: float
    low: float
    high: float

    def pct(self, signed: bool = False, unit: str = "%") -> str:
        f = "{:+.0f}" if signed else "{:.0f}"
        return f"{f.format(100 * self.point)}{unit} [{f.format(100 * self.low)}, {f.format(100 * self.high)}]"


def interval(resampled: np.ndarray, point: float) -> Mean:
    """Percentile interval of a mean of fixed-layer accuracies (a smooth statistic: no layer is re-picked)."""
    low, high = np.quantile(resampled, [0.025, 0.975])
    return Mean(point, float(low), float(high))


def item_order(spec: Spec, concept: str, languages: Sequence[str]) -> list[str]:
    """The item ids in the order of every cell's per-pair results; refuses cells whose items are not parallel."""
    orders = {}
    for lang in languages:
        split = load_split(spec.data.dataset, concept, lang, spec.data.test_fraction, spec.data.seed, spec.data.max_pairs)
        orders[lang] = [p.key for p in split.train + split.test]
    first = orders[languages[0]]
    odd = [lang for lang, keys in orders.items() if keys != first]
    if odd:
        raise SystemExit(f"{concept}: the pairs of {odd} are not in {languages[0]}'s item order; "
                         "the item bootstrap needs parallel data")
    return first


@dataclass(frozen=True)
class ConceptRow:
    concept: str
    per_language: dict[str, float]  # selected-layer accuracy per language
    mean: Mean
    high: Mean
    low: Mean
    gap: Mean  # high-resource mean minus low-resource mean
    not_above: int
    bow: Mean
    best_minus_selected: float  # mean over languages of best test layer minus training-chosen layer
    length: list[float]  # per cell, the length rule's and the length regression's accuracy


def concept_row(spec: Spec, concept: str, cells: dict[str, ExtractionResult], high: Sequence[str],
                n_boot: int, seed: int) -> ConceptRow:
    languages = list(cells)
    n_items = len(item_order(spec, concept, languages))
    counts = bootstrap_counts(n_items, n_boot, seed)  # one draw of item ids, shared by every language
    chosen, bow, points, bow_points, not_above = [], [], {}, [], 0
    for lang, r in cells.items():
        ev = r.evidence
        if ev is None or r.selected is None or ev.n_eval != n_items:
            raise SystemExit(f"{concept}/{lang}: needs 5-fold evidence on all {n_items} pairs (extract.folds, intervals)")
        k = r.vectors.layers.index(r.selected[0])
        chosen.append(counts @ ev.correct[:, k] / n_items)
        bow.append(counts @ ev.baselines["bow_lr"] / n_items)
        points[lang] = float(ev.correct[:, k].mean())
        bow_points.append(float(ev.baselines["bow_lr"].mean()))
        not_above += int(not ev.above_chance[k])
    resampled = np.stack(chosen, axis=1)  # [B, languages]
    is_high = np.array([lang in high for lang in languages])
    point = np.array([points[lang] for lang in languages])

    def over(mask: np.ndarray) -> Mean:
        return interval(resampled[:, mask].mean(axis=1), float(point[mask].mean()))

    gap = interval(resampled[:, is_high].mean(axis=1) - resampled[:, ~is_high].mean(axis=1),
                   float(point[is_high].mean() - point[~is_high].mean()))
    best = np.mean([r.best[1] - r.selected[1] for r in cells.values() if r.selected is not None])
    length = [r.evidence.baseline(name).point for r in cells.values() for name in ("length_rule", "length_lr")
              if r.evidence is not None]
    return ConceptRow(concept, points, over(np.ones_like(is_high)), over(is_high), over(~is_high), gap, not_above,
                      interval(np.stack(bow, axis=1).mean(axis=1), float(np.mean(bow_points))), float(best),
                      length)


def table1_rows(client: MlflowClient, parent: Run) -> list[dict[str, str]]:
    with tempfile.TemporaryDirectory() as tmp:
        path = client.download_artifacts(parent.info.run_id, "summary/table1_linguistic.csv", tmp)
        return list(csv.DictReader(io.StringIO(Path(path).read_text())))


def _r(row: dict[str, str]) -> str:
    p = float(row["p"])
    star = "" if np.isnan(p) else f", p = {p:.2g}"
    return f"{float(row['r']):+.2f} [{float(row['ci_low']):+.2f}, {float(row['ci_high']):+.2f}]{star}"


def _ci(metrics: dict[str, float], name: str, scale: float = 100.0, fmt: str = "{:+.1f}") -> str:
    if name not in metrics:
        return "–"
    low, high = metrics.get(f"{name}_ci_low"), metrics.get(f"{name}_ci_high")
    text = fmt.format(scale * metrics[name])
    return text if low is None or high is None else f"{text} [{fmt.format(scale * low)}, {fmt.format(scale * high)}]"


def section(client: MlflowClient, parent: Run, n_boot: int, seed: int) -> str:
    spec = submission_spec(client, parent)
    results = load_results(client, parent)
    model = results[0].model
    high = spec.analysis_for(spec.models[0]).high_resource
    by_concept: dict[str, dict[str, ExtractionResult]] = {}
    for r in results:
        by_concept.setdefault(r.concept, {})[r.language] = r
    concepts = [c for c in CONCEPTS if c in by_concept]
    rows = [concept_row(spec, c, by_concept[c], high, n_boot, seed + i) for i, c in enumerate(concepts)]
    n_lang = max(len(cells) for cells in by_concept.values())
    folds = {r.evidence.folds for r in results if r.evidence is not None}
    n_items = {r.evidence.n_eval for r in results if r.evidence is not None}
    metrics = parent.data.metrics
    computed = sum(1 for run in children(client, parent, "extract") if run.data.tags.get("states") != "cached")
    started = datetime.fromtimestamp(parent.info.start_time / 1000, UTC).strftime("%Y-%m-%d")
    total = metrics.get("stage_seconds_total", float("nan"))
    took = f"{total / 60:.0f} minutes" if total >= 90 else f"{total:.0f} s"
    out = [f"A submission of `experiments/{spec.name}.yaml` on {started} (run `{parent.info.run_id[:8]}`; built-in "
           f"data: {len(concepts)} concepts x {n_lang} languages x {'/'.join(map(str, sorted(n_items)))} pairs; "
           f"{'/'.join(map(str, sorted(folds)))}-fold "
           f"recognition, intervals, chance and baselines on; the paper's definitions of consistency and Table 1; "
           f"read point `{spec.extract.read}`): {computed} forward passes, {took} "
           "on 2 CPU cores shared with other jobs, printed by `scripts/readme_results.py`. Test accuracy "
           "at the layer chosen on the *training* folds (`recognition_selected.md` in the parent run's `summary/`; "
           "hatched cells are not above the label-permutation chance level):",
           "", f"![recognition per concept and language](docs/img/recognition_{model}.png)", "",
           f"| concept | mean over {n_lang} languages (range) | high-resource mean | low-resource mean | high minus low | "
           "cells not above chance | bag-of-words baseline (mean) |", "|---|---|---|---|---|---|---|"]
    for row in rows:
        values = list(row.per_language.values())
        out.append(f"| {row.concept} | {row.mean.pct()} ({100 * min(values):.0f}-{100 * max(values):.0f}) | "
                   f"{row.high.pct()} | {row.low.pct()} | {row.gap.pct(True, ' points')} | {row.not_above} of "
                   f"{len(values)} | {row.bow.pct()} |")
    out += ["", "[low, high]: 95% bootstrap interval over the items (each resample draws item ids with replacement "
            f"and keeps them in every language, as the pairs are parallel; {n_boot} resamples). A cell is not above "
            "chance when its Wilson interval's lower end does not clear the 95th percentile of accuracy with "
            "shuffled training labels at that layer.", ""]
    out += [_bullets(rows, high)]
    out += _table1(table1_rows(client, parent), model)
    out += _crosslingual(client, parent, concepts)
    return "\n".join(out)


def _span(values: Sequence[float], unit: str = "%") -> str:
    return f"{100 * min(values):.0f}-{100 * max(values):.0f}{unit}"


def _bullets(rows: Sequence[ConceptRow], high: Sequence[str]) -> str:
    """The remarks under the table, worded from the numbers (which concepts clear chance, which gaps and
    baselines stand out), so they stay true when the run changes."""
    n = max(len(r.per_language) for r in rows)
    weak = [r for r in rows if r.not_above > n / 2]
    strong = [r for r in rows if r.not_above <= n / 2]
    falls = [r for r in rows if r.gap.low > 0]
    flat = [r for r in rows if r.gap.low <= 0]
    big = sorted(falls, key=lambda r: -r.gap.point)[:2]
    bump = [r.best_minus_selected for r in rows]
    recognised = ("Recognised above chance in most languages: " + ", ".join(r.concept for r in strong) if strong
                  else "No concept is recognised above chance in most languages")
    first = (f"- {recognised}. Accuracy falls from the high-resource group ({' '.join(high)}) to the low-resource "
             f"one, with the gap's interval above 0, for {len(falls)} of {len(rows)} concepts"
             + (", most for " + " and ".join(f"{r.concept} ({r.gap.pct(True, ' points')})" for r in big) if big else "")
             + (f"; for {', '.join(r.concept for r in flat)} the interval includes 0" if flat else "")
             + f". Picking the best *test* layer, as the paper reports, adds {100 * min(bump):.0f}-"
             f"{100 * max(bump):.0f} points on average per concept (`recognition.md`).")
    if weak:
        first += " " + "; ".join(f"{r.concept} is not separated by this model: {r.not_above} of {len(r.per_language)} "
                                 "cells do not clear chance" for r in weak) + "."
    length = [float(np.mean(r.length)) for r in rows]
    close = sorted((r for r in rows if r.bow.point >= r.mean.point - 0.05), key=lambda r: r.mean.point - r.bow.point)
    second = ("- The surface baselines say how much the texts alone give away: the length rule and the length "
              f"logistic regression score {_span(length)} per concept (mean over cells and both), chance as data "
              f"version 2 intends (single cells {_span([v for r in rows for v in r.length])}: 128 pairs), but a "
              "bag-of-words logistic "
              f"regression trained on the same pairs reaches {_span([r.bow.point for r in rows])} per concept")
    if close:
        second += (", about as high as the concept vectors or higher ("
                   + ", ".join(f"{r.concept} {100 * r.bow.point:.0f}% vs {100 * r.mean.point:.0f}%" for r in close) + ")")
    second += (". Words that tend to sit on one side (insults, \"safe\", \"fake\", \"always\") remain a cue the data "
               "checks do not measure; read a concept's accuracy against its baseline (`baselines.md`).")
    return "\n".join([first, second, ""])


def _table1(rows: list[dict[str, str]], model: str) -> list[str]:
    whole = {(r["feature"], r["cell"]): r for r in rows if r["model"] == model and r["concept"] == "all"}
    features = ("genetic", "syntactic", "geographic", "phonological")
    out = ["Linguistic correlation (the paper's Table 1, per model, concept-averaged, 1 - URIEL distance; r [95% "
           "interval by a bootstrap over languages within the resource groups], p by the t-test that takes "
           "language pairs as independent):", "", "| feature | Direct r | Split r |", "|---|---|---|"]
    for f in features:
        if (f, "direct") in whole:
            split = whole.get((f, "split"))
            shown = "–" if split is None else f"{float(split['r']):+.2f} [{float(split['ci_low']):+.2f}, " \
                                              f"{float(split['ci_high']):+.2f}]"
            out.append(f"| {f} | {_r(whole[(f, 'direct')])} | {shown} |")
    per = [r for r in rows if r["model"] == model and r["concept"] != "all" and r["cell"] == "direct"]
    out.append("")
    for f in features:
        mine = [r for r in per if r["feature"] == f]
        if mine:
            rs = [float(r["r"]) for r in mine]
            star = sum(float(r["p"]) < 0.05 for r in mine)
            clear = sum(float(r["ci_low"]) > 0 for r in mine)
            out.append(f"- Per concept, {f}: Direct r = {min(rs):+.2f} to {max(rs):+.2f}; p < 0.05 for {star} of "
                       f"{len(mine)} concepts, interval above 0 for {clear} of {len(mine)}.")
    return out + [""]


def _crosslingual(client: MlflowClient, parent: Run, concepts: Sequence[str]) -> list[str]:
    runs = {r.data.tags["concept"]: r.data.metrics for r in children(client, parent, "cross-lingual")}
    out = ["Consistency (mean cosine of the concept vectors over language pairs, bootstrap over training pairs) and "
           "transfer T(source -> target) in accuracy points, mean over the language pairs of a direction (paired "
           "bootstrap over each target's test pairs, `transfer_directionality.md`):", "",
           "| concept | consistency | T(high -> low) | T(low -> high) | high -> low minus low -> high | "
           "within high | within low |", "|---|---|---|---|---|---|---|"]
    for c in concepts:
        m = runs.get(c, {})
        out.append(f"| {c} | {_ci(m, 'mean_consistency', 1.0, '{:.2f}')} | {_ci(m, 'transfer_high_to_low')} | "
                   f"{_ci(m, 'transfer_low_to_high')} | {_ci(m, 'transfer_high_minus_low')} | "
                   f"{_ci(m, 'transfer_within_high')} | {_ci(m, 'transfer_within_low')} |")
    return out


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("ref", nargs="?", default="experiments/analysis.yaml",
                        help="the spec (its latest submission) or a parent run id")
    parser.add_argument("--spec", default="experiments/analysis.yaml", help="for the tracking URI, with a run id")
    parser.add_argument("--n-boot", type=int, default=N_BOOT)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--figure", type=Path, help="also copy the run's training-chosen-layer heatmap here")
    args = parser.parse_args(argv)
    client = MlflowClient(resolve_tracking_uri(load_spec(args.spec).tracking.uri))
    parent = find_submission(client, args.ref)
    print(section(client, parent, args.n_boot, args.seed))
    if args.figure is not None:
        model = submission_spec(client, parent).models[0].short_name
        with tempfile.TemporaryDirectory() as tmp:
            path = client.download_artifacts(parent.info.run_id, f"summary/recognition_selected_{model}.png", tmp)
            shutil.copyfile(path, args.figure)


if __name__ == "__main__":
    main()
