"""Figures and paper-style tables (recognition, Table 1, Table 2) from results: matplotlib and plain text,
no tracking code."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # figures are files, never windows
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from mvplatform.catalog import CONCEPTS, LANGUAGES  # noqa: E402
from mvplatform.control import MODE_LABELS  # noqa: E402
from mvplatform.crosslingual import (  # noqa: E402
    SHARED_LANGUAGES,
    ConceptAnalysis,
    Correlation,
    ModelTable1,
    concept_averaged,
    model_table1,
)
from mvplatform.extraction import EvalResult, ExtractionResult  # noqa: E402
from mvplatform.linguistics import format_matrix  # noqa: E402


@dataclass(frozen=True)
class Curve:
    label: str
    layers: list[int]
    accuracy: np.ndarray
    low: np.ndarray | None = None  # 95% interval per layer (shaded band)
    high: np.ndarray | None = None
    chance: np.ndarray | None = None  # label-permutation chance level per layer

    @classmethod
    def of(cls, result: ExtractionResult) -> Curve:
        """A cell's curve, with its band and chance level when the result carries evidence."""
        ev = result.evidence
        if ev is None:
            return cls(result.language, result.vectors.layers, result.accuracy)
        return cls(result.language, result.vectors.layers, result.accuracy, ev.low, ev.high, ev.chance)


def accuracy_figure(curves: Sequence[Curve], title: str) -> Figure:
    """Recognition accuracy per layer, one line per curve, with its 95% band and chance marked.

    A single curve also shows its permutation chance level; with several, the highest chance level
    over curves is drawn (the bar every curve has to clear).
    """
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    ax.set_prop_cycle(color=plt.get_cmap("tab20").colors)  # 16 languages without repeated colours
    for curve in curves:
        (line,) = ax.plot(curve.layers, 100 * np.asarray(curve.accuracy), marker="o", markersize=3, label=curve.label)
        if curve.low is not None and curve.high is not None:
            ax.fill_between(curve.layers, 100 * np.asarray(curve.low), 100 * np.asarray(curve.high),
                            color=line.get_color(), alpha=0.25 if len(curves) == 1 else 0.08, linewidth=0)
    chances = [np.asarray(c.chance) for c in curves if c.chance is not None]
    if chances:
        ax.plot(curves[0].layers, 100 * np.max(chances, axis=0), color="grey", linestyle=":", linewidth=1.2,
                label="chance (permutation 95th pct)")
    ax.axhline(50, color="grey", linestyle="--", linewidth=1, label="50%" if chances else "chance")
    ax.set(xlabel="decoder layer", ylabel="recognition accuracy (%)", ylim=(0, 102), title=title)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if len(curves) > 1:
        ax.legend(fontsize=7, ncol=4, loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


@dataclass(frozen=True)
class TableRow:
    model: str
    concept: str
    language: str
    best_layer: int
    best_accuracy: float
    low: float | None = None  # 95% interval of best_accuracy
    high: float | None = None
    above_chance: bool | None = None  # None: no chance level computed


def table_rows(results: Sequence[ExtractionResult], selected: bool = False) -> list[TableRow]:
    """Best-layer (or training-chosen layer) rows, with intervals and the chance verdict when known.

    The best layer's interval and chance level both repeat the layer choice (bootstrap, permutation
    max over layers); the training-chosen layer's are plain per-layer ones.
    """
    rows = []
    for r in results:
        point = r.selected if selected else r.best
        if point is None:
            continue
        ev = r.evidence
        if ev is None:
            rows.append(TableRow(r.model, r.concept, r.language, *point))
        elif selected:
            index = r.vectors.layers.index(point[0])
            rows.append(TableRow(r.model, r.concept, r.language, *point, float(ev.low[index]), float(ev.high[index]),
                                 bool(ev.above_chance[index])))
        else:
            rows.append(TableRow(r.model, r.concept, r.language, *point, ev.best.low, ev.best.high,
                                 ev.best_above_chance))
    return rows


NOT_ABOVE_CHANCE = "°"  # marks a table cell whose interval does not clear the permutation chance level


def _ordered(values: set[str], order: Sequence[str]) -> list[str]:
    return [v for v in order if v in values] + sorted(values - set(order))


def recognition_table(rows: Sequence[TableRow], what: str = "best-layer recognition accuracy") -> tuple[str, str]:
    """Best-layer accuracy (%) as concept x language tables per model: (Markdown, CSV)."""
    markdown, out = [], io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["model", "concept", "language", "best_layer", "best_accuracy", "ci_low", "ci_high",
                     "above_chance"])
    for row in rows:
        writer.writerow([row.model, row.concept, row.language, row.best_layer, f"{row.best_accuracy:.4f}",
                         "" if row.low is None else f"{row.low:.4f}", "" if row.high is None else f"{row.high:.4f}",
                         "" if row.above_chance is None else int(row.above_chance)])
    for model in sorted({r.model for r in rows}):
        mine = [r for r in rows if r.model == model]
        concepts = _ordered({r.concept for r in mine}, CONCEPTS)
        languages = _ordered({r.language for r in mine}, list(LANGUAGES))
        cell = {(r.concept, r.language): r for r in mine}
        markdown.append(f"### {model}: {what} (%)\n")
        markdown.append("| concept | " + " | ".join(languages) + " | mean |")
        markdown.append("|---" * (len(languages) + 2) + "|")
        for concept in concepts:
            values = [cell[(concept, lang)].best_accuracy if (concept, lang) in cell else None for lang in languages]
            shown = [_shown(cell[(concept, lang)]) if (concept, lang) in cell else "–" for lang in languages]
            present = [v for v in values if v is not None]
            mean = f"{100 * np.mean(present):.1f}" if present else "–"
            markdown.append(f"| {concept} | " + " | ".join(shown) + f" | {mean} |")
        markdown.append("")
    if any(r.low is not None for r in rows):
        markdown.append(f"Cells: accuracy [95% interval]; {NOT_ABOVE_CHANCE} = not above chance (the interval's lower "
                        "end does not clear the 95th percentile of accuracy with shuffled training labels).\n")
    return "\n".join(markdown), out.getvalue()


