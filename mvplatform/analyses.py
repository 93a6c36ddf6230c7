"""The cross-lingual analyses of one model x concept, and the per-model Table 1, from extraction results.

Pure: takes :class:`ExtractionResult` objects (vectors and test-split states) and the spec's
settings, returns plain results that tracking logs and reports render.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from mvplatform.catalog import LANGUAGES
from mvplatform.crosslingual import (Consistency, Correlation, Directionality, Transfer, consistency, directionality,
                                     table1_row, transfer)
from mvplatform.extraction import ExtractionResult
from mvplatform.spec import AnalysisSpec
from mvplatform.uncertainty import CrossLingualIntervals, consistency_interval, transfer_intervals


@dataclass(frozen=True)
class ConceptAnalysis:
    model: str
    concept: str
    languages: list[str]
    consistency: Consistency | None = None
    transfer: Transfer | None = None
    directionality: Directionality | None = None
    # feature -> {cell: Correlation}, cells as crosslingual.TABLE1_CELLS, on this concept's similarity
    linguistic: dict[str, dict[str, Correlation]] | None = None
    # [n, n] concept-vector similarity reduced over layers (``layer_reduction``): what Table 1 uses
    similarity: np.ndarray | None = None
    layer_reduction: str = "max"
    high_resource: tuple[str, ...] = ()
    similarity_source: str = "uriel_distance"
    intervals: CrossLingualIntervals | None = None  # issue 16: when the results carry evidence


# Share (%) of each language in the pre-training data of the paper's three families, as the authors'
# utils.ratio lists it (their figures sort languages by it); keyed by a pattern of the model's name.
PRETRAINING_SHARE: dict[str, dict[str, float]] = {
    r"llama-2": {"en": 89.70, "fr": 0.16, "zh": 0.13, "es": 0.13, "ja": 0.10, "pt": 0.09, "vi": 0.08, "ko": 0.06,
                 "ca": 0.04, "id": 0.03, "fi": 0.03, "hu": 0.03},
    r"^qwen-[0-9]": {"zh": 60.0, "en": 50.0, "fr": 0.16, "es": 0.13, "ja": 0.10, "pt": 0.09, "vi": 0.08, "ko": 0.06,
                     "ca": 0.04, "id": 0.03, "fi": 0.03, "hu": 0.03},
    r"^bloom": {"en": 30.03774, "zh": 16.16741, "fr": 12.89844, "es": 10.84550, "pt": 4.91041, "vi": 2.70733,
                "id": 1.23708, "ca": 1.10206, "ta": 0.49485, "te": 0.18541, "sw": 0.01465, "ny": 0.00007},
}


def language_order(languages: Sequence[str], model: str = "") -> list[str]:
    """High- to low-resource, as the paper orders its figures.

    For the paper's families (LLaMA2, Qwen v1, BLOOM/BLOOMZ, recognised by name) by the family's
    pre-training share, as the authors' ``sorted_by_ratio``; otherwise, and for ties and languages
    without a share, in the catalogue's order (the paper's 16, high-resource first).
    """
    rank = {code: i for i, code in enumerate(LANGUAGES)}
    ordered = sorted(languages, key=lambda code: rank.get(code, len(rank)))
    name = model.rstrip("/").split("/")[-1].lower()
    share = next((table for pattern, table in PRETRAINING_SHARE.items() if re.search(pattern, name)), None)
    if share is None:
        return ordered
    return sorted(ordered, key=lambda code: -share.get(code, -1.0))


def analyse_concept(results: Sequence[ExtractionResult], analyses: Sequence[str],
                    settings: AnalysisSpec) -> ConceptAnalysis:
    """Consistency, transferability and linguistic correlation over one concept's languages."""
    by_language = {r.language: r for r in results}
    languages = language_order(by_language, results[0].model)
    vectors = {lang: by_language[lang].vectors for lang in languages}
    cons = consistency(vectors) if {"consistency", "linguistic"} & set(analyses) else None
    similarity = None if cons is None else cons.reduce(settings.layer_reduction)
    trans = direction = linguistic = None
    if "transferability" in analyses:
        trans = transfer(vectors, {lang: (by_language[lang].test_pos, by_language[lang].test_neg) for lang in languages})
        direction = directionality(trans, settings.high_resource)
    if "linguistic" in analyses and similarity is not None:
        from mvplatform.linguistics import similarity_matrix

        linguistic = {feature: table1_row(similarity, similarity_matrix(languages, feature, settings.similarity_source),
                                          languages, settings.high_resource)
                      for feature in settings.linguistic_features}
    intervals = cross_lingual_intervals([by_language[lang] for lang in languages], cons, trans,
                                        settings.layer_reduction)
    return ConceptAnalysis(results[0].model, results[0].concept, languages,
                           cons if "consistency" in analyses else None, trans, direction, linguistic, similarity,
                           settings.layer_reduction, tuple(settings.high_resource), settings.similarity_source,
                           intervals)


