"""Figures and paper-style tables from results: matplotlib and plain text, no tracking code."""

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
from matplotlib.ticker import MaxNLocator  # noqa: E402

from mvplatform.analyses import ConceptAnalysis, ModelTable1, model_table1  # noqa: E402
from mvplatform.catalog import CONCEPTS, LANGUAGES  # noqa: E402
from mvplatform.crosslingual import SHARED_LANGUAGES  # noqa: E402
from mvplatform.extraction import ExtractionResult  # noqa: E402


@dataclass(frozen=True)
class Curve:
    label: str
    layers: list[int]
    accuracy: np.ndarray


def accuracy_figure(curves: Sequence[Curve], title: str) -> Figure:
    """Recognition accuracy per layer, one line per curve, with chance marked."""
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    ax.set_prop_cycle(color=plt.get_cmap("tab20").colors)  # 16 languages without repeated colours
    for curve in curves:
        ax.plot(curve.layers, 100 * np.asarray(curve.accuracy), marker="o", markersize=3, label=curve.label)
    ax.axhline(50, color="grey", linestyle="--", linewidth=1, label="chance")
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


def _ordered(values: set[str], order: Sequence[str]) -> list[str]:
    return [v for v in order if v in values] + sorted(values - set(order))


def recognition_table(rows: Sequence[TableRow], what: str = "best-layer recognition accuracy") -> tuple[str, str]:
    """Best-layer accuracy (%) as concept x language tables per model: (Markdown, CSV)."""
    markdown, out = [], io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["model", "concept", "language", "best_layer", "best_accuracy"])
    for row in rows:
        writer.writerow([row.model, row.concept, row.language, row.best_layer, f"{row.best_accuracy:.4f}"])
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
            shown = [f"{100 * v:.1f}" if v is not None else "–" for v in values]
            present = [v for v in values if v is not None]
            mean = f"{100 * np.mean(present):.1f}" if present else "–"
            markdown.append(f"| {concept} | " + " | ".join(shown) + f" | {mean} |")
        markdown.append("")
    return "\n".join(markdown), out.getvalue()


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
    fig.colorbar(image, ax=ax, label="accuracy (%)")
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


def _cell(c) -> str:  # noqa: ANN001 - a Correlation
    if np.isnan(c.r):
        return "–"
    return f"{c.r:+.2f}{'*' if not np.isnan(c.p) and c.p < 0.05 else ''}"


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
    writer.writerow(["model", "concept", "feature", "cell", "r", "p", "n_pairs"])
    for model, concept, cells in rows:
        parts = []
        for feature in features:
            c = cells.get(feature)
            if c is None:
                parts += ["–", "–", "–"]
                continue
            parts += [_cell(c["direct"]), _cell(c["split"]), f"{_cell(c['within_high'])} / {_cell(c['split_low'])}"]
            for mode, value in c.items():
                writer.writerow([model, concept, feature, mode, f"{value.r:.4f}", f"{value.p:.4g}", value.n_pairs])
        lines.append(f"| {model} | {concept} | " + " | ".join(parts) + " |")
    lines.append("\nPer concept: Pearson r between that concept's vector similarity and URIEL linguistic similarity "
                 "over language pairs; * p < 0.05. split: the paper's (mean of r over pairs with a high-resource "
                 "language and r over low-low pairs); within high / low: r over high-high / low-low pairs (mvp's).")
    return "\n".join(lines), out.getvalue()


def model_table1_text(rows: Sequence[ModelTable1]) -> tuple[str, str]:
    """The paper's Table 1: per model, Direct and Split per feature, on concept-averaged similarity."""
    features = [f for f in PAPER_FEATURE_ORDER if any(f in row.cells for row in rows)]
    lines = ["| model | " + " | ".join(f"{f} Direct | {f} Split" for f in features) + " | languages | concepts |",
             "|---" + "|---|---" * len(features) + "|---|---|"]
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["model", "concept", "feature", "cell", "r", "p", "n_pairs"])
    for row in rows:
        parts = []
        for feature in features:
            c = row.cells.get(feature)
            parts += ["–", "–"] if c is None else [_cell(c["direct"]), _cell(c["split"])]
            for mode, value in (c or {}).items():
                writer.writerow([row.model, "all", feature, mode, f"{value.r:.4f}", f"{value.p:.4g}", value.n_pairs])
        lines.append(f"| {row.model} | " + " | ".join(parts) + f" | {len(row.languages)} | {len(row.concepts)} |")
    reduction = rows[0].reduction if rows else "max"
    lines.append(f"\nAs the paper: per language pair, concept-vector cosine reduced over layers ({reduction}), "
                 "averaged over concepts, against 1 - URIEL distance; Direct = Pearson r over all language pairs, "
                 "Split = mean of r over pairs with a high-resource language and r over pairs of two low-resource "
                 "languages. * p < 0.05 (Direct only).")
    return "\n".join(lines), out.getvalue()


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
    rows = [TableRow(r.model, r.concept, r.language, *r.best) for r in results]
    if rows:
        markdown, table_csv = recognition_table(rows)
        (folder / "recognition.md").write_text(markdown + "\n")
        (folder / "recognition.csv").write_text(table_csv)
        selected = [TableRow(r.model, r.concept, r.language, *r.selected) for r in results if r.selected]
        if selected:
            markdown, table_csv = recognition_table(selected, "test accuracy at the layer chosen on training pairs")
            (folder / "recognition_selected.md").write_text(markdown + "\n")
            (folder / "recognition_selected.csv").write_text(table_csv)
            for model in sorted({r.model for r in selected}):
                _save(recognition_heatmap(selected, model, "recognition at the layer chosen on training pairs"),
                      folder / f"recognition_selected_{model}.png")
        for model in sorted({r.model for r in rows}):
            _save(recognition_heatmap(rows, model), folder / f"recognition_{model}.png")
        for model, concept in sorted({(r.model, r.concept) for r in results}):
            curves = [Curve(r.language, r.vectors.layers, r.accuracy) for r in results
                      if (r.model, r.concept) == (model, concept)]
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
        lines = ["| model | concept | high -> low | low -> high | within high | within low |", "|---" * 6 + "|"]
        for a in directed:
            values = vars(a.directionality).values()
            lines.append(f"| {a.model} | {a.concept} | "
                         + " | ".join("–" if np.isnan(v) else f"{100 * v:+.1f}" for v in values) + " |")
        lines.append("\nMean transfer score T(source -> target) in accuracy points over language pairs; "
                     "0 = as good as the target's own vectors, negative = worse.")
        (folder / "transfer_directionality.md").write_text("\n".join(lines) + "\n")
    for model in sorted({a.model for a in analyses if a.consistency is not None}):
        curves = {a.concept: (a.consistency.layers, a.consistency.layer_curve(SHARED_LANGUAGES))
                  for a in analyses if a.model == model and a.consistency is not None}
        _save(layer_similarity_figure(curves, f"{model}: cross-lingual consistency per layer"),
              folder / f"consistency_layers_{model}.png")
    return sorted(folder.iterdir())


# ---------------------------------------------------------------------------------------------
# Control (PAPER.md section 5): Table 2 and following-rate curves


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
