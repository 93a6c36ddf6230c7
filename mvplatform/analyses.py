"""The cross-lingual analyses of one model x concept, from its languages' extraction results.

Pure: takes :class:`ExtractionResult` objects (vectors and test-split states) and the spec's
settings, returns plain results that tracking logs and reports render.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from mvplatform.catalog import LANGUAGES
from mvplatform.crosslingual import (Consistency, Correlation, Directionality, Transfer, consistency, directionality,
                                     table1_row, transfer)
from mvplatform.extraction import ExtractionResult
from mvplatform.spec import AnalysisSpec


@dataclass(frozen=True)
class ConceptAnalysis:
    model: str
    concept: str
    languages: list[str]
    consistency: Consistency | None = None
    transfer: Transfer | None = None
    directionality: Directionality | None = None
    # feature -> {"direct" | "split_high" | "split_low": Correlation}
    linguistic: dict[str, dict[str, Correlation]] | None = None


def language_order(languages: Sequence[str]) -> list[str]:
    """High- to low-resource, as the paper orders its figures."""
    rank = {code: i for i, code in enumerate(LANGUAGES)}
    return sorted(languages, key=lambda code: rank.get(code, len(rank)))


def analyse_concept(results: Sequence[ExtractionResult], analyses: Sequence[str],
                    settings: AnalysisSpec) -> ConceptAnalysis:
    """Consistency, transferability and linguistic correlation over one concept's languages."""
    by_language = {r.language: r for r in results}
    languages = language_order(by_language)
    vectors = {lang: by_language[lang].vectors for lang in languages}
    cons = consistency(vectors) if {"consistency", "linguistic"} & set(analyses) else None
    trans = direction = linguistic = None
    if "transferability" in analyses:
        trans = transfer(vectors, {lang: (by_language[lang].test_pos, by_language[lang].test_neg) for lang in languages})
        direction = directionality(trans, settings.high_resource)
    if "linguistic" in analyses and cons is not None:
        from mvplatform.linguistics import similarity_matrix

        linguistic = {feature: table1_row(cons.mean, similarity_matrix(languages, feature), languages,
                                          settings.high_resource)
                      for feature in settings.linguistic_features}
    return ConceptAnalysis(results[0].model, results[0].concept, languages,
                           cons if "consistency" in analyses else None, trans, direction, linguistic)


def mean_similarity(analysis: ConceptAnalysis) -> float:
    """Mean off-diagonal cosine similarity (averaged over layers): one number for consistency."""
    if analysis.consistency is None or len(analysis.languages) < 2:
        return float("nan")
    matrix = analysis.consistency.mean
    return float(matrix[~np.eye(len(matrix), dtype=bool)].mean())