def _shown(row: TableRow) -> str:
    text = f"{100 * row.best_accuracy:.1f}"
    if row.low is not None and row.high is not None:
        text += f" [{100 * row.low:.0f}–{100 * row.high:.0f}]"
    return text + (NOT_ABOVE_CHANCE if row.above_chance is False else "")


BASELINE_LABELS = {"length_rule": "length rule", "length_lr": "length LR", "bow_lr": "bag-of-words LR"}


def baselines_table(results: Sequence[ExtractionResult]) -> tuple[str, str]:
    """Per cell: the vectors' accuracy beside the chance level and the surface baselines (markdown, csv).

    All on the same pairs (the test split, or every pair under cross-validation). A baseline marked
    ``!`` is above 50% with its interval's lower end: the texts alone give the answer away.
    """
    rank = {c: i for i, c in enumerate(CONCEPTS)}
    order = {lang: i for i, lang in enumerate(LANGUAGES)}
    cells = sorted((r for r in results if r.evidence is not None and r.evidence.baselines),
                   key=lambda r: (r.model, rank.get(r.concept, 99), order.get(r.language, 99)))
    names = list(BASELINE_LABELS)
    lines = ["| model | concept | language | pairs | best layer | training-chosen layer | chance (best / chosen) | "
             + " | ".join(BASELINE_LABELS.values()) + " |", "|---" * (7 + len(names)) + "|"]
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["model", "concept", "language", "folds", "n_eval", "what", "accuracy", "ci_low", "ci_high"])

    def pct(i) -> str:  # noqa: ANN001 - an Interval
        return f"{100 * i.point:.0f} [{100 * i.low:.0f}–{100 * i.high:.0f}]"

    for r in cells:
        ev = r.evidence
        chosen = r.selected_interval
        index = r.vectors.layers.index(r.selected[0]) if r.selected is not None else None
        chance = f"{100 * ev.chance_best:.0f} / " + ("–" if index is None else f"{100 * ev.chance[index]:.0f}")
        base = {name: ev.baseline(name) for name in names if name in ev.baselines}
        shown = [("–" if name not in base else pct(base[name]) + ("!" if base[name].low > 0.5 else "")) for name in names]
        best = pct(ev.best) + ("" if ev.best_above_chance else NOT_ABOVE_CHANCE)
        picked = "–" if chosen is None else pct(chosen) + ("" if ev.above_chance[index] else NOT_ABOVE_CHANCE)
        pairs = f"{ev.n_eval}" + (f" ({ev.folds}-fold)" if ev.folds > 1 else "")
        lines.append(f"| {r.model} | {r.concept} | {r.language} | {pairs} | {best} | {picked} | {chance} | "
                     + " | ".join(shown) + " |")
        rows = [("best_layer", ev.best)] + ([("selected_layer", chosen)] if chosen is not None else [])
        rows += [(f"baseline_{name}", value) for name, value in base.items()]
        for what, value in rows:
            writer.writerow([r.model, r.concept, r.language, ev.folds, ev.n_eval, what, f"{value.point:.4f}",
                             f"{value.low:.4f}", f"{value.high:.4f}"])
        writer.writerow([r.model, r.concept, r.language, ev.folds, ev.n_eval, "chance_best", f"{ev.chance_best:.4f}",
                         "", ""])
    lines.append(f"\nAccuracy % [95% interval] on the same pairs. Best layer: bootstrap that repeats the layer choice; "
                 f"{NOT_ABOVE_CHANCE} = its interval does not clear chance (95th percentile with shuffled training "
                 "labels, same layer choice). Surface baselines read the raw texts only, trained on the same training "
                 "pairs; ! = above 50% even at the interval's lower end (the data set gives the answer away).")
    return "\n".join(lines), out.getvalue()