def cross_lingual_intervals(results: Sequence[ExtractionResult], cons: Consistency | None, trans: Transfer | None,
                            reduction: str) -> CrossLingualIntervals | None:
    """Bootstrap intervals of consistency (over training pairs) and transfer (over test pairs), issue 16.

    Only when every result carries its evidence (``extract.intervals``); no model runs.
    """
    evidence = [r.evidence for r in results]
    if not results or any(e is None or e.train_diffs is None for e in evidence):
        return None
    consistency_ci = transfer_ci = None
    if cons is not None and len(results) > 1:
        train = {r.language: (r.evidence.train_diffs, np.zeros_like(r.evidence.train_diffs)) for r in results}
        consistency_ci = consistency_interval(train, results[0].vectors.method, seed=evidence[0].seed,
                                              orientation=evidence[0].orientation, reduction=reduction)
    if trans is not None:
        transfer_ci = transfer_intervals({r.language: r.vectors.directions for r in results},
                                         {r.language: (r.test_pos, r.test_neg) for r in results})
    return CrossLingualIntervals(consistency_ci, transfer_ci)


def mean_similarity(analysis: ConceptAnalysis, how: str | None = None) -> float:
    """Mean off-diagonal similarity, each pair reduced over layers by ``how`` (default: the analysis's)."""
    if analysis.consistency is None or len(analysis.languages) < 2:
        return float("nan")
    matrix = analysis.consistency.reduce(how or analysis.layer_reduction)
    return float(matrix[~np.eye(len(matrix), dtype=bool)].mean())


@dataclass(frozen=True)
class ModelTable1:
    """The paper's Table 1 row of one model: concept-averaged similarity against URIEL, per feature."""

    model: str
    languages: list[str]
    concepts: list[str]
    similarity: np.ndarray  # [n, n] mean over concepts of each concept's layer-reduced similarity
    cells: dict[str, dict[str, Correlation]]  # feature -> {cell: Correlation} (crosslingual.TABLE1_CELLS)
    reduction: str = "max"  # how each concept's similarity was reduced over layers


def concept_averaged(analyses: Sequence[ConceptAnalysis]) -> tuple[list[str], np.ndarray]:
    """The languages every analysis shares and the mean of their similarity matrices over them."""
    shared = [lang for lang in analyses[0].languages if all(lang in a.languages for a in analyses)]
    stacked = [a.similarity[np.ix_(idx, idx)] for a in analyses  # type: ignore[index]
               for idx in [[a.languages.index(lang) for lang in shared]]]
    return shared, np.mean(stacked, axis=0)


def model_table1(analyses: Sequence[ConceptAnalysis]) -> list[ModelTable1]:
    """Per model, Table 1 as the authors compute it: average the concepts' similarity, then correlate.

    Only analyses with linguistic cells count; the features, high-resource group and similarity
    source are theirs (one spec: the same for every concept of a model).
    """
    from mvplatform.linguistics import similarity_matrix

    by_model: dict[str, list[ConceptAnalysis]] = defaultdict(list)
    for analysis in analyses:
        if analysis.linguistic and analysis.similarity is not None:
            by_model[analysis.model].append(analysis)
    rows = []
    for model, group in by_model.items():
        languages, similarity = concept_averaged(group)
        if len(languages) < 2:
            continue
        first = group[0]
        cells = {feature: table1_row(similarity, similarity_matrix(languages, feature, first.similarity_source),
                                     languages, first.high_resource)
                 for feature in first.linguistic or {}}
        rows.append(ModelTable1(model, languages, [a.concept for a in group], similarity, cells,
                                first.layer_reduction))
    return rows
