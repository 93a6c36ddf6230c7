"""Intervals and chance levels for every headline number (issue 16).

A concept x language cell has about 13 test pairs, so one pair moves accuracy by 7.7 points and the
best of 18 layers is optimistic by construction. This module says how far each number can be trusted:

- :func:`wilson` - 95% interval of a share (per-layer recognition accuracy, following rates);
- :func:`best_layer_interval` - a bootstrap over pairs that picks the best layer *inside* each
  resample, so the interval carries the optimism of choosing the best test layer;
- :func:`paired_difference` - paired bootstrap of a best-layer accuracy difference on the same pairs;
- :func:`transfer_intervals` - transfer T(l1 -> l2), a paired bootstrap over the target's test pairs
  (its spread placed around the point, as the directional means built from it);
- :func:`consistency_interval` - bootstrap over training pairs of cross-lingual vector similarity;
- :func:`pearson` - Pearson r with a Fisher-z interval and its p-value;
- :func:`mcnemar` - paired exact test over instructions (LS- vs En-Control);
- :func:`permutation_chance` - label-permutation chance level per layer.

Pure numpy/scipy, seeded and deterministic: the same inputs and seed give the same numbers. The
resampling is vectorised (bootstrap counts times per-pair results, batched matrix products for
re-extracted vectors), so no analysis stage needs a loop per resample for ``cluster_mean``.

>>> low, high = wilson(10, 13)
>>> round(float(low), 3), round(float(high), 3)
(0.497, 0.918)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

from mvplatform.concepts import extract_vectors

CONFIDENCE = 0.95
N_BOOT = 2000  # resamples of per-pair results (cheap: one matrix product)
N_REEXTRACT = 200  # resamples or permutations that re-extract vectors (chance level, consistency)


@dataclass(frozen=True)
class Interval:
    """A point estimate with its two-sided interval (``confidence``, 0.95 by default)."""

    point: float
    low: float
    high: float

    def as_dict(self, name: str) -> dict[str, float]:
        """``{name: point, name_ci_low: low, name_ci_high: high}``: the MLflow metric names."""
        return {name: self.point, f"{name}_ci_low": self.low, f"{name}_ci_high": self.high}


def _z(confidence: float) -> float:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be between 0 and 1, got {confidence}")
    return float(stats.norm.ppf(0.5 + confidence / 2))


def wilson(successes: np.ndarray | float, n: np.ndarray | int,
           confidence: float = CONFIDENCE) -> tuple[np.ndarray, np.ndarray]:
    """Wilson score interval of ``successes / n`` (elementwise); well-behaved at 0 and 1, unlike Wald.

    ``successes`` may be fractional (a tie scored as half a success), as for surface baselines.
    """
    k, n = np.asarray(successes, dtype=np.float64), np.asarray(n, dtype=np.float64)
    if np.any(n <= 0) or np.any(k < 0) or np.any(k > n):
        raise ValueError("wilson: need n > 0 and 0 <= successes <= n")
    z = _z(confidence)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    # exact ends at 0 and n (the formula gives them up to rounding): an interval always holds its point
    return (np.where(k <= 0, 0.0, np.clip(centre - half, 0.0, 1.0)),
            np.where(k >= n, 1.0, np.clip(centre + half, 0.0, 1.0)))


def accuracy_intervals(correct: np.ndarray, confidence: float = CONFIDENCE) -> tuple[np.ndarray, np.ndarray,
                                                                                      np.ndarray]:
    """Per-layer accuracy of ``correct`` [pairs, layers] (0/1, or 0.5 for a tie) and its Wilson interval."""
    correct = _as_pairs(correct)
    n = correct.shape[0]
    successes = correct.sum(axis=0)
    low, high = wilson(successes, n, confidence)
    return successes / n, low, high


def bootstrap_counts(n: int, n_boot: int, seed: int) -> np.ndarray:
    """[n_boot, n] how often each of ``n`` items is drawn in each resample (multinomial, with replacement).

    Counts rather than indices: a resampled mean is then one matrix product ``counts @ values / n``.
    """
    if n < 1 or n_boot < 1:
        raise ValueError(f"bootstrap needs at least one item and one resample (got n={n}, n_boot={n_boot})")
    rng = np.random.default_rng(seed)
    return rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot).astype(np.float64)


def _percentiles(values: np.ndarray, confidence: float) -> tuple[float, float]:
    alpha = (1 - confidence) / 2
    low, high = np.quantile(values, [alpha, 1 - alpha])
    return float(low), float(high)


def best_layer_interval(correct: np.ndarray, n_boot: int = N_BOOT, seed: int = 0,
                        confidence: float = CONFIDENCE) -> Interval:
    """The best-layer accuracy (max over layers) with a bootstrap that repeats the layer choice.

    Each resample of pairs takes its own best layer, so the interval's spread includes the
    winner's-curse of picking the best of many noisy layers on the same test pairs.
    """
    correct = _as_pairs(correct)
    n = correct.shape[0]
    resampled = bootstrap_counts(n, n_boot, seed) @ correct / n  # [B, L]
    low, high = _percentiles(resampled.max(axis=1), confidence)
    return Interval(float(correct.mean(axis=0).max()), low, high)


def paired_difference(a: np.ndarray, b: np.ndarray, n_boot: int = N_BOOT, seed: int = 0,
                      confidence: float = CONFIDENCE) -> Interval:
    """max-over-layers accuracy of ``a`` minus that of ``b``, both [pairs, layers] on the *same* pairs.

    The pairs are resampled jointly (paired bootstrap) and each side picks its best layer inside every
    resample, as :func:`mvplatform.crosslingual.transfer` does on the full set.
    """
    a, b = _as_pairs(a), _as_pairs(b)
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"paired_difference: {a.shape[0]} and {b.shape[0]} pairs; both sides need the same pairs")
    n = a.shape[0]
    counts = bootstrap_counts(n, n_boot, seed)
    diffs = (counts @ a / n).max(axis=1) - (counts @ b / n).max(axis=1)
    low, high = _percentiles(diffs, confidence)
    return Interval(float(a.mean(axis=0).max() - b.mean(axis=0).max()), low, high)


@dataclass(frozen=True)
class PearsonResult:
    r: float
    low: float
    high: float
    p: float
    n: int


def pearson(x: np.ndarray, y: np.ndarray, confidence: float = CONFIDENCE) -> PearsonResult:
    """Pearson r, its Fisher-z interval (tanh(atanh r +- z / sqrt(n - 3))) and the two-sided p-value.

    NaN everywhere when it is undefined (fewer than 4 points, or a constant side).
    """
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    n = len(x)
    if len(y) != n:
        raise ValueError(f"pearson: {n} x values but {len(y)} y values")
    if n < 4 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return PearsonResult(float("nan"), float("nan"), float("nan"), float("nan"), n)
    r, p = stats.pearsonr(x, y)
    z = np.arctanh(np.clip(r, -1 + 1e-12, 1 - 1e-12))
    half = _z(confidence) / np.sqrt(n - 3)
    return PearsonResult(float(r), float(np.tanh(z - half)), float(np.tanh(z + half)), float(p), n)


@dataclass(frozen=True)
class PairedTest:
    """Two binary outcomes on the same items (instructions): rates, difference and exact McNemar test."""

    rate_a: float
    rate_b: float
    difference: Interval  # rate_a - rate_b, paired bootstrap interval
    only_a: int  # items where only a succeeded
    only_b: int
    p: float  # two-sided exact McNemar (binomial on the discordant items)


def mcnemar(a: np.ndarray, b: np.ndarray, n_boot: int = N_BOOT, seed: int = 0,
            confidence: float = CONFIDENCE) -> PairedTest:
    """Paired test over instructions: did mode a follow more often than mode b on the same instructions?

    Only discordant instructions carry information; under no difference each is a fair coin, so the
    p-value is the exact two-sided binomial test of ``only_a`` out of ``only_a + only_b``.
    """
    a, b = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool)
    if a.shape != b.shape or a.ndim != 1 or a.size == 0:
        raise ValueError(f"mcnemar: need two equally long, non-empty 0/1 vectors; got {a.shape} and {b.shape}")
    only_a, only_b = int(np.sum(a & ~b)), int(np.sum(~a & b))
    discordant = only_a + only_b
    p = 1.0 if discordant == 0 else float(stats.binomtest(only_a, discordant, 0.5).pvalue)
    diff = a.astype(np.float64) - b
    counts = bootstrap_counts(a.size, n_boot, seed)
    low, high = _percentiles(counts @ diff / a.size, confidence)
    return PairedTest(float(a.mean()), float(b.mean()), Interval(float(diff.mean()), low, high), only_a, only_b, p)


# -- re-extracted vectors: chance level and consistency ---------------------------------------------


def pair_correct(directions: np.ndarray, pos: np.ndarray, neg: np.ndarray) -> np.ndarray:
    """[pairs, layers] 1.0 where pos projects strictly above neg (recognition's rule), else 0.0."""
    margins = np.einsum("nlh,lh->nl", pos.astype(np.float64) - neg, directions)
    correct: np.ndarray = (margins > 0).astype(np.float64)
    return correct


def resampled_directions(pos: np.ndarray, neg: np.ndarray, counts: np.ndarray, signs: np.ndarray | None,
                         method: str, seed: int = 0, orientation: str = "authors",
                         dtype: type = np.float64) -> np.ndarray:
    """[B, L, H] concept vectors re-extracted from each of B weighted and/or label-flipped training sets.

    ``counts`` [B, n]: how often each training pair is drawn; ``signs`` [B, n]: +1 keeps a pair's
    labels, -1 swaps pos and neg. ``cluster_mean`` is batched (a weighted mean of pair differences,
    then the majority sign rule of :func:`mvplatform.concepts.orient` over the drawn pairs); every other
    method calls :func:`extract_vectors` once per resample.
    """
    n = pos.shape[0]
    signs = np.ones_like(counts) if signs is None else np.asarray(signs, dtype=np.float64)
    if counts.shape != signs.shape or counts.shape[1] != n:
        raise ValueError(f"counts {counts.shape} and signs {signs.shape} must both be [resamples, {n}]")
    layers = list(range(1, pos.shape[1] + 1))
    if method != "cluster_mean":
        out = np.empty((counts.shape[0], *pos.shape[1:]))
        for b in range(counts.shape[0]):
            index = np.repeat(np.arange(n), counts[b].astype(np.int64))
            flip = signs[b, index] < 0
            p = np.where(flip[:, None, None], neg[index], pos[index])
            q = np.where(flip[:, None, None], pos[index], neg[index])
            out[b] = extract_vectors(p, q, layers, method, seed, orientation=orientation).directions
        return out
    diffs: np.ndarray = (pos.astype(dtype) - neg.astype(dtype)).transpose(1, 0, 2)  # [L, n, H]
    weights = counts * signs  # [B, n]
    raw: np.ndarray = np.matmul((weights / counts.sum(axis=1, keepdims=True)).astype(dtype), diffs)  # [L, B, H]
    if orientation not in ("majority", "repe"):  # the authors' cluster means: the raw mean difference
        return raw.transpose(1, 0, 2)
    # the sign rule on the drawn (and flipped) pairs: margin of pair k = s_k d_k . direction
    #   = s_k sum_i w_i s_i (d_k . d_i) / sum w: through the pairs' inner products, cheaper than [L, n, H] x [L, H, B]
    gram = np.matmul(diffs, diffs.transpose(0, 2, 1))  # [L, n, n]
    margins = np.matmul(gram, (weights / counts.sum(axis=1, keepdims=True)).T.astype(dtype)) * signs.T[None]  # [L, n, B]
    above = np.einsum("bn,lnb->lb", counts, (margins > 0).astype(np.float64))  # [L, B] drawn pairs with pos above
    if orientation == "majority":  # concepts.orient: keep when at least half the pairs put pos above
        keep = above / counts.sum(axis=1)[None] >= 0.5
    else:  # concepts.repe_signs: flip only when more pairs put pos below than above
        keep = np.einsum("bn,lnb->lb", counts, (margins < 0).astype(np.float64)) <= above
    raw *= np.where(keep, 1.0, -1.0)[:, :, None]
    return raw.transpose(1, 0, 2)


def batch_accuracy(directions: np.ndarray, pos: np.ndarray, neg: np.ndarray) -> np.ndarray:
    """[B, L] recognition accuracy of each of B vector sets [B, L, H] on the same test pairs."""
    diffs = (pos.astype(np.float64) - neg).transpose(1, 0, 2)  # [L, m, H]
    margins = np.matmul(diffs, directions.transpose(1, 2, 0))  # [L, m, B]
    accuracy: np.ndarray = (margins > 0).mean(axis=1).T
    return accuracy


def permutation_accuracy(train_pos: np.ndarray, train_neg: np.ndarray, test_pos: np.ndarray, test_neg: np.ndarray,
                         method: str = "cluster_mean", n_perm: int = N_REEXTRACT, seed: int = 0, chunk: int = 64,
                         orientation: str = "authors") -> np.ndarray:
    """[P, L] test accuracy of vectors re-extracted from label-shuffled training pairs.

    Each permutation swaps pos and neg in a random half of the training pairs (:func:`permutation_signs`),
    re-extracts the vectors with the same method and sign rule, and scores them on the true test labels.
    """
    n = train_pos.shape[0]
    if method == "cluster_mean":  # the same draws (permutation_signs) through inner products
        gram = pair_gram(np.concatenate([train_pos, test_pos]), np.concatenate([train_neg, test_neg]))
        return permuted_accuracy_from_gram(gram, np.arange(n), np.arange(n, n + test_pos.shape[0]), n_perm, seed,
                                           orientation)
    signs = permutation_signs(n, n_perm, seed)
    counts = np.ones((n_perm, n))
    return np.concatenate([
        batch_accuracy(resampled_directions(train_pos, train_neg, counts[s : s + chunk], signs[s : s + chunk],
                                            method, seed, orientation), test_pos, test_neg)
        for s in range(0, n_perm, chunk)])


def permutation_signs(n: int, n_perm: int, seed: int) -> np.ndarray:
    """[n_perm, n] +1 (labels kept) or -1 (pos and neg swapped): in each permutation a random half of the
    pairs (n // 2) is swapped.

    Balanced, not a coin per pair: with coins the swapped and kept pairs rarely cancel, the leftover
    (about 1/sqrt(n) of the true pos - neg difference) still points along the concept, and because
    accuracy ignores a direction's length, a strong concept would then look like "chance" too.
    """
    rng = np.random.default_rng(seed)
    signs = np.ones((n_perm, n))
    order = np.argsort(rng.random((n_perm, n)), axis=1)[:, : n // 2]  # a random n // 2 pairs per permutation
    np.put_along_axis(signs, order, -1.0, axis=1)
    return signs


def pair_gram(pos: np.ndarray, neg: np.ndarray, dtype: type = np.float64) -> np.ndarray:
    """[L, N, N] inner products of the pairs' differences (pos - neg) at each layer (``dtype``: float32
    halves the cost; only a margin within rounding of 0 could change side)."""
    diffs: np.ndarray = np.ascontiguousarray((pos.astype(dtype) - neg.astype(dtype)).transpose(1, 0, 2))  # [L, N, H]
    gram: np.ndarray = np.matmul(diffs, diffs.transpose(0, 2, 1))
    return gram


def permuted_accuracy_from_gram(gram: np.ndarray, train: np.ndarray, test: np.ndarray, n_perm: int, seed: int,
                                orientation: str = "authors") -> np.ndarray:
    """[P, L] :func:`permutation_accuracy` for cluster means, from the pairs' inner products alone.

    A permuted direction is (1/n) sum_i s_i d_i, so a test pair's margin is (1/n) sum_i s_i (d_i . t_j)
    and a training pair's (for the sign rule) (1/n) sum_i s_i (d_i . d_k): once ``gram`` is known
    (one product per cell, shared by every fold), permutations cost nothing of the hidden size.
    """
    n = len(train)
    signs = permutation_signs(n, n_perm, seed)
    margins = np.matmul(signs[None], gram[:, train][:, :, test]) / n  # [L, P, m]
    if orientation in ("majority", "repe"):
        own = np.matmul(signs[None], gram[:, train][:, :, train]) / n * signs[None]  # [L, P, n]
        above, below = (own > 0).sum(axis=-1), (own < 0).sum(axis=-1)
        keep = above / n >= 0.5 if orientation == "majority" else below <= above
        margins *= np.where(keep, 1.0, -1.0)[:, :, None]
    accuracy: np.ndarray = (margins > 0).mean(axis=-1).T
    return accuracy


def permutation_chance(train_pos: np.ndarray, train_neg: np.ndarray, test_pos: np.ndarray, test_neg: np.ndarray,
                       method: str = "cluster_mean", n_perm: int = N_REEXTRACT, seed: int = 0,
                       quantile: float = CONFIDENCE, chunk: int = 64, orientation: str = "authors") -> np.ndarray:
    """[L] the ``quantile`` of :func:`permutation_accuracy` per layer: the chance level of a cell.

    A cell whose interval's lower end does not clear this level is "not above chance". It is about
    50% plus the binomial spread of the test pairs when the pairs differ in many directions; when
    they all differ along one dominant direction, the noise left in a shuffled mean still has a
    component along it, of random sign, that decides every test pair at once, and the level rises
    towards 100%: such a cell says the pairs differ consistently, not which way the concept points.
    """
    accuracy = permutation_accuracy(train_pos, train_neg, test_pos, test_neg, method, n_perm, seed, chunk,
                                    orientation)
    chance: np.ndarray = np.quantile(accuracy, quantile, axis=0)
    return chance


@dataclass(frozen=True)
class ConsistencyInterval:
    languages: list[str]
    low: np.ndarray  # [n, n] interval of the layer-reduced cosine similarity of each language pair
    high: np.ndarray
    mean: Interval  # the mean off-diagonal similarity (one number for a concept)


def consistency_interval(train: dict[str, tuple[np.ndarray, np.ndarray]], method: str = "cluster_mean",
                         n_boot: int = N_REEXTRACT, seed: int = 0, confidence: float = CONFIDENCE,
                         chunk: int = 256, orientation: str = "authors", reduction: str = "mean") -> ConsistencyInterval:
    """Bootstrap over each language's training pairs of the cosine similarity between languages' vectors.

    ``train`` maps language -> (pos, neg) training states [n, L, H]. Each language is resampled
    independently (its own seed offset), its vectors re-extracted and signed as
    :func:`mvplatform.crosslingual.consistency` signs them (the authors' cluster means by repe's
    sign rule), and the cosine matrix recomputed per resample and reduced over layers (``mean`` or
    ``max``); the point is the same computation on the full training sets.
    """
    languages = list(train)
    if len(languages) < 2:
        raise ValueError("consistency needs at least two languages")
    if reduction not in ("mean", "max"):
        raise ValueError(f"unknown layer reduction {reduction!r}; choose mean or max")
    signing = "repe" if orientation == "authors" and method == "cluster_mean" else orientation
    k = len(languages)
    n_layers, hidden = train[languages[0]][0].shape[1:]
    # row 0 of each language's counts: the full training set (the point); rows 1..B: its bootstrap resamples
    counts = [np.concatenate([np.ones((1, train[lang][0].shape[0])),
                              bootstrap_counts(train[lang][0].shape[0], n_boot, seed + 7919 * (i + 1))])
              for i, lang in enumerate(languages)]
    full: list[np.ndarray] = []  # other methods: [1 + B, L, H] per language, re-extracted once over all layers
    if method != "cluster_mean":
        full = [np.concatenate([resampled_directions(*train[lang], c[s : s + chunk], None, method, seed, signing,
                                                     np.float32) for s in range(0, len(c), chunk)])
                for lang, c in zip(languages, counts)]
    sims = np.empty((1 + n_boot, n_layers, k, k))
    for layer in range(n_layers):  # one layer at a time: [1 + B, K, H] in memory, not [1 + B, L, K, H]
        stacked = np.empty((1 + n_boot, k, hidden), dtype=np.float32)
        for i, lang in enumerate(languages):
            if full:
                stacked[:, i] = full[i][:, layer]
                continue
            pos, neg = train[lang]
            stacked[:, i] = np.concatenate([
                resampled_directions(pos[:, layer : layer + 1], neg[:, layer : layer + 1], counts[i][s : s + chunk],
                                     None, method, seed, signing, np.float32)[:, 0]
                for s in range(0, len(counts[i]), chunk)])
        # float32: the similarities need no more; cosines from one Gram matrix per resample (no unit-vector copy)
        gram = np.matmul(stacked, stacked.transpose(0, 2, 1)).astype(np.float64)  # [1 + B, K, K]
        norms = np.sqrt(np.einsum("bkk->bk", gram))
        sims[:, layer] = np.clip(gram / (norms[:, :, None] * norms[:, None, :]), -1.0, 1.0)
    sims = sims.mean(axis=1) if reduction == "mean" else sims.max(axis=1)
    sims[:, np.arange(k), np.arange(k)] = 1.0
    off = ~np.eye(k, dtype=bool)
    low, high = _centred(sims[1:], sims[0], confidence)
    mean_low, mean_high = _centred(sims[1:, off].mean(axis=1), sims[0, off].mean(), confidence)
    return ConsistencyInterval(languages, low, high, Interval(float(sims[0, off].mean()), float(mean_low),
                                                              float(mean_high)))


def _centred(resampled: np.ndarray, point: np.ndarray | float, confidence: float) -> tuple[np.ndarray, np.ndarray]:
    """The bootstrap's percentile spread placed around the point (its median moved onto the point), in [-1, 1].

    Resampling pairs adds noise to both vectors, which lowers their cosine: the resampled values sit
    below the full-data one, and a raw percentile interval would often miss the point altogether.
    The spread is what says how much another draw of training pairs would move the number.
    """
    alpha = (1 - confidence) / 2
    lo, mid, hi = np.quantile(resampled, [alpha, 0.5, 1 - alpha], axis=0)
    return np.clip(point + lo - mid, -1.0, 1.0), np.clip(point + hi - mid, -1.0, 1.0)


def centred_interval(resampled: np.ndarray, point: float, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """:func:`_centred` for one number: the bootstrap's percentile spread placed around ``point``; nan when
    the point or a resample is nan.

    For numbers built from best-layer maxima (directional transfer means): every resample re-picks its
    best layers, so resampled maxima sit above the full-data ones and a raw percentile interval is shifted
    away from the point (on gemma3-270m's real cells it sometimes excluded it).
    """
    resampled = np.asarray(resampled, dtype=np.float64)
    if np.isnan(point) or np.isnan(resampled).any():
        return float("nan"), float("nan")
    low, high = _centred(resampled, point, confidence)
    return float(low), float(high)


@dataclass(frozen=True)
class TransferIntervals:
    languages: list[str]
    low: np.ndarray  # [n, n] interval of T(row -> column), paired bootstrap over the column's test pairs, centred
    high: np.ndarray


def transfer_resamples(directions: dict[str, np.ndarray], test_states: dict[str, tuple[np.ndarray, np.ndarray]],
                       n_boot: int = N_BOOT, seed: int = 0) -> tuple[list[str], np.ndarray]:
    """The languages and [B, n, n] T(row -> column) in each resample of every target's test pairs.

    Per target (column), one set of resamples of its test pairs is shared by every source and by the
    target's own vectors (paired), and both sides re-pick their best layer in every resample. The
    targets are resampled independently of each other (seed + column).
    """
    languages = [lang for lang in directions if lang in test_states]
    n = len(languages)
    scores = np.empty((n_boot, n, n))
    for j, target in enumerate(languages):  # every source at once: one set of resamples per target
        pos, neg = test_states[target]
        correct = np.stack([pair_correct(directions[source], pos, neg) for source in languages])  # [S, m, L]
        m = correct.shape[1]
        counts = bootstrap_counts(m, n_boot, seed + j)
        best = np.matmul(counts[None], correct).max(axis=-1) / m  # [S, B]: best-layer accuracy per resample
        scores[:, :, j] = (best - best[j]).T
    return languages, scores


def transfer_point(directions: dict[str, np.ndarray], test_states: dict[str, tuple[np.ndarray, np.ndarray]],
                   languages: Sequence[str]) -> np.ndarray:
    """[n, n] T(row -> column) on the full test sets, by the rule :func:`transfer_resamples` resamples
    (the same numbers as :func:`mvplatform.crosslingual.transfer`'s scores for unsigned vectors)."""
    point = np.empty((len(languages), len(languages)))
    for j, target in enumerate(languages):
        pos, neg = test_states[target]
        best = np.array([pair_correct(directions[source], pos, neg).mean(axis=0).max() for source in languages])
        point[:, j] = best - best[j]
    return point


def transfer_intervals(directions: dict[str, np.ndarray], test_states: dict[str, tuple[np.ndarray, np.ndarray]],
                       n_boot: int = N_BOOT, seed: int = 0, confidence: float = CONFIDENCE,
                       resampled: tuple[list[str], np.ndarray] | None = None,
                       point: np.ndarray | None = None) -> TransferIntervals:
    """Intervals of T(l1 -> l2) = best-layer acc(l1's vectors on l2) - best-layer acc(l2's own on l2),
    from :func:`transfer_resamples` (or its result, ``resampled``, when the caller needs it too).

    Each interval is the resamples' 2.5-97.5 percentile spread placed around the point (:func:`_centred`),
    the same method as the directional means built from these resamples
    (:func:`mvplatform.crosslingual.directionality_intervals`), so a cell and the mean over its direction
    read alike. T is a difference of two maxima over layers, each re-picked in every resample; each
    side's maximum runs high by its own amount (more for a curve with many near-best layers), so the
    resamples' median sits off the point by an offset that is neither the sampling spread nor zero. On
    gemma3-270m's morality cells (analysis.yaml, 26 test pairs, 240 off-diagonal cells) the offset was
    -7.7 to +11.5 points against intervals 26.5 points wide: the raw percentile interval held every point,
    but off-centre by up to a third of its width (the directional means' raw percentiles left some points
    out, which is why those were centred first). :func:`best_layer_interval` keeps raw percentiles on
    purpose: there the upward shift is the optimism of picking the best test layer, which that interval
    is meant to show; in a difference of two maxima it is no one's optimism, only an offset.

    ``point`` is [n, n] T on the full test sets in ``resampled``'s language order; without it, it is
    computed from ``directions`` and ``test_states`` (:func:`transfer_point`).
    """
    languages, scores = resampled or transfer_resamples(directions, test_states, n_boot, seed)
    if point is None:
        missing = [lang for lang in languages if lang not in directions or lang not in test_states]
        if missing:
            raise ValueError(f"transfer_intervals: no vectors or test states for {missing}; pass point= with resampled=")
        point = transfer_point(directions, test_states, languages)
    point = np.asarray(point, dtype=np.float64)
    if point.shape != scores.shape[1:]:
        raise ValueError(f"transfer_intervals: point {point.shape} does not match the resamples' {scores.shape[1:]}")
    low, high = _centred(scores, point, confidence)
    return TransferIntervals(languages, low, high)


@dataclass(frozen=True)
class CrossLingualIntervals:
    """The intervals of one concept's cross-lingual analyses (attached to its ConceptAnalysis)."""

    consistency: ConsistencyInterval | None = None
    transfer: TransferIntervals | None = None
    # mean transfer per direction (high_to_low, low_to_high, within_high, within_low) and high_minus_low
    # (high_to_low - low_to_high): the same paired resamples of the targets' test pairs as ``transfer``
    directionality: dict[str, Interval] | None = None


def fisher_interval(r: float, n: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Fisher-z interval of a Pearson r over n points (nan when r is nan or n < 4).

    Language pairs share languages, so they are not independent points: read this interval as a
    lower bound on the uncertainty of a Table 1 cell.
    """
    if np.isnan(r) or n < 4:
        return float("nan"), float("nan")
    z, half = np.arctanh(np.clip(r, -1 + 1e-12, 1 - 1e-12)), _z(confidence) / np.sqrt(n - 3)
    return float(np.tanh(z - half)), float(np.tanh(z + half))


def language_counts(strata: Sequence[int] | np.ndarray, n_boot: int = N_BOOT, seed: int = 0) -> np.ndarray:
    """[B, K] how often each of K languages is drawn when the languages are resampled with replacement
    within each stratum (``strata[k]``: the group of language k, e.g. 1 = high-resource, 0 = low).

    Stratified because Table 1's groups are fixed by design (LLaMA2's one high-resource language stays
    the one); a stratum of one language is always drawn once.
    """
    strata = np.asarray(strata)
    if strata.ndim != 1 or strata.size == 0:
        raise ValueError(f"language_counts: need a group per language, got shape {strata.shape}")
    counts = np.zeros((n_boot, strata.size))
    for s, group in enumerate(np.unique(strata)):
        members = np.flatnonzero(strata == group)
        counts[:, members] = bootstrap_counts(members.size, n_boot, seed + 104729 * s)
    return counts


def weighted_pearson(x: np.ndarray, y: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """[B] Pearson r of the points (x, y) [P] counted ``weights`` [B, P] times (a resample's multiplicities).

    The same r as :func:`scipy.stats.pearsonr` on the list with each point repeated ``weights`` times;
    nan where fewer than 3 distinct points carry weight or either side is constant on them (as
    :func:`mvplatform.crosslingual.correlate_pairs` on a full set).
    """
    x, y, w = np.asarray(x, np.float64), np.asarray(y, np.float64), np.asarray(weights, np.float64)
    if w.ndim != 2 or w.shape[1] != x.size or y.size != x.size:
        raise ValueError(f"weighted_pearson: weights {w.shape} must be [resamples, {x.size}] for {x.size} points")
    used = w > 0
    total = np.where(used.any(axis=1), w.sum(axis=1), 1.0)[:, None]
    dx = x[None] - (w @ x)[:, None] / total
    dy = y[None] - (w @ y)[:, None] / total
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.clip((w * dx * dy).sum(axis=1) / np.sqrt((w * dx * dx).sum(axis=1) * (w * dy * dy).sum(axis=1)),
                    -1.0, 1.0)
    spread = [np.where(used, v[None], -np.inf).max(axis=1) > np.where(used, v[None], np.inf).min(axis=1)
              for v in (x, y)]
    return np.where((used.sum(axis=1) >= 3) & spread[0] & spread[1], r, np.nan)


def resampled_pair_correlation(similarity: np.ndarray, linguistic: np.ndarray, pairs: Sequence[tuple[int, int]],
                               counts: np.ndarray) -> np.ndarray:
    """[B] Pearson r over language pairs when languages are drawn ``counts`` [B, K] times.

    A resample that draws language i a times and j b times holds the pair (i, j) a * b times; a
    language paired with its own copy is no pair (its similarity is 1 by definition), so it is left out.
    """
    if not pairs:
        return np.full(counts.shape[0], np.nan)
    i, j = np.array(pairs).T
    return weighted_pearson(similarity[i, j], linguistic[i, j], counts[:, i] * counts[:, j])


def nan_interval(resampled: np.ndarray, point: float, confidence: float = CONFIDENCE,
                 min_defined: float = 0.5) -> tuple[float, float]:
    """Percentile interval of the defined (non-nan) resamples; nan when the point is nan or fewer than
    ``min_defined`` of the resamples are defined (too few units left to say anything)."""
    defined = resampled[~np.isnan(resampled)]
    if np.isnan(point) or defined.size < min_defined * resampled.size or defined.size == 0:
        return float("nan"), float("nan")
    return _percentiles(defined, confidence)


def above_chance(low: np.ndarray | float, chance: np.ndarray | float) -> np.ndarray:
    """True where an interval's lower end clears the chance level (strictly)."""
    return np.asarray(low) > np.asarray(chance)


def _as_pairs(correct: np.ndarray) -> np.ndarray:
    correct = np.asarray(correct, dtype=np.float64)
    if correct.ndim == 1:
        correct = correct[:, None]
    if correct.ndim != 2 or correct.shape[0] == 0:
        raise ValueError(f"expected per-pair results [pairs, layers]; got shape {correct.shape}")
    return correct