def eval_table(evals: Sequence[EvalResult], skipped: Sequence[str] = ()) -> tuple[str, str]:
    """data.eval_datasets: each cell's vectors on another data set's pairs (markdown, csv)."""
    rank = {c: i for i, c in enumerate(CONCEPTS)}
    order = {lang: i for i, lang in enumerate(LANGUAGES)}
    rows = sorted(evals, key=lambda e: (e.dataset, e.model, rank.get(e.concept, 99), order.get(e.language, 99)))
    lines = ["| data set | model | concept | language | pairs | at the training-chosen layer | best layer here |",
             "|---|---|---|---|---|---|---|"]
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["dataset", "model", "concept", "language", "pairs", "selected_layer", "selected_accuracy",
                     "selected_ci_low", "selected_ci_high", "best_layer", "best_accuracy", "best_ci_low", "best_ci_high"])
    for e in rows:
        chosen = e.selected
        shown = "–" if chosen is None else (f"{100 * chosen.point:.0f} [{100 * chosen.low:.0f}–{100 * chosen.high:.0f}] "
                                           f"(layer {e.selected_layer})")
        lines.append(f"| {e.dataset} | {e.model} | {e.concept} | {e.language} | {e.n_pairs} | {shown} | "
                     f"{100 * e.best.point:.0f} [{100 * e.best.low:.0f}–{100 * e.best.high:.0f}] (layer {e.best_layer}) |")
        writer.writerow([e.dataset, e.model, e.concept, e.language, e.n_pairs, e.selected_layer or "",
                         *(("", "", "") if chosen is None else (f"{chosen.point:.4f}", f"{chosen.low:.4f}",
                                                                 f"{chosen.high:.4f}")),
                         e.best_layer, f"{e.best.point:.4f}", f"{e.best.low:.4f}", f"{e.best.high:.4f}"])
    lines.append("\nRecognition accuracy % [95% interval] of each concept x language's vectors (from its own training "
                 "pairs) on every pair of another data set. The training-chosen layer is the honest number; the best "
                 "layer here is picked on these pairs (its bootstrap repeats that choice).")
    if skipped:
        lines.append("\nSkipped (not in that data set): " + ", ".join(skipped))
    return "\n".join(lines), out.getvalue()


