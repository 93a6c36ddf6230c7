"""Cross-lingual analyses of concept vectors (PAPER.md sections 3 and 4).

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

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import combinations

import numpy as np
from scipy import stats

from mvplatform.concepts import ConceptVectors, recognition_accuracy


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
        return self.per_layer.max(axis=0)

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
        return self.per_layer[:, index][:, :, index][:, off].mean(axis=1)


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


def directionality(result: Transfer, high: Sequence[str]) -> Directionality:
    scores, languages = result.scores, result.languages
    is_high = np.array([lang in high for lang in languages])

    def mean(source: np.ndarray, target: np.ndarray) -> float:
        mask = source[:, None] & target[None, :] & ~np.eye(len(languages), dtype=bool)
        return float(scores[mask].mean()) if mask.any() else float("nan")

    return Directionality(mean(is_high, ~is_high), mean(~is_high, is_high), mean(is_high, is_high),
                          mean(~is_high, ~is_high))


@dataclass(frozen=True)
class Correlation:
    r: float
    p: float
    n_pairs: int


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
               high: Sequence[str]) -> dict[str, Correlation]:
    """Table 1 cells for one feature.

    The authors' (``linguistic_relationships`` in their consistency_analysis.py):
    ``direct`` over all pairs; ``split`` = (r over pairs with at least one high-resource language
    + r over pairs of two low-resource languages) / 2, its parts ``split_with_high`` and
    ``split_low``; ``split`` has no p-value (nan) and counts both parts' pairs. mvp's extra cell:
    ``within_high``, r over pairs of two high-resource languages.
    """
    is_high = [lang in high for lang in languages]
    pairs = list(combinations(range(len(languages)), 2))
    with_high = [(i, j) for i, j in pairs if is_high[i] or is_high[j]]
    low = [(i, j) for i, j in pairs if not (is_high[i] or is_high[j])]
    within_high = [(i, j) for i, j in pairs if is_high[i] and is_high[j]]
    parts = correlate_pairs(similarity, linguistic, with_high), correlate_pairs(similarity, linguistic, low)
    split = Correlation((parts[0].r + parts[1].r) / 2, float("nan"), parts[0].n_pairs + parts[1].n_pairs)
    return {"direct": correlate_pairs(similarity, linguistic, pairs), "split": split,
            "split_with_high": parts[0], "split_low": parts[1],
            "within_high": correlate_pairs(similarity, linguistic, within_high)}
