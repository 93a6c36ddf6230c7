"""Cross-lingual analyses of concept vectors (PAPER.md sections 3 and 4).

Pure numpy/scipy over vectors and cached test-split hidden states, so no analysis ever needs the
model again:

- consistency: cosine similarity of two languages' vectors at the same layer;
- transferability: T(l1 -> l2) = acc(l1's vectors on l2's test pairs) - acc(l2's own vectors),
  each at its best layer;
- linguistic correlation (Table 1): Pearson r between vector similarity and linguistic similarity
  over language pairs, "direct" (all pairs) and "split" (within high- and within low-resource).

>>> import numpy as np
>>> from mvplatform.concepts import ConceptVectors
>>> v = {"en": ConceptVectors([1], np.array([[1.0, 0.0]]), "cluster_mean"),
...      "fr": ConceptVectors([1], np.array([[1.0, 1.0]]), "cluster_mean")}
>>> consistency(v).mean.round(3).tolist()
[[1.0, 0.707], [0.707, 1.0]]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import combinations

import numpy as np
from scipy import stats

from mvplatform.concepts import ConceptVectors, recognition_accuracy


@dataclass(frozen=True)
class Consistency:
    languages: list[str]
    layers: list[int]
    per_layer: np.ndarray  # [L, n, n] cosine similarity at each layer
    mean: np.ndarray  # [n, n] averaged over layers

    def layer_curve(self) -> np.ndarray:
        """Mean off-diagonal similarity per layer: how consistent the concept is at each depth."""
        n = len(self.languages)
        if n < 2:
            return np.full(len(self.layers), np.nan)
        off = ~np.eye(n, dtype=bool)
        return self.per_layer[:, off].mean(axis=1)


def _common_layers(vectors: Mapping[str, ConceptVectors]) -> list[int]:
    layer_sets = [v.layers for v in vectors.values()]
    if any(layers != layer_sets[0] for layers in layer_sets):
        raise ValueError("every language's vectors must cover the same layers")
    return list(layer_sets[0])


def consistency(vectors: Mapping[str, ConceptVectors]) -> Consistency:
    """Language x language cosine similarity of concept vectors, per layer and averaged."""
    languages = list(vectors)
    layers = _common_layers(vectors)
    stacked = np.stack([vectors[lang].directions for lang in languages], axis=1).astype(np.float64)  # [L, n, H]
    unit = stacked / np.linalg.norm(stacked, axis=-1, keepdims=True)
    per_layer = np.einsum("lih,ljh->lij", unit, unit)
    return Consistency(languages, layers, per_layer, per_layer.mean(axis=0))


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


def correlate(similarity: np.ndarray, linguistic: np.ndarray, languages: Sequence[str],
              subset: Sequence[str] | None = None) -> Correlation:
    """Pearson r over the unordered language pairs (within ``subset`` when given)."""
    chosen = [i for i, lang in enumerate(languages) if subset is None or lang in subset]
    pairs = list(combinations(chosen, 2))
    if len(pairs) < 3:
        return Correlation(float("nan"), float("nan"), len(pairs))
    x = np.array([similarity[i, j] for i, j in pairs])
    y = np.array([linguistic[i, j] for i, j in pairs])
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return Correlation(float("nan"), float("nan"), len(pairs))
    r, p = stats.pearsonr(x, y)
    return Correlation(float(r), float(p), len(pairs))


def table1_row(similarity: np.ndarray, linguistic: np.ndarray, languages: Sequence[str],
               high: Sequence[str]) -> dict[str, Correlation]:
    """The paper's Table 1 cells for one feature: Direct, Split-high, Split-low."""
    low = [lang for lang in languages if lang not in high]
    return {"direct": correlate(similarity, linguistic, languages),
            "split_high": correlate(similarity, linguistic, languages, high),
            "split_low": correlate(similarity, linguistic, languages, low)}