def recognition_heatmap(rows: Sequence[TableRow], model: str, what: str = "best-layer recognition") -> Figure:
    """Concept x language heatmap of recognition accuracy for one model."""
    mine = [r for r in rows if r.model == model]
    concepts = _ordered({r.concept for r in mine}, CONCEPTS)
    languages = _ordered({r.language for r in mine}, list(LANGUAGES))
    grid = np.full((len(concepts), len(languages)), np.nan)
    for r in mine:
        grid[concepts.index(r.concept), languages.index(r.language)] = 100 * r.best_accuracy
    fig, ax = plt.subplots(figsize=(max(5.0, 2.5 + 0.55 * len(languages)), 1.4 + 0.45 * len(concepts)), dpi=110)
    low = min(50.0, float(np.nanmin(grid))) if np.isfinite(grid).any() else 50.0
    image = ax.imshow(grid, vmin=low, vmax=100, cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(languages)), languages)
    ax.set_yticks(range(len(concepts)), concepts)
    for i in range(len(concepts)):
        for j in range(len(languages)):
            if not np.isnan(grid[i, j]):
                ax.text(j, i, f"{grid[i, j]:.0f}", ha="center", va="center", fontsize=7,
                        color="white" if grid[i, j] < 80 else "black")
    hatched = [r for r in mine if r.above_chance is False]
    for r in hatched:  # not above chance: greyed and hatched, so no one reads it as a finding
        i, j = concepts.index(r.concept), languages.index(r.language)
        ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, facecolor=(0.6, 0.6, 0.6, 0.6), edgecolor="white",
                               hatch="///", linewidth=0))
    fig.colorbar(image, ax=ax, label="accuracy (%)")
    if hatched:
        what += " (hatched: not above chance)"
    ax.set_title(f"{model}: {what}", fontsize=10)
    ax.set_xlabel("language (high- to low-resource)")
    fig.tight_layout()
    return fig


def matrix_heatmap(matrix: np.ndarray, languages: Sequence[str], title: str, label: str,
                   diverging: bool = False, fmt: str = "{:.2f}") -> Figure:
    """Language x language heatmap (rows: source / first language, columns: target / second)."""
    n = len(languages)
    fig, ax = plt.subplots(figsize=(max(4.5, 1.6 + 0.45 * n), max(3.8, 1.2 + 0.42 * n)), dpi=110)
    if diverging:
        limit = float(np.nanmax(np.abs(matrix))) or 1.0
        image = ax.imshow(matrix, cmap="RdBu", vmin=-limit, vmax=limit)
    else:
        image = ax.imshow(matrix, cmap="viridis", vmin=min(0.0, float(np.nanmin(matrix))), vmax=1.0)
    ax.set_xticks(range(n), languages)
    ax.set_yticks(range(n), languages)
    if n <= 16:
        for i in range(n):
            for j in range(n):
                ax.text(j, i, fmt.format(matrix[i, j]), ha="center", va="center", fontsize=6 if n > 10 else 8,
                        color="black" if diverging or matrix[i, j] > 0.6 else "white")
    fig.colorbar(image, ax=ax, label=label)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


def layer_similarity_figure(curves: dict[str, tuple[list[int], np.ndarray]], title: str) -> Figure:
    """Mean cross-lingual similarity per layer, one line per concept."""
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    for name, (layers, values) in curves.items():
        ax.plot(layers, values, marker="o", markersize=3, label=name)
    ax.set(xlabel="decoder layer", ylabel="mean cosine similarity across languages", title=title)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


FEATURE_ORDER = ("genetic", "geographic", "syntactic", "phonological")
PAPER_FEATURE_ORDER = ("genetic", "syntactic", "geographic", "phonological")  # Table 1's column order


def _cell(c: Correlation, interval: bool = True) -> str:
    """``+0.45* [+0.10, +0.71]``: r, * for p < 0.05, and the language-bootstrap interval when there is one."""
    if np.isnan(c.r):
        return "–"
    text = f"{c.r:+.2f}{'*' if not np.isnan(c.p) and c.p < 0.05 else ''}"
    return text if not interval or np.isnan(c.low) else f"{text} [{c.low:+.2f}, {c.high:+.2f}]"


INTERVAL_NOTE = ("[low, high]: 95% interval of r by a bootstrap over languages (languages resampled with replacement "
                 "within the high- and low-resource groups, r recomputed over the resample's language pairs; "
                 "2000 resamples). * p < 0.05 by the t-test of r, which takes the language pairs as independent "
                 "points: they share languages, so read the interval, not the star.")


