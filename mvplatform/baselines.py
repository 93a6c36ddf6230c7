"""Surface baselines: how far the raw texts alone tell pos from neg (issue 16).

If "the shorter side is pos" or a bag-of-words classifier already recognises a concept, a concept
vector that does so says little about the model. Each baseline is trained on the same training pairs
as the vectors and scored on the same test pairs, per pair, so its accuracy gets the same interval:

- ``length_rule``: the side whose length (in characters) is on the side the training pairs favour
  (shorter or longer) is called pos;
- ``length_lr``: logistic regression on the pair's length differences (characters, words);
- ``bow_lr``: logistic regression on bags of words of the raw texts (characters for scripts written
  without spaces), scored per pair: pos is the side with the higher probability.

A tie (equal lengths, equal scores) counts as half right: the baseline would have to guess.

>>> from mvplatform.data import ContrastPair
>>> train = [ContrastPair("a", "yes", "no, never"), ContrastPair("b", "fine", "not at all")]
>>> length_rule(train, [ContrastPair("c", "ok", "no way"), ContrastPair("d", "same", "same")]).tolist()
[1.0, 0.5]
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy import sparse
from sklearn import config_context
from sklearn.feature_extraction.text import CountVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.utils.extmath import safe_sparse_dot

from mvplatform.data import ContrastPair

BASELINES = ("length_rule", "length_lr", "bow_lr")
# CJK ideographs, kana and Thai are written without spaces between words: one token per character.
_TOKEN = re.compile(r"[\u0e00-\u0e7f\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]|\w+", re.UNICODE)


def tokens(text: str) -> list[str]:
    """Lower-cased words; scripts without word spaces split into characters."""
    return _TOKEN.findall(text.lower())


@lru_cache(maxsize=1 << 16)
def _cached_tokens(text: str) -> tuple[str, ...]:
    """:func:`tokens`, memoised: cross-validation scores the baselines once per fold, so without it each
    text was split again by every fold and every baseline."""
    return tuple(tokens(text))


# scikit-learn's per-call checks of parameters and finite inputs cost more than these tiny fits (issue 16's
# one-minute analysis stage); the inputs here are counts and lengths, finite by construction
_FAST = {"assume_finite": True, "skip_parameter_validation": True}


def _score(margin: np.ndarray) -> np.ndarray:
    """1 where pos wins, 0 where neg wins, 0.5 on a tie."""
    return np.where(margin > 0, 1.0, np.where(margin < 0, 0.0, 0.5))


def _lengths(pairs: Sequence[ContrastPair]) -> np.ndarray:
    """[n, 2] (characters, words) of pos minus neg."""
    return np.array([[len(p.pos) - len(p.neg), len(_cached_tokens(p.pos)) - len(_cached_tokens(p.neg))]
                     for p in pairs], dtype=np.float64).reshape(len(pairs), 2)


@dataclass(frozen=True)
class PairFeatures:
    """One cell's pairs as the baselines read them, computed once and shared by every fold (issue 16).

    The bag of words spans every text of the cell (sorted terms, as CountVectorizer orders them); a
    fold keeps the columns its training texts contain, which is exactly the vocabulary and column
    order a vectoriser fitted on those texts alone would have, so no test text leaks into training.
    """

    lengths: np.ndarray  # [n, 2] (characters, words) of pos minus neg
    pos_bow: sparse.csr_matrix  # [n, V] binary bag of words of each pos text
    neg_bow: sparse.csr_matrix

    @classmethod
    def of(cls, pairs: Sequence[ContrastPair]) -> PairFeatures:
        vectorizer = CountVectorizer(tokenizer=_cached_tokens, lowercase=False, token_pattern=None, binary=True)
        with config_context(**_FAST):
            try:
                bow = vectorizer.fit_transform([p.pos for p in pairs] + [p.neg for p in pairs]).tocsr()
            except ValueError:  # no token in any text ("empty vocabulary")
                bow = sparse.csr_matrix((2 * len(pairs), 0), dtype=np.int64)
        bow.sort_indices()
        return cls(_lengths(pairs), bow[: len(pairs)], bow[len(pairs) :])


def _split(train: Sequence[ContrastPair], test: Sequence[ContrastPair]) -> tuple[PairFeatures, np.ndarray,
                                                                                   np.ndarray]:
    _check(train, test)
    return PairFeatures.of([*train, *test]), np.arange(len(train)), np.arange(len(train), len(train) + len(test))


def _check(train: Sequence[ContrastPair], test: Sequence[ContrastPair]) -> None:
    if not train or not test:
        raise ValueError(f"surface baselines need training and test pairs (got {len(train)} and {len(test)})")


def length_rule(train: Sequence[ContrastPair], test: Sequence[ContrastPair]) -> np.ndarray:
    """[n_test] per-pair result of "the shorter (or longer, as training says) side is pos".

    The direction is the one right on more training pairs; shorter on a tie.
    """
    return length_rule_on(*_split(train, test))


def length_rule_on(features: PairFeatures, train: np.ndarray, test: np.ndarray) -> np.ndarray:
    """:func:`length_rule` on the pairs ``train`` and ``test`` (indices) of one cell's features."""
    train_diff = features.lengths[train, 0]
    direction = -1.0 if np.sum(train_diff < 0) >= np.sum(train_diff > 0) else 1.0
    return _score(direction * features.lengths[test, 0])


