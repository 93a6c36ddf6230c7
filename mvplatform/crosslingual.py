"""Cross-lingual analyses of concept vectors (PAPER.md sections 3 and 4): the formulas, their
per-concept orchestration (:func:`analyse_concept`) and the per-model Table 1 (:func:`model_table1`).

Pure numpy/scipy over vectors and cached test-split hidden states, so no analysis ever needs the
model again:

- consistency: cosine similarity of two languages' vectors at the same layer, reduced over layers
  by the maximum (the authors' heatmaps and Table 1) or the mean (mvp's earlier view, an option);
- transferability: T(l1 -> l2) = acc(l1's vectors on l2's test pairs) - acc(l2's own vectors),
  each at its best layer;
- linguistic correlation (Table 1): Pearson r between vector similarity and linguistic similarity
  over language pairs. The authors' cells: Direct (all pairs) and Split, the mean of r over pairs
  with at least one high-resource language and r over pairs of two low-resource languages. mvp's
  extra, named cell: within_high (pairs of two high-resource languages).

>>> import numpy as np
>>> from mvplatform.concepts import ConceptVectors
>>> v = {"en": ConceptVectors([1], np.array([[1.0, 0.0]]), "cluster_mean"),
...      "fr": ConceptVectors([1], np.array([[1.0, 1.0]]), "cluster_mean")}
>>> consistency(v).mean.round(3).tolist()
[[1.0, 0.707], [0.707, 1.0]]
>>> consistency(v).reduce("max").round(3).tolist()
[[1.0, 0.707], [0.707, 1.0]]
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import combinations
from typing import TYPE_CHECKING

import numpy as np
from scipy import stats

from mvplatform.catalog import LANGUAGES
from mvplatform.concepts import ConceptVectors, recognition_accuracy
from mvplatform.uncertainty import (
    CONFIDENCE,
    N_BOOT,
    CrossLingualIntervals,
    Interval,
    centred_interval,
    consistency_interval,
    language_counts,
    nan_interval,
    resampled_pair_correlation,
    transfer_intervals,
    transfer_resamples,
)

if TYPE_CHECKING:  # type hints only: importing extraction would pull in torch
    from mvplatform.extraction import Evidence, ExtractionResult
    from mvplatform.spec import AnalysisSpec


LAYER_REDUCTIONS: tuple[str, ...] = ("max", "mean")
# The languages all three of the paper's families keep (the authors' ``shared_langs``).
SHARED_LANGUAGES: tuple[str, ...] = ("en", "zh", "fr", "es", "pt", "vi", "ca", "id")


@dataclass(frozen=True)
class Consistency:
    languages: list[str]
    layers: list[int]
    per_layer: np.ndarray  # [L, n, n] cosine similarity at each layer
    mean: np.ndarray  # [n, n] averaged over layers

    @property
    def max(self) -> np.ndarray:
        """``[n, n]`` the highest cosine over layers per pair (the authors' reduction); diagonal 1."""
        highest: np.ndarray = self.per_layer.max(axis=0)
        return highest

    def reduce(self, how: str = "max") -> np.ndarray:
        """The layer reduction a spec names: ``max`` (the authors') or ``mean``."""
        if how not in LAYER_REDUCTIONS:
            raise ValueError(f"unknown layer reduction {how!r}; choose from {', '.join(LAYER_REDUCTIONS)}")
        return self.max if how == "max" else self.mean

    def layer_curve(self, subset: Sequence[str] | None = None) -> np.ndarray:
        """Mean off-diagonal similarity per layer: how consistent the concept is at each depth.

        ``subset``: only pairs of these languages (the authors' curve uses the eight languages
        every family shares, :data:`SHARED_LANGUAGES`); all of them when fewer than two are present.
        """
        index = [i for i, lang in enumerate(self.languages) if subset is None or lang in subset]
        if len(index) < 2:
            index = list(range(len(self.languages)))
        n = len(index)
        if n < 2:
            return np.full(len(self.layers), np.nan)
        off = ~np.eye(n, dtype=bool)
        curve: np.ndarray = self.per_layer[:, index][:, :, index][:, off].mean(axis=1)
        return curve


def _common_layers(vectors: Mapping[str, ConceptVectors]) -> list[int]:
    layer_sets = [v.layers for v in vectors.values()]
    if any(layers != layer_sets[0] for layers in layer_sets):
        raise ValueError("every language's vectors must cover the same layers")
    return list(layer_sets[0])


def consistency(vectors: Mapping[str, ConceptVectors]) -> Consistency:
    """Language x language cosine similarity of concept vectors, per layer and averaged.

    Vectors that carry repe's per-layer signs without applying them (the authors' cluster means)
    are multiplied by them first, as the authors' ``compute_sim`` does.
    """
    languages = list(vectors)
    layers = _common_layers(vectors)
    stacked = np.stack([_signed(vectors[lang]) for lang in languages], axis=1)  # [L, n, H]
    unit = stacked / np.linalg.norm(stacked, axis=-1, keepdims=True)
    per_layer = np.clip(np.einsum("lih,ljh->lij", unit, unit), -1.0, 1.0)  # rounding can pass 1 (max reduction)
    return Consistency(languages, layers, per_layer, per_layer.mean(axis=0))


def _signed(vectors: ConceptVectors) -> np.ndarray:
    directions = np.asarray(vectors.directions, dtype=np.float64)
    if vectors.signs is None:
        return directions
    return directions * np.asarray(vectors.signs, dtype=np.float64)[:, None]


@dataclass(frozen=True)
class Transfer:
    languages: list[str]
    accuracy: np.ndarray  # [n, n]: row = source vectors, column = target test data; best layer
    best_layers: np.ndarray  # [n, n] the layer each accuracy was taken at

    @property
    def scores(self) -> np.ndarray:
        """T[i, j] = acc(i's vectors on j) - acc(j's vectors on j): zero on the diagonal."""
        return self.accuracy - np.diag(self.accuracy)[None, :]


def transfer(vectors: Mapping[str, ConceptVectors], test_states: Mapping[str, tuple[np.ndarray, np.ndarray]]) -> Transfer:
    """Recognise every language's test pairs with every language's vectors, at the best layer."""
    languages = [lang for lang in vectors if lang in test_states]
    n = len(languages)
    accuracy, best = np.zeros((n, n)), np.zeros((n, n), dtype=np.int64)
    for i, source in enumerate(languages):
        for j, target in enumerate(languages):
            pos, neg = test_states[target]
            per_layer = recognition_accuracy(vectors[source], pos, neg)
            k = int(np.argmax(per_layer))
            accuracy[i, j], best[i, j] = per_layer[k], vectors[source].layers[k]
    return Transfer(languages, accuracy, best)


@dataclass(frozen=True)
class Directionality:
    """Mean transfer score from high- to low-resource languages and back."""

    high_to_low: float
    low_to_high: float
    within_high: float
    within_low: float

    @property
    def high_minus_low(self) -> float:
        """high_to_low - low_to_high: positive when transfer out of high-resource languages costs less."""
        return self.high_to_low - self.low_to_high


DIRECTIONS: tuple[str, ...] = ("high_to_low", "low_to_high", "within_high", "within_low")


def directional_means(scores: np.ndarray, languages: Sequence[str], high: Sequence[str]) -> dict[str, np.ndarray]:
    """Mean of T(source -> target) [..., n, n] over the off-diagonal pairs of each direction (DIRECTIONS);
    nan where a direction has no pair (e.g. no low-resource language)."""
    is_high = np.array([lang in high for lang in languages])
    off = ~np.eye(len(languages), dtype=bool)
    out = {}
    for name, (source, target) in zip(DIRECTIONS, ((is_high, ~is_high), (~is_high, is_high), (is_high, is_high),
                                                   (~is_high, ~is_high))):
        mask = source[:, None] & target[None, :] & off
        out[name] = scores[..., mask].mean(axis=-1) if mask.any() else np.full(scores.shape[:-2], np.nan)
    return out


def directionality(result: Transfer, high: Sequence[str]) -> Directionality:
    means = directional_means(result.scores, result.languages, high)
    return Directionality(*(float(means[name]) for name in DIRECTIONS))


def directionality_intervals(resampled: np.ndarray, languages: Sequence[str], high: Sequence[str],
                             point: Directionality, confidence: float = CONFIDENCE) -> dict[str, Interval]:
    """Intervals of each direction's mean transfer and of high_minus_low, from [B, n, n] resampled transfer
    scores (:func:`mvplatform.uncertainty.transfer_resamples`: every target's test pairs resampled, paired
    across sources). The difference is taken within each resample, so what the two directions share (the
    same targets' test pairs, the same sources) cancels in its interval. Each interval is the resamples'
    2.5-97.5 percentile spread placed around the point (:func:`centred_interval`): resampled best-layer
    maxima are biased upwards, so raw percentiles can miss the point."""
    means = directional_means(resampled, languages, high)
    means["high_minus_low"] = means["high_to_low"] - means["low_to_high"]
    out = {}
    for name, values in means.items():
        centre = point.high_minus_low if name == "high_minus_low" else getattr(point, name)
        out[name] = Interval(centre, *centred_interval(values, centre, confidence))
    return out


@dataclass(frozen=True)
class Correlation:
    r: float
    p: float  # scipy's t-test, which takes the language pairs as independent points (they are not)
    n_pairs: int
    low: float = float("nan")  # 95% interval of r by a bootstrap over languages (table1_row), issue 16
    high: float = float("nan")


def _pearson(x: np.ndarray, y: np.ndarray) -> Correlation:
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return Correlation(float("nan"), float("nan"), len(x))
    r, p = stats.pearsonr(x, y)
    return Correlation(float(r), float(p), len(x))


def correlate(similarity: np.ndarray, linguistic: np.ndarray, languages: Sequence[str],
              subset: Sequence[str] | None = None) -> Correlation:
    """Pearson r over the unordered language pairs (within ``subset`` when given)."""
    chosen = [i for i, lang in enumerate(languages) if subset is None or lang in subset]
    return correlate_pairs(similarity, linguistic, list(combinations(chosen, 2)))


def correlate_pairs(similarity: np.ndarray, linguistic: np.ndarray, pairs: Sequence[tuple[int, int]]) -> Correlation:
    """Pearson r over the given unordered index pairs (nan below 3 pairs or for a constant side)."""
    x = np.array([similarity[i, j] for i, j in pairs])
    y = np.array([linguistic[i, j] for i, j in pairs])
    return _pearson(x, y)


TABLE1_CELLS: tuple[str, ...] = ("direct", "split", "split_with_high", "split_low", "within_high")


def table1_row(similarity: np.ndarray, linguistic: np.ndarray, languages: Sequence[str],
               high: Sequence[str], n_boot: int = N_BOOT, seed: int = 0) -> dict[str, Correlation]:
    """Table 1 cells for one feature, each r with a 95% interval from a bootstrap over languages.

    The authors' (``linguistic_relationships`` in their consistency_analysis.py):
    ``direct`` over all pairs; ``split`` = (r over pairs with at least one high-resource language
    + r over pairs of two low-resource languages) / 2, its parts ``split_with_high`` and
    ``split_low``; ``split`` has no p-value (nan) and counts both parts' pairs. mvp's extra cell:
    ``within_high``, r over pairs of two high-resource languages.

    The interval (issue 16): language pairs share languages, so they are not independent points and
    a Fisher interval over n pairs is too narrow. Instead the languages are resampled with replacement
    (within the high- and low-resource groups, :func:`mvplatform.uncertainty.language_counts`), every
    cell's r is recomputed over the resample's pairs (:func:`resampled_pair_correlation`), and the
    2.5th and 97.5th percentiles are taken; ``split`` per resample as the mean of its parts.
    """
    is_high = [lang in high for lang in languages]
    pairs = list(combinations(range(len(languages)), 2))
    groups = {"direct": pairs,
              "split_with_high": [(i, j) for i, j in pairs if is_high[i] or is_high[j]],
              "split_low": [(i, j) for i, j in pairs if not (is_high[i] or is_high[j])],
              "within_high": [(i, j) for i, j in pairs if is_high[i] and is_high[j]]}
    points = {name: correlate_pairs(similarity, linguistic, group) for name, group in groups.items()}
    parts = points["split_with_high"], points["split_low"]
    points["split"] = Correlation((parts[0].r + parts[1].r) / 2, float("nan"), parts[0].n_pairs + parts[1].n_pairs)
    counts = language_counts(np.array(is_high, dtype=int), n_boot, seed) if len(languages) else None
    resampled = {name: resampled_pair_correlation(similarity, linguistic, group, counts)
                 for name, group in groups.items()} if counts is not None else {}
    if resampled:
        resampled["split"] = (resampled["split_with_high"] + resampled["split_low"]) / 2
    cells = {}
    for name in ("direct", "split", "split_with_high", "split_low", "within_high"):
        c = points[name]
        low, high_end = nan_interval(resampled[name], c.r) if resampled else (float("nan"), float("nan"))
        cells[name] = Correlation(c.r, c.p, c.n_pairs, low, high_end)
    return cells


@dataclass(frozen=True)
class ConceptAnalysis:
    model: str
    concept: str
    languages: list[str]
    consistency: Consistency | None = None
    transfer: Transfer | None = None
    directionality: Directionality | None = None
    # feature -> {cell: Correlation}, cells as TABLE1_CELLS, on this concept's similarity
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
    languages = language_order(list(by_language), results[0].model)
    vectors = {lang: by_language[lang].vectors for lang in languages}
    cons = consistency(vectors) if {"consistency", "linguistic"} & set(analyses) else None
    similarity = None if cons is None else cons.reduce(settings.layer_reduction)
    trans: Transfer | None = None
    direction: Directionality | None = None
    linguistic: dict[str, dict[str, Correlation]] | None = None
    if "transferability" in analyses:
        trans = transfer(vectors, {lang: (by_language[lang].test_pos, by_language[lang].test_neg) for lang in languages})
        direction = directionality(trans, settings.high_resource)
    if "linguistic" in analyses and similarity is not None:
        from mvplatform.linguistics import similarity_matrix

        linguistic = {feature: table1_row(similarity, similarity_matrix(languages, feature, settings.similarity_source),
                                          languages, settings.high_resource)
                      for feature in settings.linguistic_features}
    intervals = cross_lingual_intervals([by_language[lang] for lang in languages], cons, trans,
                                        settings.layer_reduction, settings.high_resource)
    return ConceptAnalysis(results[0].model, results[0].concept, languages,
                           cons if "consistency" in analyses else None, trans, direction, linguistic, similarity,
                           settings.layer_reduction, tuple(settings.high_resource), settings.similarity_source,
                           intervals)


def cross_lingual_intervals(results: Sequence[ExtractionResult], cons: Consistency | None, trans: Transfer | None,
                            reduction: str, high: Sequence[str] = ()) -> CrossLingualIntervals | None:
    """Bootstrap intervals of consistency (over training pairs), transfer and its directionality (over
    the targets' test pairs), issue 16.

    Only when every result carries its evidence (``extract.intervals``); no model runs.
    """
    if not results:
        return None
    evidence: list[Evidence] = []
    diffs: dict[str, np.ndarray] = {}  # language -> its training pairs' pos - neg
    for r in results:
        if r.evidence is None or r.evidence.train_diffs is None:
            return None
        evidence.append(r.evidence)
        diffs[r.language] = r.evidence.train_diffs
    consistency_ci = transfer_ci = direction_ci = None
    if cons is not None and len(results) > 1:
        train = {lang: (d, np.zeros_like(d)) for lang, d in diffs.items()}
        consistency_ci = consistency_interval(train, results[0].vectors.method, seed=evidence[0].seed,
                                              orientation=evidence[0].orientation, reduction=reduction)
    if trans is not None:
        resampled = transfer_resamples({r.language: r.vectors.directions for r in results},
                                       {r.language: (r.test_pos, r.test_neg) for r in results})
        if resampled[0] != trans.languages:
            raise ValueError(f"transfer intervals: resampled languages {resampled[0]} differ from {trans.languages}")
        transfer_ci = transfer_intervals({}, {}, resampled=resampled, point=trans.scores)
        direction_ci = directionality_intervals(resampled[1], resampled[0], high, directionality(trans, high))
    return CrossLingualIntervals(consistency_ci, transfer_ci, direction_ci)


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
    cells: dict[str, dict[str, Correlation]]  # feature -> {cell: Correlation} (TABLE1_CELLS)
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