def table1(rows: Sequence[tuple[str, str, dict[str, dict[str, object]]]]) -> tuple[str, str]:
    """mvp's per-concept view of Table 1: Pearson r per model/concept x feature (markdown, csv).

    ``rows`` are (model, concept, {feature: {cell: Correlation}}), cells as
    :data:`mvplatform.crosslingual.TABLE1_CELLS`. The paper's own table is per model
    (:func:`model_table1_text`).
    """
    features = [f for f in FEATURE_ORDER if any(f in cells for _, _, cells in rows)]
    header = ("| model | concept | " + " | ".join(f"{f} direct | {f} split | {f} within high / low" for f in features)
              + " |")
    lines = [header, "|---|---" + "|---|---|---" * len(features) + "|"]
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(TABLE1_CSV_HEADER)
    for model, concept, cells in rows:
        parts = []
        for feature in features:
            c = cells.get(feature)
            if c is None:
                parts += ["–", "–", "–"]
                continue
            parts += [_cell(c["direct"]), _cell(c["split"]),
                      f"{_cell(c['within_high'], False)} / {_cell(c['split_low'], False)}"]
            for mode, value in c.items():
                writer.writerow(_table1_csv_row(model, concept, feature, mode, value))
        lines.append(f"| {model} | {concept} | " + " | ".join(parts) + " |")
    lines.append("\nPer concept: Pearson r between that concept's vector similarity and URIEL linguistic similarity "
                 "over language pairs. split: the paper's (mean of r over pairs with a high-resource "
                 "language and r over low-low pairs); within high / low: r over high-high / low-low pairs (mvp's; "
                 "their intervals are in the csv). " + INTERVAL_NOTE)
    return "\n".join(lines), out.getvalue()


TABLE1_CSV_HEADER = ("model", "concept", "feature", "cell", "r", "p", "n_pairs", "ci_low", "ci_high")


def _table1_csv_row(model: str, concept: str, feature: str, mode: str, value: Correlation) -> list[object]:
    return [model, concept, feature, mode, f"{value.r:.4f}", f"{value.p:.4g}", value.n_pairs, f"{value.low:.4f}",
            f"{value.high:.4f}"]


def model_table1_text(rows: Sequence[ModelTable1]) -> tuple[str, str]:
    """The paper's Table 1: per model, Direct and Split per feature, on concept-averaged similarity."""
    features = [f for f in PAPER_FEATURE_ORDER if any(f in row.cells for row in rows)]
    lines = ["| model | " + " | ".join(f"{f} Direct | {f} Split" for f in features) + " | languages | concepts |",
             "|---" + "|---|---" * len(features) + "|---|---|"]
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(TABLE1_CSV_HEADER)
    for row in rows:
        parts = []
        for feature in features:
            c = row.cells.get(feature)
            parts += ["–", "–"] if c is None else [_cell(c["direct"]), _cell(c["split"])]
            for mode, value in (c or {}).items():
                writer.writerow(_table1_csv_row(row.model, "all", feature, mode, value))
        lines.append(f"| {row.model} | " + " | ".join(parts) + f" | {len(row.languages)} | {len(row.concepts)} |")
    reduction = rows[0].reduction if rows else "max"
    lines.append(f"\nAs the paper: per language pair, concept-vector cosine reduced over layers ({reduction}), "
                 "averaged over concepts, against 1 - URIEL distance; Direct = Pearson r over all language pairs, "
                 "Split = mean of r over pairs with a high-resource language and r over pairs of two low-resource "
                 "languages (no p-value; its interval from the same resamples as its parts). " + INTERVAL_NOTE)
    return "\n".join(lines), out.getvalue()