def _symmetric_fit(x: np.ndarray) -> LogisticRegression | None:
    """Logistic regression on pair features x (pos minus neg) and their negation (neg minus pos).

    Both orders are shown so the fit has two classes and no side bias; no intercept, so the model's
    decision for a pair is the sign of w . x. None when every feature is zero (nothing to learn).
    """
    if not np.any(x):
        return None
    features = np.concatenate([x, -x])
    labels = np.concatenate([np.ones(len(x)), np.zeros(len(x))])
    with config_context(**_FAST):
        return LogisticRegression(fit_intercept=False, solver="liblinear", max_iter=1000).fit(features, labels)


def length_lr(train: Sequence[ContrastPair], test: Sequence[ContrastPair]) -> np.ndarray:
    """[n_test] per-pair result of a logistic regression on length differences (characters, words)."""
    return length_lr_on(*_split(train, test))


def length_lr_on(features: PairFeatures, train: np.ndarray, test: np.ndarray) -> np.ndarray:
    """:func:`length_lr` on the pairs ``train`` and ``test`` (indices) of one cell's features."""
    train_x, test_x = features.lengths[train], features.lengths[test]
    scale = np.maximum(np.abs(train_x).max(axis=0), 1.0)  # comparable feature scales for the L2 penalty
    model = _symmetric_fit(train_x / scale)
    if model is None:
        return np.full(len(test), 0.5)
    return _score(_decision(model, test_x / scale))


def bow_lr(train: Sequence[ContrastPair], test: Sequence[ContrastPair]) -> np.ndarray:
    """[n_test] per-pair result of a bag-of-words logistic regression trained on the raw training texts.

    Texts are classified one by one (pos = 1, neg = 0), as a reader of single texts would; a test
    pair counts as right when its pos text gets the higher score.
    """
    return bow_lr_on(*_split(train, test))


def bow_lr_on(features: PairFeatures, train: np.ndarray, test: np.ndarray) -> np.ndarray:
    """:func:`bow_lr` on the pairs ``train`` and ``test`` (indices) of one cell's features."""
    texts = sparse.vstack([features.pos_bow[train], features.neg_bow[train]], format="csr")
    seen = np.flatnonzero(texts.getnnz(axis=0))  # the training vocabulary, in sorted-term order
    if seen.size == 0:
        return np.full(len(test), 0.5)
    labels = np.concatenate([np.ones(len(train)), np.zeros(len(train))])
    with config_context(**_FAST):
        model = LogisticRegression(solver="liblinear", max_iter=1000).fit(texts[:, seen], labels)  # small data
    return _score(_decision(model, features.pos_bow[test][:, seen]) - _decision(model, features.neg_bow[test][:, seen]))


def _decision(model: LogisticRegression, x: np.ndarray | sparse.csr_matrix) -> np.ndarray:
    """``model.decision_function(x)``'s arithmetic (x . coef + intercept) without its per-call input checks."""
    scores: np.ndarray = (safe_sparse_dot(x, model.coef_.T, dense_output=True) + model.intercept_).reshape(-1)
    return scores


@dataclass(frozen=True)
class SurfaceBaselines:
    """Per-pair results [n_test] of each surface baseline on one concept x language's test pairs."""

    per_pair: dict[str, np.ndarray]

    def accuracy(self) -> dict[str, float]:
        return {name: float(values.mean()) for name, values in self.per_pair.items()}


BASELINE_FUNCTIONS = {"length_rule": length_rule_on, "length_lr": length_lr_on, "bow_lr": bow_lr_on}


def surface_baselines(train: Sequence[ContrastPair], test: Sequence[ContrastPair]) -> SurfaceBaselines:
    """Every surface baseline, trained on ``train`` and scored on ``test``."""
    features, train_index, test_index = _split(train, test)
    return SurfaceBaselines({name: f(features, train_index, test_index) for name, f in BASELINE_FUNCTIONS.items()})


def cell_baselines(pairs: Sequence[ContrastPair], splits: Sequence[tuple[np.ndarray, np.ndarray]]) -> dict[str,
                                                                                                       np.ndarray]:
    """Per-pair results [n] of every baseline, each pair scored by the split that tests it.

    ``splits`` are (training mask, test mask) over ``pairs`` (one split, or the folds of
    cross-validation); the texts are tokenised and counted once for all of them.
    """
    features = PairFeatures.of(pairs)
    out = {name: np.full(len(pairs), np.nan) for name in BASELINE_FUNCTIONS}
    for train, test in splits:
        train_index, test_index = np.flatnonzero(train), np.flatnonzero(test)
        for name, f in BASELINE_FUNCTIONS.items():
            out[name][test_index] = f(features, train_index, test_index)
    return out