def directionality_table(analyses: Sequence[ConceptAnalysis]) -> str:
    """Mean transfer per direction and high -> low minus low -> high, with paired-bootstrap intervals when known."""
    header = "| model | concept | high -> low | low -> high | high -> low minus low -> high | within high | within low |"
    lines = [header, "|---" * 7 + "|"]
    for a in analyses:
        d = a.directionality
        ci = a.intervals.directionality if a.intervals is not None and a.intervals.directionality else {}
        cells = []
        for name, value in (("high_to_low", d.high_to_low), ("low_to_high", d.low_to_high),
                            ("high_minus_low", d.high_minus_low), ("within_high", d.within_high),
                            ("within_low", d.within_low)):
            interval = ci.get(name)
            if np.isnan(value):
                cells.append("–")
            elif interval is None or np.isnan(interval.low):
                cells.append(f"{100 * value:+.1f}")
            else:
                cells.append(f"{100 * value:+.1f} [{100 * interval.low:+.1f}, {100 * interval.high:+.1f}]")
        lines.append(f"| {a.model} | {a.concept} | " + " | ".join(cells) + " |")
    lines.append("\nMean transfer score T(source -> target) in accuracy points over language pairs; "
                 "0 = as good as the target's own vectors, negative = worse. [low, high]: 95% paired bootstrap "
                 "interval over each target language's test pairs (resampled once per target and shared by every "
                 "source and by the target's own vectors; best layers re-picked in each resample; 2000 "
                 "resamples; the resamples' spread placed around the point, as re-picked maxima run high); the "
                 "difference is taken within each resample.")
    return "\n".join(lines)


def _save(figure: Figure, path: Path) -> None:
    figure.savefig(path)
    plt.close(figure)


def write_summary(folder: Path, results: Sequence[ExtractionResult], analyses: Sequence[ConceptAnalysis]) -> list[Path]:
    """Every paper-style table and summary figure of a submission, written into ``folder``.

    Used by the tracker at the end of a submission and by ``mvp report`` from what MLflow holds,
    so both produce the same files.
    """
    folder.mkdir(parents=True, exist_ok=True)
    rank = {concept: i for i, concept in enumerate(CONCEPTS)}
    analyses = sorted(analyses, key=lambda a: (a.model, rank.get(a.concept, len(rank))))
    rows = table_rows(results)
    if rows:
        markdown, table_csv = recognition_table(rows)
        (folder / "recognition.md").write_text(markdown + "\n")
        (folder / "recognition.csv").write_text(table_csv)
        selected = table_rows(results, selected=True)
        if selected:
            markdown, table_csv = recognition_table(selected, "test accuracy at the layer chosen on training pairs")
            (folder / "recognition_selected.md").write_text(markdown + "\n")
            (folder / "recognition_selected.csv").write_text(table_csv)
            for model in sorted({r.model for r in selected}):
                _save(recognition_heatmap(selected, model, "recognition at the layer chosen on training pairs"),
                      folder / f"recognition_selected_{model}.png")
        for model in sorted({r.model for r in rows}):
            _save(recognition_heatmap(rows, model), folder / f"recognition_{model}.png")
        if any(r.evidence is not None and r.evidence.baselines for r in results):
            markdown, table_csv = baselines_table(results)
            (folder / "baselines.md").write_text(markdown + "\n")
            (folder / "baselines.csv").write_text(table_csv)
        for model, concept in sorted({(r.model, r.concept) for r in results}):
            curves = [Curve.of(r) for r in results if (r.model, r.concept) == (model, concept)]
            ordered = sorted(curves, key=lambda c: list(LANGUAGES).index(c.label) if c.label in LANGUAGES else 99)
            _save(accuracy_figure(ordered, f"{model} / {concept}: recognition accuracy per layer"),
                  folder / f"curves_{model}_{concept}.png")
    linguistic = [(a.model, a.concept, a.linguistic) for a in analyses if a.linguistic]
    if linguistic:
        paper_md, paper_csv = model_table1_text(model_table1(analyses))
        markdown, table_csv = table1(linguistic)
        (folder / "table1_linguistic.md").write_text(
            "### Linguistic correlation (the paper's Table 1: per model)\n\n" + paper_md
            + "\n\n### Per concept (mvp's additional view)\n\n" + markdown + "\n")
        (folder / "table1_linguistic.csv").write_text(paper_csv + table_csv.split("\n", 1)[1])
    directed = [a for a in analyses if a.directionality is not None]
    if directed:
        (folder / "transfer_directionality.md").write_text(directionality_table(directed) + "\n")
    for model in sorted({a.model for a in analyses if a.consistency is not None}):
        curves = {a.concept: (a.consistency.layers, a.consistency.layer_curve(SHARED_LANGUAGES))
                  for a in analyses if a.model == model and a.consistency is not None}
        _save(layer_similarity_figure(curves, f"{model}: cross-lingual consistency per layer"),
              folder / f"consistency_layers_{model}.png")
        # the authors' heatmap: each concept's pair similarity reduced over layers, averaged over concepts
        group = [a for a in analyses if a.model == model and a.consistency is not None and a.similarity is not None]
        languages, averaged = concept_averaged(group)
        how = group[0].layer_reduction
        _save(matrix_heatmap(averaged, languages, f"{model}: consistency ({how} over layers, mean over "
                             f"{len(group)} concepts)", "cosine similarity"), folder / f"consistency_{model}.png")
        (folder / f"consistency_{model}.csv").write_text(format_matrix(averaged, languages, "csv"))
    return sorted(folder.iterdir())


# ---------------------------------------------------------------------------------------------
# Control (PAPER.md section 5): Table 2 and following-rate curves


def table2(rates: dict[tuple[str, str], float], modes: list[str], languages: list[str]) -> list[dict[str, object]]:
    """The paper's Table 2 layout: a row per mode, a column per language (%), and Avg over the
    non-English languages (the paper averages the 11 it controls besides English)."""
    rows = []
    others = [lang for lang in languages if lang != "en"] or languages
    for mode in modes:
        row: dict[str, object] = {"mode": MODE_LABELS[mode]}
        for language in languages:
            value = rates.get((mode, language))
            row[language] = None if value is None else round(100 * value, 2)
        present = [rates[(mode, lang)] for lang in others if (mode, lang) in rates]
        row["Avg"] = round(100 * float(np.mean(present)), 2) if present else None
        rows.append(row)
    return rows


def table2_text(rows: Sequence[dict[str, object]], languages: Sequence[str]) -> tuple[str, str]:
    """(markdown, csv) of the Table-2 layout: modes x languages + Avg (following rate, %)."""
    header = ["mode", *languages, "Avg"]
    cell = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join([str(row["mode"])] + [cell(row.get(c)) for c in header[1:]]) + " |" for row in rows]
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    writer.writerows([[row.get(c, "") if row.get(c) is not None else "" for c in header] for row in rows])
    return "\n".join(lines) + "\n", buffer.getvalue()


def control_curves_figure(curves: dict[str, list[tuple[float, float]]], title: str) -> Figure:
    """Following rate against steering strength, one line per language (at its own best window)."""
    figure, axis = plt.subplots(figsize=(7, 4.2))
    for language, points in curves.items():
        if points:
            xs, ys = zip(*sorted(points))
            axis.plot(xs, [100 * y for y in ys], marker="o", label=language)
    axis.axvline(0.0, color="grey", linewidth=0.8, linestyle=":")
    axis.set_xlabel("steering strength")
    axis.set_ylabel("following rate (%)")
    axis.set_ylim(-3, 103)
    axis.set_title(title)
    axis.legend(ncol=4, fontsize=8)
    figure.tight_layout()
    return figure


def table2_figure(rows: Sequence[dict[str, object]], languages: Sequence[str], title: str) -> Figure:
    """Grouped bars: following rate per language for each mode (No-, LS-, En-Control)."""
    figure, axis = plt.subplots(figsize=(max(6.0, 0.6 * len(languages) * len(rows)), 4.2))
    width = 0.8 / max(1, len(rows))
    x = np.arange(len(languages))
    for i, row in enumerate(rows):
        values = [0.0 if row.get(lang) is None else float(row[lang]) for lang in languages]
        axis.bar(x + (i - (len(rows) - 1) / 2) * width, values, width, label=str(row["mode"]))
    axis.set_xticks(x, languages)
    axis.set_ylabel("following rate (%)")
    axis.set_ylim(0, 105)
    axis.set_title(title)
    axis.legend(fontsize=8)
    figure.tight_layout()
    return figure
